"""Checkers for chapter 4 (Deep Taylor Decomposition)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ._base import ExerciseError, compare

__all__ = ["check_zero_to_h_rule"]


def check_zero_to_h_rule(fn: Callable, cases: int = 6) -> None:
    r"""Grade ``fn(layer, a, R, high)``: the DTD rule for inputs in the box [0, h].

    Searching from a along v_j = a_j 1[w_jk > 0] + (a_j − h_j) 1[w_jk < 0] to the
    hyperplane z_k = 0 gives :cite:`montavon2017dtd`

    .. math:: R_j = \sum_k \frac{a_j w_{jk} - h_j w_{jk}^-}
              {\sum_{j'} (a_{j'} w_{j'k} - h_{j'} w_{j'k}^-)} R_k ,

    the z^B rule with l = 0. The reference is the package's
    ``ZBox(0, high, stabilizer=0)``.

    Parameters
    ----------
    fn : callable
        ``fn(layer, a, R, high) -> torch.Tensor`` of shape (B, d), for an ``nn.Linear``
        ``layer``, activations ``a`` (B, d) in [0, high], output relevance ``R`` (B, K) and
        ``high`` a float or a tensor of shape (d,).
    cases : int
        Number of random layers.
    """
    from ..core import propagate
    from ..rules import ZBox

    for case in range(cases):
        g = torch.Generator().manual_seed(case)
        d, K, B = 4 + case, 3 + case % 3, 3
        layer = torch.nn.Linear(d, K).double()
        with torch.no_grad():
            layer.weight.copy_(torch.randn(K, d, generator=g, dtype=torch.float64))
            layer.bias.copy_(0.2 * torch.randn(K, generator=g, dtype=torch.float64))
        if case % 2:
            high = 0.5 + torch.rand(d, generator=g, dtype=torch.float64)
            what = "per-feature bounds h_j"
        else:
            high = 1.0 + case
            what = f"h = {high}"
        a = torch.rand(B, d, generator=g, dtype=torch.float64) * torch.as_tensor(high)
        with torch.no_grad():
            R = torch.relu(layer(a)) * torch.rand(B, K, generator=g, dtype=torch.float64)
        expected = propagate(layer, ZBox(0.0, high, stabilizer=0), a, R)
        got = fn(layer, a.clone(), R.clone(), high)
        compare(f"case {case} ({what})", got, expected, atol=1e-8,
                hint="the numerator is a_j w_jk - h_j min(0, w_jk); the denominator sums it "
                "over j and has no bias term.")
        if not torch.allclose(got.sum(1), R.sum(1), atol=1e-8):
            raise ExerciseError(f"case {case}: relevance is not conserved (sum R_in != sum R_out)")
    print(f"The [0, h] rule: correct on {cases} random layers, and it conserves relevance.")
