"""Measuring explanation quality: perturbation curves and AOPC, ground-truth metrics, and the
model-parameter randomization sanity check.

Everything is batched over images. The perturbation curves of a whole test set are computed
with a few large forward passes instead of one pass per image and step
(:func:`perturbation_curve`); :func:`perturbation_curve_loop` is the slow per-image reference
that the tests compare it with.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from .baselines import Target, resolve_target
from .engine.state import preserved

__all__ = [
    "RandomizationResult",
    "aopc",
    "bootstrap_interval",
    "cascading_randomization",
    "deletion_curve",
    "mean_se",
    "model_randomization",
    "paired_difference",
    "perturbation_curve",
    "perturbation_curve_loop",
    "pointing_game",
    "pool",
    "ranking_stability",
    "region_map",
    "region_order",
    "region_relevance",
    "relevance_mass_accuracy",
    "relevance_rank_accuracy",
    "spearman",
]

ORDERS = ("morf", "lerf", "random")


# ----------------------------------------------------------------------------- regions
def _spatial(x: torch.Tensor) -> tuple[int, ...]:
    if x.dim() == 4:
        return tuple(x.shape[2:])
    if x.dim() == 2:
        return tuple(x.shape[1:])
    raise ValueError(
        f"expected images (B, C, H, W) or vectors (B, D); got a tensor of shape {tuple(x.shape)}"
    )


def region_map(shape: tuple[int, ...], patch: int, device: torch.device | None = None
               ) -> torch.Tensor:
    """Region index of every pixel for non-overlapping ``patch`` x ``patch`` squares.

    ``shape`` is ``(H, W)`` for images or ``(D,)`` for vectors (then regions are runs of
    ``patch`` consecutive features). Regions are numbered row by row; at the right and
    bottom borders they may be cut off.
    """
    if patch < 1:
        raise ValueError(f"patch must be a positive number of pixels, got {patch}")
    if len(shape) == 1:
        return torch.arange(shape[0], device=device) // patch
    if len(shape) != 2:
        raise ValueError(f"shape must be (H, W) or (D,), got {shape}")
    h, w = shape
    rows = torch.arange(h, device=device) // patch
    cols = torch.arange(w, device=device) // patch
    return rows.view(-1, 1) * math.ceil(w / patch) + cols.view(1, -1)


def region_relevance(R: torch.Tensor, patch: int) -> torch.Tensor:
    """Relevance of each region: the sum of ``R`` over its pixels (and channels).

    Returns a tensor of shape ``(B, n_regions)``.
    """
    spatial = _spatial(R)
    ids = region_map(spatial, patch, R.device).flatten()
    per_pixel = (R.sum(1) if R.dim() == 4 else R).reshape(len(R), -1)
    out = torch.zeros(len(R), int(ids.max()) + 1, dtype=R.dtype, device=R.device)
    return out.index_add_(1, ids, per_pixel)


def region_order(R: torch.Tensor, patch: int = 1, order: str = "morf", seed: int = 0
                 ) -> torch.Tensor:
    """The order in which regions are perturbed, as region indices of shape ``(B, n_regions)``.

    ``"morf"``: most relevant first (decreasing region relevance); ``"lerf"``: least relevant
    first; ``"random"``: a seeded random permutation per image (``R`` is ignored). Ties keep
    the region order (stable sort).
    """
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    scores = region_relevance(R, patch)
    if order == "random":
        generator = torch.Generator().manual_seed(seed)
        keys = torch.rand(scores.shape, generator=generator)
        return keys.argsort(1).to(R.device)
    return scores.argsort(dim=1, descending=(order == "morf"), stable=True)


def _fill_like(x: torch.Tensor, fill: str | float | torch.Tensor, low: float, high: float,
               seed: int) -> torch.Tensor:
    if isinstance(fill, str):
        if fill != "uniform":
            raise ValueError(f"fill must be 'uniform', a number or a tensor; got {fill!r}")
        generator = torch.Generator().manual_seed(seed)
        u = torch.rand(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        return low + (high - low) * u
    f = torch.as_tensor(fill, dtype=x.dtype, device=x.device)
    try:
        return torch.broadcast_to(f, x.shape)
    except RuntimeError:
        raise ValueError(
            f"fill of shape {tuple(f.shape)} does not broadcast to x's shape {tuple(x.shape)}"
        ) from None


def _score(model: nn.Module, x: torch.Tensor, t: torch.Tensor, output: str) -> torch.Tensor:
    out = model(x)
    if output == "probability":
        out = out.softmax(1)
    elif output != "logit":
        raise ValueError(f"output must be 'logit' or 'probability', got {output!r}")
    return out.gather(1, t.view(-1, 1)).flatten()


def _prepare(model, x, R, target, patch, steps, per_step, order, fill, low, high, seed):
    if R.shape != x.shape:
        raise ValueError(f"R must have x's shape {tuple(x.shape)}, got {tuple(R.shape)}")
    if per_step < 1:
        raise ValueError(f"per_step must be at least 1, got {per_step}")
    spatial = _spatial(x)
    ids = region_map(spatial, patch, x.device)
    n_regions = int(ids.max()) + 1
    max_steps = math.ceil(n_regions / per_step)
    steps = max_steps if steps is None else steps
    if not 1 <= steps <= max_steps:
        raise ValueError(f"steps must lie in 1..{max_steps} for {n_regions} regions, got {steps}")
    t = resolve_target(model, x, target)
    ranking = region_order(R, patch, order, seed=seed + 1)
    rank = torch.empty_like(ranking)
    rank.scatter_(1, ranking, torch.arange(n_regions, device=x.device).expand_as(ranking))
    pixel_rank = rank[:, ids.flatten()].view(len(x), *spatial)  # (B, *spatial)
    if x.dim() == 4:
        pixel_rank = pixel_rank.unsqueeze(1)
    return t, steps, pixel_rank, _fill_like(x, fill, low, high, seed)


@torch.no_grad()
def perturbation_curve(model: nn.Module, x: torch.Tensor, R: torch.Tensor,
                       target: Target = None, *, patch: int = 2, steps: int | None = None,
                       per_step: int = 1, order: str = "morf",
                       fill: str | float | torch.Tensor = "uniform", low: float = 0.0,
                       high: float = 1.0, seed: int = 0, output: str = "logit",
                       batch_size: int = 256) -> torch.Tensor:
    """Region perturbation (pixel flipping) of Samek et al. :cite:`samek2017evaluating`, batched.

    The image is cut into non-overlapping ``patch`` x ``patch`` regions, ranked by their
    summed relevance. Step :math:`k` replaces the first :math:`k \\cdot` ``per_step`` regions
    of that order by the fill values, giving :math:`x^{(k)}`:

    .. math:: x^{(0)} = x,\\qquad x^{(k)} = g\\big(x^{(k-1)}, r_k\\big),\\quad k = 1..L

    and the curve records :math:`f_c(x^{(k)})`. The default fill draws each replaced pixel
    uniformly from ``[low, high]`` (the same random image for every order, so that orders are
    compared on equal terms).

    Parameters
    ----------
    model, x, target
        As in :func:`lrp_teach.explain`; the target class is fixed on the clean input.
    R : torch.Tensor
        Relevance of ``x``'s shape that ranks the regions (ignored for ``order="random"``).
    patch : int
        Side length of a region, in pixels (features for vector inputs).
    steps : int or None
        Number of perturbation steps :math:`L` (default: until every region is replaced).
    per_step : int
        Regions replaced per step.
    order : {"morf", "lerf", "random"}
        Most relevant first, least relevant first, or a seeded random order.
    fill : "uniform", float or tensor
        Replacement values.
    low, high : float
        Range of the uniform fill (the pixel range of the data).
    seed : int
        Seed of the fill and of the random order.
    output : {"logit", "probability"}
        The score recorded at each step.
    batch_size : int
        Perturbed images per forward pass.

    Returns
    -------
    torch.Tensor
        Shape ``(B, L + 1)``: the score before any perturbation, then after each step.
    """
    t, steps, pixel_rank, fill_values = _prepare(model, x, R, target, patch, steps, per_step,
                                                 order, fill, low, high, seed)
    n = len(x)
    flat_b = torch.arange(n, device=x.device).repeat_interleave(steps + 1)
    flat_k = torch.arange(steps + 1, device=x.device).repeat(n) * per_step
    out = torch.empty(n * (steps + 1), dtype=x.dtype, device=x.device)
    view = (-1,) + (1,) * (x.dim() - 1)
    with preserved(model):
        for start in range(0, len(flat_b), batch_size):
            b = flat_b[start:start + batch_size]
            k = flat_k[start:start + batch_size]
            mask = pixel_rank[b] < k.view(view)
            xs = torch.where(mask, fill_values[b], x[b])
            out[start:start + batch_size] = _score(model, xs, t[b], output)
    return out.view(n, steps + 1)


@torch.no_grad()
def perturbation_curve_loop(model: nn.Module, x: torch.Tensor, R: torch.Tensor,
                            target: Target = None, *, patch: int = 2, steps: int | None = None,
                            per_step: int = 1, order: str = "morf",
                            fill: str | float | torch.Tensor = "uniform", low: float = 0.0,
                            high: float = 1.0, seed: int = 0, output: str = "logit"
                            ) -> torch.Tensor:
    """The same curves as :func:`perturbation_curve`, one image and one step at a time.

    The slow reference implementation, written as the protocol reads: for every image,
    replace the next region and evaluate the model once.
    """
    t, steps, pixel_rank, fill_values = _prepare(model, x, R, target, patch, steps, per_step,
                                                 order, fill, low, high, seed)
    curves = torch.empty(len(x), steps + 1, dtype=x.dtype)
    with preserved(model):
        for i in range(len(x)):
            xi = x[i:i + 1].clone()
            curves[i, 0] = _score(model, xi, t[i:i + 1], output)[0]
            for k in range(1, steps + 1):
                mask = (pixel_rank[i:i + 1] < k * per_step).expand_as(xi)
                xi[mask] = fill_values[i:i + 1][mask]
                curves[i, k] = _score(model, xi, t[i:i + 1], output)[0]
    return curves


def aopc(curves: torch.Tensor, cumulative: bool = False) -> torch.Tensor:
    """Area over the perturbation curve :cite:`samek2017evaluating`, per image.

    .. math:: \\mathrm{AOPC} = \\frac{1}{L+1} \\sum_{k=0}^{L}
              \\big(f(x^{(0)}) - f(x^{(k)})\\big)

    averaged over the data by the caller (``aopc(curves).mean()``). A higher MoRF AOPC means
    the explanation found the regions whose removal hurts the prediction most.

    Parameters
    ----------
    curves : torch.Tensor
        Shape ``(B, L + 1)`` from :func:`perturbation_curve`.
    cumulative : bool
        Return the AOPC after every number of steps :math:`L' = 0..L`, shape ``(B, L + 1)``.

    Returns
    -------
    torch.Tensor
        Shape ``(B,)``, or ``(B, L + 1)`` when ``cumulative``.
    """
    if curves.dim() != 2 or curves.shape[1] < 1:
        raise ValueError(f"curves must have shape (B, L + 1), got {tuple(curves.shape)}")
    drops = curves[:, :1] - curves
    if cumulative:
        counts = torch.arange(1, curves.shape[1] + 1, dtype=curves.dtype, device=curves.device)
        return drops.cumsum(1) / counts
    return drops.mean(1)


# ------------------------------------------------------------------ ground-truth metrics
#: The six channel poolings of the CLEVR-XAI evaluation code :cite:`arras2022clevrxai`.
POOLINGS = ("sum,abs", "sum,pos", "max-norm", "l1-norm", "l2-norm", "l2-norm,sq")


def pool(R: torch.Tensor, pooling: str = "sum,pos") -> torch.Tensor:
    """Pool relevance over channels into one non-negative value per pixel.

    The six poolings of the CLEVR-XAI evaluation code :cite:`arras2022clevrxai`, for the
    channel relevances :math:`R_c` of one pixel:

    ==============  ==========================================  ==========================
    pooling         value                                       signs
    ==============  ==========================================  ==========================
    ``sum,abs``     :math:`|\\sum_c R_c|`                       cancel within the pixel
    ``sum,pos``     :math:`\\max(0, \\sum_c R_c)`                negative pixels count 0
    ``max-norm``    :math:`\\max_c |R_c|`                        ignored
    ``l1-norm``     :math:`\\sum_c |R_c|`                        ignored
    ``l2-norm``     :math:`\\sqrt{\\sum_c R_c^2}`                  ignored
    ``l2-norm,sq``  :math:`\\sum_c R_c^2`                        ignored, large values
                                                                weigh more
    ==============  ==========================================  ==========================

    Images ``(B, C, H, W)`` give ``(B, H, W)``; maps ``(B, H, W)`` and vectors ``(B, D)``
    are taken as one channel.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    if R.dim() == 4:
        channels = R
    elif R.dim() in (2, 3):
        channels = R.unsqueeze(1)
    else:
        raise ValueError(
            f"R must have shape (B, C, H, W), (B, H, W) or (B, D); got {tuple(R.shape)}"
        )
    if pooling == "sum,pos":
        return channels.sum(1).clamp(min=0)
    if pooling == "sum,abs":
        return channels.sum(1).abs()
    if pooling == "max-norm":
        return channels.abs().amax(1)
    if pooling == "l1-norm":
        return channels.abs().sum(1)
    if pooling == "l2-norm":
        return channels.pow(2).sum(1).sqrt()
    return channels.pow(2).sum(1)


def _pooled_and_mask(R: torch.Tensor, mask: torch.Tensor, pooling: str):
    P = pool(R, pooling)
    mask = torch.as_tensor(mask, device=R.device)
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be a boolean tensor, got {mask.dtype}")
    try:
        mask = torch.broadcast_to(mask, P.shape)
    except RuntimeError:
        raise ValueError(
            f"mask of shape {tuple(mask.shape)} does not fit the pooled relevance "
            f"{tuple(P.shape)}"
        ) from None
    P, mask = P.reshape(len(P), -1), mask.reshape(len(P), -1)
    if not mask.any(1).all():
        raise ValueError("every image needs a non-empty ground-truth mask")
    return P, mask


def relevance_mass_accuracy(R: torch.Tensor, mask: torch.Tensor, pooling: str = "sum,pos"
                            ) -> torch.Tensor:
    """Share of the (pooled) relevance that falls inside the ground truth :cite:`arras2022clevrxai`.

    .. math:: \\mathrm{mass} = \\frac{\\sum_{p \\in GT} R_p}{\\sum_{p} R_p}

    Returns a tensor of shape ``(B,)`` with values in ``[0, 1]`` (0 for an all-zero map).
    """
    P, m = _pooled_and_mask(R, mask, pooling)
    total = P.sum(1)
    inside = (P * m).sum(1)
    return torch.where(total > 0, inside / total.clamp(min=torch.finfo(P.dtype).tiny),
                       torch.zeros_like(total))


def relevance_rank_accuracy(R: torch.Tensor, mask: torch.Tensor, pooling: str = "sum,pos"
                            ) -> torch.Tensor:
    """Share of the :math:`K = |GT|` highest-ranked pixels that lie in the ground truth.

    .. math:: \\mathrm{rank} = \\frac{|\\mathrm{top}_K(R) \\cap GT|}{K}

    :cite:`arras2022clevrxai`. Ties among equal relevance values are broken by pixel index.
    Returns a tensor of shape ``(B,)``.
    """
    P, m = _pooled_and_mask(R, mask, pooling)
    order = P.argsort(dim=1, descending=True, stable=True)
    k = m.sum(1, keepdim=True)
    positions = torch.arange(P.shape[1], device=P.device).expand_as(P)
    in_top = torch.zeros_like(m)
    in_top.scatter_(1, order, positions < k)
    return (in_top & m).sum(1).to(P.dtype) / k.squeeze(1).to(P.dtype)


def pointing_game(R: torch.Tensor, mask: torch.Tensor, pooling: str = "sum,pos"
                  ) -> torch.Tensor:
    """Whether the most relevant pixel lies in the ground truth :cite:`zhang2018pointing`.

    .. math:: \\mathrm{hit} = \\mathbb 1\\big[\\arg\\max_p R_p \\in GT\\big]

    Returns a boolean tensor of shape ``(B,)``; ``.float().mean()`` is the hit rate.
    """
    P, m = _pooled_and_mask(R, mask, pooling)
    return m.gather(1, P.argmax(1, keepdim=True)).squeeze(1)


# -------------------------------------------------------------- randomization sanity check
def spearman(a: torch.Tensor, b: torch.Tensor, absolute: bool = False) -> torch.Tensor:
    """Spearman rank correlation between two batches of maps, one value per image.

    .. math:: \\rho = \\mathrm{corr}\\big(\\mathrm{rank}(a), \\mathrm{rank}(b)\\big)

    With ``absolute``, the ranks of :math:`|a|` and :math:`|b|` are compared, as in the
    sanity checks of Adebayo et al. :cite:`adebayo2018`. Channels are summed first. Tied values
    share their average rank; a constant map (no ranking at all) gives 0.
    """
    if a.shape != b.shape:
        raise ValueError(
            f"maps must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}"
        )

    def ranks(v: torch.Tensor) -> torch.Tensor:
        v = v.sum(1) if v.dim() == 4 else v
        v = v.reshape(len(v), -1).double()
        v = (v.abs() if absolute else v).contiguous()
        ordered = v.sort(dim=1).values
        below = torch.searchsorted(ordered, v, right=False)
        upto = torch.searchsorted(ordered, v, right=True)
        r = (below + upto - 1).double() / 2  # tied values share their average rank
        return r - r.mean(1, keepdim=True)

    ra, rb = ranks(a), ranks(b)
    norm = ra.norm(dim=1) * rb.norm(dim=1)
    return torch.where(norm > 0, (ra * rb).sum(1) / norm.clamp(min=1e-300), torch.zeros_like(norm))


def cascading_randomization(model: nn.Module, seed: int = 0,
                            layers: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d,
                                                                    nn.Conv2d)
                            ) -> Iterator[tuple[str, nn.Module]]:
    """Yield copies of ``model`` with ever more layers re-initialized, from the top down.

    Following the cascading model-parameter randomization of Adebayo et al.
    :cite:`adebayo2018`: the first copy has the last layer's weights and bias re-drawn from
    the layer's own initialization (``reset_parameters``), the next also the layer below,
    and so on down to the first layer. ``model`` itself is not changed.

    Yields
    ------
    (name, model)
        The name of the layer randomized last, and the copy (in eval mode).
    """
    names = [name for name, m in model.named_modules() if isinstance(m, layers)]
    if not names:
        raise ValueError(f"the model has no layer of the types {[t.__name__ for t in layers]}")
    current = copy.deepcopy(model).eval()
    modules = dict(current.named_modules())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for name in reversed(names):
            modules[name].reset_parameters()
            yield name, copy.deepcopy(current)


@dataclass(frozen=True)
class RandomizationResult:
    """Similarity of each method's maps to its maps on the trained model.

    Attributes
    ----------
    layers : list of str
        Layer randomized last at each stage (top layer first).
    similarity : dict
        Method name -> tensor of shape ``(len(layers), B)``.
    maps : dict
        Method name -> tensor of shape ``(1 + len(layers), B, ...)``: the map of the trained
        model, then the maps at each stage, for other similarity measures.
    absolute : bool
        Whether ``similarity`` compares absolute values.
    """

    layers: list[str]
    similarity: dict[str, torch.Tensor]
    maps: dict[str, torch.Tensor]
    absolute: bool = True

    def mean(self) -> dict[str, list[float]]:
        """Mean similarity over the images, per method and stage."""
        return {k: v.mean(1).tolist() for k, v in self.similarity.items()}

    def rescore(self, absolute: bool) -> RandomizationResult:
        """The same maps compared with (``absolute=True``) or without absolute values."""
        similarity = {name: torch.stack([spearman(m[0], stage, absolute=absolute)
                                         for stage in m[1:]]) for name, m in self.maps.items()}
        return RandomizationResult(self.layers, similarity, self.maps, absolute)


def model_randomization(model: nn.Module, x: torch.Tensor,
                        methods: dict[str, Callable[..., torch.Tensor]],
                        target: Target = None, *, seed: int = 0, absolute: bool = True
                        ) -> RandomizationResult:
    """The model-parameter randomization test :cite:`adebayo2018` for several methods.

    Each method ``fn(model, x, target)`` explains the trained model and every stage of
    :func:`cascading_randomization`; the result holds the Spearman rank correlation
    (:func:`spearman`) between the two maps of each image,

    .. math:: s_{m,\\ell}(x) = \\rho\\big(R_m(x; \\theta),\\, R_m(x; \\theta_{\\ell})\\big),

    where :math:`\\theta_\\ell` has the layers from the top down to :math:`\\ell` re-drawn.
    A method that passes the test gives maps that change (correlation drops) once the
    weights they should depend on are random. The target classes are fixed on the trained
    model.
    """
    t = resolve_target(model, x, target)
    maps: dict[str, list[torch.Tensor]] = {name: [fn(model, x, t).detach()]
                                           for name, fn in methods.items()}
    layers: list[str] = []
    for layer, randomized in cascading_randomization(model, seed=seed):
        layers.append(layer)
        for name, fn in methods.items():
            maps[name].append(fn(randomized, x, t).detach())
    stacked = {name: torch.stack(v) for name, v in maps.items()}
    return RandomizationResult(layers, {}, stacked, absolute).rescore(absolute)


# ----------------------------------------------------------------------------- uncertainty
def mean_se(values: torch.Tensor) -> tuple[float, float]:
    """Mean and standard error of the mean of a 1-d sample.

    .. math:: \\bar v = \\tfrac1n \\textstyle\\sum_i v_i, \\qquad
              \\mathrm{se} = \\frac{s}{\\sqrt n}, \\quad
              s^2 = \\tfrac{1}{n-1} \\textstyle\\sum_i (v_i - \\bar v)^2

    Two methods whose mean scores differ by less than two standard errors (of the paired
    difference, :func:`paired_difference`) are a tie in this book.

    Parameters
    ----------
    values : torch.Tensor
        One value per case (image, seed, ...), shape ``(n,)`` with ``n >= 2``.

    Returns
    -------
    (float, float)
        :math:`\\bar v` and its standard error.
    """
    v = torch.as_tensor(values, dtype=torch.float64).flatten()
    if len(v) < 2:
        raise ValueError(f"need at least two values for a standard error, got {len(v)}")
    return v.mean().item(), (v.std() / math.sqrt(len(v))).item()


def paired_difference(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """Mean and standard error of the per-case difference ``a - b`` (a paired comparison).

    Scores of two methods on the *same* images are correlated; the standard error of the
    difference of the two means is that of the per-image differences, usually much smaller
    than the two per-method errors combined.

    Parameters
    ----------
    a, b : torch.Tensor
        Scores of two methods on the same cases, shape ``(n,)``.

    Returns
    -------
    (float, float)
        Mean of ``a - b`` and its standard error.
    """
    a = torch.as_tensor(a, dtype=torch.float64).flatten()
    b = torch.as_tensor(b, dtype=torch.float64).flatten()
    if a.shape != b.shape:
        raise ValueError(f"paired scores need the same shape, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    return mean_se(a - b)


def bootstrap_interval(values: torch.Tensor | tuple[torch.Tensor, ...],
                       statistic: Callable[..., torch.Tensor] | None = None, *,
                       samples: int = 2000, level: float = 0.95, seed: int = 0
                       ) -> tuple[float, float]:
    """Percentile bootstrap interval of a statistic over cases.

    The cases (first dimension) are drawn with replacement ``samples`` times; the interval
    holds the central ``level`` share of the statistic over the resamples
    :cite:`efron1993bootstrap`. With several tensors (e.g. the two interactions of each
    question) the same cases are drawn for all of them.

    Parameters
    ----------
    values : torch.Tensor or tuple of torch.Tensor
        Per-case values, first dimension ``n``.
    statistic : callable or None
        Maps resampled values of shape ``(samples, n, ...)`` (one argument per tensor) to one
        value per resample, shape ``(samples,)``; None: the mean.
    samples, level, seed : int, float, int
        Resamples, coverage and seed.

    Returns
    -------
    (float, float)
        Lower and upper end of the interval.
    """
    vals = values if isinstance(values, tuple) else (values,)
    vals = tuple(torch.as_tensor(v, dtype=torch.float64) for v in vals)
    n = len(vals[0])
    if n < 2 or any(len(v) != n for v in vals):
        raise ValueError("need at least two cases, the same number in every tensor")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    generator = torch.Generator().manual_seed(seed)
    index = torch.randint(n, (samples, n), generator=generator)
    stat = statistic or (lambda v: v.mean(1))
    boot = stat(*(v[index] for v in vals)).double()
    q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)
    lo, hi = torch.quantile(boot, q).tolist()
    return lo, hi


def ranking_stability(scores: dict[str, torch.Tensor], *, samples: int = 2000,
                      higher_is_better: bool = True, seed: int = 0) -> dict[str, float]:
    """How often each method comes out first when the cases are resampled.

    A bootstrap of the ranking: the cases are drawn with replacement, the methods are
    ranked by their mean score on the resample, and the share of resamples in which each
    method is first is returned. A winner that is first in, say, 99% of the resamples does
    not owe its place to a few images.

    Parameters
    ----------
    scores : dict
        Method name -> per-case scores, all of shape ``(n,)`` on the same cases.
    samples, seed : int
        Resamples and seed.
    higher_is_better : bool
        Whether the largest mean wins.

    Returns
    -------
    dict
        Method name -> share of resamples in which it is first (the shares add up to 1).
    """
    names = list(scores)
    table = torch.stack([torch.as_tensor(scores[k], dtype=torch.float64) for k in names], 1)
    generator = torch.Generator().manual_seed(seed)
    index = torch.randint(len(table), (samples, len(table)), generator=generator)
    means = table[index].mean(1)  # (samples, methods)
    first = (means if higher_is_better else -means).argmax(1)
    counts = torch.bincount(first, minlength=len(names)).double() / samples
    return dict(zip(names, counts.tolist(), strict=True))
@torch.no_grad()
def deletion_curve(model: nn.Module, inputs, relevance: torch.Tensor, target: torch.Tensor,
                   n_steps: int, *, order: str = "most",
                   lengths: torch.Tensor | None = None) -> torch.Tensor:
    """Accuracy after deleting ``k = 0 .. n_steps`` steps of a sequence, ranked by relevance.

    A deleted step's input vector is set to zero (for token ids: its embedded vector; the
    word stays a time step), and the model's prediction is compared with ``target`` (the
    word deletion of Arras et al. :cite:`arras2017wassa`). ``order="most"`` deletes the most
    relevant steps first, ``"least"`` the least relevant; random scores give the random
    baseline.  Steps at or after ``lengths`` (padding) are never deleted.

    Parameters
    ----------
    model : nn.Module
        Called as ``model(*inputs)``.
    inputs : Tensor or tuple
        Sequences ``(B, T, E)`` or token ids ``(B, T)``, first in the tuple.
    relevance : Tensor
        ``(B, T)`` scores per step.
    target : Tensor
        ``(B,)`` the classes to compare the predictions with.

    Returns
    -------
    torch.Tensor
        ``(n_steps + 1,)`` accuracies; entry 0 is the accuracy on the intact inputs.
    """
    from .baselines import _eval, explained

    if order not in ("most", "least"):
        raise ValueError(f"order must be 'most' or 'least', got {order!r}")
    fmodel, x = explained(model, inputs)
    if x.dim() != 3:
        raise ValueError(f"deletion_curve deletes steps of sequences (B, T, E); got {x.dim()}-D")
    if relevance.shape != x.shape[:2]:
        raise ValueError(
            f"relevance must have shape {tuple(x.shape[:2])}, got {tuple(relevance.shape)}")
    steps = torch.arange(x.shape[1], device=x.device)[None, :]
    valid = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device) if lengths is None else (
        steps < torch.as_tensor(lengths, device=x.device)[:, None])
    rel = relevance.to(x.device, x.dtype) * (1 if order == "most" else -1)
    rank = rel.masked_fill(~valid, float("-inf")).argsort(dim=1, descending=True)
    target = torch.as_tensor(target, device=x.device).long()
    accuracies = []
    with _eval(model):
        for k in range(n_steps + 1):
            keep = torch.ones_like(rel)
            keep.scatter_(1, rank[:, :k], 0.0)
            keep = torch.where(valid, keep, torch.ones_like(keep))
            pred = fmodel(x * keep[..., None]).argmax(1)
            accuracies.append((pred == target).to(x.dtype).mean())
    return torch.stack(accuracies).cpu()
