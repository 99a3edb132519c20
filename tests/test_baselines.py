"""Baselines: closed forms on linear models, agreement with captum, batching, model untouched."""

from __future__ import annotations

import copy

import pytest
import torch
from captum.attr import (
    GuidedBackprop,
    InputXGradient,
    IntegratedGradients,
    Occlusion,
    Saliency,
)
from torch import nn

from lrp_teach import baselines as bl
from lrp_teach.models import digits_cnn

torch.set_num_threads(1)
ALL = [
    bl.gradient,
    bl.gradient_x_input,
    bl.integrated_gradients,
    bl.smoothgrad,
    bl.occlusion,
    bl.guided_backprop,
]


@pytest.fixture(scope="module")
def cnn():
    torch.manual_seed(0)
    model = digits_cnn().double()
    # non-trivial BatchNorm statistics, so that train and eval mode differ
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return model.eval()


@pytest.fixture(scope="module")
def images():
    return torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


@pytest.fixture(scope="module")
def linear():
    torch.manual_seed(2)
    return nn.Sequential(nn.Linear(6, 3)).double()


def test_linear_closed_forms(linear):
    x = torch.randn(5, 6, dtype=torch.float64)
    w = linear[0].weight.detach()
    t = torch.tensor([0, 1, 2, 1, 0])
    assert torch.allclose(bl.gradient(linear, x, t), w[t])
    assert torch.allclose(bl.gradient(linear, x, t, absolute=True), w[t].abs())
    assert torch.allclose(bl.gradient_x_input(linear, x, t), x * w[t])
    # on a linear model IG with baseline 0 is exact, and occlusion of single features
    # with value 0 removes exactly x_i w_i
    assert torch.allclose(bl.integrated_gradients(linear, x, t, steps=2), x * w[t])
    assert torch.allclose(bl.occlusion(linear, x, t, patch=1), x * w[t])
    assert torch.allclose(bl.smoothgrad(linear, x, t, noise=0.5, samples=4), w[t])
    assert torch.allclose(
        bl.guided_backprop(nn.Sequential(linear[0], nn.ReLU()), x, t),
        w[t] * (linear(x).gather(1, t.view(-1, 1)) > 0),
    )


def test_gradient_matches_captum(cnn, images):
    t = torch.tensor([0, 3, 5, 9])
    ours = bl.gradient(cnn, images, t)
    theirs = Saliency(cnn).attribute(images, target=t, abs=False)
    assert torch.allclose(ours, theirs, atol=1e-12)
    ours = bl.gradient_x_input(cnn, images, t)
    assert torch.allclose(ours, InputXGradient(cnn).attribute(images, target=t), atol=1e-12)


def test_integrated_gradients_matches_captum_and_completeness(cnn, images):
    t = torch.tensor([1, 2, 3, 4])
    ours = bl.integrated_gradients(cnn, images, t, steps=20)
    theirs = IntegratedGradients(cnn).attribute(
        images, target=t, n_steps=20, method="riemann_trapezoid"
    )
    # captum's trapezoid weights are 1/n (halved at the ends), which add up to (n-1)/n
    # instead of 1; ours are 1/(n-1), so the two differ by exactly that factor
    assert torch.allclose(ours, theirs * 20 / 19, atol=1e-10)
    # completeness: sum R = f(x) - f(0), up to the quadrature error, which shrinks with steps
    fine = bl.integrated_gradients(cnn, images, t, steps=256, batch_size=300)
    fx = cnn(images).gather(1, t.view(-1, 1)).flatten()
    f0 = cnn(torch.zeros_like(images)).gather(1, t.view(-1, 1)).flatten()
    err_fine = (fine.flatten(1).sum(1) - (fx - f0)).abs().max()
    assert err_fine < 1e-2 * (fx - f0).abs().max()


def test_integrated_gradients_baseline(linear):
    x = torch.randn(3, 6, dtype=torch.float64)
    base = torch.full((6,), 0.5, dtype=torch.float64)
    w = linear[0].weight.detach()
    assert torch.allclose(bl.integrated_gradients(linear, x, 1, baseline=base), (x - base) * w[1])
    with pytest.raises(ValueError, match="broadcast"):
        bl.integrated_gradients(linear, x, 1, baseline=torch.zeros(4))
    with pytest.raises(ValueError, match="steps"):
        bl.integrated_gradients(linear, x, 1, steps=1)


@pytest.mark.parametrize("patch,stride", [(2, None), (3, 2), (4, 3)])
def test_occlusion_matches_captum(cnn, images, patch, stride):
    t = torch.tensor([7, 1, 0, 2])
    ours = bl.occlusion(cnn, images, t, patch=patch, stride=stride, batch_size=37)
    s = stride or patch
    theirs = Occlusion(cnn).attribute(
        images, target=t, sliding_window_shapes=(1, patch, patch), strides=(1, s, s), baselines=0.0
    )
    assert ours.dtype == torch.float64  # captum returns float32 here, so compare at that level
    assert torch.allclose(ours, theirs.double(), atol=1e-6)


def test_guided_backprop_matches_captum(cnn, images):
    t = torch.tensor([3, 3, 8, 8])
    ours = bl.guided_backprop(cnn, images, t)
    theirs = GuidedBackprop(cnn).attribute(images, target=t)
    assert torch.allclose(ours, theirs, atol=1e-12)
    assert not torch.allclose(ours, bl.gradient(cnn, images, t))


def test_smoothgrad_properties(cnn, images):
    t = torch.tensor([0, 1, 2, 3])
    assert torch.allclose(
        bl.smoothgrad(cnn, images, t, noise=0.0, samples=3), bl.gradient(cnn, images, t), atol=1e-12
    )
    a = bl.smoothgrad(cnn, images, t, samples=8, seed=3)
    assert torch.equal(a, bl.smoothgrad(cnn, images, t, samples=8, seed=3, batch_size=5))
    assert not torch.allclose(a, bl.smoothgrad(cnn, images, t, samples=8, seed=4))
    assert torch.allclose(
        bl.smoothgrad(cnn, images, t, samples=8, seed=3, times_input=True), a * images
    )


@pytest.mark.parametrize("method", ALL, ids=lambda f: f.__name__)
def test_batched_equals_one_by_one(cnn, images, method):
    t = torch.tensor([4, 0, 9, 2])
    batch = method(cnn, images, t)
    single = torch.cat([method(cnn, images[i : i + 1], int(t[i])) for i in range(len(images))])
    assert batch.shape == images.shape
    if method is bl.smoothgrad:  # the noise depends on the batch; compare the statistics
        assert (batch - single).abs().max() < 0.5 * batch.abs().max()
    else:
        assert torch.allclose(batch, single, atol=1e-10)


@pytest.mark.parametrize("method", ALL, ids=lambda f: f.__name__)
def test_model_left_untouched(cnn, images, method):
    model = copy.deepcopy(cnn).train()
    before = copy.deepcopy(model.state_dict())
    method(model, images, None)
    assert model.training and all(m.training for m in model.modules())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k  # BatchNorm statistics were not updated
    assert all(p.grad is None for p in model.parameters())
    assert all(not m._forward_hooks and not m._backward_hooks for m in model.modules())


def test_target_none_is_prediction(cnn, images):
    pred = cnn(images).argmax(1)
    assert torch.equal(bl.gradient(cnn, images), bl.gradient(cnn, images, pred))
    assert torch.equal(bl.resolve_target(cnn, images, None), pred)
    assert torch.equal(bl.resolve_target(cnn, images, 4), torch.full((4,), 4))


def test_bad_input(cnn, images, linear):
    with pytest.raises(ValueError, match="0..9"):
        bl.gradient(cnn, images, 10)
    with pytest.raises(ValueError, match="target has 3 entries, but the batch has 4"):
        bl.gradient(cnn, images, torch.tensor([1, 2, 3]))
    with pytest.raises(TypeError, match="target"):
        bl.gradient(cnn, images, "3")
    with pytest.raises(ValueError, match="batched"):
        bl.gradient(cnn, images[0, 0, 0])
    with pytest.raises(TypeError, match="floating"):
        bl.gradient(linear, torch.ones(2, 6, dtype=torch.long))
    with pytest.raises(ValueError, match="no"):
        bl.guided_backprop(linear, torch.ones(2, 6, dtype=torch.float64))
    with pytest.raises(ValueError, match="patch"):
        bl.occlusion(cnn, images, patch=0)
    with pytest.raises(ValueError, match="samples"):
        bl.smoothgrad(cnn, images, samples=0)


def test_guided_backprop_removes_hooks_on_error(cnn, images):
    model = copy.deepcopy(cnn)
    with pytest.raises(ValueError):
        bl.guided_backprop(model, images, 99)
    assert all(not m._forward_hooks for m in model.modules())
