"""Checkers for chapter 4 (Deep Taylor Decomposition).

Both exercises ask the learner to derive a rule and write it from tensor operations, so the
checkers watch for the package's own implementation (``ZBox``, ``WSquare``,
``lt.core.propagate``, ``dtd.redistribute``) and reject an answer that calls it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .. import core, dtd, rules
from ._base import (
    call,
    check_tensor,
    close,
    dtype_name,
    fail,
    first_match,
    forbidden,
    report_forbidden,
    snapshot,
    tolerance,
    unchanged,
)

__all__ = ["check_wsquare_rule", "check_zero_to_h_rule"]


def _package(rule_name: str, rule_class: type) -> dict:
    return {f"the package's {rule_name} rule": rule_class,
            "the package's lrp_teach.core.propagate": core.propagate,
            "the package's dtd.redistribute": dtd.redistribute}


def _ratio(num: torch.Tensor, den: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    """sum_k num[b, k, j] / den[b, k] * R[b, k] for num (B, K, d)."""
    return (num * (R / den)[:, :, None]).sum(1)


def _zero_h_variants(a, W, b, h, R):
    """Reference and common mistakes of the [0, h] rule; tensors (B, d)."""
    hh = h.expand_as(a)
    wm, wp = W.clamp(max=0), W.clamp(min=0)
    aw = a[:, None, :] * W                         # (B, K, d)
    hwm = hh[:, None, :] * wm
    num = aw - hwm
    den = num.sum(2)
    reference = _ratio(num, den, R)
    variants = [
        ("the bias is in the denominator; in this derivation the bias is not moved, so "
         "the denominator has no bias term and the layer conserves relevance",
         _ratio(num, den + b, R)),
        ("the upper bound enters with the wrong sign", _ratio(aw + hwm, (aw + hwm).sum(2), R)),
        ("the upper bound is paired with the positive weights; it belongs to the weights "
         "that lower the neuron when the input grows",
         _ratio(aw - hh[:, None, :] * wp, (aw - hh[:, None, :] * wp).sum(2), R)),
        ("this is the z+ rule: the upper bound h plays no part, as if the inputs were "
         "unbounded above", _ratio(a[:, None, :] * wp, (a[:, None, :] * wp).sum(2), R)),
        ("this is LRP-0 without the bias: the upper bound h plays no part",
         _ratio(aw, aw.sum(2), R)),
        ("the upper bound appears in the numerator but not in the denominator, so relevance "
         "is not conserved", _ratio(num, aw.sum(2), R)),
        ("the upper bound appears in the denominator but not in the numerator, so relevance "
         "is not conserved", _ratio(aw, den, R)),
    ]
    return reference, variants


def _linear(d: int, K: int, g: torch.Generator, bias_scale: float) -> torch.nn.Linear:
    layer = torch.nn.Linear(d, K).double()
    with torch.no_grad():
        layer.weight.copy_(torch.randn(K, d, generator=g, dtype=torch.float64))
        layer.bias.copy_(bias_scale * torch.randn(K, generator=g, dtype=torch.float64))
    return layer


def _run_case(fn, where, layer, a, R, extra, package, dtype):
    __tracebackhide__ = True
    layer_in = layer.to(dtype)
    a_in, R_in = a.to(dtype), R.to(dtype)
    extra_in = extra.to(dtype) if isinstance(extra, torch.Tensor) else extra
    before = snapshot(layer=layer_in, a=a_in, R=R_in,
                      high=extra_in if isinstance(extra_in, torch.Tensor) else None)
    used: list[str] = []
    with forbidden(used, **package):
        got = call(fn, layer_in, a_in, R_in, *(() if extra is None else (extra_in,)),
                   where=where)
    unchanged(before, where, layer=layer_in, a=a_in, R=R_in,
              high=extra_in if isinstance(extra_in, torch.Tensor) else None)
    report_forbidden(used, where)
    return check_tensor(where, got, a.shape).to(torch.float64)


def _judge(where: str, got, expected, variants, R, dtype, conserve_hint: str, differs: str,
           question: str) -> None:
    """Pass a case, or name the mistake: a known variant, broken conservation, or else."""
    rel = tolerance(dtype) * (10 if dtype == torch.float32 else 1e3)
    if close(got, expected, rel):
        return
    mistake = first_match(got, variants, rel)
    if mistake:
        fail(f"{where}: your result matches a common mistake: {mistake}.")
    if not close(got.sum(1), R.sum(1), rel):
        fail(f"{where}: relevance is not conserved: R_in sums to {float(got[0].sum()):.4f} "
             f"for the first sample, but {float(R[0].sum()):.4f} came in.{conserve_hint}")
    fail(f"{where}: your rule conserves relevance but {differs} (largest difference "
         f"{float((got - expected).abs().max()):.3g}). {question}")


def check_zero_to_h_rule(fn: Callable, cases: int = 8) -> None:
    r"""Grade ``fn(layer, a, R, high)``: the DTD rule for inputs in the box [0, h].

    Searching from a along v_j = a_j 1[w_jk > 0] + (a_j − h_j) 1[w_jk < 0] to the
    hyperplane z_k = 0 gives :cite:`montavon2017dtd`

    .. math:: R_j = \sum_k \frac{a_j w_{jk} - h_j w_{jk}^-}
              {\sum_{j'} (a_{j'} w_{j'k} - h_{j'} w_{j'k}^-)} R_k ,

    the z^B rule with l = 0. The cases have biases, a scalar ``high`` or one bound per
    feature, inputs at 0 and at the upper bound, odd sizes, and float64 and float32. The
    package's rules (``ZBox``, ``propagate``, ``dtd.redistribute``) may not be used.

    Parameters
    ----------
    fn : callable
        ``fn(layer, a, R, high) -> torch.Tensor`` of shape (B, d), for an ``nn.Linear``
        ``layer``, activations ``a`` (B, d) in [0, high], output relevance ``R`` (B, K) and
        ``high`` a float or a tensor of shape (d,).
    cases : int
        Number of random layers.
    """
    __tracebackhide__ = True
    for case in range(cases):
        g = torch.Generator().manual_seed(case)
        d, K, B = 4 + case, 3 + case % 3, 3
        dtype = torch.float32 if case % 4 == 3 else torch.float64
        layer = _linear(d, K, g, 0.5)
        if case % 2:
            high = 0.5 + torch.rand(d, generator=g, dtype=torch.float64)
            what = "per-feature bounds h_j, a tensor of shape (d,)"
        else:
            high = 1.0 + case
            what = f"h = {high}"
        h = torch.as_tensor(high, dtype=torch.float64)
        a = torch.rand(B, d, generator=g, dtype=torch.float64) * h
        a[0, 0] = 0.0                                   # a black pixel
        a[1, 1] = float(h.expand(d)[1])                 # a pixel at its upper bound
        with torch.no_grad():
            R = torch.relu(layer(a)) * torch.rand(B, K, generator=g, dtype=torch.float64)
        W, b = layer.weight.detach().clone(), layer.bias.detach().clone()
        expected, variants = _zero_h_variants(a, W, b, h, R)
        where = f"case {case} ({what}, layer {d} -> {K}, {dtype_name(dtype)})"
        got = _run_case(fn, where, layer, a, R, high, _package("ZBox", rules.ZBox), dtype)
        _judge(where, got, expected, variants, R, dtype, " Look at the denominator.",
               "splits it differently from the derivation",
               "Write down the search direction for each sign of w_jk and check the numerator.")
    print(f"The [0, h] rule: correct on {cases} random layers (float64 and float32), and it "
          "conserves relevance.")


def check_wsquare_rule(fn: Callable, cases: int = 8) -> None:
    r"""Grade ``fn(layer, a, R)``: the DTD rule for unbounded inputs, bias not moved.

    For inputs in :math:`\mathbb{R}^d` the nearest root point lies along the weights, and with
    the bias kept fixed (the w² proposition of chapter 4 without the bias input)

    .. math:: R_j = \sum_k \frac{w_{jk}^2}{\sum_{j'} w_{j'k}^2} R_k

    :cite:`montavon2017dtd`. The answer must have the shape of ``a``, conserve relevance and not
    depend on ``a``. The package's ``WSquare``, ``propagate`` and ``dtd.redistribute`` may not
    be used.
    """
    __tracebackhide__ = True
    for case in range(cases):
        g = torch.Generator().manual_seed(50 + case)
        d, K, B = 3 + case, 2 + case % 4, 2 + case % 2
        dtype = torch.float32 if case % 4 == 3 else torch.float64
        layer = _linear(d, K, g, 1.0)
        a = torch.randn(B, d, generator=g, dtype=torch.float64)
        R = torch.randn(B, K, generator=g, dtype=torch.float64)
        W, b = layer.weight.detach().clone(), layer.bias.detach().clone()
        w2 = (W**2)[None].expand(B, K, d)
        expected = _ratio(w2, w2.sum(2), R)
        Wb = W[None].expand(B, K, d)
        variants = [
            ("the weights are not squared, so negative weights take relevance away and the "
             "shares can be negative", _ratio(Wb, Wb.sum(2), R)),
            ("the shares use |w|, not the squared weights that come out of the derivation",
             _ratio(Wb.abs(), Wb.abs().sum(2), R)),
            ("the bias is in the denominator, so part of the relevance is lost; here the "
             "bias stays fixed", _ratio(w2, w2.sum(2) + b**2, R)),
            ("the shares are multiplied by the activations a, but the search direction of this "
             "domain does not depend on a", _ratio(a[:, None, :] * w2,
                                                    (a[:, None, :] * w2).sum(2), R)),
            ("the normalization runs over the output neurons k instead of over the inputs j, "
             "so relevance is not conserved",
             (w2 / w2.sum(1, keepdim=True) * R[:, :, None]).sum(1)),
        ]
        where = f"case {case} (layer {d} -> {K}, batch {B}, {dtype_name(dtype)})"
        got = _run_case(fn, where, layer, a, R, None, _package("WSquare", rules.WSquare), dtype)
        _judge(where, got, expected, variants, R, dtype, "",
               "differs from the derivation",
               "Which direction leads to the nearest point of the hyperplane z_k = 0?")
    print(f"The w² rule: correct on {cases} random layers (float64 and float32), and it "
          "conserves relevance.")
