"""Evaluation metrics on hand-built cases with known values, batching, and sanity checks."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from lrp_teach import baselines as bl
from lrp_teach import evaluation as ev
from lrp_teach.models import digits_cnn

torch.set_num_threads(1)


def linear_model(weights):
    w = torch.as_tensor(weights, dtype=torch.float64)
    layer = nn.Linear(len(w), 2, bias=False).double()
    with torch.no_grad():
        layer.weight.copy_(torch.stack([w, -w]))
    return nn.Sequential(layer)


@pytest.fixture(scope="module")
def cnn():
    torch.manual_seed(0)
    return digits_cnn().double().eval()


@pytest.fixture(scope="module")
def images():
    return torch.rand(5, 1, 16, 16, generator=torch.Generator().manual_seed(3),
                      dtype=torch.float64)


def test_curves_and_aopc_known_values():
    # f(x) = 4 x1 + 3 x2 + 2 x3 + 1 x4 at x = 1: removing features (fill 0) one at a time
    model = linear_model([1.0, 4.0, 2.0, 3.0])
    x = torch.ones(1, 4, dtype=torch.float64)
    R = bl.gradient_x_input(model, x, 0)
    morf = ev.perturbation_curve(model, x, R, 0, patch=1, fill=0.0)
    lerf = ev.perturbation_curve(model, x, R, 0, patch=1, fill=0.0, order="lerf")
    assert morf.tolist() == [[10.0, 6.0, 3.0, 1.0, 0.0]]
    assert lerf.tolist() == [[10.0, 9.0, 7.0, 4.0, 0.0]]
    assert ev.aopc(morf).tolist() == [6.0]  # (0 + 4 + 7 + 9 + 10) / 5
    assert ev.aopc(lerf).tolist() == [4.0]  # (0 + 1 + 3 + 6 + 10) / 5
    assert ev.aopc(morf, cumulative=True).tolist() == [[0.0, 2.0, 11 / 3, 5.0, 6.0]]
    # two features per step, and a truncated curve
    two = ev.perturbation_curve(model, x, R, 0, patch=1, fill=0.0, per_step=2)
    assert two.tolist() == [[10.0, 3.0, 0.0]]
    short = ev.perturbation_curve(model, x, R, 0, patch=2, fill=0.0, steps=1)
    # regions {x1, x2} and {x3, x4} both hold relevance 5: the tie keeps region order
    assert short.tolist() == [[10.0, 5.0]]
    R_last = torch.tensor([[0.0, 0.0, 0.0, 1.0]], dtype=torch.float64)
    assert ev.perturbation_curve(model, x, R_last, 0, patch=1, fill=0.0, steps=2).tolist() == \
        [[10.0, 7.0, 6.0]]  # x4 (weight 3) first, then x1 (weight 1, first of the ties)


def test_image_regions_known_values():
    # 4x4 image, 2x2 regions numbered row by row; the model sums region 3 with weight 2
    assert ev.region_map((4, 4), 2).tolist() == [[0, 0, 1, 1], [0, 0, 1, 1],
                                                 [2, 2, 3, 3], [2, 2, 3, 3]]
    assert ev.region_map((3, 3), 2).tolist() == [[0, 0, 1], [0, 0, 1], [2, 2, 3]]
    w = torch.zeros(4, 4, dtype=torch.float64)
    w[2:, 2:] = 2.0
    w[0, 0] = 1.0
    model = nn.Sequential(nn.Flatten(), linear_model(w.flatten()))
    x = torch.ones(1, 1, 4, 4, dtype=torch.float64)
    R = bl.gradient_x_input(model, x, 0)
    assert ev.region_relevance(R, 2).tolist() == [[1.0, 0.0, 0.0, 8.0]]
    assert ev.region_order(R, 2).tolist() == [[3, 0, 1, 2]]
    assert ev.region_order(R, 2, "lerf").tolist() == [[1, 2, 0, 3]]
    curve = ev.perturbation_curve(model, x, R, 0, patch=2, fill=0.0)
    assert curve.tolist() == [[9.0, 1.0, 0.0, 0.0, 0.0]]


def test_uniform_fill_is_shared_between_orders(cnn, images):
    R = bl.gradient_x_input(cnn, images)
    a = ev.perturbation_curve(cnn, images, R, patch=4, order="morf")
    b = ev.perturbation_curve(cnn, images, R, patch=4, order="random")
    assert torch.allclose(a[:, 0], b[:, 0])  # same start
    assert torch.allclose(a[:, -1], b[:, -1])  # everything replaced by the same noise image
    assert not torch.allclose(a, b)


@pytest.mark.parametrize("order", ["morf", "lerf", "random"])
@pytest.mark.parametrize("output", ["logit", "probability"])
def test_batched_equals_loop(cnn, images, order, output):
    R = bl.gradient_x_input(cnn, images)
    fast = ev.perturbation_curve(cnn, images, R, patch=2, steps=20, per_step=3, order=order,
                                 output=output, batch_size=33)
    slow = ev.perturbation_curve_loop(cnn, images, R, patch=2, steps=20, per_step=3,
                                      order=order, output=output)
    assert fast.shape == (5, 21)
    assert torch.allclose(fast, slow, atol=1e-12)


def test_random_order_is_seeded_and_a_permutation(images):
    R = torch.randn_like(images)
    a = ev.region_order(R, 2, "random", seed=1)
    assert torch.equal(a, ev.region_order(R, 2, "random", seed=1))
    assert not torch.equal(a, ev.region_order(R, 2, "random", seed=2))
    assert torch.equal(a.sort(1).values, torch.arange(64).expand(5, 64))


def test_morf_beats_random_beats_lerf_on_a_linear_model():
    torch.manual_seed(0)
    w = torch.randn(30, dtype=torch.float64)
    model = linear_model(w)
    x = torch.rand(20, 30, dtype=torch.float64)
    R = bl.gradient_x_input(model, x, 0)
    score = {o: ev.aopc(ev.perturbation_curve(model, x, R, 0, patch=1, fill=0.0, order=o)).mean()
             for o in ("morf", "random", "lerf")}
    assert score["morf"] > score["random"] > score["lerf"]


def test_ground_truth_metrics_known_values():
    R = torch.tensor([[[[3.0, -1.0], [1.0, 0.0]]]])
    top_left = torch.tensor([[True, False], [False, False]])
    bottom = torch.tensor([[False, False], [True, True]])
    assert ev.relevance_mass_accuracy(R, top_left).tolist() == [0.75]
    assert ev.relevance_mass_accuracy(R, bottom).tolist() == [0.25]
    assert ev.relevance_mass_accuracy(R, top_left, "sum,abs").item() == pytest.approx(0.6)
    assert ev.relevance_rank_accuracy(R, top_left).tolist() == [1.0]
    assert ev.relevance_rank_accuracy(R, bottom).tolist() == [0.5]
    assert ev.pointing_game(R, top_left).tolist() == [True]
    assert ev.pointing_game(R, bottom).tolist() == [False]
    # batched, with one mask per image
    R2 = torch.cat([R, -R])
    masks = torch.stack([top_left, bottom])
    # -R keeps positive relevance only at the top right, outside the bottom mask
    assert ev.relevance_mass_accuracy(R2, masks).tolist() == [0.75, 0.0]
    assert ev.relevance_rank_accuracy(R2, masks).tolist() == [1.0, 0.0]  # ties: pixel order
    assert ev.pointing_game(R2, masks).tolist() == [True, False]


def test_pooling_known_values():
    R = torch.tensor([[[[1.0]], [[-3.0]], [[2.0]]]])  # three channels, one pixel
    assert ev.pool(R, "sum,pos").item() == 0.0
    assert ev.pool(R, "sum,abs").item() == 0.0
    assert ev.pool(R, "max-norm").item() == 3.0
    assert ev.pool(R, "l2-norm").item() == pytest.approx(14 ** 0.5)
    with pytest.raises(ValueError, match="pooling"):
        ev.pool(R, "mean")


def test_spearman_known_values():
    a = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    assert ev.spearman(a, 10 * a).item() == pytest.approx(1.0)
    assert ev.spearman(a, -a).item() == pytest.approx(-1.0)
    assert ev.spearman(a, a ** 3).item() == pytest.approx(1.0)  # ranks only
    b = torch.tensor([[-4.0, 1.0, 2.0, 3.0]])
    assert ev.spearman(b, torch.tensor([[4.0, 1.0, 2.0, 3.0]]), absolute=True).item() == \
        pytest.approx(1.0)
    assert ev.spearman(torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[2.0, 1.0, 3.0]])).item() \
        == pytest.approx(0.5)  # 1 - 6 * 2 / (3 * 8)
    # ties share their average rank: ranks (0.5, 0.5, 2, 3) and (0.5, 0.5, 3, 2) give 3.5 / 4.5
    ties = ev.spearman(torch.tensor([[0.0, 0.0, 1.0, 2.0]]), torch.tensor([[0.0, 0.0, 2.0, 1.0]]))
    assert ties.item() == pytest.approx(3.5 / 4.5)
    assert ev.spearman(torch.ones(1, 4), a).item() == 0.0  # a constant map has no ranking


def test_cascading_randomization(cnn, images):
    before = copy.deepcopy(cnn.state_dict())
    stages = list(ev.cascading_randomization(cnn, seed=0))
    assert [n for n, _ in stages] == ["classifier.3", "classifier.1", "features.4", "features.0"]
    for k, v in cnn.state_dict().items():
        assert torch.equal(v, before[k])
    first = stages[0][1].state_dict()
    assert not torch.equal(first["classifier.3.weight"], before["classifier.3.weight"])
    assert torch.equal(first["classifier.1.weight"], before["classifier.1.weight"])
    last = stages[-1][1].state_dict()
    assert not torch.equal(last["features.0.weight"], before["features.0.weight"])
    again = list(ev.cascading_randomization(cnn, seed=0))[-1][1].state_dict()
    assert all(torch.equal(again[k], last[k]) for k in last)


def test_model_randomization_flags_a_model_independent_method(cnn, images):
    methods = {"Gradient": bl.gradient, "Input": lambda model, x, target: x.clone()}
    result = ev.model_randomization(cnn, images, methods)
    assert result.layers[0] == "classifier.3"
    assert result.similarity["Input"].shape == (4, 5)
    assert torch.allclose(result.similarity["Input"], torch.ones(4, 5, dtype=torch.float64))
    assert result.mean()["Gradient"][-1] < 0.5  # the gradient's map changes, as it must
    assert result.maps["Gradient"].shape == (5, 5, 1, 16, 16)
    signed = result.rescore(absolute=False)
    again = ev.model_randomization(cnn, images, methods, absolute=False)
    assert not signed.absolute and torch.allclose(signed.similarity["Gradient"],
                                                  again.similarity["Gradient"])


def test_bad_input(cnn, images):
    R = torch.zeros_like(images)
    with pytest.raises(ValueError, match="shape"):
        ev.perturbation_curve(cnn, images, R[:, :, :8])
    with pytest.raises(ValueError, match="order"):
        ev.perturbation_curve(cnn, images, R, order="best")
    with pytest.raises(ValueError, match="steps"):
        ev.perturbation_curve(cnn, images, R, patch=2, steps=65)
    with pytest.raises(ValueError, match="fill"):
        ev.perturbation_curve(cnn, images, R, fill="gaussian")
    with pytest.raises(ValueError, match="output"):
        ev.perturbation_curve(cnn, images, R, output="loss")
    with pytest.raises(ValueError, match="non-empty"):
        ev.relevance_mass_accuracy(R, torch.zeros(16, 16, dtype=torch.bool))
    with pytest.raises(TypeError, match="boolean"):
        ev.pointing_game(R, torch.ones(16, 16))
    with pytest.raises(ValueError, match="does not fit"):
        ev.relevance_rank_accuracy(R, torch.ones(8, 8, dtype=torch.bool))
    with pytest.raises(ValueError, match="curves"):
        ev.aopc(torch.zeros(3))


def test_model_training_flag_restored(cnn, images):
    model = copy.deepcopy(cnn).train()
    ev.perturbation_curve(model, images, torch.randn_like(images), patch=4)
    assert all(m.training for m in model.modules())


def test_mean_se_and_paired_difference_match_the_formulas():
    v = torch.tensor([1.0, 2.0, 4.0, 7.0], dtype=torch.float64)
    m, se = ev.mean_se(v)
    assert m == pytest.approx(3.5)
    assert se == pytest.approx(v.std().item() / 2)
    a = torch.tensor([5.0, 6.0, 7.0, 8.0])
    b = a - torch.tensor([1.0, 1.1, 0.9, 1.0])  # b tracks a: the paired se is tiny
    d, d_se = ev.paired_difference(a, b)
    assert d == pytest.approx(1.0)
    assert d_se < 0.1 < ev.mean_se(a)[1]
    with pytest.raises(ValueError, match="two values"):
        ev.mean_se(torch.tensor([1.0]))
    with pytest.raises(ValueError, match="same shape"):
        ev.paired_difference(a, b[:3])


def test_bootstrap_interval_covers_the_mean_and_shrinks_with_n():
    g = torch.Generator().manual_seed(0)
    small = torch.randn(20, generator=g, dtype=torch.float64)
    large = torch.randn(2000, generator=g, dtype=torch.float64)
    lo, hi = ev.bootstrap_interval(small)
    assert lo < small.mean().item() < hi
    lo2, hi2 = ev.bootstrap_interval(large)
    assert hi2 - lo2 < (hi - lo) / 4
    # for a normal sample the 95% interval is close to mean ± 1.96 se
    m, se = ev.mean_se(large)
    assert lo2 == pytest.approx(m - 1.96 * se, abs=0.3 * se)
    # a ratio statistic on paired tensors resamples the same cases in both
    a = torch.arange(1.0, 11.0, dtype=torch.float64)
    lo3, hi3 = ev.bootstrap_interval((a, 2 * a), lambda u, v: u.mean(1) / v.mean(1))
    assert lo3 == pytest.approx(0.5) and hi3 == pytest.approx(0.5)
    with pytest.raises(ValueError, match="level"):
        ev.bootstrap_interval(small, level=1.5)


def test_ranking_stability_counts_first_places():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(50, generator=g, dtype=torch.float64)
    jitter = 1e-3 * torch.randn(50, generator=g, dtype=torch.float64)
    scores = {"clear winner": base + 5, "tie a": base, "tie b": base + jitter}
    share = ev.ranking_stability(scores, samples=500)
    assert share["clear winner"] == 1.0 and sum(share.values()) == pytest.approx(1.0)
    # the same values in another order: equal means, resamples split the first place
    share = ev.ranking_stability({"tie a": base, "tie b": base.flip(0)}, samples=500)
    assert 0.2 < share["tie a"] < 0.8
    lowest = ev.ranking_stability(scores, samples=100, higher_is_better=False)
    assert lowest["clear winner"] == 0.0
