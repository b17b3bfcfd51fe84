"""changeling: a face-swap toolkit whose every output is marked as synthetic.

The pipeline stages are subpackages: ``video`` (decode/encode), ``detect`` (detector, landmarker, align),
``masks``, ``faces`` (face files, alignments store), ``models``, ``train``, ``convert``, ``provenance``,
``synth`` (sample clips) and ``ui``. The command line in :mod:`changeling.cli` is a thin shell over them.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("changeling")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
