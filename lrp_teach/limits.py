"""Helpers for chapter 10, "Limitations and outlook".

The chapter teaches what heatmaps cannot say, how explanations react to small input changes
and how they can be manipulated; the machinery it needs but does not teach lives here:

* :func:`interaction`: the joint effect of two input regions, which no first-order heatmap
  shows (the reference of the chapter's graded exercise);
* :func:`softplus_copy` and :func:`manipulate`: the explanation-manipulation attack of
  Dombrowski et al. 2019 :cite:`dombrowski2019` on a smooth copy of a ReLU network;
* :func:`map_correlation` and :func:`stability`: how much a method's map changes under small
  input noise;
* :func:`augment_watermark` and :func:`train_without_shortcut`: the Clever Hans fix of
  retraining with the shortcut made useless :cite:`lapuschkin2019cleverhans`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

__all__ = [
    "augment_watermark",
    "interaction",
    "manipulate",
    "map_correlation",
    "region_share",
    "same_norm_noise",
    "softplus_copy",
    "stability",
    "train_without_shortcut",
]


def _check_images(x: object, name: str = "x") -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() < 2:
        raise ValueError(f"{name} must have a batch dimension, got shape {tuple(x.shape)}")
    return x


def _check_mask(mask: object, x: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        raise TypeError(f"{name} must be a boolean torch.Tensor")
    try:
        torch.broadcast_shapes(mask.shape, x.shape[1:])
    except RuntimeError:
        raise ValueError(
            f"{name} of shape {tuple(mask.shape)} does not broadcast to one input of shape "
            f"{tuple(x.shape[1:])}"
        ) from None
    return mask


def interaction(score: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                mask_a: torch.Tensor, mask_b: torch.Tensor,
                fill: float | torch.Tensor = 0.0) -> torch.Tensor:
    """Joint effect of two input regions: the second-order difference of occlusions.

    With :math:`x_{\\setminus S}` the input with region :math:`S` replaced by ``fill``,

    .. math:: I_{AB}(x) = f(x) - f(x_{\\setminus A}) - f(x_{\\setminus B})
              + f(x_{\\setminus A \\cup B}),

    which is 0 for a function that is additive in the two regions and equals the whole output
    for :math:`f = s_A s_B` with :math:`s_S` vanishing when :math:`S` is removed. It is the
    pairwise interaction of two players in cooperative game theory, the quantity that
    second-order explanations :cite:`eberle2022bilrp,schnake2022gnnlrp` attribute and a
    heatmap cannot show.

    Parameters
    ----------
    score : callable
        Maps a batch of inputs to one score per input, shape ``(B,)``.
    x : torch.Tensor
        Inputs of shape ``(B, ...)``.
    mask_a, mask_b : torch.Tensor
        Boolean masks of the two regions, broadcastable to one input ``x[0]``.
    fill : float or torch.Tensor
        Value that replaces a removed region (broadcastable to ``x``).

    Returns
    -------
    torch.Tensor
        :math:`I_{AB}` per input, shape ``(B,)``.
    """
    x = _check_images(x)
    mask_a = _check_mask(mask_a, x, "mask_a")
    mask_b = _check_mask(mask_b, x, "mask_b")
    fill = torch.as_tensor(fill, dtype=x.dtype, device=x.device)

    def removed(mask: torch.Tensor) -> torch.Tensor:
        return torch.where(mask, fill, x)

    with torch.no_grad():
        out = [score(v) for v in (x, removed(mask_a), removed(mask_b), removed(mask_a | mask_b))]
    for v in out:
        if not isinstance(v, torch.Tensor) or v.shape != (len(x),):
            raise ValueError(f"score must return one value per input, shape ({len(x)},)")
    return out[0] - out[1] - out[2] + out[3]


def softplus_copy(model: nn.Module, beta: float = 10.0) -> nn.Module:
    """A copy of ``model`` with every ``nn.ReLU`` replaced by a softplus of sharpness ``beta``.

    .. math:: \\operatorname{softplus}_\\beta(z) = \\tfrac{1}{\\beta}\\log(1 + e^{\\beta z})
              \\;\\to\\; \\max(0, z) \\quad (\\beta \\to \\infty)

    A ReLU network is piecewise linear, so its second derivatives vanish almost everywhere
    and the gradient of an explanation with respect to the input carries no signal; the
    softplus copy computes nearly the same function with useful second derivatives
    :cite:`dombrowski2019`.

    Parameters
    ----------
    model : nn.Module
        The network; it is not modified.
    beta : float
        Sharpness :math:`\\beta > 0`; each unit differs from its ReLU by at most
        :math:`\\log(2)/\\beta`.

    Returns
    -------
    nn.Module
        The smooth copy, in evaluation mode.
    """
    if beta <= 0:
        raise ValueError(f"beta must be positive, got {beta}")
    smooth = copy.deepcopy(model)

    def replace(module: nn.Module) -> None:
        for name, child in module.named_children():
            if isinstance(child, nn.ReLU):
                setattr(module, name, nn.Softplus(beta=beta))
            else:
                replace(child)

    replace(smooth)
    return smooth.eval()


def region_share(R: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Share of the absolute relevance that lies inside ``mask``, one value per input.

    .. math:: \\frac{\\sum_{i \\in M} |R_i|}{\\sum_i |R_i|}

    This is the relevance mass accuracy of :cite:`arras2022clevrxai` computed on :math:`|R|`
    instead of :math:`R^+`, so that a map pushed towards a region counts whatever its sign.

    Parameters
    ----------
    R : torch.Tensor
        Maps of shape ``(B, ...)``.
    mask : torch.Tensor
        Boolean region, broadcastable to one map ``R[0]``.

    Returns
    -------
    torch.Tensor
        The share per map, shape ``(B,)``.
    """
    R = _check_images(R, "R")
    mask = _check_mask(mask, R, "mask")
    a = R.abs()
    return (a * mask).flatten(1).sum(1) / a.flatten(1).sum(1).clamp(min=1e-30)


def _gxi(model: nn.Module, x: torch.Tensor, target: torch.Tensor,
         create_graph: bool) -> torch.Tensor:
    out = model(x).gather(1, target[:, None]).sum()
    (grad,) = torch.autograd.grad(out, x, create_graph=create_graph)
    return x * grad


def manipulate(model: nn.Module, x: torch.Tensor, target_map: torch.Tensor, *,
               beta: float = 10.0, steps: int = 300, lr: float = 1e-3,
               keep_weight: float = 1e-2, low: float = 0.0, high: float = 1.0,
               seed: int = 0, max_norm: float | torch.Tensor | None = None) -> torch.Tensor:
    """Change an input slightly so that its Gradient x Input map approaches ``target_map``
    while the logits stay put :cite:`dombrowski2019`.

    With :math:`h(x) = x \\odot \\nabla f_c(x)` on the softplus copy of ``model`` (see
    :func:`softplus_copy`), both maps normalized to unit :math:`\\ell_1` norm, Adam minimizes

    .. math:: \\mathcal L(x') = \\big\\| h(x') - h^t \\big\\|^2
              + \\lambda \\, \\big\\| f(x') - f(x) \\big\\|^2

    over :math:`x'` in the box :math:`[l, h]` (``keep_weight`` is :math:`\\lambda`; the
    class :math:`c` is the one predicted for ``x``). With ``max_norm`` = :math:`\\rho`, every
    step is followed by a projection onto the ball :math:`\\|x' - x\\|_2 \\le \\rho`, so the
    change stays small by construction.

    Parameters
    ----------
    model : nn.Module
        A ReLU classifier returning logits ``(B, classes)``; it is not modified.
    x : torch.Tensor
        Inputs ``(B, ...)``.
    target_map : torch.Tensor
        The map to move the explanation towards, broadcastable to ``x``.
    beta, steps, lr, keep_weight : float, int, float, float
        Softplus sharpness, Adam steps and learning rate, and :math:`\\lambda`.
    low, high : float
        The valid pixel range; ``x'`` is clamped to it after every step.
    seed : int
        Seed of the tiny random start (the result is deterministic).
    max_norm : float, torch.Tensor of shape (B,) or None
        Largest allowed :math:`\\ell_2` norm of :math:`x' - x` per input; None: no limit
        (only the box).

    Returns
    -------
    torch.Tensor
        The manipulated inputs, detached, of ``x``'s shape.
    """
    x = _check_images(x)
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    radius = None
    if max_norm is not None:
        radius = torch.broadcast_to(torch.as_tensor(max_norm, dtype=x.dtype), (len(x),))
        if (radius < 0).any():
            raise ValueError("max_norm must be non-negative")
    smooth = softplus_copy(model, beta)
    for p in smooth.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        logits = model(x)
    target = logits.argmax(1)

    def normalized(h: torch.Tensor) -> torch.Tensor:
        flat = h.flatten(1)
        return flat / flat.abs().sum(1, keepdim=True).clamp(min=1e-12)

    goal = normalized(torch.broadcast_to(target_map, x.shape).to(x.dtype))
    generator = torch.Generator().manual_seed(seed)
    start = x + 1e-3 * torch.randn(x.shape, generator=generator, dtype=x.dtype)
    xp = start.clamp(low, high).detach().requires_grad_(True)
    optimizer = torch.optim.Adam([xp], lr=lr)
    for _ in range(steps):
        h = normalized(_gxi(smooth, xp, target, create_graph=True))
        loss = ((h - goal) ** 2).sum() + keep_weight * ((smooth(xp) - logits) ** 2).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            if radius is not None:  # project onto the ball around x, then into the box
                delta = (xp - x).flatten(1)
                scale = (radius / delta.norm(dim=1).clamp(min=1e-30)).clamp(max=1.0)
                xp.copy_(x + (delta * scale[:, None]).view_as(x))
            xp.clamp_(low, high)
    return xp.detach()


def map_correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation between two batches of maps, one value per input.

    .. math:: r = \\frac{\\langle a - \\bar a, b - \\bar b\\rangle}
              {\\|a - \\bar a\\| \\, \\|b - \\bar b\\|}

    A constant map (no pattern at all) gives 0. Dombrowski et al. use it, among other
    similarity measures, to compare explanations before and after an attack
    :cite:`dombrowski2019`.

    Parameters
    ----------
    a, b : torch.Tensor
        Two batches of maps of the same shape ``(B, ...)``.

    Returns
    -------
    torch.Tensor
        The correlation per pair of maps, float64, shape ``(B,)``.
    """
    if a.shape != b.shape:
        raise ValueError(f"maps must have the same shape, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    a = a.reshape(len(a), -1).double()
    b = b.reshape(len(b), -1).double()
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    norm = a.norm(dim=1) * b.norm(dim=1)
    return torch.where(norm > 0, (a * b).sum(1) / norm.clamp(min=1e-300), torch.zeros_like(norm))


def stability(method: Callable[..., torch.Tensor], model: nn.Module, x: torch.Tensor,
              target: torch.Tensor | int | None = None, *, sigma: float = 0.05,
              samples: int = 3, low: float = 0.0, high: float = 1.0,
              seed: int = 0) -> torch.Tensor:
    """Explanation continuity: mean correlation of the maps of ``x`` and of noisy copies.

    .. math:: S(x) = \\frac{1}{n}\\sum_{s=1}^{n} r\\big(R(x), R(x + \\eta_s)\\big), \\qquad
              \\eta_s \\sim \\mathcal N(0, \\sigma^2 I),

    with :math:`r` the Pearson correlation (:func:`map_correlation`), the noisy input clamped
    to :math:`[l, h]` and the class fixed on the clean input. A continuous explanation keeps
    :math:`S` close to 1 for small :math:`\\sigma` :cite:`montavon2018methods`.

    Parameters
    ----------
    method : callable
        ``method(model, x, target)`` returning maps of ``x``'s shape (``lt.explain`` with a
        composite, or any of ``lt.baselines``).
    model : nn.Module
        The classifier.
    x : torch.Tensor
        Inputs ``(B, ...)``.
    target : int, LongTensor[B] or None
        The explained class; None takes the class predicted for the clean input.
    sigma, samples : float, int
        Noise level and number of noisy copies :math:`n`.
    low, high : float
        The valid input range the noisy copies are clamped to.
    seed : int
        Seed of the noise.

    Returns
    -------
    torch.Tensor
        :math:`S` per input, shape ``(B,)``.
    """
    x = _check_images(x)
    if sigma < 0 or samples < 1:
        raise ValueError(f"need sigma >= 0 and samples >= 1, got {sigma} and {samples}")
    if target is None or isinstance(target, int):
        with torch.no_grad():
            pred = model(x).argmax(1)
        target = pred if target is None else torch.full_like(pred, target)
    clean = method(model, x, target)
    generator = torch.Generator().manual_seed(seed)
    total = torch.zeros(len(x), dtype=torch.float64)
    for _ in range(samples):
        noisy = (x + sigma * torch.randn(x.shape, generator=generator, dtype=x.dtype))
        total += map_correlation(clean, method(model, noisy.clamp(low, high), target))
    return total / samples


def augment_watermark(x: torch.Tensor, spec: dict[str, Any], fraction: float = 0.5,
                      seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Stamp the watermark ``spec`` on a random ``fraction`` of *all* images.

    Once every class carries the patch equally often, :math:`p(y \\mid \\text{patch}) =
    p(y)`: the shortcut no longer predicts the label and a retrained network has no reason
    to use it :cite:`lapuschkin2019cleverhans`.

    Parameters
    ----------
    x : torch.Tensor
        Images ``(N, C, H, W)``; a copy is returned.
    spec : dict
        ``value``, ``patch`` and ``corner`` of the watermark (as in
        ``lt.pretrained.entry("digits_cnn_watermark")["watermark"]``).
    fraction : float
        Share of the images that get the patch, in ``[0, 1]``.
    seed : int
        Seed of the choice of images.

    Returns
    -------
    (torch.Tensor, torch.Tensor)
        The images and a boolean mask of the newly stamped ones.
    """
    from .datasets.digits import add_watermark

    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must lie in [0, 1], got {fraction}")
    missing = {"value", "patch", "corner"} - set(spec)
    if missing:
        raise KeyError(f"the watermark spec lacks {sorted(missing)}")
    generator = torch.Generator().manual_seed(seed)
    chosen = torch.rand(len(x), generator=generator) < fraction
    out = x.clone()
    if chosen.any():
        out[chosen] = add_watermark(out[chosen], spec["value"], patch=spec["patch"],
                                    corner=spec["corner"])
    return out, chosen


def train_without_shortcut(fraction: float = 0.5, epochs: int = 8, seed: int = 0) -> nn.Module:
    """Retrain the Clever Hans digits CNN on its own poisoned data plus augmentation.

    The training set is exactly the one of ``digits_cnn_watermark`` (most images of one
    class carry a corner patch); :func:`augment_watermark` then stamps the same patch on a
    random ``fraction`` of all images, so that the patch stops predicting the class. The
    recipe is ``lrp_teach.train.digits.fit`` (Adam, cosine schedule) for ``epochs`` epochs
    on one thread; it takes a few seconds.

    Parameters
    ----------
    fraction : float
        Share of all training images that get the patch.
    epochs : int
        Training epochs.
    seed : int
        Seed of the poisoned set, the augmentation and the training.

    Returns
    -------
    nn.Module
        The retrained ``digits_cnn`` (with BatchNorm; canonize it before explaining).
    """
    from .datasets.digits import load_digits
    from .models import digits_cnn
    from .train.digits import WATERMARK, fit, watermark_train_set

    data = load_digits(size=16)
    x, _ = watermark_train_set(data.x_train, data.y_train, seed=seed)
    x, _ = augment_watermark(x, WATERMARK, fraction=fraction, seed=seed + 5)
    torch.manual_seed(seed)
    return fit(digits_cnn(), x, data.y_train, epochs=epochs, seed=seed)


def same_norm_noise(x: torch.Tensor, norm: torch.Tensor | float, *, low: float = 0.0,
                    high: float = 1.0, seed: int = 0, iters: int = 30) -> torch.Tensor:
    """A random change of each input with a given :math:`\\ell_2` norm, inside the box.

    The control for an attack: if noise of the same size changes an explanation as much as
    the attack, the attack's effect on the explanation is not specific. With a Gaussian
    direction :math:`d` per input, the scale :math:`s` is found by bisection such that

    .. math:: \\big\\| \\operatorname{clip}_{[l, h]}(x + s\\, d) - x \\big\\|_2 = \\rho,

    so the clamped change has exactly the requested norm :math:`\\rho` (where the box allows
    it; otherwise the largest one it allows).

    Parameters
    ----------
    x : torch.Tensor
        Inputs ``(B, ...)`` inside ``[low, high]``.
    norm : float or torch.Tensor of shape (B,)
        The target norm :math:`\\rho` per input, e.g.
        ``(x_adv - x).flatten(1).norm(dim=1)``.
    low, high : float
        The valid input range.
    seed : int
        Seed of the random directions.
    iters : int
        Bisection steps.

    Returns
    -------
    torch.Tensor
        The noisy inputs, of ``x``'s shape.
    """
    x = _check_images(x)
    rho = torch.broadcast_to(torch.as_tensor(norm, dtype=x.dtype), (len(x),))
    generator = torch.Generator().manual_seed(seed)
    d = torch.randn(x.shape, generator=generator, dtype=x.dtype)
    d = d / d.flatten(1).norm(dim=1).clamp(min=1e-30).view(-1, *[1] * (x.dim() - 1))
    lo = torch.zeros(len(x), dtype=x.dtype)
    hi = torch.full((len(x),), 1.0, dtype=x.dtype) * rho.clamp(min=1e-12) * 64

    def changed(s: torch.Tensor) -> torch.Tensor:
        return (x + s.view(-1, *[1] * (x.dim() - 1)) * d).clamp(low, high)

    for _ in range(iters):
        mid = (lo + hi) / 2
        too_small = (changed(mid) - x).flatten(1).norm(dim=1) < rho
        lo, hi = torch.where(too_small, mid, lo), torch.where(too_small, hi, mid)
    return changed(hi)
