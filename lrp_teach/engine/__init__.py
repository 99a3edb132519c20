"""The engine: LRP as Gradient x Input of the model's own forward pass, with rules attached.

========================  ===========================================================
``core``                  :func:`explain`, :func:`attribute`, the conservation report
``rules``                 one small class per formula (Linear/Conv rules, activations)
``products``              rules for products of two input-dependent tensors
``composites``            which rule goes to which layer
``canonize``              BatchNorm folding, found by running the model
``recurrent``             ``nn.LSTM`` as a modified recurrence (Arras et al. 2017)
``state``                 the one save/restore of a model, the one target resolution
========================  ===========================================================
"""

from .core import (
    Attribution,
    ConservationReport,
    attribute,
    conservation_report,
    explain,
    propagate,
    trace,
)
from .state import preserved, resolve_target

__all__ = [
    "Attribution",
    "ConservationReport",
    "attribute",
    "conservation_report",
    "explain",
    "preserved",
    "propagate",
    "resolve_target",
    "trace",
]
