"""The package's shape, as ``../DESIGN`` and issue 28 ask for it: imports that point one way, a
backend that never sees an estimator, estimators as small as scikit-learn's, and the update rule
written once in plain NumPy and once in the kernels.  Read from the sources with ``ast``."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "mnistnn"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(name: str) -> set[str]:
    """The package's modules that module ``name`` imports, anywhere in it (functions too, and
    imports for type annotations only: a reader follows those as well)."""
    path = MODULES[name]
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("mnistnn")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            if not base.startswith("mnistnn"):
                continue
            for alias in node.names:  # `from . import x` may name a submodule
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in MODULES else base)
    return found - {name}


def test_the_import_graph_has_no_cycle():
    graph = {name: {m for m in imports(name) if m in MODULES} for name in MODULES}
    state: dict[str, int] = {}  # 1: on the path being explored, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt) :] + [nxt] if nxt in path else [node, nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert graph["mnistnn.network"] >= {"mnistnn.training", "mnistnn.backends"}


@pytest.mark.parametrize(
    "low, high",
    [
        ("mnistnn.backends", "mnistnn.network"),
        ("mnistnn.training", "mnistnn.network"),
        ("mnistnn.datasets", "mnistnn.network"),
        ("mnistnn.reference", "mnistnn.training"),
    ],
)
def test_lower_modules_never_import_higher_ones(low, high):
    assert high not in imports(low)


def test_the_kernels_import_nothing_above_them():
    for name in MODULES:
        if name.startswith("mnistnn.kernels"):
            above = {m for m in imports(name) if not m.startswith("mnistnn.kernels")}
            assert not above, (name, above)


def code_names(path: Path) -> set[str]:
    """Every name and attribute the code of ``path`` uses (docstrings and comments aside)."""
    tree = ast.parse(path.read_text())
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} | {
        n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)
    }


def test_backends_receive_plain_parameters_never_an_estimator():
    used = code_names(PACKAGE / "backends.py")
    assert "net" not in used and not any("NNetwork" in name for name in used)
    assert "mnistnn.network" not in imports("mnistnn.backends")


def test_kernels_are_imported_by_name():
    """No ``__getattr__`` search: a reader (or a tool) follows every call into its module."""
    tree = ast.parse((PACKAGE / "kernels" / "__init__.py").read_text())
    names = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    assert "__getattr__" not in names


def class_lines(path: Path, cls: str) -> int:
    tree = ast.parse(path.read_text())
    (node,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls]
    return node.end_lineno - node.lineno + 1


def test_the_estimator_keeps_only_what_an_estimator_keeps():
    assert class_lines(PACKAGE / "network.py", "NNetworkExtended") < 300


def test_the_update_rule_is_written_once_in_numpy_and_once_in_the_kernels():
    """``V = momentum * V - alpha * g`` is computed in :func:`mnistnn.reference.update` and in
    :func:`mnistnn.kernels.reductions.update` and nowhere else (a product with ``momentum``)."""

    def multiplies_momentum(node: ast.AST) -> bool:
        if not (isinstance(node, ast.BinOp | ast.AugAssign) and isinstance(node.op, ast.Mult)):
            return False
        operands = [node.left, node.right] if isinstance(node, ast.BinOp) else [node.value]
        return "momentum" in [getattr(o, "id", getattr(o, "attr", "")) for o in operands]

    where = sorted(
        module_name(p)
        for p in PACKAGE.rglob("*.py")
        if any(multiplies_momentum(n) for n in ast.walk(ast.parse(p.read_text())))
    )
    assert where == ["mnistnn.kernels.reductions", "mnistnn.reference"]


def test_training_is_one_module():
    """The loops over batches live in :mod:`mnistnn.training` only (the kernels loop over
    images and units, never over batches)."""
    loops = re.compile(r"for\s+\w+.*range\(\s*0\s*,\s*\w+(\.shape\[0\])?\s*,\s*(batch_size|size)")
    where = sorted(module_name(p) for p in PACKAGE.rglob("*.py") if loops.search(p.read_text()))
    assert where == ["mnistnn.training"]
