"""Attribution baselines with the same call signature as :func:`lrp_teach.explain`.

Every function is ``fn(model, inputs, target=None, **options) -> Tensor``, batched over the
first dimension, and leaves the model exactly as it was (parameters, buffers, training flag,
no hooks left), also when it raises.  ``inputs`` is what ``model(*inputs)`` takes: a tensor,
or a tuple whose first entry is explained while the others are held fixed (an image with its
question, token ids with their lengths).  Integer token ids read by an ``nn.Embedding`` are
explained in the embedding space: the result has shape ``(B, T, E)``, like the relevance of
the embedded words (sum over the last dimension for one number per token).  The explained
quantity is the target logit :math:`f_c(x)` (no softmax), as in LRP; ``target=None``
explains the predicted class, an ``int`` one class for every input, a ``LongTensor[B]`` one
class per input.

The model runs in eval mode while it is explained (BatchNorm uses its running statistics,
Dropout is off); its training flag is restored afterwards.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from .engine.state import preserved
from .engine.state import resolve_target as _resolve

__all__ = [
    "ATTENTION_METHODS",
    "EmbeddedModel",
    "HeldInputs",
    "attention_maps",
    "attention_rollout",
    "explained",
    "gradient",
    "gradient_x_input",
    "guided_backprop",
    "integrated_gradients",
    "occlusion",
    "raw_attention",
    "resolve_target",
    "smoothgrad",
]

Target = int | torch.Tensor | None


def resolve_target(model: nn.Module, x: torch.Tensor, target: Target) -> torch.Tensor:
    """Return the class index of each input as a ``LongTensor[B]``.

    ``None`` means the predicted class (the arg max of ``model(x)``); the rules are those of
    :func:`lrp_teach.engine.state.resolve_target`, which LRP uses too.
    """
    if target is not None and not isinstance(target, torch.Tensor) and (
            isinstance(target, bool) or not isinstance(target, int)):
        raise TypeError(f"target must be None, an int or a LongTensor, got {type(target)}")
    with torch.no_grad(), _eval(model):
        logits = model(x)
    return _resolve(logits, target)


_eval = preserved  # the package's one save/restore of a model's state


class HeldInputs(nn.Module):
    """``model(*inputs)`` as a function of ``inputs[index]``, the other inputs held fixed.

    ``forward(x)`` puts ``x`` in place of input ``index``; when ``x`` stacks ``k`` copies of
    the batch (as Integrated Gradients and SmoothGrad do), the other tensor inputs are
    repeated ``k`` times along the batch dimension.
    """

    def __init__(self, model: nn.Module, inputs: tuple, index: int = 0,
                 batch: int | None = None) -> None:
        super().__init__()
        self.model, self.inputs, self.index = model, tuple(inputs), index
        self.batch = len(inputs[index]) if batch is None else batch

    def arguments(self, x: torch.Tensor) -> list:
        if len(x) % self.batch:
            raise ValueError(f"{type(self).__name__} holds a batch of {self.batch}; the "
                             f"explained input's batch ({len(x)}) must be a multiple of it")
        k = len(x) // self.batch
        args = [v.repeat(k, *([1] * (v.dim() - 1))) if isinstance(v, torch.Tensor) and k > 1
                else v for v in self.inputs]
        args[self.index] = x
        return args

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(*self.arguments(x))


class _EmbeddingTap(TorchFunctionMode):
    """Replaces the output of the ``nn.Embedding`` call that reads ``ids`` by ``value``."""

    def __init__(self, ids: torch.Tensor, value: torch.Tensor | None = None) -> None:
        super().__init__()
        self.ids, self.value, self.seen = ids, value, None

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if getattr(func, "__name__", "") == "embedding" and args and args[0] is self.ids:
            if self.seen is not None:
                raise ValueError("two embeddings read the token input; explain it with "
                                 "lt.explain, which reads every embedding")
            self.seen = out
            if self.value is not None:
                return self.value
        return out


class EmbeddedModel(HeldInputs):
    """``model(*inputs)`` as a function of the embedding of the token ids ``inputs[index]``.

    :meth:`embed` returns the embedded ids ``(B, T, E)``; ``forward(e)`` runs the model with
    the ``nn.Embedding`` output replaced by ``e`` (stacked copies allowed, as for
    :class:`HeldInputs`).  The baselines explain token inputs through this model.
    """

    def embed(self) -> torch.Tensor:
        ids = self.inputs[self.index]
        tap = _EmbeddingTap(ids)
        with torch.no_grad(), tap:
            self.model(*self.inputs)
        if tap.seen is None:
            raise ValueError(
                f"input {self.index} holds integer ids, but no nn.Embedding reads it: the "
                "baselines explain integer inputs through the embedding that reads them")
        return tap.seen.detach()

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        args = self.arguments(e)
        ids = args[self.index] = self.inputs[self.index].repeat(len(e) // self.batch, 1)
        with _EmbeddingTap(ids, e):
            return self.model(*args)


def explained(model: nn.Module, inputs) -> tuple[nn.Module, torch.Tensor]:
    """The function and the float tensor a baseline explains for ``model(*inputs)``.

    A float tensor is explained as it is; for a tuple, its first entry, with the others held
    (:class:`HeldInputs`); integer token ids, in the embedding space (:class:`EmbeddedModel`).
    """
    items = inputs if isinstance(inputs, tuple) else (inputs,)
    if not items or not isinstance(items[0], torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor (or a tuple of model inputs whose first "
                        f"entry is one), got {type(items[0] if items else inputs).__name__}")
    x = items[0]
    if not x.is_floating_point() and x.dtype != torch.bool:
        if not any(isinstance(m, nn.Embedding) for m in model.modules()):
            raise TypeError(f"x must hold floating-point values, got {x.dtype} (integer "
                            "inputs are explained as token ids through an nn.Embedding, and "
                            "this model has none)")
        wrapped = EmbeddedModel(model, items, 0)
        with _eval(model):
            return wrapped, wrapped.embed()
    if len(items) == 1:
        return model, x
    return HeldInputs(model, items, 0), x


def _check_input(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() < 2:
        raise ValueError(f"x must be batched, of shape (batch, ...); got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"x must hold floating-point values, got {x.dtype}")


def _input_gradient(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """d f_target(x) / dx for each row of the batch (no parameter gradients accumulate)."""
    x = x.detach().clone().requires_grad_(True)
    out = model(x)
    selected = out.gather(1, target.view(-1, 1)).sum()
    (grad,) = torch.autograd.grad(selected, x)
    return grad


def _stacked_gradients(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
                       batch_size: int) -> torch.Tensor:
    """Input gradients of many stacked inputs (path points, noisy copies), in chunks."""
    grads = torch.empty_like(inputs)
    with _eval(model):
        for start in range(0, len(inputs), batch_size):
            sl = slice(start, start + batch_size)
            grads[sl] = _input_gradient(model, inputs[sl], targets[sl])
    return grads


def gradient(model: nn.Module, x: torch.Tensor, target: Target = None, *,
             absolute: bool = False) -> torch.Tensor:
    """Sensitivity: the gradient of the target logit with respect to the input.

    .. math:: R_i = \\frac{\\partial f_c}{\\partial x_i}(x)
              \\qquad\\text{or, with ``absolute``,}\\qquad
              R_i = \\Big|\\frac{\\partial f_c}{\\partial x_i}(x)\\Big|

    Sensitivity analysis :cite:`simonyan2014` says how much a small change of each pixel changes
    the output; it does not decompose :math:`f_c(x)`.

    Parameters
    ----------
    model : torch.nn.Module
        Maps a batch ``x`` to logits of shape ``(B, classes)``.
    x : torch.Tensor
        Batch of inputs.
    target : int, LongTensor[B] or None
        Class to explain; ``None`` is the predicted class.
    absolute : bool
        Return the magnitude of the gradient (the usual sensitivity map).

    Returns
    -------
    torch.Tensor
        Same shape as ``x``.
    """
    model, x = explained(model, x)
    _check_input(x)
    t = resolve_target(model, x, target)
    with _eval(model):
        g = _input_gradient(model, x, t)
    return g.abs() if absolute else g


def gradient_x_input(model: nn.Module, x: torch.Tensor, target: Target = None) -> torch.Tensor:
    """Gradient times input :cite:`shrikumar2017`.

    .. math:: R_i = x_i \\, \\frac{\\partial f_c}{\\partial x_i}(x)

    For a ReLU network without biases this equals LRP-0 and sums to :math:`f_c(x)`
    :cite:`montavon2019overview`.
    """
    model, x = explained(model, x)
    _check_input(x)
    t = resolve_target(model, x, target)
    with _eval(model):
        return x.detach() * _input_gradient(model, x, t)


def _baseline_like(x: torch.Tensor, baseline: float | torch.Tensor) -> torch.Tensor:
    b = torch.as_tensor(baseline, dtype=x.dtype, device=x.device)
    try:
        return torch.broadcast_to(b, x.shape).clone()
    except RuntimeError:
        raise ValueError(
            f"baseline of shape {tuple(b.shape)} does not broadcast to x's shape {tuple(x.shape)}"
        ) from None


def integrated_gradients(model: nn.Module, x: torch.Tensor, target: Target = None, *,
                         baseline: float | torch.Tensor = 0.0, steps: int = 32,
                         batch_size: int = 1024) -> torch.Tensor:
    """Integrated Gradients :cite:`sundararajan2017`, by the trapezoidal rule.

    .. math:: R_i = (x_i - \\bar x_i) \\int_0^1
              \\frac{\\partial f_c}{\\partial x_i}\\big(\\bar x + \\alpha (x - \\bar x)\\big)
              \\, d\\alpha

    with baseline :math:`\\bar x`. The integral is approximated on ``steps`` equally spaced
    points with trapezoid weights, so that (completeness)
    :math:`\\sum_i R_i \\approx f_c(x) - f_c(\\bar x)` up to the quadrature error.

    Parameters
    ----------
    baseline : float or torch.Tensor
        The reference input :math:`\\bar x`, broadcast to ``x``'s shape (default: zeros).
    steps : int
        Number of points on the path (at least 2).
    batch_size : int
        How many path points are evaluated in one forward pass.
    """
    model, x = explained(model, x)
    _check_input(x)
    if steps < 2:
        raise ValueError(f"steps must be at least 2 (the two end points), got {steps}")
    t = resolve_target(model, x, target)
    x0 = _baseline_like(x, baseline)
    alphas = torch.linspace(0.0, 1.0, steps, dtype=x.dtype, device=x.device)
    weights = torch.full((steps,), 1.0 / (steps - 1), dtype=x.dtype, device=x.device)
    weights[0] = weights[-1] = 0.5 / (steps - 1)
    n = len(x)
    shape = (1,) * (x.dim() - 1)
    path = x0.unsqueeze(0) + alphas.view(-1, 1, *shape) * (x - x0).unsqueeze(0)  # (S, B, ...)
    path = path.reshape(steps * n, *x.shape[1:])
    targets = t.repeat(steps)
    grads = _stacked_gradients(model, path, targets, max(n, batch_size // n * n))
    avg = (grads.view(steps, n, *x.shape[1:]) * weights.view(-1, 1, *shape)).sum(0)
    return (x.detach() - x0) * avg


def smoothgrad(model: nn.Module, x: torch.Tensor, target: Target = None, *,
               noise: float = 0.15, samples: int = 32, seed: int = 0,
               times_input: bool = False, batch_size: int = 1024) -> torch.Tensor:
    """SmoothGrad :cite:`smilkov2017`: the gradient averaged over noisy copies of the input.

    .. math:: R_i = \\frac{1}{n} \\sum_{s=1}^{n}
              \\frac{\\partial f_c}{\\partial x_i}(x + \\eta_s),\\qquad
              \\eta_s \\sim \\mathcal N(0, \\sigma^2),\\quad
              \\sigma = \\text{noise} \\cdot (\\max x - \\min x)

    with the range taken per input. The class :math:`c` is fixed on the clean input.

    Parameters
    ----------
    noise : float
        Noise level :math:`\\sigma / (\\max x - \\min x)`; 0 gives the plain gradient.
    samples : int
        Number of noisy copies :math:`n`.
    seed : int
        Seed of the noise (the result is deterministic).
    times_input : bool
        Multiply the averaged gradient by ``x`` (SmoothGrad x Input).
    """
    model, x = explained(model, x)
    _check_input(x)
    if samples < 1:
        raise ValueError(f"samples must be at least 1, got {samples}")
    if noise < 0:
        raise ValueError(f"noise must be non-negative, got {noise}")
    t = resolve_target(model, x, target)
    n = len(x)
    flat = x.detach().reshape(n, -1)
    sigma = noise * (flat.max(1).values - flat.min(1).values)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    eps = torch.randn((samples, *x.shape), generator=generator, dtype=x.dtype).to(x.device)
    noisy = x.detach().unsqueeze(0) + eps * sigma.view(1, n, *(1,) * (x.dim() - 1))
    noisy = noisy.reshape(samples * n, *x.shape[1:])
    targets = t.repeat(samples)
    grads = _stacked_gradients(model, noisy, targets, max(n, batch_size // n * n))
    avg = grads.view(samples, *x.shape).mean(0)
    return x.detach() * avg if times_input else avg


def _window_starts(size: int, window: int, stride: int) -> list[int]:
    """Start indices of sliding windows that cover ``size`` (the last one may be cut off)."""
    count = math.ceil(max(size - window, 0) / stride) + 1
    return [k * stride for k in range(count)]


@torch.no_grad()
def occlusion(model: nn.Module, x: torch.Tensor, target: Target = None, *,
              patch: int = 2, stride: int | None = None, value: float = 0.0,
              features: list[int] | None = None, batch_size: int = 1024) -> torch.Tensor:
    """Occlusion :cite:`zeiler2014`: the drop of the target logit when a patch is masked.

    For each window :math:`W` (a ``patch`` x ``patch`` square over all channels of an image,
    or ``patch`` consecutive features of a vector), every input in it receives

    .. math:: R_i = \\frac{1}{|\\{W \\ni i\\}|} \\sum_{W \\ni i}
              \\big(f_c(x) - f_c(x_{W \\leftarrow v})\\big)

    where :math:`x_{W \\leftarrow v}` has the window set to ``value``. Windows start at 0 and
    move by ``stride`` until they cover the input; the last may be cut off at the border.

    Parameters
    ----------
    patch : int
        Side length of the window.
    stride : int or None
        Step between windows (default: ``patch``, non-overlapping windows).
    value : float
        What the occluded inputs are set to (the "grey" or background value).
    features : list of int, optional
        For sequences ``(B, T, E)`` (windows of ``patch`` steps): occlude only these
        features of each step (default: all); the others get no relevance.
    """
    model, x = explained(model, x)
    _check_input(x)
    stride = patch if stride is None else stride
    if patch < 1 or stride < 1:
        raise ValueError(f"patch and stride must be positive, got patch={patch}, stride={stride}")
    if x.dim() not in (2, 3, 4):
        raise ValueError(f"occlusion supports vectors (B, D), sequences (B, T, E) and images "
                         f"(B, C, H, W); got {tuple(x.shape)}")
    t = resolve_target(model, x, target)
    spatial = x.shape[2:] if x.dim() == 4 else x.shape[1:]
    masks = []
    if x.dim() == 3:
        feats = list(range(x.shape[2])) if features is None else list(features)
        if any(not 0 <= k < x.shape[2] for k in feats):
            raise ValueError(f"features must lie in [0, {x.shape[2]}), got {features}")
        for s in _window_starts(spatial[0], patch, stride):
            m = torch.zeros(spatial, dtype=torch.bool, device=x.device)
            m[s:s + patch, feats] = True
            masks.append(m)
    elif x.dim() == 4:
        for r in _window_starts(spatial[0], patch, stride):
            for c in _window_starts(spatial[1], patch, stride):
                m = torch.zeros(spatial, dtype=torch.bool, device=x.device)
                m[r:r + patch, c:c + patch] = True
                masks.append(m)
    else:
        for s in _window_starts(spatial[0], patch, stride):
            m = torch.zeros(spatial, dtype=torch.bool, device=x.device)
            m[s:s + patch] = True
            masks.append(m)
    masks_t = torch.stack(masks)  # (M, *spatial)
    n, n_masks = len(x), len(masks)
    with _eval(model):
        f0 = model(x).gather(1, t.view(-1, 1)).flatten()
        drops = torch.empty(n_masks, n, dtype=x.dtype, device=x.device)
        chunk = max(1, batch_size // n)
        for start in range(0, n_masks, chunk):
            mk = masks_t[start:start + chunk]  # (m, *spatial)
            mk_b = mk.unsqueeze(1) if x.dim() == 2 else mk.unsqueeze(1).unsqueeze(2)
            occluded = torch.where(mk_b, torch.as_tensor(value, dtype=x.dtype), x.unsqueeze(0))
            occluded = occluded.reshape(-1, *x.shape[1:])
            out = model(occluded).view(len(mk), n, -1)
            drops[start:start + len(mk)] = f0 - out.gather(2, t.view(1, -1, 1).expand(
                len(mk), n, 1)).squeeze(2)
    weights = masks_t.to(x.dtype)  # (M, *spatial)
    counts = weights.sum(0).clamp(min=1)  # never-occluded features (sequences) get 0
    attribution = torch.einsum("mb,m...->b...", drops, weights) / counts
    if x.dim() == 4:
        attribution = attribution.unsqueeze(1).expand_as(x)
    return attribution.contiguous()


class _GuidedReLU(torch.autograd.Function):
    """ReLU whose backward pass lets only positive gradients through positive inputs."""

    @staticmethod
    def forward(ctx, z: torch.Tensor) -> torch.Tensor:  # noqa: D401
        ctx.save_for_backward(z)
        return z.clamp(min=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (z,) = ctx.saved_tensors
        return grad.clamp(min=0) * (z > 0).to(grad.dtype)


def guided_backprop(model: nn.Module, x: torch.Tensor, target: Target = None) -> torch.Tensor:
    """Guided Backpropagation :cite:`springenberg2015`.

    The gradient is propagated as usual except at every ``nn.ReLU``, where

    .. math:: g^{(l-1)}_j = \\mathbb 1[z_j > 0] \\, \\max(0, g^{(l)}_j),

    i.e. the backward pass keeps only positive gradient signals. The ReLU modules are
    patched by temporary forward hooks, which are removed afterwards even on error.

    Raises
    ------
    ValueError
        When the model has no ``nn.ReLU`` module (a ReLU called as a function cannot be
        guided, and the result would silently be the plain gradient).
    """
    model, x = explained(model, x)
    _check_input(x)
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    if not relus:
        raise ValueError(
            "guided_backprop patches nn.ReLU modules, and this model has none; build the "
            "model with nn.ReLU layers instead of torch.relu calls"
        )
    t = resolve_target(model, x, target)

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor):
        return _GuidedReLU.apply(inputs[0])

    handles = [m.register_forward_hook(hook) for m in relus]
    try:
        with _eval(model):
            return _input_gradient(model, x, t)
    finally:
        for handle in handles:
            handle.remove()


#: The baselines by name, in the order the book's tables use.
METHODS: dict[str, Callable[..., torch.Tensor]] = {
    "Gradient": gradient,
    "Gradient x Input": gradient_x_input,
    "Integrated Gradients": integrated_gradients,
    "SmoothGrad": smoothgrad,
    "Occlusion": occlusion,
    "Guided Backprop": guided_backprop,
}


# --------------------------------------------------------------------- attention maps
class _NoFastPath(TorchFunctionMode):
    """A mode that changes nothing; inside it torch's transformer layers skip their fused paths.

    ``nn.TransformerEncoderLayer`` and ``nn.MultiheadAttention`` take a fused kernel (which
    never calls ``self_attn`` and returns no weights) only when no torch-function mode is
    active, so running under this mode makes every attention call visible to the hooks.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


def attention_maps(model: nn.Module, inputs) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The attention weights of every ``nn.MultiheadAttention`` call of ``model(*inputs)``.

    Returns ``(maps, keep)``: ``maps`` lists one ``(B, heads, T, T)`` tensor per call in the
    order of the forward pass (row ``i`` holds the weights query ``i`` gives the keys, each row
    sums to 1), and ``keep`` is ``(B, T)``, ``True`` at the positions that are not padding (read
    from the first call's ``key_padding_mask``; all ``True`` without one).  The model and its
    outputs are unchanged: the weights are requested from each attention module for this run
    only (``need_weights=True``, one map per head), and the hooks are removed afterwards.
    """
    items = inputs if isinstance(inputs, tuple) else (inputs,)
    attn = [m for m in model.modules() if isinstance(m, nn.MultiheadAttention)]
    if not attn:
        raise ValueError("attention baselines read the weights of nn.MultiheadAttention "
                         "modules, and this model has none")
    maps: list[torch.Tensor] = []
    masks: list[torch.Tensor | None] = []

    def pre(module, args, kwargs):
        kwargs = dict(kwargs)
        kwargs["need_weights"], kwargs["average_attn_weights"] = True, False
        masks.append(kwargs.get("key_padding_mask"))
        return args, kwargs

    def post(module, args, kwargs, output):
        weights = output[1]
        if weights is None:
            raise RuntimeError("an attention module returned no weights")
        maps.append(weights.detach() if weights.dim() == 4 else weights.detach()[:, None])

    handles = [h for m in attn for h in (m.register_forward_pre_hook(pre, with_kwargs=True),
                                         m.register_forward_hook(post, with_kwargs=True))]
    try:
        with torch.no_grad(), _eval(model), _NoFastPath():
            model(*items)
    finally:
        for handle in handles:
            handle.remove()
    if not maps:
        raise RuntimeError("no attention module ran in the forward pass")
    batch, length = maps[0].shape[0], maps[0].shape[-1]
    mask = masks[0]
    if mask is None:
        keep = torch.ones(batch, length, dtype=torch.bool, device=maps[0].device)
    elif mask.dtype == torch.bool:
        keep = ~mask
    else:  # an additive float mask: -inf where a key is masked
        keep = ~torch.isneginf(mask)
    return maps, keep


def _read_out(rows: torch.Tensor, keep: torch.Tensor, query: int | None) -> torch.Tensor:
    """One row per input from ``(B, T, T)``: query ``query``, or the mean over real queries."""
    if query is not None:
        return rows[:, query]
    w = keep.to(rows.dtype)
    return (rows * w[..., None]).sum(1) / w.sum(1, keepdim=True)


def raw_attention(model: nn.Module, inputs, target: Target = None, *, layer: int = -1,
                  query: int | None = None) -> torch.Tensor:
    """The attention weights of one layer as token scores ``(B, T)``.

    .. math:: R_j = \\frac{1}{H}\\sum_h A^{(l,h)}_{q j}

    averaged over the heads ``h`` of attention call ``layer`` (the last by default), read from
    query position ``query`` (a classification token) or, with ``query=None``, averaged over
    the real (not padded) query positions, which suits a model that pools by the mean.  The
    scores are non-negative and sum to 1 over the tokens.  They do not depend on the class:
    ``target`` is accepted for the common signature and ignored.
    """
    maps, keep = attention_maps(model, inputs)
    return _read_out(maps[layer].mean(1), keep, query)


def attention_rollout(model: nn.Module, inputs, target: Target = None, *,
                      query: int | None = None, residual: float = 0.5) -> torch.Tensor:
    """Attention rollout :cite:`abnar2020attention` as token scores ``(B, T)``.

    Each layer's head-averaged attention is mixed with the identity that the residual
    connection adds, :math:`\\hat A^{(l)} = (1 - \\rho) A^{(l)} + \\rho I` with
    :math:`\\rho` = ``residual`` (0.5 in the paper), and the layers are multiplied from the
    input upwards, :math:`\\tilde A = \\hat A^{(L)} \\cdots \\hat A^{(1)}`.  Every row of
    :math:`\\tilde A` sums to 1; its row ``query`` (or, with ``query=None``, the mean of the rows
    of the real positions) are the scores.  Like :func:`raw_attention`, the result does not
    depend on ``target``.
    """
    if not 0.0 <= residual <= 1.0:
        raise ValueError(f"residual must lie in [0, 1], got {residual}")
    maps, keep = attention_maps(model, inputs)
    length = maps[0].shape[-1]
    eye = torch.eye(length, dtype=maps[0].dtype, device=maps[0].device)
    rolled = eye.expand(maps[0].shape[0], length, length)
    for a in maps:
        rolled = ((1.0 - residual) * a.mean(1) + residual * eye) @ rolled
    return _read_out(rolled, keep, query)


#: The attention baselines by name (they need ``nn.MultiheadAttention`` modules).
ATTENTION_METHODS: dict[str, Callable[..., torch.Tensor]] = {
    "Raw attention": raw_attention,
    "Attention rollout": attention_rollout,
}
