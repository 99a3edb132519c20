"""Checkers for chapter 1, "Why explain?"."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ._base import ExerciseError, compare

__all__ = ["check_linear_relevance"]


def _reference(w: torch.Tensor, b: float, x: torch.Tensor) -> torch.Tensor:
    return x * w + b / w.numel()


def check_linear_relevance(fn: Callable[[torch.Tensor, float, torch.Tensor], torch.Tensor]) -> None:
    """Grade ``fn(w, b, x)``: the relevance of each input of ``f(x) = w.x + b``.

    The expected answer gives every input its contribution ``w_i x_i`` and spreads the bias
    equally, ``R_i = w_i x_i + b / d``, so that the relevances of every sample sum to
    ``f(x)`` exactly. ``x`` has shape ``(N, d)``, ``w`` shape ``(d,)``, ``b`` is a float.
    """
    generator = torch.Generator().manual_seed(1234)
    cases = 20
    largest = 0.0
    for case in range(cases):
        d = int(torch.randint(2, 12, (1,), generator=generator))
        n = int(torch.randint(1, 5, (1,), generator=generator))
        w = torch.randn(d, generator=generator, dtype=torch.float64)
        b = float(torch.randn(1, generator=generator, dtype=torch.float64)) * 2
        x = torch.randn(n, d, generator=generator, dtype=torch.float64)
        got = fn(w.clone(), b, x.clone())
        expected = _reference(w, b, x)
        if isinstance(got, torch.Tensor) and got.shape == expected.shape:
            f = x @ w + b
            total = got.detach().to(torch.float64).sum(dim=1)
            if torch.allclose(total, f - b, atol=1e-8) and abs(b) > 1e-3:
                raise ExerciseError(
                    f"case {case}: your relevances sum to f(x) - b, so the bias b = {b:.3f} is "
                    "lost. Give every input an equal share b/d of it."
                )
            if not torch.allclose(total, f, atol=1e-8):
                raise ExerciseError(
                    f"case {case}: conservation is broken: the relevances of sample 0 sum to "
                    f"{total[0].item():.4f} but f(x) = {f[0].item():.4f}."
                )
        compare(f"case {case} (N={n}, d={d})", got, expected, atol=1e-10, rtol=0)
        largest = max(largest, (got.detach().double() - expected).abs().max().item())
    print(
        f"check_linear_relevance: {cases} random cases agree with the reference "
        f"(largest difference {largest:.1e}); relevance is conserved."
    )
