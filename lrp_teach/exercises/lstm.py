"""Checker for chapter 7's exercise: LRP through one LSTM cell step (signal-take-all)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..lstm import cell_step_relevance
from ._base import ExerciseError, compare

__all__ = ["check_lstm_cell_lrp"]


def _case(seed: int, batch: int = 3, emb: int = 4, hidden: int = 5):
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=1.0):
        return torch.randn(*shape, generator=gen, dtype=torch.float64) * scale

    return {
        "x": rand(batch, emb),
        "h_prev": rand(batch, hidden, scale=0.5).tanh(),
        "c_prev": rand(batch, hidden),
        "w_ih": rand(4 * hidden, emb),
        "w_hh": rand(4 * hidden, hidden),
        "b": rand(4 * hidden, scale=0.5),
        "r_h": rand(batch, hidden),
        "r_c": rand(batch, hidden),
    }


def check_lstm_cell_lrp(fn: Callable, n_cases: int = 5, eps: float = 1e-3) -> None:
    """Grade ``fn(x, h_prev, c_prev, w_ih, w_hh, b, r_h, r_c, eps)``.

    The learner's function must return ``(R_x, R_h_prev, R_c_prev)`` for one LSTM step with
    torch's gate order (i, f, g, o), signal-take-all at the products and the ε rule
    (stabilizer ``ε·sign(z)``, bias share absorbed) on the cell update and on g's
    pre-activation, as in :func:`lrp_teach.lstm.cell_step_relevance` :cite:`arras2017wassa`.
    Prints a success line or raises :class:`ExerciseError` saying which output is wrong.
    """
    for seed in range(n_cases):
        case = _case(seed)
        expected = cell_step_relevance(**case, epsilon=eps)
        try:
            got = fn(**{k: v.clone() for k, v in case.items()}, eps=eps)
        except Exception as err:  # report the learner's error with the case that caused it
            raise ExerciseError(f"your function raised {type(err).__name__}: {err}") from err
        if not isinstance(got, tuple | list) or len(got) != 3:
            raise ExerciseError("return a tuple (R_x, R_h_prev, R_c_prev)")
        r_x, r_h, r_c = got
        compare(
            f"R_c_prev (relevance of the previous cell state), case {seed}",
            r_c, expected[2], atol=1e-8, rtol=1e-6,
            hint="R_c gets r_c plus all of r_h (h = o * tanh(c)); then c = f*c_prev + i*g is "
            "split by the epsilon rule: R_c_prev = f*c_prev / (c + eps*sign(c)) * R_c.",
        )
        compare(
            f"R_h_prev (relevance of the previous hidden state), case {seed}",
            r_h, expected[1], atol=1e-8, rtol=1e-6,
            hint="only g's rows (the third quarter, torch order i, f, g, o) carry relevance; "
            "divide by g's full pre-activation z = W_ih x + W_hh h_prev + b plus eps*sign(z).",
        )
        compare(
            f"R_x (relevance of the input), case {seed}",
            r_x, expected[0], atol=1e-8, rtol=1e-6,
            hint="R_x = x * (W_ih[g rows]^T (R_g / (z_g + eps*sign(z_g)))).",
        )
    print(f"Correct: your LSTM cell step matches the reference on {n_cases} random cases.")
