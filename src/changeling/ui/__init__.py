"""The web UI (``changeling ui``, extra ``[ui]``): the whole workflow in a browser, on Gradio.

:mod:`changeling.ui.app` builds the page (one module per tab, ``tab_*.py``, sharing :mod:`changeling.ui.page`)
and serves it; :mod:`changeling.ui.jobs` runs the long jobs (extract,
train, convert) as child processes of the server running the same ``changeling`` commands a user would type,
so they survive a page reload, a closed browser and even a restarted server; :mod:`changeling.ui.gate`
lets in only requests for this server's names, from its own page, with this launch's token;
:mod:`changeling.ui.paths` confines every file access to the open project; :mod:`changeling.ui.state` reads
what the page shows from the project folder; :mod:`changeling.ui.workspace` holds the server's state (no
globals). Importing this package does not import Gradio.
"""
