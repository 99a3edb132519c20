"""Checkers for chapter 5, section "Residual networks"."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ._base import ExerciseError

__all__ = ["check_residual_split"]

Split = Callable[..., tuple[torch.Tensor, torch.Tensor]]


def _stabilized(z: torch.Tensor, epsilon: float) -> torch.Tensor:
    """Denominators with the stabilizer of :func:`lrp_teach.rules.stabilize`."""
    if epsilon == 0:
        return torch.where(z == 0, torch.full_like(z, math.inf), z)
    return z + epsilon * (2 * (z >= 0).to(z.dtype) - 1)  # sign(0) = +1


def _reference(a: torch.Tensor, b: torch.Tensor, R: torch.Tensor, epsilon: float
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """The split of the package: stabilizer with sign(0) = +1, zero denominators send nothing."""
    s = R / _stabilized(a + b, epsilon)
    return a * s, b * s


def _call(fn: Split, where: str, a: torch.Tensor, b: torch.Tensor, R: torch.Tensor,
          epsilon: float) -> object:
    """Run the learner's function; a stub gets a short message and no checker frames."""
    __tracebackhide__ = True  # IPython and pytest hide this frame
    try:
        return fn(a, b, R, epsilon=epsilon)
    except NotImplementedError as error:
        name = getattr(fn, "__name__", "your function")
        detail = f" {error}" if str(error) else ""
        error.args = (f"{name} is not implemented yet.{detail}",)
        raise error  # the traceback ends in the learner's own cell
    except Exception as error:  # any other failure, in words
        raise ExerciseError(
            f"{where}: your function raised {type(error).__name__}: {error}"
        ) from None


SHAPES = [(7,), (3, 5), (2, 3, 4, 5), (1, 1), (4, 1, 3)]
EPSILONS = [0.0, 0.01, 0.25, 1.0]


def _cases(generator: torch.Generator):
    """(description, a, b, R, epsilon) with odd shapes, ties, zero sums, both float types."""
    case = 0
    for dtype in (torch.float64, torch.float32):
        for shape in SHAPES:
            for epsilon in EPSILONS:
                a = torch.randn(shape, generator=generator, dtype=torch.float64)
                b = torch.randn(shape, generator=generator, dtype=torch.float64)
                R = torch.randn(shape, generator=generator, dtype=torch.float64)
                # keep the sums away from 0, so that float32 stays well conditioned ...
                a = a + 0.5 * torch.where(a >= 0, 1.0, -1.0) * (a.abs() < 0.1)
                z = a + b
                b = b + 0.5 * torch.where(z >= 0, 1.0, -1.0) * (z.abs() < 0.2)
                flat_a, flat_b = a.view(-1), b.view(-1)
                if flat_a.numel() >= 3:  # ... except for a tie, a zero sum and two zeros
                    flat_b[0] = flat_a[0]
                    flat_b[1] = -flat_a[1]
                    flat_a[2] = flat_b[2] = 0.0
                case += 1
                yield (f"case {case} (shape {shape}, {str(dtype).replace('torch.', '')}, "
                       f"epsilon={epsilon:g})", a.to(dtype), b.to(dtype), R.to(dtype), epsilon)


def _close(got: torch.Tensor, expected: torch.Tensor) -> bool:
    if got.numel() == 0:
        return True
    tol = 1e-10 if expected.dtype == torch.float64 else 1e-5
    scale = max(1.0, expected.abs().max().item())
    return torch.allclose(got.to(expected.dtype), expected, rtol=tol, atol=tol * scale)


def _diagnose(where: str, got_a: torch.Tensor, got_b: torch.Tensor, a: torch.Tensor,
              b: torch.Tensor, R: torch.Tensor, epsilon: float) -> None:
    """Name the mistake behind a wrong (R_a, R_b); called only when the answer is wrong."""
    exp_a, exp_b = _reference(a, b, R, epsilon)
    z = a + b
    zero = z == 0
    off = ~zero

    def same(want_a, want_b, mask=None):
        if mask is None:
            return _close(got_a, want_a) and _close(got_b, want_b)
        return _close(got_a[mask], want_a[mask]) and _close(got_b[mask], want_b[mask])

    if same(R / 2, R / 2):
        raise ExerciseError(
            f"{where}: you split R into equal halves. The summands contribute in proportion to "
            "their values, and Gradient x Input at a sum gives exactly that split."
        )
    if same(exp_b, exp_a):
        raise ExerciseError(
            f"{where}: your two outputs are swapped: return (R_a, R_b), the relevance of a first."
        )
    finite = torch.isfinite(got_a) & torch.isfinite(got_b)
    if not finite[off].all():
        raise ExerciseError(f"{where}: your result contains NaN or inf where a + b is not 0.")
    if epsilon > 0:
        plain_a, plain_b = _reference(a, b, R, 0.0)
        if same(plain_a, plain_b, off):
            raise ExerciseError(
                f"{where}: your result does not depend on epsilon = {epsilon:g}; the stabilizer "
                "is missing from the denominator."
            )
        unsigned = z + epsilon
        if same(a * R / unsigned, b * R / unsigned, off):
            raise ExerciseError(
                f"{where}: you add epsilon to every denominator regardless of its sign. Where "
                "a + b < 0 that moves the denominator towards 0 instead of away from it; the "
                "stabilizer must take the sign of the sum."
            )
    if not finite.all():  # only where a + b = 0
        if epsilon == 0:
            raise ExerciseError(
                f"{where}: your result is NaN or inf exactly where a + b = 0. With epsilon = 0 "
                "such a sum has no well-defined split; the package's convention is that a zero "
                "denominator sends no relevance (both parts 0 there)."
            )
        raise ExerciseError(
            f"{where}: your result is NaN or inf exactly where a + b = 0, although epsilon > 0: "
            "your stabilizer vanishes at a zero sum. The sign of 0 is handled wrongly; the "
            "package counts 0 as positive (torch.sign gives 0 there)."
        )
    if epsilon > 0 and zero.any() and same(exp_a, exp_b, off):
        raise ExerciseError(
            f"{where}: your split is right except where a + b is exactly 0: the sign of 0 is "
            "handled wrongly; the package counts 0 as positive (torch.sign gives 0 there)."
        )
    if epsilon == 0:
        total = got_a + got_b
        if not _close(total[off], R[off]):
            err = (total[off] - R[off]).abs().max().item()
            raise ExerciseError(
                f"{where}: relevance is not conserved: with epsilon = 0, R_a + R_b must equal "
                f"R wherever a + b is not 0, but differs by up to {err:.3g}."
            )
        if zero.any() and not same(exp_a, exp_b, zero):
            raise ExerciseError(
                f"{where}: where a + b = 0 and epsilon = 0, both parts must be 0 (a zero "
                "denominator sends no relevance)."
            )
    err = max((got_a.to(exp_a.dtype) - exp_a).abs().max().item(),
              (got_b.to(exp_b.dtype) - exp_b).abs().max().item())
    raise ExerciseError(f"{where}: largest difference from the reference is {err:.3g}.")


def check_residual_split(fn: Split) -> None:
    """Grade ``fn(a, b, R, epsilon=0.0) -> (R_a, R_b)``: relevance at a sum ``z = a + b``.

    The reference is the proportional split of Gradient x Input, element-wise,

    .. math:: R_a = \\frac{a}{z + \\epsilon\\,\\mathrm{sign}(z)}\\, R, \\qquad
              R_b = \\frac{b}{z + \\epsilon\\,\\mathrm{sign}(z)}\\, R,

    with :math:`\\mathrm{sign}(0) = +1`, and with ``epsilon = 0`` an exact zero sum sends no
    relevance (both parts 0), the convention of :func:`lrp_teach.rules.stabilize`. The cases
    cover odd shapes, ties (``a == b``), zero sums (``a == -b`` and ``a == b == 0``), float32
    and float64 and several ``epsilon``. The inputs must not be modified, and the outputs must
    have the inputs' shape and dtype.
    """
    __tracebackhide__ = True
    generator = torch.Generator().manual_seed(5151)
    n = 0
    for where, a, b, R, epsilon in _cases(generator):
        n += 1
        keep = (a.clone(), b.clone(), R.clone())
        exp_a, exp_b = _reference(*keep, epsilon)  # before the learner's code runs
        got = _call(fn, where, a, b, R, epsilon)
        for name, before, after in zip("abR", keep, (a, b, R), strict=True):
            if not torch.equal(before, after):
                raise ExerciseError(
                    f"{where}: your function changed its input {name} in place. Compute new "
                    "tensors (avoid +=, *=, and methods ending in _ on the inputs)."
                )
        if not isinstance(got, tuple | list) or len(got) != 2:
            kind = type(got).__name__
            size = f" of length {len(got)}" if isinstance(got, tuple | list) else ""
            raise ExerciseError(f"{where}: return two tensors (R_a, R_b); got a {kind}{size}.")
        got_a, got_b = got
        for name, value in (("R_a", got_a), ("R_b", got_b)):
            if not isinstance(value, torch.Tensor):
                raise ExerciseError(
                    f"{where}: {name} must be a torch.Tensor, got {type(value).__name__}."
                )
            if tuple(value.shape) != tuple(a.shape):
                raise ExerciseError(
                    f"{where}: {name} has shape {tuple(value.shape)}, but a, b and R have shape "
                    f"{tuple(a.shape)}; the split is element-wise, so keep that shape."
                )
            if value.dtype != a.dtype:
                raise ExerciseError(
                    f"{where}: {name} is {value.dtype}, but the inputs are {a.dtype}; keep the "
                    "inputs' dtype."
                )
        got_a, got_b = got_a.detach(), got_b.detach()
        if not (_close(got_a, exp_a) and _close(got_b, exp_b)):
            _diagnose(where, got_a, got_b, *keep, epsilon)
    print(f"check_residual_split: {n} cases (odd shapes, ties, zero sums, float32 and float64, "
          "epsilon from 0 to 1) agree with the reference; the inputs are left unchanged.")
