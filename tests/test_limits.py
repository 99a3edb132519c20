"""Tests of lrp_teach.limits, the helpers of chapter 10."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import lrp_teach as lt
from lrp_teach import baselines, limits


def _net(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3)).double()


def test_interaction_is_zero_for_additive_and_full_for_product():
    x = torch.rand(5, 1, 4, 4, dtype=torch.float64) + 0.5
    a = torch.zeros(1, 4, 4, dtype=torch.bool)
    a[0, 0] = True
    b = torch.zeros(1, 4, 4, dtype=torch.bool)
    b[0, 3] = True

    def s(v, m):
        return (v * m).flatten(1).sum(1)

    additive = limits.interaction(lambda v: 2 * s(v, a) - s(v, b) + 1.0, x, a, b)
    product = limits.interaction(lambda v: s(v, a) * s(v, b), x, a, b)
    assert additive.abs().max() < 1e-12
    assert torch.allclose(product, s(x, a) * s(x, b))


def test_interaction_uses_fill_and_matches_explicit_formula():
    net = _net()
    x = torch.rand(3, 1, 4, 4, dtype=torch.float64)
    a = torch.rand(1, 4, 4) < 0.4
    b = torch.rand(1, 4, 4) < 0.4

    def f(v):
        return net(v)[:, 1]

    def removed(m):
        return torch.where(m, 0.7, x)

    with torch.no_grad():
        expected = f(x) - f(removed(a)) - f(removed(b)) + f(removed(a | b))
    assert torch.allclose(limits.interaction(f, x, a, b, fill=0.7), expected)


def test_interaction_bad_input():
    x = torch.rand(2, 1, 4, 4)
    good = torch.zeros(1, 4, 4, dtype=torch.bool)
    with pytest.raises(TypeError, match="mask_a must be a boolean"):
        limits.interaction(lambda v: v.sum((1, 2, 3)), x, good.float(), good)
    with pytest.raises(ValueError, match="does not broadcast"):
        limits.interaction(lambda v: v.sum((1, 2, 3)), x, good, torch.zeros(3, 3, dtype=bool))
    with pytest.raises(ValueError, match="one value per input"):
        limits.interaction(lambda v: v.sum(), x, good, good)


def test_softplus_copy_is_close_and_leaves_the_model_alone():
    net = _net()
    before = copy.deepcopy(net.state_dict())
    smooth = limits.softplus_copy(net, beta=50.0)
    assert not any(isinstance(m, nn.ReLU) for m in smooth.modules())
    assert any(isinstance(m, nn.ReLU) for m in net.modules())
    x = torch.rand(10, 1, 4, 4, dtype=torch.float64)
    with torch.no_grad():
        gap = (smooth(x) - net(x)).abs().max().item()
    assert gap < 0.05  # softplus_beta - relu <= log(2) / beta per unit
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    with pytest.raises(ValueError, match="beta must be positive"):
        limits.softplus_copy(net, beta=0.0)


def test_region_share_and_map_correlation():
    R = torch.tensor([[[[1.0, -3.0], [0.0, 0.0]]]])
    mask = torch.tensor([[[True, False], [False, False]]])
    assert torch.allclose(limits.region_share(R, mask), torch.tensor([0.25]))
    a = torch.randn(4, 1, 5, 5, dtype=torch.float64)
    assert torch.allclose(limits.map_correlation(a, 3 * a + 1), torch.ones(4, dtype=torch.float64))
    assert torch.allclose(limits.map_correlation(a, -a), -torch.ones(4, dtype=torch.float64))
    assert limits.map_correlation(a, torch.ones_like(a)).abs().max() == 0
    with pytest.raises(ValueError, match="same shape"):
        limits.map_correlation(a, a[:2])


def test_stability_of_a_linear_model_is_one_for_the_gradient():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).double()
    x = torch.rand(6, 1, 4, 4, dtype=torch.float64)
    # the gradient of a linear model does not depend on x: noise cannot change its map;
    # Gradient x Input of the same model changes with x
    s_grad = limits.stability(baselines.gradient, net, x, 0, sigma=0.1)
    assert torch.allclose(s_grad, torch.ones(6, dtype=torch.float64))
    s_gxi = limits.stability(baselines.gradient_x_input, net, x, 0, sigma=0.2)
    assert (s_gxi < 1).all() and (s_gxi > 0).all()
    with pytest.raises(ValueError, match="sigma"):
        limits.stability(baselines.gradient, net, x, sigma=-1.0)


def test_manipulate_moves_gradient_x_input_and_keeps_the_prediction():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 12), nn.ReLU(),
                        nn.Linear(12, 3)).double().eval()
    x = torch.rand(4, 1, 4, 4, dtype=torch.float64) * 0.5 + 0.25
    state = copy.deepcopy(net.state_dict())
    with torch.no_grad():
        c = net(x).argmax(1)
    target = torch.zeros(1, 4, 4, dtype=torch.float64)
    target[0, :2, :2] = 1.0
    x_adv = limits.manipulate(net, x, target, steps=200, lr=1e-2, keep_weight=1.0)
    assert x_adv.shape == x.shape and x_adv.min() >= 0 and x_adv.max() <= 1
    region = target.bool()
    share0 = limits.region_share(baselines.gradient_x_input(net, x, c), region)
    share1 = limits.region_share(baselines.gradient_x_input(net, x_adv, c), region)
    assert (share1 > share0).all()
    with torch.no_grad():
        assert (net(x_adv).argmax(1) == c).all()
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())
    with pytest.raises(ValueError, match="steps"):
        limits.manipulate(net, x, target, steps=0)


def test_augment_watermark_stamps_a_seeded_fraction():
    x = torch.zeros(200, 1, 16, 16)
    spec = {"value": 1.0, "patch": 3, "corner": "bottom-right"}
    out, chosen = limits.augment_watermark(x, spec, fraction=0.5, seed=3)
    out2, chosen2 = limits.augment_watermark(x, spec, fraction=0.5, seed=3)
    assert torch.equal(out, out2) and torch.equal(chosen, chosen2)
    assert 70 < int(chosen.sum()) < 130
    assert (out[chosen][:, :, -3:, -3:] == 1).all() and (out[~chosen] == 0).all()
    assert (x == 0).all()  # the input is not modified
    with pytest.raises(ValueError, match="fraction"):
        limits.augment_watermark(x, spec, fraction=1.5)
    with pytest.raises(KeyError, match="lacks"):
        limits.augment_watermark(x, {"value": 1.0})


def test_train_without_shortcut_removes_the_flips():
    torch.set_num_threads(1)
    from lrp_teach.train.digits import watermark_flip_rate

    data = lt.datasets.load_digits(size=16)
    hans = lt.pretrained.load("digits_cnn_watermark")
    fixed = limits.train_without_shortcut(fraction=0.5, epochs=8, seed=0)
    assert watermark_flip_rate(hans, data.x_test, data.y_test) > 0.3
    assert watermark_flip_rate(fixed, data.x_test, data.y_test) < 0.02
    with torch.no_grad():
        acc = (fixed(data.x_test).argmax(1) == data.y_test).float().mean().item()
    assert acc > 0.96


def test_manipulate_respects_max_norm():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 3)).double()
    x = torch.rand(4, 1, 4, 4, dtype=torch.float64) * 0.5 + 0.25
    target = torch.zeros(1, 4, 4, dtype=torch.float64)
    target[0, :2, :2] = 1.0
    free = limits.manipulate(net, x, target, steps=100, lr=5e-2)
    radius = torch.tensor([0.05, 0.1, 0.2, 0.4], dtype=torch.float64)
    capped = limits.manipulate(net, x, target, steps=100, lr=5e-2, max_norm=radius)
    size_free = (free - x).flatten(1).norm(dim=1)
    size = (capped - x).flatten(1).norm(dim=1)
    assert (size <= radius + 1e-12).all()
    assert (size_free > radius[0]).all()  # without the cap the change is larger
    assert torch.isclose(size[0], radius[0], rtol=1e-3)  # the cap binds
    assert capped.min() >= 0 and capped.max() <= 1
    with pytest.raises(ValueError, match="max_norm"):
        limits.manipulate(net, x, target, steps=1, max_norm=-1.0)


def test_same_norm_noise_has_the_requested_norm_inside_the_box():
    x = torch.rand(6, 1, 8, 8, dtype=torch.float64)
    x[:, :, :4] = 0.0  # half of each image on the lower bound: clamping bites
    rho = torch.linspace(0.1, 1.5, 6, dtype=torch.float64)
    noisy = limits.same_norm_noise(x, rho, seed=3)
    assert noisy.shape == x.shape and noisy.min() >= 0 and noisy.max() <= 1
    assert torch.allclose((noisy - x).flatten(1).norm(dim=1), rho, rtol=1e-6)
    assert torch.equal(noisy, limits.same_norm_noise(x, rho, seed=3))
    assert not torch.equal(noisy, limits.same_norm_noise(x, rho, seed=4))
    # directions are random: the change is not aligned with any fixed map
    d = (noisy - x).flatten(1)
    cos = (d[0] @ d[1]) / (d[0].norm() * d[1].norm())
    assert abs(cos) < 0.5
