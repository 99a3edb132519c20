"""Product rules: how relevance passes an element-wise product of two input-dependent tensors.

A product :math:`y = a \\odot b` of two tensors that both depend on the input (an LSTM gate
times its signal, attention weights times values) is not linear in the input, and its plain
gradient would give :math:`a \\odot \\partial y/\\partial a = b \\odot \\partial y/\\partial b
= y \\odot \\partial f/\\partial y`: each factor would receive the whole relevance, twice in
total.  The engine therefore refuses such products unless they are written with one of these
rules, each computed as Gradient x Input of a modified product (same value, new gradient):

* :func:`take_all` (signal-take-all, :cite:`arras2017wassa`): the gate is held constant, the
  signal receives all relevance, :math:`R_b = R_y`, :math:`R_a = 0`;
* :func:`uniform` (:cite:`achtibat2024attnlrp`): each factor receives half,
  :math:`R_a = R_b = R_y / 2`.
"""

from __future__ import annotations

from torch import Tensor

__all__ = ["take_all", "uniform"]


def take_all(gate: Tensor, signal: Tensor) -> Tensor:
    """Signal-take-all: :math:`y = a \\odot b` with :math:`R_b = R_y` and :math:`R_a = 0`.

    Computed as ``gate.detach() * signal``: the value is the product, the gate passes no
    gradient, so the signal's relevance :math:`b \\odot \\partial f / \\partial b` equals the
    product's :cite:`arras2017wassa`.
    """
    return gate.detach() * signal


def uniform(a: Tensor, b: Tensor) -> Tensor:
    """Uniform rule: :math:`y = a \\odot b` with :math:`R_a = R_b = R_y / 2`.

    Computed as :math:`\\tfrac12 (a\\, \\bar b + \\bar a\\, b)` with :math:`\\bar\\cdot` held
    constant: the value is exactly :math:`a b`, and each factor's Gradient x Input is half the
    product's relevance :cite:`achtibat2024attnlrp`.
    """
    return 0.5 * (a * b.detach() + a.detach() * b)
