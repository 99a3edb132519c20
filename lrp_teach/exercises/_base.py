"""Shared machinery of the exercise checkers."""

from __future__ import annotations

import torch

__all__ = ["ExerciseError", "compare"]


class ExerciseError(AssertionError):
    """The learner's answer disagrees with the reference; the message says where and how."""


def compare(
    what: str,
    got: object,
    expected: torch.Tensor,
    *,
    atol: float = 1e-6,
    rtol: float = 1e-5,
    hint: str = "",
) -> None:
    """Raise :class:`ExerciseError` unless ``got`` matches ``expected``.

    Parameters
    ----------
    what : str
        What is being compared, in words ("relevance of layer 2 for case 3").
    got : object
        The learner's value; must be a tensor of the expected shape.
    expected : torch.Tensor
        The reference value.
    atol, rtol : float
        Tolerances of :func:`torch.allclose`.
    hint : str
        A sentence appended to the message on failure.
    """
    suffix = f" Hint: {hint}" if hint else ""
    if not isinstance(got, torch.Tensor):
        raise ExerciseError(f"{what}: expected a torch.Tensor, got {type(got).__name__}.{suffix}")
    if tuple(got.shape) != tuple(expected.shape):
        raise ExerciseError(
            f"{what}: expected shape {tuple(expected.shape)}, got {tuple(got.shape)}.{suffix}"
        )
    got = got.detach().to(expected.dtype)
    if not torch.isfinite(got).all():
        raise ExerciseError(f"{what}: the result contains NaN or inf.{suffix}")
    if not torch.allclose(got, expected, atol=atol, rtol=rtol):
        err = (got - expected).abs().max().item()
        raise ExerciseError(f"{what}: largest difference from the reference is {err:.3g}.{suffix}")
