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

__all__ = ["TransformerClassifier", "positions_like"]


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
