"""The code reads top-down: every public function, method and class in cnntui/ says in its
docstring what it is for."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

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
