"""Checkers for chapter 2 (Taylor expansions)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ._base import ExerciseError, compare

__all__ = ["check_integrated_gradients", "check_nearest_root_relevance"]


def _random_net(seed: int, n_in: int) -> torch.nn.Sequential:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(n_in, 12), torch.nn.ReLU(), torch.nn.Linear(12, 12), torch.nn.ReLU(),
        torch.nn.Linear(12, 1),
    ).double()


def check_integrated_gradients(fn: Callable, cases: int = 4) -> None:
    r"""Grade ``fn(f, x, x_ref, steps)``, an Integrated Gradients implementation.

    The learner's function must return R_i ≈ (x_i − x̃_i) ∫_0^1 ∂f/∂x_i(x̃ + α(x − x̃)) dα
    :cite:`sundararajan2017`. Checked: exactness on a linear function, agreement with a
    fine reference on small ReLU networks, and completeness Σ_i R_i ≈ f(x) − f(x̃).

    Parameters
    ----------
    fn : callable
        ``fn(f, x, x_ref, steps) -> torch.Tensor`` shaped like ``x``. ``f`` accepts a
        batch ``(n, d)`` and returns ``(n,)``.
    cases : int
        Number of random networks to test.
    """
    from ..taylor import integrated_gradients

    w = torch.tensor([1.5, -2.0, 0.5], dtype=torch.float64)
    x = torch.tensor([1.0, 2.0, -1.0], dtype=torch.float64)
    got = fn(lambda z: z @ w, x, torch.zeros(3, dtype=torch.float64), 8)
    compare("linear function f(x) = w.x with baseline 0", got, w * x, atol=1e-8,
            hint="for a linear f the gradient is w everywhere, so R_i = w_i (x_i - x_ref_i).")
    for case in range(cases):
        net = _random_net(case, 5)
        f = lambda z, net=net: net(z).squeeze(-1)  # noqa: E731
        g = torch.Generator().manual_seed(100 + case)
        x = torch.randn(5, generator=g, dtype=torch.float64)
        base = 0.1 * torch.randn(5, generator=g, dtype=torch.float64)
        got = fn(f, x, base, 256)
        expected = integrated_gradients(f, x, base, steps=4096)
        scale = expected.abs().max().item() + 1e-3
        compare(f"Integrated Gradients on random network {case}", got, expected,
                atol=0.02 * scale, rtol=0.0,
                hint="average the gradient over points x_ref + alpha (x - x_ref), "
                "alpha in (0, 1], then multiply by (x - x_ref).")
        with torch.no_grad():
            gap = (f(x[None]) - f(base[None])).item()
        err = abs(float(got.sum()) - gap)
        if err > 0.02 * abs(gap) + 1e-4:
            raise ExerciseError(
                f"completeness fails on network {case}: sum R = {float(got.sum()):.5f} but "
                f"f(x) - f(x_ref) = {gap:.5f}."
            )
    print(f"Integrated Gradients: correct on a linear function and {cases} random networks, "
          "completeness holds.")


def check_nearest_root_relevance(fn: Callable, cases: int = 20) -> None:
    r"""Grade ``fn(w, b, x)``: Taylor relevance of a linear model at its nearest root point.

    The nearest root point of f(x) = wᵀx + b is x̃ = x − f(x) w / ‖w‖², so the
    first-order terms are R_i = w_i (x_i − x̃_i) = f(x) w_i² / ‖w‖², which sum to f(x)
    exactly :cite:`montavon2018methods`.

    Parameters
    ----------
    fn : callable
        ``fn(w, b, x) -> torch.Tensor`` with ``w`` and ``x`` of shape (d,), ``b`` a float.
    cases : int
        Number of random cases.
    """
    for case in range(cases):
        g = torch.Generator().manual_seed(case)
        d = 2 + case % 6
        w = torch.randn(d, generator=g, dtype=torch.float64)
        x = torch.randn(d, generator=g, dtype=torch.float64)
        b = float(torch.randn((), generator=g, dtype=torch.float64))
        fx = (w @ x + b).item()
        got = fn(w, b, x)
        compare(f"relevance of case {case} (d={d})", got, fx * w**2 / (w @ w), atol=1e-8,
                hint="find t with w.(x - t w) + b = 0, then R_i = w_i (x_i - x_root_i).")
        if abs(float(got.sum()) - fx) > 1e-8:
            raise ExerciseError(f"case {case}: sum R = {float(got.sum()):.6f} != f(x) = {fx:.6f}")
    print(f"Nearest-root relevance: correct on {cases} random linear models; sum R = f(x).")
