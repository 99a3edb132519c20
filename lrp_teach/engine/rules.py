"""LRP rules for linear and convolutional layers, one small class per rule.

Every rule redistributes the relevance :math:`R_k` of a layer's outputs onto its inputs

.. math::  R_j = \\sum_k \\frac{q_{jk}}{\\sum_{j'} q_{j'k}} R_k ,

for a rule-specific contribution :math:`q_{jk}` (:cite:`montavon2019overview`).  The
conventions of the package (DESIGN.md, "Rule conventions") are:

* the bias is the weight of a constant input :math:`a_0 = 1`, so a rule's :math:`\\rho`
  applies to it too (LRP-:math:`\\gamma` uses :math:`b_k + \\gamma b_k^+`);
* every denominator :math:`z` gets a stabilizer :math:`\\epsilon\\,\\mathrm{sign}(z)` with
  :math:`\\mathrm{sign}(0) = +1`; it is the ``epsilon`` of :class:`Epsilon` and
  ``stabilizer = 1e-6`` for the other rules (``stabilizer=0`` is allowed: a zero denominator
  then sends no relevance, instead of producing NaN);
* :class:`ZBox`, :class:`WSquare` and :class:`Flat` are *input-layer rules*: the relevance
  they give is not of the form :math:`a_j c_j`, so they may only be used on a layer that
  reads the model input (possibly through ``Flatten``).

A rule is used by :func:`lrp_teach.core.explain` through two methods:

``forward(op, a, relu=False) -> (z, denominators, state)``
    the exact layer output ``z`` (the model's own value; with ``relu=True`` passed through a
    following ReLU), the stabilized denominators and whatever the backward step needs;
``backward(op, state, s) -> (c, extra)``
    given ``s = R / denominator`` for each denominator, the vector ``c`` with
    :math:`R_j = a_j c_j + \\mathrm{extra}_j` (``c`` or ``extra`` may be ``None``).

``op`` is a :class:`LayerOp`, which knows how to apply a layer with modified weights and its
transpose.  Users never need to call these methods; they pick rules and composites.
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "ActivationRule",
    "AlphaBeta",
    "Epsilon",
    "Flat",
    "Gamma",
    "Gradient",
    "LayerOp",
    "Pass",
    "Rule",
    "WSquare",
    "ZBox",
    "ZPlus",
    "Zero",
    "stabilize",
]


def stabilize(z: Tensor, epsilon: float, inplace: bool = False) -> Tensor:
    """Return :math:`z + \\epsilon\\,\\mathrm{sign}(z)` with :math:`\\mathrm{sign}(0) = +1`.

    With ``epsilon == 0`` the zeros of ``z`` are replaced by infinity, so that dividing by the
    result gives 0 (no relevance through a zero denominator) instead of NaN.

    Parameters
    ----------
    z : Tensor
        Denominators :math:`z_k` (any shape).
    epsilon : float
        The stabilizer; must be >= 0.
    inplace : bool
        Accepted for the callers that may give up ``z``; the three-pass form reads the signs
        of ``z`` while it writes, so the result is always a new tensor.
    """
    if epsilon == 0:
        return torch.where(z == 0, torch.full_like(z, math.inf), z)
    # (|z| + eps) with the sign of z is z + eps sign(z), to the last bit (rounding is
    # symmetric in the sign), in three fast passes.  (A negative zero counts as negative;
    # its relevance is 0 either way, since a zero denominator comes with z = 0.)
    return z.abs().add_(epsilon).copysign_(z)


def _padding(layer: nn.Module) -> tuple[int, ...]:
    pad = layer.padding
    nd = len(layer.kernel_size)
    if isinstance(pad, str):
        if pad == "valid":
            return (0,) * nd
        totals = [d * (k - 1) for d, k in zip(layer.dilation, layer.kernel_size, strict=True)]
        if any(t % 2 for t in totals):
            raise TypeError(
                f"{type(layer).__name__} with padding='same' and an even kernel pads "
                "asymmetrically, which lrp_teach does not support; use explicit padding."
            )
        return tuple(t // 2 for t in totals)
    return tuple(pad)


class LayerOp:
    """A linear or convolutional layer, applied with arbitrary weights.

    ``LayerOp(layer, like)`` takes the layer's weight and bias (detached, converted to the
    dtype and device of the tensor ``like``); ``op(a, w, b)`` applies the layer's operation
    with weights ``w`` and bias ``b`` and ``op.t(s, w, shape)`` applies its transpose
    :math:`c_j = \\sum_k w_{jk} s_k`, the gradient of :math:`\\sum_k z_k s_k` with respect to
    the input.  The user's layer is only read, never changed.
    """

    def __init__(self, layer: nn.Module, like: Tensor) -> None:
        self.layer = layer
        self.device, self.dtype = like.device, like.dtype
        self.channels_last = False
        self._weight: Tensor | None = None
        bias = layer.bias
        self.bias = None if bias is None else bias.detach().to(like.device, like.dtype)
        if isinstance(layer, nn.Linear):
            self.kind = "linear"
        elif isinstance(layer, (nn.Conv1d, nn.Conv2d)):
            self.kind = "conv1d" if isinstance(layer, nn.Conv1d) else "conv2d"
            if layer.padding_mode != "zeros":
                raise TypeError(
                    f"{type(layer).__name__} with padding_mode={layer.padding_mode!r} is not "
                    "supported; lrp_teach supports zero padding only."
                )
            self.stride = tuple(layer.stride)
            self.padding = _padding(layer)
            self.dilation = tuple(layer.dilation)
            self.groups = layer.groups
            if self.kind == "conv2d" and like.dim() == 4 and not like.is_contiguous() and (
                like.is_contiguous(memory_format=torch.channels_last)
            ):  # match the input's channels-last layout (faster oneDNN kernels)
                self.channels_last = True
        else:
            raise TypeError(f"LayerOp expects a Linear or Conv layer, got {type(layer).__name__}")

    @property
    def weight(self) -> Tensor:
        """The layer's weight in the input's dtype, device (and layout); built on demand."""
        if self._weight is None:
            w = self.layer.weight.detach().to(device=self.device, dtype=self.dtype)
            if self.channels_last:
                w = w.contiguous(memory_format=torch.channels_last)
            self._weight = w
        return self._weight

    def release(self) -> None:
        """Drop the converted weight between the passes (the backward pass rebuilds it);
        rules rebuild :math:`\\rho(w)` the same way, so no weight-sized copy waits for the
        backward pass."""
        self._weight = None

    def __call__(self, a: Tensor, w: Tensor, b: Tensor | None = None) -> Tensor:
        if self.kind == "linear":
            return F.linear(a, w, b)
        conv = F.conv1d if self.kind == "conv1d" else F.conv2d
        return conv(a, w, b, self.stride, self.padding, self.dilation, self.groups)

    def t(self, s: Tensor, w: Tensor, shape: torch.Size) -> Tensor:
        """Transpose: :math:`c_j = \\sum_k w_{jk} s_k`, shaped like the layer input."""
        if self.kind == "linear":
            return s @ w
        # the input gradient of the convolution; torch.nn.grad.conv2d_input would pass an
        # expanded dummy input, which oneDNN copies into a full tensor first
        layout = torch.channels_last if (
            s.dim() == 4 and not s.is_contiguous()
            and s.is_contiguous(memory_format=torch.channels_last)) else torch.contiguous_format
        dummy = torch.empty(shape, dtype=s.dtype, device=s.device, memory_format=layout)
        return torch.ops.aten.convolution_backward(
            s, dummy, w, None, self.stride, self.padding, self.dilation, False,
            [0] * len(self.stride), self.groups, [True, False, False])[0]

    def bias_or_zero(self) -> Tensor:
        """The bias, or zeros when the layer has none."""
        if self.bias is not None:
            return self.bias
        return self.weight.new_zeros(self.weight.shape[0])

    def add_bias(self, z: Tensor) -> Tensor:
        """``z + b`` with the bias broadcast over the output channels (no-op without bias)."""
        if self.bias is None:
            return z
        if self.kind == "linear":
            return z + self.bias
        return z + self.bias.view((-1,) + (1,) * (z.dim() - 2))

    def groups_ok(self) -> bool:
        """Whether weights may be stacked along the output dimension (no grouped convs)."""
        return self.kind == "linear" or self.groups == 1


def _relu(z: Tensor, relu: bool) -> Tensor:
    """Apply a following ReLU in place (``z`` is a fresh tensor)."""
    return z.clamp_(min=0) if relu else z


def _bias_rho(op: LayerOp, fn) -> Tensor | None:
    return None if op.bias is None else fn(op.bias)


class Rule:
    """Base class of the rules: the generic rule with :math:`\\rho(w) = w`.

    .. math::  R_j = \\sum_k \\frac{a_j \\rho(w_{jk})}
               {\\sum_{0,j'} a_{j'} \\rho(w_{j'k}) + \\epsilon\\,\\mathrm{sign}(\\cdot)} R_k

    Subclasses override :meth:`rho` (weights and bias) or the two steps.  See
    :cite:`montavon2019overview`.
    """

    input_only = False

    def __init__(self, stabilizer: float = 1e-6) -> None:
        if not isinstance(stabilizer, (int, float)) or stabilizer < 0 or math.isnan(stabilizer):
            raise ValueError(f"the stabilizer must be a number >= 0, got {stabilizer!r}")
        self.stabilizer = float(stabilizer)

    def rho(self, w: Tensor) -> Tensor:
        """The weight (and bias) transformation :math:`\\rho`; the identity here."""
        return w

    def forward(
        self, op: LayerOp, a: Tensor, relu: bool = False
    ) -> tuple[Tensor, tuple[Tensor, ...], object]:
        """Exact output ``z``, the stabilized denominators and the state for :meth:`backward`.

        With ``relu=True`` the output is :math:`\\max(0, z)` (a following ReLU applied in
        place) and the denominators only need to be right where :math:`z > 0`; the caller
        divides the returned output by them.
        """
        w_rho = self.rho(op.weight)
        if w_rho is op.weight:
            z = op(a, op.weight, op.bias)
            if relu:  # where z > 0 the stabilized denominator is z + eps; elsewhere R = 0
                z.clamp_(min=0)
                den = z + self.stabilizer if self.stabilizer else stabilize(z, 0.0)
                return z, (den,), a.shape
            return z, (stabilize(z, self.stabilizer),), a.shape
        # two separate calls: a stacked call is not faster and returns strided outputs
        z, z_rho = op(a, op.weight, op.bias), op(a, w_rho, self._bias(op))
        den = stabilize(z_rho, self.stabilizer, inplace=True)
        return _relu(z, relu), (den,), a.shape

    def _bias(self, op: LayerOp) -> Tensor:
        b = op.bias_or_zero()
        return self.rho(b)

    def backward(self, op: LayerOp, state, s: tuple[Tensor, ...]):
        """Return ``(c, extra)`` with :math:`c_j = \\sum_k \\rho(w_{jk}) s_k` and no extra."""
        return op.t(s[0], self.rho(op.weight), state), None

    def _params(self) -> str:
        return f"stabilizer={self.stabilizer:g}" if self.stabilizer != 1e-6 else ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._params()})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and repr(self) == repr(other)

    def __hash__(self) -> int:
        return hash(repr(self))


class Zero(Rule):
    """LRP-0 :cite:`bach2015`.

    .. math::  R_j = \\sum_k \\frac{a_j w_{jk}}{\\sum_{0,j'} a_{j'} w_{j'k}} R_k

    with the bias as :math:`w_{0k}` (constant input :math:`a_0 = 1`) and a tiny stabilizer
    ``stabilizer * sign(z)`` (default 1e-6) against division by zero.  On a ReLU network
    without biases, LRP-0 equals Gradient x Input.
    """


class Epsilon(Rule):
    """LRP-:math:`\\epsilon` :cite:`bach2015`, :cite:`montavon2019overview`.

    .. math::  R_j = \\sum_k \\frac{a_j w_{jk} + \\delta\\,(b_k + \\epsilon\\,
               \\mathrm{sign}(z_k))/N}{\\epsilon\\,\\mathrm{sign}(z_k) + z_k} R_k,
               \\qquad z_k = \\sum_{0,j} a_j w_{jk}

    The stabilizer acts on the full pre-activation (bias included), with
    :math:`\\mathrm{sign}(0) = +1`.  With :math:`\\delta = 0` (the default) it absorbs the
    share :math:`R_k (b_k + \\epsilon s_k)/(z_k + \\epsilon s_k)`: weak, contradictory
    contributions are dropped.

    Parameters
    ----------
    epsilon : float
        The stabilizer :math:`\\epsilon \\ge 0` (default 1e-6).
    bias_factor : float
        :math:`\\delta \\ge 0`, the share of bias and stabilizer spread equally over the
        layer's :math:`N` inputs, as in :cite:`arras2017wassa` (1 conserves relevance).  In
        the engine's Gradient x Input form an input's share enters as ``share / a_j``, so an
        input that is exactly 0 cannot carry it: that share is absorbed (the conservation
        report shows it).
    """

    def __init__(self, epsilon: float = 1e-6, bias_factor: float = 0.0) -> None:
        if (not isinstance(epsilon, (int, float)) or isinstance(epsilon, bool)
                or not epsilon >= 0 or math.isinf(epsilon)):
            raise ValueError(f"epsilon must be a finite number >= 0, got {epsilon!r}")
        super().__init__(stabilizer=epsilon)
        if (not isinstance(bias_factor, (int, float)) or isinstance(bias_factor, bool)
                or not bias_factor >= 0 or math.isinf(bias_factor)):
            raise ValueError(f"bias_factor must be a finite number >= 0, got {bias_factor!r}")
        self.bias_factor = float(bias_factor)

    @property
    def epsilon(self) -> float:
        return self.stabilizer

    def forward(self, op: LayerOp, a: Tensor, relu: bool = False):
        z, dens, state = super().forward(op, a, relu)
        if self.bias_factor:
            state = (state, a)
        return z, dens, state

    def backward(self, op: LayerOp, state, s):
        if not self.bias_factor:
            return super().backward(op, state, s)
        shape, a = state
        c = op.t(s[0], op.weight, shape)
        # delta (b_k + eps sign z_k) / N per input, summed over the outputs k it reaches
        z = op.add_bias(op(a, op.weight))
        step = stabilize(z, self.stabilizer) - z  # exactly +eps or -eps
        n_in = a[0].numel() if op.kind == "linear" else _fan_in(op)
        extra = op.add_bias(torch.zeros_like(z)) + step
        share = self.bias_factor * (extra * s[0])
        if op.kind == "linear":
            per_input = share.sum(-1, keepdim=True) / a.shape[-1]
        else:
            per_input = op.t(share, torch.ones_like(op.weight), shape) / n_in
        safe = torch.where(a == 0, torch.ones_like(a), a)
        return c + torch.where(a == 0, torch.zeros_like(a), per_input / safe), None

    def _params(self) -> str:
        extra = f", bias_factor={self.bias_factor:g}" if self.bias_factor else ""
        return f"epsilon={self.stabilizer:g}{extra}"


def _fan_in(op: LayerOp) -> int:
    """Inputs read by one output of a convolution (channels per group x kernel size)."""
    w = op.layer.weight
    return int(w[0].numel())


class Gamma(Rule):
    """LRP-:math:`\\gamma` :cite:`montavon2019overview`.

    .. math::  R_j = \\sum_k \\frac{a_j (w_{jk} + \\gamma w_{jk}^+)}
               {\\sum_{0,j'} a_{j'} (w_{j'k} + \\gamma w_{j'k}^+)} R_k

    The bias is the weight of the constant input, so the denominator contains
    :math:`b_k + \\gamma b_k^+`.  As :math:`\\gamma \\to \\infty` the rule tends to
    :class:`ZPlus`.

    Parameters
    ----------
    gamma : float
        How much positive contributions are favoured (>= 0, default 0.25).
    stabilizer : float
        Denominator stabilizer (default 1e-6).
    """

    def __init__(self, gamma: float = 0.25, stabilizer: float = 1e-6) -> None:
        super().__init__(stabilizer)
        if not isinstance(gamma, (int, float)) or not gamma >= 0 or math.isinf(gamma):
            raise ValueError(f"gamma must be a finite number >= 0, got {gamma!r}")
        self.gamma = float(gamma)

    def rho(self, w: Tensor) -> Tensor:
        return w + self.gamma * w.clamp(min=0)

    def _params(self) -> str:
        extra = super()._params()
        return f"gamma={self.gamma:g}" + (f", {extra}" if extra else "")


class ZPlus(Rule):
    """The :math:`z^+` rule :cite:`montavon2017dtd`.

    .. math::  R_j = \\sum_k \\frac{a_j w_{jk}^+}{\\sum_{0,j'} a_{j'} w_{j'k}^+} R_k

    with :math:`b_k^+` as the bias term.  For non-negative inputs it equals
    ``AlphaBeta(1, 0)`` and the limit of ``Gamma(gamma)`` for :math:`\\gamma \\to \\infty`.
    """

    def rho(self, w: Tensor) -> Tensor:
        return w.clamp(min=0)


class AlphaBeta(Rule):
    """LRP-:math:`\\alpha\\beta` :cite:`bach2015`.

    .. math::  R_j = \\sum_k \\left( \\alpha \\frac{(a_j w_{jk})^+}{\\sum_{0,j'} (a_{j'}
               w_{j'k})^+} - \\beta \\frac{(a_j w_{jk})^-}{\\sum_{0,j'} (a_{j'} w_{j'k})^-}
               \\right) R_k ,\\qquad \\alpha - \\beta = 1

    The bias enters the positive or negative sum according to its sign.  Relevance is
    conserved when both parts are present; when a neuron has no negative contribution, the
    factor :math:`\\alpha` is not compensated.

    Parameters
    ----------
    alpha, beta : float
        Weights of the positive and negative parts; ``alpha - beta`` must equal 1.
    stabilizer : float
        Denominator stabilizer (default 1e-6).
    """

    def __init__(self, alpha: float = 2.0, beta: float = 1.0, stabilizer: float = 1e-6) -> None:
        super().__init__(stabilizer)
        if beta < 0 or not math.isclose(alpha - beta, 1.0, rel_tol=0, abs_tol=1e-12):
            raise ValueError(
                f"AlphaBeta needs alpha - beta == 1 and beta >= 0 to conserve relevance; got "
                f"alpha={alpha}, beta={beta} (e.g. use AlphaBeta(2, 1) or AlphaBeta(1, 0))."
            )
        self.alpha, self.beta = float(alpha), float(beta)

    def forward(self, op: LayerOp, a: Tensor, relu: bool = False):
        w = op.weight
        wp, wn = w.clamp(min=0), w.clamp(max=0)
        b = op.bias_or_zero()
        bp, bn = b.clamp(min=0), b.clamp(max=0)
        if bool((a >= 0).all()):
            a_pos, a_neg = a, None
        else:
            a_pos, a_neg = a.clamp(min=0), a.clamp(max=0)
        z = op(a, w, op.bias)
        zp, zn = op(a_pos, wp, bp), op(a_pos, wn, bn)
        if a_neg is not None:  # (a w)^+ = a^+ w^+ + a^- w^-
            zp, zn = zp + op(a_neg, wn), zn + op(a_neg, wp)
        dens = (stabilize(zp, self.stabilizer, True), stabilize(zn, self.stabilizer, True))
        masks = None if a_neg is None else (a > 0, a < 0)
        return _relu(z, relu), dens, (a.shape, masks)

    def backward(self, op: LayerOp, state, s):
        shape, masks = state
        wp, wn = op.weight.clamp(min=0), op.weight.clamp(max=0)
        sp, sn = s
        c_pos = self.alpha * op.t(sp, wp, shape)
        if self.beta:
            c_pos = c_pos - self.beta * op.t(sn, wn, shape)
        if masks is None:
            return c_pos, None
        c_neg = self.alpha * op.t(sp, wn, shape)
        if self.beta:
            c_neg = c_neg - self.beta * op.t(sn, wp, shape)
        pos, neg = masks
        return c_pos * pos + c_neg * neg, None

    def _params(self) -> str:
        extra = super()._params()
        return f"alpha={self.alpha:g}, beta={self.beta:g}" + (f", {extra}" if extra else "")


def _as_bound(value: float | Tensor, a: Tensor, what: str) -> Tensor:
    t = torch.as_tensor(value, dtype=a.dtype, device=a.device)
    layout = torch.channels_last if a.dim() == 4 and not a.is_contiguous() and (
        a.is_contiguous(memory_format=torch.channels_last)) else torch.contiguous_format
    try:
        b = torch.broadcast_to(t, (1,) + tuple(a.shape[1:])) if t.dim() < a.dim() else (
            torch.broadcast_to(t, a.shape))
        # a real tensor in the input's layout: convolutions of broadcast views are slow
        return b.contiguous(memory_format=layout) if b.dim() == 4 else b.contiguous()
    except RuntimeError:
        if t.numel() == a[0].numel():  # e.g. (1, 8, 8) bounds for a flattened input
            return t.reshape((1,) + tuple(a.shape[1:]))
        raise ValueError(
            f"ZBox: the {what} bound of shape {tuple(t.shape)} does not broadcast to the "
            f"layer input of shape {tuple(a.shape)}"
        ) from None


class ZBox(Rule):
    """The :math:`z^\\mathcal{B}` rule for inputs in a box :math:`[l, h]`
    :cite:`montavon2017dtd`.

    .. math::  R_i = \\sum_j \\frac{x_i w_{ij} - l_i w_{ij}^+ - h_i w_{ij}^-}
               {\\sum_{i'} (x_{i'} w_{i'j} - l_{i'} w_{i'j}^+ - h_{i'} w_{i'j}^-)} R_j

    The denominator has no bias term.  An input-layer rule.

    Parameters
    ----------
    low, high : float or Tensor
        The bounds :math:`l_i \\le x_i \\le h_i`: scalars or tensors broadcastable to the
        layer input (without or with the batch dimension).
    stabilizer : float
        Denominator stabilizer (default 1e-6).
    """

    input_only = True

    def __init__(self, low: float | Tensor, high: float | Tensor, stabilizer: float = 1e-6):
        super().__init__(stabilizer)
        lo, hi = torch.as_tensor(low), torch.as_tensor(high)
        if lo.shape == hi.shape and bool((lo > hi).any()):
            raise ValueError("ZBox: low must not exceed high")
        self.low, self.high = low, high

    def forward(self, op: LayerOp, a: Tensor, relu: bool = False):
        w = op.weight
        wp, wn = w.clamp(min=0), w.clamp(max=0)
        low, high = _as_bound(self.low, a, "low"), _as_bound(self.high, a, "high")
        if bool((low > high).any()):
            raise ValueError("ZBox: low exceeds high for some inputs (after broadcasting "
                             f"the bounds to the layer input of shape {tuple(a.shape)})")
        if bool((a < low).any()) or bool((a > high).any()):
            warnings.warn(
                "ZBox: some inputs lie outside [low, high]; the z^B rule assumes "
                "low <= x <= high and its relevance is not well defined outside the box",
                stacklevel=2)
        z_nobias = op(a, w)
        z = op.add_bias(z_nobias)
        z_box = z_nobias - op(low, wp) - op(high, wn)
        den = stabilize(z_box, self.stabilizer, True)
        return _relu(z, relu), (den,), (low, high, a.shape)

    def backward(self, op: LayerOp, state, s):
        low, high, shape = state
        w = op.weight
        wp, wn = w.clamp(min=0), w.clamp(max=0)
        (s0,) = s
        if op.groups_ok() and op.kind != "linear":
            c = op.t(s0, torch.cat([w, wp, wn], dim=1), shape[:1] + (3 * shape[1],) + shape[2:])
            c, cp, cn = c.split(shape[1], dim=1)
        else:
            c, cp, cn = op.t(s0, w, shape), op.t(s0, wp, shape), op.t(s0, wn, shape)
        return c, -(low * cp) - (high * cn)

    def _params(self) -> str:
        def fmt(v):
            return f"{v:g}" if isinstance(v, (int, float)) else f"<tensor {tuple(v.shape)}>"

        extra = super()._params()
        return f"low={fmt(self.low)}, high={fmt(self.high)}" + (f", {extra}" if extra else "")


class _InputFree(Rule):
    """Rules whose contributions do not depend on the input values (w^2 and flat)."""

    input_only = True

    def weights(self, op: LayerOp) -> tuple[Tensor, Tensor | None]:
        raise NotImplementedError

    def forward(self, op: LayerOp, a: Tensor, relu: bool = False):
        z = op(a, op.weight, op.bias)
        w_rho, b_rho = self.weights(op)
        ones = a.new_ones((1,) + tuple(a.shape[1:]))
        den = op(ones, w_rho, b_rho)
        return _relu(z, relu), (stabilize(den, self.stabilizer),), a.shape

    def backward(self, op: LayerOp, state, s):
        return None, op.t(s[0], self.weights(op)[0], state)


class WSquare(_InputFree):
    """The :math:`w^2` rule :cite:`montavon2017dtd`, for inputs in :math:`\\mathbb{R}^d`.

    .. math::  R_i = \\sum_j \\frac{w_{ij}^2}{\\sum_{0,i'} w_{i'j}^2} R_j

    The bias counts as the weight of a constant input, so :math:`b_j^2` enters the
    denominator.  An input-layer rule.
    """

    def weights(self, op: LayerOp):
        return op.weight**2, _bias_rho(op, lambda b: b**2)


class Flat(_InputFree):
    """The flat rule :cite:`kohlbrenner2020`: every input of a neuron gets an equal share.

    .. math::  R_i = \\sum_j \\frac{1}{\\sum_{i'} 1} R_j

    The sum runs over the inputs that neuron :math:`j` reads (the receptive field; zero
    padding does not count); the bias receives nothing.  An input-layer rule.
    """

    def weights(self, op: LayerOp):
        return torch.ones_like(op.weight), None


class ActivationRule:
    """Base class of the rules for element-wise activations (tanh, sigmoid, GELU, ...).

    A composite may map an activation module (by type or name) to one of them; functional
    calls in a forward (``F.gelu``, ``torch.tanh``) get the default, :class:`Pass`.
    """

    def apply(self, fn, x: Tensor, y: Tensor) -> Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other)

    def __hash__(self) -> int:
        return hash(type(self).__name__)


class Pass(ActivationRule):
    """The identity rule: relevance passes an element-wise activation unchanged.

    .. math::  R_x = R_y ,\\qquad \\text{computed as}\\quad
               y = f(x) \\text{ with gradient } f(x)/x \\text{ held constant,}

    that is ``x * (f(x) / x).detach()`` in value and gradient (:cite:`achtibat2024attnlrp`).
    Where :math:`x = 0` and :math:`f(0) \\ne 0` (sigmoid, softplus) no finite factor exists;
    that relevance is absorbed.
    """

    def apply(self, fn, x: Tensor, y: Tensor) -> Tensor:
        zero = x == 0
        ratio = torch.where(zero, torch.zeros_like(y), y / torch.where(zero, 1.0, x))
        return y.detach() + (x - x.detach()) * ratio.detach()


class Gradient(ActivationRule):
    """Keep the activation's own gradient: :math:`R_x = x\\, f'(x)\\, R_y / f(x)`."""

    def apply(self, fn, x: Tensor, y: Tensor) -> Tensor:
        return y
