"""Raw attention and attention rollout: captured weights vs a hand-computed softmax, closed
forms on uniform and identity attention, padding, ordering of the layers, model untouched."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lrp_teach import baselines as bl
from lrp_teach.transformer import TransformerClassifier, positions_like

torch.set_num_threads(1)
V = 11


def _model(layers=2, heads=2, d=8, seed=0):
    torch.manual_seed(seed)
    return TransformerClassifier(V, 2, d, heads, 2 * d, layers, max_len=16).double().eval()


def _ids():
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(1, V, (3, 7), generator=g)
    ids[1, 5:] = 0  # padding
    ids[2, 3:] = 0
    return ids


def test_captured_weights_equal_a_hand_computed_softmax():
    m = _model()
    ids = _ids()
    maps, keep = bl.attention_maps(m, ids)
    assert len(maps) == 2 and maps[0].shape == (3, 2, 7, 7)
    assert torch.equal(keep, ids != 0)
    attn = m.encoder.layers[0].self_attn
    x = m.embedding(ids) + m.position(positions_like(ids))
    q, k, _ = (x @ attn.in_proj_weight.T + attn.in_proj_bias).chunk(3, -1)
    dh = 4
    q = q.view(3, 7, 2, dh).transpose(1, 2)
    k = k.view(3, 7, 2, dh).transpose(1, 2)
    scores = q @ k.transpose(-1, -2) / math.sqrt(dh)
    scores = scores.masked_fill((ids == 0)[:, None, None, :], float("-inf"))
    torch.testing.assert_close(maps[0], scores.softmax(-1).detach(), rtol=0, atol=1e-12)


def test_rollout_rows_sum_to_one_and_padding_gets_nothing():
    m = _model()
    ids = _ids()
    for fn in (bl.raw_attention, bl.attention_rollout):
        r = fn(m, ids)
        assert r.shape == ids.shape and (r >= 0).all()
        torch.testing.assert_close(r.sum(1), torch.ones(3, dtype=r.dtype), rtol=0, atol=1e-12)
        assert (r[ids == 0] == 0).all()
        # a sentence alone and inside the padded batch get the same scores
        alone = fn(m, ids[2:3, :3])
        torch.testing.assert_close(alone[0], r[2, :3], rtol=0, atol=1e-10)


def test_uniform_attention_has_closed_forms():
    m = _model(layers=2)
    with torch.no_grad():  # q = k = 0: every real key gets the same weight
        for layer in m.encoder.layers:
            d = layer.self_attn.embed_dim
            layer.self_attn.in_proj_weight[: 2 * d] = 0
            layer.self_attn.in_proj_bias[: 2 * d] = 0
    ids = _ids()
    n = (ids != 0).sum(1, keepdim=True).double()
    uniform = (ids != 0).double() / n
    torch.testing.assert_close(bl.raw_attention(m, ids), uniform, rtol=0, atol=1e-12)
    torch.testing.assert_close(bl.attention_rollout(m, ids), uniform, rtol=0, atol=1e-12)
    # (U/2 + I/2)^2 = 3U/4 + I/4 (U^2 = U): row 0 puts 1/4 extra on token 0
    row0 = bl.attention_rollout(m, ids, query=0)
    expected = 0.75 * uniform
    expected[:, 0] += 0.25
    torch.testing.assert_close(row0, expected, rtol=0, atol=1e-12)
    # one residual weight of 0 leaves the plain product U U = U
    torch.testing.assert_close(bl.attention_rollout(m, ids, query=0, residual=0.0), uniform,
                               rtol=0, atol=1e-12)


def test_identity_attention_gives_the_identity():
    m = _model(layers=1, heads=1, d=16)
    with torch.no_grad():  # one-hot positions, q = k = 10 x: each query attends to itself
        m.embedding.weight.zero_()
        m.position.weight.copy_(torch.eye(16))
        attn = m.encoder.layers[0].self_attn
        attn.in_proj_weight[:32] = 10 * torch.eye(16).repeat(2, 1)
        attn.in_proj_bias.zero_()
    ids = torch.randint(1, V, (2, 6), generator=torch.Generator().manual_seed(0))
    for q in range(6):
        e = torch.zeros(2, 6, dtype=torch.float64)
        e[:, q] = 1
        torch.testing.assert_close(bl.raw_attention(m, ids, query=q), e, rtol=0, atol=1e-9)
        torch.testing.assert_close(bl.attention_rollout(m, ids, query=q), e, rtol=0, atol=1e-9)


def test_rollout_multiplies_the_layers_from_the_input_upwards():
    m = _model(layers=2)
    ids = _ids()
    maps, _ = bl.attention_maps(m, ids)
    a1, a2 = maps[0].mean(1), maps[1].mean(1)
    got = bl.attention_rollout(m, ids, query=1, residual=0.0)
    torch.testing.assert_close(got, (a2 @ a1)[:, 1], rtol=0, atol=1e-12)
    assert (got - (a1 @ a2)[:, 1]).abs().max() > 1e-3  # the other order differs
    half = bl.attention_rollout(m, ids, query=1)
    eye = torch.eye(7, dtype=torch.float64)
    ref = ((a2 + eye) / 2) @ ((a1 + eye) / 2)
    torch.testing.assert_close(half, ref[:, 1], rtol=0, atol=1e-12)


def test_model_is_untouched_and_no_hooks_remain():
    m = _model().train()
    ids = _ids()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    with torch.no_grad():
        out = m.eval()(ids)
    m.train()
    bl.attention_rollout(m, (ids, positions_like(ids)), target=1)
    assert m.training
    for mod in m.modules():
        assert not mod._forward_hooks and not mod._forward_pre_hooks
    for k, v in m.state_dict().items():
        assert torch.equal(v, before[k]), k
    with torch.no_grad():
        torch.testing.assert_close(m.eval()(ids), out, rtol=0, atol=0)


def test_a_model_without_attention_is_refused():
    with pytest.raises(ValueError, match="nn.MultiheadAttention"):
        bl.raw_attention(nn.Sequential(nn.Linear(3, 2)), torch.rand(2, 3))
    with pytest.raises(ValueError, match="residual"):
        bl.attention_rollout(_model(), _ids(), residual=1.5)
