"""Checkers for chapter 1, "Why explain?"."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ._base import call, check_tensor, close, dtype_name, fail, snapshot, tolerance, unchanged

__all__ = ["check_linear_relevance"]


def _reference(w: torch.Tensor, b: float, x: torch.Tensor) -> torch.Tensor:
    return x * w + b / w.numel()


def _diagnose(got: torch.Tensor, w: torch.Tensor, b: float, x: torch.Tensor, rel: float,
              where: str) -> None:
    """Name the learner's mistake from the numbers; fail with it."""
    __tracebackhide__ = True
    n, d = x.shape
    f = x @ w + b
    contrib = x * w
    share = got - contrib                      # what the learner gave each input beyond w_i x_i
    total = got.sum(1)
    if abs(b) > 1e-3 and close(total, f - b, rel):
        fail(f"{where}: your relevances sum to f(x) - b, so the bias b = {b:.3f} is lost: "
             "the inputs explain only w.x, not the output f(x).")
    if close(share, torch.full_like(share, b), rel):
        fail(f"{where}: you added the whole bias to every input, so it is counted d = {d} times:"
             f" the relevances of sample 0 sum to {float(total[0]):.4f}, but f(x) = "
             f"{float(f[0]):.4f}. The inputs must share the bias, not each receive all of it.")
    if n > 1 and close(share, torch.full_like(share, b / n), rel):
        fail(f"{where}: your bias share depends on the batch size N = {n}: you divided by the "
             "number of samples, not by the number of inputs of one sample.")
    if n * d > 1 and close(share, torch.full_like(share, b / (n * d)), rel):
        fail(f"{where}: your bias share depends on the batch size: you divided by the number of "
             f"entries of the whole batch (N*d = {n * d}), not of one sample.")
    if close(total, f, rel):
        # conserved, but not equal shares: find out how the bias was split
        ratio = share / torch.where(contrib.abs() > 1e-12, contrib, torch.ones_like(contrib))
        if close(ratio, ratio[:, :1].expand_as(ratio), rel * 10):
            fail(f"{where}: your relevances sum to f(x), but you split the bias in proportion "
                 "to the contributions w_i x_i. That is not an equal share, and it misbehaves: "
                 "when w.x is close to 0 the shares blow up, and inputs with a negative "
                 "contribution receive a share of the opposite sign. The exercise asks for a "
                 "share that is the same for every input and does not depend on x.")
        xs = share / torch.where(x.abs() > 1e-12, x, torch.ones_like(x))
        if close(xs, xs[:, :1].expand_as(xs), rel * 10):
            fail(f"{where}: your relevances sum to f(x), but you split the bias in proportion "
                 "to the input values x_i, so the share depends on the sample and can have any "
                 "sign. The exercise asks for a share that is the same for every input.")
        fail(f"{where}: your relevances sum to f(x), so conservation holds, but the inputs do "
             "not receive equal shares of the bias: the part of R_i beyond w_i x_i differs "
             f"between inputs (for sample 0 it ranges from {float(share[0].min()):.4f} to "
             f"{float(share[0].max()):.4f}).")
    if close(share, torch.zeros_like(share) + share[:, :1], rel) and not close(
            contrib, contrib * 0, rel):
        fail(f"{where}: every input receives the same bias share, but the shares add up to "
             f"{float(share[0].sum()):.4f} instead of b = {b:.4f}: conservation is broken.")
    if not close(got - share, contrib, rel) or not close(total, f, rel):
        fail(f"{where}: conservation is broken: the relevances of sample 0 sum to "
             f"{float(total[0]):.4f} but f(x) = {float(f[0]):.4f}. Check the contribution "
             "w_i x_i of each input first (set b = 0), then the bias.")


def check_linear_relevance(fn: Callable[[torch.Tensor, float, torch.Tensor], torch.Tensor]) -> None:
    """Grade ``fn(w, b, x)``: the relevance of each input of ``f(x) = w.x + b``.

    The expected answer gives every input its contribution ``w_i x_i`` and spreads the bias
    equally, ``R_i = w_i x_i + b / d``, so that the relevances of every sample sum to
    ``f(x)`` exactly. ``x`` has shape ``(N, d)``, ``w`` shape ``(d,)``, ``b`` is a float.
    Cases in float64 and float32, batches of one and more samples, zero inputs, and b = 0.
    """
    __tracebackhide__ = True
    generator = torch.Generator().manual_seed(1234)
    cases = 20
    largest = 0.0
    for case in range(cases):
        dtype = torch.float32 if case % 4 == 3 else torch.float64
        d = int(torch.randint(2, 12, (1,), generator=generator))
        n = 1 if case == cases - 1 else int(torch.randint(2, 5, (1,), generator=generator))
        w = torch.randn(d, generator=generator, dtype=torch.float64).to(dtype)
        b = 0.0 if case == 5 else 1.0 + float(torch.rand(1, generator=generator)) * 2
        if case % 2:
            b = -b
        x = torch.randn(n, d, generator=generator, dtype=torch.float64).to(dtype)
        if case % 5 == 2:
            x[:, 0] = 0.0
        where = f"case {case} (N={n}, d={d}, b={b:.3f}, {dtype_name(dtype)})"
        expected = _reference(w.double(), b, x.double())
        before = snapshot(w=w, x=x)
        got = call(fn, w, b, x, where=where)
        unchanged(before, where, w=w, x=x)
        got = check_tensor(where, got, expected.shape).to(torch.float64)
        rel = tolerance(dtype)
        if not close(got, expected, rel):
            _diagnose(got, w.double(), b, x.double(), rel, where)
            fail(f"{where}: largest difference from the expected relevance is "
                 f"{float((got - expected).abs().max()):.3g}.")
        largest = max(largest, float((got - expected).abs().max()))
    print(
        f"check_linear_relevance: {cases} random cases (float32 and float64) agree with the "
        f"reference (largest difference {largest:.1e}); relevance is conserved."
    )
