"""Checkers for chapter 8 (explaining a relation network)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ._base import ExerciseError, compare

__all__ = ["check_pair_concat_relevance"]


def _reference(o, q, weight, bias, R_h, eps):
    from ..core import propagate
    from ..rules import Epsilon

    b, n, d = o.shape
    cat = torch.cat([o[:, :, None].expand(-1, -1, n, -1), o[:, None].expand(-1, n, -1, -1),
                     q[:, None, None].expand(-1, n, n, -1)], -1)
    layer = torch.nn.Linear(cat.shape[-1], weight.shape[0]).double()
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.copy_(bias)
    r_cat = propagate(layer, Epsilon(eps), cat.reshape(-1, cat.shape[-1]),
                      R_h.reshape(-1, R_h.shape[-1])).reshape(cat.shape)
    return r_cat[..., :d].sum(2) + r_cat[..., d:2 * d].sum(1), r_cat[..., 2 * d:].sum((1, 2))


def check_pair_concat_relevance(fn: Callable, cases: int = 4) -> None:
    r"""Grade ``fn(o, q, weight, bias, R_h, eps) -> (R_o, R_q)``.

    The first layer of the relation network's ``g`` computes, for every ordered pair
    :math:`(i, j)`, :math:`z_{ij} = W [o_i; o_j; q] + b`. The ε-rule on this layer
    (``montavon2019overview``, ``arras2022clevrxai``) gives each input its share
    :math:`a\,w\,R_{ij}/(z_{ij} + \epsilon\,\mathrm{sign}(z_{ij}))`, and each object collects
    its shares as first and as second member of all its pairs:

    .. math:: R_{o_i} = \sum_j R^{(1)}_{ij} + \sum_j R^{(2)}_{ji},\qquad
              R_q = \sum_{i,j} R^{(q)}_{ij}.

    Parameters
    ----------
    fn : callable
        ``o`` is ``(B, N, D)``, ``q`` ``(B, H)``, ``weight`` ``(G, 2D + H)``, ``bias``
        ``(G,)``, ``R_h`` ``(B, N, N, G)`` the relevance of the layer's outputs; returns the
        relevance of the objects ``(B, N, D)`` and of ``q`` ``(B, H)``.
    cases : int
        Number of random cases.
    """
    for case in range(cases):
        g = torch.Generator().manual_seed(300 + case)
        b, n, d, h, units = 2, 3 + case, 4, 3, 5
        o = torch.randn(b, n, d, generator=g, dtype=torch.float64)
        q = torch.randn(b, h, generator=g, dtype=torch.float64)
        weight = torch.randn(units, 2 * d + h, generator=g, dtype=torch.float64)
        bias = 0.1 * torch.randn(units, generator=g, dtype=torch.float64)
        R_h = torch.rand(b, n, n, units, generator=g, dtype=torch.float64)
        eps = 0.01
        out = fn(o.clone(), q.clone(), weight.clone(), bias.clone(), R_h.clone(), eps)
        if not isinstance(out, tuple) or len(out) != 2:
            raise ExerciseError("return a tuple (R_o, R_q)")
        r_o, r_q = _reference(o, q, weight, bias, R_h, eps)
        hint = ("pair (i, j) reads [o_i; o_j; q]: object i collects the first block's share "
                "from the pairs (i, *) and the second block's share from the pairs (*, i).")
        compare(f"relevance of the objects, case {case}", out[0], r_o, atol=1e-8, hint=hint)
        compare(f"relevance of q, case {case}", out[1], r_q, atol=1e-8,
                hint="q takes part in every pair: sum its share over all N^2 pairs.")
    print(f"Correct: your concatenation rule matches the reference on {cases} random cases.")
