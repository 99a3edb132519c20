"""The engine computes float32 CPU convolutions in channels-last layout; values must not care."""

from __future__ import annotations

import copy

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
