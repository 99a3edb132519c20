"""Reproducible training recipes for the weights shipped in ``data/weights/``.

``python -m lrp_teach.train <name>`` runs the recipe ``<name>`` and records the result in
``data/MANIFEST.json`` (hash, command, metrics). A recipe is a function
``train(seed: int = 0) -> None`` registered in :data:`RECIPES` as
``"<name>": "lrp_teach.train.<module>:<function>"``; each recipe lives in its own module.
``python -m lrp_teach.train --list`` shows them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

RECIPES: dict[str, str] = {}


def register(name: str, spec: str) -> None:
    """Register a recipe: ``spec`` is ``"module:function"``."""
    RECIPES[name] = spec


def recipe(name: str) -> Callable[..., None]:
    """The training function of ``name``."""
    _discover()
    if name not in RECIPES:
        known = ", ".join(sorted(RECIPES)) or "none"
        raise KeyError(f"no training recipe called {name!r}; known recipes: {known}")
    module_name, _, function = RECIPES[name].partition(":")
    return getattr(importlib.import_module(module_name), function)


def _discover() -> None:
    """Import every recipe module in this package so that they register themselves."""
    import pkgutil

    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")
