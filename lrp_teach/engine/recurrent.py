"""``nn.LSTM`` in the engine: the rules of Arras et al. (2017) as a modified recurrence.

When a user's forward calls an ``nn.LSTM`` on input-dependent data, the engine replaces the
fused LSTM kernel by an explicit recurrence that returns exactly the LSTM's outputs
(``output``, ``h_n``, ``c_n``, padded or packed, uni- or bidirectional, any number of
layers) and whose Gradient x Input is LRP (:cite:`arras2017wassa`):

* the gate pre-activations :math:`z = W_{ih} x_t + W_{hh} h_{t-1} + b` use the ε rule
  (stabilizer :math:`\\epsilon\\,\\mathrm{sign}(z)`, ``bias_factor`` :math:`\\delta`);
* the gates :math:`i, f, o` are held constant (signal-take-all,
  :func:`lrp_teach.products.take_all`): they receive no relevance;
* :math:`g = \\tanh(\\cdot)` and :math:`\\tanh(c_t)` pass relevance unchanged;
* the cell update :math:`c_t = f \\odot c_{t-1} + i \\odot g` splits relevance by the ε rule
  over its two summands (identity weights, :math:`N = 2H` inputs for the bias share).

Whatever the user's forward does with the outputs (which states it reads, in which order,
pooling, the head) is then explained as written.  With :math:`\\delta > 0`, a share that
would go to an input that is exactly 0 cannot be carried by Gradient x Input.  At the zero
initial state this is what the explicit form calls the initial state's relevance; the engine
reports it in :attr:`lrp_teach.engine.core.Attribution.lost`.  At an input feature that is
exactly 0 (a marker bit that is off) the share is absorbed, where the explicit form
(:func:`lrp_teach.lstm.explain_steps`) would give it to that feature.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .products import take_all
from .rules import Epsilon, Pass

__all__ = ["lstm_call"]


def _sign(z: Tensor) -> Tensor:
    return torch.where(z >= 0, 1.0, -1.0).to(z.dtype)


def _share_grad(share: Tensor, v: Tensor, lost: list | None) -> Tensor:
    """``share / v`` where v != 0; the shares at v == 0 are recorded in ``lost``."""
    zero = v == 0
    if lost is not None and bool(zero.any()):
        lost.append((share * zero).flatten(1).sum(1))
    return torch.where(zero, torch.zeros_like(v), share / torch.where(zero, 1.0, v))


class _Gates(torch.autograd.Function):
    """``z = x W_ih^T + h W_hh^T + b`` with the ε-rule (and bias share) as its backward."""

    @staticmethod
    def forward(ctx, x, h, w_ih, w_hh, b, eps: float, delta: float, lost: list):
        z = torch.addmm(b, x, w_ih.T).addmm_(h, w_hh.T)
        ctx.save_for_backward(x, h, w_ih, w_hh, b, z)
        ctx.eps, ctx.delta, ctx.lost = eps, delta, lost
        return z

    @staticmethod
    def backward(ctx, g):
        x, h, w_ih, w_hh, b, z = ctx.saved_tensors
        step = ctx.eps * _sign(z)
        s = z * g / (z + step)  # R_k / (z_k + eps sign z_k)
        gx, gh = s @ w_ih, s @ w_hh
        if ctx.delta:
            share = ctx.delta * ((b + step) * s).sum(-1, keepdim=True) / (
                x.shape[-1] + h.shape[-1])
            gx = gx + _share_grad(share.expand_as(x), x, None)  # absorbed: an input is 0
            gh = gh + _share_grad(share.expand_as(h), h, ctx.lost)  # the zero initial state
        return gx, gh, None, None, None, None, None, None


class _CellSum(torch.autograd.Function):
    """``c = fc + ig`` with the ε-rule over the two summands as its backward."""

    @staticmethod
    def forward(ctx, fc, ig, eps: float, delta: float, lost: list):
        c = fc + ig
        ctx.save_for_backward(fc, ig, c)
        ctx.eps, ctx.delta, ctx.lost = eps, delta, lost
        return c

    @staticmethod
    def backward(ctx, g):
        fc, ig, c = ctx.saved_tensors
        step = ctx.eps * _sign(c)
        s = c * g / (c + step)
        gf, gi = s.clone(), s.clone()
        if ctx.delta:
            share = ctx.delta * (step * s).sum(-1, keepdim=True) / (2 * c.shape[-1])
            gf = gf + _share_grad(share.expand_as(fc), fc, ctx.lost)
            gi = gi + _share_grad(share.expand_as(ig), ig, ctx.lost)
        return gf, gi, None, None, None


_PASS = Pass()


def _tanh(x: Tensor) -> Tensor:
    return _PASS.apply(torch.tanh, x, torch.tanh(x))


def _direction(x: Tensor, lengths: Tensor | None, w_ih, w_hh, b, h0, c0, reverse: bool,
               eps: float, delta: float, lost: list):
    """One direction of one layer; ``x`` is ``(B, T, D)``, returns outputs and final states."""
    batch, steps, _ = x.shape
    h, c = h0, c0
    outs: list[Tensor | None] = [None] * steps
    order = range(steps - 1, -1, -1) if reverse else range(steps)
    for t in order:
        z = _Gates.apply(x[:, t], h, w_ih, w_hh, b, eps, delta, lost)
        i, f, g, o = z.chunk(4, dim=1)
        i, f, o = i.sigmoid(), f.sigmoid(), o.sigmoid()
        # signal-take-all: the gates i, f, o are held constant
        c_new = _CellSum.apply(take_all(f, c), take_all(i, _tanh(g)), eps, delta, lost)
        h_new = take_all(o, _tanh(c_new))
        if lengths is None:
            h, c = h_new, c_new
            outs[t] = h_new
            continue
        valid = (t < lengths)[:, None]
        if reverse:  # padded steps keep the zero initial state, as packed sequences do
            h = torch.where(valid, h_new, h0)
            c = torch.where(valid, c_new, c0)
        else:  # padded steps keep the last valid state
            h = torch.where(valid, h_new, h)
            c = torch.where(valid, c_new, c)
        outs[t] = torch.where(valid, h_new, torch.zeros_like(h_new))
    return torch.stack(outs, dim=1), h, c


def _unpack(data: Tensor, batch_sizes: Tensor):
    """Packed ``(sum L, D)`` rows -> padded ``(B, T, D)`` and lengths (sorted order)."""
    sizes = batch_sizes.tolist()
    steps, batch = len(sizes), sizes[0]
    lengths = torch.tensor([sum(1 for s in sizes if s > k) for k in range(batch)])
    rows, index = [], 0
    for s in sizes:
        rows.append(torch.arange(index, index + s))
        index += s
    lookup = torch.zeros(batch, steps, dtype=torch.long)
    valid = torch.zeros(batch, steps, dtype=torch.bool)
    for t, r in enumerate(rows):
        lookup[: len(r), t] = r
        valid[: len(r), t] = True
    padded = data[lookup.to(data.device)] * valid.to(data.device)[..., None]
    return padded, lengths.to(data.device), lookup.to(data.device), valid.to(data.device)


def lstm_call(engine, func, args, kwargs):
    """The engine's handler of the fused ``lstm`` kernel that ``nn.LSTM.forward`` calls."""
    packed = isinstance(args[1], Tensor)
    if packed:
        data, batch_sizes, hx, params, has_bias, layers, _, train, bidirectional = args[:9]
        batch_first = False
    else:
        data, hx, params, has_bias, layers, _, train, bidirectional, batch_first = args[:9]
    module = engine.owner.get(id(params[0]))
    if module is None or engine.tag(data) is None:
        out = func(*args, **kwargs)
        engine.mark(out, engine.bad(func, "weights"))
        return out
    if getattr(module, "proj_size", 0):
        raise TypeError(f"nn.LSTM at '{engine.path(module)}' has proj_size="
                        f"{module.proj_size}, which lrp_teach does not support")
    rule = engine.rule_for(module)
    if not isinstance(rule, Epsilon):
        raise TypeError(f"the composite gave {rule!r} to the nn.LSTM '{engine.path(module)}'; "
                        "an LSTM takes lrp_teach.rules.Epsilon(epsilon, bias_factor)")
    if data.dtype in (torch.float16, torch.bfloat16):
        raise TypeError(f"'{engine.path(module)}' receives {data.dtype}: use float32/float64")
    dtype = data.dtype
    lost: list = []
    engine.lost.append((lost, engine.unsorted.get(id(module)) if packed else None))
    x_in = data.view_as(data) if engine.record else data
    if packed:
        x, lengths, lookup, valid = _unpack(x_in, batch_sizes)
    else:
        x = x_in if batch_first else x_in.transpose(0, 1)
        lengths = None
    h0_all, c0_all = hx
    dirs = 2 if bidirectional else 1
    per = 4 if has_bias else 2
    finals_h, finals_c = [], []
    for layer in range(layers):
        outs = []
        for d in range(dirs):
            k = (layer * dirs + d) * per
            w_ih, w_hh = params[k].to(dtype).detach(), params[k + 1].to(dtype).detach()
            if has_bias:
                b = (params[k + 2] + params[k + 3]).to(dtype).detach()
            else:
                b = w_ih.new_zeros(w_ih.shape[0])
            h0 = h0_all[layer * dirs + d].to(dtype)
            c0 = c0_all[layer * dirs + d].to(dtype)
            out, h, c = _direction(x, lengths, w_ih, w_hh, b, h0, c0, d == 1, rule.epsilon,
                                   rule.bias_factor, lost)
            outs.append(out)
            finals_h.append(h)
            finals_c.append(c)
        x = torch.cat(outs, dim=-1) if dirs == 2 else outs[0]
    h_n, c_n = torch.stack(finals_h), torch.stack(finals_c)
    if packed:
        output = x[valid]  # (B, T) -> rows in time-major packed order
        order = lookup[valid]
        output = torch.empty_like(output).index_copy(0, order, output)
    else:
        output = x if batch_first else x.transpose(0, 1)
    from .core import _Call

    engine.calls.append(_Call(engine.path(module), module, rule, [x_in], [output, h_n, c_n]))
    for t in (output, h_n, c_n):
        engine.tags[t] = ("dep",)
    return output, h_n, c_n
