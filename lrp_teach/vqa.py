"""A relation network for CLEVR-lite and its LRP explanation.

The model is the relation network of Santoro et al. 2017 (``santoro2017``), scaled
down to run on a laptop CPU:

* a small CNN (``Conv2d/BatchNorm2d/ReLU`` three times, with non-overlapping kernels of
  sizes 2, 2 and 3 and equal strides) turns the ``48 x 48`` image into a ``4 x 4`` feature
  map; each cell sees exactly its own ``12 x 12`` pixels, and with its two coordinates in
  [-1, 1] appended it is an "object" ``o_i``;
* an ``nn.Embedding`` and a one-layer ``nn.LSTM`` encode the question; ``q`` is the hidden
  state after the last word;
* an MLP ``g`` reads every ordered pair ``(o_i, o_j, q)``;
* its outputs are summed over the ``N^2`` pairs, scaled by ``1/N`` (a constant that keeps
  the sum of the 256 pairs in a good range for training), and an MLP ``f`` maps the result to
  the answer logits:

.. math::  \\mathrm{RN}(O, q) = f\\Big(\\frac{1}{N}\\sum_{i,j} g(o_i, o_j, q)\\Big).

The first layer of ``g`` is one ``nn.Linear`` on the concatenation ``[o_i; o_j; q]``, and
:meth:`RelationNetwork.forward` builds that concatenation, so that an explanation sees the
layer as written. Training uses :meth:`RelationNetwork.factored`, the same function with the
layer evaluated as ``W_1 o_i + W_2 o_j + W_3 q + b``: ``N`` projections instead of ``N^2``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from .baselines import HeldInputs
from .datasets.clevr_lite import ANSWERS, GRID, IMAGE_SIZE, VOCAB
from .plot import draw_architecture, draw_pairs, plot_question  # the chapter's figures

__all__ = [
    "CONTROLS",
    "CONVENTIONS",
    "ImageModel",
    "MASKS",
    "METHODS",
    "PARTS",
    "RelationNetwork",
    "VQARelevance",
    "balanced_sample",
    "build_relation_network",
    "centre_logits",
    "conservation_table",
    "contrast_map",
    "draw_architecture",
    "draw_pairs",
    "evaluate_explanations",
    "explain",
    "explanation_maps",
    "grad_cam",
    "ground_truth_scores",
    "image_map",
    "plot_question",
    "randomized",
]


class RelationNetwork(nn.Module):
    """Relation network: CNN objects + LSTM question -> pairwise MLP g -> scaled sum -> MLP f.

    Parameters
    ----------
    vocab_size, n_answers : int
        Question vocabulary and answer set sizes.
    channels : tuple of int
        Output channels of the three convolutions (kernel = stride = 2, 2, 3).
    embed, question : int
        Word embedding size and LSTM hidden size.
    g_units, f_units : int
        Widths of the MLPs ``g`` and ``f`` (two layers, the second gives the logits).
    g_layers : int
        Number of ``Linear/ReLU`` layers of ``g`` (at least 1).
    pair_geometry : bool
        Append to every pair the constant :math:`(x_j - x_i, y_j - y_i, \\lVert \\cdot
        \\rVert)` of its two cells (:attr:`pair_coords`), so that ``g`` reads the distance of
        the pair directly instead of computing it from the four coordinates.
    """

    def __init__(self, vocab_size: int = len(VOCAB), n_answers: int = len(ANSWERS),
                 channels: tuple[int, int, int] = (16, 24, 24), embed: int = 32,
                 question: int = 64, g_units: int = 64, f_units: int = 64,
                 g_layers: int = 2, pair_geometry: bool = False,
                 pair_scale: float | None = None) -> None:
        super().__init__()
        #: The pair outputs are summed and multiplied by ``pair_scale`` (default ``1/N``).
        self.pair_scale = 1.0 / GRID ** 2 if pair_scale is None else float(pair_scale)
        c1, c2, c3 = channels
        layers: list[nn.Module] = []
        for cin, cout, k in ((3, c1, 2), (c1, c2, 2), (c2, c3, 3)):
            layers += [nn.Conv2d(cin, cout, k, stride=k), nn.BatchNorm2d(cout), nn.ReLU()]
        self.cnn = nn.Sequential(*layers)
        self.embedding = nn.Embedding(vocab_size, embed, padding_idx=0)
        self.lstm = nn.LSTM(embed, question, batch_first=True)
        self.object_size = c3 + 2
        if int(g_layers) < 1:
            raise ValueError(f"g_layers must be at least 1, got {g_layers!r}")
        self.pair_geometry = bool(pair_geometry)
        self.geometry_size = 3 if self.pair_geometry else 0
        g: list[nn.Module] = [nn.Linear(2 * self.object_size + question + self.geometry_size,
                                        g_units), nn.ReLU()]
        for _ in range(int(g_layers) - 1):
            g += [nn.Linear(g_units, g_units), nn.ReLU()]
        self.g = nn.Sequential(*g)
        self.f = nn.Sequential(nn.Linear(g_units, f_units), nn.ReLU(),
                               nn.Linear(f_units, n_answers))
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, GRID), torch.linspace(-1, 1, GRID),
                                indexing="ij")
        self.register_buffer("coords", torch.stack([xs, ys], -1).reshape(-1, 2),
                             persistent=False)
        delta = self.coords[None, :, :] - self.coords[:, None, :]     # (N, N, 2): c_j - c_i
        self.register_buffer("pair_coords", torch.cat([delta, delta.norm(dim=-1, keepdim=True)],
                                                      -1), persistent=False)
        # parameter-free markers: the engine reads the relevance of the objects and of the
        # question code at their outputs (lt.attribute(..., at=["object_code", ...]))
        self.object_code = nn.Identity()
        self.question_code = nn.Identity()
        self.pair_code = nn.Identity()

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

    def pair_tensor(self, objects: Tensor, q: Tensor) -> Tensor:
        """``[o_i; o_j; q]`` (and the pair's geometry) for every ordered pair of objects.

        Shape ``(B, N, N, 2(C + 2) + H)``, plus 3 with ``pair_geometry``. The result passes
        the parameter-free marker ``pair_code``, where :func:`explain` reads the relevance of
        the geometry.
        """
        b, n, d = objects.shape
        o_i = objects[:, :, None, :].expand(b, n, n, d)
        o_j = objects[:, None, :, :].expand(b, n, n, d)
        q_ij = q[:, None, None, :].expand(b, n, n, q.shape[-1])
        parts = [o_i, o_j, q_ij]
        if self.pair_geometry:
            parts.append(self.pair_coords.to(objects).expand(b, n, n, 3))
        return self.pair_code(torch.cat(parts, -1))

    def pair_input(self, objects: Tensor, q: Tensor) -> Tensor:
        """``g``'s first pre-activation for every pair, ``(B, N, N, units)``."""
        return self.g[0](self.pair_tensor(objects, q))

    def pairs(self, objects: Tensor, q: Tensor) -> Tensor:
        """``g(o_i, o_j, q)`` for every pair, ``(B, N, N, units)``."""
        return self.g(self.pair_tensor(objects, q))

    def factored(self, image: Tensor, tokens: Tensor, lengths: Tensor) -> Tensor:
        """The logits of :meth:`forward`, with ``g``'s first layer split by its input blocks.

        :math:`W [o_i; o_j; q] + b = W_1 o_i + W_2 o_j + (W_3 q + b)`: the same function in
        fewer operations (equal to :meth:`forward` up to float rounding), for training and
        accuracy. Inputs are not checked.
        """
        o = self.objects(image)
        q = self.question(tokens, lengths)
        first, d = self.g[0], self.object_size
        w1, w2, w3, w4 = first.weight.split([d, d, q.shape[-1], self.geometry_size], dim=1)
        h = ((o @ w1.T)[:, :, None] + (o @ w2.T)[:, None, :]
             + (nn.functional.linear(q, w3, first.bias))[:, None, None])
        if self.pair_geometry:
            h = h + (self.pair_coords.to(o) @ w4.T)[None]
        return self.f(self.g[1:](h).sum((1, 2)) * self.pair_scale)

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
        o = self.object_code(self.objects(image))
        q = self.question_code(self.question(tokens, lengths))
        return self.f(self.pairs(o, q).sum((1, 2)) * self.pair_scale)


def centre_logits(model: RelationNetwork) -> RelationNetwork:
    """A copy of ``model`` whose logits are centred: :math:`z'_t = z_t - \\frac{1}{K}\\sum_k z_k`.

    The output layer's weights and bias lose their mean over the :math:`K` answers,
    :math:`w'_t = w_t - \\bar w`, :math:`b'_t = b_t - \\bar b`. The softmax, and so the
    prediction, is unchanged (it is invariant to a shift of all logits), but the explained
    quantity becomes the evidence for answer :math:`t` *relative to the average answer*
    instead of a raw logit, which can be negative even for the winning answer
    (``montavon2019overview`` discusses explaining such differences of logits).
    """
    if not isinstance(model, RelationNetwork):
        raise TypeError(f"model must be a RelationNetwork, got {type(model).__name__}")
    new = copy.deepcopy(model)
    last = new.f[-1]
    with torch.no_grad():
        last.weight -= last.weight.mean(0, keepdim=True)
        last.bias -= last.bias.mean()
    return new


def build_relation_network(**kwargs) -> RelationNetwork:
    """Builder used by ``lrp_teach.pretrained`` (untrained :class:`RelationNetwork`)."""
    return RelationNetwork(**kwargs)




# --------------------------------------------------------------------------- explanation


def _check_inputs(model, image, tokens, lengths):
    if not isinstance(model, RelationNetwork):
        raise TypeError(f"model must be an lrp_teach.vqa.RelationNetwork, got "
                        f"{type(model).__name__}")
    if not isinstance(image, Tensor) or not image.is_floating_point():
        raise TypeError("image must be a floating-point tensor of shape (B, 3, H, W)")
    if image.dim() != 4 or image.shape[1] != 3:
        raise ValueError(f"image must have shape (B, 3, H, W), got {tuple(image.shape)}")
    if not isinstance(tokens, Tensor) or tokens.is_floating_point():
        raise TypeError("tokens must be an integer tensor of shape (B, L)")
    if tokens.dim() != 2 or len(tokens) != len(image):
        raise ValueError(f"tokens must have shape (B, L) with B = {len(image)}, "
                         f"got {tuple(tokens.shape)}")
    if lengths is None:
        lengths = (tokens != 0).sum(1)
    lengths = torch.as_tensor(lengths, dtype=torch.long, device=tokens.device).reshape(-1)
    if len(lengths) != len(tokens):
        raise ValueError(f"lengths has {len(lengths)} entries, the batch has {len(tokens)}")
    if bool((lengths < 1).any()) or bool((lengths > tokens.shape[1]).any()):
        raise ValueError(f"lengths must lie in [1, {tokens.shape[1]}]")
    return lengths


@dataclass
class VQARelevance:
    """The parts of one LRP explanation of the relation network (``(B, ...)`` tensors).

    Attributes
    ----------
    pixels : Tensor
        ``(B, 3, H, W)`` relevance of the image.
    words : Tensor
        ``(B, L)`` relevance of the question words (0 on padding).
    pairs : Tensor
        ``(B, N, N)`` relevance of ``g(o_i, o_j, q)`` for each ordered pair of cells.
    objects : Tensor
        ``(B, N, C + 2)`` relevance of the objects (feature-map cells and coordinates).
    question : Tensor
        ``(B, H)`` relevance of the question code ``q``.
    logit, target : Tensor
        The explained logit and answer index, ``(B,)``.
    stages : dict of str to Tensor
        The total relevance ``(B,)`` at each stage, from the logit down to pixels and words;
        ``"geometry"`` is the relevance of the pairs' geometry (0 without ``pair_geometry``).
    """

    pixels: Tensor
    words: Tensor
    pairs: Tensor
    objects: Tensor
    question: Tensor
    logit: Tensor
    target: Tensor
    stages: dict[str, Tensor] = field(default_factory=dict)

    @property
    def coordinates(self) -> Tensor:
        """``(B,)`` relevance of the coordinate channels (the last two object features)."""
        return self.objects[..., -2:].sum((1, 2))

    @property
    def coordinate_share(self) -> Tensor:
        """``(B,)`` share of the coordinates in the *absolute* relevance reaching g's input.

        .. math:: \\frac{\\sum_i (|R_{x_i}| + |R_{y_i}|)}
                  {\\sum_{i,d} |R_{o_{i,d}}| + \\sum_k |R_{q_k}|}

        Absolute values, because positive and negative relevance cancel in the plain sums.
        """
        total = self.objects.abs().sum((1, 2)) + self.question.abs().sum(1)
        return self.objects[..., -2:].abs().sum((1, 2)) / total

    @property
    def image_map(self) -> Tensor:
        """``(B, H, W)`` pixel relevance summed over the colour channels."""
        return self.pixels.sum(1)

    def report(self) -> str:
        """The conservation report: relevance at each stage and what each part absorbed."""
        return conservation_table(self.stages)

    def __str__(self) -> str:
        return self.report()


#: The stages of the bookkeeping and, for each part, the stage above and below it.
PARTS = {
    "f (eps)": ("logit", "pairs"),
    "g (eps)": ("pairs", "g input"),
    "CNN (z^B + gamma, or cnn_composite)": ("cells", "pixels"),
    "LSTM (signal-take-all)": ("question", "words"),
}


def conservation_table(stages: dict[str, Tensor]) -> str:
    """Text table of the relevance per stage (batch means) and the share each part absorbed."""
    lines = [f"{'stage':<22}{'mean total':>12}"]
    for name, value in stages.items():
        lines.append(f"{name:<22}{value.mean().item():>12.4f}")
    lines.append(f"{'part':<36}{'in':>10}{'out':>10}{'absorbed':>10}")
    for part, (top, bottom) in PARTS.items():
        r_in, r_out = stages[top].mean().item(), stages[bottom].mean().item()
        lines.append(f"{part:<36}{r_in:>10.4f}{r_out:>10.4f}{r_in - r_out:>10.4f}")
    return "\n".join(lines)


def explain(model: RelationNetwork, image: Tensor, tokens: Tensor, lengths: Tensor | None = None,
            target: int | Tensor | None = None, *, low: float = 0.0, high: float = 1.0,
            gamma: float = 0.25, epsilon: float = 1e-6, lstm_epsilon: float = 1e-3,
            cnn_composite=None, mlp_rule=None) -> VQARelevance:
    """LRP for the relation network: relevance of pixels, words, object pairs and coordinates.

    The engine runs ``RelationNetwork.forward`` itself (:func:`lrp_teach.attribute`), with
    these rules (``arras2022clevrxai``, ``montavon2019overview``):

    * ``f`` and ``g``: the ε-rule, :math:`R_j = \\sum_k a_j w_{jk} R_k / (z_k + \\epsilon\\,
      \\mathrm{sign}(z_k))`; ``g``'s first layer reads the concatenation
      :math:`[o_i; o_j; q]`, so it splits each pair's relevance between the two objects and
      the question;
    * the scaled sum over pairs: proportional (the plain sum's gradient),
      :math:`R_{ij} = g_{ij}\\, R / \\sum g`;
    * the CNN (BatchNorm folded by :func:`lrp_teach.canonize`): LRP-γ, and z^B with the box
      ``[low, high]`` at the pixels;
    * the LSTM: the engine's ``nn.LSTM`` rules (Arras et al. 2017, signal-take-all, ε =
      ``lstm_epsilon``);
    * the coordinate channels keep their relevance, reported by
      :attr:`VQARelevance.coordinates`.

    Pair, object and question relevance are activation x gradient at ``g``'s output and at
    the model's ``object_code`` and ``question_code`` markers.  The model is only read.

    Parameters
    ----------
    model : RelationNetwork
    image : Tensor
        ``(B, 3, H, W)`` images in ``[low, high]``.
    tokens : Tensor
        ``(B, L)`` right-padded word ids.
    lengths : Tensor, optional
        ``(B,)`` question lengths (default: the number of non-zero tokens).
    target : int, LongTensor or None
        Answer to explain; ``None`` explains the predicted answer.
    low, high : float
        Pixel bounds of the z^B rule.
    gamma : float
        γ of the convolutions after the first.
    epsilon : float
        ε of the MLPs ``g`` and ``f``.
    lstm_epsilon : float
        ε of the LSTM's linear maps.
    cnn_composite : lrp_teach.composites.Composite, optional
        Rules for the (canonized) CNN instead of z^B + γ, e.g.
        ``lt.composites.EpsilonGamma()`` to use γ at the pixels too.
    mlp_rule : lrp_teach.rules.Rule, optional
        Rule of every ``nn.Linear`` of ``f`` and ``g`` instead of ``Epsilon(epsilon)``, e.g.
        ``AlphaBeta(1, 0)``.

    Returns
    -------
    VQARelevance
    """
    from .engine.canonize import canonize
    from .engine.composites import Composite
    from .engine.core import attribute
    from .rules import Epsilon, Gamma, ZBox

    lengths = _check_inputs(model, image, tokens, lengths)
    work = model
    if work.g[0].weight.dtype != image.dtype:
        work = copy.deepcopy(model).to(image.dtype)
    work = canonize(work, image, tokens, lengths)
    by_name = {}
    if cnn_composite is not None:
        by_name = {f"cnn.{a.name}": a.rule for a in cnn_composite.assign(work.cnn)}
    composite = Composite(by_type={nn.Linear: Epsilon(epsilon) if mlp_rule is None else mlp_rule,
                                   nn.Conv2d: Gamma(gamma),
                                   nn.LSTM: Epsilon(lstm_epsilon)},
                          by_name=by_name,
                          first=None if cnn_composite is not None else ZBox(low, high))
    res = attribute(work, (image, tokens, lengths), target, composite,
                    at=("object_code", "question_code", "g")
                    + (("pair_code",) if work.pair_geometry else ()))
    pixels, words = res.inputs[0], res.inputs[1]
    r_objects, r_q = res.at["object_code"], res.at["question_code"]
    r_pairs = res.at["g"].sum(-1)
    r_geometry = (res.at["pair_code"][..., -work.geometry_size:].sum((1, 2, 3))
                  if work.pair_geometry else torch.zeros_like(res.logit))
    stages = {
        "logit": res.logit,
        "pairs": r_pairs.sum((1, 2)),
        "g input": r_objects.sum((1, 2)) + r_q.sum(1) + r_geometry,
        "geometry": r_geometry,
        "cells": r_objects[..., :-2].sum((1, 2)),
        "coordinates": r_objects[..., -2:].sum((1, 2)),
        "question": r_q.sum(1),
        "pixels": pixels.sum((1, 2, 3)),
        "words": words.sum(1),
    }
    return VQARelevance(pixels=pixels, words=words, pairs=r_pairs, objects=r_objects,
                        question=r_q, logit=res.logit, target=res.target, stages=stages)


# --------------------------------------------------------------------------- baselines


class ImageModel(HeldInputs):
    """The relation network as a function of the image alone, the question held fixed.

    ``forward(x)`` answers the fixed questions about ``x``; when ``x`` stacks ``k`` copies
    of the batch (as Integrated Gradients and SmoothGrad do), the questions are repeated
    ``k`` times (:class:`lrp_teach.baselines.HeldInputs`).  The baselines do this by
    themselves when called with ``(image, tokens, lengths)``.
    """

    def __init__(self, model: RelationNetwork, tokens: Tensor, lengths: Tensor) -> None:
        super().__init__(model, (None, tokens, lengths), 0, batch=len(tokens))
        self.tokens, self.lengths = tokens, lengths


def grad_cam(model: RelationNetwork, image: Tensor, tokens: Tensor,
             lengths: Tensor | None = None, target: int | Tensor | None = None, *,
             upsample: bool = True) -> Tensor:
    """Grad-CAM on the last convolutional block (``selvaraju2017gradcam``), upsampled.

    .. math::  L = \\mathrm{ReLU}\\Big(\\sum_c \\alpha_c A_c\\Big),\\qquad
               \\alpha_c = \\frac{1}{hw}\\sum_{u,v} \\frac{\\partial f_t}{\\partial A_{c,uv}}

    with :math:`A` the CNN's output (after the last BatchNorm and ReLU), upsampled to the
    image bilinearly, so that each cell's value peaks at the cell's centre.

    Returns
    -------
    Tensor
        ``(B, H, W)`` non-negative map, or the ``(B, h, w)`` cell map when ``upsample`` is
        False.
    """
    from .engine.state import preserved, resolve_target

    lengths = _check_inputs(model, image, tokens, lengths)
    with preserved(model), torch.enable_grad():
        fmap = model.cnn(image.detach()).detach().requires_grad_(True)
        q = model.question(tokens, lengths)
        out = model.f(model.pairs(model.objects(image, features=fmap), q).sum((1, 2))
                      * model.pair_scale)
        t = resolve_target(out, target)
        (grad,) = torch.autograd.grad(out.gather(1, t[:, None]).sum(), fmap)
    alpha = grad.mean((2, 3), keepdim=True)
    cam = torch.relu((alpha * fmap.detach()).sum(1, keepdim=True))
    if not upsample:
        return cam[:, 0]
    return nn.functional.interpolate(cam, size=image.shape[-2:], mode="bilinear",
                                     align_corners=False)[:, 0]


def _convention(name: str) -> dict:
    from .engine.composites import Composite, EpsilonGamma
    from .engine.rules import AlphaBeta

    z_plus = Composite(by_type={nn.Conv2d: AlphaBeta(1.0, 0.0)})
    return {"a1b0": {"cnn_composite": z_plus, "mlp_rule": AlphaBeta(1.0, 0.0)},
            "eps + z+": {"cnn_composite": z_plus},
            "gamma + zB": {},
            "gamma": {"cnn_composite": EpsilonGamma(gamma=0.25)}}[name]


#: The LRP conventions of the evaluation: method name -> key of its rules for
#: :func:`explain`.
#:
#: * ``"LRP α1β0"``: α1β0 (= z⁺ on these non-negative inputs) on every linear layer and
#:   convolution, the pixel layer included: the rules of the CLEVR-XAI reproduction of Sixt
#:   and Landgraf (``sixt2022dtd``);
#: * ``"LRP ε + z⁺"``: ε in ``f`` and ``g``, z⁺ on every convolution;
#: * ``"LRP γ + z^B"``: ε in ``f`` and ``g``, LRP-γ on the upper convolutions and z^B at
#:   the pixels (the default of :func:`explain`);
#: * ``"LRP γ"``: ε in ``f`` and ``g``, LRP-γ on every convolution.
CONVENTIONS = {
    "LRP α1β0": "a1b0",
    "LRP ε + z⁺": "eps + z+",
    "LRP γ + z^B": "gamma + zB",
    "LRP γ": "gamma",
}


def _lrp(convention):
    def run(model, image, tokens, lengths, target):
        return explain(model, image, tokens, lengths, target, **_convention(convention)).pixels

    return run


def image_map(model, image, tokens, lengths, target):
    """Control: the image itself as the heatmap, ``(B, 3, H, W)`` (the model is not used)."""
    return image.detach().clone()


def contrast_map(model, image, tokens, lengths, target):
    """Control: each pixel's distance from the floor, :math:`\\sum_c |x_c - m_c|` ``(B, H, W)``.

    :math:`m_c` is the image's median of channel :math:`c`, the floor's colour when the floor
    covers most pixels. The model is not used.
    """
    x = image.detach()
    median = x.flatten(2).median(2).values[:, :, None, None]
    return (x - median).abs().sum(1)


def _baseline(name: str):
    from . import baselines

    fn = baselines.METHODS[name]

    def run(model, image, tokens, lengths, target):
        kwargs = {}
        if name == "Integrated Gradients":
            kwargs = {"steps": 16, "batch_size": 16 * len(image)}
        elif name == "SmoothGrad":
            # one call per question: the noise of a question does not depend on its batch
            each = (lambda k: target[k:k + 1]) if isinstance(target, Tensor) and target.dim() \
                else (lambda k: target)
            return torch.cat([fn(model, (image[k:k + 1], tokens[k:k + 1], lengths[k:k + 1]),
                                 each(k), samples=16, batch_size=16)
                              for k in range(len(image))])
        return fn(model, (image, tokens, lengths), target, **kwargs)

    return run


#: The methods of the evaluation: name -> ``fn(model, image, tokens, lengths, target)``
#: returning a pixel map ``(B, 3, H, W)`` or ``(B, H, W)``. The three LRP conventions of
#: :data:`CONVENTIONS` come first.
METHODS = {
    **{name: _lrp(conv) for name, conv in CONVENTIONS.items()},
    "Gradient": _baseline("Gradient"),
    "Gradient x Input": _baseline("Gradient x Input"),
    "Integrated Gradients": _baseline("Integrated Gradients"),
    "SmoothGrad": _baseline("SmoothGrad"),
    "Guided Backprop": _baseline("Guided Backprop"),
    "Grad-CAM": grad_cam,
}

#: Maps that do not look at the model: what a score means when a method does no better.
CONTROLS = {"image": image_map, "contrast": contrast_map}

MASKS = ("single", "union", "all")


def ground_truth_scores(R: Tensor, masks: dict[str, Tensor],
                        pooling: str = "sum,pos") -> dict[str, Tensor]:
    """Relevance mass accuracy, rank accuracy, pointing game and object share per GT mask.

    Uses :func:`lrp_teach.evaluation.relevance_mass_accuracy`,
    :func:`~lrp_teach.evaluation.relevance_rank_accuracy` and
    :func:`~lrp_teach.evaluation.pointing_game` (CLEVR-XAI, ``arras2022clevrxai``) on the map
    pooled over channels by ``pooling`` (:func:`lrp_teach.evaluation.pool`), :math:`P`:

    .. math::  \\mathrm{mass} = \\frac{\\sum_{p \\in GT} P_p}{\\sum_p P_p},\\qquad
               \\mathrm{rank} = \\frac{|\\mathrm{top}_{|GT|}(P) \\cap GT|}{|GT|}

    When ``masks`` holds ``"all"`` (every object), each other mask also gets its *object
    share*, the part of the relevance on all objects that lies on the mask's objects,

    .. math::  \\mathrm{share} = \\frac{\\sum_{p \\in GT} P_p}{\\sum_{p \\in GT_{all}} P_p}

    (0 when no relevance lies on the objects). It does not reward a map for finding the
    objects, only for choosing among them; a map that is uniform on the objects scores the
    mask's share of the object pixels.

    Returns
    -------
    dict
        ``"mass_<mask>"``, ``"rank_<mask>"``, ``"pointing_<mask>"`` and, for masks other
        than ``"all"``, ``"share_<mask>"`` -> ``(B,)`` float64 tensors.
    """
    from .evaluation import pointing_game, pool, relevance_mass_accuracy, relevance_rank_accuracy

    out = {}
    for kind, mask in masks.items():
        out[f"mass_{kind}"] = relevance_mass_accuracy(R, mask, pooling).double()
        out[f"rank_{kind}"] = relevance_rank_accuracy(R, mask, pooling).double()
        out[f"pointing_{kind}"] = pointing_game(R, mask, pooling).double()
    if "all" in masks:
        P = pool(R, pooling).double().flatten(1)
        on_objects = (P * masks["all"].flatten(1)).sum(1)
        for kind, mask in masks.items():
            if kind != "all":
                inside = (P * mask.flatten(1)).sum(1)
                out[f"share_{kind}"] = torch.where(on_objects > 0, inside / on_objects.clamp(
                    min=torch.finfo(P.dtype).tiny), torch.zeros_like(inside))
    return out


def explanation_maps(model: RelationNetwork, data, index: Tensor, *,
                     methods: dict | None = None, batch_size: int = 16,
                     target: str = "predicted") -> dict[str, Tensor]:
    """Pixel maps of each method for the questions ``index`` of ``data``.

    Each method explains the model's predicted answer (``target="predicted"``) or the true
    answer (``target="answer"``, for models that were re-initialised). Returns
    ``{method: (n, 3, H, W)}`` (or ``(n, H, W)`` for maps pooled already), ready for
    :func:`ground_truth_scores` with any pooling.
    """
    methods = METHODS if methods is None else methods
    if target not in ("predicted", "answer"):
        raise ValueError(f"target must be 'predicted' or 'answer', got {target!r}")
    index = torch.as_tensor(index, dtype=torch.long).reshape(-1)
    if len(index) == 0:
        raise ValueError("index is empty: no questions to evaluate")
    from .engine.state import preserved

    maps: dict[str, list[Tensor]] = {name: [] for name in methods}
    with preserved(model):
        for start in range(0, len(index), batch_size):
            idx = index[start:start + batch_size]
            image, tokens, lengths, answers = data.batch(idx)
            if target == "answer":
                t = answers
            else:
                with torch.no_grad():
                    t = model(image, tokens, lengths).argmax(1)
            for name, fn in methods.items():
                maps[name].append(fn(model, image, tokens, lengths, t).detach())
    return {name: torch.cat(v) for name, v in maps.items()}


def evaluate_explanations(model: RelationNetwork, data, index: Tensor, *,
                          methods: dict | None = None, pooling: str = "sum,pos",
                          batch_size: int = 16, target: str = "predicted"
                          ) -> dict[str, dict[str, Tensor]]:
    """Ground-truth scores of each method on the questions ``index`` of ``data``.

    Each method explains the model's predicted answer (or the true one, ``target="answer"``);
    pass only correctly answered questions to follow CLEVR-XAI (``arras2022clevrxai``).
    Returns ``{method: {score: (n,) tensor}}`` with the scores of :func:`ground_truth_scores`
    for the masks "single", "union" and "all".
    """
    maps = explanation_maps(model, data, index, methods=methods, batch_size=batch_size,
                            target=target)
    masks = data.gt_masks(torch.as_tensor(index, dtype=torch.long).reshape(-1))
    return {name: ground_truth_scores(R, masks, pooling) for name, R in maps.items()}


#: The parts :func:`randomized` can re-initialise.
RANDOM_PARTS = ("f", "g", "cnn")


def randomized(model: RelationNetwork, parts=("f", "g"), seed: int = 0) -> RelationNetwork:
    """A copy of ``model`` with the layers of ``parts`` re-drawn from their initialisation.

    Every ``nn.Linear`` of ``f`` and ``g``, and with ``"cnn"`` every convolution and
    BatchNorm of the CNN (running statistics included), gets ``reset_parameters()`` under
    the seed ``seed``. The question encoder is kept. This is the model-randomisation control
    of Adebayo et al. (``adebayo2018``) for the ground-truth evaluation: a score that a
    method also reaches on the re-initialised model does not show that its map follows what
    the trained model computes. ``model`` is not changed.
    """
    unknown = set(parts) - set(RANDOM_PARTS)
    if unknown or not parts:
        raise ValueError(f"parts must be a non-empty subset of {RANDOM_PARTS}, got {parts!r}")
    new = copy.deepcopy(model).eval()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for part in RANDOM_PARTS:
            if part in parts:
                for module in getattr(new, part).modules():
                    if isinstance(module, nn.Linear | nn.Conv2d | nn.BatchNorm2d):
                        module.reset_parameters()
    return new


def balanced_sample(data, eligible: Tensor, per_type: int, seed: int = 0) -> Tensor:
    """Indices of ``per_type`` eligible questions of each type, balanced over colour and scene.

    Each question type gets ``per_type`` questions, split as evenly as possible over the five
    named colours; within a (type, colour) cell, questions are taken from the scenes used
    least so far (ties in a seeded random order), so that no scene dominates. ``eligible``
    is a ``(Q,)`` bool mask (for instance the correctly answered questions). Raises an error
    when a cell has too few eligible questions.
    """
    from .datasets.clevr_lite import COLOUR_NAMES, QUESTION_TYPES, encode_question

    eligible = torch.as_tensor(eligible, dtype=torch.bool)
    if eligible.shape != (len(data),):
        raise ValueError(f"eligible must have shape ({len(data)},), got {tuple(eligible.shape)}")
    colour_ids = torch.tensor(encode_question(list(COLOUR_NAMES)))
    named = (data.questions[:, :, None] == colour_ids).any(1).float().argmax(1)
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(data), generator=generator)
    used = torch.zeros(len(data.scenes), dtype=torch.long)
    chosen: list[int] = []
    n_colours = len(COLOUR_NAMES)
    for k, qtype in enumerate(QUESTION_TYPES):
        for c, colour in enumerate(COLOUR_NAMES):
            want = per_type // n_colours + (c < per_type % n_colours)
            cell = order[(eligible & (data.qtypes == k) & (named == c))[order]]
            if len(cell) < want:
                raise ValueError(f"only {len(cell)} eligible {qtype!r} questions about the "
                                 f"{colour} object, {want} needed")
            scenes = data.scene_index[cell]
            # stable sort by how often the scene is used: least used first, random otherwise
            pick = cell[torch.sort(used[scenes], stable=True).indices[:want]]
            used[data.scene_index[pick]] += 1
            chosen.extend(pick.tolist())
    return torch.tensor(chosen, dtype=torch.long)


# ------------------------------------------- the cached ground-truth table of the chapter
#: File in the data folder written by ``benchmarks/clevr_xai_eval.py``.
EVALUATION_FILE = "clevr_xai_eval.json"
#: The scores the cached table keeps (see :func:`ground_truth_scores`).
SCORES = ("mass_single", "mass_union", "mass_all", "rank_single", "rank_union",
          "share_single", "share_union")
#: The scores with per-type means and paired differences between methods in the table.
DETAIL_SCORES = ("mass_single", "rank_single", "share_single", "mass_all")
#: The scores with per-type means in the table.
TYPE_SCORES = ("mass_single", "share_single")
#: The models of the table: the trained one and two re-initialised controls.
MODELS = {"trained": None, "random f, g": ("f", "g"), "random f, g, CNN": ("f", "g", "cnn")}


def evaluation_questions(per_type: int, seed: int = 0):
    """The test split, the trained model, and ``per_type`` balanced correct questions a type.

    The questions are drawn by :func:`balanced_sample` from the correctly answered questions
    of the whole test split, ``per_type`` of each type in the order of
    :data:`~lrp_teach.datasets.clevr_lite.QUESTION_TYPES`; :func:`check_rows` picks the
    first few of each type, which the chapter recomputes live.
    """
    from . import pretrained
    from .datasets.clevr_lite import load_clevr_lite

    model = pretrained.load("clevr_rn")
    test = load_clevr_lite("test")
    with torch.no_grad():
        pred = torch.cat([model.factored(*test.batch(torch.arange(k, min(k + 1024, len(test))))
                                        [:3]).argmax(1) for k in range(0, len(test), 1024)])
    index = balanced_sample(test, pred == test.answers, per_type, seed)
    return test, model, index


def check_rows(per_type: int, check: int) -> Tensor:
    """Positions, in the sample of :func:`evaluation_questions`, of the first ``check`` a type."""
    from .datasets.clevr_lite import QUESTION_TYPES

    return torch.cat([torch.arange(check) + k * per_type for k in range(len(QUESTION_TYPES))])


def evaluation_scores(test, model: RelationNetwork, index: Tensor,
                      poolings=None, batch_size: int = 50) -> dict:
    """Per-question scores ``{model: {pooling: {method: {score: (n,)}}}}`` of every method.

    Methods are :data:`METHODS` and the :data:`CONTROLS`; models the trained one and its
    re-initialised copies of :data:`MODELS` (seed 0). Every method explains the true answer
    (which the trained model gives, as the questions are answered correctly).
    """
    from .evaluation import POOLINGS

    poolings = POOLINGS if poolings is None else poolings
    masks = test.gt_masks(index)
    out: dict = {}
    for name, parts in MODELS.items():
        net = model if parts is None else randomized(model, parts, seed=0)
        methods = {**METHODS, **CONTROLS}
        maps = explanation_maps(net, test, index, methods=methods, batch_size=batch_size,
                                target="answer")
        out[name] = {p: {m: {k: v for k, v in ground_truth_scores(R, masks, p).items()
                             if k in SCORES}
                         for m, R in maps.items()} for p in poolings}
    return out


def summarise_scores(scores: dict, qtypes: Tensor) -> dict:
    """Means ± s.e., per type, paired differences between methods and trained − random.

    ``scores`` is the output of :func:`evaluation_scores`, ``qtypes`` the question type of
    each row. Returns ``{"mean": ..., "by_type": ..., "paired": ..., "vs_random": ...}``,
    each value a ``[mean, s.e.]`` pair (paired: of the per-question difference). Per-type
    values and paired differences between methods (of the trained model) are kept for the
    :data:`DETAIL_SCORES` only.
    """
    from .datasets.clevr_lite import QUESTION_TYPES
    from .evaluation import mean_se, paired_difference

    mean, by_type, by_type_vs, paired, vs_random = {}, {}, {}, {}, {}
    trained = scores["trained"]
    for model_name, per_pool in scores.items():
        for pooling, per_method in per_pool.items():
            for method, per_score in per_method.items():
                for score, v in per_score.items():
                    key = f"{model_name}|{pooling}|{method}|{score}"
                    mean[key] = list(mean_se(v))
                    detail = score in TYPE_SCORES
                    if detail:
                        by_type[key] = {t: list(mean_se(v[qtypes == k]))
                                        for k, t in enumerate(QUESTION_TYPES)}
                    if model_name != "trained":
                        base = trained[pooling][method][score]
                        vs_random[key] = list(paired_difference(base, v))
                    if model_name != "trained" and detail:
                        by_type_vs[key] = {
                            t: list(paired_difference(base[qtypes == k], v[qtypes == k]))
                            for k, t in enumerate(QUESTION_TYPES)}
    for pooling, per_method in trained.items():
        names = list(per_method)
        for a in names:
            for b in names:
                if a < b:
                    for score in DETAIL_SCORES:
                        paired[f"{pooling}|{a}|{b}|{score}"] = list(paired_difference(
                            per_method[a][score], per_method[b][score]))
    return {"mean": mean, "by_type": by_type, "by_type_vs_random": by_type_vs,
            "paired": paired, "vs_random": vs_random}


def evaluation_table(per_type: int = 200, check: int = 8) -> dict:
    """The cached table of ``benchmarks/clevr_xai_eval.py`` (rounded to 1e-6).

    ``"all"`` summarises the ``5 * per_type`` questions, ``"check"`` the first ``check`` of
    each type, which the chapter recomputes live.
    """
    from . import pretrained
    from .utils import round_floats

    test, model, index = evaluation_questions(per_type)
    scores = evaluation_scores(test, model, index)
    rows = check_rows(per_type, check)
    qtypes = test.qtypes[index]

    def subset(tree, r):
        if isinstance(tree, dict):
            return {k: subset(v, r) for k, v in tree.items()}
        return tree[r]

    return round_floats(digits=5, x={
        "per_type": per_type, "check": check, "n": len(index),
        "sha256": pretrained.entry("clevr_rn")["sha256"],
        "index": index.tolist(),
        "command": f"python benchmarks/clevr_xai_eval.py --per-type {per_type} --check {check}",
        "all": {part: _nest(v) for part, v in summarise_scores(scores, qtypes).items()},
        "check_mean": _nest(summarise_scores(subset(scores, rows), qtypes[rows])["mean"]),
    })


def _nest(flat: dict) -> dict:
    """``{"a|b|c": v}`` -> ``{"a": {"b": {"c": v}}}`` (shorter JSON)."""
    out: dict = {}
    for key, value in flat.items():
        *head, last = key.split("|")
        node = out
        for part in head:
            node = node.setdefault(part, {})
        node[last] = value
    return out


def _flatten(tree: dict, depth: int, prefix: str = "") -> dict:
    """Inverse of :func:`_nest` for keys of ``depth`` parts."""
    if depth == 1:
        return {prefix + k: v for k, v in tree.items()}
    out = {}
    for k, v in tree.items():
        out.update(_flatten(v, depth - 1, f"{prefix}{k}|"))
    return out


def load_evaluation_table() -> dict:
    """The cached table (``data/clevr_xai_eval.json``); checks it was made with these weights.

    The summaries come back with the flat keys of :func:`summarise_scores`, such as
    ``table["all"]["mean"]["trained|sum,pos|LRP γ|mass_single"]``.
    """
    import json

    from . import pretrained

    path = pretrained.data_dir() / EVALUATION_FILE
    table = json.loads(path.read_text())
    if table["sha256"] != pretrained.entry("clevr_rn")["sha256"]:
        raise RuntimeError(f"{path} was computed with other clevr_rn weights; rerun "
                           f"{table['command']}")
    table["all"] = {part: _flatten(v, 4) for part, v in table["all"].items()}
    table["check_mean"] = _flatten(table["check_mean"], 4)
    return table
