"""Public name of :mod:`lrp_teach.engine.core` (``from lrp_teach.core import ...``)."""

import sys

from .engine import core as _impl

sys.modules[__name__] = _impl
