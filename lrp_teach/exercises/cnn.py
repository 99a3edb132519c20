"""Checkers for chapter 5, "Explaining convolutional networks"."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ._base import ExerciseError, compare

__all__ = ["check_fold_batchnorm", "check_maxpool_relevance"]


def _random_conv_bn(generator: torch.Generator, bias: bool):
    c_in = int(torch.randint(1, 4, (1,), generator=generator))
    c_out = int(torch.randint(2, 6, (1,), generator=generator))
    conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=bias).double()
    bn = nn.BatchNorm2d(c_out, eps=float(torch.empty(1).uniform_(1e-3, 0.5,
                                                                  generator=generator))).double()
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator))
        if bias:
            conv.bias.copy_(torch.randn(c_out, generator=generator))
        bn.weight.copy_(torch.randn(c_out, generator=generator))
        bn.bias.copy_(torch.randn(c_out, generator=generator))
        bn.running_mean.copy_(torch.randn(c_out, generator=generator))
        bn.running_var.copy_(torch.rand(c_out, generator=generator) + 0.05)
    return conv.eval(), bn.eval(), c_in


def check_fold_batchnorm(fn: Callable[[nn.Conv2d, nn.BatchNorm2d], nn.Conv2d]) -> None:
    """Grade ``fn(conv, bn)``: one convolution equal to ``bn(conv(x))`` in eval mode.

    With :math:`s_c = \\gamma_c / \\sqrt{\\sigma^2_c + \\epsilon}` the folded layer has
    weights :math:`s_c W_c` and bias :math:`s_c (b_c - \\mu_c) + \\beta_c`
    :cite:`montavon2019overview`. ``fn`` must return a new ``nn.Conv2d`` and leave ``conv`` and
    ``bn`` unchanged.
    """
    generator = torch.Generator().manual_seed(2024)
    cases = 12
    for case in range(cases):
        conv, bn, c_in = _random_conv_bn(generator, bias=case % 3 != 0)
        before = [p.detach().clone() for p in (*conv.state_dict().values(),
                                              *bn.state_dict().values())]
        x = torch.randn(4, c_in, 6, 6, generator=generator, dtype=torch.float64)
        with torch.no_grad():
            expected = bn(conv(x))
        folded = fn(conv, bn)
        after = [p.detach() for p in (*conv.state_dict().values(), *bn.state_dict().values())]
        if any(not torch.equal(a, b) for a, b in zip(before, after, strict=True)):
            raise ExerciseError(
                f"case {case}: your function changed the original conv or bn layer; build a "
                "new nn.Conv2d (copy.deepcopy(conv) is a good start) and change that one."
            )
        if not isinstance(folded, nn.Conv2d):
            raise ExerciseError(
                f"case {case}: expected an nn.Conv2d, got {type(folded).__name__}."
            )
        if folded.bias is None:
            raise ExerciseError(
                f"case {case}: the folded convolution needs a bias (BatchNorm shifts every "
                "channel), but yours has bias=None. Create it with bias=True."
            )
        with torch.no_grad():
            got = folded.double()(x)
            if not torch.allclose(got, expected, atol=1e-8):
                scale = bn.weight / bn.running_var.sqrt()
                w_no_eps = conv.weight * scale.view(-1, 1, 1, 1)
                if torch.allclose(folded.weight.double(), w_no_eps, atol=1e-8):
                    raise ExerciseError(
                        f"case {case}: the scale must be gamma / sqrt(running_var + eps); "
                        f"you left out eps = {bn.eps:.3g}."
                    )
                if conv.bias is not None:
                    bias_no_conv = bn.bias - bn.weight * bn.running_mean / (
                        bn.running_var + bn.eps).sqrt()
                    if torch.allclose(folded.bias.double(), bias_no_conv, atol=1e-8):
                        raise ExerciseError(
                            f"case {case}: the convolution's own bias is missing from the "
                            "folded bias: it is scaled too, s * (b - mean) + beta."
                        )
        compare(f"case {case}: output of the folded convolution", got, expected, atol=1e-8,
                rtol=0, hint="the folded layer must compute bn(conv(x)) with BatchNorm's "
                             "running statistics (eval mode).")
    print(f"check_fold_batchnorm: {cases} random conv + BatchNorm pairs fold correctly; the "
          "outputs agree to 1e-8.")


def _wta_reference(a: torch.Tensor, R_out: torch.Tensor, kernel: int) -> torch.Tensor:
    _, idx = F.max_pool2d(a, kernel, return_indices=True)
    R = torch.zeros_like(a).flatten(2)
    R.scatter_add_(2, idx.flatten(2), R_out.flatten(2))
    return R.view_as(a)


def check_maxpool_relevance(fn: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]
                            ) -> None:
    """Grade ``fn(a, R_out, kernel)``: winner-take-all relevance through ``MaxPool2d(kernel)``.

    Each output of the pooling layer passes its whole relevance to the input that attained
    the maximum in its window, :math:`R_j = \\sum_k \\mathbb 1[j = \\arg\\max_{i \\in
    \\text{window}_k} a_i]\\, R_k` :cite:`montavon2019overview`; every other input gets 0.
    ``a`` has shape ``(N, C, H, W)`` with distinct values, ``R_out`` the pooled shape.
    """
    generator = torch.Generator().manual_seed(77)
    cases = 15
    for case in range(cases):
        kernel = int(torch.randint(2, 4, (1,), generator=generator))
        n, c = 2, int(torch.randint(1, 4, (1,), generator=generator))
        side = kernel * int(torch.randint(2, 4, (1,), generator=generator))
        a = torch.rand(n, c, side, side, generator=generator, dtype=torch.float64)
        R_out = torch.randn(n, c, side // kernel, side // kernel, generator=generator,
                            dtype=torch.float64)
        got = fn(a.clone(), R_out.clone(), kernel)
        expected = _wta_reference(a, R_out, kernel)
        if isinstance(got, torch.Tensor) and got.shape == expected.shape:
            proportional = a * F.interpolate(R_out / F.avg_pool2d(a, kernel) / kernel ** 2,
                                             scale_factor=kernel)
            if torch.allclose(got.double(), proportional, atol=1e-8):
                raise ExerciseError(
                    f"case {case}: you split each output's relevance in proportion to the "
                    "inputs, as for average pooling; max-pooling gives all of it to the "
                    "largest input of the window."
                )
            totals = got.double().sum(dim=(2, 3))
            if not torch.allclose(totals, R_out.sum(dim=(2, 3)), atol=1e-8):
                raise ExerciseError(
                    f"case {case}: relevance is not conserved: channel 0 of sample 0 receives "
                    f"{totals[0, 0].item():.4f} in total, but {R_out[0, 0].sum().item():.4f} "
                    "came in."
                )
        compare(f"case {case} (kernel {kernel}, {side}x{side})", got, expected, atol=1e-10,
                rtol=0, hint="put each R_k on the arg max of its window, 0 elsewhere.")
    print(f"check_maxpool_relevance: {cases} random cases agree with winner-take-all; "
          "relevance is conserved.")
