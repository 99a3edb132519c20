"""Public name of :mod:`lrp_teach.engine.rules` (``from lrp_teach.rules import ...``)."""

import sys

from .engine import rules as _impl

sys.modules[__name__] = _impl
