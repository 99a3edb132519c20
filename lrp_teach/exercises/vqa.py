"""Checkers for chapter 8 (explaining a relation network)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ._base import call, check_tensor, close, compare, dtype_name, fail, snapshot, unchanged

__all__ = ["check_coordinate_share", "check_pair_concat_relevance"]


def _sign(z):
    return torch.where(z >= 0, 1.0, -1.0).to(z.dtype)


def _concat(o, q, weight, bias, R_h, eps, *, with_bias=True, signed=True, use_eps=True,
            blocks="joint", swap=False, q_once=False):
    """The reference (defaults) and its usual mistakes, without building the concatenation."""
    d = o.shape[-1]
    w1, w2, w3 = weight[:, :d], weight[:, d:2 * d], weight[:, 2 * d:]
    p1, p2 = (o @ w1.T)[:, :, None], (o @ w2.T)[:, None]
    pq = (q @ w3.T + (bias if with_bias else 0))[:, None, None]

    def stab(z):
        if not use_eps:
            return z
        return z + (eps * _sign(z) if signed else eps)

    if blocks == "joint":
        s1 = s2 = s3 = R_h / stab(p1 + p2 + pq)
    else:  # every block divided by its own pre-activation
        s1, s2, s3 = R_h / stab(p1 + 0 * p2), R_h / stab(p2 + 0 * p1), R_h / stab(pq + 0 * p1)
    first, second = (s1.sum(2), s2.sum(1)) if not swap else (s1.sum(1), s2.sum(2))
    R_o = o * (first @ w1) + o * (second @ w2)
    R_q = q * ((s3[:, 0, 0] if q_once else s3.sum((1, 2))) @ w3)
    return R_o, R_q


_CONCAT_MISTAKES = [
    ("the bias is left out of the denominator", dict(with_bias=False)),
    ("the stabilizer is added with the same sign everywhere; it must push each denominator "
     "away from zero, whatever its sign", dict(signed=False)),
    ("the stabilizer epsilon is missing", dict(use_eps=False)),
    ("each block is divided by its own part of the pre-activation; the three blocks are "
     "inputs of one neuron and share one denominator", dict(blocks="separate")),
    ("the pair bookkeeping is swapped: an object's first-member share comes from the pairs in "
     "which it is the first member, and its second-member share from those in which it is the "
     "second", dict(swap=True)),
    ("q collects its share from one pair only, but it takes part in every pair",
     dict(q_once=True)),
]


def check_pair_concat_relevance(fn: Callable, cases: int = 5) -> None:
    r"""Grade ``fn(o, q, weight, bias, R_h, eps) -> (R_o, R_q)``.

    The first layer of the relation network's ``g`` computes, for every ordered pair
    :math:`(i, j)`, :math:`z_{ij} = W [o_i; o_j; q] + b`. The ε-rule on this layer
    (``montavon2019overview``, ``arras2022clevrxai``) gives each input its share
    :math:`a\,w\,R_{ij}/(z_{ij} + \epsilon\,\mathrm{sign}(z_{ij}))`, and each object collects
    its shares as first and as second member of all its pairs:

    .. math:: R_{o_i} = \sum_j R^{(1)}_{ij} + \sum_j R^{(2)}_{ji},\qquad
              R_q = \sum_{i,j} R^{(q)}_{ij}.

    Cases vary N (including an odd number of objects), ε (0.01, 0.1, 1) and the dtype
    (float64 and float32).

    Parameters
    ----------
    fn : callable
        ``o`` is ``(B, N, D)``, ``q`` ``(B, H)``, ``weight`` ``(G, 2D + H)``, ``bias``
        ``(G,)``, ``R_h`` ``(B, N, N, G)`` the relevance of the layer's outputs; returns the
        relevance of the objects ``(B, N, D)`` and of ``q`` ``(B, H)``.
    cases : int
        Number of random cases.
    """
    __tracebackhide__ = True
    for case in range(cases):
        g = torch.Generator().manual_seed(300 + case)
        b, n, d, h, units = 2, 3 + case, 4, 3, 5
        dtype = torch.float32 if case == cases - 1 else torch.float64
        o = torch.randn(b, n, d, generator=g, dtype=torch.float64)
        q = torch.randn(b, h, generator=g, dtype=torch.float64)
        weight = torch.randn(units, 2 * d + h, generator=g, dtype=torch.float64)
        bias = 0.5 * torch.randn(units, generator=g, dtype=torch.float64)
        z = ((o @ weight[:, :d].T)[:, :, None] + (o @ weight[:, d:2 * d].T)[:, None]
             + (q @ weight[:, 2 * d:].T + bias)[:, None, None])
        R_h = torch.rand(b, n, n, units, generator=g, dtype=torch.float64)
        R_h = R_h * (z.abs() > 0.2)        # no relevance on near-zero pre-activations
        eps = [0.01, 0.1, 1.0][case % 3]
        where = f"case {case} (N = {n} objects, eps = {eps:g}, {dtype_name(dtype)})"
        r_o, r_q = _concat(o, q, weight, bias, R_h, eps)
        variants = [(t, _concat(o, q, weight, bias, R_h, eps, **kw)) for t, kw in _CONCAT_MISTAKES]
        if eps != 0.01:
            variants.append(("your function ignores its `eps` argument (it gives the result of "
                             f"eps = 0.01; this case asks for eps = {eps:g})",
                             _concat(o, q, weight, bias, R_h, 0.01)))
        inputs = dict(o=o.to(dtype), q=q.to(dtype), weight=weight.to(dtype),
                      bias=bias.to(dtype), R_h=R_h.to(dtype))
        before = snapshot(**inputs)
        out = call(fn, *inputs.values(), eps, where=where)
        unchanged(before, where, **inputs)
        if not isinstance(out, tuple | list) or len(out) != 2:
            fail(f"{where}: return a tuple (R_o, R_q).")
        got_o = check_tensor(f"{where}, R_o", out[0], r_o.shape).double()
        got_q = check_tensor(f"{where}, R_q", out[1], r_q.shape).double()
        rel = 1e-8 if dtype == torch.float64 else 2e-4
        if close(got_o, r_o, rel) and close(got_q, r_q, rel):
            continue
        for text, (v_o, v_q) in variants:
            if close(got_o, v_o, rel) and close(got_q, v_q, rel):
                fail(f"{where}: your result matches a common mistake: {text}.")
        if close(got_o, r_o, rel):
            fail(f"{where}: the objects' relevance is right, but q's is not.")
        if close(got_q, r_q, rel):
            fail(f"{where}: q's relevance is right, but the objects' is not: look at how each "
                 "object collects its shares from the pairs it belongs to.")
        fail(f"{where}: both R_o and R_q differ from the reference (largest differences "
             f"{float((got_o - r_o).abs().max()):.3g} and {float((got_q - r_q).abs().max()):.3g})."
             " Start from one pair: which inputs does its neuron read, and what is its "
             "denominator?")
    print(f"Correct: your concatenation rule matches the reference on {cases} random cases "
          "(float64 and float32, eps 0.01 to 1).")


def check_coordinate_share(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
    r"""Grade ``fn(R_objects, R_question)``: the coordinates' share of the absolute relevance.

    ``R_objects`` has shape ``(B, N, D)``, its last two channels are the (x, y) coordinates of
    each object; ``R_question`` has shape ``(B, H)``. The answer, per example, is

    .. math:: \frac{\sum_i (|R_{x_i}| + |R_{y_i}|)}{\sum_{i,d} |R_{o_{i,d}}| + \sum_k |R_{q_k}|},

    as ``VQARelevance.coordinate_share`` computes it.
    """
    __tracebackhide__ = True
    generator = torch.Generator().manual_seed(808)
    cases = 12
    for case in range(cases):
        b = int(torch.randint(2, 5, (1,), generator=generator))
        n = int(torch.randint(2, 7, (1,), generator=generator))
        d, h = 6, int(torch.randint(2, 6, (1,), generator=generator))
        dtype = torch.float32 if case % 4 == 3 else torch.float64
        R_o = torch.randn(b, n, d, generator=generator, dtype=torch.float64).to(dtype).double()
        R_q = torch.randn(b, h, generator=generator, dtype=torch.float64).to(dtype).double()
        if case % 3 == 2:
            R_o[0, :, -2:] = 0.0                     # an example with no coordinate relevance
        where = f"case {case} (B={b}, N={n}, D={d}, H={h}, {dtype_name(dtype)})"
        A_o, A_q = R_o.abs(), R_q.abs()
        total = A_o.sum((1, 2)) + A_q.sum(1)
        expected = A_o[..., -2:].sum((1, 2)) / total
        inputs = dict(R_objects=R_o.to(dtype), R_question=R_q.to(dtype))
        before = snapshot(**inputs)
        got = call(fn, *inputs.values(), where=where)
        unchanged(before, where, **inputs)
        rel = 1e-9 if dtype == torch.float64 else 1e-5
        if isinstance(got, torch.Tensor) and tuple(got.shape) == (b,):
            gd = got.detach().double()
            variants = [
                ("the signs cancel: the share must be measured on the absolute relevance",
                 R_o[..., -2:].sum((1, 2)) / (R_o.sum((1, 2)) + R_q.sum(1))),
                ("the question's relevance is left out of the total",
                 A_o[..., -2:].sum((1, 2)) / A_o.sum((1, 2))),
                ("these are the first two channels; the coordinates are the last two",
                 A_o[..., :2].sum((1, 2)) / total),
                ("only the positive relevance is counted; the share is measured on the "
                 "absolute relevance", R_o.clamp(min=0)[..., -2:].sum((1, 2))
                 / (R_o.clamp(min=0).sum((1, 2)) + R_q.clamp(min=0).sum(1))),
            ]
            for text, variant in variants:
                if torch.isfinite(variant).all() and close(gd, variant, rel):
                    fail(f"{where}: your result matches a common mistake: {text}.")
        if isinstance(got, torch.Tensor) and tuple(got.shape) == (b, n):
            fail(f"{where}: you returned one share per object, shape (B, N); the exercise asks "
                 "for one per example, over all objects together, shape (B,).")
        compare(where, got, expected, atol=rel, rtol=0)
    print(f"check_coordinate_share: {cases} random cases (float64 and float32) agree with the "
          "reference.")
