"""Checkers for chapter 6, "Evaluating explanations"."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ._base import call, compare, dtype_name, fail, snapshot, unchanged

__all__ = ["check_aopc", "check_relevance_mass_accuracy"]


def check_aopc(fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
    """Grade ``fn(curves)``: the AOPC of each perturbation curve.

    ``curves`` has shape ``(B, L + 1)``: the score before any perturbation, then after each
    of the ``L`` steps. The answer is

    .. math:: \\mathrm{AOPC} = \\frac{1}{L+1} \\sum_{k=0}^{L} \\big(f(x^{(0)}) - f(x^{(k)})\\big)

    per curve, a tensor of shape ``(B,)`` :cite:`samek2017evaluating`.
    """
    __tracebackhide__ = True
    generator = torch.Generator().manual_seed(606)
    cases = 20
    for case in range(cases):
        b = int(torch.randint(1, 6, (1,), generator=generator))
        steps = int(torch.randint(1, 30, (1,), generator=generator))
        dtype = torch.float32 if case % 5 == 4 else torch.float64
        curves = torch.randn(b, steps + 1, generator=generator, dtype=torch.float64).cumsum(1)
        curves = curves.to(dtype).double()
        where = f"case {case} (B={b}, L={steps}, {dtype_name(dtype)})"
        curves_in = curves.to(dtype)
        before = snapshot(curves=curves_in)
        got = call(fn, curves_in, where=where)
        unchanged(before, where, curves=curves_in)
        drops = curves[:, :1] - curves
        expected = drops.mean(1)
        if isinstance(got, torch.Tensor) and got.shape == expected.shape:
            g = got.detach().double()
            tol = 1e-10 if dtype == torch.float64 else 1e-4
            if steps > 1 and torch.allclose(g, drops.sum(1) / steps, atol=tol):
                fail(f"{where}: your average has L = {steps} terms: the k = 0 term is left out "
                     "or the sum is divided by the number of perturbation steps. The k = 0 term "
                     "is 0, but it counts in the average.")
            if torch.allclose(g, -expected, atol=tol) and expected.abs().max() > tol:
                fail(f"{where}: the sign is flipped: AOPC averages the drop of the score, which "
                     "is positive when perturbing hurts.")
            if torch.allclose(g, drops[:, 1:].mean(1), atol=tol):
                fail(f"{where}: you left out the k = 0 term; it is 0, but it counts in the "
                     "average.")
            if torch.allclose(g, drops.mean(), atol=tol) and b > 1:
                fail(f"{where}: you averaged over the whole batch; the exercise asks for one "
                     "AOPC per curve.")
        compare(where, got, expected, atol=1e-10 if dtype == torch.float64 else 1e-4, rtol=0)
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
    __tracebackhide__ = True
    generator = torch.Generator().manual_seed(707)
    cases = 20
    for case in range(cases):
        b = int(torch.randint(2, 5, (1,), generator=generator))
        h = int(torch.randint(3, 9, (1,), generator=generator))
        dtype = torch.float32 if case % 5 == 4 else torch.float64
        R = torch.randn(b, h, h, generator=generator, dtype=torch.float64).to(dtype).double()
        mask = torch.rand(b, h, h, generator=generator) < 0.3
        mask[:, 0, 0] = True
        extra = ""
        if case % 4 == 3:
            R[0] = -R[0].abs()          # a map with no positive relevance at all
            extra = ", one map with no positive relevance"
        where = f"case {case} (B={b}, {h}x{h}{extra}, {dtype_name(dtype)})"
        R_in, mask_in = R.to(dtype), mask.clone()
        before = snapshot(R=R_in, mask=mask_in)
        got = call(fn, R_in, mask_in, where=where)
        unchanged(before, where, R=R_in, mask=mask_in)
        pos = R.clamp(min=0)
        total = pos.sum((1, 2))
        expected = torch.where(total > 0, (pos * mask).sum((1, 2)) / total.clamp(min=1e-300),
                               torch.zeros_like(total))
        if isinstance(got, torch.Tensor) and got.shape == expected.shape:
            g = got.detach().double()
            tol = 1e-10 if dtype == torch.float64 else 1e-5
            if not torch.isfinite(g).all() and (total == 0).any():
                fail(f"{where}: your result is NaN or inf for a map with no positive relevance "
                     "(0 / 0). Such a map puts no positive relevance inside the mask; the "
                     "expected value is 0.")
            signed = (R * mask).sum((1, 2)) / R.sum((1, 2))
            if torch.allclose(g, signed, atol=tol):
                fail(f"{where}: you used the signed relevance; the definition counts only the "
                     "positive relevance, in both sums.")
            absolute = (R.abs() * mask).sum((1, 2)) / R.abs().sum((1, 2))
            if torch.allclose(g, absolute, atol=tol):
                fail(f"{where}: you used the absolute relevance |R|, so negative relevance "
                     "counts as evidence for the class; the definition counts only the positive "
                     "relevance.")
            outside = (pos * ~mask).sum((1, 2)) / total.clamp(min=1e-300)
            if torch.allclose(g[total > 0], outside[total > 0], atol=tol):
                fail(f"{where}: you measured the share outside the mask, not inside it.")
        compare(where, got, expected, atol=1e-10 if dtype == torch.float64 else 1e-5, rtol=0)
    print(f"check_relevance_mass_accuracy: {cases} random cases agree with the reference.")
