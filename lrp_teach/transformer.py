"""A small transformer classifier for the sentiment grammar, built from torch's own layers.

:class:`TransformerClassifier` is a token embedding plus a learned position embedding, a
:class:`torch.nn.TransformerEncoder` of :class:`torch.nn.TransformerEncoderLayer` blocks
(``batch_first``, post-norm, ReLU), the mean of the encoder outputs over the real words and a
linear head.  The padding mask (``ids == 0``) is built inside the forward pass and handed to
the encoder as ``src_key_padding_mask``, so padded positions are neither attended to nor
pooled.  The position ids are the forward's second argument: ``lt.explain(model, (ids,
positions), target, composite=lt.composites.AttnLRP())`` then returns the words' share and
the positions' share of the logit separately.

The shipped weights ``lt.pretrained.load("sentiment_transformer")`` were trained by
``python -m lrp_teach.train sentiment_transformer`` (:mod:`lrp_teach.train.transformer_models`).
"""

from __future__ import annotations

import torch
from torch import nn

from .evaluation import mean_se
from .utils import round_floats

__all__ = ["COMPARISON_FILE", "DELETION_STEPS", "METHOD_NAMES", "TransformerClassifier",
           "comparison", "comparison_sentences", "comparison_values", "ground_truth_metrics",
           "mean_se", "per_sentence_deletion", "positions_like", "summarise_comparison",
           "token_scores"]


def positions_like(ids: torch.Tensor) -> torch.Tensor:
    """The position ids ``0 .. T-1`` of a batch of token ids ``(B, T)``, as ``(B, T)``."""
    return torch.arange(ids.shape[1], device=ids.device).expand(ids.shape[0], -1)


class TransformerClassifier(nn.Module):
    """Embedding + positions -> ``nn.TransformerEncoder`` -> masked mean -> ``nn.Linear``.

    Parameters
    ----------
    vocab_size, n_classes : int
        Sizes of the vocabulary (index 0 is padding) and of the output.
    d_model, n_heads, d_ff, n_layers : int
        Width, attention heads, width of the feed-forward layer, number of blocks.
    max_len : int
        Number of learned positions.
    padding_idx : int
        Index of the padding token (masked in attention and pooling).
    """

    def __init__(self, vocab_size: int, n_classes: int = 2, d_model: int = 32,
                 n_heads: int = 2, d_ff: int = 64, n_layers: int = 2, max_len: int = 16,
                 padding_idx: int = 0) -> None:
        super().__init__()
        self.padding_idx = padding_idx
        self.embedding = nn.Embedding(vocab_size, d_model, padding_idx=padding_idx)
        self.position = nn.Embedding(max_len, d_model)
        layer = nn.TransformerEncoderLayer(d_model, n_heads, d_ff, dropout=0.0,
                                           batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.head = nn.Linear(d_model, n_classes)

    def forward(self, ids: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        if positions is None:
            positions = positions_like(ids)
        pad = ids == self.padding_idx
        h = self.encoder(self.embedding(ids) + self.position(positions),
                         src_key_padding_mask=pad)
        keep = (~pad).to(h.dtype)[..., None]
        pooled = (h * keep).sum(1) / keep.sum(1)
        return self.head(pooled)


# ------------------------------------------------------------- the chapter's comparison
def _methods():
    from . import baselines as bl
    from . import composites
    from .engine.core import explain

    def lrp(composite):
        def run(model, ids, target):
            (tokens, _), = [explain(model, (ids, positions_like(ids)), target,
                                    composite=composite)]
            return tokens
        return run

    return {
        "AttnLRP": lrp(composites.AttnLRP()),
        "CP-LRP": lrp(composites.CPLRP()),
        "Raw attention": lambda m, ids, t: bl.raw_attention(m, ids),
        "Attention rollout": lambda m, ids, t: bl.attention_rollout(m, ids),
        "Gradient": lambda m, ids, t: bl.gradient(m, ids, t).norm(dim=-1),
        "Gradient x Input": lambda m, ids, t: bl.gradient_x_input(m, ids, t).sum(-1),
        "Integrated Gradients": lambda m, ids, t: bl.integrated_gradients(m, ids, t).sum(-1),
    }


#: The methods the chapter compares, in the order of its table.
METHOD_NAMES = ("AttnLRP", "CP-LRP", "Raw attention", "Attention rollout", "Gradient",
                "Gradient x Input", "Integrated Gradients")


def token_scores(model: nn.Module, ids: torch.Tensor, target: torch.Tensor,
                 methods=METHOD_NAMES) -> dict[str, torch.Tensor]:
    """One score per token ``(B, T)`` for each method, for class ``target`` ``(B,)``.

    LRP (AttnLRP, CP-LRP) returns the words' share with the positions as a second input;
    Gradient is the L2 norm of the embedding gradient (a sensitivity, unsigned); Gradient x
    Input and Integrated Gradients (32 steps, zero embedding as baseline) are summed over the
    embedding; raw attention (last layer, mean over the real query positions) and rollout do
    not depend on the class.
    """
    table = _methods()
    return {name: table[name](model, ids, target).detach().float() for name in methods}


def per_sentence_deletion(model: nn.Module, inputs: tuple, scores: torch.Tensor,
                          target: torch.Tensor, lengths: torch.Tensor, n_steps: int,
                          order: str) -> torch.Tensor:
    """:func:`lrp_teach.evaluation.deletion_curve` for each sentence alone: ``(B, n_steps+1)``.

    ``inputs`` is what ``model(*inputs)`` takes, token ids first; each sentence is cut to its
    length, so padding is never deleted and every sentence keeps its own curve (for standard
    errors over sentences).
    """
    from .evaluation import deletion_curve

    rows = []
    for k in range(len(scores)):
        n = int(lengths[k])
        one = tuple(v[k : k + 1, :n] if isinstance(v, torch.Tensor) and v.dim() == 2 else
                    v[k : k + 1] for v in inputs)
        rows.append(deletion_curve(model, one, scores[k : k + 1, :n], target[k : k + 1],
                                   n_steps, order=order))
    return torch.stack(rows)


def ground_truth_metrics(scores: torch.Tensor, decisive: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-sentence rank and mass accuracy of ``scores`` on the decisive words.

    Both use the positive part of the scores (``pooling="sum,pos"``) and the decisive words of
    the sentiment grammar as ground truth (:func:`lrp_teach.evaluation.relevance_rank_accuracy`,
    :func:`~lrp_teach.evaluation.relevance_mass_accuracy`).
    """
    from .evaluation import relevance_mass_accuracy, relevance_rank_accuracy

    return {"rank": relevance_rank_accuracy(scores, decisive),
            "mass": relevance_mass_accuracy(scores, decisive)}


# -------------------------------------------- the cached table of the chapter (300 sentences)
DELETION_STEPS = 4
COMPARISON_FILE = "transformer_comparison.json"


def comparison_sentences(n: int):
    """The test set, and the indices of the first ``n`` sentences both models get right."""
    from . import pretrained
    from .train.lstm_models import sentiment_test_data

    test = sentiment_test_data()
    tf, bilstm = pretrained.load("sentiment_transformer"), pretrained.load("sentiment_bilstm")
    with torch.no_grad():
        ok = (tf(test.tokens).argmax(1) == test.clean_labels) & (
            bilstm(test.tokens, test.lengths).argmax(1) == test.clean_labels)
    return test, ok.nonzero().flatten()[:n]


def comparison_values(idx: torch.Tensor, test) -> dict[str, dict[str, torch.Tensor]]:
    """Every measure for every method, one value per sentence."""
    from . import lstm, pretrained

    tf, bilstm = pretrained.load("sentiment_transformer"), pretrained.load("sentiment_bilstm")
    tk, ln, y, dec = (test.tokens[idx], test.lengths[idx], test.clean_labels[idx],
                      test.decisive[idx])
    width = int(ln.max())
    tk, dec = tk[:, :width], dec[:, :width]
    scores = token_scores(tf, tk, y)
    # random ranking: row k of a fixed-width draw, so it does not depend on the batch's width
    noise = torch.rand(len(tk), 64, generator=torch.Generator().manual_seed(0))[:, :width]
    scores["Random"] = noise.masked_fill(tk == 0, 0.0)
    runs = {name: (tf, (tk,), s) for name, s in scores.items()}
    runs["BiLSTM LRP"] = (bilstm, (tk, ln), lstm.explain(bilstm, tk, ln, y).tokens.float())
    out = {}
    for name, (model, inputs, s) in runs.items():
        gt = ground_truth_metrics(s, dec)
        most = per_sentence_deletion(model, inputs, s, y, ln, DELETION_STEPS, "most")
        least = per_sentence_deletion(model, inputs, s, y, ln, DELETION_STEPS, "least")
        out[name] = {"rank": gt["rank"], "mass": gt["mass"], "most": most, "least": least,
                     "area": (least[:, 1:] - most[:, 1:]).mean(1)}
    return out


def summarise_comparison(values: dict[str, dict[str, torch.Tensor]], rows: slice) -> dict:
    """Means, standard errors, curves and paired differences against AttnLRP."""
    table, paired = {}, {}
    for name, v in values.items():
        table[name] = {m: list(mean_se(v[m][rows])) for m in ("rank", "mass", "area")}
        table[name]["curve_most"] = [list(mean_se(c)) for c in v["most"][rows].T]
        table[name]["curve_least"] = [list(mean_se(c)) for c in v["least"][rows].T]
        if name != "AttnLRP":
            paired[name] = {m: list(mean_se(values["AttnLRP"][m][rows] - v[m][rows]))
                            for m in ("rank", "mass", "area")}
    return {"methods": table, "attnlrp_minus": paired}


def comparison(n: int = 300, check: int = 40) -> dict:
    """The cached comparison of ``benchmarks/transformer_comparison.py`` (rounded to 1e-6)."""
    test, idx = comparison_sentences(n)
    values = comparison_values(idx, test)
    return round_floats({
        "n": len(idx), "steps": DELETION_STEPS, "check_n": check,
        "command": f"python benchmarks/transformer_comparison.py --n {n} --check {check}",
        "all": summarise_comparison(values, slice(None)),
        "check": summarise_comparison(values, slice(0, check)),
    })
