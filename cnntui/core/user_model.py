"""The user's own model: `model = "mynet.py:TinyNet"` or `model = "package.module:name"`.

This module owns what such a model name means, the checks that can be made before anything
runs, and loading the model's code. The checks that only read (the file exists, the name is
defined in it, the `model_args` keys are parameters of it) parse the file with `ast` and never
run it, so loading an experiments file stays instant and runs no code. The checks that need
the model built (it builds; it gives one column per class) run it once per distinct model on
CPU, before training starts.

A model file is imported from its bytes under a module name keyed by their hash
(`cnntui_user_<sha12>`), with the file's folder on sys.path for sibling imports: a process
that lives on (the TUI's threads, a warm worker) builds from the file as it is now, never from
a stale import. The file is the user's own code and runs in the training process as such.

The module imports torch only where it builds a model, so config can use it at load time.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import inspect
import re
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from .text import one_line

if TYPE_CHECKING:
    from torch import nn

# The arguments cnntui fills in from the dataset, for a callable that takes them.
FILLED = ("num_classes", "in_channels")
_SPEC_RE = re.compile(r"^(?P<source>[^:]+):(?P<name>[A-Za-z_][A-Za-z0-9_]*)$")
_MODULE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
ModelArgs = tuple[tuple[str, Any], ...]  # model_args as a setting holds them: sorted pairs


class UserModelError(ValueError):
    """A problem with a user model, as one line; `key` is the setting to blame and
    `experiment` the experiment whose model failed to build ("" for a source check)."""

    def __init__(self, key: str, message: str, experiment: str = "") -> None:
        super().__init__(message)
        self.key = key
        self.experiment = experiment


@dataclass(frozen=True)
class Spec:
    """A parsed user model name: its source (a .py file or a module) and the callable's name."""

    source: str
    name: str

    @property
    def is_file(self) -> bool:
        """Whether the source is a Python file (else an importable module)."""
        return self.source.endswith(".py")

    def path(self, base_dir: str) -> Path:
        """The model file, relative to the experiments file's folder `base_dir`."""
        return Path(base_dir or ".").joinpath(Path(self.source).expanduser())


def parse_spec(value: str) -> Spec | None:
    """The user model that `value` names, or None when it names no file or module."""
    m = _SPEC_RE.match(value)
    if m is None:
        return None
    source = m.group("source").strip()
    if source.endswith(".py") or _MODULE_RE.match(source):
        return Spec(source, m.group("name"))
    return None


def check_args(value: Any) -> ModelArgs:
    """`model_args` as a setting holds it: a table of keyword arguments, each a number, text,
    true/false or a list of those, as sorted (name, value) pairs; UserModelError otherwise."""
    if isinstance(value, list | tuple) and all(
        isinstance(p, list | tuple) and len(p) == 2 for p in value
    ):
        value = {p[0]: p[1] for p in value}  # as a run's config.toml may hold it
    if not isinstance(value, dict):
        raise UserModelError(
            "model_args", f"'model_args' must be a table of keyword arguments, got {value!r}"
        )
    out = []
    for key, item in value.items():
        if not isinstance(key, str) or not key.isidentifier():
            raise UserModelError("model_args", f"'model_args' key {key!r} is not a Python name")
        if key in FILLED:
            raise UserModelError(
                "model_args",
                f"'model_args' sets {key!r}; cnntui passes num_classes and in_channels from "
                "the dataset (leave them out)",
            )
        out.append((key, _plain_arg(key, item)))
    return tuple(sorted(out))


def _plain_arg(key: str, item: Any) -> Any:
    scalar = (int, float, str, bool)
    if isinstance(item, scalar):
        return item
    if isinstance(item, list | tuple) and all(isinstance(i, scalar) for i in item):
        return tuple(item)
    raise UserModelError(
        "model_args",
        f"'model_args' value of {key!r} must be a number, text, true/false or a list of "
        f"those, got {item!r}",
    )


# --- checks that read the source and run nothing ---------------------------------------------


def check_source(spec: Spec, args: ModelArgs, base_dir: str) -> None:
    """The file (or module) exists, defines `spec.name`, and the callable takes every key of
    `args`, read from the source with `ast`; UserModelError otherwise. A parameter list
    the source does not show (an imported name, a decorator, an inherited __init__) is left
    to the build check."""
    path = _source_file(spec, base_dir)
    if path is None:
        return  # a compiled or namespace module: only the build check can tell
    tree = _parse(path)
    node = _definition(tree, spec.name)
    if node is None:
        raise UserModelError(
            "model", f"{path} defines no {spec.name!r} at its top level{_defined_hint(tree)}"
        )
    params = _parameters(node)
    bad = [k for k, _ in args if params is not None and k not in params]
    if bad:
        takes = ", ".join(p for p in params or () if p not in FILLED) or "no arguments"
        raise UserModelError(
            "model_args",
            f"{spec.source}:{spec.name} takes no argument {bad[0]!r} (it takes: {takes})",
        )


def _source_file(spec: Spec, base_dir: str) -> Path | None:
    """The .py file that holds the model's source; UserModelError when there is none."""
    if spec.is_file:
        path = spec.path(base_dir)
        if not path.is_file():
            raise UserModelError("model", f"model file {path} does not exist")
        return path
    try:
        found = importlib.util.find_spec(spec.source)
    except (ImportError, ValueError) as e:
        raise UserModelError("model", f"module {spec.source!r} cannot be found ({e})") from None
    if found is None:
        raise UserModelError("model", f"module {spec.source!r} cannot be found on sys.path")
    origin = found.origin
    return Path(origin) if origin and origin.endswith(".py") else None


def _parse(path: Path) -> ast.Module:
    try:
        return ast.parse(path.read_bytes(), filename=str(path))
    except SyntaxError as e:
        raise UserModelError(
            "model", f"{path}:{e.lineno}:{e.offset}: Python syntax error: {e.msg}"
        ) from None
    except (OSError, ValueError) as e:
        raise UserModelError("model", f"cannot read model file {path}: {one_line(e)}") from None


def _definition(tree: ast.Module, name: str) -> ast.AST | None:
    """The top-level statement that binds `name` (def, class, assignment or import)."""
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            if node.name == name:
                return node
        elif isinstance(node, ast.Import | ast.ImportFrom):
            if any((a.asname or a.name.split(".")[0]) == name for a in node.names):
                return node
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                return node
    return None


def _defined_hint(tree: ast.Module) -> str:
    defs = [
        n.name
        for n in tree.body
        if isinstance(n, ast.FunctionDef | ast.ClassDef) and not n.name.startswith("_")
    ]
    return f" (it defines: {', '.join(defs)})" if defs else " (it defines no class or function)"


def _parameters(node: ast.AST) -> tuple[str, ...] | None:
    """The keyword parameters a def or class takes, as its source shows them; None where it
    takes any (**kwargs) or the source does not say."""
    func: ast.FunctionDef | ast.AsyncFunctionDef | None = None
    skip = 0
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        func = node
    elif isinstance(node, ast.ClassDef):
        func = next(
            (n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"),
            None,
        )
        skip = 1  # self
        if node.decorator_list:
            return None
    if func is None or func.decorator_list or func.args.kwarg is not None:
        return None
    names = [a.arg for a in func.args.args][skip:] + [a.arg for a in func.args.kwonlyargs]
    return tuple(names)


# --- loading and building --------------------------------------------------------------------

_import_lock = threading.Lock()


def file_hash(path: Path) -> str:
    """The SHA-256 of a model file's bytes, as hex."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def import_file(path: Path) -> ModuleType:
    """The module a model file's current bytes make, imported once per content hash (of the
    file and of the `.py` files beside it, which it may import by their plain names)."""
    data = path.read_bytes()
    folder = path.resolve().parent
    siblings = sorted(p for p in folder.glob("*.py") if p.resolve() != path.resolve())
    digest = hashlib.sha256(data)
    for sibling in siblings:
        digest.update(sibling.name.encode() + b"\0" + sibling.read_bytes())
    name = f"cnntui_user_{digest.hexdigest()[:12]}"
    with _import_lock:
        module = sys.modules.get(name)
        if module is not None:
            return module
        _forget_siblings(folder, [p.stem for p in siblings])
        if str(folder) in sys.path:
            sys.path.remove(str(folder))
        sys.path.insert(0, str(folder))  # for the file's imports of its siblings, first
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None:
            raise ImportError(f"cannot import {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # before running it: dataclasses and pickling look it up
        try:
            # From the bytes hashed, not the file again: they are what the name promises.
            exec(compile(data, str(path), "exec"), module.__dict__)
        except BaseException:
            del sys.modules[name]
            raise
    return module


def _forget_siblings(folder: Path, names: list[str]) -> None:
    """Drop the modules a model file may import by the plain name of a `.py` file beside
    it, so that its import reads that file as it is now: not one of that name from another
    folder (another model's sibling), nor this file before it changed."""
    for name in names:
        for key in [k for k in sys.modules if k == name or k.startswith(f"{name}.")]:
            del sys.modules[key]


def resolve(spec: Spec, base_dir: str) -> Callable[..., Any]:
    """The callable a user model names, its source imported (the file as it is now)."""
    if spec.is_file:
        module = import_file(spec.path(base_dir))
    else:
        module = importlib.import_module(spec.source)
    try:
        found: Callable[..., Any] = getattr(module, spec.name)
    except AttributeError:
        raise AttributeError(f"{spec.source} defines no {spec.name!r}") from None
    return found


def build(
    spec: Spec, args: ModelArgs, base_dir: str, shape: tuple[int, int, int], classes: int
) -> nn.Module:
    """The user's model for images of `shape` and `classes` classes: `model_args` as keyword
    arguments, and num_classes and in_channels where the callable takes them."""
    from torch import nn

    factory = resolve(spec, base_dir)
    kwargs: dict[str, Any] = {k: list(v) if isinstance(v, tuple) else v for k, v in args}
    filled = {"num_classes": classes, "in_channels": shape[0]}
    kwargs.update({k: v for k, v in filled.items() if _takes(factory, k)})
    model = factory(**kwargs)
    if not isinstance(model, nn.Module):
        raise TypeError(f"it returned {type(model).__name__}, not a torch.nn.Module")
    return model


def _takes(factory: Callable[..., Any], name: str) -> bool:
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(
        (p.name == name and p.kind is not p.POSITIONAL_ONLY) or p.kind is p.VAR_KEYWORD
        for p in params
    )


@dataclass(frozen=True)
class Candidate:
    """One experiment's model to check before training: what it builds and for which data."""

    experiment: str
    model: str
    args: ModelArgs
    base_dir: str
    dataset: str
    # The dataset's image shape and classes, as core.data gives them (None: not known).
    shape: tuple[tuple[int, int, int], int] | None


def check_built(candidates: Iterable[Candidate]) -> None:
    """Build each distinct user model on CPU and run a batch of its dataset's shape through
    it: UserModelError naming the experiment when building fails or the output does not
    have one column per class. Datasets of unknown shape are left to training."""
    seen: set[tuple[Any, ...]] = set()
    for c in candidates:
        spec = parse_spec(c.model)
        if spec is None or c.shape is None:
            continue
        digest = file_hash(spec.path(c.base_dir)) if spec.is_file else ""
        key = (c.model, c.args, c.base_dir, c.shape, digest)
        if key not in seen:
            seen.add(key)
            _try_model(c, spec, *c.shape)


def _try_model(c: Candidate, spec: Spec, shape: tuple[int, int, int], classes: int) -> None:
    import torch

    def failed(what: str) -> UserModelError:
        return UserModelError("model", f"experiment {c.experiment!r}: {what}", c.experiment)

    batch = f"a batch of shape {_dims((2, *shape))} ({c.dataset})"
    with torch.random.fork_rng(devices=[]):
        try:
            model = build(spec, c.args, c.base_dir, shape, classes)
        except Exception as e:
            raise failed(f"building {c.model} failed: {one_line(e)}") from None
        try:
            with torch.no_grad():
                out = model.eval()(torch.zeros(2, *shape))
        except Exception as e:
            raise failed(f"{c.model} fails on {batch}: {one_line(e)}") from None
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, classes):
        got = _dims(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise failed(
            f"{c.model} gives {got} for {batch}; it must give (2, {classes}): one column per class"
        )


def _dims(shape: Sequence[int]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"
