"""Checkers for chapter 3 (LRP): the gamma rule and the epsilon rule of one linear layer.

The learner writes ``fn(layer, a, R, parameter) -> R_in`` for an ``nn.Linear`` layer, input
activations ``a`` of shape (batch, in_features) and output relevance ``R`` of shape
(batch, out_features).  The checker runs it on random float64 cases next to
:func:`lrp_teach.core.propagate` and, when they disagree, compares with the usual mistakes
to say what went wrong.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..core import propagate
from ..rules import Epsilon, Gamma
from ._base import ExerciseError

__all__ = ["check_epsilon_rule", "check_gamma_rule"]

Fn = Callable[[nn.Linear, Tensor, Tensor, float], Tensor]


def _cases(n: int, seed: int, params: list[float]):
    """Random layers with biases and ReLU-like inputs, with denominators away from zero."""
    g = torch.Generator().manual_seed(seed)
    out = []
    while len(out) < n:
        n_in = int(torch.randint(2, 9, (1,), generator=g))
        n_out = int(torch.randint(1, 7, (1,), generator=g))
        batch = int(torch.randint(1, 4, (1,), generator=g))
        layer = nn.Linear(n_in, n_out).double()
        with torch.no_grad():
            layer.weight.copy_(torch.randn(n_out, n_in, generator=g, dtype=torch.float64))
            layer.bias.copy_(torch.randn(n_out, generator=g, dtype=torch.float64))
        a = torch.rand(batch, n_in, generator=g, dtype=torch.float64)
        a[a < 0.2] = 0.0  # some inactive neurons, as after a ReLU
        R = torch.randn(batch, n_out, generator=g, dtype=torch.float64)
        p = params[len(out) % len(params)]
        W, b = layer.weight.detach(), layer.bias.detach()
        dens = [a @ (W + p * W.clamp(min=0)).T + b + p * b.clamp(min=0), a @ W.T + b]
        if min(float(d.abs().min()) for d in dens) < 0.1:
            continue
        out.append((layer, a, R, p))
    return out


def _run(fn: Fn, name: str, layer, a, R, p) -> Tensor:
    args = (layer, a.clone(), R.clone(), p)
    try:
        got = fn(*args)
    except Exception as err:
        raise ExerciseError(
            f"{name}: your function raised {type(err).__name__}: {err} (on a layer "
            f"{layer.in_features} -> {layer.out_features}, batch {a.shape[0]})"
        ) from err
    if not isinstance(got, Tensor):
        raise ExerciseError(f"{name}: return a torch.Tensor, not {type(got).__name__}")
    if tuple(got.shape) != tuple(a.shape):
        raise ExerciseError(
            f"{name}: the input relevance must have the shape of a, {tuple(a.shape)}; got "
            f"{tuple(got.shape)}. Did you return the relevance of the outputs, or forget the "
            "batch dimension?"
        )
    return got.detach().to(torch.float64)


def _explicit(a: Tensor, W: Tensor, num_W: Tensor, den_b: Tensor, R: Tensor, eps: float,
              times_a: bool = True) -> Tensor:
    z = a @ num_W.T + den_b
    z = z + eps * torch.where(z >= 0, 1.0, -1.0).to(z.dtype)
    c = (R / z) @ num_W
    return a * c if times_a else c


def _check(fn: Fn, name: str, rule_of: Callable[[float], object], mistakes, params, n, seed):
    worst = 0.0
    for i, (layer, a, R, p) in enumerate(_cases(n, seed, params)):
        got = _run(fn, name, layer, a, R, p)
        expected = propagate(layer, rule_of(p), a, R)
        if not torch.isfinite(got).all():
            raise ExerciseError(f"{name}: case {i} gives NaN or inf; is a denominator zero?")
        err = float((got - expected).abs().max())
        if not torch.allclose(got, expected, rtol=1e-4, atol=1e-6):
            hint = ""
            for description, variant in mistakes(layer, a, R, p):
                if torch.allclose(got, variant, rtol=1e-4, atol=1e-6):
                    hint = f" Your result matches a common mistake: {description}."
                    break
            conserved = got.sum(1)
            expected_sum = expected.sum(1)
            if not hint and not torch.allclose(conserved, expected_sum, rtol=1e-4, atol=1e-6):
                hint = (f" The total relevance is off too (sum of R_in {float(conserved[0]):.4f}"
                        f" instead of {float(expected_sum[0]):.4f} for the first sample): "
                        "conservation is broken, check the denominator.")
            raise ExerciseError(
                f"{name}: case {i} (layer {layer.in_features} -> {layer.out_features}, "
                f"parameter {p:g}) differs from the reference by up to {err:.3g}.{hint}"
            )
        worst = max(worst, err)
    print(f"{name}: {n} random cases agree with the reference (largest difference {worst:.0e})")


def check_gamma_rule(fn: Fn, n: int = 25, seed: int = 0) -> None:
    """Check ``fn(layer, a, R, gamma)``, the LRP-:math:`\\gamma` rule of a linear layer.

    .. math::  R_j = \\sum_k \\frac{a_j (w_{jk} + \\gamma w_{jk}^+)}
               {\\sum_{0,j'} a_{j'} (w_{j'k} + \\gamma w_{j'k}^+)} R_k

    with the bias as the weight of a constant input :math:`a_0 = 1`, so the denominator
    contains :math:`b_k + \\gamma b_k^+` :cite:`montavon2019overview`.  A stabilizer up to
    1e-6 is tolerated.

    Raises
    ------
    ExerciseError
        With a diagnosis: wrong shape, positive part forgotten, bias not treated as an
        input, missing factor :math:`a_j`, or broken conservation.
    """

    def mistakes(layer, a, R, g):
        W, b = layer.weight.detach(), layer.bias.detach()
        Wg = W + g * W.clamp(min=0)
        return [
            ("the positive part gamma * w+ is missing (this is LRP-0)",
             _explicit(a, W, W, b, R, 0)),
            ("the bias is not treated as an input: use b + gamma * b.clamp(min=0) in the "
             "denominator", _explicit(a, W, Wg, b, R, 0)),
            ("the bias is missing from the denominator", _explicit(a, W, Wg, 0 * b, R, 0)),
            ("the result is not multiplied by the activations a (step 4)",
             _explicit(a, W, Wg, b + g * b.clamp(min=0), R, 0, times_a=False)),
            ("gamma multiplies |w| instead of w+",
             _explicit(a, W, W + g * W.abs(), b + g * b.abs(), R, 0)),
        ]

    _check(fn, "check_gamma_rule", lambda g: Gamma(g, stabilizer=0), mistakes,
           [0.25, 0.0, 0.1, 1.0, 3.0], n, seed)


def check_epsilon_rule(fn: Fn, n: int = 25, seed: int = 1) -> None:
    """Check ``fn(layer, a, R, epsilon)``, the LRP-:math:`\\epsilon` rule in four steps.

    .. math::  z_k = \\epsilon\\,\\mathrm{sign}(z_k) + \\sum_{0,j} a_j w_{jk},\\quad
               s_k = R_k / z_k,\\quad c_j = \\sum_k w_{jk} s_k,\\quad R_j = a_j c_j

    with :math:`\\mathrm{sign}(0) = +1` :cite:`montavon2019overview`.

    Raises
    ------
    ExerciseError
        With a diagnosis: wrong shape, epsilon without the sign, bias missing, missing
        factor :math:`a_j`, or broken conservation.
    """

    def mistakes(layer, a, R, eps):
        W, b = layer.weight.detach(), layer.bias.detach()
        z = a @ W.T + b
        return [
            ("epsilon is added without the sign of z (use z + eps * sign(z))",
             a * ((R / (z + eps)) @ W)),
            ("the bias is missing from z", _explicit(a, W, W, 0 * b, R, eps)),
            ("the result is not multiplied by the activations a (step 4)",
             _explicit(a, W, W, b, R, eps, times_a=False)),
            ("epsilon is missing (this is LRP-0)", _explicit(a, W, W, b, R, 0)),
        ]

    _check(fn, "check_epsilon_rule", lambda e: Epsilon(e), mistakes, [0.25, 0.01, 1.0, 0.5],
           n, seed)
