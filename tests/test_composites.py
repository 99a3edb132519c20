"""Composites: precedence, presets, printing and errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import lrp_teach as lt
from lrp_teach.composites import (
    BestPractice,
    Composite,
    EpsilonAlpha2Beta1,
    EpsilonGamma,
    EpsilonGammaBox,
    EpsilonPlusFlat,
    Uniform,
)
from lrp_teach.rules import AlphaBeta, Epsilon, Flat, Gamma, ZBox, Zero, ZPlus


def vgg_like() -> nn.Sequential:
    return nn.Sequential(
        nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1),
                      nn.ReLU(), nn.MaxPool2d(2)),
        nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)),
        nn.Flatten(),
        nn.Sequential(nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 5)),
    )


def rules(comp, model=None):
    return [a.rule for a in comp.assign(model or vgg_like())]


def test_precedence_name_index_position_type_default():
    comp = Composite(
        default=Zero(), by_type={nn.Conv2d: Gamma(0.1)}, first=ZBox(0.0, 1.0),
        last=Epsilon(1.0), by_index={0: Gamma(0.9), -2: ZPlus()}, by_name={"0.0": Flat()},
    )
    got = comp.assign(vgg_like())
    assert [a.rule for a in got] == [Flat(), Gamma(0.1), Gamma(0.1), ZPlus(), Epsilon(1.0)]
    assert [a.by for a in got] == ["name", "type Conv2d", "type Conv2d", "index -2", "last"]
    assert [a.name for a in got] == ["0.0", "0.2", "1.0", "3.0", "3.2"]
    comp2 = Composite(default=Zero(), first=ZBox(0.0, 1.0), by_index={0: Gamma(0.9)})
    assert rules(comp2)[0] == Gamma(0.9)  # index beats first
    comp3 = Composite(default=Zero(), by_type={nn.Linear: Epsilon(0.5)}, first=ZBox(0.0, 1.0))
    assert rules(comp3, nn.Sequential(nn.Linear(2, 2)))[0] == ZBox(0.0, 1.0)  # first beats type


def test_presets():
    assert rules(EpsilonGamma()) == [Gamma(0.25)] * 3 + [Epsilon(1e-6)] * 2
    assert rules(EpsilonGammaBox(-1.0, 1.0)) == [ZBox(-1.0, 1.0)] + [Gamma(0.25)] * 2 + [
        Epsilon(1e-6)] * 2
    assert rules(EpsilonPlusFlat()) == [Flat(), ZPlus(), ZPlus(), Epsilon(1e-6), Epsilon(1e-6)]
    assert rules(EpsilonAlpha2Beta1()) == [AlphaBeta(2, 1)] * 3 + [Epsilon(1e-6)] * 2
    assert rules(Uniform(Gamma(0.3))) == [Gamma(0.3)] * 5


def test_best_practice_split():
    assert rules(BestPractice(0.0, 1.0)) == [ZBox(0.0, 1.0), Gamma(0.25), Gamma(0.25),
                                             Epsilon(0.25), Zero()]
    assert rules(BestPractice(0.0, 1.0, n_gamma=1, epsilon=0.1)) == [
        ZBox(0.0, 1.0), Gamma(0.25), Epsilon(0.1), Epsilon(0.1), Zero()]
    mlp = nn.Sequential(nn.Linear(64, 100), nn.ReLU(), nn.Linear(100, 50), nn.ReLU(),
                        nn.Linear(50, 10))
    assert rules(BestPractice(0.0, 1.0), mlp) == [ZBox(0.0, 1.0), Gamma(0.25), Zero()]
    with pytest.raises(ValueError, match="n_gamma"):
        BestPractice(0.0, 1.0, n_gamma=4).assign(vgg_like())


def test_rule_map_prints_which_rule_went_where():
    text = str(EpsilonGammaBox(0.0, 1.0).assign(vgg_like()))
    assert "ZBox(low=0, high=1)" in text and "chosen by" in text and "first" in text
    assert "<table>" in EpsilonGammaBox(0.0, 1.0).assign(vgg_like())._repr_html_()


def test_errors():
    with pytest.raises(TypeError, match=r"no rule for layer '3\.0'"):
        Composite(by_type={nn.Conv2d: Gamma()}).assign(vgg_like())
    with pytest.raises(ValueError, match="unknown layers"):
        Composite(default=Zero(), by_name={"nope": Zero()}).assign(vgg_like())
    with pytest.raises(ValueError, match="out of range"):
        Composite(default=Zero(), by_index={7: Zero()}).assign(vgg_like())
    with pytest.raises(TypeError, match="Rule"):
        Composite(default="epsilon")
    with pytest.raises(TypeError, match="layer classes"):
        Composite(by_type={"conv": Zero()})


def test_composite_used_by_explain():
    torch.manual_seed(0)
    model = vgg_like().eval()
    x = torch.rand(2, 3, 8, 8)
    R1 = lt.explain(model, x, 1, EpsilonGammaBox(0.0, 1.0))
    R2 = lt.explain(model, x, 1, Composite(default=Epsilon(1e-6), by_type={nn.Conv2d: Gamma()},
                                           first=ZBox(0.0, 1.0)))
    torch.testing.assert_close(R1, R2)
    assert not torch.allclose(R1, lt.explain(model, x, 1, Uniform(Zero())))
