"""Tests of lrp_teach.lstm: an independent NumPy reference, conservation, padding, safety."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

import lrp_teach as lt
from lrp_teach import lstm as L

torch.set_num_threads(1)


# --------------------------------------------------------------------------- reference
# A per-sentence, per-time-step float64 reference written with dense matrices, in the
# style of Arras et al.'s NumPy code (messages i -> j summed over j), independent of the
# batched implementation.


def _lrp_linear(hin, w, b, hout, rout, n, eps, bf):
    """hin (D,), w (D, M), b (M,), hout (M,) full pre-activation, rout (M,) -> (D,)."""
    sign = np.where(hout >= 0, 1.0, -1.0)
    numer = w * hin[:, None] + bf * (b + eps * sign)[None, :] / n
    return (numer / (hout + eps * sign)[None, :] * rout[None, :]).sum(axis=1)


def _split_ref(rule, gate, signal, r, eps, bf):
    if rule == "all":
        return np.zeros_like(r), r.copy()
    if rule == "half":
        return r / 2, r / 2
    if rule == "prop":
        tot = gate + signal
        s = np.where(tot >= 0, 1.0, -1.0)
        rg = (gate + bf * eps * s / 2) / (tot + eps * s) * r
        rs = (signal + bf * eps * s / 2) / (tot + eps * s) * r
        return rg, rs
    tot = np.abs(gate) + np.abs(signal) + eps
    return (np.abs(gate) + bf * eps / 2) / tot * r, (np.abs(signal) + bf * eps / 2) / tot * r


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _direction_ref(x, w_ih, w_hh, b, r_final, eps, bf, rule):
    """One direction over x (L, E) in processing order; returns R_x (L, E), R_initial."""
    steps, e = x.shape
    hid = w_hh.shape[1]
    h = np.zeros((steps + 1, hid))  # h[t+1] is the state after step t; h[0] initial
    c = np.zeros((steps + 1, hid))
    gates = []
    for t in range(steps):
        z = w_ih @ x[t] + w_hh @ h[t] + b
        i, f = _sigmoid(z[:hid]), _sigmoid(z[hid : 2 * hid])
        g, o = np.tanh(z[2 * hid : 3 * hid]), _sigmoid(z[3 * hid :])
        c[t + 1] = f * c[t] + i * g
        h[t + 1] = o * np.tanh(c[t + 1])
        gates.append((z, i, f, g, o))
    rh = np.zeros((steps + 1, hid))
    rc = np.zeros((steps + 1, hid))
    rx = np.zeros((steps, e))
    rh[steps] = r_final
    eye = np.eye(hid)
    for t in range(steps - 1, -1, -1):
        z, i, f, g, o = gates[t]
        r_o, r_sig = _split_ref(rule, o, np.tanh(c[t + 1]), rh[t + 1], eps, bf)
        rc_t = rc[t + 1] + r_sig
        r_fc = _lrp_linear(f * c[t], eye, np.zeros(hid), c[t + 1], rc_t, 2 * hid, eps, bf)
        r_ig = _lrp_linear(i * g, eye, np.zeros(hid), c[t + 1], rc_t, 2 * hid, eps, bf)
        r_f, rc[t] = _split_ref(rule, f, c[t], r_fc, eps, bf)
        r_i, r_g = _split_ref(rule, i, g, r_ig, eps, bf)
        r_z = np.concatenate([r_i, r_f, r_g, r_o])
        rx[t] = _lrp_linear(x[t], w_ih.T, b, z, r_z, e + hid, eps, bf)
        rh[t] = _lrp_linear(h[t], w_hh.T, b, z, r_z, e + hid, eps, bf)
    return rx, rh[0].sum() + rc[0].sum(), h[steps]


def reference_lrp(model, x, target, eps=1e-3, bf=0.0, rule="all"):
    """LRP of one sentence x (L, E) (already embedded) -> (R_x (L, E), R_initial, score)."""
    lstm, lin = model.lstm, model.linear

    def weights(suffix):
        w_ih = getattr(lstm, "weight_ih_l0" + suffix).detach().double().numpy()
        w_hh = getattr(lstm, "weight_hh_l0" + suffix).detach().double().numpy()
        b_ih = getattr(lstm, "bias_ih_l0" + suffix).detach().double().numpy()
        return w_ih, w_hh, b_ih + getattr(lstm, "bias_hh_l0" + suffix).detach().double().numpy()

    hid = lstm.hidden_size
    dirs = 2 if lstm.bidirectional else 1
    # forward pass of both directions to get the features
    finals = []
    for d in range(dirs):
        xs = x if d == 0 else x[::-1]
        w_ih, w_hh, b = weights("_reverse" if d else "")
        _, _, h_last = _direction_ref(xs, w_ih, w_hh, b, np.zeros(hid), eps, bf, rule)
        finals.append(h_last)
    feat = np.concatenate(finals)
    w_out = lin.weight.detach().double().numpy()
    b_out = lin.bias.detach().double().numpy()
    logits = w_out @ feat + b_out
    r_out = np.zeros_like(logits)
    r_out[target] = logits[target]
    r_feat = _lrp_linear(feat, w_out.T, b_out, logits, r_out, dirs * hid, eps, bf)
    r_x = np.zeros_like(x)
    r_init = 0.0
    for d in range(dirs):
        xs = x if d == 0 else x[::-1]
        w_ih, w_hh, b = weights("_reverse" if d else "")
        r_fin = r_feat[d * hid : (d + 1) * hid]
        rx, ri, _ = _direction_ref(xs, w_ih, w_hh, b, r_fin, eps, bf, rule)
        r_x += rx if d == 0 else rx[::-1]
        r_init += ri
    return r_x, r_init, logits[target]


# --------------------------------------------------------------------------- fixtures


def _classifier(bidirectional: bool, seed: int = 0) -> L.LSTMClassifier:
    torch.manual_seed(seed)
    model = L.LSTMClassifier(23, 5, 6, 3, bidirectional=bidirectional)
    with torch.no_grad():  # larger weights than the default init, so the gates vary
        for p in model.lstm.parameters():
            p.mul_(3.0)
    return model.eval()


def _batch(seed: int = 1, lengths=(7, 3, 1, 5, 7, 2)):
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.tensor(lengths)
    tokens = torch.randint(1, 23, (len(lengths), int(lengths.max())), generator=gen)
    tokens[torch.arange(tokens.shape[1])[None] >= lengths[:, None]] = 0
    return tokens, lengths


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("rule", L.RULES)
@pytest.mark.parametrize("bias_factor", [0.0, 1.0])
def test_matches_numpy_reference(bidirectional, rule, bias_factor):
    model = _classifier(bidirectional)
    tokens, lengths = _batch()
    target = torch.tensor([0, 1, 2, 0, 1, 2])
    res = L.explain(model, tokens, lengths, target, bias_factor=bias_factor, rule=rule)
    emb = model.embedding.weight.detach().double().numpy()
    for k in range(len(lengths)):
        n = int(lengths[k])
        x = emb[tokens[k, :n].numpy()]
        r_x, r_init, score = reference_lrp(model, x, int(target[k]), bf=bias_factor, rule=rule)
        # "prop" can produce huge opposite-signed relevances (a factor sum near zero); its
        # tolerance is relative to their size, all other rules use 1e-10 absolute
        tol = 1e-10 * (max(1.0, np.abs(r_x).max()) if rule == "prop" else 1.0)
        np.testing.assert_allclose(res.input[k, :n].numpy(), r_x, rtol=0, atol=tol)
        if n < tokens.shape[1]:
            assert res.input[k, n:].abs().max().item() == 0.0
        assert abs(res.initial[k].item() - r_init) < tol
        assert abs(res.score[k].item() - score) < 1e-10


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("rule", L.RULES)
def test_conservation_with_bias_factor_one(bidirectional, rule):
    model = _classifier(bidirectional, seed=3)
    tokens, lengths = _batch(seed=4)
    res = L.explain(model, tokens, lengths, target=1, bias_factor=1.0, rule=rule)
    total = res.tokens.sum(1) + res.initial
    scale = 1.0 + res.input.abs().sum((1, 2))
    assert ((total - res.score).abs() / scale).max().item() < 1e-10
    if rule != "prop":
        assert res.absorbed.abs().max().item() < 1e-10


def test_bias_factor_zero_absorbs_and_leaves_no_initial_relevance():
    model = _classifier(True)
    tokens, lengths = _batch()
    res = L.explain(model, tokens, lengths, target=0)
    # zero initial states and bias_factor 0: nothing can reach the initial state
    assert res.initial.abs().max().item() == 0.0
    assert res.absorbed.abs().min().item() > 1e-6


@pytest.mark.parametrize("bidirectional", [False, True])
def test_explained_forward_equals_nn_lstm(bidirectional):
    model = _classifier(bidirectional)
    tokens, lengths = _batch()
    with torch.no_grad():
        expected = model(tokens, lengths).double()
    got = L.scores(model, tokens, lengths)
    assert (got - expected).abs().max().item() < 1e-6
    res = L.explain(model, tokens, lengths)
    assert torch.equal(res.target, expected.argmax(1))
    assert (res.score - expected.max(1).values).abs().max().item() < 1e-6


@pytest.mark.parametrize("bidirectional", [False, True])
def test_padding_invariance(bidirectional):
    model = _classifier(bidirectional)
    tokens, lengths = _batch()
    batch = L.explain(model, tokens, lengths, target=2, bias_factor=1.0)
    for k in range(len(lengths)):
        n = int(lengths[k])
        alone = L.explain(model, tokens[k : k + 1, :n], None, target=2, bias_factor=1.0)
        assert (alone.input[0] - batch.input[k, :n]).abs().max().item() < 1e-12
        assert abs(alone.initial[0] - batch.initial[k]).item() < 1e-12
        # padding tokens other than 0 must not matter either
    noisy = tokens.clone()
    pad = torch.arange(tokens.shape[1])[None] >= lengths[:, None]
    noisy[pad] = 7
    other = L.explain(model, noisy, lengths, target=2, bias_factor=1.0)
    assert (other.input - batch.input).abs().max().item() == 0.0


def test_regressor_real_inputs_and_reference():
    torch.manual_seed(5)
    model = L.LSTMRegressor(3, 8, n_outputs=2, bidirectional=True).eval()
    x = torch.randn(4, 6, 3)
    lengths = torch.tensor([6, 2, 4, 1])
    res = L.explain(model, x, lengths, target=1, bias_factor=1.0)
    for k in range(4):
        n = int(lengths[k])
        r_x, r_init, score = reference_lrp(model, x[k, :n].double().numpy(), 1, bf=1.0)
        np.testing.assert_allclose(res.input[k, :n].numpy(), r_x, atol=1e-10, rtol=0)
        assert abs(res.score[k].item() - score) < 1e-10


def test_model_untouched():
    model = _classifier(True)
    model.train()
    before = copy.deepcopy(model.state_dict())
    flags = [p.requires_grad for p in model.parameters()]
    tokens, lengths = _batch()
    L.explain(model, tokens, lengths)
    L.gradient(model, tokens, lengths)
    L.integrated_gradients(model, tokens, lengths, steps=4)
    L.occlusion(model, tokens, lengths)
    assert model.training
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
        assert v.dtype == before[k].dtype


class _Stacked(nn.Module):
    """Two bidirectional layers, time-major input, mean over the output sequence."""

    def __init__(self, **kw):
        super().__init__()
        self.lstm = nn.LSTM(3, 4, num_layers=2, bidirectional=True, **kw)
        self.linear = nn.Linear(8, 2)

    def forward(self, x):
        out, _ = self.lstm(x.transpose(0, 1))
        return self.linear(out.mean(0))


def test_other_configurations_are_explained_as_written():
    torch.manual_seed(3)
    model = _Stacked().double()
    x = torch.randn(3, 6, 3, dtype=torch.float64)
    res = L.explain(model, x, target=1, bias_factor=1.0)
    assert res.input.shape == x.shape
    torch.testing.assert_close(res.score, model(x)[:, 1].detach())
    # with bias_factor 1 every share is kept: inputs + initial states = score
    gap = (res.input.flatten(1).sum(1) + res.initial - res.score).abs().max().item()
    assert gap < 1e-10


def test_unsupported_configurations_raise():
    model = nn.Sequential()
    model.lstm = nn.LSTM(3, 4, batch_first=True, proj_size=2)

    class Proj(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(3, 4, batch_first=True, proj_size=2)
            self.linear = nn.Linear(2, 1)

        def forward(self, x):
            return self.linear(self.lstm(x)[1][0][0])

    with pytest.raises(TypeError, match="proj_size"):
        L.explain(Proj(), torch.randn(2, 4, 3))


def test_bad_inputs_raise():
    model = _classifier(False)
    tokens, lengths = _batch()
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        L.explain(model, tokens.float(), lengths)
    with pytest.raises(ValueError, match="token indices"):
        L.explain(model, tokens + 100, lengths)
    with pytest.raises(ValueError, match="lengths must lie"):
        L.explain(model, tokens, lengths + 5)
    with pytest.raises(ValueError, match="lengths must be"):
        L.explain(model, tokens, lengths[:2])
    with pytest.raises(ValueError, match="target 3 is out of range"):
        L.explain(model, tokens, lengths, target=3)
    with pytest.raises(ValueError, match="target has 2 entries"):
        L.explain(model, tokens, lengths, target=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="rule"):
        L.explain(model, tokens, lengths, rule="gamma")
    reg = L.LSTMRegressor(3, 4)
    with pytest.raises(ValueError, match=r"\(B, T, 3\)"):
        L.explain(reg, torch.randn(2, 5, 4))


def test_gradient_and_ig_and_occlusion():
    torch.manual_seed(2)
    model = L.LSTMRegressor(3, 5).eval()
    x = torch.randn(3, 6, 3, dtype=torch.float64)
    lengths = torch.tensor([6, 4, 2])
    ref = copy.deepcopy(model).double()
    xr = x.clone().requires_grad_(True)
    ref(xr, lengths)[:, 0].sum().backward()
    grad = L.gradient(model, x, lengths, target=0)
    assert (grad - xr.grad).abs().max().item() < 1e-10
    assert (L.gradient_x_input(model, x, lengths, 0) - xr.grad * x).abs().max().item() < 1e-10
    ig = L.integrated_gradients(model, x, lengths, 0, steps=400)
    with torch.no_grad():
        x0 = torch.zeros_like(x)
        delta = ref(x, lengths)[:, 0] - ref(x0, lengths)[:, 0]
    assert (ig.sum((1, 2)) - delta).abs().max().item() < 1e-4
    occ = L.occlusion(model, x, lengths, 0)
    with torch.no_grad():
        x2 = x.clone()
        x2[:, 1] = 0
        drop = ref(x, lengths)[:, 0] - ref(x2, lengths)[:, 0]
    assert (occ[:, 1, 0] - drop).abs().max().item() < 1e-10
    assert occ[2, 2:].abs().max().item() == 0.0  # padding gets nothing
    only_value = L.occlusion(model, x, lengths, 0, dims=[0])
    assert only_value.shape == (3, 6, 1)
    with pytest.raises(ValueError, match="features must lie"):
        L.occlusion(model, x, lengths, 0, dims=[3])


def test_cell_step_matches_explain_on_one_step():
    model = _classifier(False)
    tokens = torch.tensor([[4]])
    res = L.explain(model, tokens, target=1, bias_factor=1.0)
    w_ih, w_hh = model.lstm.weight_ih_l0.double(), model.lstm.weight_hh_l0.double()
    b = model.lstm.bias_ih_l0.double() + model.lstm.bias_hh_l0.double()
    x = model.embedding.weight[4].double()[None]
    zero = torch.zeros(1, 6, dtype=torch.float64)
    feat = L.scores(model, tokens)  # not needed for the check, only sanity of shapes
    assert feat.shape == (1, 3)
    # relevance of h from the output layer, by the epsilon rule with bias_factor 1
    with torch.no_grad():
        h = L._features(L._parts(model), x[None], torch.tensor([1]), torch.float64)[0]
        w_out, b_out = model.linear.weight.double(), model.linear.bias.double()
        z = h @ w_out.T + b_out
        start = torch.zeros_like(z)
        start[0, 1] = z[0, 1]
        (r_h,) = L._epsilon_linear([h], [w_out], z, b_out, start, 1e-3, 1.0)
        r_x, r_h0, r_c0 = L.cell_step_relevance(
            x, zero, zero, w_ih, w_hh, b, r_h, torch.zeros_like(r_h), bias_factor=1.0
        )
    assert (r_x - res.input[0]).abs().max().item() < 1e-12
    assert abs((r_h0.sum() + r_c0.sum()) - res.initial[0]).item() < 1e-12


def test_deletion_curve():
    model = _classifier(True)
    tokens, lengths = _batch()
    with torch.no_grad():
        pred = model(tokens, lengths).argmax(1)
    rel = L.explain(model, tokens, lengths, pred).tokens
    curve = L.deletion_curve(model, tokens, lengths, rel, pred, 3)
    assert curve.shape == (4,)
    assert curve[0].item() == 1.0
    with pytest.raises(ValueError, match="order"):
        L.deletion_curve(model, tokens, lengths, rel, pred, 3, order="random")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    model = _classifier(True)
    tokens, lengths = _batch()
    cpu = L.explain(model, tokens, lengths, target=1)
    gpu = L.explain(copy.deepcopy(model).cuda(), tokens.cuda(), lengths.cuda(), target=1)
    assert (gpu.input.cpu() - cpu.input).abs().max().item() < 1e-10


# --------------------------------------------------------------------------- shipped weights


def test_shipped_arithmetic_models():
    from lrp_teach.datasets.arithmetic import make_arithmetic

    for op in ("add", "sub"):
        name = f"arith_{op}_lstm"
        model = lt.pretrained.load(name)  # verifies the SHA-256
        test = make_arithmetic(2000, op=op, length=20, seed=12345)
        with torch.no_grad():
            mse = nn.functional.mse_loss(model(test.x)[:, 0], test.y).item()
        recorded = lt.pretrained.entry(name)["metrics"]["test_mse"]
        assert mse < 1e-3
        assert abs(mse - recorded) < 1e-6


def test_shipped_sentiment_model():
    from lrp_teach.train.lstm_models import sentiment_test_data

    model = lt.pretrained.load("sentiment_bilstm")
    test = sentiment_test_data()
    with torch.no_grad():
        pred = model(test.tokens, test.lengths).argmax(1)
    acc = (pred == test.clean_labels).float().mean().item()
    assert acc >= 0.95
    assert abs(acc - lt.pretrained.entry("sentiment_bilstm")["metrics"]["test_accuracy"]) < 1e-3
    # the model errs on some double negations: something for the chapter to explain
    double = torch.tensor([t == "double" for t in test.templates])
    assert (pred[double] != test.clean_labels[double]).any()


class _UserModel(nn.Module):
    """A user's classifier with its own attribute names and forward."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(23, 5)
        self.rnn = nn.LSTM(5, 6, batch_first=True, bidirectional=True)
        self.drop = nn.Dropout(0.3)
        self.out = nn.Linear(12, 3)

    def forward(self, tokens, lengths):
        packed = nn.utils.rnn.pack_padded_sequence(
            self.emb(tokens), lengths, batch_first=True, enforce_sorted=False
        )
        _, (h_n, _) = self.rnn(packed)
        return self.out(self.drop(torch.cat([h_n[0], h_n[1]], dim=1)))


def test_users_own_model():
    torch.manual_seed(9)
    model = _UserModel().eval()
    tokens, lengths = _batch()
    with torch.no_grad():
        expected = model(tokens, lengths).double()
    assert (L.scores(model, tokens, lengths) - expected).abs().max().item() < 1e-6
    res = L.explain(model, tokens, lengths, target=0, bias_factor=1.0)
    assert (res.tokens.sum(1) + res.initial - res.score).abs().max().item() < 1e-10


class _SameFunction(nn.Module):
    """The bidirectional classifier's function, written differently: it reads the output
    sequence (not h_n), puts the backward direction first and uses the columns of the
    output layer in that order."""

    def __init__(self, clf: L.LSTMClassifier):
        super().__init__()
        self.emb, self.rnn = clf.embedding, clf.lstm
        hidden = clf.lstm.hidden_size
        self.head = nn.Linear(2 * hidden, clf.linear.out_features)
        with torch.no_grad():
            w = clf.linear.weight
            self.head.weight.copy_(torch.cat([w[:, hidden:], w[:, :hidden]], 1))
            self.head.bias.copy_(clf.linear.bias)

    def forward(self, tokens):
        out, _ = self.rnn(self.emb(tokens))
        hidden = self.rnn.hidden_size
        feat = torch.cat([out[:, 0, hidden:], out[:, -1, :hidden]], dim=1)
        return self.head(feat)


def test_same_function_written_differently_gets_the_same_relevance():
    clf = _classifier(True).double()
    tokens, _ = _batch(lengths=(7, 7, 7))
    other = _SameFunction(clf).double()
    torch.testing.assert_close(other(tokens), clf(tokens))
    a = L.explain(clf, tokens, None, target=1)
    b = L.explain(other, tokens, None, target=1)
    torch.testing.assert_close(b.input, a.input, atol=1e-12, rtol=0)
    r_numpy = torch.stack([torch.as_tensor(reference_lrp(clf, clf.embedding.weight.detach()
                                                         [tokens[k]].numpy(), 1)[0])
                           for k in range(3)])
    torch.testing.assert_close(a.input, r_numpy.to(a.input.dtype), atol=1e-10, rtol=0)
