"""No pickle on any load path and no dynamic code: the package source is scanned for the dangerous calls."""

from __future__ import annotations

import ast
from pathlib import Path

import changeling

PACKAGE = Path(changeling.__file__).resolve().parent


def _sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _findings(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) and node.module
                                                    else [])
            for n in names:
                if n and n.split(".")[0] in ("pickle", "cPickle", "dill", "marshal", "shelve", "joblib"):
                    out.append(f"{path.name}:{node.lineno} imports {n}")
        if isinstance(node, ast.Call):
            f = node.func
            name = f.id if isinstance(f, ast.Name) else (f.attr if isinstance(f, ast.Attribute) else "")
            owner = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else ""
            if isinstance(f, ast.Name) and name in ("eval", "exec", "compile", "__import__"):
                out.append(f"{path.name}:{node.lineno} calls {name}()")
            if name == "load" and owner == "torch":
                kw = {k.arg: k.value for k in node.keywords}
                v = kw.get("weights_only")
                if not (isinstance(v, ast.Constant) and v.value is True):
                    out.append(f"{path.name}:{node.lineno} torch.load without weights_only=True")
            if name in ("load", "loads") and owner in ("pickle", "numpy", "np"):
                kw = {k.arg: k.value for k in node.keywords}
                v = kw.get("allow_pickle")
                if owner == "pickle" or (isinstance(v, ast.Constant) and v.value is True):
                    out.append(f"{path.name}:{node.lineno} {owner}.{name} can unpickle")
    return out


def test_scanner_catches_what_it_should(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import pickle\nimport torch\nx = torch.load('m.pt')\neval('1')\n"
                   "import numpy as np\nnp.load('a.npy', allow_pickle=True)\n")
    found = _findings(bad)
    assert len(found) == 4, found
    good = tmp_path / "good.py"
    good.write_text("import torch\nx = torch.load('m.pt', weights_only=True)\nmodel.eval()\n")
    assert _findings(good) == []


def test_package_has_no_pickle_or_dynamic_code() -> None:
    problems = [f for p in _sources() for f in _findings(p)]
    assert problems == [], "\n".join(problems)
