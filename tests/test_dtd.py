"""Tests of lrp_teach.dtd: each DTD derivation against the engine's rules and closed forms."""

from __future__ import annotations

import pytest
import torch

import lrp_teach as lt
from lrp_teach import dtd
from lrp_teach.core import propagate
from lrp_teach.rules import AlphaBeta, Epsilon, Gamma, WSquare, ZBox, Zero, ZPlus

torch.set_num_threads(1)
DT = torch.float64


def _case(seed: int, d: int = 7, K: int = 5, B: int = 4, bias: bool = True, low=0.0, high=1.0):
    g = torch.Generator().manual_seed(seed)
    layer = torch.nn.Linear(d, K, bias=bias).to(DT)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(K, d, generator=g, dtype=DT))
        if bias:
            layer.bias.copy_(0.3 * torch.randn(K, generator=g, dtype=DT))
    a = low + (high - low) * torch.rand(B, d, generator=g, dtype=DT)
    with torch.no_grad():
        z = layer(a)
    # The relevance model: R_k = max(0, z_k) c_k, with c_k of either sign.
    c = torch.randn(B, K, generator=g, dtype=DT)
    return layer, a, torch.relu(z) * c, z


CASES = [
    ("w2", {}, WSquare(stabilizer=0)),
    ("zplus", {}, ZPlus(stabilizer=0)),
    ("zplus", {}, AlphaBeta(1.0, 0.0, stabilizer=0)),
    ("zbox", {"low": 0.0, "high": 1.0}, ZBox(0.0, 1.0, stabilizer=0)),
    ("zero", {}, Zero(stabilizer=0)),
    ("gamma", {"gamma": 0.25}, Gamma(0.25, stabilizer=0)),
    ("gamma", {"gamma": 3.0}, Gamma(3.0, stabilizer=0)),
    ("epsilon", {"epsilon": 0.1}, Epsilon(0.1)),
    ("epsilon", {"epsilon": 2.0}, Epsilon(2.0)),
]


@pytest.mark.parametrize("rule,kwargs,engine_rule", CASES, ids=lambda v: repr(v))
@pytest.mark.parametrize("seed", range(4))
def test_dtd_equals_engine_rule(rule, kwargs, engine_rule, seed):
    layer, a, R, _ = _case(seed)
    got = dtd.redistribute(layer, a, R, rule, **kwargs).relevance
    expected = propagate(layer, engine_rule, a, R)
    assert (got - expected).abs().max().item() < 1e-8


@pytest.mark.parametrize("rule,kwargs,engine_rule", CASES[:7], ids=lambda v: repr(v))
def test_bias_free_layers_conserve_and_both_bias_modes_agree(rule, kwargs, engine_rule):
    layer, a, R, _ = _case(11, bias=False)
    res = dtd.redistribute(layer, a, R, rule, **kwargs)
    fixed = dtd.redistribute(layer, a, R, rule, bias="fixed", **kwargs)
    assert torch.allclose(res.relevance, fixed.relevance, atol=1e-12)
    assert torch.allclose(res.relevance.sum(1), R.sum(1), atol=1e-12)
    assert res.absorbed.abs().max() < 1e-12
    assert (res.relevance - propagate(layer, engine_rule, a, R)).abs().max() < 1e-8


def test_root_points_lie_on_the_hyperplane_and_match_closed_form():
    layer, a, R, z = _case(3)
    w, b = layer.weight.detach(), layer.bias.detach()
    for rule, kw in [("w2", {}), ("zplus", {}), ("zbox", {"low": 0.0, "high": 1.0}),
                     ("gamma", {"gamma": 0.5}), ("zero", {})]:
        res = dtd.redistribute(layer, a, R, rule, bias="fixed", **kw)
        active = R != 0
        z_root = (res.reference * w[None]).sum(2) + b[None]
        assert z_root[active].abs().max() < 1e-12, rule
        v, _ = dtd.direction(rule, w, b, a, bias="fixed", **kw)
        t_closed = z / (v * w[None]).sum(2)
        assert torch.allclose(res.t[active], t_closed[active], rtol=1e-12), rule
        # bias="fixed": the whole R_k reaches the inputs.
        assert torch.allclose(res.relevance.sum(1), R.sum(1), atol=1e-12), rule


def test_root_points_stay_in_the_input_domain():
    layer, a, R, _ = _case(5, low=0.0, high=1.0)
    with torch.no_grad():
        layer.bias.copy_(-layer.bias.abs())  # b <= 0: the z+ root lies in a >= 0
    R = torch.relu(layer(a).detach())
    box = dtd.redistribute(layer, a, R, "zbox", low=0.0, high=1.0)
    active = (R != 0)[:, :, None].expand_as(box.reference)
    assert box.reference[active].min() >= -1e-12 and box.reference[active].max() <= 1 + 1e-12
    plus = dtd.redistribute(layer, a, R, "zplus")
    assert plus.reference[active].min() >= -1e-12
    assert plus.t[R != 0].max() <= 1 + 1e-12  # t <= 1 exactly when b <= 0


def test_epsilon_absorbs_the_zero_order_term():
    layer, a, R, z = _case(7)
    eps = 0.5
    res = dtd.redistribute(layer, a, R, "epsilon", epsilon=eps)
    active = R != 0
    # Reference point ã = a·ε/(z+ε) (all of a, including a_0 = 1): t = z/(z+ε).
    assert torch.allclose(res.t[active], (z / (z + eps))[active], rtol=1e-12)
    # What no input receives: the bias term t·b_k·c_k plus the zero-order term
    # R_k(ã) = ε/(z+ε)·R_k, together (b_k + ε)/(z_k + ε)·R_k.
    b = layer.bias.detach()
    assert torch.allclose(res.absorbed, (b + eps) / (z + eps) * R, atol=1e-12)
    # Without a bias, only the zero-order term is absorbed.
    layer, a, R, z = _case(7, bias=False)
    res = dtd.redistribute(layer, a, R, "epsilon", epsilon=eps)
    assert torch.allclose(res.absorbed, eps / (z + eps) * R, atol=1e-12)
    assert torch.allclose(res.relevance.sum(1), (z / (z + eps) * R).sum(1), atol=1e-12)


def test_gamma_tends_to_zplus():
    layer, a, R, _ = _case(9)
    plus = dtd.redistribute(layer, a, R, "zplus").relevance
    gaps = [(dtd.redistribute(layer, a, R, "gamma", gamma=g).relevance - plus).abs().max().item()
            for g in (1.0, 10.0, 100.0, 1000.0)]
    assert all(x > y for x, y in zip(gaps, gaps[1:], strict=False))
    assert gaps[-1] < 5e-2 * gaps[0]
    # gamma = 0 is LRP-0.
    zero = dtd.redistribute(layer, a, R, "zero").relevance
    assert torch.allclose(dtd.redistribute(layer, a, R, "gamma", gamma=0.0).relevance, zero)


def test_input_space_root_differs_from_engine_convention_when_bias_present():
    layer, a, R, _ = _case(2)
    fixed = dtd.redistribute(layer, a, R, "gamma", gamma=0.25, bias="fixed").relevance
    engine = propagate(layer, Gamma(0.25, stabilizer=0), a, R)
    assert (fixed - engine).abs().max() > 1e-3


def test_default_stabilizer_is_the_only_gap():
    layer, a, R, _ = _case(4)
    exact = dtd.redistribute(layer, a, R, "zplus").relevance
    gap = (exact - propagate(layer, ZPlus(), a, R)).abs().max().item()
    assert 0 < gap < 1e-4


def test_neuron_root_point_single_neuron():
    w = torch.tensor([1.0, -2.0, 0.5], dtype=DT)
    a = torch.tensor([1.0, 0.2, 1.0], dtype=DT)
    ref, t = dtd.neuron_root_point(w, 0.1, a, w)
    assert abs((ref @ w + 0.1).item()) < 1e-14
    assert t.item() == pytest.approx((a @ w + 0.1).item() / (w @ w).item(), rel=1e-13)


def test_errors_are_explained():
    layer, a, R, z = _case(1)
    with pytest.raises(ValueError, match="unknown DTD rule"):
        dtd.redistribute(layer, a, R, "alpha")
    with pytest.raises(ValueError, match="non-negative"):
        dtd.redistribute(layer, a - 2, torch.zeros_like(R), "zplus")
    with pytest.raises(ValueError, match="max\\(0, z_k\\)"):
        dtd.redistribute(layer, a, torch.where(z <= 0, 1.0, 0.0), "w2")
    with pytest.raises(ValueError, match="inside the box"):
        dtd.redistribute(layer, a, R, "zbox", low=0.0, high=0.5)
    with pytest.raises(ValueError, match="needs the input bound"):
        dtd.redistribute(layer, a, R, "zbox", low=0.0)
    with pytest.raises(ValueError, match="epsilon > 0"):
        dtd.redistribute(layer, a, R, "epsilon")
    with pytest.raises(ValueError, match="shape"):
        dtd.redistribute(layer, a, R[:, :2], "w2")
    with pytest.raises(TypeError, match="nn.Linear"):
        dtd.redistribute(torch.nn.ReLU(), a, R, "w2")
    with pytest.raises(ValueError, match="bias must be"):
        dtd.redistribute(layer, a, R, "w2", bias="nowhere")


def test_relevance_model_top_layer_factors_are_constant_for_lrp0():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    net = net.to(DT).eval()
    a = torch.rand(5, 6, dtype=DT)
    comp = lt.composites.Uniform(Zero(stabilizer=0))
    R, c, z = dtd.relevance_factors(net[0], net[2:].eval(), a, target=1, composite=comp)
    # With LRP-0 on the top layer, R_k = h_k w_k1 exactly, so c_k = w_k1 wherever z_k > 0.
    expected = torch.where(z > 0, net[2].weight[1].detach().expand_as(z), torch.zeros_like(z))
    assert torch.allclose(c, expected, atol=1e-12)
    stats = dtd.relevance_model_check(net[0], net[2:].eval(), a, target=1, composite=comp,
                                      sigma=0.01, trials=3)
    assert stats["exact_share"] == 1.0 and stats["c_median"] < 1e-12
    eps = dtd.relevance_model_check(net[0], net[2:].eval(), a, target=1,
                                    composite=lt.composites.Uniform(Epsilon(1.0)), trials=3)
    assert eps["exact_share"] < 1.0 and 0 < eps["c_median"] < eps["z_median"] * 2
    with pytest.raises(ValueError, match="sigma"):
        dtd.relevance_model_check(net[0], net[2:], a, target=1, sigma=0)


def _zero_to_h(layer, a, R, high):
    w = layer.weight.detach()
    h = torch.as_tensor(high, dtype=a.dtype)
    z = a @ w.T - (h * torch.ones_like(a)) @ w.clamp(max=0).T
    s = R / z
    return a * (s @ w) - h * (s @ w.clamp(max=0))


def test_zero_to_h_checker_accepts_solution_and_rejects_lrp0(capsys):
    from lrp_teach.exercises import ExerciseError, check_zero_to_h_rule

    check_zero_to_h_rule(_zero_to_h)
    assert "conserves relevance" in capsys.readouterr().out

    def lrp0(layer, a, R, high):
        return a * ((R / (a @ layer.weight.T + layer.bias)) @ layer.weight)

    with pytest.raises(ExerciseError, match="not conserved"):  # LRP-0 with its bias
        check_zero_to_h_rule(lrp0)
    with pytest.raises(ExerciseError, match="package"):  # the rule must be written by hand
        check_zero_to_h_rule(lambda layer, a, R, high: propagate(layer, Zero(stabilizer=0),
                                                                  a, R))
    # the [0, h] rule is z^B with l = 0, also when derived by dtd.redistribute
    layer, a, R, _ = _case(0)
    ref = dtd.redistribute(layer, a, R, "zbox", low=0.0, high=1.0).relevance
    assert torch.allclose(_zero_to_h(layer, a, R, 1.0), ref, atol=1e-12)
