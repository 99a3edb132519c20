"""Public name of :mod:`lrp_teach.engine.canonize`; ``lt.canonize(model, x)`` folds BatchNorm."""

import sys

from .engine import canonize as _impl

sys.modules[__name__] = _impl
