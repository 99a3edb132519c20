"""A slow, per-sentence NumPy float64 reference of LRP for torch's transformer layers.

Written as relevance messages (no autograd, no Gradient x Input), one sentence at a time
with dense matrices, for the rules of :mod:`lrp_teach.engine.transformer`: ε on Linear
(stabilizer ε·sign z), the identity rule on LayerNorm (σ constant, LRP-0 with the bias as
a constant input), the plain proportional split at residual sums, the identity rule at
ReLU/GELU, and in attention either AttnLRP (uniform rule on q·kᵀ and A·v, the softmax rule
R_x = x (R − s Σ R)) or CP-LRP (A constant).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def _np(t) -> np.ndarray | None:
    return None if t is None else t.detach().double().numpy().copy()


def _stab(z, eps):
    return z + eps * np.where(z >= 0, 1.0, -1.0)


def linear_fwd(a, w, b):
    return a @ w.T + (0.0 if b is None else b)


def linear_rel(a, w, b, r, eps):
    """R_j = sum_k a_j w_kj R_k / (z_k + eps sign z_k), rows of a independent."""
    z = linear_fwd(a, w, b)
    msgs = a[:, None, :] * w[None, :, :]  # (T, K, J): a_j w_kj
    return (msgs * (r / _stab(z, eps))[:, :, None]).sum(1)


def ln_fwd(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    sd = np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps)
    y = (x - mu) / sd
    return y * (1.0 if w is None else w) + (0.0 if b is None else b)


def ln_rel(x, w, b, eps, r):
    """LayerNorm as the linear map y = M x + b with σ constant, LRP-0 (bias as input)."""
    n = x.shape[-1]
    out = np.zeros_like(x)
    y = ln_fwd(x, w, b, eps)
    for t in range(len(x)):
        sd = np.sqrt(((x[t] - x[t].mean()) ** 2).mean() + eps)
        scale = (np.ones(n) if w is None else w) / sd
        m = scale[:, None] * (np.eye(n) - 1.0 / n)  # (I, J)
        out[t] = (x[t][None, :] * m * (r[t] / y[t])[:, None]).sum(0)
    return out


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def softmax_rel(x, r):
    """AttnLRP: R_x = x (R - s sum R) per row (x finite: before the mask)."""
    return x * (r - softmax(x) * r.sum(-1, keepdims=True))


def _gelu(x):
    return torch.nn.functional.gelu(torch.from_numpy(x)).numpy()


class Attention:
    """One sentence through an nn.MultiheadAttention (self-attention, batch dim removed)."""

    def __init__(self, mha: nn.MultiheadAttention):
        e = mha.embed_dim
        if mha.in_proj_weight is not None:
            w = _np(mha.in_proj_weight)
            self.w = (w[:e], w[e:2 * e], w[2 * e:])
        else:
            self.w = (_np(mha.q_proj_weight), _np(mha.k_proj_weight), _np(mha.v_proj_weight))
        b = _np(mha.in_proj_bias)
        self.b = (None,) * 3 if b is None else (b[:e], b[e:2 * e], b[2 * e:])
        self.wo, self.bo = _np(mha.out_proj.weight), _np(mha.out_proj.bias)
        self.h, self.e = mha.num_heads, e

    def forward(self, xq, xk, xv, pad):
        self.xq, self.xk, self.xv = xq, xk, xv
        q = linear_fwd(xq, self.w[0], self.b[0])
        k = linear_fwd(xk, self.w[1], self.b[1])
        v = linear_fwd(xv, self.w[2], self.b[2])
        hd = self.e // self.h
        mask = np.where(pad, -np.inf, 0.0)[None, :] if pad is not None else 0.0
        self.heads, outs = [], []
        for h in range(self.h):
            sl = slice(h * hd, (h + 1) * hd)
            qh, kh, vh = q[:, sl] / np.sqrt(hd), k[:, sl], v[:, sl]
            s = qh @ kh.T
            a = softmax(s + mask)
            o = a @ vh
            self.heads.append((qh, kh, vh, s, a, o))
            outs.append(o)
        self.o = np.concatenate(outs, 1)
        return linear_fwd(self.o, self.wo, self.bo)

    def relevance(self, r, eps, mode, peps=0.0):
        r_o = linear_rel(self.o, self.wo, self.bo, r, eps)
        hd = self.e // self.h
        rq, rk, rv = (np.zeros((len(self.xq), self.e)), np.zeros((len(self.xk), self.e)),
                      np.zeros((len(self.xv), self.e)))
        for h, (qh, kh, vh, s, a, o) in enumerate(self.heads):
            sl = slice(h * hd, (h + 1) * hd)
            roh = r_o[:, sl]
            if mode == "cp":  # A constant: o = A v is linear in v, LRP-0
                n = roh / o
                rv[:, sl] = (a[:, :, None] * vh[None, :, :] * n[:, None, :]).sum(0)
                continue
            n = roh / (2 * _stab(o, peps))  # (L, hd): uniform rule, messages a_ik v_kj
            ra = (a[:, :, None] * vh[None, :, :] * n[:, None, :]).sum(2)
            rv[:, sl] = (a[:, :, None] * vh[None, :, :] * n[:, None, :]).sum(0)
            rs = softmax_rel_masked(s, a, ra)
            ns = rs / (2 * _stab(s, peps))
            rq[:, sl] = (qh[:, None, :] * kh[None, :, :] * ns[:, :, None]).sum(1)
            rk[:, sl] = (qh[:, None, :] * kh[None, :, :] * ns[:, :, None]).sum(0)
        rxq = linear_rel(self.xq, self.w[0], self.b[0], rq, eps)
        rxk = linear_rel(self.xk, self.w[1], self.b[1], rk, eps)
        rxv = linear_rel(self.xv, self.w[2], self.b[2], rv, eps)
        return rxq, rxk, rxv


def softmax_rel_masked(s, a, r):
    """The softmax rule at the masked scores, read at the scores before the mask."""
    return s * (r - a * r.sum(-1, keepdims=True))


class EncoderLayer:
    """One sentence through an nn.TransformerEncoderLayer (eval mode)."""

    def __init__(self, layer: nn.TransformerEncoderLayer):
        self.att = Attention(layer.self_attn)
        self.w1, self.b1 = _np(layer.linear1.weight), _np(layer.linear1.bias)
        self.w2, self.b2 = _np(layer.linear2.weight), _np(layer.linear2.bias)
        self.n1 = (_np(layer.norm1.weight), _np(layer.norm1.bias), layer.norm1.eps)
        self.n2 = (_np(layer.norm2.weight), _np(layer.norm2.bias), layer.norm2.eps)
        self.first = layer.norm_first
        act = layer.activation
        self.gelu = act is torch.nn.functional.gelu or isinstance(act, nn.GELU)

    def _ff(self, x):
        self.ff_in = x
        self.pre = linear_fwd(x, self.w1, self.b1)
        self.act = _gelu(self.pre) if self.gelu else np.maximum(self.pre, 0.0)
        return linear_fwd(self.act, self.w2, self.b2)

    def _ff_rel(self, r, eps):
        r_act = linear_rel(self.act, self.w2, self.b2, r, eps)  # identity at ReLU/GELU
        return linear_rel(self.ff_in, self.w1, self.b1, r_act, eps)

    def forward(self, x, pad):
        self.x = x
        if self.first:
            self.u = ln_fwd(x, *self.n1)
            self.sa = self.att.forward(self.u, self.u, self.u, pad)
            self.x1 = x + self.sa
            self.v = ln_fwd(self.x1, *self.n2)
            self.ff = self._ff(self.v)
            return self.x1 + self.ff
        self.sa = self.att.forward(x, x, x, pad)
        self.u1 = x + self.sa
        self.x1 = ln_fwd(self.u1, *self.n1)
        self.ff = self._ff(self.x1)
        self.u2 = self.x1 + self.ff
        return ln_fwd(self.u2, *self.n2)

    def relevance(self, r, eps, mode, peps=0.0):
        if self.first:
            tot = self.x1 + self.ff
            r_x1 = self.x1 / tot * r
            r_v = self._ff_rel(self.ff / tot * r, eps)
            r_x1 = r_x1 + ln_rel(self.x1, *self.n2[:2], self.n2[2], r_v)
            r_x = self.x / self.x1 * r_x1
            rq, rk, rv = self.att.relevance(self.sa / self.x1 * r_x1, eps, mode, peps)
            return r_x + ln_rel(self.x, *self.n1[:2], self.n1[2], rq + rk + rv)
        r_u2 = ln_rel(self.u2, *self.n2[:2], self.n2[2], r)
        r_x1 = self.x1 / self.u2 * r_u2 + self._ff_rel(self.ff / self.u2 * r_u2, eps)
        r_u1 = ln_rel(self.u1, *self.n1[:2], self.n1[2], r_x1)
        rq, rk, rv = self.att.relevance(self.sa / self.u1 * r_u1, eps, mode, peps)
        return self.x / self.u1 * r_u1 + rq + rk + rv


def classifier_reference(model, ids, pad, target, eps, mode, peps=0.0):
    """Per-token relevance (B, T) and logits for :class:`tests.test_transformer.Classifier`:
    embedding -> encoder layers -> mean over positions -> Linear head."""
    emb = _np(model.emb.weight)
    wh, bh = _np(model.head.weight), _np(model.head.bias)
    layers = [EncoderLayer(m) for m in model.enc.layers]
    out, logits = [], []
    for i in range(len(ids)):
        x = emb[ids[i].numpy()]
        p = None if pad is None else pad[i].numpy()
        hs = [x]
        for layer in layers:
            hs.append(layer.forward(hs[-1], p))
        h = hs[-1]
        m = h.mean(0)
        z = linear_fwd(m[None], wh, bh)[0]
        logits.append(z)
        r_top = np.zeros_like(z)
        r_top[target] = z[target]
        r_m = linear_rel(m[None], wh, bh, r_top[None], eps)[0]
        r = h / len(h) / m[None] * r_m[None]
        for layer in reversed(layers):
            r = layer.relevance(r, eps, mode, peps)
        out.append(r.sum(-1))
    return np.stack(out), np.stack(logits)
