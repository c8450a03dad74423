"""The package's layers, read from the import statements (late imports inside functions
and imports for type checkers count too): no import circle, each module imports only its
own layer or those below it (LAYERS, the drawing of docs/architecture.md), the TorchServe
layer knows no sweep, and the run directory's layout is spelled in sweeper.rundir only."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sweeper"


def _module(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_only(tree: ast.AST) -> set[ast.AST]:
    """Nodes under `if TYPE_CHECKING:`: they name types and import nothing at run time."""
    out: set[ast.AST] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                out |= set(ast.walk(child))
    return out


def _imports(path: Path, type_only: bool) -> set[str]:
    """Modules of the sweeper package that `path` imports, anywhere in the file (with
    `type_only`, the imports for type checkers too)."""
    here = _module(path).split(".")
    if path.name != "__init__.py":
        here = here[:-1]  # the package the module lives in
    tree = ast.parse(path.read_text())
    skip = set() if type_only else _type_only(tree)
    out = set()
    for node in ast.walk(tree):
        if node in skip:
            continue
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = here[: len(here) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            out.add(target)
            out |= {f"{target}.{a.name}" for a in node.names}  # `from . import results`
    return {m for m in out if m.split(".")[0] == "sweeper"}


GRAPH = {_module(p): _imports(p, type_only=False) for p in PACKAGE.rglob("*.py")}  # run time
NAMES = {_module(p): _imports(p, type_only=True) for p in PACKAGE.rglob("*.py")}  # run time + types
MODULES = set(GRAPH)


def _edges(module: str) -> set[str]:
    """What `module` needs, at run time or to name a type. A module importing its own
    package is no circle: Python runs the package first anyway."""
    return {m for m in NAMES[module] if m in MODULES and m != module and not module.startswith(m + ".")}


# Top to bottom; a module may import its own layer and those below it. The longest
# matching prefix places a module.
LAYERS = (
    ("cli", ("sweeper.cli",)),
    ("commands", ("sweeper.verify", "sweeper.compare", "sweeper.starter", "sweeper.preflight", "sweeper.results",
                  "sweeper.archive", "sweeper.reference", "sweeper.attach", "sweeper.duel")),
    ("sweep loop", ("sweeper.runner",)),
    ("strategies and executors", ("sweeper.search", "sweeper.executors")),
    ("measurement", ("sweeper.measure", "sweeper.warmup", "sweeper.trial_logs", "sweeper.serve", "sweeper.ceiling",
                     "sweeper.inputs", "sweeper.answers")),
    ("server and load", ("sweeper.torchserve", "sweeper.load", "sweeper.hostspeed", "sweeper.serverlog",
                         "sweeper.usermodel", "sweeper.mar", "sweeper.drift")),
    ("report", ("sweeper.report",)),
    ("analysis", ("sweeper.analysis",)),
    ("sweep and run data", ("sweeper.spec", "sweeper.sweepfile", "sweeper.plan", "sweeper.rundir", "sweeper.context", "sweeper.trialresult",
                            "sweeper.payload", "sweeper.machine", "sweeper.hoststat", "sweeper.gpu", "sweeper.columns",
                            "sweeper.load.types", "sweeper.capacity")),
    ("foundation", ("sweeper.errors", "sweeper.defaults", "sweeper.spec_rules", "sweeper.spec_errors", "sweeper.spec_axes")),
)


def _rank(module: str) -> tuple[int, str]:
    """(position in LAYERS, counted from the bottom; the layer's name)."""
    best: tuple[int, int, str] | None = None
    for i, (name, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > best[0]:
                    best = (len(prefix), len(LAYERS) - i, name)
    if best is None:
        raise AssertionError(f"{module} is in no layer: add it to tests/test_layers.py LAYERS and the architecture page")
    return best[1], best[2]


def test_no_import_circle():
    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in _edges(todo.pop()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    assert sorted(m for m in MODULES if m in reach(m)) == []


def test_each_module_imports_only_its_layer_and_those_below():
    upward = []
    for module in sorted(MODULES - {"sweeper"}):
        here, name = _rank(module)
        for target in sorted(_edges(module) - {"sweeper"}):
            there, other = _rank(target)
            if there > here:
                upward.append(f"{module} ({name}) imports {target} ({other})")
    assert upward == []


def test_nothing_below_the_cli_imports_it():
    assert sorted(m for m in MODULES if "sweeper.cli" in NAMES[m] and m != "sweeper.cli") == []


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("sweeper.torchserve")))
def test_the_torchserve_layer_knows_no_sweep(module):
    assert not {m for m in NAMES[module] if m.startswith(("sweeper.spec", "sweeper.plan"))}


# a file or directory name as a string literal (not a dict key such as {"trials": n})
LAYOUT = re.compile(r"""["'](trials|machine\.json|results\.csv|results\.md|sweep\.yaml|baseline\.csv|result\.json|servers|target_before\.json|target_after\.json|duel\.json)["'](?!\s*:)|-r\{""")


def test_the_run_layout_is_spelled_in_rundir_only():
    spelled = sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if LAYOUT.search(p.read_text()))
    assert spelled == ["rundir.py"]
