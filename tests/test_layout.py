"""Structural tests: the core stays framework-free, shipped code never unpickles, modules are documented."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "core"
FRAMEWORKS = ("langchain", "llama_index", "langgraph")  # prefixes: langchain_core, llama_index.core, ...
PICKLE_MODULES = {"pickle", "_pickle", "cPickle", "cloudpickle", "dill", "joblib", "shelve"}
UNSAFE_CALLS = ("pickle.load", "pickle.loads", "joblib.load", "torch.load", "read_pickle")
# Never project code: VCS, caches and virtualenvs (dot dirs, or any dir holding pyvenv.cfg), build output.
SKIP_DIRS = {"build", "dist", "node_modules", "__pycache__"}


def _py_files(top: Path, skip: frozenset[str] = frozenset()) -> Iterator[Path]:
    """Every .py file under ``top``, leaving out the top-level folders named in ``skip``."""
    for dirpath, dirnames, filenames in os.walk(top):
        here = Path(dirpath)
        dirnames[:] = sorted(
            d
            for d in dirnames
            if not d.startswith(".")
            and d not in SKIP_DIRS
            and not d.endswith(".egg-info")
            and not (here == top and d in skip)
            and not (here / d / "pyvenv.cfg").exists()
        )
        yield from (here / f for f in sorted(filenames) if f.endswith(".py"))


def _parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _is_framework(module: str) -> bool:
    return module.split(".")[0].startswith(FRAMEWORKS)


def _dotted(node: ast.expr) -> str:
    """``a.b.c`` for a Name/Attribute chain, else ``""``."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return ""


def _imported_modules(tree: ast.Module) -> Iterator[tuple[int, str]]:
    """(line, module) for every absolute import, and every string passed to import_module/__import__."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module
        elif (
            isinstance(node, ast.Call)
            and _dotted(node.func).rsplit(".", 1)[-1] in {"import_module", "__import__"}
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield node.lineno, node.args[0].value


CORE_FILES = sorted(_py_files(CORE))
SHIPPED_FILES = sorted(_py_files(ROOT, skip=frozenset({"tests"})))


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def test_core_has_modules() -> None:
    assert CORE_FILES, f"no Python files found under {CORE}"
    assert SHIPPED_FILES


@pytest.mark.parametrize("path", CORE_FILES, ids=_rel)
def test_core_module_imports_no_framework(path: Path) -> None:
    hits = [
        f"{_rel(path)}:{line}: {mod}" for line, mod in _imported_modules(_parse(path)) if _is_framework(mod)
    ]
    assert not hits, "core/ must stay framework-free:\n" + "\n".join(hits)


@pytest.mark.parametrize("path", CORE_FILES, ids=_rel)
def test_core_module_has_docstring(path: Path) -> None:
    doc = ast.get_docstring(_parse(path))
    assert doc and doc.strip(), f"{_rel(path)} has no module docstring"


def _unsafe_uses(tree: ast.Module) -> Iterator[tuple[int, str]]:
    for line, mod in _imported_modules(tree):
        if mod.split(".")[0] in PICKLE_MODULES:
            yield line, f"imports {mod}"
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        if name and (name in UNSAFE_CALLS or name.endswith(tuple("." + c for c in UNSAFE_CALLS))):
            yield node.lineno, f"calls {name}()"
        for kw in node.keywords:
            if kw.arg == "allow_pickle" and not (
                isinstance(kw.value, ast.Constant) and kw.value.value is False
            ):
                yield node.lineno, f"passes allow_pickle={ast.unparse(kw.value)}"


def test_no_unsafe_deserialisation_outside_tests() -> None:
    hits = [
        f"{_rel(path)}:{line}: {what}" for path in SHIPPED_FILES for line, what in _unsafe_uses(_parse(path))
    ]
    assert not hits, "pickle/joblib/torch.load/allow_pickle in shipped code:\n" + "\n".join(hits)


def test_unsafe_scan_catches_known_patterns() -> None:
    """The scanner itself must see what it is meant to forbid (else the test above proves nothing)."""
    src = textwrap.dedent(
        """
        import joblib
        from pickle import loads
        import numpy as np, torch
        np.load("a.npy", allow_pickle=True)
        np.load("b.npy", allow_pickle=flag)
        np.load("c.npy", allow_pickle=False)
        torch.load("m.pt")
        pd.read_pickle("x")
        """
    )
    whats = sorted(what for _, what in _unsafe_uses(ast.parse(src)))
    assert whats == sorted(
        [
            "imports joblib",
            "imports pickle",
            "passes allow_pickle=True",
            "passes allow_pickle=flag",
            "calls torch.load()",
            "calls pd.read_pickle()",
        ]
    )
    fw = [
        m
        for _, m in _imported_modules(ast.parse("import langchain_core.messages\nimport os"))
        if _is_framework(m)
    ]
    assert fw == ["langchain_core.messages"]


# Run in a fresh interpreter where importing any framework fails, as it would with none installed.
_BLOCKED_IMPORT = textwrap.dedent(
    """
    import importlib, importlib.abc, pkgutil, sys

    BLOCKED = {frameworks!r}

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0].startswith(BLOCKED):
                raise ModuleNotFoundError(f"No module named {{name!r}} (blocked by test)", name=name)
            return None

    sys.meta_path.insert(0, Block())
    target = sys.argv[1]
    mod = importlib.import_module(target)
    assert mod.__name__ == target
    if target == "crescade":
        for info in pkgutil.walk_packages(mod.__path__, prefix="crescade."):
            importlib.import_module(info.name)
    loaded = sorted(m for m in sys.modules if m.split(".")[0].startswith(BLOCKED))
    assert not loaded, loaded
    print("ok", target)
    """
).format(frameworks=FRAMEWORKS)


@pytest.mark.parametrize("package", ["crescade", "crescade_langchain", "crescade_llamaindex"])
def test_package_imports_without_frameworks(package: str, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _BLOCKED_IMPORT, package],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,  # not the repo root, so the installed packages are what gets imported
    )
    assert proc.returncode == 0, f"import {package} failed without frameworks:\n{proc.stderr[-3000:]}"
    assert proc.stdout.strip() == f"ok {package}"
