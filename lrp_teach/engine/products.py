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
  :math:`R_a = R_b = R_y / 2`;
* :func:`matmul_uniform`: the uniform rule for a matrix product :math:`a b` (attention's
  :math:`q k^\top` and :math:`A v`), optionally with ε on the contracted sum.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["matmul_uniform", "take_all", "uniform"]


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


class _UniformMatmul(torch.autograd.Function):
    """``a @ b``; backward: the uniform rule (gradient halved), ε on the contracted sum."""

    @staticmethod
    def forward(ctx, a, b, eps):
        z = torch.matmul(a, b)
        ctx.eps = eps
        ctx.save_for_backward(a, b, z if eps else None)
        return z

    @staticmethod
    def backward(ctx, g):
        a, b, z = ctx.saved_tensors
        if ctx.eps:
            mag = z.abs()
            s = g * (0.5 * mag / (mag + ctx.eps))
        else:
            s = 0.5 * g
        ga = torch.matmul(s, b.transpose(-1, -2)) if ctx.needs_input_grad[0] else None
        gb = torch.matmul(a.transpose(-1, -2), s) if ctx.needs_input_grad[1] else None
        return ga, gb, None


def matmul_uniform(a: Tensor, b: Tensor, epsilon: float = 0.0) -> Tensor:
    r"""``a @ b`` with the uniform rule: each factor receives half of the relevance.

    .. math::  R_{a_{ik}} = a_{ik} \sum_j b_{kj} \frac{R_{ij}}{2\,(z_{ij} + \epsilon\,
               \mathrm{sign}\,z_{ij})},\qquad z = a b,

    and likewise for :math:`b` (:cite:`achtibat2024attnlrp`).  With ``epsilon=0``
    :math:`\sum R_a = \sum R_b = \tfrac12 \sum R_z`.  Computed as the matrix product whose
    gradient is halved (times :math:`|z|/(|z|+\epsilon)`): no extra matrix product.
    """
    if epsilon < 0 or math.isnan(epsilon):
        raise ValueError(f"epsilon must be >= 0, got {epsilon!r}")
    return _UniformMatmul.apply(a, b, float(epsilon))
