"""Checkers for chapter 2 (Taylor expansions)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ._base import call, check_tensor, close, dtype_name, fail, snapshot, tolerance, unchanged

__all__ = ["check_integrated_gradients", "check_nearest_root_relevance"]


def _smooth_net(seed: int, n_in: int, dtype: torch.dtype) -> Callable[[torch.Tensor], torch.Tensor]:
    """A small smooth network (tanh and softplus), batch (n, d) -> (n,); strongly nonlinear."""
    g = torch.Generator().manual_seed(seed)
    W1 = torch.randn(8, n_in, generator=g, dtype=torch.float64).to(dtype) * 1.5
    b1 = torch.randn(8, generator=g, dtype=torch.float64).to(dtype)
    W2 = torch.randn(8, generator=g, dtype=torch.float64).to(dtype)

    def f(z: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(z @ W1.T + b1)
        return torch.nn.functional.softplus(h @ W2) + (z**2).sum(-1) * 0.3

    return f


def _grads(f, points: torch.Tensor) -> torch.Tensor:
    p = points.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        (g,) = torch.autograd.grad(f(p).sum(), p)
    return g.detach()


def _quadrature(f, x, base, alphas, weights):
    grads = _grads(f, base + alphas[:, None] * (x - base))
    return (weights[:, None] * grads).sum(0)


def _ig_variants(f, x, base, steps):
    """The trapezoidal reference and the usual wrong quadratures, each as relevance."""
    dx = x - base
    n = steps
    t = torch.linspace(0, 1, n + 1, dtype=x.dtype)
    trap_w = torch.full((n + 1,), 1.0 / n, dtype=x.dtype)
    trap_w[0] = trap_w[-1] = 0.5 / n
    avg = _quadrature(f, x, base, t, trap_w)
    reference = avg * dx
    variants = []
    mid = (torch.arange(n, dtype=x.dtype) + 0.5) / n
    variants.append(("the midpoint rule (gradients at the centres of the `steps` intervals)",
                     _quadrature(f, x, base, mid, torch.full((n,), 1.0 / n, dtype=x.dtype)) * dx))
    variants.append(("a left Riemann sum (the start point of every interval, the end point x "
                     "left out)", _quadrature(f, x, base, t[:-1],
                                             torch.full((n,), 1.0 / n, dtype=x.dtype)) * dx))
    variants.append(("a right Riemann sum (the end point of every interval, the start point "
                     "x_ref left out)", _quadrature(f, x, base, t[1:],
                                                   torch.full((n,), 1.0 / n, dtype=x.dtype)) * dx))
    variants.append(("a plain average of the gradient over all `steps + 1` points, with the "
                     "same weight for every point, which is not the trapezoidal rule",
                     _quadrature(f, x, base, t, torch.full((n + 1,), 1.0 / (n + 1),
                                                           dtype=x.dtype)) * dx))
    if n > 1:
        t_n = torch.linspace(0, 1, n, dtype=x.dtype)
        w_n = torch.full((n,), 1.0 / (n - 1), dtype=x.dtype)
        w_n[0] = w_n[-1] = 0.5 / (n - 1)
        variants.append(("the trapezoidal rule on `steps` points (steps - 1 intervals) instead "
                         "of `steps + 1` points", _quadrature(f, x, base, t_n, w_n) * dx))
    variants.append(("the averaged gradient is multiplied by x instead of by the path's length "
                     "x - x_ref", avg * x))
    variants.append(("the averaged gradient is not multiplied by the path's length x - x_ref",
                     avg))
    variants.append(("the sign is flipped: the path runs from x_ref to x", -reference))
    return reference, variants


def check_integrated_gradients(fn: Callable, cases: int = 6) -> None:
    r"""Grade ``fn(f, x, x_ref, steps)``: Integrated Gradients with the trapezoidal rule.

    The learner's function must approximate
    R_i = (x_i − x̃_i) ∫_0^1 ∂f/∂x_i(x̃ + α(x − x̃)) dα :cite:`sundararajan2017` by the
    trapezoidal rule on ``steps + 1`` equally spaced points of the path, and nothing else:
    the check compares with that rule exactly (to rounding), on smooth nonlinear functions
    and several step counts (1, 2, 3, 5, 8, 16), in float64 and float32, so that the midpoint
    rule, Riemann sums and a version that ignores ``steps`` are told apart and named.

    Parameters
    ----------
    fn : callable
        ``fn(f, x, x_ref, steps) -> torch.Tensor`` shaped like ``x``. ``f`` accepts a
        batch ``(n, d)`` and returns ``(n,)``.
    cases : int
        Number of random functions to test.
    """
    __tracebackhide__ = True
    step_counts = [1, 2, 3, 5, 8, 16]
    for case in range(cases):
        dtype = torch.float32 if case == cases - 1 else torch.float64
        d = 3 + case % 3
        f = _smooth_net(case, d, dtype)
        g = torch.Generator().manual_seed(100 + case)
        x = torch.randn(d, generator=g, dtype=torch.float64).to(dtype)
        base = 0.5 * torch.randn(d, generator=g, dtype=torch.float64).to(dtype)
        rel = tolerance(dtype) * (1 if dtype == torch.float32 else 1e3)
        for steps in step_counts if case == 0 else step_counts[case % 3::3]:
            where = f"function {case} (d={d}, {dtype_name(dtype)}) with steps={steps}"
            reference, variants = _ig_variants(f, x, base, steps)
            before = snapshot(x=x, x_ref=base)
            got = call(fn, f, x, base, steps, where=where)
            unchanged(before, where, x=x, x_ref=base)
            got = check_tensor(where, got, x.shape).to(dtype)
            if close(got, reference, rel):
                continue
            for description, variant in variants:
                if close(got, variant, rel):
                    fail(f"{where}: your result matches {description}. The exercise asks for "
                         "the trapezoidal rule on the `steps + 1` equally spaced points.")
            again = call(fn, f, x, base, 2 * steps + 7, where=where)
            if isinstance(again, torch.Tensor) and close(again.detach(), got, rel):
                fail(f"{where}: your result does not change when `steps` goes from {steps} to "
                     f"{2 * steps + 7}; the number of points on the path must follow the "
                     "`steps` argument.")
            with torch.no_grad():
                gap = float(f(x[None]) - f(base[None]))
            fail(f"{where}: your relevance differs from the trapezoidal rule by up to "
                 f"{float((got.double() - reference.double()).abs().max()):.3g}; its sum is "
                 f"{float(got.sum()):.5f} while f(x) - f(x_ref) = {gap:.5f}. Check which points "
                 "of the path you evaluate and how you weight them.")
    print(f"Integrated Gradients: your trapezoidal rule agrees on {cases} nonlinear functions "
          "(float64 and float32) for steps in 1, 2, 3, 5, 8 and 16.")


def check_nearest_root_relevance(fn: Callable, cases: int = 20) -> None:
    r"""Grade ``fn(w, b, x)``: Taylor relevance of a linear model at its nearest root point.

    The nearest root point of f(x) = wᵀx + b is x̃ = x − f(x) w / ‖w‖², so the
    first-order terms are R_i = w_i (x_i − x̃_i) = f(x) w_i² / ‖w‖², which sum to f(x)
    exactly :cite:`montavon2018methods`. Mistakes are diagnosed from the numbers: where the
    learner's expansion point lies (on the root hyperplane or not, nearest or not), whether
    the bias was used, and whether the gradient factor is there.

    Parameters
    ----------
    fn : callable
        ``fn(w, b, x) -> torch.Tensor`` with ``w`` and ``x`` of shape (d,), ``b`` a float.
    cases : int
        Number of random cases.
    """
    __tracebackhide__ = True
    for case in range(cases):
        dtype = torch.float32 if case % 5 == 4 else torch.float64
        g = torch.Generator().manual_seed(case)
        d = 2 + case % 6
        w = torch.randn(d, generator=g, dtype=torch.float64)
        x = torch.randn(d, generator=g, dtype=torch.float64)
        b = 0.5 + float(torch.rand((), generator=g, dtype=torch.float64))
        if case % 2:
            b = -b
        if case % 7 == 3:
            w[0] = 0.0  # an input the model ignores
        fx = float(w @ x + b)
        expected = fx * w**2 / (w @ w)
        where = f"case {case} (d={d}, b={b:.3f}, {dtype_name(dtype)})"
        wd, xd = w.to(dtype), x.to(dtype)
        before = snapshot(w=wd, x=xd)
        got = call(fn, wd, b, xd, where=where)
        unchanged(before, where, w=wd, x=xd)
        got = check_tensor(where, got, (d,)).double()
        rel = tolerance(dtype)
        if close(got, expected, rel):
            continue
        total = float(got.sum())
        if close(got, -expected, rel):
            fail(f"{where}: your terms sum to -f(x) = {total:.4f}: the step towards the root "
                 "goes the wrong way (away from the hyperplane f = 0).")
        if close(got, w * x, rel):
            fail(f"{where}: your terms are Gradient x Input, the expansion at the point 0. That "
                 f"point is not a root of f, since f(0) = b = {b:.3f}; the exercise asks for the "
                 "root point nearest to x.")
        if close(got, (w @ x) * w**2 / (w @ w), rel):
            fail(f"{where}: your terms sum to w.x = {total:.4f}, not f(x) = {fx:.4f}: you found "
                 "the root of w.x, without the bias.")
        step = fx * w / (w @ w)
        if close(got, step, rel) or close(got, x - step, rel):
            fail(f"{where}: you returned a point or a displacement, not the Taylor terms: each "
                 "first-order term multiplies the displacement x_i - x~_i by the derivative "
                 "of f with respect to x_i.")
        nonzero = w.abs() > 1e-12
        if (got[~nonzero].abs() > 1e-6).any():
            fail(f"{where}: input 0 has weight 0, so f does not depend on it, yet it receives "
                 f"relevance {float(got[0]):.4f}.")
        v = torch.zeros_like(got)
        v[nonzero] = got[nonzero] / w[nonzero]          # the displacement x - x~ the terms imply
        if abs(total - fx) <= rel * 10 * (1 + abs(fx)):
            fail(f"{where}: your terms sum to f(x), so your expansion point is a root, but not "
                 "the nearest one: the displacement from x to it is not parallel to the "
                 "gradient w, and the nearest point of a hyperplane is reached along its "
                 "normal.")
        parallel = torch.linalg.matrix_rank(torch.stack([v, w]), rtol=1e-6) <= 1
        if parallel:
            fail(f"{where}: your expansion point lies on the line through x along w, as it "
                 f"should, but not on the hyperplane f = 0: your terms sum to {total:.4f} "
                 f"instead of f(x) = {fx:.4f}. Check how far you step.")
        fail(f"{where}: your terms sum to {total:.4f} instead of f(x) = {fx:.4f}, and the "
             "displacement they imply is not along w: check the root point, then the terms.")
    print(f"Nearest-root relevance: correct on {cases} random linear models (float64 and "
          "float32); sum R = f(x).")
