"""Tests of the relation network, its shipped weights, its LRP explanation and the GT metrics."""

import copy

import pytest
import torch
from torch import nn

import lrp_teach as lt
from lrp_teach import vqa
from lrp_teach.datasets import clevr_lite as cl
from lrp_teach.rules import Epsilon

torch.set_num_threads(1)


def _randomize_batchnorm(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) * 0.4 - 0.2)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) * 0.2 - 0.1)
    return model


@pytest.fixture(scope="module")
def data():
    return cl.load_clevr_lite("val", n_scenes=6)


@pytest.fixture(scope="module")
def random_model():
    torch.manual_seed(0)
    return _randomize_batchnorm(vqa.RelationNetwork()).eval().double()


@pytest.fixture(scope="module")
def bias_free_model():
    """Every bias and BatchNorm shift zero: LRP conserves relevance exactly (up to ε)."""
    torch.manual_seed(1)
    model = _randomize_batchnorm(vqa.RelationNetwork(), seed=1).eval().double()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "bias" in name:
                p.zero_()
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.zero_()
    return model


@pytest.fixture(scope="module")
def shipped():
    return lt.pretrained.load("clevr_rn")


# ----------------------------------------------------------------------------- model


def test_shapes(data, random_model):
    image, tokens, lengths, _ = data.batch(torch.arange(5))
    image = image.double()
    out = random_model(image, tokens, lengths)
    assert out.shape == (5, len(cl.ANSWERS))
    objects = random_model.objects(image)
    assert objects.shape == (5, cl.GRID ** 2, 24 + 2)
    q = random_model.question(tokens, lengths)
    assert q.shape == (5, 64)
    n = cl.GRID ** 2
    assert random_model.pairs(objects, q).shape == (5, n, n, 64)


def test_each_cell_sees_exactly_its_own_pixels(random_model):
    image = torch.zeros(1, 3, cl.IMAGE_SIZE, cl.IMAGE_SIZE, dtype=torch.float64)
    base = random_model.cnn(image)
    changed = image.clone()
    changed[:, :, cl.CELL:2 * cl.CELL, 2 * cl.CELL:3 * cl.CELL] = 1.0  # cell (1, 2)
    diff = (random_model.cnn(changed) - base).abs().sum(1)[0]
    assert diff[1, 2] > 0
    diff[1, 2] = 0
    assert diff.max() == 0


def test_pair_input_is_the_linear_layer_on_the_concatenation(data, random_model):
    image, tokens, lengths, _ = data.batch(torch.arange(3))
    o = random_model.objects(image.double())
    q = random_model.question(tokens, lengths)
    n = o.shape[1]
    cat = torch.cat([o[:, :, None].expand(-1, -1, n, -1), o[:, None].expand(-1, n, -1, -1),
                     q[:, None, None].expand(-1, n, n, -1)], -1)
    assert torch.allclose(random_model.pair_input(o, q), random_model.g[0](cat), atol=1e-10)


def test_padding_does_not_change_the_answer(data, random_model):
    image, tokens, lengths, _ = data.batch(torch.arange(4))
    image = image.double()
    noisy = tokens.clone()
    for i, n in enumerate(lengths.tolist()):
        noisy[i, n:] = 5
    assert torch.allclose(random_model(image, tokens, lengths),
                          random_model(image, noisy, lengths))


def test_bad_input(data, random_model):
    image, tokens, lengths, _ = data.batch(torch.arange(2))
    with pytest.raises(ValueError, match="image"):
        random_model(image[:, :2].double(), tokens, lengths)
    with pytest.raises(ValueError, match="lengths"):
        random_model(image.double(), tokens, lengths * 0)
    with pytest.raises(ValueError, match="feature map"):
        random_model(torch.zeros(2, 3, 32, 32, dtype=torch.float64), tokens, lengths)
    with pytest.raises(TypeError, match="RelationNetwork"):
        vqa.explain(nn.Linear(2, 2), image, tokens, lengths)
    with pytest.raises(TypeError, match="integer"):
        vqa.explain(random_model, image.double(), tokens.double(), lengths)


# ----------------------------------------------------------------------- shipped weights


def test_shipped_weights_reach_their_stated_accuracies(shipped):
    from lrp_teach.train.clevr import accuracy_by_type

    metrics = lt.pretrained.entry("clevr_rn")["metrics"]
    test = cl.load_clevr_lite("test")
    measured = accuracy_by_type(shipped, test)
    for key, value in measured.items():
        assert abs(value - metrics[f"test_{key}"]) < 1e-3, key
    # the targets: overall >= 90 %, relational >= 80 %
    assert measured["accuracy"] >= 0.9 and measured["relational"] >= 0.8
    assert measured["non_relational"] >= 0.99


# -------------------------------------------------------------------------- explanation


def test_conservation_without_biases(data, bias_free_model):
    image, tokens, lengths, _ = data.batch(torch.arange(6))
    R = vqa.explain(bias_free_model, image.double(), tokens, lengths, epsilon=1e-9,
                    lstm_epsilon=1e-9)
    s = R.stages
    total = s["pixels"] + s["coordinates"] + s["words"]
    # the γ and z^B rules keep their default stabilizer 1e-6, hence atol 1e-6
    assert torch.allclose(total, R.logit, rtol=0, atol=1e-6)
    assert torch.allclose(s["pairs"], R.logit, rtol=0, atol=1e-8)
    assert torch.allclose(s["g input"], s["pairs"], rtol=0, atol=1e-8)
    assert torch.allclose(s["pixels"], s["cells"], rtol=0, atol=1e-6)
    assert torch.allclose(s["words"], s["question"], rtol=0, atol=1e-8)
    assert bool((R.logit.abs() > 1e-3).all())


def test_conservation_with_pair_geometry(data):
    """The pair geometry is a constant input of g: it keeps its relevance, reported apart."""
    torch.manual_seed(4)
    model = vqa.RelationNetwork(pair_geometry=True, g_layers=3, g_units=32).eval().double()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "bias" in name:
                p.zero_()
    image, tokens, lengths, _ = data.batch(torch.arange(5))
    R = vqa.explain(model, image.double(), tokens, lengths, epsilon=1e-9, lstm_epsilon=1e-9)
    s = R.stages
    assert bool((s["geometry"].abs() > 1e-6).all())
    torch.testing.assert_close(s["g input"], s["pairs"], rtol=0, atol=1e-8)
    torch.testing.assert_close(s["pixels"] + s["coordinates"] + s["words"] + s["geometry"],
                               R.logit, rtol=0, atol=1e-6)
    assert model.g[0].in_features == 2 * model.object_size + 64 + 3
    torch.testing.assert_close(model.pair_coords[1, 0], torch.tensor(
        [-2 / 3, 0.0, 2 / 3], dtype=torch.float64))          # cell 0 sits left of cell 1


def test_bookkeeping_is_consistent(data, random_model):
    image, tokens, lengths, _ = data.batch(torch.arange(6))
    R = vqa.explain(random_model, image.double(), tokens, lengths)
    out = random_model(image.double(), tokens, lengths)
    assert torch.allclose(R.logit, out.max(1).values)
    assert torch.allclose(R.pairs.sum((1, 2)), R.stages["pairs"])
    assert torch.allclose(R.objects.sum((1, 2)) + R.question.sum(1),
                          R.stages["g input"])
    assert torch.allclose(R.coordinates, R.stages["coordinates"])
    assert torch.allclose(R.image_map.sum((1, 2)), R.stages["pixels"])
    pad = torch.arange(tokens.shape[1])[None] >= lengths[:, None]
    assert bool((R.words[pad] == 0).all())
    report = R.report()
    for part in vqa.PARTS:
        assert part in report


def test_g_relevance_matches_the_layerwise_reference(data, random_model):
    """Explicit layer-by-layer LRP (lt.core.propagate) of g and f reproduces explain()."""
    image, tokens, lengths, _ = data.batch(torch.arange(3))
    m = random_model
    eps = 1e-6
    R = vqa.explain(m, image.double(), tokens, lengths, epsilon=eps)
    o = m.objects(image.double()).detach()
    q = m.question(tokens, lengths).detach()
    n = o.shape[1]
    cat = torch.cat([o[:, :, None].expand(-1, -1, n, -1), o[:, None].expand(-1, n, -1, -1),
                     q[:, None, None].expand(-1, n, n, -1)], -1)
    h = torch.relu(m.g[0](cat))
    pairs = torch.relu(m.g[2](h))
    pooled = pairs.sum((1, 2)) * m.pair_scale
    u = torch.relu(m.f[0](pooled))
    out = m.f[2](u)
    start = torch.zeros_like(out)
    t = R.target
    start[torch.arange(3), t] = out[torch.arange(3), t]
    r_u = lt.core.propagate(m.f[2], Epsilon(eps), u, start)
    r_pooled = lt.core.propagate(m.f[0], Epsilon(eps), pooled, r_u)
    # the scaled sum over pairs is proportional (LRP-0)
    r_pairs = pairs * m.pair_scale * (r_pooled / pooled.where(pooled != 0, torch.ones(())))[
        :, None, None]
    assert torch.allclose(r_pairs.sum(-1), R.pairs, atol=1e-9)
    flat = lambda v: v.reshape(-1, v.shape[-1])  # noqa: E731
    r_h = lt.core.propagate(m.g[2], Epsilon(eps), flat(h), flat(r_pairs))
    r_cat = lt.core.propagate(m.g[0], Epsilon(eps), flat(cat), r_h).reshape(cat.shape)
    d = o.shape[-1]
    r_objects = r_cat[..., :d].sum(2) + r_cat[..., d:2 * d].sum(1)
    r_q = r_cat[..., 2 * d:].sum((1, 2))
    assert torch.allclose(r_objects, R.objects, atol=1e-8)
    assert torch.allclose(r_q, R.question, atol=1e-8)


def test_words_equal_the_lstm_modules_explanation(data, random_model):
    """Word relevance = the explicit per-step LSTM-LRP of each unit of q, weighted by R_q / q."""
    image, tokens, lengths, _ = data.batch(torch.arange(3))
    m = random_model
    R = vqa.explain(m, image.double(), tokens, lengths)
    q = m.question(tokens, lengths).detach()
    hidden = q.shape[1]

    class Identity(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding, self.lstm = m.embedding, m.lstm
            self.head = nn.Linear(hidden, hidden, bias=False).double()
            with torch.no_grad():
                self.head.weight.copy_(torch.eye(hidden))

    ident = Identity()
    expected = torch.zeros_like(R.words)
    for k in range(hidden):
        rel = lt.lstm.explain_steps(ident, tokens, lengths, target=torch.full((3,), k),
                                    epsilon=1e-3)
        # explain(target=k) starts from R = q_k, and the identity read-out's ε-rule hands
        # q_k^2 / (q_k + ε sign q_k) to unit k; rescale that to the R_{q_k} of the RN
        qk = q[:, k]
        reached = qk * qk / (qk + 1e-3 * torch.where(qk >= 0, 1.0, -1.0))
        expected += rel.tokens * (R.question[:, k] / reached)[:, None]
    assert torch.allclose(R.words, expected, atol=1e-6)


def test_model_is_left_untouched(data, random_model):
    model = copy.deepcopy(random_model).train()
    before = copy.deepcopy(model.state_dict())
    image, tokens, lengths, _ = data.batch(torch.arange(2))
    vqa.explain(model, image.double(), tokens, lengths)
    vqa.grad_cam(model, image.double(), tokens, lengths)
    assert model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_explanation_is_batch_independent(data, random_model):
    image, tokens, lengths, _ = data.batch(torch.arange(4))
    full = vqa.explain(random_model, image.double(), tokens, lengths)
    one = vqa.explain(random_model, image[2:3].double(), tokens[2:3], lengths[2:3])
    assert torch.allclose(full.pixels[2:3], one.pixels, atol=1e-10)
    assert torch.allclose(full.words[2:3], one.words, atol=1e-10)


def test_grad_cam_peaks_in_its_best_cell(data, random_model):
    image, tokens, lengths, _ = data.batch(torch.arange(4))
    x = image.double()
    cells = vqa.grad_cam(random_model, x, tokens, lengths, upsample=False)
    cam = vqa.grad_cam(random_model, x, tokens, lengths)
    assert cells.shape == (4, cl.GRID, cl.GRID) and bool((cells >= 0).all())
    assert cam.shape == (4, cl.IMAGE_SIZE, cl.IMAGE_SIZE) and bool((cam >= -1e-12).all())
    for b in range(4):
        if cells[b].max() > 0:
            y, x_ = divmod(int(cam[b].argmax()), cl.IMAGE_SIZE)
            assert divmod(int(cells[b].argmax()), cl.GRID) == (y // cl.CELL, x_ // cl.CELL)


def test_image_model_repeats_the_questions(data, random_model):
    image, tokens, lengths, _ = data.batch(torch.arange(2))
    wrapped = vqa.ImageModel(random_model, tokens, lengths)
    x = image.double()
    assert torch.allclose(wrapped(torch.cat([x, x])), torch.cat([wrapped(x)] * 2))
    with pytest.raises(ValueError, match="multiple"):
        wrapped(x[:1].repeat(3, 1, 1, 1))


# ------------------------------------------------------------------ ground-truth metrics


def test_ground_truth_scores_on_hand_made_maps():
    mask = torch.zeros(2, 4, 4, dtype=torch.bool)
    mask[:, :2, :2] = True  # 4 of 16 pixels
    inside = torch.zeros(2, 4, 4)
    inside[0, :2, :2] = torch.tensor([[3.0, 1.0], [2.0, 0.5]])  # all inside the GT
    inside[1] = 1.0  # uniform map
    inside[1, 3, 3] = 2.0  # the maximum lies outside
    scores = vqa.ground_truth_scores(inside, {"single": mask})
    assert torch.allclose(scores["mass_single"], torch.tensor([1.0, 4 / 17], dtype=torch.float64))
    # map 1: the top 4 are the 2.0 outside, then ties of 1.0 broken by pixel index: (0,0),
    # (0,1) inside, (0,2) outside
    assert scores["rank_single"].tolist() == [1.0, 0.5]
    assert scores["pointing_single"].tolist() == [1.0, 0.0]
    negative = -inside.unsqueeze(1)  # "sum,pos" keeps only positive evidence
    assert scores.keys() == vqa.ground_truth_scores(negative, {"single": mask}).keys()
    assert vqa.ground_truth_scores(negative, {"single": mask})["mass_single"].sum() == 0


def test_evaluation_runs_on_every_method(data, random_model):
    model = copy.deepcopy(random_model).float()
    res = vqa.evaluate_explanations(model, data, torch.arange(4), batch_size=2)
    assert set(res) == set(vqa.METHODS)
    for scores in res.values():
        for key, value in scores.items():
            assert value.shape == (4,) and bool(((value >= 0) & (value <= 1)).all()), key
    with pytest.raises(ValueError, match="empty"):
        vqa.evaluate_explanations(model, data, torch.arange(0))


def test_exercise_checker_accepts_the_reference_and_rejects_a_wrong_split():
    def solution(o, q, w, b, R, eps):
        d = o.shape[-1]
        z = ((o @ w[:, :d].T)[:, :, None] + (o @ w[:, d:2 * d].T)[:, None]
             + (q @ w[:, 2 * d:].T + b)[:, None, None])
        s = R / (z + eps * torch.where(z >= 0, 1.0, -1.0))
        r_o = o * (s.sum(2) @ w[:, :d]) + o * (s.sum(1) @ w[:, d:2 * d])
        return r_o, q * (s.sum((1, 2)) @ w[:, 2 * d:])

    lt.exercises.check_pair_concat_relevance(solution)

    def first_member_only(o, q, w, b, R, eps):
        r_o, r_q = solution(o, q, w, b, R, eps)
        d = o.shape[-1]
        z = ((o @ w[:, :d].T)[:, :, None] + (o @ w[:, d:2 * d].T)[:, None]
             + (q @ w[:, 2 * d:].T + b)[:, None, None])
        s = R / (z + eps * torch.where(z >= 0, 1.0, -1.0))
        return o * (s.sum(2) @ w[:, :d]), r_q

    with pytest.raises(lt.exercises.ExerciseError, match="objects"):
        lt.exercises.check_pair_concat_relevance(first_member_only)


def test_cnn_composite_changes_only_the_pixel_rules(data, random_model):
    image, tokens, lengths, _ = data.batch(torch.arange(3))
    x = image.double()
    default = vqa.explain(random_model, x, tokens, lengths)
    gamma = vqa.explain(random_model, x, tokens, lengths,
                        cnn_composite=lt.composites.EpsilonGamma(gamma=0.25))
    assert torch.allclose(default.objects, gamma.objects)
    assert torch.allclose(default.words, gamma.words)
    # γ at the pixels gives R = x * c, so black pixels get none; z^B gives them some
    x = x.clone()
    x[:, :, :12, :12] = 0.0
    default = vqa.explain(random_model, x, tokens, lengths)
    gamma = vqa.explain(random_model, x, tokens, lengths,
                        cnn_composite=lt.composites.EpsilonGamma(gamma=0.25))
    assert gamma.image_map[:, :12, :12].abs().max() == 0
    assert default.image_map[:, :12, :12].abs().max() > 0


def test_centred_logits_keep_the_prediction(data, random_model):
    image, tokens, lengths, _ = data.batch(torch.arange(5))
    x = image.double()
    centred = vqa.centre_logits(random_model)
    out, out_c = random_model(x, tokens, lengths), centred(x, tokens, lengths)
    assert torch.allclose(out_c, out - out.mean(1, keepdim=True), atol=1e-10)
    assert torch.equal(out.argmax(1), out_c.argmax(1))
    assert torch.allclose(out.softmax(1), out_c.softmax(1), atol=1e-12)
    assert not torch.equal(random_model.f[-1].weight, centred.f[-1].weight)


# ------------------------------------------------------------- evaluation of chapter 8


def test_factored_forward_is_the_same_function(data):
    torch.manual_seed(3)
    for kwargs in ({}, {"g_layers": 3, "g_units": 32}, {"g_layers": 1}):
        model = _randomize_batchnorm(vqa.RelationNetwork(**kwargs)).eval().double()
        image, tokens, lengths, _ = data.batch(torch.arange(5))
        torch.testing.assert_close(model.factored(image.double(), tokens, lengths),
                                   model(image.double(), tokens, lengths), rtol=0, atol=1e-12)
    assert sum(isinstance(m, nn.Linear) for m in vqa.RelationNetwork(g_layers=3).g) == 3
    with pytest.raises(ValueError, match="g_layers"):
        vqa.RelationNetwork(g_layers=0)


def test_object_share_on_hand_made_maps():
    all_ = torch.zeros(1, 4, 4, dtype=torch.bool)
    all_[0, 0, :] = True                       # four object pixels
    single = torch.zeros_like(all_)
    single[0, 0, 0] = True
    R = torch.zeros(1, 4, 4)
    R[0, 0, 0], R[0, 0, 1], R[0, 3, 3] = 3.0, 1.0, 4.0   # 3 of the 4 on objects is on single
    out = vqa.ground_truth_scores(R, {"single": single, "all": all_})
    assert out["share_single"].item() == pytest.approx(0.75)
    assert out["mass_single"].item() == pytest.approx(3 / 8)
    assert "share_all" not in out
    off = torch.zeros(1, 4, 4)
    off[0, 3, 3] = 1.0                       # nothing on the objects: share 0
    assert vqa.ground_truth_scores(off, {"single": single, "all": all_})["share_single"] == 0


def test_controls(data):
    image = data.images[:3]
    assert torch.equal(vqa.image_map(None, image, None, None, None), image)
    c = vqa.contrast_map(None, image, None, None, None)
    assert c.shape == (3, cl.IMAGE_SIZE, cl.IMAGE_SIZE) and bool((c >= 0).all())
    masks = data.object_masks[:3].any(1)
    assert float(c[masks].mean()) > 5 * float(c[~masks].mean())  # objects stand out
    flat = torch.full((1, 3, 8, 8), 0.4)
    assert vqa.contrast_map(None, flat, None, None, None).abs().max() == 0


def test_randomized_resets_only_the_named_parts(random_model):
    model = random_model
    before = copy.deepcopy(model.state_dict())
    fg = vqa.randomized(model, ("f", "g"), seed=0)
    everything = vqa.randomized(model, ("f", "g", "cnn"), seed=0)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    for name, value in fg.state_dict().items():
        same = torch.equal(value, before[name])
        assert same == (not name.startswith(("f.", "g."))), name
    for name, value in everything.state_dict().items():
        if name.startswith("cnn.") and "num_batches" not in name:
            assert not torch.equal(value, before[name]), name
        if name.startswith(("lstm.", "embedding.")):
            assert torch.equal(value, before[name]), name
    assert torch.equal(everything.cnn[1].running_mean, torch.zeros(16, dtype=torch.float64))
    again = vqa.randomized(model, ("f", "g"), seed=0)
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in fg.state_dict().items())
    with pytest.raises(ValueError, match="parts"):
        vqa.randomized(model, ("lstm",))


def test_balanced_sample():
    data = cl.load_clevr_lite("test", n_scenes=60)
    eligible = torch.rand(len(data), generator=torch.Generator().manual_seed(0)) < 0.8
    idx = vqa.balanced_sample(data, eligible, per_type=12, seed=1)
    assert len(idx) == 60 and len(set(idx.tolist())) == 60 and bool(eligible[idx].all())
    assert torch.bincount(data.qtypes[idx]).tolist() == [12] * 5
    colour_ids = torch.tensor(cl.encode_question(list(cl.COLOUR_NAMES)))
    named = (data.questions[idx][:, :, None] == colour_ids).any(1).float().argmax(1)
    for k in range(5):   # 12 = 3 + 3 + 2 + 2 + 2 per colour
        counts = torch.bincount(named[data.qtypes[idx] == k], minlength=5)
        assert counts.tolist() == [3, 3, 2, 2, 2]
    assert int(torch.bincount(data.scene_index[idx]).max()) <= 2   # 60 questions, 60 scenes
    assert torch.equal(idx, vqa.balanced_sample(data, eligible, per_type=12, seed=1))
    with pytest.raises(ValueError, match="eligible"):
        vqa.balanced_sample(data, eligible, per_type=400)


def test_conventions(data, random_model, bias_free_model):
    image, tokens, lengths, _ = data.batch(torch.arange(4))
    x = image.double()
    runs = {name: vqa.explain(random_model, x, tokens, lengths, **vqa._convention(key))
            for name, key in vqa.CONVENTIONS.items()}
    base = runs["LRP γ + z^B"]
    for name in ("LRP ε + z⁺", "LRP γ"):            # ε in f and g: the same objects
        torch.testing.assert_close(runs[name].objects, base.objects)
        assert not torch.allclose(runs[name].pixels, base.pixels)
    assert not torch.allclose(runs["LRP α1β0"].objects, base.objects)
    # α1β0 everywhere on a bias-free model: positive relevance stays positive down to the
    # pixels, and the pixels and coordinates receive all that reaches the cells
    for t in range(3):
        target = torch.full((4,), t)
        logit = bias_free_model(x, tokens, lengths)[:, t]
        R = vqa.explain(bias_free_model, x, tokens, lengths, target, **vqa._convention("a1b0"))
        positive = logit > 0
        assert bool((R.pixels[positive] >= -1e-12).all())
        torch.testing.assert_close(R.stages["pixels"], R.stages["cells"], rtol=1e-4,
                                   atol=1e-10)


def test_poolings_known_values():
    R = torch.tensor([[[[3.0]], [[-4.0]], [[1.0]]]])   # one pixel, channels 3, -4, 1
    from lrp_teach import evaluation as ev

    want = {"sum,abs": 0.0, "sum,pos": 0.0, "max-norm": 4.0, "l1-norm": 8.0,
            "l2-norm": 26 ** 0.5, "l2-norm,sq": 26.0}
    assert set(want) == set(ev.POOLINGS)
    for pooling, value in want.items():
        assert ev.pool(R, pooling).item() == pytest.approx(value), pooling
    R2 = torch.tensor([[[[3.0]], [[-1.0]], [[1.0]]]])
    assert ev.pool(R2, "sum,abs").item() == 3.0 and ev.pool(-R2, "sum,pos").item() == 0.0


def test_evaluation_summary_is_consistent(data, random_model):
    model = copy.deepcopy(random_model).float()
    index = vqa.balanced_sample(data, torch.ones(len(data), dtype=torch.bool), per_type=2)
    scores = vqa.evaluation_scores(data, model, index, poolings=("sum,pos", "max-norm"))
    assert set(scores) == set(vqa.MODELS)
    summary = vqa.summarise_scores(scores, data.qtypes[index])
    a, b = "Gradient", "LRP γ"
    key = f"sum,pos|{a}|{b}|mass_single" if a < b else f"sum,pos|{b}|{a}|mass_single"
    diff = summary["paired"][key][0]
    ma = summary["mean"][f"trained|sum,pos|{a}|mass_single"][0]
    mb = summary["mean"][f"trained|sum,pos|{b}|mass_single"][0]
    assert diff == pytest.approx(ma - mb if a < b else mb - ma)
    # the controls do not depend on the model
    for m in ("random f, g", "random f, g, CNN"):
        assert summary["vs_random"][f"{m}|max-norm|image|mass_all"][0] == 0
    nested = {part: vqa._nest(v) for part, v in summary.items()}
    assert {part: vqa._flatten(v, 4) for part, v in nested.items()} == summary


def test_cached_table_matches_the_shipped_model(shipped):
    table = vqa.load_evaluation_table()
    assert table["n"] == 5 * table["per_type"] >= 1000
    test = cl.load_clevr_lite("test")
    index = torch.tensor(table["index"])
    rows = vqa.check_rows(table["per_type"], table["check"])
    method = {"LRP γ + z^B": vqa.METHODS["LRP γ + z^B"]}
    live = vqa.evaluate_explanations(shipped, test, index[rows], methods=method,
                                     target="answer")["LRP γ + z^B"]["mass_single"]
    cached = table["check_mean"]["trained|sum,pos|LRP γ + z^B|mass_single"][0]
    assert live.mean().item() == pytest.approx(cached, abs=2e-5)
