"""Tests of the generated text/sequence data sets: arithmetic sequences and sentiment grammar."""

from __future__ import annotations

import pytest
import torch

from lrp_teach.datasets.arithmetic import ground_truth_scores, make_arithmetic
from lrp_teach.datasets.sentiment import (
    NEGATIVE,
    POSITIVE,
    TEMPLATES,
    Vocab,
    make_sentiment,
    sentiment_vocab,
)


@pytest.mark.parametrize("op", ["add", "sub"])
def test_arithmetic_targets_and_markers(op):
    data = make_arithmetic(300, op=op, length=12, min_length=4, seed=3)
    assert data.x.shape == (300, 12, 3)
    rows = torch.arange(300)
    p, q = data.positions[:, 0], data.positions[:, 1]
    assert (p < q).all() and (q < data.lengths).all()
    # exactly one first and one second marker, at the recorded positions
    assert (data.x[..., 1].sum(1) == 1).all() and (data.x[..., 2].sum(1) == 1).all()
    assert (data.x[rows, p, 1] == 1).all() and (data.x[rows, q, 2] == 1).all()
    n_p, n_q = data.x[rows, p, 0], data.x[rows, q, 0]
    expected = n_p + n_q if op == "add" else n_p - n_q
    assert torch.allclose(data.y, expected, atol=1e-6)
    assert torch.allclose(data.values, torch.stack([n_p, n_q], 1))
    # padding is zero, values lie in [0, 1]
    pad = torch.arange(12)[None] >= data.lengths[:, None]
    assert data.x[pad].abs().max() == 0
    assert data.x[..., 0].min() >= 0 and data.x[..., 0].max() <= 1
    assert data.lengths.min() >= 4 and data.lengths.max() <= 12


def test_arithmetic_determinism_and_errors():
    a = make_arithmetic(50, op="sub", seed=7)
    b = make_arithmetic(50, op="sub", seed=7)
    c = make_arithmetic(50, op="sub", seed=8)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert not torch.equal(a.x, c.x)
    with pytest.raises(ValueError, match="op"):
        make_arithmetic(5, op="mul")
    with pytest.raises(ValueError, match="min_length"):
        make_arithmetic(5, length=10, min_length=1)
    with pytest.raises(ValueError, match="length"):
        make_arithmetic(5, length=1)


def test_ground_truth_scores():
    data = make_arithmetic(200, op="sub", seed=1)
    ideal = torch.zeros(200, 20)
    rows = torch.arange(200)
    ideal[rows, data.positions[:, 0]] = data.contributions[:, 0]
    ideal[rows, data.positions[:, 1]] = data.contributions[:, 1]
    s = ground_truth_scores(ideal, data)
    assert s["off_marked"] == pytest.approx(0.0, abs=1e-12)
    assert s["corr_first"] == pytest.approx(1.0) and s["corr_second"] == pytest.approx(1.0)
    gen = torch.Generator().manual_seed(0)
    noise = ground_truth_scores(torch.randn(200, 20, generator=gen), data)
    assert noise["off_marked"] > 0.7 and abs(noise["corr_first"]) < 0.3
    with pytest.raises(ValueError, match="shape"):
        ground_truth_scores(ideal[:, :5], data)


def test_sentiment_labels_follow_the_grammar():
    data = make_sentiment(700, seed=2)
    assert set(data.templates) == set(TEMPLATES)
    for k in range(len(data)):
        words = data.words(k)
        adjs = [w for w in words if w in POSITIVE or w in NEGATIVE]
        pol = [1 if w in POSITIVE else -1 for w in adjs]
        t = data.templates[k]
        if t in ("plain", "and", "double"):
            expected = pol[-1] > 0
        elif t in ("negation", "neither"):
            expected = pol[-1] < 0
        else:  # contrast, not_but: the adjective after "but" decides
            expected = pol[-1] > 0
            assert words[words.index("but") + 1] == adjs[-1]
        assert data.clean_labels[k].item() == int(expected), (t, words)
        n = int(data.lengths[k])
        # ground truth: lexical polarity on adjectives only, decisive words exist
        lex = data.lexical[k, :n]
        assert [int(v) for v in lex if v != 0] == pol
        assert data.decisive[k, :n].any()
        if t == "negation":
            assert data.effective[k, n - 2] == -lex[n - 2]
            assert data.decisive[k, words.index("not")]
    pad = torch.arange(data.tokens.shape[1])[None] >= data.lengths[:, None]
    assert (data.tokens[pad] == 0).all()


def test_sentiment_noise_weights_and_determinism():
    a = make_sentiment(2000, seed=5, label_noise=0.1)
    b = make_sentiment(2000, seed=5, label_noise=0.1)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.labels, b.labels)
    flipped = (a.labels != a.clean_labels).float().mean().item()
    assert 0.07 < flipped < 0.13
    only = make_sentiment(100, seed=1, template_weights={"double": 1.0})
    assert set(only.templates) == {"double"}
    with pytest.raises(ValueError, match="unknown templates"):
        make_sentiment(10, template_weights={"sarcasm": 1.0})
    with pytest.raises(ValueError, match="label_noise"):
        make_sentiment(10, label_noise=0.6)


def test_vocab():
    vocab = sentiment_vocab()
    words = ["the", "film", "is", "not", "good", "."]
    assert vocab.decode(vocab.encode(words)) == words
    assert vocab.itos[vocab.pad_index] == "<pad>"
    assert len(vocab) == len(set(vocab.itos))
    with pytest.raises(KeyError, match="sarcastic"):
        vocab.encode(["sarcastic"])
    with pytest.raises(ValueError, match="padding"):
        Vocab(["good"])
