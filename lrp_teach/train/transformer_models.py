"""Recipe for the sentiment transformer of the transformer chapter.

``python -m lrp_teach.train sentiment_transformer`` trains
:class:`lrp_teach.transformer.TransformerClassifier` on the sentiment grammar, with the same
training data settings as chapter 7's BiLSTM (5 % label noise, rare double negations), on one
CPU thread in about a minute, and records it in ``data/MANIFEST.json``.
"""

from __future__ import annotations

import torch
from torch import nn

from .. import pretrained
from ..datasets.sentiment import make_sentiment, sentiment_vocab
from ..transformer import TransformerClassifier
from ..utils import seed_everything
from . import register
from .lstm_models import SENTIMENT, sentiment_test_data

__all__ = ["TRANSFORMER", "build_sentiment_transformer", "sentiment_transformer",
           "train_sentiment_transformer"]

TRANSFORMER = {"d_model": 32, "n_heads": 2, "d_ff": 64, "n_layers": 2, "max_len": 16,
               "epochs": 10, "batch": 64, "lr": 3e-3}


def build_sentiment_transformer(vocab_size: int = len(sentiment_vocab()), d_model: int = 32,
                                n_heads: int = 2, d_ff: int = 64, n_layers: int = 2,
                                max_len: int = 16) -> TransformerClassifier:
    """The sentiment transformer: 2 post-norm blocks of width 32 with 2 heads, 2 classes."""
    return TransformerClassifier(vocab_size, 2, d_model, n_heads, d_ff, n_layers, max_len)


def _kwargs(vocab_size: int) -> dict:
    cfg = TRANSFORMER
    return {"vocab_size": vocab_size, "d_model": cfg["d_model"], "n_heads": cfg["n_heads"],
            "d_ff": cfg["d_ff"], "n_layers": cfg["n_layers"], "max_len": cfg["max_len"]}


def _per_template(pred, test) -> dict[str, float]:
    return {
        f"accuracy_{t}": round(
            float(sum(int(p == y) for p, y, tt in zip(pred, test.clean_labels, test.templates,
                                                        strict=True) if tt == t)
                  / max(1, test.templates.count(t))), 4)
        for t in sorted(set(test.templates))
    }


def train_sentiment_transformer(seed: int = 0, save: bool = True) -> TransformerClassifier:
    """Train (and by default save) the sentiment transformer; returns it in eval mode."""
    seed_everything(seed)
    cfg = TRANSFORMER
    train = make_sentiment(
        SENTIMENT["train_size"], seed=seed + 1, label_noise=SENTIMENT["label_noise"],
        template_weights=SENTIMENT["template_weights"],
    )
    test = sentiment_test_data()
    model = build_sentiment_transformer(**_kwargs(len(train.vocab)))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=1e-4)
    steps = cfg["epochs"] * -(-len(train) // cfg["batch"])
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg["lr"], total_steps=steps)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(cfg["epochs"]):
        perm = torch.randperm(len(train), generator=gen)
        for k in range(0, len(train), cfg["batch"]):
            idx = perm[k : k + cfg["batch"]]
            loss = nn.functional.cross_entropy(model(train.tokens[idx]), train.labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    if save:
        with torch.no_grad():
            pred = model(test.tokens).argmax(1)
        acc = (pred == test.clean_labels).float().mean().item()
        per_template = _per_template(pred, test)
        print(f"sentiment transformer: test accuracy {acc:.4f}", per_template)
        pretrained.save(
            "sentiment_transformer",
            model,
            builder="lrp_teach.train.transformer_models:build_sentiment_transformer",
            kwargs=_kwargs(len(train.vocab)),
            metrics={"test_accuracy": round(acc, 4), **per_template},
            extra={"data": "lrp_teach.train.lstm_models:sentiment_test_data()"},
        )
    return model


def sentiment_transformer(seed: int = 0) -> None:
    """Train the sentiment transformer on the grammar (5 % label noise) and save it."""
    train_sentiment_transformer(seed)


register("sentiment_transformer", "lrp_teach.train.transformer_models:sentiment_transformer")
