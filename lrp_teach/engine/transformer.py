r"""Transformers in the engine: LayerNorm, RMSNorm, softmax and ``nn.MultiheadAttention``.

Each rule is Gradient x Input of a modified operation with the exact forward value
(:cite:`achtibat2024attnlrp`, :cite:`ali2022xai`):

* **LayerNorm** :math:`y = (x - \mu(x)) / \sigma(x) \cdot w + b` and **RMSNorm**
  :math:`y = x / \mathrm{rms}(x) \cdot w`: the identity rule on the normalisation, with
  :math:`\sigma` (:math:`\mathrm{rms}`) held constant.  The mean subtraction is linear and
  stays, :math:`w` is a constant scale and :math:`b` a constant summand that absorbs its
  share :math:`b \odot \partial f/\partial y`.  Backward:
  :math:`g_x = s - \mathrm{mean}(s)` with :math:`s = g\,w/\sigma` (RMSNorm: :math:`g_x = s`).
  So :math:`\sum_i R_{x_i} = \sum_i (y_i - b_i)\,g_i`: LayerNorm conserves all but the bias.
* **softmax** :math:`s = \mathrm{softmax}(x)`: the AttnLRP rule
  :math:`R_{x_i} = x_i\,(R_i - s_i \sum_j R_j)` (:cite:`achtibat2024attnlrp`).  With the
  relevance :math:`R_j = s_j g_j` that arrives as Gradient x Input,
  :math:`x_i (s_i g_i - s_i \sum_j s_j g_j) = x_i\,(J^\top g)_i`, where
  :math:`J_{ji} = \partial s_j / \partial x_i = s_j(\delta_{ji} - s_i)`: the rule *is* the
  plain softmax gradient, and no modification is needed.  It does not conserve: it absorbs
  :math:`\sum_j R_j - \sum_i R_{x_i} = \sum_j s_j g_j\,(1 - x_j + \sum_i s_i x_i)` per row
  (a constant shift of :math:`x` leaves :math:`s` unchanged but moves relevance), which the
  conservation report lists as the entry ``<attention>.softmax``.
* **products** of two input-dependent tensors, :math:`q k^\top` and :math:`A v`: the uniform
  rule (each factor gets half, :cite:`achtibat2024attnlrp`), as the gradient of the plain
  matrix product halved, :math:`g \mapsto \tfrac12 g`; its ε-variant treats the sum over the
  contracted index with the ε rule first, :math:`g \mapsto \tfrac12 g\,z/(z + \epsilon\,
  \mathrm{sign}\,z)` (LXT's ``matmul`` rule, which its code attributes to Proposition 3.3 of
  the paper; not checked against the paper's text).  No extra matrix product either way.
* **CP-LRP** (:cite:`ali2022xai`): the attention weights :math:`A` are held constant
  (:math:`q` and :math:`k` receive nothing), so :math:`A v` is linear in :math:`v`.

``nn.MultiheadAttention`` calls the fused ``F.multi_head_attention_forward``; the engine
replaces it by an explicit computation with the same value (the in-projections and
``out_proj`` with the composite's rule for the ``out_proj`` Linear, the products and the
softmax as above).  Which attention rule applies is the composite's ``attention``
attribute: ``"attnlrp"`` (:class:`~lrp_teach.composites.AttnLRP`) or ``"cp"``
(:class:`~lrp_teach.composites.CPLRP`); other composites refuse attention.  A softmax
outside attention is allowed only under ``"attnlrp"`` (whose rule is defined for any
softmax); elsewhere it is refused, since CP-LRP prescribes nothing for it.

``nn.TransformerEncoderLayer`` and ``nn.TransformerEncoder`` never take their fused fast
paths (or nested tensors) while the engine runs: torch checks ``has_torch_function`` on
their arguments, which is true inside the engine's mode, so they call the modules above.
"""

from __future__ import annotations

import inspect
import math
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import Tensor

from .products import matmul_uniform
from .rules import LayerOp

__all__ = ["ProjectionOp", "layer_norm_call", "mha_call", "rms_norm_call",
           "softmax_call"]

_DEP = ("dep",)


# --------------------------------------------------------------------------- norms
class _LayerNorm(torch.autograd.Function):
    """Exact LayerNorm; backward with the standard deviation held constant."""

    @staticmethod
    def forward(ctx, x, shape, w, b, eps):
        y, _, rstd = torch.native_layer_norm(x, shape, w, b, eps)
        ctx.save_for_backward(rstd, w)
        ctx.dims = tuple(range(-len(shape), 0))
        return y

    @staticmethod
    def backward(ctx, g):
        rstd, w = ctx.saved_tensors
        s = g * rstd if w is None else g * w * rstd
        return s - s.mean(ctx.dims, keepdim=True), None, None, None, None


class _RMSNorm(torch.autograd.Function):
    """Exact RMSNorm; backward with the root mean square held constant."""

    @staticmethod
    def forward(ctx, x, shape, w, eps):
        dims = tuple(range(-len(shape), 0))
        rrms = torch.rsqrt(x.pow(2).mean(dims, keepdim=True) + eps)
        ctx.save_for_backward(rrms, w)
        y = x * rrms
        return y if w is None else y * w

    @staticmethod
    def backward(ctx, g):
        rrms, w = ctx.saved_tensors
        return (g * rrms if w is None else g * w * rrms), None, None, None


def _arg(args, kwargs, i, name, default=None):
    return args[i] if len(args) > i else kwargs.get(name, default)


def _constant(engine, func, tensors) -> bool:
    """Whether all parameter tensors are free of the input (else mark a product)."""
    return all(t is None or engine.tag(t) is None for t in tensors)


class _Label(str):
    """A rule's name in the conservation report (printed without quotes)."""

    def __repr__(self) -> str:
        return str(self)


def _record(engine, name, module, rule, inputs, outputs):
    from .core import _Call

    if engine.record:
        engine.calls.append(_Call(name, module, _Label(rule), list(inputs), list(outputs)))


def _node(engine, t: Tensor) -> Tensor:
    """A fresh view of ``t`` when the report needs its gradient (``t`` itself otherwise)."""
    return t.view_as(t) if engine.record else t


def _norm_module(engine):
    top = engine.stack[-1] if engine.stack else None
    return top, (engine.path(top) if top is not None else "norm")


def _norm_result(engine, x_in: Tensor, y: Tensor, rule: str) -> Tensor:
    """Record a normalisation call for the report and tag its output."""
    module, path = _norm_module(engine)
    _record(engine, path, module, rule, [x_in], [y])
    if engine.record:  # the report reads y itself; the model may change its copy in place
        y = y.clone()
    engine.tags[y] = _DEP
    return y


def layer_norm_call(engine, func, args, kwargs):
    """``F.layer_norm`` with the identity rule on the normalisation (std held constant)."""
    x = _arg(args, kwargs, 0, "input")
    shape = tuple(_arg(args, kwargs, 1, "normalized_shape"))
    w, b = _arg(args, kwargs, 2, "weight"), _arg(args, kwargs, 3, "bias")
    eps = _arg(args, kwargs, 4, "eps", 1e-5)
    if not _constant(engine, func, (w, b)):
        out = func(*args, **kwargs)
        engine.mark(out, engine.bad(func, "product"))
        return out
    w = None if w is None else w.detach().to(x.dtype)
    b = None if b is None else b.detach().to(x.dtype)
    x_in = _node(engine, x)
    y = _LayerNorm.apply(x_in, shape, w, b, eps)
    return _norm_result(engine, x_in, y, "identity (std constant)")


def rms_norm_call(engine, func, args, kwargs):
    """``F.rms_norm`` with the identity rule on the normalisation (rms held constant)."""
    x = _arg(args, kwargs, 0, "input")
    shape = tuple(_arg(args, kwargs, 1, "normalized_shape"))
    w = _arg(args, kwargs, 2, "weight")
    eps = _arg(args, kwargs, 3, "eps")
    if not _constant(engine, func, (w,)):
        out = func(*args, **kwargs)
        engine.mark(out, engine.bad(func, "product"))
        return out
    eps = torch.finfo(x.dtype).eps if eps is None else eps
    w = None if w is None else w.detach().to(x.dtype)
    x_in = _node(engine, x)
    y = _RMSNorm.apply(x_in, shape, w, eps)
    return _norm_result(engine, x_in, y, "identity (rms constant)")


# --------------------------------------------------------------------------- softmax
def _attention_mode(engine) -> str | None:
    return getattr(engine.composite, "attention", None)


def softmax_call(engine, func, args, kwargs):
    """A softmax: the AttnLRP rule (= the plain softmax gradient) under ``AttnLRP``."""
    out = func(*args, **kwargs)
    if _attention_mode(engine) != "attnlrp":
        engine.mark(out, ("bad", f"{func.__name__} on an input-dependent tensor in "
                                 f"{engine.where()}: a softmax has a rule only under "
                                 "lt.composites.AttnLRP() (its softmax rule); hold it "
                                 "constant with .detach() for CP-LRP."))
        return out
    engine.mark(out, _DEP)
    return out


class _GradScale(torch.autograd.Function):
    """The identity whose gradient is scaled by a constant (no copy of the values)."""

    @staticmethod
    def forward(ctx, t, factor):
        ctx.factor = factor
        return t.view_as(t)

    @staticmethod
    def backward(ctx, g):
        return g * ctx.factor, None


# --------------------------------------------------------------------------- attention
class ProjectionOp(LayerOp):
    """A :class:`~lrp_teach.rules.LayerOp` for a linear map given by a weight and a bias
    (the slices of ``in_proj_weight`` of an ``nn.MultiheadAttention``)."""

    def __init__(self, weight: Tensor, bias: Tensor | None, like: Tensor) -> None:  # noqa: D107
        self.layer = SimpleNamespace(weight=weight, bias=bias)
        self.device, self.dtype = like.device, like.dtype
        self.channels_last = False
        self._weight = None
        self.bias = None if bias is None else bias.detach().to(like.device, like.dtype)
        self.kind = "linear"


_MHA_SIGNATURE = inspect.signature(F.multi_head_attention_forward)


def _float_mask(mask: Tensor | None, dtype) -> Tensor | None:
    if mask is None:
        return None
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(
            mask, float("-inf"))
    return mask.to(dtype)


def _project(engine, x, w, b, rule, module, call_name):
    from .core import _Call, _LRPLayer

    if engine.tag(x) is None:  # a constant memory (cross-attention)
        return F.linear(x, w.detach().to(x.dtype), None if b is None else b.detach().to(x.dtype))
    op = ProjectionOp(w, b, x)
    x_in = _node(engine, x)
    call = _Call(call_name, module, rule, [x_in], [])
    z = _LRPLayer.apply(x_in, rule, op, call.extra)
    call.outputs.append(z)
    engine.calls.append(call)
    return z


def _attention_explicit(engine, module, path, mode, eps, q, k, v, mask, hd):
    """Attention step by step, each product and the softmax recorded for the report."""
    q = q * (1.0 / math.sqrt(hd))
    q_in, kt_in = _node(engine, q), _node(engine, k.transpose(1, 2))
    if mode == "cp":
        scores = torch.bmm(q_in.detach(), kt_in.detach())
    else:
        scores = matmul_uniform(q_in, kt_in, eps)
        _record(engine, f"{path}.q@k", module, f"uniform(eps={eps:g})", [q_in, kt_in],
                [scores])
    s_in = _node(engine, scores)
    attn = torch.softmax(s_in if mask is None else s_in + mask, dim=-1)
    if mode == "cp":
        return torch.bmm(attn.detach(), _node(engine, v)), attn
    _record(engine, f"{path}.softmax", module, "AttnLRP softmax", [s_in], [attn])
    a_in, v_in = _node(engine, attn), _node(engine, v)
    ctx = matmul_uniform(a_in, v_in, eps)
    _record(engine, f"{path}.A@v", module, f"uniform(eps={eps:g})", [a_in, v_in], [ctx])
    return ctx, attn


def mha_call(engine, func, args, kwargs):
    """The engine's handler of ``F.multi_head_attention_forward`` (``nn.MultiheadAttention``)."""
    from .core import _parametric

    p = _MHA_SIGNATURE.bind(*args, **kwargs)
    p.apply_defaults()
    a = p.arguments
    weight = a["in_proj_weight"] if a["in_proj_weight"] is not None else a["q_proj_weight"]
    module = engine.owner.get(id(weight))
    mode = _attention_mode(engine)
    reason = None
    if module is None:
        reason = "it is called with weights that belong to no nn.MultiheadAttention"
    elif mode not in ("attnlrp", "cp"):
        reason = ("attention needs an attention rule: use lt.composites.AttnLRP() or "
                  "lt.composites.CPLRP()")
    elif a["bias_k"] is not None or a["add_zero_attn"] or a["static_k"] is not None or (
            a["static_v"] is not None):
        reason = "add_bias_kv, add_zero_attn and static keys/values are not supported"
    elif a["training"] and a["dropout_p"] > 0:
        reason = "its dropout is active"
    elif any(engine.tag(t) is not None for t in (
            weight, a["in_proj_bias"], a["out_proj_weight"], a["k_proj_weight"])):
        reason = "its weights depend on the input"
    if reason is not None:
        out = func(*args, **kwargs)
        engine.mark(out, ("bad", f"F.multi_head_attention_forward in {engine.where()}: "
                                 f"{reason}."))
        return out
    query, key, value = a["query"], a["key"], a["value"]
    dtype = query.dtype
    heads = a["num_heads"]
    unbatched = query.dim() == 2
    kpm, attn_mask = a["key_padding_mask"], a["attn_mask"]
    if unbatched:
        query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
        if kpm is not None:
            kpm = kpm.unsqueeze(0)
    if a["is_causal"] and attn_mask is None:
        raise RuntimeError("need attn_mask if specifying the is_causal hint")
    tgt, bsz, embed = query.shape
    src = key.shape[0]
    hd = embed // heads
    out_proj = engine.owner.get(id(a["out_proj_weight"]))
    rule = engine.rule_for(out_proj)
    path = engine.path(module)
    if a["use_separate_proj_weight"]:
        ws = (a["q_proj_weight"], a["k_proj_weight"], a["v_proj_weight"])
    else:
        ws = a["in_proj_weight"].chunk(3)
    bs = (None,) * 3 if a["in_proj_bias"] is None else a["in_proj_bias"].chunk(3)
    # computed batch first, (N, L, E) and (N * H, L, d), so that the conservation report,
    # which reads the batch along the first dimension, sums each sentence on its own
    xs = [t.transpose(0, 1) for t in (query, key, value)]
    for x, t in zip(xs, (query, key, value), strict=True):
        if engine.tag(t) is not None:
            engine.tags[x] = _DEP
    if query is key is value and not a["use_separate_proj_weight"]:  # self-attention
        q, k, v = _project(engine, xs[0], a["in_proj_weight"], a["in_proj_bias"], rule,
                           module, f"{path}.in_proj").chunk(3, dim=-1)
    else:
        q, k, v = (_project(engine, x, w, b, rule, module, f"{path}.in_proj ({n})")
                   for x, w, b, n in zip(xs, ws, bs, "qkv", strict=True))

    def split(t, length):
        return t.reshape(bsz, length, heads, hd).transpose(1, 2).reshape(bsz * heads,
                                                                          length, hd)

    eps = getattr(engine.composite, "product_epsilon", 0.0)
    mask = _float_mask(attn_mask, dtype)
    if mask is not None and mask.dim() == 2:
        mask = mask.unsqueeze(0)
    pad = _float_mask(kpm, dtype)
    if pad is not None:
        pad = pad.view(bsz, 1, 1, src).expand(-1, heads, -1, -1).reshape(bsz * heads, 1, src)
        mask = pad if mask is None else mask + pad
    if not engine.record and not a["need_weights"] and (mode == "cp" or eps == 0):
        # the fused kernel: AttnLRP's two uniform rules and its softmax rule (the plain
        # softmax gradient) together halve the gradient that reaches v and quarter the one
        # that reaches q and k; CP-LRP detaches q and k
        q4, k4, v4 = (t.view(bsz, heads, -1, hd) for t in (split(q, tgt), split(k, src),
                                                            split(v, src)))
        if mode == "cp":
            q4, k4 = q4.detach(), k4.detach()
        else:
            q4, k4, v4 = (_GradScale.apply(q4, 0.25), _GradScale.apply(k4, 0.25),
                          _GradScale.apply(v4, 0.5))
        m4 = mask
        if mask is not None:
            m4 = (mask.view(bsz, heads, *mask.shape[1:]) if mask.shape[0] == bsz * heads
                  else mask.unsqueeze(0))
        ctx = F.scaled_dot_product_attention(q4, k4, v4, attn_mask=m4)
        attn = None
    else:
        ctx, attn = _attention_explicit(engine, module, path, mode, eps, split(q, tgt),
                                        split(k, src), split(v, src), mask, hd)
    ctx = ctx.reshape(bsz, heads, tgt, hd).transpose(1, 2).reshape(bsz, tgt, embed)
    engine.tags[ctx] = _DEP
    out = _parametric(engine, F.linear, (ctx, a["out_proj_weight"], a["out_proj_bias"]), {})
    out = out.transpose(0, 1)
    weights = None
    if a["need_weights"]:
        weights = attn.detach().view(bsz, heads, tgt, src)
        if a["average_attn_weights"]:
            weights = weights.mean(dim=1)
        if unbatched:
            weights = weights.squeeze(0)
        engine.tags[weights] = ("bad", f"the attention weights returned by '{path}' "
                                       "(need_weights=True) carry no LRP rule; read them as "
                                       "data, or detach them before using them in the output")
    if unbatched:
        out = out.squeeze(1)
    engine.tags[out] = _DEP
    return out, weights
