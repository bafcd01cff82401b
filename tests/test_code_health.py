"""The code reads top-down: every public function, method and class in cnntui/ says in its
docstring what it is for."""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "cnntui"
Definition = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef


def undocumented(body: list[ast.stmt], path: Path, prefix: str = "") -> Iterator[str]:
    """`file:line:name` of each public definition in `body` without a docstring, the methods
    of public classes included."""
    for node in body:
        if not isinstance(node, Definition) or node.name.startswith("_"):
            continue
        if ast.get_docstring(node) is None:
            yield f"{path.relative_to(PACKAGE.parent)}:{node.lineno}:{prefix}{node.name}"
        if isinstance(node, ast.ClassDef):
            yield from undocumented(node.body, path, f"{prefix}{node.name}.")


def test_every_public_function_and_class_has_a_docstring() -> None:
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 20  # the package itself, not an empty folder
    missing = [
        where
        for path in files
        for where in undocumented(ast.parse(path.read_text(encoding="utf-8")).body, path)
    ]
    assert not missing, f"{len(missing)} public definitions without a docstring:\n" + "\n".join(
        missing
    )


def own_names(trees: list[ast.Module]) -> set[str]:
    """Every name cnntui itself defines: functions, classes, and attributes it assigns."""
    names: set[str] = set()
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, Definition):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
    return names


def foreign_private_uses(path: Path, tree: ast.Module, own: set[str]) -> Iterator[str]:
    """`file:line:expr` of each `x._name` where `_name` is not cnntui's own and `x` is not a
    standard-library module: a third-party private attribute, which a release may remove."""
    stdlib: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            stdlib |= {
                a.asname or a.name
                for a in node.names
                if a.name.split(".")[0] in sys.stdlib_module_names
            }
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        name = node.attr
        if not name.startswith("_") or name.startswith("__") or name in own:
            continue
        base = node.value
        if isinstance(base, ast.Name) and (base.id in stdlib or base.id in ("self", "cls")):
            continue
        yield f"{path.relative_to(PACKAGE.parent)}:{node.lineno}:{ast.unparse(node)}"


@pytest.mark.slow
def test_no_private_attribute_of_a_third_party_library() -> None:
    """tomlkit 0.15 dropped Container._insert_after, which the edit form used: cnntui reaches
    other libraries through their public API only (textual-serve's AppService, which
    serve_app subclasses, is bounded in pyproject.toml and overridden through `self`)."""
    files = sorted(PACKAGE.rglob("*.py"))
    trees = [ast.parse(p.read_text(encoding="utf-8")) for p in files]
    own = own_names(trees)
    found = [w for p, t in zip(files, trees, strict=True) for w in foreign_private_uses(p, t, own)]
    assert not found, "private attributes of other libraries:\n" + "\n".join(found)


STATUS_WORDS = {"queued", "running", "finished", "failed", "diverged", "cancelled"} | {
    "interrupted",
    "starting",
    "unknown",
}


def raw_status_comparisons(path: Path, tree: ast.Module) -> Iterator[str]:
    """`file:line` of each comparison or match case against a status spelled as a string."""

    def spelled(node: ast.AST) -> bool:
        if isinstance(node, ast.Constant):
            return node.value in STATUS_WORDS
        return isinstance(node, ast.Tuple | ast.List | ast.Set) and any(map(spelled, node.elts))

    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
        elif isinstance(node, ast.MatchValue):
            operands = [node.value]
        else:
            continue
        if any(map(spelled, operands)):
            yield f"{path.relative_to(PACKAGE.parent)}:{node.lineno}"


def test_statuses_are_compared_as_run_statuses_not_strings() -> None:
    """A run's status and its groups are RunStatus members, defined once in runs/records.py:
    a status spelled as a string elsewhere can drift from it unnoticed."""
    records = PACKAGE / "runs" / "records.py"
    found = [
        where
        for path in sorted(PACKAGE.rglob("*.py"))
        if path != records
        for where in raw_status_comparisons(path, ast.parse(path.read_text(encoding="utf-8")))
    ]
    assert not found, "statuses compared as strings:\n" + "\n".join(found)
