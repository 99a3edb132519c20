"""Agreement with captum's LRP where the conventions coincide.

captum (``captum.attr.LRP``, rules in ``captum.attr._utils.lrp_rules``) differs from
lrp_teach in two conventions, so the comparison is set up where both agree:

* captum's ``GammaRule`` and ``Alpha1_Beta0_Rule`` change the weights only and keep the
  bias as it is, whereas lrp_teach treats the bias as the weight of a constant input
  (denominator ``b + gamma b+`` resp. ``b+``).  With zero biases both are the same, so the
  gamma and alpha1-beta0 comparisons use a bias-free CNN; epsilon (no weight change) is
  compared with biases.
* captum's stabilizer is ``1e-9 sign(z)`` (sign(0) = +1) on every rule, including the
  max-pooling layers, where it scales the winner's relevance by z/(z + 1e-9).  lrp_teach's
  rules get ``stabilizer=1e-9`` here, and max-pooling passes relevance exactly, so the two
  agree to about 1e-9 relative per pooling layer.
captum needs a model whose layers it can hook and has no rule for ``nn.Flatten``, so it
gets a wrapper module that reshapes in ``forward``, sharing the very same layers.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import lrp_teach as lt
from lrp_teach.composites import Uniform
from lrp_teach.rules import Epsilon, Gamma, ZPlus

captum_attr = pytest.importorskip("captum.attr")
from captum.attr._utils.lrp_rules import (  # noqa: E402
    Alpha1_Beta0_Rule,
    EpsilonRule,
    GammaRule,
)

torch.set_num_threads(1)


class CaptumNet(nn.Module):
    def __init__(self, features: nn.Sequential, classifier: nn.Sequential) -> None:
        super().__init__()
        self.features, self.classifier = features, classifier

    def forward(self, x):
        return self.classifier(self.features(x).reshape(x.shape[0], -1))


def make(bias: bool):
    torch.manual_seed(0)
    features = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1, bias=bias), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 8, 3, padding=1, bias=bias), nn.ReLU(), nn.MaxPool2d(2),
    )
    classifier = nn.Sequential(nn.Linear(8 * 4 * 4, 12, bias=bias), nn.ReLU(),
                               nn.Linear(12, 4, bias=bias))
    ours = nn.Sequential(features, nn.Flatten(), classifier).double().eval()
    return ours, CaptumNet(features, classifier).double().eval()


@pytest.mark.parametrize(
    ("name", "bias", "captum_rule", "ours"),
    [
        ("epsilon", True, lambda: EpsilonRule(epsilon=0.1), Epsilon(0.1)),
        ("epsilon-tiny", True, lambda: EpsilonRule(epsilon=1e-9), Epsilon(1e-9)),
        ("gamma", False, lambda: GammaRule(gamma=0.25), Gamma(0.25, stabilizer=1e-9)),
        ("alpha1beta0", False, lambda: Alpha1_Beta0_Rule(), ZPlus(stabilizer=1e-9)),
    ],
)
def test_agrees_with_captum(name, bias, captum_rule, ours):
    ours_model, theirs = make(bias)
    for m in theirs.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            m.rule = captum_rule()
    x = torch.rand(3, 3, 16, 16, dtype=torch.float64)
    target = torch.tensor([0, 2, 3])
    before = copy.deepcopy(ours_model.state_dict())
    R_captum = captum_attr.LRP(theirs).attribute(x.clone().requires_grad_(True), target=target)
    R_ours = lt.explain(ours_model, x, target, Uniform(ours))
    assert torch.isfinite(R_ours).all() and R_ours.abs().sum() > 0
    torch.testing.assert_close(R_ours, R_captum.detach(), atol=1e-7, rtol=1e-6)
    for k, v in before.items():  # captum restores the weights it changed
        assert torch.equal(v, ours_model.state_dict()[k])


def test_gamma_differs_from_captum_with_biases_as_documented():
    ours_model, theirs = make(True)
    for m in theirs.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            m.rule = GammaRule(gamma=0.25)
    with torch.no_grad():  # positive biases make the two bias conventions differ clearly
        for m in ours_model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.bias.abs_()
    x = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    R_captum = captum_attr.LRP(theirs).attribute(x.clone().requires_grad_(True), target=0)
    R_ours = lt.explain(ours_model, x, 0, Uniform(Gamma(0.25, stabilizer=1e-9)))
    assert not torch.allclose(R_ours, R_captum.detach(), atol=1e-6, rtol=1e-4)
