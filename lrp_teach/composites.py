"""Public name of :mod:`lrp_teach.engine.composites` (``from lrp_teach.composites import ...``)."""

import sys

from .engine import composites as _impl

sys.modules[__name__] = _impl
