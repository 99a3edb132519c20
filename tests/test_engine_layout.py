"""The engine computes float32 CPU convolutions in channels-last layout; values must not care."""

from __future__ import annotations

import copy

import pytest
import torch
from architectures import inputs_for, make_resnet
from torch import nn

import lrp_teach as lt


class ViewNet(nn.Module):
    """A user's CNN that flattens with .view, which needs a contiguous tensor."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 4 * 4, 5)

    def forward(self, x):
        h = torch.max_pool2d(torch.relu(self.c1(x)), 2)
        h = torch.relu(self.c2(h))
        return self.fc(h.view(h.size(0), -1))


def test_channels_last_inside_gives_the_float64_result():
    torch.manual_seed(0)
    model = ViewNet().eval()
    x = torch.rand(6, 3, 8, 8)
    comp = lt.composites.EpsilonGammaBox(0.0, 1.0)
    R32 = lt.explain(model, x, 1, comp)
    R64 = lt.explain(copy.deepcopy(model).double(), x.double(), 1, comp)
    assert R32.is_contiguous() and R32.dtype == torch.float32
    scale = R64.abs().max()
    assert float((R32.double() - R64).abs().max() / scale) < 1e-4
    one = torch.cat([lt.explain(model, x[k:k + 1], 1, comp) for k in range(6)])  # batch 1
    assert float((R32 - one).abs().max() / scale) < 1e-4


def test_resnet_in_float32_matches_float64():
    x = inputs_for("resnet", batch=4)
    model = lt.canonize(make_resnet(seed=0, dtype=torch.float64), x)
    R64 = lt.explain(model, x, 0)
    R32 = lt.explain(copy.deepcopy(model).float(), x.float(), 0)
    assert float((R32.double() - R64).abs().max() / R64.abs().max()) < 1e-3


def test_a_composite_can_give_an_activation_module_its_own_rule():
    """Tanh gets the identity rule by default; Gradient keeps tanh's own derivative."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    x = torch.randn(5, 4, dtype=torch.float64)
    zero = lt.rules.Epsilon(0.0)
    default = lt.attribute(model, x, 0, lt.composites.Composite(default=zero), at=["1", "1:in"])
    torch.testing.assert_close(default.at["1"].sum(1), default.at["1:in"].sum(1))
    plain = lt.composites.Composite(default=zero, by_type={nn.Tanh: lt.rules.Gradient()})
    res = lt.attribute(model, x, 0, plain, at=["1:in"])
    a = res.at["1:in"]
    # with the Gradient rule the relevance below tanh is a * tanh'(a) * (R_out / tanh(a))
    with torch.no_grad():
        pre = model[0](x)
        expected = default.at["1"] * pre * (1 - torch.tanh(pre) ** 2) / torch.tanh(pre)
    torch.testing.assert_close(a, expected, atol=1e-12, rtol=1e-9)


def test_no_engine_mark_stays_on_the_callers_tensors_or_the_model():
    class Counter(nn.Module):  # writes an input-dependent value into a buffer
        def __init__(self):
            super().__init__()
            self.emb, self.fc = nn.Embedding(5, 3), nn.Linear(3, 2)
            self.register_buffer("last", torch.zeros(3))

        def forward(self, ids):
            e = self.emb(ids).mean(1)
            self.last.copy_(e[0].detach())
            return self.fc(e)

    model, ids = Counter(), torch.tensor([[1, 2], [3, 4]])
    lt.explain(model, ids, 0)
    assert "_lrp_tag" not in ids.__dict__
    assert all("_lrp_tag" not in t.__dict__ for t in (*model.parameters(), *model.buffers()))
    assert torch.equal(model.last, torch.zeros(3))  # the buffer came back as it was


def test_a_forward_under_no_grad_is_not_explained_silently():
    class Frozen(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone, self.head = nn.Linear(4, 4), nn.Linear(4, 2)

        def forward(self, x):
            with torch.no_grad():  # a frozen feature extractor
                h = torch.relu(self.backbone(x))
            return self.head(h)

    with pytest.warns(UserWarning, match="no_grad"):
        R = lt.explain(Frozen(), torch.rand(3, 4), 0)
    assert torch.equal(R, torch.zeros(3, 4))

    class Centred(nn.Module):  # statistics under no_grad are constants, as after .detach()
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            with torch.no_grad():
                m = x.mean(1, keepdim=True)
            return self.fc(x - m)

    model, x = Centred().double(), torch.rand(3, 4, dtype=torch.float64)
    comp = lt.composites.Uniform(lt.rules.Epsilon(0.0))
    R = lt.explain(model, x, 0, comp)
    xg = x.clone().requires_grad_(True)  # LRP-0 of one layer = Gradient x Input, m constant
    out = model.fc(xg - x.mean(1, keepdim=True))
    (g,) = torch.autograd.grad(out[:, 0].sum(), xg)
    torch.testing.assert_close(R, x * g)
