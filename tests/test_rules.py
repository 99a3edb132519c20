"""The rules one layer at a time: formulas, conservation, limits and argument checks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lrp_teach.core import propagate
from lrp_teach.rules import AlphaBeta, Epsilon, Flat, Gamma, WSquare, ZBox, Zero, ZPlus, stabilize

torch.set_num_threads(1)
DT = torch.float64


def case(seed: int = 0, n_in: int = 40, n_out: int = 6, bias: bool = True, signed=False):
    g = torch.Generator().manual_seed(seed)
    layer = nn.Linear(n_in, n_out, bias=bias).to(DT)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(n_out, n_in, generator=g, dtype=DT))
        if bias:
            layer.bias.copy_(torch.randn(n_out, generator=g, dtype=DT))
    a = torch.rand(3, n_in, generator=g, dtype=DT)
    if signed:
        a = 2 * a - 1
    R = torch.rand(3, n_out, generator=g, dtype=DT)
    return layer, a, R


def explicit(layer, a, R, q_fn, q0_fn=None, eps=0.0):
    """R_j = sum_k q_jk / (sum_j q_jk + q_0k + eps sign) R_k with explicit loops."""
    W = layer.weight.detach()
    b = torch.zeros(W.shape[0], dtype=DT) if layer.bias is None else layer.bias.detach()
    out = torch.zeros_like(a)
    for n in range(a.shape[0]):
        for k in range(W.shape[0]):
            q = torch.stack([q_fn(a[n, j], W[k, j]) for j in range(a.shape[1])])
            den = q.sum() + (q0_fn(b[k]) if q0_fn else 0.0)
            den = den + (eps if den >= 0 else -eps)
            out[n] += q / den * R[n, k]
    return out


def test_epsilon_formula_and_sign_convention():
    layer, a, R = case(1, n_in=5)
    got = propagate(layer, Epsilon(0.3), a, R)
    want = explicit(layer, a, R, lambda x, w: x * w, lambda b: b, eps=0.3)
    torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-12)


def test_epsilon_stabilizer_at_zero_is_positive():
    layer = nn.Linear(2, 1, bias=False).to(DT)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, -1.0]], dtype=DT))
    a = torch.tensor([[2.0, 2.0]], dtype=DT)  # z = 0 exactly
    R = propagate(layer, Epsilon(0.5), a, torch.ones(1, 1, dtype=DT))
    torch.testing.assert_close(R, torch.tensor([[4.0, -4.0]], dtype=DT))  # divided by +0.5
    R0 = propagate(layer, Zero(stabilizer=0), a, torch.ones(1, 1, dtype=DT))
    assert torch.equal(R0, torch.zeros_like(R0))  # no NaN


def test_gamma_treats_the_bias_as_an_input():
    layer, a, R = case(2, n_in=5)
    g = 0.7
    got = propagate(layer, Gamma(g, stabilizer=1e-6), a, R)
    want = explicit(layer, a, R, lambda x, w: x * (w + g * w.clamp(min=0)),
                    lambda b: b + g * b.clamp(min=0), eps=1e-6)
    torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-12)


def test_alphabeta_formula_with_signed_inputs():
    layer, a, R = case(3, n_in=5, signed=True)
    got = propagate(layer, AlphaBeta(2, 1, stabilizer=0), a, R)
    W, b = layer.weight.detach(), layer.bias.detach()
    want = torch.zeros_like(a)
    for n in range(3):
        q = a[n][:, None] * W.T  # (j, k)
        zp = q.clamp(min=0).sum(0) + b.clamp(min=0)
        zn = q.clamp(max=0).sum(0) + b.clamp(max=0)
        want[n] = (2 * q.clamp(min=0) / zp - q.clamp(max=0) / zn) @ R[n]
    torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-12)


def test_alphabeta_conserves_when_both_parts_exist():
    layer, a, R = case(4, bias=False)  # 40 positive inputs, gaussian weights: both signs
    for rule in (AlphaBeta(2, 1, stabilizer=0), AlphaBeta(3, 2, stabilizer=0)):
        got = propagate(layer, rule, a, R)
        torch.testing.assert_close(got.sum(1), R.sum(1), atol=1e-12, rtol=1e-12)


def test_alphabeta_requires_alpha_minus_beta_one():
    with pytest.raises(ValueError, match="alpha - beta == 1"):
        AlphaBeta(2.0, 0.5)
    with pytest.raises(ValueError, match="beta >= 0"):
        AlphaBeta(0.5, -0.5)


def test_zbox_formula_and_tensor_bounds():
    layer, a, R = case(5, n_in=4)
    low = torch.tensor([-1.0, 0.0, -0.5, 0.0], dtype=DT)
    high = torch.tensor([1.0, 1.0, 0.5, 2.0], dtype=DT)
    got = propagate(layer, ZBox(low, high, stabilizer=0), a, R)
    W = layer.weight.detach()
    want = torch.zeros_like(a)
    for n in range(3):
        q = a[n][:, None] * W.T - low[:, None] * W.T.clamp(min=0) - high[:, None] * W.T.clamp(
            max=0)
        want[n] = (q / q.sum(0)) @ R[n]  # no bias in the denominator
    torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(got.sum(1), R.sum(1), atol=1e-12, rtol=1e-12)
    with pytest.raises(ValueError, match="low must not exceed high"):
        ZBox(1.0, 0.0)


def test_wsquare_and_flat_ignore_the_input_values():
    layer, a, R = case(6, n_in=5, bias=False)
    for rule in (WSquare(stabilizer=0), Flat(stabilizer=0)):
        r1 = propagate(layer, rule, a, R)
        r2 = propagate(layer, rule, 5 * a + 1, R)
        torch.testing.assert_close(r1, r2)
        torch.testing.assert_close(r1.sum(1), R.sum(1), atol=1e-12, rtol=1e-12)
    flat = propagate(layer, Flat(stabilizer=0), a, R)
    torch.testing.assert_close(flat, R.sum(1, keepdim=True).expand_as(a) / 5)
    W2 = layer.weight.detach() ** 2
    torch.testing.assert_close(propagate(layer, WSquare(stabilizer=0), a, R), R @ (W2 / W2.sum(1,
                               keepdim=True)))


def test_wsquare_bias_enters_the_denominator():
    layer, a, R = case(7, n_in=5)
    got = propagate(layer, WSquare(stabilizer=0), a, R)
    W2, b2 = layer.weight.detach() ** 2, layer.bias.detach() ** 2
    torch.testing.assert_close(got, R @ (W2 / (W2.sum(1, keepdim=True) + b2[:, None])))


def test_gamma_limit_is_zplus_and_zero_gamma_is_lrp0():
    layer, a, R = case(8)
    # (the stabilizers are switched off: 1e-6 would weigh differently against z scaled by 1e10)
    torch.testing.assert_close(propagate(layer, Gamma(1e10, stabilizer=0), a, R),
                               propagate(layer, ZPlus(stabilizer=0), a, R), atol=1e-8, rtol=1e-8)
    torch.testing.assert_close(propagate(layer, Gamma(0.0), a, R),
                               propagate(layer, Zero(), a, R))
    torch.testing.assert_close(propagate(layer, AlphaBeta(1, 0), a, R),
                               propagate(layer, ZPlus(), a, R))


def test_conv_layer_conservation_with_padding():
    torch.manual_seed(9)
    layer = nn.Conv2d(3, 4, 3, padding=1, stride=2, bias=False).to(DT)
    a = torch.rand(2, 3, 7, 7, dtype=DT)
    R = torch.rand(2, 4, 4, 4, dtype=DT)
    for rule in (Zero(stabilizer=0), Gamma(0.25, stabilizer=0), WSquare(stabilizer=0),
                 Flat(stabilizer=0), ZBox(0.0, 1.0, stabilizer=0)):
        got = propagate(layer, rule, a, R)
        torch.testing.assert_close(got.sum((1, 2, 3)), R.sum((1, 2, 3)), atol=1e-11, rtol=1e-11)


@pytest.mark.parametrize("bad", [-1.0, float("nan"), "0.1"])
def test_bad_parameters(bad):
    with pytest.raises(ValueError):
        Epsilon(bad)
    with pytest.raises(ValueError):
        Gamma(bad)


def test_repr_and_equality():
    assert repr(Gamma(0.5)) == "Gamma(gamma=0.5)"
    assert repr(Epsilon()) == "Epsilon(epsilon=1e-06)"
    assert repr(AlphaBeta()) == "AlphaBeta(alpha=2, beta=1)"
    assert repr(ZBox(-1.0, 1.0)) == "ZBox(low=-1, high=1)"
    assert Gamma(0.5) == Gamma(0.5) and Gamma(0.5) != Gamma(0.25) and Zero() != ZPlus()
    for cls in (Zero, Epsilon, Gamma, AlphaBeta, ZPlus, ZBox, WSquare, Flat):
        assert "math::" in cls.__doc__ and ":cite:" in cls.__doc__


def test_stabilize_is_exact_in_float64():
    # eps * sign(z) with sign(0) = +1, to the last bit of float64 (no float32 rounding inside)
    z = torch.tensor([-2.0, -1e-3, 0.0, 1e-3, 3.0], dtype=torch.float64)
    for eps in (1e-6, 0.1, 0.25):
        expected = z + eps * torch.where(z >= 0, 1.0, -1.0).double()
        assert torch.equal(stabilize(z.clone(), eps), expected)
        assert torch.equal(stabilize(z.clone(), eps, inplace=True), expected)


def test_epsilon_propagate_matches_the_formula_in_float64():
    import lrp_teach as lt

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(2, 3, 3).double()
    a = torch.rand(2, 2, 6, 6, dtype=torch.float64)
    R = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    z = conv(a)
    s = (R / (z + 0.1 * torch.where(z >= 0, 1.0, -1.0).double())).detach()
    x = a.clone().requires_grad_(True)
    (c,) = torch.autograd.grad((conv(x) * s).sum(), x)
    got = lt.core.propagate(conv, lt.rules.Epsilon(0.1), a, R)
    assert torch.allclose(got, a * c, atol=1e-13, rtol=0)
