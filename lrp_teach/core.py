"""The LRP engine: relevance as Gradient x Input of a modified forward pass.

For a linear or convolutional layer with output :math:`z_k` and a rule with denominator
:math:`z^\\rho_k` (:math:`\\rho` applied to the weights, plus a stabilizer), the engine's forward
pass returns the exact :math:`z_k`, and its backward pass turns the incoming gradient
:math:`g_k` into

.. math::  \\frac{\\partial}{\\partial a_j} = \\sum_k \\rho(w_{jk})\\, \\frac{z_k g_k}{z^\\rho_k}
           = \\sum_k \\rho(w_{jk})\\, \\frac{R_k}{z^\\rho_k} = c_j ,

which is the gradient of :math:`z^\\rho(a) \\cdot (z(a)/z^\\rho(a))` with the ratio held
constant (DESIGN.md, "The package: one mechanism"; :cite:`montavon2019overview`).  ReLU,
max-pooling (winner-take-all), average pooling (LRP-0) and flattening keep their ordinary
gradient, and the relevance at any tensor :math:`a` is :math:`a \\odot \\partial f_t/\\partial a`.
One forward and one backward pass give the relevance of the input.

The user's model is only read: the engine walks its layers and applies their operations
with the rules' weights, so no hook is registered, no parameter, buffer or flag is touched,
and nothing needs restoring when an error is raised.
"""

from __future__ import annotations

import html
import numbers
import warnings
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .rules import LayerOp, Rule

__all__ = [
    "ConservationReport",
    "LayerConservation",
    "PARAMETRIC",
    "conservation_report",
    "explain",
    "named_layers",
    "propagate",
]

PARAMETRIC = (nn.Linear, nn.Conv1d, nn.Conv2d)
_PASS = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d)
_RESHAPE = (nn.Flatten, *_PASS)
_FREE = (
    nn.ReLU,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.Flatten,
    *_PASS,
)
_SUPPORTED = PARAMETRIC + _FREE
CL_BATCH = 2  # smallest batch computed in channels-last layout (measured: no gain at 1)
_BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _is(module: nn.Module, classes: tuple[type, ...]) -> bool:
    """``isinstance`` that refuses subclasses overriding ``forward`` (their maths is unknown)."""
    return any(isinstance(module, c) and type(module).forward is c.forward for c in classes)


def named_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The leaf layers of a (nested) ``nn.Sequential`` in forward order, with their paths.

    Parameters
    ----------
    model : nn.Module
        An ``nn.Sequential`` (possibly nested) of supported layers, or one supported layer.

    Returns
    -------
    list of (str, nn.Module)
        ``(path, layer)`` pairs; the path is the layer's name in ``model.named_modules()``.

    Raises
    ------
    TypeError
        For a layer ``explain`` has no rule for (the message names its type and path), an
        un-canonized BatchNorm, or a container other than ``nn.Sequential``.
    """
    out: list[tuple[str, nn.Module]] = []

    def walk(module: nn.Module, path: str) -> None:
        if isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward:
            for name, child in module.named_children():
                walk(child, f"{path}.{name}" if path else name)
            return
        where = f"'{path}'" if path else "the model itself"
        if isinstance(module, _BATCHNORM):
            raise TypeError(
                f"{type(module).__name__} at {where} has no LRP rule of its own: fold it into "
                "the neighbouring Linear/Conv layer first with `model = lt.canonize(model)`."
            )
        if not _is(module, _SUPPORTED):
            if isinstance(module, nn.MaxPool1d | nn.MaxPool2d) and module.return_indices:
                raise TypeError(f"{type(module).__name__} at {where}: return_indices=True "
                                "is not supported")
            raise TypeError(
                f"lrp_teach.explain has no rule for layer type {type(module).__name__} at "
                f"{where}. Supported: nested nn.Sequential of "
                + ", ".join(sorted({c.__name__ for c in _SUPPORTED}))
                + " (BatchNorm after lt.canonize)."
            )
        if isinstance(module, nn.MaxPool1d | nn.MaxPool2d) and module.return_indices:
            raise TypeError(f"{type(module).__name__} at {where}: return_indices=True is "
                            "not supported")
        out.append((path or type(module).__name__, module))

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    walk(model, "")
    return out


class _LRP(torch.autograd.Function):
    """Forward: the layer's exact output.  Backward: :math:`c = \\rho(W)^T (g z / z^\\rho)`.

    With ``relu=True`` the following ReLU is applied inside (its mask folds into the
    stored ratio), so that one output-sized tensor per layer is kept for the backward pass.
    """

    @staticmethod
    def forward(ctx, a: Tensor, rule: Rule, op: LayerOp, sink: list, relu: bool) -> Tensor:
        # with relu=True, z is already max(0, z): the ratio max(0, z) / den then carries the
        # ReLU's mask, and the ReLU needs no tensor of its own for the backward pass
        z, dens, state = rule.forward(op, a, relu)
        op.release()
        scales = []
        for d in dens:  # the denominators are fresh tensors: divide in place
            scales.append(torch.div(z, d, out=d) if d is not z and d.shape == z.shape else z / d)
        ctx.scales = tuple(scales)
        ctx.rule, ctx.op, ctx.state, ctx.sink, ctx.shape = rule, op, state, sink, a.shape
        return z

    @staticmethod
    def backward(ctx, g: Tensor):
        if ctx.scales is None:
            raise RuntimeError("the LRP graph can be traversed only once")
        s = tuple(g * r for r in ctx.scales)
        state, ctx.scales, ctx.state = ctx.state, None, None  # free memory as we go
        c, extra = ctx.rule.backward(ctx.op, state, s)
        del s, state
        if extra is not None:
            ctx.sink.append(extra)
        if c is None:
            c = g.new_zeros(ctx.shape)
        return c, None, None, None, None


def _default_composite():
    from .composites import EpsilonGamma

    return EpsilonGamma()


def _check_x(x: object) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor (float32 or float64), got {x.dtype}")
    if x.dim() < 2:
        raise ValueError(
            f"x has shape {tuple(x.shape)}: it needs a batch dimension first "
            "(use x.unsqueeze(0) for a single example)"
        )
    if not bool(torch.isfinite(x).all()):
        n = int((~torch.isfinite(x)).sum())
        raise ValueError(f"x contains {n} NaN or infinite value(s); LRP needs finite inputs")
    return x


def _check_layer_input(path: str, layer: nn.Module, a: Tensor, x: Tensor, first: bool) -> None:
    where = f"layer '{path}' ({layer})"
    origin = f" (x has shape {tuple(x.shape)})" if first else ""
    if isinstance(layer, nn.Linear):
        if a.shape[-1] != layer.in_features:
            raise ValueError(
                f"{where} expects {layer.in_features} input features, but receives a tensor "
                f"of shape {tuple(a.shape)}{origin}"
            )
        return
    dims = 3 if isinstance(layer, nn.Conv1d) else 4
    if a.dim() != dims or a.shape[1] != layer.in_channels:
        shape = "(batch, channels, length)" if dims == 3 else "(batch, channels, height, width)"
        raise ValueError(
            f"{where} expects input of shape {shape} with {layer.in_channels} channels, but "
            f"receives a tensor of shape {tuple(a.shape)}{origin}"
        )


def _targets(out: Tensor, target: int | Tensor | None) -> Tensor:
    if out.dim() != 2:
        raise ValueError(
            f"the model output has shape {tuple(out.shape)}; explain needs (batch, classes)"
        )
    batch, classes = out.shape
    if target is None:
        return out.detach().argmax(dim=1)
    if isinstance(target, Tensor):
        if target.is_floating_point() or target.is_complex():
            raise TypeError(f"target must be an int or an integer tensor, got {target.dtype}")
        t = target.to(out.device).long().reshape(-1)
        if t.numel() == 1:
            t = t.expand(batch)
        elif t.numel() != batch:
            raise ValueError(f"target has {t.numel()} entries, but the batch has {batch}")
    elif isinstance(target, numbers.Integral) and not isinstance(target, bool):
        t = torch.full((batch,), int(target), dtype=torch.long, device=out.device)
    else:
        raise TypeError(f"target must be None, an int or a LongTensor, got {type(target).__name__}")
    bad = (t < 0) | (t >= classes)
    if bool(bad.any()):
        raise ValueError(
            f"target {t[bad][0].item()} is out of range: the model has {classes} classes "
            f"(valid targets 0..{classes - 1})"
        )
    return t


@dataclass
class _Run:
    relevance: Tensor
    logit: Tensor
    target: Tensor
    layers: list[tuple[str, nn.Module, Rule | None]]
    tensors: list[Tensor] = field(default_factory=list)
    grads: list[Tensor] = field(default_factory=list)
    extra: Tensor | None = None
    input_layer: int | None = None


def _run(model, x, target, composite, record: bool) -> _Run:
    layers = named_layers(model)
    x = _check_x(x)
    if any(m.training and isinstance(m, _PASS[1:]) for _, m in layers):
        warnings.warn(  # only Dropout behaves differently in training mode here
            "the model is in training mode; explain() computes as in eval mode (Dropout "
            "off) and leaves the model's flag unchanged. Call model.eval() to silence this.",
            stacklevel=3,
        )
    composite = _default_composite() if composite is None else composite
    rules = composite.rules_for(layers)
    # the input layer: the first Linear/Conv, if only reshapes come before it
    input_layer = None
    for i, (_, m) in enumerate(layers):
        if _is(m, PARAMETRIC):
            input_layer = i
            break
        if not _is(m, _RESHAPE):
            break
    for i, (path, _) in enumerate(layers):
        rule = rules[i]
        if rule is not None and rule.input_only and i != input_layer:
            raise ValueError(
                f"{rule!r} is an input-layer rule, but it was assigned to '{path}', which "
                "does not read the model input; use it on the first layer only"
            )

    xg = x.detach().requires_grad_(True)
    sink: list[Tensor] = []
    tensors = [xg]
    a = xg
    if (x.dim() == 4 and x.shape[0] >= CL_BATCH and x.dtype == torch.float32
            and x.device.type == "cpu" and any(isinstance(m, nn.Conv2d) for _, m in layers)):
        # oneDNN convolutions run up to 2x faster on channels-last batches; same values
        a = xg.contiguous(memory_format=torch.channels_last)
    first_param = True
    fused = False
    with torch.enable_grad():
        for i, ((path, m), rule) in enumerate(zip(layers, rules, strict=True)):
            if fused:  # this ReLU was applied by the layer before
                fused = False
            elif rule is not None:
                _check_layer_input(path, m, a, x, first_param)
                first_param = False
                fused = not record and i + 1 < len(layers) and _is(layers[i + 1][1], (nn.ReLU,))
                a = _LRP.apply(a, rule, LayerOp(m, a), sink, fused)
            elif isinstance(m, nn.ReLU):
                a = F.relu(a)
            elif _is(m, _PASS):
                pass
            else:
                try:
                    a = m.forward(a)
                except RuntimeError as err:
                    raise ValueError(
                        f"layer '{path}' ({m}) cannot process a tensor of shape "
                        f"{tuple(a.shape)}: {err}"
                    ) from err
            if record:
                tensors.append(a)
        out = a
        t = _targets(out, target)
        g_out = torch.zeros_like(out).scatter_(1, t[:, None], 1.0)
        logit = out.detach().gather(1, t[:, None])[:, 0]
        if not out.requires_grad:  # a model without any operation on x
            grads = [g_out.reshape(x.shape)] * len(tensors)
        else:
            inputs = tensors[:-1] if record else [xg]
            grads = list(torch.autograd.grad(out, inputs, g_out, allow_unused=True))
            grads = [torch.zeros_like(v) if g is None else g for v, g in zip(
                inputs, grads, strict=True)]
    extra = sink[0] if sink else None
    relevance = x.detach() * grads[0]
    if extra is not None:
        relevance = relevance + extra.reshape(x.shape)
    named = [(p, m, r) for (p, m), r in zip(layers, rules, strict=True)]
    run = _Run(relevance, logit, t, named, extra=extra, input_layer=input_layer)
    if record:
        run.tensors = [v.detach() for v in tensors]
        run.grads = grads + [g_out]
    return run


def explain(
    model: nn.Module,
    x: Tensor,
    target: int | Tensor | None = None,
    composite=None,
    *,
    check: bool = False,
) -> Tensor | tuple[Tensor, ConservationReport]:
    """Explain ``model``'s output for class ``target`` at ``x`` with LRP.

    The relevance of the target's raw logit :math:`f_t(x)` (no softmax) is propagated
    layer by layer to the input with the rules of ``composite``:

    .. math::  R_j = \\sum_k \\frac{a_j \\rho(w_{jk})}{\\epsilon + \\sum_{0,j'} a_{j'}
               \\rho(w_{j'k})} R_k ,\\qquad R^{(L)} = f_t(x)

    computed as Gradient x Input of a modified forward pass, in one forward and one backward
    pass (:cite:`bach2015`, :cite:`montavon2019overview`).

    Parameters
    ----------
    model : nn.Module
        A (nested) ``nn.Sequential`` of Linear, Conv1d, Conv2d, ReLU, MaxPool1d/2d,
        AvgPool1d/2d, AdaptiveAvgPool1d/2d, Flatten, Dropout and Identity layers (BatchNorm
        after :func:`lrp_teach.canonize`).  Left exactly as it was.  A model in training
        mode is computed as in eval mode (Dropout off), with a warning if it has Dropout.
    x : Tensor
        A batch of inputs, float32 or float64, on any device; the computation runs in x's
        dtype and on x's device.
    target : int, LongTensor of shape (batch,), or None
        The class to explain, per sample or for all; ``None`` explains the predicted class.
    composite : lrp_teach.composites.Composite, optional
        Which rule goes to which layer.  The default ``None`` uses
        :class:`lrp_teach.composites.EpsilonGamma`: ``Epsilon(1e-6)`` on Linear layers and
        ``Gamma(0.25)`` on convolutions, a safe choice for any input domain.  For pixel inputs
        with known bounds, ``EpsilonGammaBox(low, high)`` or ``BestPractice(low, high)`` are
        better.
    check : bool
        Also return the :class:`ConservationReport` (costs memory for the intermediates).

    Returns
    -------
    Tensor, or (Tensor, ConservationReport)
        The relevance, shaped like ``x``.

    Raises
    ------
    TypeError
        For an unsupported layer (naming its type and path) or a badly typed argument.
    ValueError
        For an input shape the model cannot take, NaN/inf in ``x``, or a target out of range.

    Examples
    --------
    >>> R = lt.explain(model, x, target=3, composite=lt.composites.EpsilonGammaBox(0.0, 1.0))
    """
    run = _run(model, x, target, composite, record=check)
    if check:
        return run.relevance, ConservationReport._from_run(run)
    return run.relevance


@dataclass
class LayerConservation:
    """Relevance entering and leaving one layer, per sample (tensors of shape (batch,))."""

    name: str
    layer: str
    rule: str
    relevance_out: Tensor
    relevance_in: Tensor

    @property
    def absorbed(self) -> Tensor:
        """Relevance kept by biases and stabilizers: ``relevance_out - relevance_in``."""
        return self.relevance_out - self.relevance_in

    @property
    def absorbed_share(self) -> Tensor:
        """``absorbed / relevance_out`` (0 where no relevance arrives)."""
        out = self.relevance_out
        safe = torch.where(out == 0, torch.ones_like(out), out)
        return torch.where(out == 0, torch.zeros_like(out), self.absorbed / safe)


@dataclass
class ConservationReport:
    """Where the relevance of the target logit went, layer by layer.

    Attributes
    ----------
    layers : list of LayerConservation
        One entry per layer in forward order: ``name``, ``layer`` (type), ``rule``,
        ``relevance_out`` (arriving from above), ``relevance_in`` (passed below),
        ``absorbed`` and ``absorbed_share``, each a tensor with one value per sample.
    logit : Tensor
        The target logit :math:`f_t(x)` per sample (the relevance at the top).
    total : Tensor
        :math:`\\sum_i R_i` of the input relevance per sample.
    target : Tensor
        The explained class per sample.

    ``report["features.0"]`` returns a layer's entry; ``str(report)`` and the notebook
    display give a table summed over the batch.
    """

    layers: list[LayerConservation]
    logit: Tensor
    total: Tensor
    target: Tensor

    @property
    def absorbed(self) -> Tensor:
        """Relevance lost between the logit and the input, per sample."""
        return self.logit - self.total

    @property
    def absorbed_share(self) -> Tensor:
        """The lost share of the logit, per sample (0 where the logit is 0)."""
        safe = torch.where(self.logit == 0, torch.ones_like(self.logit), self.logit)
        return torch.where(self.logit == 0, torch.zeros_like(safe), self.absorbed / safe)

    def __getitem__(self, name: str) -> LayerConservation:
        for entry in self.layers:
            if entry.name == name:
                return entry
        raise KeyError(f"no layer named {name!r}; layers: {[e.name for e in self.layers]}")

    @classmethod
    def _from_run(cls, run: _Run) -> ConservationReport:
        def per_sample(v: Tensor, g: Tensor) -> Tensor:
            return (v * g).flatten(1).sum(1)

        extra = None if run.extra is None else run.extra.flatten(1).sum(1)
        entries = []
        for i, (path, m, rule) in enumerate(run.layers):
            r_in = per_sample(run.tensors[i], run.grads[i])
            if extra is not None and run.input_layer is not None and i <= run.input_layer:
                r_in = r_in + extra
            r_out = per_sample(run.tensors[i + 1], run.grads[i + 1])
            if extra is not None and run.input_layer is not None and i < run.input_layer:
                r_out = r_out + extra
            entries.append(LayerConservation(
                path, type(m).__name__, "" if rule is None else repr(rule), r_out, r_in))
        total = run.relevance.flatten(1).sum(1)
        return cls(entries, run.logit, total, run.target)

    def _rows(self) -> list[tuple[str, ...]]:
        rows = []
        for e in self.layers:
            out, inn = float(e.relevance_out.sum()), float(e.relevance_in.sum())
            share = (out - inn) / out if out != 0 else 0.0
            rows.append((e.name, e.layer, e.rule or "-", f"{out:.4f}", f"{inn:.4f}",
                         f"{out - inn:.2e}", f"{100 * share + 0.0:.2f}%"))
        return rows

    def _footer(self) -> str:
        n = self.logit.numel()
        logit, total = float(self.logit.sum()), float(self.total.sum())
        share = (logit - total) / logit if logit != 0 else 0.0
        scope = "" if n == 1 else f" (sums over the batch of {n})"
        return (f"target logit {logit:.4f}, sum of input relevance {total:.4f}, absorbed "
                f"{logit - total:.2e} ({100 * share:.2f}% of the logit){scope}")

    _HEAD = ("layer", "type", "rule", "R out", "R in", "absorbed", "share")

    def __str__(self) -> str:
        rows = [self._HEAD, *self._rows()]
        widths = [max(len(r[c]) for r in rows) for c in range(len(self._HEAD))]
        lines = ["  ".join(v.ljust(w) if c < 3 else v.rjust(w)
                           for c, (v, w) in enumerate(zip(r, widths, strict=True)))
                 for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join([*lines, self._footer()])

    def __repr__(self) -> str:
        return f"ConservationReport({len(self.layers)} layers)\n{self}"

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in self._HEAD)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in r) + "</tr>"
            for r in self._rows()
        )
        return (f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
                f"<p>{html.escape(self._footer())}</p>")


def conservation_report(
    model: nn.Module, x: Tensor, target: int | Tensor | None = None, composite=None
) -> ConservationReport:
    """Per-layer relevance budget of an LRP explanation (same arguments as :func:`explain`).

    For every layer it reports the relevance arriving from above, :math:`\\sum_k R_k`, the
    relevance passed below, :math:`\\sum_j R_j`, and the difference absorbed by biases and
    stabilizers; and the input total :math:`\\sum_i R_i` against the target logit
    :math:`f_t(x)`, which are equal when the rules conserve relevance
    (:cite:`montavon2019overview`).
    """
    return explain(model, x, target, composite, check=True)[1]


def propagate(layer: nn.Module, rule: Rule, a: Tensor, R_out: Tensor) -> Tensor:
    """One LRP step through a Linear or Conv layer.

    .. math::  R_j = a_j \\sum_k \\rho(w_{jk}) \\frac{R_k}{z^\\rho_k},\\qquad
               z^\\rho_k = \\sum_{0,j} a_j \\rho(w_{jk}) + \\epsilon\\,\\mathrm{sign}(\\cdot)

    (plus the box terms for :class:`~lrp_teach.rules.ZBox`, and without :math:`a_j` for
    the input-free rules), as in :cite:`montavon2019overview`.

    Parameters
    ----------
    layer : nn.Linear, nn.Conv1d or nn.Conv2d
        The layer (only read).
    rule : Rule
        The rule to apply.
    a : Tensor
        The layer's input activations (with batch dimension).
    R_out : Tensor
        The relevance of the layer's outputs, shaped like ``layer(a)``.

    Returns
    -------
    Tensor
        The relevance of the inputs, shaped like ``a``.
    """
    if not _is(layer, PARAMETRIC):
        raise TypeError(f"propagate needs a Linear or Conv layer, got {type(layer).__name__}")
    if not isinstance(rule, Rule):
        raise TypeError(f"rule must be an lrp_teach.rules.Rule, got {type(rule).__name__}")
    a = _check_x(a)
    _check_layer_input("layer", layer, a, a, False)
    with torch.no_grad():
        a = a.detach()
        op = LayerOp(layer, a)
        z, dens, state = rule.forward(op, a)
        if tuple(R_out.shape) != tuple(z.shape):
            raise ValueError(
                f"R_out has shape {tuple(R_out.shape)}, but the layer output has shape "
                f"{tuple(z.shape)}"
            )
        R_out = R_out.detach().to(a.dtype)
        c, extra = rule.backward(op, state, tuple(R_out / d for d in dens))
        R = torch.zeros_like(a) if c is None else a * c
        return R if extra is None else R + extra
