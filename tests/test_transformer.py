"""Transformers in the engine: LayerNorm/RMSNorm, softmax, attention, AttnLRP and CP-LRP.

Each rule is checked against an explicit float64 reference written as relevance messages
(tests/reference_transformer.py), conservation where theory says it holds, the relevance
budget otherwise, and, where LXT 2.1 is installed, against LXT's own rule functions.
"""

from __future__ import annotations

import importlib.util
import pathlib

import numpy as np
import pytest
import reference_transformer as ref
import torch
from torch import nn

import lrp_teach as lt
from lrp_teach.products import matmul_uniform

torch.set_num_threads(1)
D, H, V, T = 12, 3, 17, 6


class Classifier(nn.Module):
    """Embedding -> nn.TransformerEncoder -> mean over positions -> Linear."""

    def __init__(self, norm_first=False, activation="relu", batch_first=True, layers=2,
                 bias=True, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.batch_first = batch_first
        self.emb = nn.Embedding(V, D)
        layer = nn.TransformerEncoderLayer(D, H, 2 * D, dropout=0.1, activation=activation,
                                           norm_first=norm_first, batch_first=batch_first,
                                           bias=bias)
        self.enc = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(D, 3, bias=bias)
        with torch.no_grad():  # LayerNorms away from their (1, 0) initialisation
            for m in self.modules():
                if isinstance(m, nn.LayerNorm):
                    m.weight.uniform_(0.5, 1.5)
                    if m.bias is not None:
                        m.bias.normal_(0, 0.3)
                if isinstance(m, nn.MultiheadAttention) and m.in_proj_bias is not None:
                    m.in_proj_bias.normal_(0, 0.2)
        self.double().eval()

    def forward(self, ids, pad=None):
        x = self.emb(ids)
        if not self.batch_first:
            x = x.transpose(0, 1)
        h = self.enc(x, src_key_padding_mask=pad)
        if not self.batch_first:
            h = h.transpose(0, 1)
        return self.head(h.mean(1))


def _data(seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, V, (3, T), generator=g)
    pad = torch.zeros(3, T, dtype=torch.bool)
    pad[1, 4:] = True
    pad[2, 5:] = True
    return ids, pad


def _budget(report) -> torch.Tensor:
    return sum(e.absorbed for e in report.layers)


# --------------------------------------------------------------------------- whole models
@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize("mode", ["attnlrp", "cp"])
def test_encoder_matches_the_explicit_reference(norm_first, activation, mode):
    model = Classifier(norm_first, activation)
    ids, pad = _data()
    comp = lt.composites.AttnLRP(0.01) if mode == "attnlrp" else lt.composites.CPLRP(0.01)
    res = lt.attribute(model, (ids, pad), 2, comp)
    want, logits = ref.classifier_reference(model, ids, pad, 2, 0.01, mode)
    np.testing.assert_allclose(res.output.numpy(), logits, rtol=0, atol=1e-12)
    assert res.inputs[0].shape == (3, T)
    np.testing.assert_allclose(res.inputs[0].numpy(), want, rtol=0, atol=1e-10)
    assert np.abs(want).max() > 1e-3  # the reference is not trivially zero
    if mode == "attnlrp":  # the rules differ
        other, _ = ref.classifier_reference(model, ids, pad, 2, 0.01, "cp")
        assert np.abs(other - want).max() > 1e-4


def test_product_epsilon_matches_the_reference():
    model = Classifier(layers=1)
    ids, pad = _data()
    R = lt.explain(model, (ids, pad), 0, lt.composites.AttnLRP(0.0, product_epsilon=0.05))[0]
    want, _ = ref.classifier_reference(model, ids, pad, 0, 0.0, "attnlrp", peps=0.05)
    np.testing.assert_allclose(R.numpy(), want, rtol=0, atol=1e-10)
    plain, _ = ref.classifier_reference(model, ids, pad, 0, 0.0, "attnlrp")
    assert np.abs(plain - want).max() > 1e-6


def test_batch_first_false_and_padding_are_honoured():
    ids, pad = _data()
    a = Classifier(batch_first=True)
    b = Classifier(batch_first=False)
    b.load_state_dict(a.state_dict())
    comp = lt.composites.AttnLRP(0.0)
    ra, rb = lt.explain(a, (ids, pad), 1, comp)[0], lt.explain(b, (ids, pad), 1, comp)[0]
    torch.testing.assert_close(ra, rb, rtol=0, atol=1e-12)
    # the mask is used: without it sentence 1 is explained differently, the others not
    rc = lt.explain(a, (ids, torch.zeros_like(pad)), 1, comp)[0]
    assert (rc[1] - ra[1]).abs().max() > 1e-4
    torch.testing.assert_close(rc[0], ra[0], rtol=0, atol=1e-12)
    # and a padded token's id changes no other sentence's relevance
    ids2 = ids.clone()
    ids2[1, 5] = (ids[1, 5] + 1) % V
    rd = lt.explain(a, (ids2, pad), 1, comp)[0]
    torch.testing.assert_close(rd[[0, 2]], ra[[0, 2]], rtol=0, atol=0)


def test_cp_lrp_conserves_on_a_bias_free_model():
    model = Classifier(activation="gelu", bias=False)
    ids, pad = _data()
    R, report = lt.explain(model, (ids, pad), 0, lt.composites.CPLRP(0.0), check=True)
    torch.testing.assert_close(R[0].sum(1), report.logit, rtol=0, atol=1e-10)
    assert report.logit.abs().min() > 1e-3
    # AttnLRP does not conserve there: the softmax absorbs
    R2, rep2 = lt.explain(model, (ids, pad), 0, lt.composites.AttnLRP(0.0), check=True)
    soft = sum(e.absorbed for e in rep2.layers if e.name.endswith(".softmax"))
    assert soft.abs().min() > 1e-6
    torch.testing.assert_close(R2[0].sum(1) + soft, rep2.logit, rtol=0, atol=1e-10)


@pytest.mark.parametrize("norm_first", [False, True])
def test_relevance_budget_tokens_biases_softmax(norm_first):
    model = Classifier(norm_first, "gelu")
    ids, pad = _data()
    R, report = lt.explain(model, (ids, pad), 1, lt.composites.AttnLRP(0.05), check=True)
    absorbed = _budget(report)
    torch.testing.assert_close(R[0].sum(1) + absorbed, report.logit, rtol=0, atol=1e-10)
    names = [e.name for e in report.layers]
    assert "enc.layers.0.self_attn.softmax" in names
    assert "enc.layers.1.norm2" in names
    ln = report["enc.layers.0.norm1"]  # LayerNorm absorbs exactly its bias's share
    assert ln.absorbed.abs().max() > 1e-6


def test_without_an_attention_rule_attention_is_refused():
    model = Classifier(layers=1)
    ids, pad = _data()
    with pytest.raises(TypeError, match="AttnLRP"):
        lt.explain(model, (ids, pad), 0, lt.composites.EpsilonGamma())


def test_engine_leaves_the_model_unchanged_and_output_exact():
    model = Classifier()
    ids, pad = _data()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res = lt.attribute(model, (ids, pad), 0, lt.composites.AttnLRP())
    with torch.no_grad():  # torch's own fast path (nested tensors off in this model)
        out = model(ids, pad)
    torch.testing.assert_close(res.output, out, rtol=0, atol=1e-12)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


def test_transformer_encoder_with_nested_tensor_fast_path_enabled():
    torch.manual_seed(3)
    layer = nn.TransformerEncoderLayer(D, 2, 2 * D, batch_first=True)
    enc = nn.TransformerEncoder(layer, 2)  # enable_nested_tensor=True by default

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc, self.head = enc, nn.Linear(D, 2)

        def forward(self, x, pad):
            return self.head(self.enc(x, src_key_padding_mask=pad).mean(1))

    m = M().double().eval()
    x = torch.randn(3, T, D, dtype=torch.float64)
    _, pad = _data()
    res = lt.attribute(m, (x, pad), 0, lt.composites.AttnLRP(0.0), check=True)
    with torch.enable_grad():  # the slow path, which the engine must take too
        ref_out = m(x.requires_grad_(), pad)
    torch.testing.assert_close(res.output, ref_out.detach(), rtol=0, atol=1e-12)
    r = res.inputs[0]
    torch.testing.assert_close(r.sum((1, 2)) + _budget(res.report), res.logit, rtol=0,
                               atol=1e-10)


# --------------------------------------------------------------------------- single rules
class _NormNet(nn.Module):
    def __init__(self, norm):
        super().__init__()
        torch.manual_seed(4)
        self.fc1, self.norm, self.fc2 = nn.Linear(5, 8), norm, nn.Linear(8, 3)
        with torch.no_grad():
            self.norm.weight.uniform_(0.5, 1.5)
            if getattr(self.norm, "bias", None) is not None:
                self.norm.bias.normal_(0, 0.5)
        self.double()

    def forward(self, x):
        return self.fc2(torch.relu(self.norm(self.fc1(x))))


class _DetachedLN(nn.Module):
    def __init__(self, ln):
        super().__init__()
        self.ln = ln

    def forward(self, x):
        mu = x.mean(-1, keepdim=True)
        sd = ((x - mu) ** 2).mean(-1, keepdim=True).add(self.ln.eps).sqrt()
        return (x - mu) / sd.detach() * self.ln.weight + self.ln.bias


def test_layer_norm_identity_rule_reference_and_gradient_x_input():
    net = _NormNet(nn.LayerNorm(8))
    x = torch.randn(4, 5, dtype=torch.float64)
    R = lt.explain(net, x, 1, lt.composites.Uniform(lt.rules.Epsilon(0.0)))
    # explicit messages
    xs = x.numpy()
    w1, b1, w2, b2 = (ref._np(p) for p in (net.fc1.weight, net.fc1.bias, net.fc2.weight,
                                          net.fc2.bias))
    h = ref.linear_fwd(xs, w1, b1)
    ln = (ref._np(net.norm.weight), ref._np(net.norm.bias), net.norm.eps)
    y = ref.ln_fwd(h, *ln)
    a = np.maximum(y, 0)
    z = ref.linear_fwd(a, w2, b2)
    r = np.zeros_like(z)
    r[:, 1] = z[:, 1]
    r = ref.linear_rel(a, w2, b2, r, 0.0)
    r = ref.ln_rel(h, ln[0], ln[1], ln[2], r)
    want = ref.linear_rel(xs, w1, b1, r, 0.0)
    np.testing.assert_allclose(R.numpy(), want, rtol=0, atol=1e-10)
    # = Gradient x Input of the same model with the standard deviation detached
    gi_net = _NormNet(nn.LayerNorm(8))
    gi_net.load_state_dict(net.state_dict())
    gi_net.norm = _DetachedLN(gi_net.norm)
    xg = x.clone().requires_grad_()
    gi_net(xg)[:, 1].sum().backward()
    torch.testing.assert_close(R, xg * xg.grad, rtol=0, atol=1e-10)
    # and not the plain gradient of the LayerNorm
    xp = x.clone().requires_grad_()
    net(xp)[:, 1].sum().backward()
    assert (R - xp * xp.grad).abs().max() > 1e-4


def test_rms_norm_identity_rule():
    net = _NormNet(nn.RMSNorm(8, eps=1e-6))
    x = torch.randn(4, 5, dtype=torch.float64)
    R, report = lt.explain(net, x, 0, lt.composites.Uniform(lt.rules.Epsilon(0.0)),
                           check=True)

    class Detached(nn.Module):
        def forward(self, h):
            rms = h.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt()
            return h / rms.detach() * net.norm.weight

    xg = x.clone().requires_grad_()
    h = Detached()(net.fc1(xg))
    net.fc2(torch.relu(h))[:, 0].sum().backward()
    torch.testing.assert_close(R, xg * xg.grad, rtol=0, atol=1e-10)
    torch.testing.assert_close(report["norm"].absorbed, torch.zeros(4, dtype=torch.float64),
                               rtol=0, atol=1e-12)  # RMSNorm without bias conserves


class _SoftNet(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(5)
        self.fc1, self.fc2 = nn.Linear(4, 6), nn.Linear(6, 2, bias=False)
        self.double()

    def forward(self, x):
        return self.fc2(torch.softmax(self.fc1(x), dim=1))


def test_softmax_rule_reference_and_absorption():
    net = _SoftNet()
    x = torch.randn(5, 4, dtype=torch.float64)
    R, report = lt.explain(net, x, 0, lt.composites.AttnLRP(0.0), check=True)
    xs = x.numpy()
    w1, b1, w2 = ref._np(net.fc1.weight), ref._np(net.fc1.bias), ref._np(net.fc2.weight)
    u = ref.linear_fwd(xs, w1, b1)
    s = ref.softmax(u)
    z = s @ w2.T
    r = np.zeros_like(z)
    r[:, 0] = z[:, 0]
    r_s = ref.linear_rel(s, w2, None, r, 0.0)
    r_u = ref.softmax_rel(u, r_s)
    want = ref.linear_rel(xs, w1, b1, r_u, 0.0)
    np.testing.assert_allclose(R.numpy(), want, rtol=0, atol=1e-10)
    # the rule in Gradient x Input form is the plain gradient: R_u = u * J^T (R_s / s)
    np.testing.assert_allclose(
        r_u, u * (s * (r_s / s) - s * (s * (r_s / s)).sum(1, keepdims=True)), atol=1e-12)
    # what it absorbs: sum R_s - sum R_u; the fc1 entry absorbs the bias share, nothing else
    absorbed = r_s.sum(1) - r_u.sum(1)
    assert np.abs(absorbed).min() > 1e-4
    total = R.sum(1) + report["fc1"].absorbed
    np.testing.assert_allclose((report.logit - total).numpy(), absorbed, atol=1e-10)


def test_softmax_outside_attention_is_refused_without_attnlrp():
    net = _SoftNet()
    x = torch.randn(2, 4, dtype=torch.float64)
    for comp in (lt.composites.EpsilonGamma(), lt.composites.CPLRP()):
        with pytest.raises(TypeError, match="softmax"):
            lt.explain(net, x, 0, comp)


def test_matmul_uniform_halves_and_epsilon_variant():
    g = torch.Generator().manual_seed(6)
    a = torch.randn(2, 3, 4, dtype=torch.float64, generator=g).requires_grad_()
    b = torch.randn(2, 4, 5, dtype=torch.float64, generator=g).requires_grad_()
    z = matmul_uniform(a, b)
    torch.testing.assert_close(z, a @ b, rtol=0, atol=0)
    (z * 1.0).sum().backward()
    total = (a @ b).detach().sum()
    torch.testing.assert_close((a * a.grad).sum(), total / 2, rtol=0, atol=1e-12)
    torch.testing.assert_close((b * b.grad).sum(), total / 2, rtol=0, atol=1e-12)
    a.grad = b.grad = None
    matmul_uniform(a, b, 0.1).sum().backward()
    zz = (a @ b).detach()
    want = (zz / 2 * zz / (zz + 0.1 * torch.sign(zz))).sum()
    torch.testing.assert_close((a * a.grad).sum(), want, rtol=0, atol=1e-12)
    with pytest.raises(ValueError):
        matmul_uniform(a, b, -1.0)


def test_cross_attention_with_separate_weights_and_need_weights():
    torch.manual_seed(7)

    class Cross(nn.Module):
        def __init__(self):
            super().__init__()
            self.att = nn.MultiheadAttention(D, H, kdim=5, vdim=7, batch_first=True)
            self.head = nn.Linear(D, 2)

        def forward(self, q, kv_k, kv_v):
            out, w = self.att(q, kv_k, kv_v, need_weights=True)
            assert w.shape == (q.shape[0], q.shape[1], kv_k.shape[1])
            return self.head(out.mean(1))

    m = Cross().double().eval()
    q = torch.randn(2, 4, D, dtype=torch.float64)
    k, v = torch.randn(2, 6, 5, dtype=torch.float64), torch.randn(2, 6, 7, dtype=torch.float64)
    res = lt.attribute(m, (q, k, v), 1, lt.composites.AttnLRP(0.0), check=True)
    with torch.no_grad():
        torch.testing.assert_close(res.output, m(q, k, v), rtol=0, atol=1e-12)
    total = sum(r.sum((1, 2)) for r in res.inputs)
    torch.testing.assert_close(total + _budget(res.report), res.logit, rtol=0, atol=1e-10)
    # against the reference, one sample at a time (no padding)
    att = ref.Attention(m.att)
    wh, bh = ref._np(m.head.weight), ref._np(m.head.bias)
    for i in range(2):
        out = att.forward(q[i].numpy(), k[i].numpy(), v[i].numpy(), None)
        mvec = out.mean(0)
        z = ref.linear_fwd(mvec[None], wh, bh)[0]
        r = np.zeros_like(z)
        r[1] = z[1]
        r_m = ref.linear_rel(mvec[None], wh, bh, r[None], 0.0)[0]
        want = att.relevance(out / len(out) / mvec[None] * r_m[None], 0.0, "attnlrp")
        for got, w in zip(res.inputs, want, strict=True):
            np.testing.assert_allclose(got[i].numpy(), w, rtol=0, atol=1e-10)


def test_attention_weights_used_in_the_output_are_refused():
    class Leak(nn.Module):
        def __init__(self):
            super().__init__()
            self.att = nn.MultiheadAttention(D, H, batch_first=True)

        def forward(self, x):
            _, w = self.att(x, x, x)
            return w.sum(1)

    m = Leak().double().eval()
    with pytest.raises(TypeError, match="attention weights"):
        lt.explain(m, torch.randn(2, T, D, dtype=torch.float64), 0, lt.composites.AttnLRP())


def test_composites_validate_and_allow_lrp_0():
    comp = lt.composites.AttnLRP(epsilon=0)
    assert comp.attention == "attnlrp" and comp.product_epsilon == 0.0
    assert lt.composites.CPLRP(0).attention == "cp"
    with pytest.raises(ValueError):
        lt.composites.AttnLRP(-1.0)
    with pytest.raises(ValueError):
        lt.composites.AttnLRP(product_epsilon=-1.0)


# --------------------------------------------------------------------------- LXT 2.1
def _lxt_rules():
    spec = importlib.util.find_spec("lxt")
    if spec is None or spec.origin is None:
        return None
    path = pathlib.Path(spec.origin).parent / "efficient" / "rules.py"
    if not path.exists():
        return None
    mod_spec = importlib.util.spec_from_file_location("_lxt_efficient_rules", path)
    mod = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(mod)  # only torch: the package __init__ needs transformers
    return mod


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_matches_lxt_efficient_attnlrp(norm_first, activation):
    rules = _lxt_rules()
    if rules is None:
        pytest.skip("lxt 2.1 is not installed (pip install --no-deps lxt==2.1)")
    model = Classifier(norm_first, activation)
    ids, pad = _data()
    R = lt.explain(model, (ids, pad), 2, lt.composites.AttnLRP(0.0))[0]
    want = _lxt_forward_relevance(model, ids, pad, 2, rules)
    torch.testing.assert_close(R, want, rtol=1e-7, atol=1e-9)


def _lxt_forward_relevance(model, ids, pad, target, rules):
    """Gradient x Input of the model rewritten the way LXT's efficient AttnLRP patches
    models: LayerNorm with the std behind stop_gradient, q and k gradients divided by 4 and
    v by 2 (its attention patch), GELU through identity_rule_implicit, Linear plain."""
    import torch.nn.functional as F

    def norm(m, x):
        mean = x.mean(dim=-1, keepdim=True)
        var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
        y = (x - mean) / rules.stop_gradient((var + m.eps).sqrt())
        return y * m.weight + m.bias

    def attention(m, x):
        b, t, e = x.shape
        hd = e // m.num_heads
        q, k, v = F.linear(x, m.in_proj_weight, m.in_proj_bias).chunk(3, -1)
        q = rules.divide_gradient(q, 4)
        k = rules.divide_gradient(k, 4)
        v = rules.divide_gradient(v, 2)
        q, k, v = (u.view(b, t, m.num_heads, hd).transpose(1, 2) for u in (q, k, v))
        s = q @ k.transpose(-1, -2) / hd ** 0.5
        s = s.masked_fill(pad[:, None, None, :], float("-inf"))
        o = (torch.softmax(s, -1) @ v).transpose(1, 2).reshape(b, t, e)
        return m.out_proj(o)

    def ff(layer, x):
        h = layer.linear1(x)
        h = torch.relu(h) if activation == "relu" else rules.identity_rule_implicit(F.gelu, h)
        return layer.linear2(h)

    activation = "gelu" if model.enc.layers[0].activation is F.gelu else "relu"
    emb = model.emb(ids).detach().requires_grad_()
    x = emb
    for layer in model.enc.layers:
        if layer.norm_first:
            x = x + attention(layer.self_attn, norm(layer.norm1, x))
            x = x + ff(layer, norm(layer.norm2, x))
        else:
            x = norm(layer.norm1, x + attention(layer.self_attn, x))
            x = norm(layer.norm2, x + ff(layer, x))
    out = model.head(x.mean(1))
    (grad,) = torch.autograd.grad(out[:, target].sum(), emb)
    return (emb * grad).sum(-1).detach()


def test_position_ids_as_an_input_get_their_own_share():
    class Positional(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(8)
            self.emb, self.pos = nn.Embedding(V, D), nn.Embedding(T, D)
            layer = nn.TransformerEncoderLayer(D, H, 2 * D, batch_first=True)
            self.enc = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
            self.head = nn.Linear(D, 2)

        def forward(self, ids, positions):
            return self.head(self.enc(self.emb(ids) + self.pos(positions)).mean(1))

    m = Positional().double().eval()
    ids, _ = _data()
    positions = torch.arange(T).expand(len(ids), T)
    (r_tok, r_pos), report = lt.explain(m, (ids, positions), 0, lt.composites.AttnLRP(0.0),
                                        check=True)
    assert r_tok.shape == r_pos.shape == (3, T)
    assert r_pos.abs().max() > 1e-4
    torch.testing.assert_close(r_tok.sum(1) + r_pos.sum(1) + _budget(report), report.logit,
                               rtol=0, atol=1e-10)
    # the dry trace counts the attention's out_proj among the Linear layers
    names = [n for n, _ in lt.engine.trace(m, (ids, positions))]
    assert names == ["enc.layers.0.self_attn.out_proj", "enc.layers.0.linear1",
                     "enc.layers.0.linear2", "head"]


def test_lstm_token_inputs_return_per_token_relevance():
    class Tagger(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(9)
            self.emb, self.lstm, self.head = nn.Embedding(V, 6), nn.LSTM(6, 5,
                                                                        batch_first=True), (
                nn.Linear(5, 2))

        def forward(self, ids):
            return self.head(self.lstm(self.emb(ids))[0][:, -1])

    ids, _ = _data()
    R = lt.explain(Tagger().double().eval(), ids, 1, lt.composites.AttnLRP())
    assert R.shape == (3, T) and R.abs().max() > 0


def test_a_tensor_tagged_in_an_earlier_run_is_a_constant_in_the_next():
    class Cache(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(10)
            self.fc = nn.Linear(4, 2)
            self.last = None

        def forward(self, x):
            out = self.fc(x)
            if self.last is not None:
                out = out * self.last  # from the previous call: a constant, no product
            self.last = out
            return out

    m = Cache().double()
    x = torch.randn(3, 4, dtype=torch.float64)
    R1 = lt.explain(m, x, 0, lt.composites.Uniform(lt.rules.Epsilon(0.0)))
    R2 = lt.explain(m, x, 0, lt.composites.Uniform(lt.rules.Epsilon(0.0)))
    assert (R2 - R1).abs().max() > 1e-6  # scaled by the cached factor, not refused


@pytest.mark.parametrize("mode", ["attnlrp", "cp"])
def test_causal_mask_fused_kernel_equals_the_explicit_steps(mode):
    class Causal(Classifier):
        def forward(self, ids, pad=None):
            mask = nn.Transformer.generate_square_subsequent_mask(ids.shape[1],
                                                                  dtype=torch.float64)
            pad = torch.zeros(pad.shape, dtype=torch.float64).masked_fill(pad, float("-inf"))
            return self.head(self.enc(self.emb(ids), mask=mask, src_key_padding_mask=pad,
                                      is_causal=True).mean(1))

    model = Causal(norm_first=True, activation="gelu")
    ids, pad = _data()
    comp = lt.composites.AttnLRP(0.0) if mode == "attnlrp" else lt.composites.CPLRP(0.0)
    fused = lt.attribute(model, (ids, pad), 0, comp)  # scaled_dot_product_attention
    steps = lt.attribute(model, (ids, pad), 0, comp, check=True)  # explicit, recorded
    with torch.no_grad():
        torch.testing.assert_close(fused.output, model(ids, pad), rtol=0, atol=1e-12)
    torch.testing.assert_close(fused.inputs[0], steps.inputs[0], rtol=0, atol=1e-10)
    torch.testing.assert_close(steps.inputs[0].sum(1) + _budget(steps.report), steps.logit,
                               rtol=0, atol=1e-10)
    plain = Classifier(norm_first=True, activation="gelu")
    other = lt.explain(plain, (ids, pad), 0, comp)[0]
    assert (other - fused.inputs[0]).abs().max() > 1e-4  # the causal mask is used


def test_float32_model_runs_and_matches_its_output():
    model = Classifier().float()
    ids, pad = _data()
    res = lt.attribute(model, (ids, pad), 1, lt.composites.AttnLRP())
    with torch.no_grad():
        torch.testing.assert_close(res.output, model(ids, pad), rtol=1e-5, atol=1e-5)
    ref64 = lt.explain(Classifier(), (ids, pad), 1, lt.composites.AttnLRP())[0]
    torch.testing.assert_close(res.inputs[0].double(), ref64, rtol=1e-3, atol=1e-4)
