"""Recipes for chapter 7's LSTMs: the toy arithmetic regressors and the sentiment BiLSTM.

``python -m lrp_teach.train arith_add_lstm`` (or ``arith_sub_lstm``, ``sentiment_bilstm``)
retrains a model on one CPU thread in well under three minutes and records it in
``data/MANIFEST.json``.
"""

from __future__ import annotations

import torch
from torch import nn

from .. import pretrained
from ..datasets.arithmetic import make_arithmetic
from ..datasets.sentiment import make_sentiment, sentiment_vocab
from ..lstm import LSTMClassifier, LSTMRegressor
from ..utils import seed_everything
from . import register

__all__ = [
    "ARITH",
    "SENTIMENT",
    "arith_add_lstm",
    "arith_sub_lstm",
    "build_arith_lstm",
    "build_sentiment_bilstm",
    "sentiment_bilstm",
    "sentiment_test_data",
]

ARITH = {"length": 20, "hidden": 32, "train_size": 20000, "test_size": 2000, "test_seed": 12345}
SENTIMENT = {
    "emb_dim": 16,
    "hidden": 24,
    "train_size": 6000,
    "test_size": 2000,
    "test_seed": 777,
    "label_noise": 0.05,
    # double negation is rare in training, so the model has a construction it can get wrong
    "template_weights": {
        "plain": 1.0, "negation": 1.0, "neither": 1.0, "and": 1.0,
        "contrast": 1.0, "not_but": 1.0, "double": 0.01,
    },
}


def build_arith_lstm(hidden: int = 32) -> LSTMRegressor:
    """The arithmetic regressor: LSTM(3 -> hidden) and a linear read-out."""
    return LSTMRegressor(3, hidden, n_outputs=1)


def build_sentiment_bilstm(
    vocab_size: int = len(sentiment_vocab()), emb_dim: int = 16, hidden: int = 24
) -> LSTMClassifier:
    """The sentiment classifier: embedding, bidirectional LSTM, linear layer, 2 classes."""
    return LSTMClassifier(vocab_size, emb_dim, hidden, 2, bidirectional=True)


def sentiment_test_data():
    """The held-out test sentences of the sentiment grammar (all templates equally likely)."""
    return make_sentiment(SENTIMENT["test_size"], seed=SENTIMENT["test_seed"])


def fit_arith(model: nn.Module, train, *, epochs: int, seed: int, batch: int = 100,
              lr: float = 5e-3) -> nn.Module:
    """Adam with a cosine schedule on the squared error of the toy arithmetic regressor."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * len(train) // batch)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(len(train), generator=gen)
        for k in range(0, len(train), batch):
            idx = perm[k : k + batch]
            loss = nn.functional.mse_loss(model(train.x[idx])[:, 0], train.y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


def _train_arith(op: str, seed: int) -> None:
    seed_everything(seed)
    train = make_arithmetic(ARITH["train_size"], op=op, length=ARITH["length"], seed=seed + 1)
    test = make_arithmetic(
        ARITH["test_size"], op=op, length=ARITH["length"], seed=ARITH["test_seed"]
    )
    model = fit_arith(build_arith_lstm(ARITH["hidden"]), train, epochs=30, seed=seed)
    with torch.no_grad():
        mse = nn.functional.mse_loss(model(test.x)[:, 0], test.y).item()
        var = test.y.var().item()
    print(f"{op}: test MSE {mse:.2e} (target variance {var:.3f})")
    pretrained.save(
        f"arith_{op}_lstm",
        model,
        builder="lrp_teach.train.lstm_models:build_arith_lstm",
        kwargs={"hidden": ARITH["hidden"]},
        metrics={"test_mse": round(mse, 8), "test_r2": round(1 - mse / var, 6)},
        extra={"data": f"make_arithmetic({ARITH['test_size']}, op={op!r}, "
                       f"length={ARITH['length']}, seed={ARITH['test_seed']})"},
    )


def arith_add_lstm(seed: int = 0) -> None:
    """Train the addition regressor (T = 20, H = 32)."""
    _train_arith("add", seed)


def arith_sub_lstm(seed: int = 0) -> None:
    """Train the subtraction regressor (T = 20, H = 32)."""
    _train_arith("sub", seed)


def sentiment_bilstm(seed: int = 0) -> None:
    """Train the bidirectional sentiment classifier on the grammar (5 % label noise)."""
    seed_everything(seed)
    cfg = SENTIMENT
    train = make_sentiment(
        cfg["train_size"], seed=seed + 1, label_noise=cfg["label_noise"],
        template_weights=cfg["template_weights"],
    )
    test = sentiment_test_data()
    model = build_sentiment_bilstm(len(train.vocab), cfg["emb_dim"], cfg["hidden"])
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(seed)
    batch = 64
    for _ in range(8):
        perm = torch.randperm(len(train), generator=gen)
        for k in range(0, len(train), batch):
            idx = perm[k : k + batch]
            loss = nn.functional.cross_entropy(
                model(train.tokens[idx], train.lengths[idx]), train.labels[idx]
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        pred = model(test.tokens, test.lengths).argmax(1)
    acc = (pred == test.clean_labels).float().mean().item()
    per_template = {
        f"accuracy_{t}": round(
            float(sum(int(p == y) for p, y, tt in zip(pred, test.clean_labels, test.templates,
                                                        strict=True) if tt == t)
                  / max(1, test.templates.count(t))), 4)
        for t in sorted(set(test.templates))
    }
    print(f"sentiment: test accuracy {acc:.4f}", per_template)
    pretrained.save(
        "sentiment_bilstm",
        model,
        builder="lrp_teach.train.lstm_models:build_sentiment_bilstm",
        kwargs={"vocab_size": len(train.vocab), "emb_dim": cfg["emb_dim"],
                "hidden": cfg["hidden"]},
        metrics={"test_accuracy": round(acc, 4), **per_template},
        extra={"data": "lrp_teach.train.lstm_models:sentiment_test_data()"},
    )


register("arith_add_lstm", "lrp_teach.train.lstm_models:arith_add_lstm")
register("arith_sub_lstm", "lrp_teach.train.lstm_models:arith_sub_lstm")
register("sentiment_bilstm", "lrp_teach.train.lstm_models:sentiment_bilstm")
