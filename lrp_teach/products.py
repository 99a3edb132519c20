"""Public name of :mod:`lrp_teach.engine.products` (``from lrp_teach.products import ...``)."""

import sys

from .engine import products as _impl

sys.modules[__name__] = _impl
