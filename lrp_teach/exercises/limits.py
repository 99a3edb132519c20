"""Checkers for chapter 10, "Limitations and outlook"."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..limits import interaction
from ._base import call, compare, dtype_name, fail, snapshot, unchanged

__all__ = ["check_interaction"]


def _random_model(generator: torch.Generator, d: int) -> nn.Module:
    """A small ReLU network on inputs of shape (1, d, d) returning one score per input."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(d * d, 6), nn.ReLU(), nn.Linear(6, 1),
                        nn.Flatten(0)).double()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=generator, dtype=torch.float64))
    return net.eval()


def _as_float32(score: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(score).float()


def check_interaction(fn: Callable[..., torch.Tensor]) -> None:
    """Grade ``fn(score, x, mask_a, mask_b, fill=0.0)``: the interaction of two regions.

    With :math:`x_{\\setminus S}` the input with region :math:`S` set to ``fill``, the answer
    is, per input,

    .. math:: I_{AB}(x) = f(x) - f(x_{\\setminus A}) - f(x_{\\setminus B})
              + f(x_{\\setminus A \\cup B})

    as a tensor of shape ``(B,)`` :cite:`eberle2022bilrp`. The random cases use small ReLU
    networks, overlapping and disjoint masks, and fill values other than 0.
    """
    __tracebackhide__ = True
    generator = torch.Generator().manual_seed(909)
    cases = 20
    for case in range(cases):
        d = int(torch.randint(3, 7, (1,), generator=generator))
        b = int(torch.randint(1, 5, (1,), generator=generator))
        score = _random_model(generator, d)
        x = torch.rand(b, 1, d, d, generator=generator, dtype=torch.float64)
        mask_a = torch.rand(1, d, d, generator=generator) < 0.3
        mask_b = torch.rand(1, d, d, generator=generator) < 0.3
        mask_a[0, 0, 0], mask_b[0, -1, -1] = True, True
        fill = 0.0 if case < 10 else float(torch.rand(1, generator=generator)) + 0.5
        dtype = torch.float32 if case % 5 == 4 else torch.float64
        where = f"case {case} (batch {b}, {d}x{d} inputs, fill {fill:g}, {dtype_name(dtype)})"
        expected = interaction(score, x, mask_a, mask_b, fill=fill)
        x_in = x.to(dtype)
        score_in = score if dtype == torch.float64 else _as_float32(score)
        inputs = dict(x=x_in, mask_a=mask_a.clone(), mask_b=mask_b.clone())
        before = snapshot(score=score, **inputs)
        got = call(fn, score_in, inputs["x"], inputs["mask_a"], inputs["mask_b"], fill=fill,
                   where=where)
        unchanged(before, where, score=score, **inputs)
        if isinstance(got, torch.Tensor) and got.shape == expected.shape:
            g = got.detach().double()

            value = torch.tensor(fill, dtype=x.dtype)
            with torch.no_grad():
                f_x = score(x)
                f_a = score(torch.where(mask_a, value, x))
                f_b = score(torch.where(mask_b, value, x))
                f_ab_and = score(torch.where(mask_a & mask_b, value, x))
            tol = 1e-9 if dtype == torch.float64 else 1e-4
            if torch.allclose(g, -expected, atol=tol) and expected.abs().max() > 1e-6:
                fail(f"{where}: the sign is flipped.")
            if torch.allclose(g, f_x - f_a - f_b, atol=tol):
                fail(f"{where}: a term is missing: without it, a model that adds up the "
                     "evidence of A and of B would not get an interaction of 0.")
            if torch.allclose(g, f_x - f_a - f_b + f_ab_and, atol=tol):
                fail(f"{where}: in the last term you removed only the pixels that lie in both "
                     "regions (their intersection); with overlapping masks that is not removing "
                     "A and B.")
            if fill != 0.0:
                zero = interaction(score, x, mask_a, mask_b, fill=0.0)
                if torch.allclose(g, zero, atol=tol) and not torch.allclose(zero, expected):
                    fail(f"{where}: a removed region must take the value fill = {fill:g}, not 0.")
        compare(where, got, expected, atol=1e-9 if dtype == torch.float64 else 1e-4, rtol=0,
                hint="return one value per input, shape (B,).")
    print(f"check_interaction: {cases} random cases agree with the reference.")
