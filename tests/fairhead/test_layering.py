"""The layering of ``fairhead/``: its modules import each other without a cycle, at module level.

The import graph is read from the source with :mod:`ast` (module-level and function-level imports of
``fairhead.*``), so a cycle hidden behind a function-level import is found as well. A first-party
import inside a function is allowed only where it defers a heavy library (:data:`HEAVY_FIRST_PARTY`)
that a command which does not need it would otherwise pay for; third-party ones (torch, matplotlib,
scikit-learn, fairlearn, onnx, pandas, pyarrow, scipy) may stay deferred. ``cli.py`` is the command
dispatcher: it imports each command's module when that command runs, so ``fairhead --help`` stays fast.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "fairhead"
FIRST_PARTY = ("fairhead", "solvers", "embedcache")
#: first-party modules whose import loads a heavy library, so they may be imported inside a function
#: (the test below checks that each one really does load it)
HEAVY_FIRST_PARTY = {
    "embedcache": "torch",  # embedcache/__init__ imports its backbones and extraction loop
    "solvers.estimator": "sklearn",
    "fairhead.full_network": "torch",
}
#: solvers' lazy public names that live in a heavy module (``from solvers import FairLogisticRegression``)
HEAVY_SOLVERS_NAMES = {"FairLogisticRegression": "solvers.estimator"}
#: the command dispatcher, whose function-level imports are each command's module (see the docstring)
DISPATCHER = "fairhead.cli"
#: libraries no module of fairhead/ may load at import (only fairhead.full_network, which trains with torch)
HEAVY_LIBRARIES = ("torch", "torchvision", "matplotlib", "cvxpy", "sklearn", "pandas", "fairlearn", "onnx")


def _module_name(path: Path) -> str:
    return "fairhead" if path.name == "__init__.py" else f"fairhead.{path.stem}"


def _imports(tree: ast.Module):
    """``(imported module, node, at_module_level)`` for every import in ``tree``; ``from fairhead import x``
    names the module ``fairhead.x`` when ``x`` is one."""
    function_level = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            function_level.update(id(n) for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom)))
    submodules = {p.stem for p in PACKAGE.glob("*.py")}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            if node.module == "fairhead":
                names = [f"fairhead.{a.name}" if a.name in submodules else "fairhead" for a in node.names]
            elif node.module == "solvers":
                names = [HEAVY_SOLVERS_NAMES.get(a.name, "solvers") for a in node.names]
            else:
                names = [node.module]
        else:
            continue
        for name in names:
            yield name, node, id(node) not in function_level


def _sources():
    return {_module_name(p): ast.parse(p.read_text(), filename=str(p)) for p in sorted(PACKAGE.glob("*.py"))}


def _is_heavy(name: str) -> bool:
    return any(name == h or name.startswith(h + ".") for h in HEAVY_FIRST_PARTY)


def test_fairhead_import_graph_is_acyclic():
    graph = {name: set() for name in _sources()}
    for name, tree in _sources().items():
        for target, _, _ in _imports(tree):
            if target in graph and target not in (name, "fairhead"):
                graph[name].add(target)
    # depth-first search; a back edge is a cycle
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycle = stack[stack.index(nxt):] + [nxt]
                pytest.fail("import cycle in fairhead/: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_first_party_imports_are_at_module_level_unless_they_defer_a_heavy_library():
    found = []
    for name, tree in _sources().items():
        if name == DISPATCHER:
            continue
        for target, node, module_level in _imports(tree):
            if not module_level and target.split(".")[0] in FIRST_PARTY and not _is_heavy(target):
                found.append(f"{name} line {node.lineno}: {target}")
    assert not found, "function-level imports of light first-party modules (move them to the top):\n" + \
        "\n".join(found)


def _loaded(code: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         check=True)
    return out.stdout.split()


def test_fairhead_modules_import_no_heavy_library():
    """Hoisting the imports must not make a command pay for what it does not use: every module of
    fairhead/ but the full-network trainer imports without torch, matplotlib, scikit-learn, ..."""
    modules = [m for m in _sources() if m not in ("fairhead.full_network", "fairhead.__main__")]
    code = ("import importlib, sys\n"
            f"for m in {modules!r}: importlib.import_module(m)\n"
            f"print(*[h for h in {HEAVY_LIBRARIES!r} if h in sys.modules])")
    assert _loaded(code) == []


@pytest.mark.slow
@pytest.mark.parametrize("module", sorted(HEAVY_FIRST_PARTY))
def test_each_deferred_first_party_module_is_heavy(module):
    """The exceptions above are real: importing each loads its heavy library."""
    assert HEAVY_FIRST_PARTY[module] in _loaded(f"import sys, {module}; print(*sys.modules)")


@pytest.mark.parametrize("command", [
    ["fit", "{cache}", "--constraint", "eo", "--save", "{tmp}/head.json", "--no-progress"],
    ["sweep", "{cache}", "--constraint", "dp", "--n-eps", "3", "--out", "{tmp}/sweep", "--no-plots", "--no-progress"],
    ["protocols", "{cache}", "--constraint", "dp-score", "--out", "{tmp}/protocols", "--no-progress"],
])
def test_fit_sweep_and_protocols_run_without_scikit_learn(cache_path, tmp_path, command):
    """The commands fit solvers.FairHead: scikit-learn's import (about 1 s, with scipy.stats and pandas)
    is not on their path, nor scipy.stats (0.5 s; the intervals need scipy.special only)."""
    argv = [a.format(cache=cache_path, tmp=tmp_path) for a in command]
    code = (f"import sys; from fairhead.cli import main; code = main({argv!r}); "
            "print(code, *[m for m in ('sklearn', 'scipy.stats', 'pandas') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-1:] == ["0"], out.stdout[-2000:] + out.stderr[-2000:]
