"""lrp_teach: Layer-wise Relevance Propagation for PyTorch, built chapter by chapter.

The top-level names are imported lazily, so that ``import lrp_teach`` stays fast and a
chapter only pays for the modules it uses.

>>> import lrp_teach as lt
>>> R = lt.explain(model, x, target=3, composite=lt.composites.EpsilonGammaBox(-1.0, 1.0))
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_SUBMODULES = {
    "baselines",
    "engine",
    "products",
    "canonize",
    "composites",
    "core",
    "datasets",
    "dtd",
    "evaluation",
    "exercises",
    "labs",
    "limits",
    "lstm",
    "models",
    "plot",
    "pretrained",
    "rules",
    "taylor",
    "utils",
    "vqa",
    "widgets",
}

# name -> module that defines it
_ATTRIBUTES = {
    "explain": "core",
    "attribute": "core",
    "Attribution": "core",
    "conservation_report": "core",
    "ConservationReport": "core",
    "seed_everything": "utils",
}


def __getattr__(name: str) -> Any:
    if name in _ATTRIBUTES:
        module = importlib.import_module(f".{_ATTRIBUTES[name]}", __name__)
        return getattr(module, name)
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'lrp_teach' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _SUBMODULES | set(_ATTRIBUTES))
