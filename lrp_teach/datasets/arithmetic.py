"""Toy arithmetic sequences with known relevant positions, after Arras et al. (2019).

Every time step carries three numbers: a random value ``n_t`` and two marker bits. The
first marker flags the first operand (position ``p``), the second marker flags the second
operand (position ``q > p``). The target is ``n_p + n_q`` (task ``"add"``) or
``n_p - n_q`` (task ``"sub"``). Only the two marked steps matter, so an explanation can be
checked against ground truth: it should put its relevance on the marked steps, and the
relevance of each marked step should follow that operand's signed contribution
(``+n_p`` and ``+n_q`` for addition, ``+n_p`` and ``-n_q`` for subtraction)
:cite:`arras2019evaluating`.

The value range, length and model size used here are the book's choices (values uniform
in ``[0, 1]``, ``T = 20``); the paper's own settings may differ.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["ArithmeticData", "ground_truth_scores", "make_arithmetic"]

OPERATIONS = ("add", "sub")


@dataclass
class ArithmeticData:
    """A batch of toy arithmetic sequences.

    Attributes
    ----------
    x : torch.Tensor
        Inputs, float32 of shape ``(N, T, 3)``: value, first marker, second marker.
    y : torch.Tensor
        Targets, float32 of shape ``(N,)``.
    lengths : torch.Tensor
        Sequence lengths, int64 of shape ``(N,)``; steps at or after the length are zero.
    positions : torch.Tensor
        The two marked positions, int64 of shape ``(N, 2)``, first operand first.
    values : torch.Tensor
        The two operands ``(n_p, n_q)``, float32 of shape ``(N, 2)``.
    signs : tuple of float
        The signs of the operands in the target: ``(1, 1)`` for addition, ``(1, -1)``
        for subtraction.
    op : str
        ``"add"`` or ``"sub"``.
    """

    x: torch.Tensor
    y: torch.Tensor
    lengths: torch.Tensor
    positions: torch.Tensor
    values: torch.Tensor
    signs: tuple[float, float]
    op: str

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def contributions(self) -> torch.Tensor:
        """The signed contributions ``(s_1 n_p, s_2 n_q)`` of the operands, shape ``(N, 2)``."""
        return self.values * torch.tensor(self.signs, dtype=self.values.dtype)


def make_arithmetic(
    n: int,
    op: str = "add",
    length: int = 20,
    min_length: int | None = None,
    seed: int = 0,
) -> ArithmeticData:
    """Generate ``n`` toy arithmetic sequences (deterministic for a given seed).

    The target of a sequence with values ``n_t`` and marked positions ``p < q`` is

    .. math:: y = n_p + n_q \\quad (\\text{add}) \\qquad y = n_p - n_q \\quad (\\text{sub}),

    following the toy task of :cite:`arras2019evaluating`.

    Parameters
    ----------
    n : int
        Number of sequences (at least 1).
    op : {"add", "sub"}
        The operation.
    length : int
        Padded length ``T`` (at least 2).
    min_length : int, optional
        When given, each sequence's length is drawn uniformly from ``[min_length, length]``
        and the steps after it are zero padding. Default: every sequence has length ``T``.
    seed : int
        Seed of the generator; the same arguments always give the same data.

    Returns
    -------
    ArithmeticData
    """
    if op not in OPERATIONS:
        raise ValueError(f"op must be one of {OPERATIONS}, got {op!r}")
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if length < 2:
        raise ValueError(f"length must be at least 2 (two operands), got {length}")
    if min_length is None:
        min_length = length
    if not 2 <= min_length <= length:
        raise ValueError(f"min_length must lie in [2, length={length}], got {min_length}")
    rng = np.random.default_rng(seed)
    lengths = rng.integers(min_length, length + 1, size=n)
    values = rng.uniform(0.0, 1.0, size=(n, length))
    x = np.zeros((n, length, 3))
    positions = np.zeros((n, 2), dtype=np.int64)
    for k in range(n):
        p, q = np.sort(rng.choice(lengths[k], size=2, replace=False))
        positions[k] = (p, q)
        x[k, : lengths[k], 0] = values[k, : lengths[k]]
        x[k, p, 1] = 1.0
        x[k, q, 2] = 1.0
    rows = np.arange(n)
    operands = np.stack([values[rows, positions[:, 0]], values[rows, positions[:, 1]]], axis=1)
    signs = (1.0, 1.0) if op == "add" else (1.0, -1.0)
    y = operands[:, 0] * signs[0] + operands[:, 1] * signs[1]
    return ArithmeticData(
        x=torch.tensor(x, dtype=torch.float32),
        y=torch.tensor(y, dtype=torch.float32),
        lengths=torch.tensor(lengths, dtype=torch.int64),
        positions=torch.tensor(positions),
        values=torch.tensor(operands, dtype=torch.float32),
        signs=signs,
        op=op,
    )


def ground_truth_scores(relevance: torch.Tensor, data: ArithmeticData) -> dict[str, float]:
    """Compare per-step relevance with the toy task's ground truth.

    Parameters
    ----------
    relevance : torch.Tensor
        ``(N, T)`` relevance per step (for instance of the value channel only).
    data : ArithmeticData
        The sequences that were explained.

    Returns
    -------
    dict
        ``off_marked``: mean share of absolute relevance on unmarked steps,
        ``Σ_{t∉\\{p,q\\}} |R_t| / Σ_t |R_t|`` (0 is ideal);
        ``corr_first`` / ``corr_second``: Pearson correlation over sequences between the
        relevance of the marked step and the operand's signed contribution ``s_k n_k``
        (1 is ideal) :cite:`arras2019evaluating`.
    """
    if relevance.shape != data.x.shape[:2]:
        raise ValueError(
            f"relevance must have shape {tuple(data.x.shape[:2])} (one value per step), "
            f"got {tuple(relevance.shape)}"
        )
    r = relevance.detach().double().cpu()
    rows = torch.arange(len(data))
    r_first = r[rows, data.positions[:, 0]]
    r_second = r[rows, data.positions[:, 1]]
    total = r.abs().sum(1).clamp_min(1e-300)
    off = 1.0 - (r_first.abs() + r_second.abs()) / total
    contrib = data.contributions.double()

    def corr(a: torch.Tensor, b: torch.Tensor) -> float:
        if a.std() == 0 or b.std() == 0:
            return 0.0
        return float(torch.corrcoef(torch.stack([a, b]))[0, 1])

    return {
        "off_marked": float(off.mean()),
        "corr_first": corr(r_first, contrib[:, 0]),
        "corr_second": corr(r_second, contrib[:, 1]),
    }
