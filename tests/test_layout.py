"""Structural tests: the core stays framework-free, shipped code never unpickles, modules are documented."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Sequence
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


# --------------------------------------------------------------------------- layering
# The core's layers, lowest first: a module may import its own layer and the ones below, never above.
# The package's face (``crescade/__init__``, ``crescade.seam``, the documented compatibility paths,
# ``__main__``) sits above every layer; no layer may import it.
LAYERS = ("common", "engine", "serving", "evaluation", "tools")
ADAPTERS = ("crescade_langchain", "crescade_llamaindex")
ADAPTER_MAY_IMPORT = frozenset({"crescade", "crescade.seam"})
FACADE_RANK = len(LAYERS)


def _module_name(path: Path) -> str:
    """``core/engine/cascade.py`` -> ``crescade.engine.cascade``; ``crescade_langchain/live.py`` -> itself."""
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[0] == "core":
        parts[0] = "crescade"
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _import_edges(name: str, is_package: bool, tree: ast.Module, known: frozenset[str]) -> Iterator[tuple[int, str]]:
    """(line, module) for every import of a ``known`` module anywhere in ``tree`` (function bodies included),
    relative imports resolved; ``from pkg import mod`` counts as importing ``pkg.mod`` when that is a module."""

    def pick(base: str, names: Sequence[str]) -> Iterator[str]:
        subs = [f"{base}.{n}" for n in names if f"{base}.{n}" in known]
        yield from subs
        if len(subs) < len(names) and base in known:
            yield base

    package = name if is_package else name.rpartition(".")[0]
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [a.name for a in node.names]
            if node.level:
                base = package
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            targets = list(pick(base, names))
        elif (isinstance(node, ast.Call) and _dotted(node.func).rsplit(".", 1)[-1] in {"import_module", "__import__"}
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            targets = [node.args[0].value]
        for t in targets:
            # the closest known module: importing a.b.c also names a.b when only that is ours
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t:
                yield node.lineno, t


def import_graph(sources: dict[str, tuple[bool, str]]) -> dict[str, list[tuple[int, str]]]:
    """Module -> its (line, imported module) edges, for ``sources``: module name -> (is_package, source)."""
    known = frozenset(sources)
    return {name: sorted(set(_import_edges(name, pkg, ast.parse(src), known)))
            for name, (pkg, src) in sources.items()}


def _rank(module: str) -> int | None:
    """The layer index of a core module (``_version`` counts as the lowest), the facade's rank, or None."""
    parts = module.split(".")
    if parts[0] != "crescade":
        return None
    if len(parts) > 1 and parts[1] in LAYERS:
        return LAYERS.index(parts[1])
    if parts[1:] == ["_version"]:
        return 0
    return FACADE_RANK


def layering_problems(graph: dict[str, list[tuple[int, str]]]) -> list[str]:
    """Every import that runs the wrong way: core -> adapter, a layer -> a higher layer or the facade,
    an adapter -> anything of the core but ``crescade`` and ``crescade.seam``, adapter -> other adapter."""
    out = []
    for src, edges in graph.items():
        top = src.split(".")[0]
        for line, dst in edges:
            dst_top = dst.split(".")[0]
            if top == "crescade":
                if dst_top in ADAPTERS:
                    out.append(f"{src}:{line}: core imports the adapter {dst}")
                    continue
                rs, rd = _rank(src), _rank(dst)
                if rs is not None and rd is not None and rs < FACADE_RANK and rd > rs:
                    out.append(f"{src}:{line}: layer {LAYERS[rs] if src != 'crescade._version' else 'base'} "
                               f"imports {dst}, which is above it")
            elif top in ADAPTERS:
                if dst_top == "crescade" and dst not in ADAPTER_MAY_IMPORT:
                    out.append(f"{src}:{line}: adapter imports {dst}; adapters import only "
                               f"{' and '.join(sorted(ADAPTER_MAY_IMPORT))}")
                elif dst_top in ADAPTERS and dst_top != top:
                    out.append(f"{src}:{line}: adapter imports the other adapter {dst}")
    return out


def import_cycles(graph: dict[str, list[tuple[int, str]]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (or a module importing itself): import cycles."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for _, w in graph.get(v, []):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1 or any(d == v for _, d in graph.get(v, [])):
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _project_sources() -> dict[str, tuple[bool, str]]:
    files = [*CORE_FILES, *(p for a in ADAPTERS for p in _py_files(ROOT / a))]
    return {_module_name(p): (p.name == "__init__.py", p.read_text(encoding="utf-8")) for p in files}


PROJECT_GRAPH = import_graph(_project_sources())


def test_layers_only_import_downwards() -> None:
    problems = layering_problems(PROJECT_GRAPH)
    assert not problems, "imports that run the wrong way:\n" + "\n".join(problems)


def test_no_import_cycles() -> None:
    cycles = import_cycles(PROJECT_GRAPH)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_every_core_module_is_in_a_layer_or_the_facade() -> None:
    facade = sorted(m for m in PROJECT_GRAPH if _rank(m) == FACADE_RANK)
    assert facade == ["crescade", "crescade.__main__", "crescade.dispatch", "crescade.faults", "crescade.local",
                      "crescade.seam", "crescade.tasks"], facade
    for layer in LAYERS:
        assert any(m.startswith(f"crescade.{layer}.") for m in PROJECT_GRAPH), f"layer {layer} is empty"


def test_layering_checks_catch_known_patterns() -> None:
    """The checker must see what it forbids, lazy imports in function bodies included."""
    sources = {
        "crescade": (True, "from .engine.cascade import Cascade"),
        "crescade.seam": (False, "from .serving.dispatch import run"),
        "crescade.engine": (True, ""),
        "crescade.serving": (True, ""),
        "crescade.tools": (True, ""),
        "crescade.engine.cascade": (False, "def f():\n    from ..serving import dispatch\n"),
        "crescade.engine.records": (False, "from crescade import Cascade\nfrom . import cascade"),
        "crescade.serving.dispatch": (False, "from ..engine.cascade import Cascade"),
        "crescade.tools.cli": (False, "def g():\n    import crescade_langchain.live\n"),
        "crescade_langchain": (True, ""),
        "crescade_langchain.live": (False, "from crescade.engine.cascade import Cascade\n"
                                            "from crescade.seam import run\nimport crescade_llamaindex"),
        "crescade_llamaindex": (True, ""),
    }
    graph = import_graph(sources)
    assert graph["crescade.engine.cascade"] == [(2, "crescade.serving.dispatch")]
    problems = layering_problems(graph)
    assert sorted(p.split(":")[0] for p in problems) == [
        "crescade.engine.cascade", "crescade.engine.records", "crescade.tools.cli",
        "crescade_langchain.live", "crescade_langchain.live"]
    assert import_cycles(graph) == [["crescade.engine.cascade", "crescade.serving.dispatch"]]
    cyclic = import_graph({"crescade": (True, "from .seam import x"), "crescade.seam": (False, "import crescade")})
    assert import_cycles(cyclic) == [["crescade", "crescade.seam"]]


@pytest.mark.parametrize(("old", "new"), [("dispatch", "serving.dispatch"), ("faults", "serving.faults"),
                                          ("local", "tools.local"), ("tasks", "tools.tasks")])
def test_documented_module_paths_still_work(old: str, new: str) -> None:
    """``crescade.dispatch`` and the other documented submodules re-export the moved module's public names."""
    import importlib

    shim, real = importlib.import_module(f"crescade.{old}"), importlib.import_module(f"crescade.{new}")
    public = {n for n in vars(real) if not n.startswith("_") and getattr(getattr(real, n), "__module__", None)
              == real.__name__}
    assert public and public <= set(shim.__all__)
    assert all(getattr(shim, n) is getattr(real, n) for n in shim.__all__)


def test_python_m_crescade_tasks_still_runs(tmp_path: Path) -> None:
    out = tmp_path / "suite.jsonl"
    proc = subprocess.run([sys.executable, "-m", "crescade.tasks", str(out), "--n", "1"], capture_output=True,
                          text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert len(out.read_text().splitlines()) == 7  # one task of each family
