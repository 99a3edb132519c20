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

The first layer of ``g`` is one ``nn.Linear`` on the concatenation ``[o_i; o_j; q]``; the
forward pass evaluates it as ``W_1 o_i + W_2 o_j + W_3 q + b`` (the same numbers) so that the
``N^2`` pairs cost ``N`` projections.
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
    "ImageModel",
    "MASKS",
    "METHODS",
    "PARTS",
    "RelationNetwork",
    "VQARelevance",
    "build_relation_network",
    "centre_logits",
    "conservation_table",
    "draw_architecture",
    "draw_pairs",
    "evaluate_explanations",
    "explain",
    "explanation_maps",
    "grad_cam",
    "ground_truth_scores",
    "plot_question",
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
        Widths of the MLPs ``g`` (two layers) and ``f`` (two layers, the second gives the
        logits).
    """

    def __init__(self, vocab_size: int = len(VOCAB), n_answers: int = len(ANSWERS),
                 channels: tuple[int, int, int] = (16, 24, 24), embed: int = 32,
                 question: int = 64, g_units: int = 64, f_units: int = 64,
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
        self.g = nn.Sequential(nn.Linear(2 * self.object_size + question, g_units), nn.ReLU(),
                               nn.Linear(g_units, g_units), nn.ReLU())
        self.f = nn.Sequential(nn.Linear(g_units, f_units), nn.ReLU(),
                               nn.Linear(f_units, n_answers))
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, GRID), torch.linspace(-1, 1, GRID),
                                indexing="ij")
        self.register_buffer("coords", torch.stack([xs, ys], -1).reshape(-1, 2),
                             persistent=False)
        # parameter-free markers: the engine reads the relevance of the objects and of the
        # question code at their outputs (lt.attribute(..., at=["object_code", ...]))
        self.object_code = nn.Identity()
        self.question_code = nn.Identity()

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
        """``[o_i; o_j; q]`` for every ordered pair of objects, ``(B, N, N, 2(C + 2) + H)``."""
        b, n, d = objects.shape
        o_i = objects[:, :, None, :].expand(b, n, n, d)
        o_j = objects[:, None, :, :].expand(b, n, n, d)
        q_ij = q[:, None, None, :].expand(b, n, n, q.shape[-1])
        return torch.cat([o_i, o_j, q_ij], -1)

    def pair_input(self, objects: Tensor, q: Tensor) -> Tensor:
        """``g``'s first pre-activation for every pair, ``(B, N, N, units)``."""
        return self.g[0](self.pair_tensor(objects, q))

    def pairs(self, objects: Tensor, q: Tensor) -> Tensor:
        """``g(o_i, o_j, q)`` for every pair, ``(B, N, N, units)``."""
        return self.g(self.pair_tensor(objects, q))

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
        The total relevance ``(B,)`` at each stage, from the logit down to pixels and words.
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
    "g (eps)": ("pairs", "objects + question"),
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
            cnn_composite=None) -> VQARelevance:
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
    composite = Composite(by_type={nn.Linear: Epsilon(epsilon), nn.Conv2d: Gamma(gamma),
                                   nn.LSTM: Epsilon(lstm_epsilon)},
                          by_name=by_name,
                          first=None if cnn_composite is not None else ZBox(low, high))
    res = attribute(work, (image, tokens, lengths), target, composite,
                    at=("object_code", "question_code", "g"))
    pixels, words = res.inputs[0], res.inputs[1]
    r_objects, r_q = res.at["object_code"], res.at["question_code"]
    r_pairs = res.at["g"].sum(-1)
    stages = {
        "logit": res.logit,
        "pairs": r_pairs.sum((1, 2)),
        "objects + question": r_objects.sum((1, 2)) + r_q.sum(1),
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


def _lrp_pixels(model, image, tokens, lengths, target):
    return explain(model, image, tokens, lengths, target).pixels


def _baseline(name: str):
    from . import baselines

    fn = baselines.METHODS[name]

    def run(model, image, tokens, lengths, target):
        kwargs = {}
        if name == "Integrated Gradients":
            kwargs = {"steps": 16, "batch_size": 16 * len(image)}
        elif name == "SmoothGrad":
            kwargs = {"samples": 16, "batch_size": 16 * len(image)}
        return fn(model, (image, tokens, lengths), target, **kwargs)

    return run


#: The methods of the evaluation: name -> ``fn(model, image, tokens, lengths, target)``
#: returning a pixel map ``(B, 3, H, W)`` or ``(B, H, W)``.
METHODS = {
    "LRP": _lrp_pixels,
    "Gradient": _baseline("Gradient"),
    "Gradient x Input": _baseline("Gradient x Input"),
    "Integrated Gradients": _baseline("Integrated Gradients"),
    "SmoothGrad": _baseline("SmoothGrad"),
    "Guided Backprop": _baseline("Guided Backprop"),
    "Grad-CAM": grad_cam,
}

MASKS = ("single", "union", "all")


def ground_truth_scores(R: Tensor, masks: dict[str, Tensor],
                        pooling: str = "sum,pos") -> dict[str, Tensor]:
    """Relevance mass accuracy, rank accuracy and pointing game against each GT mask.

    Uses :func:`lrp_teach.evaluation.relevance_mass_accuracy`,
    :func:`~lrp_teach.evaluation.relevance_rank_accuracy` and
    :func:`~lrp_teach.evaluation.pointing_game` (CLEVR-XAI, ``arras2022clevrxai``):

    .. math::  \\mathrm{mass} = \\frac{\\sum_{p \\in GT} R_p}{\\sum_p R_p},\\qquad
               \\mathrm{rank} = \\frac{|\\mathrm{top}_{|GT|}(R) \\cap GT|}{|GT|}

    on the map pooled over channels by ``pooling``.

    Returns
    -------
    dict
        ``"mass_<mask>"``, ``"rank_<mask>"``, ``"pointing_<mask>"`` -> ``(B,)`` float tensors.
    """
    from .evaluation import pointing_game, relevance_mass_accuracy, relevance_rank_accuracy

    out = {}
    for kind, mask in masks.items():
        out[f"mass_{kind}"] = relevance_mass_accuracy(R, mask, pooling).double()
        out[f"rank_{kind}"] = relevance_rank_accuracy(R, mask, pooling).double()
        out[f"pointing_{kind}"] = pointing_game(R, mask, pooling).double()
    return out


def explanation_maps(model: RelationNetwork, data, index: Tensor, *,
                     methods: dict | None = None, batch_size: int = 16) -> dict[str, Tensor]:
    """Pixel maps of each method for the questions ``index`` of ``data``.

    Each method explains the model's predicted answer. Returns ``{method: (n, 3, H, W)}`` (or
    ``(n, H, W)`` for Grad-CAM), ready for :func:`ground_truth_scores` with any pooling.
    """
    methods = METHODS if methods is None else methods
    index = torch.as_tensor(index, dtype=torch.long).reshape(-1)
    if len(index) == 0:
        raise ValueError("index is empty: no questions to evaluate")
    from .engine.state import preserved

    maps: dict[str, list[Tensor]] = {name: [] for name in methods}
    with preserved(model):
        for start in range(0, len(index), batch_size):
            idx = index[start:start + batch_size]
            image, tokens, lengths, _ = data.batch(idx)
            with torch.no_grad():
                target = model(image, tokens, lengths).argmax(1)
            for name, fn in methods.items():
                maps[name].append(fn(model, image, tokens, lengths, target).detach())
    return {name: torch.cat(v) for name, v in maps.items()}


def evaluate_explanations(model: RelationNetwork, data, index: Tensor, *,
                          methods: dict | None = None, pooling: str = "sum,pos",
                          batch_size: int = 16) -> dict[str, dict[str, Tensor]]:
    """Ground-truth scores of each method on the questions ``index`` of ``data``.

    Each method explains the model's predicted answer; pass only correctly answered
    questions to follow CLEVR-XAI (``arras2022clevrxai``). Returns
    ``{method: {score: (n,) tensor}}`` with the scores of :func:`ground_truth_scores` for the
    masks "single", "union" and "all".
    """
    maps = explanation_maps(model, data, index, methods=methods, batch_size=batch_size)
    masks = data.gt_masks(torch.as_tensor(index, dtype=torch.long).reshape(-1))
    return {name: ground_truth_scores(R, masks, pooling) for name, R in maps.items()}
