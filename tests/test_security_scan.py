"""No pickle on any load path, no shell and no dynamic code: the package source is scanned for the dangerous calls.

Names are resolved through the file's imports, so an alias does not hide a call: ``import torch as t;
t.load(...)``, ``from torch import load``, ``from os import system``. A finding on a line that carries a
``# scan-ok: <reason>`` comment is accepted (the reason says why the input is not the user's).
"""

from __future__ import annotations

import ast
from pathlib import Path

import changeling

PACKAGE = Path(changeling.__file__).resolve().parent
ALLOW = "# scan-ok:"
PICKLING = ("pickle", "cPickle", "_pickle", "dill", "marshal", "shelve", "joblib", "cloudpickle")
TORCH_LOADS = ("torch.load", "torch.serialization.load")
SHELL_CALLS = ("os.system", "os.popen", "subprocess.getoutput", "subprocess.getstatusoutput", "pty.spawn")
CODE_LOADERS = ("runpy.run_path", "runpy.run_module", "importlib.util.spec_from_file_location",
                "importlib.machinery.SourceFileLoader", "imp.load_source", "imp.load_module")
DYNAMIC_IMPORTS = ("importlib.import_module", "importlib.__import__", "__import__")
BUILTIN_CODE = ("eval", "exec", "compile")


def _sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _aliases(tree: ast.AST) -> dict[str, str]:
    """Local name -> the dotted name it stands for, from every import in the file."""
    out: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                out[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for a in node.names:
                out[a.asname or a.name] = f"{node.module}.{a.name}"
    return out


def _dotted(node: ast.AST, aliases: dict[str, str]) -> str:
    """The dotted name an expression refers to (``t.load`` with ``import torch as t``: ``torch.load``), or ""."""
    if isinstance(node, ast.Name):
        return aliases.get(node.id, node.id)
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value, aliases)
        return f"{base}.{node.attr}" if base else ""
    return ""


def _keyword_is(node: ast.Call, name: str, value: object) -> bool:
    kw = {k.arg: k.value for k in node.keywords}
    v = kw.get(name)
    return isinstance(v, ast.Constant) and v.value is value


def _findings(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    tree = ast.parse(text, filename=str(path))
    aliases = _aliases(tree)
    called = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) and node.module
                                                    else [])
            for n in names:
                if n and n.split(".")[0] in PICKLING:
                    out.append((line, f"imports {n}"))
            if isinstance(node, ast.ImportFrom) and node.module:
                for a in node.names:
                    full = f"{node.module}.{a.name}"
                    if full in TORCH_LOADS + SHELL_CALLS + DYNAMIC_IMPORTS + CODE_LOADERS:
                        out.append((line, f"imports {full} by name (an alias the call checks cannot see)"))
        if isinstance(node, (ast.Attribute, ast.Name)) and id(node) not in called \
                and _dotted(node, aliases) in TORCH_LOADS and isinstance(node, ast.Attribute):
            out.append((line, f"refers to {_dotted(node, aliases)} outside a call (an alias in the making)"))
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func, aliases)
        if isinstance(node.func, ast.Name) and node.func.id in BUILTIN_CODE and node.func.id not in aliases:
            out.append((line, f"calls {node.func.id}()"))
        if name in TORCH_LOADS and not _keyword_is(node, "weights_only", True):
            out.append((line, f"{name} without weights_only=True"))
        if name in ("numpy.load", "numpy.loads") and _keyword_is(node, "allow_pickle", True):
            out.append((line, f"{name} can unpickle"))
        if name.split(".")[0] in PICKLING and name.rsplit(".", 1)[-1] in ("load", "loads", "Unpickler"):
            out.append((line, f"{name} can unpickle"))
        if name in SHELL_CALLS:
            out.append((line, f"calls {name}() (a shell)"))
        if any(k.arg == "shell" and not (isinstance(k.value, ast.Constant) and k.value.value is False)
               for k in node.keywords):
            out.append((line, f"calls {name or 'a function'} with shell=True"))
        if name in CODE_LOADERS:
            out.append((line, f"calls {name}() (runs code from a path)"))
        if name in DYNAMIC_IMPORTS and not (node.args and isinstance(node.args[0], ast.Constant)
                                            and isinstance(node.args[0].value, str)):
            out.append((line, f"calls {name}() with a module name that is not a literal"))
    return [f"{path.name}:{n} {what}" for n, what in sorted(set(out)) if ALLOW not in lines[n - 1]]


def test_scanner_catches_what_it_should(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import pickle\nimport torch\nx = torch.load('m.pt')\neval('1')\n"
                   "import numpy as np\nnp.load('a.npy', allow_pickle=True)\n")
    found = _findings(bad)
    assert len(found) == 4, found
    good = tmp_path / "good.py"
    good.write_text("import torch\nx = torch.load('m.pt', weights_only=True)\nmodel.eval()\n"
                    "from torch import nn\nimport importlib\ndlib = importlib.import_module('dlib')\n"
                    "import subprocess\nsubprocess.run(['ffmpeg', '-i', path], shell=False)\n")
    assert _findings(good) == []


# Each line below is one dangerous pattern the scan must catch (issue 18): aliased loads, shells, and imports of
# modules whose names come from data.
CAUGHT = {
    "from torch import load\nx = load('m.pt')\n": ["imports torch.load by name", "torch.load without weights_only"],
    "from torch import load as safe_load\n": ["imports torch.load by name"],
    "import torch as t\nx = t.load('m.pt')\n": ["torch.load without weights_only"],
    "import torch\nld = torch.load\n": ["refers to torch.load outside a call"],
    "from torch.serialization import load\n": ["imports torch.serialization.load by name"],
    "import subprocess\nsubprocess.run(cmd, shell=True)\n": ["subprocess.run with shell=True"],
    "import subprocess as sp\nsp.Popen(cmd, shell=flag)\n": ["subprocess.Popen with shell=True"],
    "import os\nos.system('ls ' + name)\n": ["calls os.system() (a shell)"],
    "from os import system\nsystem(cmd)\n": ["imports os.system by name", "calls os.system() (a shell)"],
    "import os\nos.popen(cmd)\n": ["calls os.popen() (a shell)"],
    "import importlib\nm = importlib.import_module(user_name)\n": ["importlib.import_module() with a module name"],
    "from importlib import import_module\nimport_module(f'plugins.{name}')\n": [
        "imports importlib.import_module by name", "importlib.import_module() with a module name"],
    "m = __import__(name)\n": ["__import__() with a module name"],
    "import runpy\nrunpy.run_path(script)\n": ["runpy.run_path() (runs code from a path)"],
    "import pickle as p\nx = p.loads(data)\n": ["imports pickle", "pickle.loads can unpickle"],
}


def test_scanner_catches_aliased_loads_shells_and_dynamic_imports(tmp_path: Path) -> None:
    for i, (code, wanted) in enumerate(CAUGHT.items()):
        path = tmp_path / f"case{i}.py"
        path.write_text(code)
        found = _findings(path)
        for text in wanted:
            assert any(text in f for f in found), (code, text, found)
        path.write_text("".join(f"{ln}  {ALLOW} test\n" for ln in code.splitlines()))
        assert _findings(path) == []  # a justified line is accepted


def test_package_has_no_pickle_shell_or_dynamic_code() -> None:
    problems = [f for p in _sources() for f in _findings(p)]
    assert problems == [], "\n".join(problems)
