"""A relation network for CLEVR-lite and its LRP explanation.

The model is the relation network of Santoro et al. 2017 (``santoro2017relation``), scaled
down to run on a laptop CPU:

* a small CNN (``Conv2d/BatchNorm2d/ReLU`` three times, stride 2) turns the ``48 x 48``
  image into an ``6 x 6`` feature map; each cell, with its two coordinates in [-1, 1]
  appended, is an "object" ``o_i``;
* an ``nn.Embedding`` and a one-layer ``nn.LSTM`` encode the question; ``q`` is the hidden
  state after the last word;
* an MLP ``g`` reads every ordered pair ``(o_i, o_j, q)``;
* its outputs are averaged over the ``N^2`` pairs (a sum scaled by ``1/N^2``) and an MLP
  ``f`` maps the result to the answer logits:

.. math::  \\mathrm{RN}(O, q) = f\\Big(\\frac{1}{N^2}\\sum_{i,j} g(o_i, o_j, q)\\Big).

The first layer of ``g`` is one ``nn.Linear`` on the concatenation ``[o_i; o_j; q]``; the
forward pass evaluates it as ``W_1 o_i + W_2 o_j + W_3 q + b`` (the same numbers) so that the
``N^2`` pairs cost ``N`` projections.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .datasets.clevr_lite import ANSWERS, GRID, IMAGE_SIZE, VOCAB

__all__ = [
    "RelationNetwork",
    "build_relation_network",
]


class RelationNetwork(nn.Module):
    """Relation network: CNN objects + LSTM question -> pairwise MLP g -> mean -> MLP f.

    Parameters
    ----------
    vocab_size, n_answers : int
        Question vocabulary and answer set sizes.
    channels : tuple of int
        Output channels of the three stride-2 convolutions.
    embed, question : int
        Word embedding size and LSTM hidden size.
    g_units, f_units : int
        Widths of the MLPs ``g`` (two layers) and ``f`` (two layers, the second gives the
        logits).
    """

    def __init__(self, vocab_size: int = len(VOCAB), n_answers: int = len(ANSWERS),
                 channels: tuple[int, int, int] = (16, 24, 24), embed: int = 32,
                 question: int = 64, g_units: int = 64, f_units: int = 64) -> None:
        super().__init__()
        c1, c2, c3 = channels
        layers: list[nn.Module] = []
        for cin, cout in ((3, c1), (c1, c2), (c2, c3)):
            layers += [nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.BatchNorm2d(cout),
                       nn.ReLU()]
        self.cnn = nn.Sequential(*layers)
        self.embedding = nn.Embedding(vocab_size, embed, padding_idx=0)
        self.lstm = nn.LSTM(embed, question, batch_first=True)
        self.object_size = c3 + 2
        self.g = nn.Sequential(nn.Linear(2 * self.object_size + question, g_units), nn.ReLU(),
                               nn.Linear(g_units, g_units), nn.ReLU())
        self.f = nn.Sequential(nn.Linear(g_units, f_units), nn.ReLU(),
                               nn.Linear(f_units, n_answers))
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, GRID), torch.linspace(-1, 1, GRID),
                                indexing="ij")
        self.register_buffer("coords", torch.stack([xs, ys], -1).reshape(-1, 2),
                             persistent=False)

    # ----------------------------------------------------------------- pieces
    def objects(self, image: Tensor, features: Tensor | None = None) -> Tensor:
        """Objects ``(B, N, C + 2)``: feature-map cells with their ``(x, y)`` coordinates."""
        fmap = self.cnn(image) if features is None else features
        b, c, h, w = fmap.shape
        if h * w != self.coords.shape[0]:
            raise ValueError(f"the feature map is {h}x{w}, but the model expects "
                             f"{GRID}x{GRID}: images must be {IMAGE_SIZE}x{IMAGE_SIZE}")
        cells = fmap.flatten(2).transpose(1, 2)
        return torch.cat([cells, self.coords.to(cells).expand(b, -1, -1)], -1)

    def question(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        """Question code ``(B, H)``: the LSTM hidden state after word ``lengths - 1``."""
        out, _ = self.lstm(self.embedding(tokens))
        return out[torch.arange(len(tokens)), lengths.long() - 1]

    def pair_input(self, objects: Tensor, q: Tensor, first: nn.Linear | None = None) -> Tensor:
        """``g``'s first pre-activation for every pair, ``(B, N, N, units)``.

        ``first`` defaults to ``self.g[0]``; pair ``(i, j)`` reads ``[o_i; o_j; q]``.
        """
        first = self.g[0] if first is None else first
        d = self.object_size
        w = first.weight
        a = objects @ w[:, :d].T
        b = objects @ w[:, d:2 * d].T
        c = q @ w[:, 2 * d:].T + first.bias
        return a[:, :, None] + b[:, None, :] + c[:, None, None]

    def pairs(self, objects: Tensor, q: Tensor) -> Tensor:
        """``g(o_i, o_j, q)`` for every pair, ``(B, N, N, units)``."""
        h = torch.relu(self.pair_input(objects, q))
        return self.g[2:](h)

    def forward(self, image: Tensor, tokens: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Answer logits ``(B, n_answers)``.

        ``tokens`` are right-padded word ids ``(B, L)``; ``lengths`` defaults to the number
        of non-padding tokens.
        """
        if lengths is None:
            lengths = (tokens != 0).sum(1)
        if image.dim() != 4 or image.shape[1] != 3:
            raise ValueError(f"image must have shape (B, 3, H, W), got {tuple(image.shape)}")
        if tokens.dim() != 2 or len(tokens) != len(image):
            raise ValueError(f"tokens must have shape (B, L) with B = {len(image)}, "
                             f"got {tuple(tokens.shape)}")
        if bool((lengths < 1).any()) or bool((lengths > tokens.shape[1]).any()):
            raise ValueError(f"lengths must lie in [1, {tokens.shape[1]}]")
        o = self.objects(image)
        q = self.question(tokens, lengths)
        return self.f(self.pairs(o, q).mean((1, 2)))


def build_relation_network(**kwargs) -> RelationNetwork:
    """Builder used by ``lrp_teach.pretrained`` (untrained :class:`RelationNetwork`)."""
    return RelationNetwork(**kwargs)


