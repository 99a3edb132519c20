r"""The LRP engine: relevance as Gradient x Input of the model's own, modified forward pass.

:func:`explain` calls ``model(*inputs)`` itself.  For the duration of that call, and only
then, a :class:`torch.overrides.TorchFunctionMode` sees every torch operation the user's
``forward`` performs (functional calls such as ``F.relu`` or ``torch.flatten``, tensor
methods and operators such as ``a + b``, ``x.view(...)``, ``x[:, 0]``), and global module
hooks tell it which module is running.  Each tensor that depends on an input is tagged; each
operation on a tagged tensor is treated by what it is:

========================================  =================================================
operation (as torch names it)             treatment
========================================  =================================================
``linear``/``conv1d``/``conv2d`` with the  the module's rule from the composite
weight of an ``nn.Linear``/``nn.Conv1d``/  (:mod:`lrp_teach.rules`): exact output, backward
``nn.Conv2d`` (:data:`PARAMETRIC`)         :math:`c_j = \sum_k \rho(w_{jk}) R_k / z^\rho_k`
``add``/``sub`` of two tagged tensors      plain gradient: the proportional split
                                           :math:`R_a = a/(a+b)\,R`; ``Composite(sums=
                                           Epsilon(e))`` divides by :math:`z + e\,
                                           \mathrm{sign}(z)` instead
``add``/``sub`` of a constant, ``mul``/    plain gradient (linear in the input; a constant
``div`` by a constant, ``neg``             summand absorbs its share like a bias)
data movement: ``view``, ``reshape``,      plain gradient
``flatten``, ``permute``, ``transpose``,
``cat``, ``stack``, ``split``, ``chunk``,
indexing, ``gather``, ``index_select``,
``where``, ``masked_fill``, ``pad``,
``repeat``, ``expand``, packing of
sequences, ``dropout`` in eval
``sum``, ``mean``, ``cumsum``, average     plain gradient (LRP-0, proportional)
pooling (``avg_pool*``,
``adaptive_avg_pool*``)
``relu``, ``clamp(min=0)``, max pooling,   plain gradient (winner-take-all)
``max``/``amax``
``tanh``, ``sigmoid``, ``gelu``, ``silu``, the identity rule :class:`~lrp_teach.rules.Pass`
``leaky_relu``, ``elu``, ``softplus``      (or, inside an activation module, the
                                           composite's rule for it)
``lstm`` inside an ``nn.LSTM``             :mod:`lrp_teach.engine.recurrent`
                                           (:cite:`arras2017wassa`)
``embedding`` of token ids from an input   its output becomes the point where the tokens'
                                           relevance is read
``mul`` of two tagged tensors, matrix      refused: use :mod:`lrp_teach.products`
products of two tagged tensors
``linear``/``conv``/``matmul``/``einsum``  refused
with trainable weights outside their
module, division by a tagged tensor,
``batch_norm``, active ``dropout``, and
every other operation (``softmax``,
``exp``, ``layer_norm``, ...)
========================================  =================================================

A refused operation raises a ``TypeError`` that names it and the module it ran in, if and
only if its result reaches the explained output (a user's hook that logs ``x.abs().mean()``
does no harm).  Modules with parameters other than Linear, Conv1d, Conv2d, Embedding and
LSTM are refused when they are called, naming their type and path, and so is an unfolded
BatchNorm.  Nothing falls back to the plain gradient silently.

The relevance of an input is then input x gradient.  The model comes back exactly as it
was (training flags, buffers, no hooks), also after an error (:mod:`lrp_teach.engine.state`).
"""

from __future__ import annotations

import html
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.nn.modules import module as _module_hooks
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakIdKeyDictionary

from .rules import ActivationRule, Epsilon, LayerOp, Pass, Rule, Zero, stabilize
from .state import preserved, resolve_target

__all__ = [
    "ACTIVATIONS",
    "Attribution",
    "ConservationReport",
    "LayerConservation",
    "PARAMETRIC",
    "attribute",
    "conservation_report",
    "explain",
    "named_layers",
    "propagate",
    "trace",
]

PARAMETRIC = (nn.Linear, nn.Conv1d, nn.Conv2d)
ACTIVATIONS = (nn.Tanh, nn.Sigmoid, nn.GELU, nn.SiLU, nn.LeakyReLU, nn.ELU, nn.Softplus)
_BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
_KNOWN_PARAMETRIC_LEAVES = (*PARAMETRIC, nn.Embedding, nn.LSTM)
CL_BATCH = 2  # smallest batch computed in channels-last layout (measured: no gain at 1)
_TRAIN_DEPENDENT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout, *_BATCHNORM)

# --------------------------------------------------------------------------- the op table
# names as torch reports them to a TorchFunctionMode (``x + y`` arrives as "add")
_RESHAPE = {"view", "view_as", "reshape", "reshape_as", "flatten", "unflatten", "contiguous",
            "squeeze", "unsqueeze", "clone", "to", "float", "double", "type_as", "dropout",
            "requires_grad_", "get:real"}
_LINEAR = _RESHAPE | {
    "permute", "transpose", "t", "swapaxes", "swapdims", "movedim", "moveaxis", "expand",
    "expand_as", "repeat", "tile", "__getitem__", "select", "narrow", "split",
    "split_with_sizes", "chunk", "unbind", "tensor_split", "cat", "concat", "concatenate",
    "stack", "hstack", "vstack", "dstack", "flip", "roll", "index_select", "gather",
    "take_along_dim", "masked_fill", "masked_fill_", "where", "pad", "unfold", "fold",
    "pixel_shuffle", "pixel_unshuffle", "repeat_interleave", "diagonal", "tril", "triu",
    "__setitem__", "setitem", "getitem", "copy_", "get:T", "get:mT", "get:H", "get:mH", "neg",
    "negative",
    "sum", "mean", "nansum", "cumsum", "avg_pool1d", "avg_pool2d", "adaptive_avg_pool1d",
    "_pack_padded_sequence", "_pad_packed_sequence", "pad_sequence",
    "adaptive_avg_pool2d",
    # winner-take-all: the gradient of a maximum picks the winner
    "max_pool1d", "max_pool2d", "_max_pool1d", "_max_pool2d",
    "max_pool1d_with_indices", "max_pool2d_with_indices", "adaptive_max_pool1d",
    "adaptive_max_pool2d", "amax", "max",
}
_SUMS = {"add", "add_", "sub", "sub_", "rsub", "subtract"}
_SCALE = {"mul", "mul_", "multiply", "div", "div_", "true_divide", "divide"}
_ACTIVATION_OPS = {"tanh", "tanh_", "sigmoid", "sigmoid_", "gelu", "silu", "leaky_relu",
                   "leaky_relu_", "elu", "elu_", "softplus"}
_MATMUL = {"matmul", "mm", "bmm", "einsum", "tensordot", "outer", "inner", "dot", "addmm",
           "baddbmm", "bilinear", "linear", "conv1d", "conv2d", "conv3d",
           "conv_transpose1d", "conv_transpose2d", "conv_transpose3d", "mv"}
_CONSTANT = {"new_zeros", "new_ones", "new_full", "new_empty", "new_tensor", "zeros_like",
             "ones_like", "full_like", "empty_like", "rand_like", "randn_like", "detach",
             "get:data", "get:grad"}
_HINTS = {
    "product": "a product of two input-dependent tensors needs a product rule: write it as "
               "lt.products.take_all(gate, signal) or lt.products.uniform(a, b)",
    "weights": "a linear map with trainable weights outside an nn.Linear/nn.Conv module gets "
               "no rule from the composite: call the module (e.g. self.fc(x)) instead",
    "divide": "dividing by an input-dependent tensor is not linear in the input; hold the "
              "divisor constant with .detach() if that is what you mean",
    "batch_norm": "fold BatchNorm into the neighbouring layer with lt.canonize(model, "
                  "example_input) first",
    "dropout": "dropout is active (training=True) in this call; call it with "
               "training=self.training, or use nn.Dropout",
    "unknown": "lrp_teach has no LRP rule for it; see the engine's documentation "
               "(lrp_teach.engine.core) for what is supported",
}


def _name(func) -> str:
    name = getattr(func, "__name__", repr(func))
    if name == "__get__":
        return "get:" + getattr(getattr(func, "__self__", None), "__name__", "?")
    if name.startswith("__") and name.endswith("__"):  # __iadd__ -> add_, __radd__ -> add
        core = name[2:-2]
        if core.startswith("i") and core[1:] in {"add", "sub", "mul", "truediv"}:
            return {"truediv": "div"}.get(core[1:], core[1:]) + "_"
        if core.startswith("r") and core[1:] in {"add", "sub", "mul", "truediv", "matmul"}:
            return "r" + {"truediv": "div"}.get(core[1:], core[1:])
        return {"truediv": "div"}.get(core, core)
    return name


def _display(func) -> str:
    name = _name(func)
    module = getattr(func, "__module__", None) or ""
    if name.startswith("get:"):
        return f"Tensor.{name[4:]}"
    if module.startswith("torch.nn.functional"):
        return f"F.{name}"
    return f"torch.{name}"


# --------------------------------------------------------------------------- tags
# Every tensor that depends on an input carries a tag in the engine's weak dictionary:
#   ("raw", i)   input i itself, or a reshaped copy of it (what input-layer rules need)
#   ("dep",)     any other float tensor that depends on an input
#   ("idx", i)   an integer tensor derived from input i (token ids)
#   ("bad", msg) a tensor computed by an operation without a rule; an error is raised
#                only if it reaches the explained output
_DEP = ("dep",)


@dataclass
class _Call:
    """One call of a rule-carrying module, recorded for the conservation report."""

    name: str
    module: nn.Module
    rule: object
    inputs: list[Tensor]
    outputs: list[Tensor]
    extra: list = field(default_factory=list)  # ZBox terms, filled in the backward pass
    raw: int | None = None


class _LRPLayer(torch.autograd.Function):
    """Forward: the layer's exact output.  Backward: :math:`c = \\rho(W)^T (g z / z^\\rho)`."""

    @staticmethod
    def forward(ctx, a: Tensor, rule: Rule, op: LayerOp, sink: list) -> Tensor:
        if type(rule) in (Zero, Epsilon) and not getattr(rule, "bias_factor", 0) and (
                rule.stabilizer > 0):
            # LRP-0/ε: z / (z + ε sign z) = |z| / (|z| + ε) exactly, in three passes
            z = op(a, op.weight, op.bias)
            op.release()
            ratio = z.abs()
            ctx.scales = (ratio.div_(ratio + rule.stabilizer),)
            ctx.rule, ctx.op, ctx.state, ctx.sink, ctx.shape = rule, op, a.shape, sink, a.shape
            return z
        z, dens, state = rule.forward(op, a, False)
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
        if ctx.op.channels_last:  # keep the convolution's layout (a copy only if it changed)
            g = g.contiguous(memory_format=torch.channels_last)
        s = tuple(g * r for r in ctx.scales)
        state, ctx.scales, ctx.state = ctx.state, None, None  # free memory as we go
        c, extra = ctx.rule.backward(ctx.op, state, s)
        del s, state
        if extra is not None:
            ctx.sink.append(extra)
        if c is None:
            c = g.new_zeros(ctx.shape)
        return c, None, None, None


def _default_composite():
    from .composites import EpsilonGamma

    return EpsilonGamma()


def _check_composite(composite):
    from .composites import Composite

    if composite is None:
        return _default_composite()
    if not isinstance(composite, Composite):
        raise TypeError(
            f"composite must be an lrp_teach.composites.Composite (for example "
            f"lt.composites.EpsilonGammaBox(low, high)), got {type(composite).__module__}."
            f"{type(composite).__qualname__}; rules and composites of other libraries "
            "cannot be used here"
        )
    return composite


class _Engine(TorchFunctionMode):
    """The mode that attaches the rules while ``model(*inputs)`` runs."""

    def __init__(self, model: nn.Module, composite, *, record: bool = False,
                 at: Iterable[str] = (), order: list | None = None, dry: bool = False):
        super().__init__()
        self.model, self.composite, self.record, self.dry = model, composite, record, dry
        self.tags = WeakIdKeyDictionary()
        self.paths: dict[int, str] = {}
        for name, m in model.named_modules():
            self.paths.setdefault(id(m), name or type(m).__name__)
        self.owner: dict[int, nn.Module] = {}
        for m in model.modules():
            if isinstance(m, (*PARAMETRIC, nn.Embedding)):
                self.owner.setdefault(id(m.weight), m)
            elif isinstance(m, nn.LSTM):
                for p in m._flat_weights:
                    if p is not None:
                        self.owner.setdefault(id(p), m)
        self.stack: list[nn.Module] = []
        self.rules: dict[int, object] = {}
        self.executed: list[tuple[str, nn.Module]] = []  # Linear/Conv modules, first call order
        self.order = order
        self.calls: list[_Call] = []
        self.tokens: list[tuple[int, Tensor]] = []  # (input index, embedding output leaf)
        self.lost: list = []  # relevance shares no input can carry: (tensors, order) pairs
        self.unsorted: dict[int, Tensor | None] = {}  # nn.LSTM -> order of a packed batch
        self.at = {}
        for key in at:
            path, _, where = str(key).partition(":")
            if where not in ("", "in"):
                raise ValueError(f"at={key!r}: use 'module.path' or 'module.path:in'")
            self.at[str(key)] = (path, where)
        known = {name for name, _ in model.named_modules()}
        missing = sorted({p for p, _ in self.at.values()} - known)
        if missing:
            raise ValueError(f"at refers to unknown modules {missing}")
        self.points: dict[str, list[Tensor]] = {k: [] for k in self.at}
        self.counts: dict[int, int] = {}

    # ------------------------------------------------------------------ helpers
    def tag(self, t):
        return self.tags.get(t) if isinstance(t, Tensor) else None

    def where(self) -> str:
        for m in reversed(self.stack):
            if id(m) in self.paths:
                return f"module '{self.paths[id(m)]}' ({type(m).__name__})"
        return "the model's forward"

    def path(self, m: nn.Module) -> str:
        return self.paths.get(id(m), type(m).__name__)

    def bad(self, func, kind: str) -> tuple:
        return ("bad", f"{_display(func)} on an input-dependent tensor in {self.where()}: "
                       f"{_HINTS[kind]}.")

    def mark(self, out, tag) -> None:
        if tag is None:
            return
        flat, _ = tree_flatten(out)
        for t in flat:
            if isinstance(t, Tensor):
                if t.is_floating_point():
                    self.tags[t] = tag if tag[0] != "idx" else _DEP
                elif tag[0] in ("idx", "bad"):
                    self.tags[t] = tag

    # ------------------------------------------------------------------ module hooks
    def pre_hook(self, module: nn.Module, args):
        self.stack.append(module)
        if self.dry:
            return None
        if isinstance(module, _BATCHNORM):
            raise TypeError(
                f"{type(module).__name__} at {self.where()} has no LRP rule of its own: fold it "
                "into the neighbouring Linear/Conv layer first with "
                "`model = lt.canonize(model, example_input)`."
            )
        if (not isinstance(module, _KNOWN_PARAMETRIC_LEAVES)
                and next(module.children(), None) is None
                and next(module.parameters(recurse=False), None) is not None):
            raise TypeError(
                f"lrp_teach.explain has no rule for layer type {type(module).__name__} at "
                f"{self.where()}: it owns parameters whose use the engine cannot assign a "
                "rule to. Supported modules with parameters: "
                + ", ".join(c.__name__ for c in _KNOWN_PARAMETRIC_LEAVES)
                + " (BatchNorm after lt.canonize)."
            )
        if isinstance(module, nn.LSTM) and args and isinstance(
                args[0], nn.utils.rnn.PackedSequence):
            self.unsorted[id(module)] = args[0].unsorted_indices
        path = self.paths.get(id(module))
        if path is not None and (path, "in") in self.at.values() and args:
            first = args[0]
            if isinstance(first, Tensor):
                node = first.view_as(first)
                self.tags[node] = self.tags.get(first, _DEP)
                for key, (p, w) in self.at.items():
                    if p == path and w == "in":
                        self.points[key].append(node)
                return (node, *args[1:])
        return None

    def post_hook(self, module: nn.Module, args, output):
        if self.stack and self.stack[-1] is module:
            self.stack.pop()
        path = self.paths.get(id(module))
        if path is None or self.dry or not isinstance(output, Tensor):
            return None
        keys = [k for k, (p, w) in self.at.items() if p == path and w == ""]
        if not keys:
            return None
        # hand the caller a copy: an in-place change after the module (``out += identity``)
        # must not change the tensor whose relevance is read
        copy = output.clone()
        self.tags[copy] = self.tags.get(output, _DEP)
        for key in keys:
            self.points[key].append(output)
        return copy

    # ------------------------------------------------------------------ rules
    def rule_for(self, module: nn.Module):
        key = id(module)
        if key not in self.rules:
            name = self.path(module)
            if isinstance(module, PARAMETRIC):
                index = len(self.executed)
                self.executed.append((name, module))
                count = None if self.order is None else len(self.order)
                self.rules[key] = self.composite.rule_for(index, count, name, module)
            else:
                self.rules[key] = self.composite.module_rule(name, module)
        return self.rules[key]

    def activation_rule(self, func) -> ActivationRule:
        top = self.stack[-1] if self.stack else None
        if top is not None and isinstance(top, ACTIVATIONS):
            rule = self.rule_for(top)
            if rule is not None:
                return rule
        return Pass()

    # ------------------------------------------------------------------ the mode
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        flat, _ = tree_flatten((args, kwargs))
        tags = [tg for tg in (self.tag(t) for t in flat) if tg is not None]
        if not tags:
            return func(*args, **kwargs)
        name = _name(func)
        if self.dry:
            if name in ("linear", "conv1d", "conv2d"):
                self.dry_call(args, kwargs)
            out = func(*args, **kwargs)
            self.mark(out, _DEP)
            return out
        bad = next((tg for tg in tags if tg[0] == "bad"), None)
        floats = [t for t in flat if isinstance(t, Tensor) and t.is_floating_point()
                  and self.tag(t) is not None]
        if bad is not None:
            out = func(*args, **kwargs)
            self.mark(out, bad)
            return out
        handler = _HANDLERS.get(name)
        if not floats and name != "embedding":  # only integer tensors derived from token ids
            return self.integer_op(func, name, args, kwargs)
        if handler is not None:
            return handler(self, func, args, kwargs)
        if name in _CONSTANT:
            return func(*args, **kwargs)
        if name == "view" and args and isinstance(args[0], Tensor) and (
                not args[0].is_contiguous()):  # a channels-last activation of the engine's
            args = (args[0].contiguous(), *args[1:])
        out = func(*args, **kwargs)
        if not any(isinstance(t, Tensor) and t.is_floating_point()
                   for t in tree_flatten(out)[0]):
            return out  # sizes, comparisons, arg max: no relevance flows through them
        if name in _LINEAR:
            tag = _DEP
            if name in _RESHAPE and len(floats) == 1 and self.tag(floats[0])[0] == "raw":
                tag = self.tag(floats[0])
            if name == "dropout" and _dropout_active(args, kwargs):
                tag = self.bad(func, "dropout")
            if name == "max" and len(floats) == 2:
                tag = _DEP  # elementwise maximum of two tensors: winner takes all
            self.mark(out, tag)
            if name.endswith("_") or name in ("setitem", "__setitem__", "copy_"):
                self.mark(args[0], tag)
            return out
        kind = "unknown"
        if name in _MATMUL or name == "rmatmul":
            kind = "product" if len(floats) > 1 else "weights"
        elif name == "batch_norm":
            kind = "batch_norm"
        self.mark(out, self.bad(func, kind))
        if name.endswith("_"):
            self.mark(args[0], self.bad(func, kind))
        return out

    def integer_op(self, func, name, args, kwargs):
        if name in _MATMUL:
            raise TypeError(
                f"{_display(func)} in {self.where()} receives an integer tensor derived from "
                "an input: integer inputs are token ids for an nn.Embedding; pass "
                "floating-point values (float32 or float64) to explain anything else")
        out = func(*args, **kwargs)
        if name == "embedding":
            return out
        idx = next(tg for tg in (self.tag(t) for t in tree_flatten((args, kwargs))[0])
                   if tg is not None)
        if name in _LINEAR | {"long", "int"}:
            flat = [t for t in tree_flatten(out)[0] if isinstance(t, Tensor)]
            for t in flat:
                if not t.is_floating_point() and t.dtype != torch.bool:
                    self.tags[t] = idx
        return out

    def dry_call(self, args, kwargs):
        weight = args[1] if len(args) > 1 else kwargs.get("weight")
        m = self.owner.get(id(weight))
        if m is not None and isinstance(m, PARAMETRIC) and id(m) not in self.counts:
            self.counts[id(m)] = len(self.executed)
            self.executed.append((self.path(m), m))


def _dropout_active(args, kwargs) -> bool:
    p = args[1] if len(args) > 1 else kwargs.get("p", 0.5)
    training = args[2] if len(args) > 2 else kwargs.get("training", True)
    return bool(training) and p > 0


# --------------------------------------------------------------------------- handlers


def _parametric(engine: _Engine, func, args, kwargs):
    a = args[0] if args else kwargs.get("input")
    weight = args[1] if len(args) > 1 else kwargs.get("weight")
    module = engine.owner.get(id(weight))
    tag = engine.tag(a)
    if module is None or not isinstance(module, PARAMETRIC) or tag is None:
        out = func(*args, **kwargs)
        kind = "product" if engine.tag(weight) is not None else "weights"
        engine.mark(out, engine.bad(func, kind))
        return out
    bias = args[2] if len(args) > 2 else kwargs.get("bias")
    if bias is not module.bias or (len(args) > 3 and isinstance(module, nn.modules.conv._ConvNd)
                                   and tuple(args[3:7]) != (module.stride, module.padding,
                                                            module.dilation, module.groups)):
        out = func(*args, **kwargs)
        engine.mark(out, ("bad", f"{_display(func)} in {engine.where()} uses the weight of "
                                 f"'{engine.path(module)}' with other arguments than the "
                                 "module's own; call the module instead."))
        return out
    if a.dtype in (torch.float16, torch.bfloat16):
        raise TypeError(f"'{engine.path(module)}' receives a {a.dtype} tensor: lrp_teach "
                        "computes in float32 or float64; cast the model and the input with "
                        ".float() first")
    rule = engine.rule_for(module)
    path = engine.path(module)
    if not isinstance(rule, Rule):
        raise TypeError(f"the composite gave {rule!r} to '{path}' ({type(module).__name__}), "
                        "which needs an lrp_teach.rules.Rule")
    raw = tag[1] if tag[0] == "raw" else None
    if rule.input_only and raw is None:
        raise ValueError(
            f"{rule!r} is an input-layer rule, but it was assigned to '{path}', which does "
            "not read the model input; use it on the first layer only")
    _check_layer_input(path, module, a)
    if (isinstance(module, nn.Conv2d) and a.dtype == torch.float32 and a.device.type == "cpu"
            and a.shape[0] >= CL_BATCH):
        # oneDNN convolutions run faster on channels-last batches; same values, and the
        # layout carries over through ReLU and pooling to the next convolution
        a = a.contiguous(memory_format=torch.channels_last)
    a_in = a.view_as(a) if engine.record else a
    call = _Call(path, module, rule, [a_in], [], raw=raw)
    z = _LRPLayer.apply(a_in, rule, LayerOp(module, a_in), call.extra)
    call.outputs.append(z)
    engine.calls.append(call)
    engine.tags[z] = _DEP
    if engine.record:  # the report reads z itself; the model may change its copy in place
        z = z.clone()
        engine.tags[z] = _DEP
    return z


def _sums(engine: _Engine, func, args, kwargs):
    tensors = [t for t in args[:2] if isinstance(t, Tensor) and engine.tag(t) is not None]
    rule = engine.composite.sums
    if len(tensors) < 2 or rule is None:
        out = func(*args, **kwargs)
        engine.mark(out, _DEP)
        if _name(func).endswith("_"):
            engine.mark(args[0], _DEP)
        return out
    inplace = _name(func).endswith("_")
    plain = torch.sub if _name(func).startswith(("sub", "rsub")) else torch.add
    if _name(func) == "rsub":
        z = func(*args, **kwargs)
    else:
        z = plain(*args, **kwargs)
    eps = rule.epsilon
    ratio = (z / stabilize(z.detach(), eps)).detach()
    out = z.detach() + (z - z.detach()) * ratio
    if inplace:
        args[0].copy_(out)
        engine.mark(args[0], _DEP)
        return args[0]
    engine.mark(out, _DEP)
    return out


def _scale(engine: _Engine, func, args, kwargs):
    out = func(*args, **kwargs)
    name = _name(func)
    operands = [t for t in args[:2] if isinstance(t, Tensor)]
    dependent = [t for t in operands if engine.tag(t) is not None and t.is_floating_point()]
    if len(dependent) > 1:
        tag = engine.bad(func, "product")
    elif name.startswith(("div", "true_divide", "divide", "rdiv")) and (
            name.startswith("rdiv") or (len(args) > 1 and engine.tag(args[1]) is not None)):
        tag = engine.bad(func, "divide")
    else:
        tag = _DEP
    engine.mark(out, tag)
    if name.endswith("_"):
        engine.mark(args[0], tag)
    return out


def _activation(engine: _Engine, func, args, kwargs):
    x = args[0] if args else kwargs.get("input")
    rule = engine.activation_rule(func)
    inplace = _name(func).endswith("_") or bool(kwargs.get("inplace", False)) or (
        _name(func) in ("leaky_relu", "elu") and len(args) > 2 and bool(args[2]))
    if inplace:
        y = func(x.clone(), *args[1:], **kwargs)
        out = rule.apply(func, x, y)
        x.copy_(out)
        engine.mark(x, _DEP)
        return x
    y = func(*args, **kwargs)
    out = rule.apply(func, x, y)
    engine.mark(out, _DEP)
    return out


class _ReLU(torch.autograd.Function):
    """ReLU whose backward keeps a one-byte mask instead of the float output (same values
    and gradient as ``torch.relu``; a quarter of its memory)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        mask = x > 0
        ctx.save_for_backward(mask)
        return torch.relu(x)

    @staticmethod
    def backward(ctx, g: Tensor):
        (mask,) = ctx.saved_tensors
        return g * mask


def _relu(engine: _Engine, func, args, kwargs):
    x = args[0] if args else kwargs.get("input")
    inplace = _name(func).endswith("_") or bool(kwargs.get("inplace", False)) or (
        len(args) > 1 and args[1] is True)
    if not x.requires_grad:
        out = func(*args, **kwargs)
    elif inplace:
        out = x.copy_(_ReLU.apply(x))
    else:
        out = _ReLU.apply(x)
    engine.mark(out, _DEP)
    return out


def _clamp(engine: _Engine, func, args, kwargs):
    low = args[1] if len(args) > 1 else kwargs.get("min")
    high = args[2] if len(args) > 2 else kwargs.get("max")
    out = func(*args, **kwargs)
    relu = high is None and isinstance(low, (int, float)) and low == 0
    engine.mark(out, _DEP if relu else engine.bad(func, "unknown"))
    return out


def _embedding(engine: _Engine, func, args, kwargs):
    ids, weight = args[0], args[1]
    module = engine.owner.get(id(weight))
    max_norm = args[3] if len(args) > 3 else kwargs.get("max_norm")
    if max_norm is not None:
        raise TypeError(f"nn.Embedding at {engine.where()} has max_norm set, which rewrites "
                        "its weights during the call; lrp_teach never modifies the model")
    out = func(*args, **kwargs)
    tag = engine.tag(ids)
    if tag is None or tag[0] != "idx":
        return out
    leaf = out.detach().requires_grad_(True)
    engine.tags[leaf] = _DEP
    engine.tokens.append((tag[1], leaf, ids.shape, module))
    return leaf


def _lstm(engine: _Engine, func, args, kwargs):
    from .recurrent import lstm_call

    return lstm_call(engine, func, args, kwargs)


_HANDLERS = {name: _parametric for name in ("linear", "conv1d", "conv2d")}
_HANDLERS.update({name: _sums for name in _SUMS})
_HANDLERS.update({name: _scale for name in (*_SCALE, "rmul", "rdiv")})
_HANDLERS.update({name: _activation for name in _ACTIVATION_OPS})
_HANDLERS.update({"relu": _relu, "relu_": _relu})
_HANDLERS.update({"clamp": _clamp, "clamp_min": _clamp, "embedding": _embedding,
                  "lstm": _lstm})


def _check_layer_input(path: str, layer: nn.Module, a: Tensor) -> None:
    where = f"layer '{path}' ({layer})"
    if isinstance(layer, nn.Linear):
        if a.shape[-1] != layer.in_features:
            raise ValueError(f"{where} expects {layer.in_features} input features, but "
                             f"receives a tensor of shape {tuple(a.shape)}")
        return
    dims = 3 if isinstance(layer, nn.Conv1d) else 4
    if a.dim() != dims or a.shape[1] != layer.in_channels:
        shape = "(batch, channels, length)" if dims == 3 else "(batch, channels, height, width)"
        raise ValueError(f"{where} expects input of shape {shape} with {layer.in_channels} "
                         f"channels, but receives a tensor of shape {tuple(a.shape)}")


# --------------------------------------------------------------------------- running


def _prepare_inputs(inputs) -> tuple[tuple, bool]:
    single = not isinstance(inputs, tuple)
    if single and not isinstance(inputs, Tensor):
        raise TypeError(f"inputs must be a torch.Tensor or a tuple of them (the arguments of "
                        f"model(*inputs)), got {type(inputs).__name__}")
    items = (inputs,) if single else inputs
    if not items:
        raise ValueError("inputs is empty: pass a tensor or a tuple of tensors")
    prepared = []
    for i, x in enumerate(items):
        if isinstance(x, Tensor) and x.is_floating_point():
            if x.dtype in (torch.float16, torch.bfloat16):
                raise TypeError(
                    f"input {i} is {x.dtype}: lrp_teach computes in float32 or float64 (the "
                    "ratios of LRP lose too much precision in half precision); cast the "
                    "model and the input with .float() first")
            if x.dim() < 2:
                raise ValueError(
                    f"input {i} has shape {tuple(x.shape)}: it needs a batch dimension first "
                    "(use x.unsqueeze(0) for a single example)")
            if not bool(torch.isfinite(x).all()):
                n = int((~torch.isfinite(x)).sum())
                raise ValueError(f"input {i} contains {n} NaN or infinite value(s); LRP "
                                 "needs finite inputs")
            prepared.append(x.detach().requires_grad_(True))
        else:
            prepared.append(x)
    return tuple(prepared), single


@dataclass
class Attribution:
    """Everything one LRP run produced (see :func:`attribute`).

    Attributes
    ----------
    inputs : tuple
        The relevance of each input: ``input * gradient`` for float inputs (ZBox terms
        included), per-token relevance ``(B, T)`` for integer ids read by an
        ``nn.Embedding``, ``None`` for other inputs.
    at : dict
        Relevance at the requested module outputs (``"path"``) or inputs (``"path:in"``),
        each ``activation * gradient``; a list of tensors for a module called several times.
    logit, target, output : Tensor
        The explained logit per sample, the explained class, and the model output.
    lost : Tensor
        Relevance, per sample, that no input could carry (see ``Epsilon(bias_factor=...)``
        and the LSTM's initial state).
    report : ConservationReport or None
        With ``check=True``.
    """

    inputs: tuple
    at: dict
    logit: Tensor
    target: Tensor
    output: Tensor
    lost: Tensor
    report: ConservationReport | None = None


def _hooks(engine: _Engine):
    pre = _module_hooks.register_module_forward_pre_hook(engine.pre_hook)
    post = _module_hooks.register_module_forward_hook(engine.post_hook)
    return pre, post


def _forward(engine: _Engine, model: nn.Module, inputs: tuple):
    handles = _hooks(engine)
    try:
        with torch.enable_grad(), engine:
            out = model(*inputs)
    finally:
        for h in handles:
            h.remove()
    return out


def trace(model: nn.Module, inputs) -> list[tuple[str, nn.Module]]:
    """The Linear/Conv modules that ``model(*inputs)`` executes, in first-call order."""
    prepared, _ = _prepare_inputs(inputs)
    engine = _Engine(model, None, dry=True)
    detached = tuple(x.detach() if isinstance(x, Tensor) else x for x in prepared)
    for i, x in enumerate(detached):
        if isinstance(x, Tensor):
            engine.tags[x] = ("raw", i) if x.is_floating_point() else ("idx", i)
    with preserved(model), torch.no_grad():
        _forward(engine, model, detached)
    return engine.executed


def attribute(
    model: nn.Module,
    inputs,
    target: int | Tensor | None = None,
    composite=None,
    *,
    at: Iterable[str] = (),
    check: bool = False,
) -> Attribution:
    """Run ``model(*inputs)`` with LRP rules attached and return everything it produced.

    Same as :func:`explain`, and also the relevance at intermediate modules: ``at`` lists
    module paths (``"g"`` for a module's output, ``"g.0:in"`` for its first input), whose
    relevance :math:`a \\odot \\partial f_t / \\partial a` is returned in
    :attr:`Attribution.at`.  To read the relevance of a tensor that no module returns, pass
    it through an ``nn.Identity`` submodule.
    """
    composite = _check_composite(composite)
    prepared, single = _prepare_inputs(inputs)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(at, str):
        at = (at,)
    if model.training and any(m.training and isinstance(m, _TRAIN_DEPENDENT)
                              for m in model.modules()):
        warnings.warn(
            "the model is in training mode; explain() computes as in eval mode (Dropout off, "
            "BatchNorm with running statistics) and leaves the model's flags unchanged. Call "
            "model.eval() to silence this.", stacklevel=3)
    order = trace(model, prepared) if composite.needs_count else None
    engine = _Engine(model, composite, record=check, at=at, order=order)
    for i, x in enumerate(prepared):
        if isinstance(x, Tensor):
            engine.tags[x] = ("raw", i) if x.is_floating_point() else ("idx", i)
    with preserved(model):
        out = _forward(engine, model, prepared)
        if not isinstance(out, Tensor):
            raise TypeError(f"the model returned {type(out).__name__}; explain needs a "
                            "tensor of logits of shape (batch, classes)")
        tag = engine.tag(out)
        if tag is not None and tag[0] == "bad":
            raise TypeError(f"lrp_teach.explain: {tag[1]}")
        engine.composite.check_used(engine.executed)
        unknown = sorted(set(engine.composite.by_name) - {n for n, _ in model.named_modules()})
        if unknown:
            raise ValueError(f"the composite's by_name refers to modules the model does not "
                             f"have: {unknown}")
        t = resolve_target(out, target)
        g_out = torch.zeros_like(out).scatter_(1, t[:, None], 1.0)
        logit = out.detach().gather(1, t[:, None])[:, 0]
        leaves = [x for x in prepared if isinstance(x, Tensor) and x.requires_grad]
        tokens = [leaf for _, leaf, _, _ in engine.tokens]
        points = [p for ps in engine.points.values() for p in ps]
        nodes = [v for c in engine.calls for v in (*c.inputs, *c.outputs)] if check else []
        wanted = leaves + tokens + points + nodes
        if out.requires_grad and wanted and tag is not None:
            with torch.enable_grad():
                grads = torch.autograd.grad(out, wanted, g_out, allow_unused=True)
        else:
            grads = [None] * len(wanted)
        grads = [torch.zeros_like(v) if g is None else g for v, g in zip(
            wanted, grads, strict=True)]
    found = dict(zip(map(id, wanted), grads, strict=True))
    relevance = []
    for i, x in enumerate(prepared):
        if isinstance(x, Tensor) and x.requires_grad:
            r = (x.detach() * found[id(x)]).contiguous()
            for call in engine.calls:
                if call.raw == i:
                    for extra in call.extra:
                        r = r + extra.reshape(x.shape)
            relevance.append(r)
        elif isinstance(x, Tensor) and any(j == i for j, _, _, _ in engine.tokens):
            r = None
            for j, leaf, shape, module in engine.tokens:
                if j != i:
                    continue
                if tuple(shape) != tuple(x.shape):
                    raise ValueError(
                        f"the embedding '{engine.path(module)}' reads ids of shape "
                        f"{tuple(shape)} derived from input {i} of shape {tuple(x.shape)}; "
                        "per-token relevance needs the ids as given. Read the relevance at "
                        f"the embedding with lt.attribute(..., at=['{engine.path(module)}'])")
                part = (leaf.detach() * found[id(leaf)]).sum(-1)
                r = part if r is None else r + part
            relevance.append(r)
        else:
            relevance.append(None)
    at_out = {}
    for key, ps in engine.points.items():
        vals = [p.detach() * found[id(p)] for p in ps]
        at_out[key] = vals[0] if len(vals) == 1 else vals
    lost = logit.new_zeros(logit.shape)
    for shares, order in engine.lost:
        for share in shares:
            part = share.reshape(len(lost), -1).sum(1)
            lost = lost + (part if order is None else part[order])
    report = None
    if check:
        report = ConservationReport._from_calls(engine, found, relevance, logit, t)
    result = tuple(relevance)
    return Attribution(result, at_out, logit, t, out.detach(), lost, report)


def explain(
    model: nn.Module,
    inputs,
    target: int | Tensor | None = None,
    composite=None,
    *,
    check: bool = False,
):
    """Explain ``model``'s output for class ``target`` at ``inputs`` with LRP.

    The engine calls ``model(*inputs)`` itself, with the rules of ``composite`` attached for
    the duration of the call, so whatever the model's own ``forward`` computes is what gets
    explained.  The relevance of the target's raw logit :math:`f_t(x)` (no softmax) is
    propagated to the inputs,

    .. math::  R_j = \\sum_k \\frac{a_j \\rho(w_{jk})}{\\epsilon + \\sum_{0,j'} a_{j'}
               \\rho(w_{j'k})} R_k ,\\qquad R^{(L)} = f_t(x),

    computed as Gradient x Input of a modified forward pass, in one forward and one backward
    pass (:cite:`bach2015`, :cite:`montavon2019overview`).

    Parameters
    ----------
    model : nn.Module
        Any module built from Linear, Conv1d, Conv2d, ReLU, pooling, Flatten, Dropout,
        Identity, the element-wise activations (identity rule), nn.Embedding (token inputs)
        and nn.LSTM, wired by any forward that combines tensors linearly (add, subtract,
        ``cat``, ``stack``, reshapes, indexing, ``sum``, ``mean``, scaling by constants).
        BatchNorm must be folded first with :func:`lrp_teach.canonize`.  Products of two
        input-dependent tensors go through :mod:`lrp_teach.products`.  The model comes
        back exactly as it was; it is run in eval mode.
    inputs : Tensor or tuple
        The argument(s) of ``model``: ``model(*inputs)``.  Float tensors are explained in
        their own dtype (float32 or float64) and device.
    target : int, LongTensor of shape (batch,), or None
        The class to explain, per sample or for all; ``None`` explains the predicted class.
    composite : lrp_teach.composites.Composite, optional
        Which rule goes to which layer; default :class:`~lrp_teach.composites.EpsilonGamma`
        (``Epsilon(1e-6)`` on Linear, ``Gamma(0.25)`` on convolutions).
    check : bool
        Also return the :class:`ConservationReport`.

    Returns
    -------
    Tensor or tuple, and the report with ``check=True``
        The relevance shaped like the input (a tuple for a tuple of inputs; per-token
        relevance ``(B, T)`` for token ids, ``None`` for other non-float inputs).

    Raises
    ------
    TypeError
        For an operation or layer without a rule (naming it and the module), or a badly
        typed argument.
    ValueError
        For an input shape the model cannot take, NaN/inf inputs, or a target out of range.
    """
    result = attribute(model, inputs, target, composite, check=check)
    single = not isinstance(inputs, tuple)
    relevance = result.inputs[0] if single else result.inputs
    if check:
        return relevance, result.report
    return relevance


def named_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The leaf layers of a (nested) ``nn.Sequential`` in forward order, with their paths.

    For other models the order of execution is only known by running them: use
    :func:`trace`.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    out: list[tuple[str, nn.Module]] = []

    def walk(module: nn.Module, path: str) -> None:
        if isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward:
            for name, child in module.named_children():
                walk(child, f"{path}.{name}" if path else name)
            return
        if next(module.children(), None) is not None:
            raise TypeError(
                f"'{path or type(module).__name__}' ({type(module).__name__}) is not an "
                "nn.Sequential: its order of execution is known only by running it; pass an "
                "example input (composite.assign(model, x) or lt.engine.trace(model, x))")
        out.append((path or type(module).__name__, module))

    walk(model, "")
    return out


@dataclass
class LayerConservation:
    """Relevance entering and leaving one layer, per sample (tensors of shape (batch,))."""

    name: str
    layer: str
    rule: str
    relevance_out: Tensor
    relevance_in: Tensor
    call: int = 1  # which call of the module (a module used twice has two entries)

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
    def _from_calls(cls, engine, found, relevance, logit, target) -> ConservationReport:
        def per_sample(tensors) -> Tensor:
            total = logit.new_zeros(logit.shape)
            for v in tensors:
                total = total + (v.detach() * found[id(v)]).reshape(len(logit), -1).sum(1)
            return total

        seen: dict[str, int] = {}
        entries = []
        for call in engine.calls:
            seen[call.name] = seen.get(call.name, 0) + 1
            r_in = per_sample(call.inputs)
            for extra in call.extra:
                r_in = r_in + extra.reshape(len(logit), -1).sum(1)
            entries.append(LayerConservation(call.name, type(call.module).__name__,
                                             repr(call.rule), per_sample(call.outputs), r_in,
                                             seen[call.name]))
        total = logit.new_zeros(logit.shape)
        for r in relevance:
            if r is not None:
                total = total + r.reshape(len(logit), -1).sum(1)
        return cls(entries, logit, total, target)

    def _rows(self) -> list[tuple[str, ...]]:
        rows = []
        for e in self.layers:
            out, inn = float(e.relevance_out.sum()), float(e.relevance_in.sum())
            share = (out - inn) / out if out != 0 else 0.0
            name = e.name if e.call == 1 else f"{e.name} (call {e.call})"
            rows.append((name, e.layer, e.rule or "-", f"{out:.4f}", f"{inn:.4f}",
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
    if not isinstance(layer, PARAMETRIC):
        raise TypeError(f"propagate needs a Linear or Conv layer, got {type(layer).__name__}")
    if not isinstance(rule, Rule):
        raise TypeError(f"rule must be an lrp_teach.rules.Rule, got {type(rule).__name__}")
    if not isinstance(a, Tensor) or not a.is_floating_point():
        raise TypeError("a must be a floating-point torch.Tensor")
    if a.dim() < 2:
        raise ValueError(f"a has shape {tuple(a.shape)}: it needs a batch dimension first")
    _check_layer_input("layer", layer, a)
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
