"""Checkers for chapter 6, "Evaluating explanations"."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ._base import ExerciseError, compare

__all__ = ["check_aopc", "check_relevance_mass_accuracy"]


def check_aopc(fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
    """Grade ``fn(curves)``: the AOPC of each perturbation curve.

    ``curves`` has shape ``(B, L + 1)``: the score before any perturbation, then after each
    of the ``L`` steps. The answer is

    .. math:: \\mathrm{AOPC} = \\frac{1}{L+1} \\sum_{k=0}^{L} \\big(f(x^{(0)}) - f(x^{(k)})\\big)

    per curve, a tensor of shape ``(B,)`` :cite:`samek2017evaluating`.
    """
    generator = torch.Generator().manual_seed(606)
    cases = 20
    for case in range(cases):
        b = int(torch.randint(1, 6, (1,), generator=generator))
        steps = int(torch.randint(1, 30, (1,), generator=generator))
        curves = torch.randn(b, steps + 1, generator=generator, dtype=torch.float64).cumsum(1)
        got = fn(curves.clone())
        drops = curves[:, :1] - curves
        expected = drops.mean(1)
        if isinstance(got, torch.Tensor) and got.shape == expected.shape:
            g = got.detach().double()
            if torch.allclose(g, drops.sum(1) / steps, atol=1e-10):
                raise ExerciseError(
                    f"case {case}: you divided by L = {steps}; the sum has L + 1 = {steps + 1} "
                    "terms (k = 0 .. L), so divide by L + 1."
                )
            if torch.allclose(g, -expected, atol=1e-10):
                raise ExerciseError(
                    f"case {case}: the sign is flipped: AOPC adds up f(x^(0)) - f(x^(k)), the "
                    "drop of the score, which is positive when perturbing hurts."
                )
            if torch.allclose(g, drops[:, 1:].mean(1), atol=1e-10):
                raise ExerciseError(
                    f"case {case}: you left out the k = 0 term (it is 0, but it counts in the "
                    "average: there are L + 1 terms)."
                )
        compare(f"case {case} (B={b}, L={steps})", got, expected, atol=1e-10, rtol=0)
    print(f"check_aopc: {cases} random sets of curves agree with the reference.")


def check_relevance_mass_accuracy(
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> None:
    """Grade ``fn(R, mask)``: the share of positive relevance that falls inside ``mask``.

    ``R`` has shape ``(B, H, W)`` (signed), ``mask`` is boolean of the same shape. With
    :math:`R^+ = \\max(0, R)` the answer is

    .. math:: \\mathrm{mass} = \\frac{\\sum_{p \\in GT} R^+_p}{\\sum_p R^+_p}

    per image, a tensor of shape ``(B,)`` :cite:`arras2022clevrxai`.
    """
    generator = torch.Generator().manual_seed(707)
    cases = 20
    for case in range(cases):
        b = int(torch.randint(1, 5, (1,), generator=generator))
        h = int(torch.randint(3, 9, (1,), generator=generator))
        R = torch.randn(b, h, h, generator=generator, dtype=torch.float64)
        mask = torch.rand(b, h, h, generator=generator) < 0.3
        mask[:, 0, 0] = True
        got = fn(R.clone(), mask.clone())
        pos = R.clamp(min=0)
        expected = (pos * mask).sum((1, 2)) / pos.sum((1, 2))
        if isinstance(got, torch.Tensor) and got.shape == expected.shape:
            signed = (R * mask).sum((1, 2)) / R.sum((1, 2))
            if torch.allclose(got.detach().double(), signed, atol=1e-10):
                raise ExerciseError(
                    f"case {case}: you used the signed relevance; keep only its positive part "
                    "max(0, R) in both sums, or negative evidence cancels positive evidence."
                )
        compare(f"case {case} (B={b}, {h}x{h})", got, expected, atol=1e-10, rtol=0)
    print(f"check_relevance_mass_accuracy: {cases} random cases agree with the reference.")
