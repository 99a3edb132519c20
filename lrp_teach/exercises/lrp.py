"""Checkers for chapter 3 (LRP): the gamma rule and the epsilon rule of one linear layer.

The learner writes ``fn(layer, a, R, parameter) -> R_in`` for an ``nn.Linear`` layer, input
activations ``a`` of shape (batch, in_features) and output relevance ``R`` of shape
(batch, out_features). The checker computes the reference first, from copies of the layer's
parameters, runs the learner's function on random float64 and float32 cases (with inactive
inputs, a = 0), and, when they disagree, compares with the usual mistakes to say what went
wrong. The package's own rules may not be used.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from .. import core, rules
from ._base import (
    call,
    check_tensor,
    close,
    dtype_name,
    fail,
    first_match,
    forbidden,
    report_forbidden,
    snapshot,
    tolerance,
    unchanged,
)

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
        dens = [a @ (W + p * W.clamp(min=0)).T + b + p * b.clamp(min=0), a @ W.T + b,
                a @ W.T]
        if min(float(d.abs().min()) for d in dens) < 0.1:
            continue
        out.append((layer, a, R, p))
    return out


def _explicit(a: Tensor, num_W: Tensor, den_b: Tensor, R: Tensor, eps: float,
              times_a: bool = True, den_W: Tensor | None = None) -> Tensor:
    z = a @ (num_W if den_W is None else den_W).T + den_b
    z = z + eps * torch.where(z >= 0, 1.0, -1.0).to(z.dtype)
    c = (R / z) @ num_W
    return a * c if times_a else c


def _gamma(a, W, b, R, g):
    return _explicit(a, W + g * W.clamp(min=0), b + g * b.clamp(min=0), R, 0.0)


def _epsilon(a, W, b, R, e):
    return _explicit(a, W, b, R, e)


_PACKAGE_RULES = {"the package's lrp_teach.core.propagate": core.propagate,
                  "the package's Gamma rule": rules.Gamma,
                  "the package's Epsilon rule": rules.Epsilon}


def _check(fn: Fn, name: str, reference, mistakes, params, n, seed):
    __tracebackhide__ = True
    worst = 0.0
    for i, (layer, a, R, p) in enumerate(_cases(n, seed, params)):
        dtype = torch.float32 if i % 5 == 4 else torch.float64
        where = (f"case {i} (layer {layer.in_features} -> {layer.out_features}, batch "
                 f"{a.shape[0]}, parameter {p:g}, {dtype_name(dtype)})")
        W, b = layer.weight.detach().clone(), layer.bias.detach().clone()
        expected = reference(a, W, b, R, p)          # computed before the learner's code runs
        variants = mistakes(a, W, b, R, p)
        layer_in = layer.to(dtype)
        a_in, R_in = a.to(dtype), R.to(dtype)
        before = snapshot(layer=layer_in, a=a_in, R=R_in)
        used: list[str] = []
        with forbidden(used, **_PACKAGE_RULES):
            got = call(fn, layer_in, a_in, R_in, p, where=where)
        unchanged(before, where, layer=layer_in, a=a_in, R=R_in)
        report_forbidden(used, where)
        if isinstance(got, Tensor) and tuple(got.shape) != tuple(a.shape):
            fail(f"{where}: the input relevance must have the shape of a, {tuple(a.shape)}; got "
                 f"{tuple(got.shape)}. Did you return the relevance of the outputs, or forget "
                 "the batch dimension?")
        got = check_tensor(where, got, a.shape).to(torch.float64)
        rel = tolerance(dtype) * (10 if dtype == torch.float32 else 1e3)
        err = float((got - expected).abs().max())
        if not close(got, expected, rel):
            mistake = first_match(got, variants, rel)
            if mistake:
                fail(f"{where}: your result matches a common mistake: {mistake}.")
            total, expected_total = got.sum(1), expected.sum(1)
            if not close(total, expected_total, rel):
                fail(f"{where}: the total relevance is off too (R_in sums to {float(total[0]):.4f}"
                     f" instead of {float(expected_total[0]):.4f} for the first sample): "
                     "conservation is broken, look at the denominator.")
            fail(f"{where}: the total relevance is right, but it is split differently from the "
                 f"reference (largest difference {err:.3g}): look at the numerator.")
        worst = max(worst, err)
    print(f"{name}: {n} random cases (float64 and float32) agree with the reference (largest "
          f"difference {worst:.0e})")


def check_gamma_rule(fn: Fn, n: int = 25, seed: int = 0) -> None:
    """Check ``fn(layer, a, R, gamma)``, the LRP-:math:`\\gamma` rule of a linear layer.

    .. math::  R_j = \\sum_k \\frac{a_j (w_{jk} + \\gamma w_{jk}^+)}
               {\\sum_{0,j'} a_{j'} (w_{j'k} + \\gamma w_{j'k}^+)} R_k

    with the bias as the weight of a constant input :math:`a_0 = 1`, so the denominator
    contains :math:`b_k + \\gamma b_k^+` :cite:`montavon2019overview`. A stabilizer up to
    1e-6 is tolerated. γ takes the values 0.25, 0, 0.1, 1 and 3.

    Raises
    ------
    ExerciseError
        With a diagnosis: wrong shape, an input changed in place, the package's rule used,
        the positive part forgotten or taken as |w| or w⁻, the bias not treated as an input or
        missing, γ applied on one side of the fraction only, γ ignored, the factor
        :math:`a_j` missing, or broken conservation.
    """
    __tracebackhide__ = True

    def mistakes(a, W, b, R, g):
        Wg, bg = W + g * W.clamp(min=0), b + g * b.clamp(min=0)
        out = [
            ("the positive part of the weights is not boosted by gamma (this is LRP-0)",
             _explicit(a, W, b, R, 0)),
            ("the bias is not treated as the weight of a constant input: gamma boosts the "
             "weights but not the bias", _explicit(a, Wg, b, R, 0)),
            ("the bias is missing from the denominator", _explicit(a, Wg, 0 * b, R, 0)),
            ("the result is not multiplied by the activations a (step 4)",
             _explicit(a, Wg, bg, R, 0, times_a=False)),
            ("gamma boosts |w| instead of the positive part of w",
             _explicit(a, W + g * W.abs(), b + g * b.abs(), R, 0)),
            ("gamma boosts the negative weights instead of the positive ones",
             _explicit(a, W + g * W.clamp(max=0), b + g * b.clamp(max=0), R, 0)),
            ("gamma is applied in the denominator only; numerator and denominator must use the "
             "same modified weights", _explicit(a, W, bg, R, 0, den_W=Wg)),
            ("gamma is applied in the numerator only; numerator and denominator must use the "
             "same modified weights", _explicit(a, Wg, b, R, 0, den_W=W)),
            ("only the positive part of the weights is used (this is the z+ rule, gamma -> "
             "infinity)", _explicit(a, W.clamp(min=0), b.clamp(min=0), R, 0)),
        ]
        if g != 0.25:
            out.append(("your function ignores its `gamma` argument: it returns the result for "
                        f"gamma = 0.25, but this case asks for gamma = {g:g}",
                        _gamma(a, W, b, R, 0.25)))
        return out

    _check(fn, "check_gamma_rule", _gamma, mistakes, [0.25, 0.0, 0.1, 1.0, 3.0], n, seed)


def check_epsilon_rule(fn: Fn, n: int = 25, seed: int = 1) -> None:
    """Check ``fn(layer, a, R, epsilon)``, the LRP-:math:`\\epsilon` rule in four steps.

    .. math::  z_k = \\epsilon\\,\\mathrm{sign}(z_k) + \\sum_{0,j} a_j w_{jk},\\quad
               s_k = R_k / z_k,\\quad c_j = \\sum_k w_{jk} s_k,\\quad R_j = a_j c_j

    with :math:`\\mathrm{sign}(0) = +1` :cite:`montavon2019overview`. ε takes the values
    0.25, 0.01, 1, 0.5 and 3.

    Raises
    ------
    ExerciseError
        With a diagnosis: wrong shape, an input changed in place, the package's rule used,
        epsilon without the sign or ignored, epsilon in the numerator, the bias missing, the
        factor :math:`a_j` missing, or broken conservation.
    """
    __tracebackhide__ = True

    def mistakes(a, W, b, R, eps):
        z = a @ W.T + b
        out = [
            ("epsilon is added with the same sign for every neuron; it must push z away from "
             "zero, whatever the sign of z", a * ((R / (z + eps)) @ W)),
            ("epsilon is subtracted, which pulls z towards zero", a * ((R / (z - eps)) @ W)),
            ("epsilon multiplies z instead of being added to it",
             a * ((R / (z * (1 + eps))) @ W)),
            ("the bias is missing from z", _explicit(a, W, 0 * b, R, eps)),
            ("the result is not multiplied by the activations a (step 4)",
             _explicit(a, W, b, R, eps, times_a=False)),
            ("epsilon is missing or ignored (this is LRP-0)", _explicit(a, W, b, R, 0)),
            ("the stabilizer is applied to R instead of to the denominator z",
             a * (((R + eps * torch.where(R >= 0, 1.0, -1.0).to(R.dtype)) / z) @ W)),
        ]
        return out

    _check(fn, "check_epsilon_rule", _epsilon, mistakes, [0.25, 0.01, 1.0, 0.5, 3.0], n, seed)
