"""Checker for chapter 7's exercise: LRP through one LSTM cell step (signal-take-all)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .. import lstm
from ._base import (
    check_tensor,
    close,
    fail,
    run_learner,
)

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


def _sign(z):
    return torch.where(z >= 0, 1.0, -1.0).to(z.dtype)


def _step(x, h_prev, c_prev, w_ih, w_hh, b, r_h, r_c, eps, *, signed=True, add_rh=True,
          gate_rows=2, bias=True, eps_g=True, c_denominator=True):
    """The reference step (defaults) and its usual mistakes, by switches."""
    H = h_prev.shape[1]
    z = x @ w_ih.T + h_prev @ w_hh.T + (b if bias else 0)
    zi, zf, zg, _ = z.chunk(4, dim=1)
    i, f, g = zi.sigmoid(), zf.sigmoid(), zg.tanh()
    c = f * c_prev + i * g
    R_c = r_c + r_h if add_rh else r_c
    stab = (lambda v: eps * _sign(v)) if signed else (lambda v: eps)
    den_c = c + stab(c) if c_denominator else f * c_prev + stab(c)
    s = R_c / den_c
    R_c_prev, R_g = f * c_prev * s, i * g * s
    rows = slice(gate_rows * H, (gate_rows + 1) * H)
    zr = z[:, rows]
    s_g = R_g / (zr + stab(zr) if eps_g else zr)
    return x * (s_g @ w_ih[rows]), h_prev * (s_g @ w_hh[rows]), R_c_prev


_MISTAKES = [
    ("the stabilizer is added with the same sign everywhere; it must push each denominator "
     "away from zero, whatever its sign", dict(signed=False)),
    ("the relevance of h is not added to the cell's relevance: with signal-take-all the output "
     "gate takes nothing, so all of it reaches c", dict(add_rh=False)),
    ("the relevance reaches x and h_prev through the rows of the forget gate; in torch's "
     "order (i, f, g, o) the signal g is the third block", dict(gate_rows=1)),
    ("the relevance reaches x and h_prev through the rows of the input gate; in torch's "
     "order (i, f, g, o) the signal g is the third block", dict(gate_rows=0)),
    ("the relevance reaches x and h_prev through the rows of the output gate; in torch's "
     "order (i, f, g, o) the signal g is the third block", dict(gate_rows=3)),
    ("the bias is left out of g's pre-activation, which is the denominator of the last step",
     dict(bias=False)),
    ("the stabilizer is missing from the denominator of g's pre-activation", dict(eps_g=False)),
]


def check_lstm_cell_lrp(fn: Callable, n_cases: int = 6) -> None:
    """Grade ``fn(x, h_prev, c_prev, w_ih, w_hh, b, r_h, r_c, eps)``.

    The learner's function must return ``(R_x, R_h_prev, R_c_prev)`` for one LSTM step with
    torch's gate order (i, f, g, o), signal-take-all at the products and the ε rule
    (stabilizer ``ε·sign(z)``, bias share absorbed) on the cell update and on g's
    pre-activation, as in :func:`lrp_teach.lstm.cell_step_relevance` :cite:`arras2017wassa`.
    ε varies over the cases (1e-3, 0.1, 1), so a function that ignores it fails; the
    package's ``cell_step_relevance`` may not be used. Prints a success line or raises
    :class:`ExerciseError` naming the mistake.
    """
    __tracebackhide__ = True
    package = {"the package's lstm.cell_step_relevance": lstm.cell_step_relevance}
    if hasattr(lstm, "_cell_backward"):
        package["the package's LSTM backward step"] = lstm._cell_backward
    for seed in range(n_cases):
        eps = [1e-3, 0.1, 1.0][seed % 3]
        case = _case(seed)
        where = f"case {seed} (eps = {eps:g})"
        expected = _step(**case, eps=eps)
        variants = [(text, _step(**case, eps=eps, **kw)) for text, kw in _MISTAKES]
        if eps != 1e-3:
            variants.append(("your function ignores its `eps` argument: it gives the result of "
                             f"eps = 1e-3, but this case asks for eps = {eps:g}",
                             _step(**case, eps=1e-3)))
        inputs = {k: v.clone() for k, v in case.items()}
        got = run_learner(fn, where, inputs, package, eps=eps)
        if not isinstance(got, tuple | list) or len(got) != 3:
            fail(f"{where}: return a tuple (R_x, R_h_prev, R_c_prev).")
        names = ["R_x", "R_h_prev", "R_c_prev"]
        got = [check_tensor(f"{where}, {n}", t, e.shape).double()
               for n, t, e in zip(names, got, expected, strict=True)]
        rel = 1e-7
        if all(close(gt, e, rel) for gt, e in zip(got, expected, strict=True)):
            continue
        for text, variant in variants:
            if all(close(gt, v, rel) for gt, v in zip(got, variant, strict=True)):
                fail(f"{where}: your result matches a common mistake: {text}.")
        wrong = [n for n, gt, e in zip(names, got, expected, strict=True) if not close(gt, e, rel)]
        total_in = float((case["r_h"] + case["r_c"]).sum())
        total_out = float(sum(t.sum() for t in got))
        if wrong == ["R_x", "R_h_prev"]:
            fail(f"{where}: R_c_prev is right, but R_x and R_h_prev are not: the split of the "
                 "cell's relevance is fine; look at how g's share is passed to its inputs.")
        fail(f"{where}: {', '.join(wrong)} differ from the reference. Relevance in: "
             f"{total_in:.4f}; your three outputs sum to {total_out:.4f} (some relevance is "
             "absorbed by the biases and stabilizers, but not much). Check the steps in order: "
             "the cell's relevance, its split between the two summands, then g's inputs.")
    print(f"Correct: your LSTM cell step matches the reference on {n_cases} random cases "
          "(eps = 1e-3, 0.1 and 1).")
