"""Checkers for the book's exercises.

A checker takes the learner's function, runs it on random cases next to the reference
implementation, and either prints a short success line or raises :class:`ExerciseError`
with a message that says what is wrong (for example "conservation broken at layer 2").

Each chapter's checkers live in their own module (``lrp_teach/exercises/<topic>.py``) and
list their public names in ``__all__``; they are all re-exported here, so a notebook calls
``lt.exercises.check_gamma_rule(my_function)``.
"""

from __future__ import annotations

import importlib
import pkgutil

from ._base import ExerciseError, compare

__all__ = ["ExerciseError", "compare"]

for _info in pkgutil.iter_modules(__path__):
    if _info.name.startswith("_"):
        continue
    _module = importlib.import_module(f"{__name__}.{_info.name}")
    for _name in getattr(_module, "__all__", []):
        globals()[_name] = getattr(_module, _name)
        __all__.append(_name)
