"""Checkers for chapter 9, "Limitations and outlook"."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..limits import interaction
from ._base import ExerciseError, compare

__all__ = ["check_interaction"]


def _random_model(generator: torch.Generator, d: int) -> nn.Module:
    """A small ReLU network on inputs of shape (1, d, d) returning one score per input."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(d * d, 6), nn.ReLU(), nn.Linear(6, 1),
                        nn.Flatten(0)).double()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=generator, dtype=torch.float64))
    return net.eval()


def check_interaction(fn: Callable[..., torch.Tensor]) -> None:
    """Grade ``fn(score, x, mask_a, mask_b, fill=0.0)``: the interaction of two regions.

    With :math:`x_{\\setminus S}` the input with region :math:`S` set to ``fill``, the answer
    is, per input,

    .. math:: I_{AB}(x) = f(x) - f(x_{\\setminus A}) - f(x_{\\setminus B})
              + f(x_{\\setminus A \\cup B})

    as a tensor of shape ``(B,)`` :cite:`eberle2022bilrp`. The random cases use small ReLU
    networks, overlapping and disjoint masks, and fill values other than 0.
    """
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
        where = f"case {case} (batch {b}, {d}x{d} inputs, fill {fill:g})"
        try:
            got = fn(score, x.clone(), mask_a.clone(), mask_b.clone(), fill=fill)
        except NotImplementedError:
            raise
        except Exception as error:  # report any failure in words
            raise ExerciseError(
                f"{where}: your function raised {type(error).__name__}: {error}"
            ) from error
        expected = interaction(score, x, mask_a, mask_b, fill=fill)
        if isinstance(got, torch.Tensor) and got.shape == expected.shape:
            g = got.detach().double()

            value = torch.tensor(fill, dtype=x.dtype)
            with torch.no_grad():
                f_x = score(x)
                f_a = score(torch.where(mask_a, value, x))
                f_b = score(torch.where(mask_b, value, x))
                f_ab_and = score(torch.where(mask_a & mask_b, value, x))
            if torch.allclose(g, -expected, atol=1e-9) and expected.abs().max() > 1e-6:
                raise ExerciseError(f"{where}: the sign is flipped; I_AB = f(x) - f(x without A)"
                                    " - f(x without B) + f(x without A and B).")
            if torch.allclose(g, f_x - f_a - f_b, atol=1e-9):
                raise ExerciseError(f"{where}: the term f(x without A and B) is missing; without "
                                    "it an additive model would not give 0.")
            if torch.allclose(g, f_x - f_a - f_b + f_ab_and, atol=1e-9):
                raise ExerciseError(f"{where}: remove the *union* of the two regions (mask_a | "
                                    "mask_b) in the last term, not their intersection.")
            if fill != 0.0:
                zero = interaction(score, x, mask_a, mask_b, fill=0.0)
                if torch.allclose(g, zero, atol=1e-9) and not torch.allclose(zero, expected):
                    raise ExerciseError(f"{where}: a removed region must take the value fill = "
                                        f"{fill:g}, not 0.")
        compare(where, got, expected, atol=1e-9, rtol=0,
                hint="return one value per input, shape (B,).")
    print(f"check_interaction: {cases} random cases agree with the reference.")
