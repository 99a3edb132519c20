"""A slow, explicit LRP reference, written independently of ``lrp_teach.core``.

Layer by layer, in float64, with the four steps of the LRP tutorial in matrix form:

1. ``z = rho(W) a + rho(b)`` (+ stabilizer),
2. ``s = R / z``,
3. ``c = rho(W)^T s``,
4. ``R_in = a * c``.

Convolutions are written as matrix products over unfolded patches (``F.unfold``), and the
patch relevances are summed back with ``F.fold``.  Max-pooling is winner-take-all (via the
pooling indices), average pooling is LRP-0 with the explicit pooling matrix.  The rules
are read from ``lrp_teach.rules`` objects only through their parameters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def spec(rule) -> tuple:
    """The rule as a plain tuple ``(name, parameters...)``."""
    name = type(rule).__name__
    stab = rule.stabilizer
    if name == "Zero":
        return ("zero", stab)
    if name == "Epsilon":
        return ("zero", rule.epsilon)
    if name == "Gamma":
        return ("gamma", rule.gamma, stab)
    if name == "ZPlus":
        return ("zplus", stab)
    if name == "AlphaBeta":
        return ("alphabeta", rule.alpha, rule.beta, stab)
    if name == "ZBox":
        return ("zbox", rule.low, rule.high, stab)
    if name == "WSquare":
        return ("wsquare", stab)
    if name == "Flat":
        return ("flat", stab)
    raise ValueError(name)


def stab(z: Tensor, eps: float) -> Tensor:
    if eps == 0:
        return torch.where(z == 0, torch.full_like(z, float("inf")), z)
    sign = torch.where(z >= 0, torch.ones_like(z), -torch.ones_like(z))
    return z + eps * sign


def leaves(model: nn.Module) -> list[nn.Module]:
    if isinstance(model, nn.Sequential):
        return [m for child in model for m in leaves(child)]
    return [model]


def _dense_step(A: Tensor, W: Tensor, b: Tensor, R: Tensor, rule: tuple, lo=None, hi=None):
    """LRP through ``z[b,k,l] = sum_j W[k,j] A[b,j,l] + b[k]``; returns R over A."""
    name = rule[0]
    if name in ("zero", "gamma", "zplus"):
        if name == "zero":
            Wr, br = W, b
        elif name == "gamma":
            g = rule[1]
            Wr, br = W + g * W.clamp(min=0), b + g * b.clamp(min=0)
        else:
            Wr, br = W.clamp(min=0), b.clamp(min=0)
        z = torch.einsum("kj,bjl->bkl", Wr, A) + br[None, :, None]  # step 1
        s = R / stab(z, rule[-1])  # step 2
        c = torch.einsum("kj,bkl->bjl", Wr, s)  # step 3
        return A * c  # step 4
    if name == "zbox":
        Wp, Wn = W.clamp(min=0), W.clamp(max=0)
        z = (torch.einsum("kj,bjl->bkl", W, A) - torch.einsum("kj,bjl->bkl", Wp, lo)
             - torch.einsum("kj,bjl->bkl", Wn, hi))
        s = R / stab(z, rule[-1])
        c, cp, cn = (torch.einsum("kj,bkl->bjl", M, s) for M in (W, Wp, Wn))
        return A * c - lo * cp - hi * cn
    if name in ("wsquare", "flat"):
        ones = torch.ones_like(A) if lo is None else lo  # lo carries the unfolded ones here
        Wr, br = (W**2, b**2) if name == "wsquare" else (torch.ones_like(W), torch.zeros_like(b))
        z = torch.einsum("kj,bjl->bkl", Wr, ones) + br[None, :, None]
        s = R / stab(z, rule[-1])
        return ones * torch.einsum("kj,bkl->bjl", Wr, s)
    if name == "alphabeta":
        alpha, beta, eps = rule[1:]
        q = A[:, :, None, :] * W[None, :, :, None].transpose(1, 2)  # q[b,j,k,l] = a_j w_jk
        qp, qn = q.clamp(min=0), q.clamp(max=0)
        zp = qp.sum(1) + b.clamp(min=0)[None, :, None]
        zn = qn.sum(1) + b.clamp(max=0)[None, :, None]
        Rp = (qp * (R / stab(zp, eps))[:, None]).sum(2)
        Rn = (qn * (R / stab(zn, eps))[:, None]).sum(2)
        return alpha * Rp - beta * Rn
    raise ValueError(name)


def _param_step(layer: nn.Module, a: Tensor, R: Tensor, rule: tuple) -> Tensor:
    W = layer.weight.detach().double()
    b = torch.zeros(W.shape[0], dtype=torch.float64) if layer.bias is None else (
        layer.bias.detach().double())
    name = rule[0]

    def bounds(shape):
        if name == "zbox":
            lo = torch.as_tensor(rule[1], dtype=torch.float64)
            hi = torch.as_tensor(rule[2], dtype=torch.float64)
            if lo.dim() and lo.numel() == a[0].numel():
                lo = lo.reshape(a.shape[1:])
            if hi.dim() and hi.numel() == a[0].numel():
                hi = hi.reshape(a.shape[1:])
            return lo.expand(shape).contiguous(), hi.expand(shape).contiguous()
        if name in ("wsquare", "flat"):
            return torch.ones(shape, dtype=torch.float64), None
        return None, None

    if isinstance(layer, nn.Linear):
        lo, hi = bounds(a.shape)

        def col(t):
            return None if t is None else t[:, :, None]

        return _dense_step(a[:, :, None], W, b, R[:, :, None], rule, col(lo), col(hi))[:, :, 0]
    one_d = isinstance(layer, nn.Conv1d)
    a4 = a[:, :, None, :] if one_d else a
    W4 = W[:, :, None, :] if one_d else W
    R4 = R[:, :, None, :] if one_d else R
    k = W4.shape[2:]
    pad = (0, layer.padding[0]) if one_d else layer.padding
    stride = (1, layer.stride[0]) if one_d else layer.stride
    dil = (1, layer.dilation[0]) if one_d else layer.dilation
    assert layer.groups == 1

    def unfold(t):
        return None if t is None else F.unfold(t, k, dilation=dil, padding=pad, stride=stride)

    lo, hi = bounds(a4.shape)
    A = unfold(a4)
    Wm = W4.reshape(W4.shape[0], -1)
    Rm = R4.reshape(R4.shape[0], R4.shape[1], -1)
    Rp = _dense_step(A, Wm, b, Rm, rule, unfold(lo), unfold(hi))
    out = F.fold(Rp, a4.shape[2:], k, dilation=dil, padding=pad, stride=stride)
    return out[:, :, 0, :] if one_d else out


def _pool_matrix(layer: nn.Module, a: Tensor) -> Tensor:
    """The (linear) pooling of one sample as a matrix (outputs x inputs)."""
    x0 = torch.zeros_like(a[:1])
    return torch.autograd.functional.jacobian(lambda t: layer(t).flatten(), x0).reshape(
        -1, a[0].numel())


def _pool_step(layer: nn.Module, a: Tensor, R: Tensor) -> Tensor:
    if isinstance(layer, (nn.MaxPool1d, nn.MaxPool2d)):
        fn = F.max_pool1d if isinstance(layer, nn.MaxPool1d) else F.max_pool2d
        _, idx = fn(a, layer.kernel_size, layer.stride, layer.padding, layer.dilation,
                    layer.ceil_mode, return_indices=True)
        out = torch.zeros_like(a).flatten(2)
        out.scatter_add_(2, idx.flatten(2), R.flatten(2))
        return out.reshape(a.shape)
    M = _pool_matrix(layer, a)  # out x in, shared by the samples
    af = a.flatten(1)
    q = af[:, None, :] * M[None]  # q[b, k, j] = a_j M_kj
    z = stab(q.sum(2), 0.0)
    return (q * (R.flatten(1) / z)[:, :, None]).sum(1).reshape(a.shape)


def reference_lrp(model: nn.Module, rules: list, x: Tensor, target: Tensor) -> Tensor:
    """Relevance of ``x`` for ``target`` (LongTensor[B]); ``rules`` lists one rule per
    Linear/Conv layer in forward order."""
    layers = leaves(model)
    acts = [x.double()]
    with torch.no_grad():
        for m in layers:
            if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)):
                m = _double(m)
            acts.append(m(acts[-1]) if not isinstance(m, nn.Dropout) else acts[-1])
    out = acts[-1]
    R = torch.zeros_like(out)
    R[torch.arange(len(target)), target] = out[torch.arange(len(target)), target]
    rules = [spec(r) for r in rules]
    with torch.no_grad():
        for i in reversed(range(len(layers))):
            m, a = layers[i], acts[i]
            if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)):
                R = _param_step(m, a, R, rules.pop())
            elif isinstance(m, (nn.ReLU, nn.Identity, nn.Dropout)):
                pass
            elif isinstance(m, nn.Flatten):
                R = R.reshape(a.shape)
            else:
                R = _pool_step(m, a, R)
    assert not rules
    return R


def _double(m: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(m).double()
