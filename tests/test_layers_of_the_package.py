"""The package's three layers: the library and the engine load nothing of the lab, and no lower module
imports a higher one (checked on the source, so a lazy import inside a function counts too)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import decaylab

SRC = Path(decaylab.__file__).parent


def test_the_library_is_importable_without_the_lab() -> None:
    code = (
        "import sys, decaylab\n"
        "decaylab.param_groups, decaylab.attach, decaylab.DecoupledDecay, decaylab.convert, decaylab.audit\n"
        "import decaylab.engine, decaylab.engine.module, decaylab.closed_form, decaylab.schedules\n"
        "lab = sorted(m for m in sys.modules if m == 'decaylab.lab' or m.startswith('decaylab.lab.'))\n"
        "assert not lab, lab\n"
        "assert 'matplotlib' not in sys.modules and 'sqlite3' not in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def _imports(path: Path) -> set[str]:
    """Every ``decaylab...`` module named by an import anywhere in ``path`` (top level or inside a function)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("decaylab"):
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names if a.name.startswith("decaylab"))
    return names


def _module(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_module_below_the_lab_imports_it() -> None:
    offenders = {}
    for path in SRC.rglob("*.py"):
        module = _module(path)
        if module.startswith("decaylab.lab") or module == "decaylab":  # decaylab/__init__ hands decaylab.sweep on lazily
            continue
        lab = sorted(n for n in _imports(path) if n == "decaylab.lab" or n.startswith("decaylab.lab."))
        if lab:
            offenders[module] = lab
    assert not offenders, offenders


def test_the_experiments_never_import_their_figures() -> None:
    """Figures read the experiments (``plots.NAME`` → ``experiments``), never the reverse: no import circle."""
    offenders = {}
    for path in (SRC / "lab" / "experiments").glob("*.py"):
        plots = sorted(n for n in _imports(path) if n.startswith("decaylab.lab.plots"))
        if plots:
            offenders[path.name] = plots
    assert not offenders, offenders
    # and the sweep's figures do not import the sweep module that draws them
    assert not {n for n in _imports(SRC / "lab" / "plots" / "sweep.py") if n.startswith("decaylab.lab.sweep")}


def _import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports (a name ``from M import x`` counts as ``M.x`` when that is a module)."""
    modules = {_module(path): path for path in SRC.rglob("*.py")}
    lazy = {f"decaylab.{name}": module for name, module in decaylab._EXPORTS.items()}  # from decaylab import name
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        named = {lazy.get(n, n) for n in _imports(path)}
        graph[module] = {n for n in named if n in modules and n != module and n != "decaylab"}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_circles_in_the_package() -> None:
    """No modules import each other in a loop, lazily or not (``decaylab/__init__``'s lazy names aside): each
    module can be read, tested and moved with what lies below it."""
    assert _cycles(_import_graph()) == []
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]  # the check itself
