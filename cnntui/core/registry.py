"""Every model, dataset and optimizer name a user may write, declared once and torch-free.

The config validates against these names without importing torch. Each implementation
attaches itself where it is written, timm-style: `@MODELS.register("lenet")` over the function
that builds it (cnntui/core/models.py, cnntui/core/data.py, cnntui/core/engine.py).
Registering a name not declared here fails at import; looking up a name with nothing
registered raises ValueError, so no name ever falls through to another's implementation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any


class Registry:
    """The declared names of one kind (model, dataset, optimizer) and what each builds."""

    def __init__(self, kind: str, names: tuple[str, ...]) -> None:
        self.kind = kind
        self.names = names
        self._built: dict[str, Callable[..., Any]] = {}

    def register(self, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator: the function that builds the declared `name`."""
        if name not in self.names:
            raise ValueError(f"{self.kind} {name!r} is not declared in cnntui/core/registry.py")

        def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._built:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._built[name] = fn
            return fn

        return wrap

    def get(self, name: str) -> Callable[..., Any]:
        """The function registered for `name`; ValueError for any other name."""
        try:
            return self._built[name]
        except KeyError:
            known = ", ".join(self._built)
            raise ValueError(f"unknown {self.kind} {name!r} (registered: {known})") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._built)

    def __contains__(self, name: object) -> bool:
        return name in self._built

    def __len__(self) -> int:
        return len(self._built)


MODELS = Registry("model", ("lenet", "resnet"))
DATASETS = Registry(
    "dataset",
    ("cifar10", "fashion-mnist", "synthetic", "mnist", "kmnist", "cifar100", "svhn"),
)
# A dataset value `folder:PATH` names an image folder (cnntui/core/folder.py), not a name.
FOLDER_PREFIX = "folder:"
OPTIMIZERS = Registry("optimizer", ("sgd", "adam", "adamw"))
