"""Checkers for chapter 5, "Explaining convolutional networks"."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ._base import (
    call,
    check_tensor,
    close,
    dtype_name,
    fail,
    snapshot,
    tolerance,
    unchanged,
)

__all__ = ["check_fold_batchnorm", "check_maxpool_relevance"]


def _random_conv_bn(generator: torch.Generator, case: int, dtype: torch.dtype):
    c_in = int(torch.randint(1, 4, (1,), generator=generator))
    c_out = c_in if case % 4 == 1 else int(torch.randint(2, 6, (1,), generator=generator))
    padding, stride = (1, 1) if case % 3 else (2, 2)
    conv = nn.Conv2d(c_in, c_out, 3, padding=padding, stride=stride, bias=case % 3 != 0)
    bn = nn.BatchNorm2d(c_out, eps=float(torch.empty(1).uniform_(0.05, 0.5,
                                                                  generator=generator)))
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator))
        if conv.bias is not None:
            conv.bias.copy_(torch.randn(c_out, generator=generator))
        bn.weight.copy_(torch.randn(c_out, generator=generator))
        bn.bias.copy_(torch.randn(c_out, generator=generator))
        bn.running_mean.copy_(torch.randn(c_out, generator=generator))
        bn.running_var.copy_(torch.rand(c_out, generator=generator) + 0.05)
    return conv.to(dtype).eval(), bn.to(dtype).eval(), c_in


def _fold(conv, bn, *, eps=True, conv_bias=True, sqrt=True, scale_bias=True, mean_sign=-1.0,
          axis_out=True):
    """The correct fold (default) and its usual mistakes, in float64."""
    var = bn.running_var.double() + (bn.eps if eps else 0.0)
    s = bn.weight.double() / (var.sqrt() if sqrt else var)
    W = conv.weight.double()
    if axis_out:
        W = W * s.view(-1, 1, 1, 1)
    else:
        W = W * s.view(1, -1, 1, 1)
    b = conv.bias.double() if (conv.bias is not None and conv_bias) else torch.zeros_like(s)
    shift = b + mean_sign * bn.running_mean.double()
    bias = (s * shift if scale_bias else shift) + bn.bias.double()
    return W, bias


def _fold_mistakes(conv, bn):
    out = [
        ("the scale leaves out BatchNorm's eps", dict(eps=False)),
        ("the scale divides by the variance, not by the standard deviation", dict(sqrt=False)),
        ("the shift is not multiplied by the scale", dict(scale_bias=False)),
        ("the running mean is added instead of subtracted", dict(mean_sign=1.0)),
    ]
    if conv.bias is not None:
        out.append(("the convolution's own bias is missing from the folded bias",
                    dict(conv_bias=False)))
    if conv.in_channels == conv.out_channels:
        out.append(("the weights are scaled per input channel; BatchNorm scales each output "
                    "channel of the convolution", dict(axis_out=False)))
    return [(text, _fold(conv, bn, **kw)) for text, kw in out]


def check_fold_batchnorm(fn: Callable[[nn.Conv2d, nn.BatchNorm2d], nn.Conv2d]) -> None:
    """Grade ``fn(conv, bn)``: one convolution equal to ``bn(conv(x))`` in eval mode.

    With :math:`s_c = \\gamma_c / \\sqrt{\\sigma^2_c + \\epsilon}` the folded layer has
    weights :math:`s_c W_c` and bias :math:`s_c (b_c - \\mu_c) + \\beta_c`
    :cite:`montavon2019overview`. ``fn`` must return a new ``nn.Conv2d`` and leave ``conv`` and
    ``bn`` unchanged. The cases have convolutions with and without bias, padding 1 and 2,
    stride 1 and 2, and layers in float64 and float32; the tolerance follows the less precise
    of the layers' and the result's dtypes (a float32 result is accepted to float32 precision).
    """
    __tracebackhide__ = True
    generator = torch.Generator().manual_seed(2024)
    cases = 12
    for case in range(cases):
        dtype = torch.float32 if case % 4 == 2 else torch.float64
        conv, bn, c_in = _random_conv_bn(generator, case, dtype)
        where = (f"case {case} (conv {c_in} -> {conv.out_channels} channels, "
                 f"{'with' if conv.bias is not None else 'without'} bias, padding "
                 f"{conv.padding[0]}, stride {conv.stride[0]}, {dtype_name(dtype)})")
        x = torch.randn(4, c_in, 7, 7, generator=generator, dtype=torch.float64)
        with torch.no_grad():
            expected = bn.double()(conv.double()(x))
            W_ref, b_ref = _fold(conv, bn)
            variants = _fold_mistakes(conv, bn)
        conv, bn = conv.to(dtype), bn.to(dtype)
        before = snapshot(conv=conv, bn=bn)
        folded = call(fn, conv, bn, where=where)
        unchanged(before, where, conv=conv, bn=bn)
        if folded is conv:
            fail(f"{where}: your function returned the original `conv`; return a new "
                 "nn.Conv2d and leave `conv` as it was.")
        if not isinstance(folded, nn.Conv2d):
            fail(f"{where}: expected an nn.Conv2d, got {type(folded).__name__}.")
        if folded.bias is None:
            fail(f"{where}: the folded convolution needs a bias (BatchNorm shifts every "
                 "channel), but yours has bias=None.")
        geometry = [(k, getattr(conv, k), getattr(folded, k))
                    for k in ("kernel_size", "stride", "padding", "dilation", "groups",
                              "in_channels", "out_channels")]
        wrong = [f"{k} {new} instead of {old}" for k, old, new in geometry if old != new]
        if wrong:
            fail(f"{where}: the folded convolution has {', '.join(wrong)}; it must keep the "
                 "geometry of `conv`, or its output has another size.")
        rel = tolerance(dtype, folded.weight.dtype) * 10
        W_got = folded.weight.detach().double()
        b_got = folded.bias.detach().double()
        if W_got.shape != W_ref.shape or b_got.shape != b_ref.shape:
            fail(f"{where}: the folded weight has shape {tuple(W_got.shape)} and bias "
                 f"{tuple(b_got.shape)}; expected {tuple(W_ref.shape)} and {tuple(b_ref.shape)}.")
        w_ok, b_ok = close(W_got, W_ref, rel), close(b_got, b_ref, rel)
        if not (w_ok and b_ok):
            for text, (W_v, b_v) in variants:
                if close(W_got, W_v, rel) and close(b_got, b_v, rel):
                    fail(f"{where}: your folded layer matches a common mistake: {text}.")
                if w_ok and close(b_got, b_v, rel):
                    fail(f"{where}: the weights are right, but the bias is not: {text}.")
            if w_ok:
                fail(f"{where}: the folded weights are right, but the bias is off by up to "
                     f"{float((b_got - b_ref).abs().max()):.3g}.")
            if b_ok:
                fail(f"{where}: the folded bias is right, but the weights are off by up to "
                     f"{float((W_got - W_ref).abs().max()):.3g}.")
            fail(f"{where}: both the folded weights and the bias differ from what bn(conv(x)) "
                 "needs. Write out BatchNorm's formula for one channel and collect the factor "
                 "of conv(x) and the constant.")
        with torch.no_grad():
            got = folded.double()(x)
        if not close(got, expected, rel):
            fail(f"{where}: the parameters are right, but the layer's output differs from "
                 f"bn(conv(x)) by up to {float((got - expected).abs().max()):.3g}.")
    print(f"check_fold_batchnorm: {cases} random conv + BatchNorm pairs (float64 and float32, "
          "with and without bias, padding 1 and 2) fold correctly.")


def _windows(t: torch.Tensor, kernel: int) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, H//k, W//k, k*k), the non-overlapping windows of MaxPool2d(k)."""
    n, c, h, w = t.shape
    ho, wo = h // kernel, w // kernel
    t = t[:, :, : ho * kernel, : wo * kernel]
    return t.reshape(n, c, ho, kernel, wo, kernel).permute(0, 1, 2, 4, 3, 5).reshape(
        n, c, ho, wo, kernel * kernel)


def _maxpool_case(generator, case):
    kernel = 2 + case % 2
    c = 1 + case % 3
    side = [4, 6, 7, 5, 9][case % 5]
    if side < kernel:
        side = kernel
    a = torch.rand(2, c, side, side, generator=generator, dtype=torch.float64)
    kind = "distinct values"
    if case % 3 == 1:
        a = (a * 3).round() / 3  # few levels: many ties
        kind = "ties in the windows"
    if case % 4 == 2:
        a[:, :, :kernel, :kernel] = 0.0  # an all-zero window, as after a ReLU
        kind += ", an all-zero window"
    R_out = torch.randn(2, c, side // kernel, side // kernel, generator=generator,
                        dtype=torch.float64)
    return a, R_out, kernel, f"kernel {kernel}, {side}x{side} input, {kind}"


def check_maxpool_relevance(fn: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]
                            ) -> None:
    """Grade ``fn(a, R_out, kernel)``: winner-take-all relevance through ``MaxPool2d(kernel)``.

    Each output of the pooling layer passes its whole relevance to the input that attained
    the maximum in its window, :math:`R_j = \\sum_k \\mathbb 1[j = \\arg\\max_{i \\in
    \\text{window}_k} a_i]\\, R_k` :cite:`montavon2019overview`; every other input gets 0.
    When several inputs tie for the maximum, any one of them may take the relevance, but only
    one. The cases include ties, all-zero windows, and sizes that the kernel does not divide
    (the rows and columns left over belong to no window and get 0).
    """
    __tracebackhide__ = True
    generator = torch.Generator().manual_seed(77)
    cases = 15
    for case in range(cases):
        dtype = torch.float32 if case % 5 == 3 else torch.float64
        a, R_out, kernel, what = _maxpool_case(generator, case)
        where = f"case {case} ({what}, {dtype_name(dtype)})"
        a_in, R_in = a.to(dtype), R_out.to(dtype)
        before = snapshot(a=a_in, R_out=R_in)
        got = call(fn, a_in, R_in, kernel, where=where)
        unchanged(before, where, a=a_in, R_out=R_in)
        if isinstance(got, torch.Tensor) and not torch.isfinite(got.detach()).all():
            fail(f"{where}: the result contains NaN or inf. In an all-zero window every input "
                 "is a maximum; does your code divide by the window's values?")
        got = check_tensor(where, got, a.shape).double()
        rel = tolerance(dtype) * 10
        ho, wo = R_out.shape[-2:]
        outside = got.clone()
        outside[:, :, : ho * kernel, : wo * kernel] = 0
        if (outside.abs() > rel).any():
            fail(f"{where}: rows or columns that belong to no pooling window receive "
                 "relevance; MaxPool2d drops them, so they get 0.")
        win_R = _windows(got, kernel)                       # (N, C, ho, wo, k*k)
        win_a = _windows(a, kernel)
        is_max = win_a == win_a.max(-1, keepdim=True).values
        totals = win_R.sum(-1)
        active = R_out.abs() > 1e-9
        proportional = win_a / win_a.sum(-1, keepdim=True).clamp(min=1e-300) * R_out[..., None]
        if close(win_R, proportional, rel):
            fail(f"{where}: you split each output's relevance in proportion to the inputs, as "
                 "for average pooling; max-pooling passes it on by another principle.")
        if close(win_R, R_out[..., None].expand_as(win_R), rel):
            fail(f"{where}: every input of a window receives the window's whole relevance, so "
                 f"each R_k is counted {kernel * kernel} times.")
        if close(win_R, R_out[..., None] * is_max, rel) and (is_max.sum(-1)[active] > 1).any():
            n_in, n_out = float(win_R.sum()), float(R_out.sum())
            fail(f"{where}: on ties you gave the full relevance to every tied maximum, which "
                 f"creates relevance ({n_in:.2f} out for {n_out:.2f} in). Exactly one input "
                 "of a window may win.")
        if not close(totals, R_out, rel):
            bad = ((totals - R_out).abs() > rel * (1 + R_out.abs().max())).flatten()
            k = int(bad.nonzero()[0, 0])
            fail(f"{where}: relevance is not conserved: a window receives "
                 f"{float(totals.flatten()[k]):.4f} in total, but its output had "
                 f"{float(R_out.flatten()[k]):.4f}.")
        receivers = (win_R.abs() > rel * (1 + R_out.abs().max())).sum(-1)
        if (receivers > 1).any():
            fail(f"{where}: some windows share their relevance among several inputs; "
                 "winner-take-all gives it to one input.")
        wrong_place = (win_R.abs() > rel * (1 + R_out.abs().max())) & ~is_max
        if wrong_place.any():
            fail(f"{where}: in some windows the relevance goes to an input that is not the "
                 "window's maximum.")
    print(f"check_maxpool_relevance: {cases} random cases (ties, all-zero windows, odd sizes, "
          "float64 and float32) agree with winner-take-all; relevance is conserved.")
