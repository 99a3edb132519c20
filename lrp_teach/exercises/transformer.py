"""Checker for the transformer chapter's exercise: the uniform rule for the product A·v."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..engine import products
from ._base import check_tensor, close, fail, run_learner

__all__ = ["check_uniform_av"]


def _case(seed: int, batch: int = 2, length: int = 5, dim: int = 3):
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    return {"A": (2 * rand(batch, length, length)).softmax(-1), "v": rand(batch, length, dim),
            "R": rand(batch, length, dim)}


def _sign(z):
    return torch.where(z >= 0, 1.0, -1.0).to(z.dtype)


def _rule(A, v, R, eps, *, share_a=0.5, share_v=0.5, signed=True, normalise=True,
          transpose=True):
    """The reference (defaults) and its usual mistakes, by switches."""
    z = A @ v
    s = R / (z + (eps * _sign(z) if signed else eps)) if normalise else R
    r_a = share_a * A * (s @ v.transpose(-1, -2))
    r_v = share_v * v * ((A.transpose(-1, -2) if transpose else A) @ s)
    return r_a, r_v


_MISTAKES = [
    ("each factor receives the whole relevance of the product, so together A and v get "
     "twice what arrived", dict(share_a=1.0, share_v=1.0)),
    ("all the relevance goes to the values and none to the attention weights: that is "
     "CP-LRP, which holds A constant, not the uniform rule", dict(share_a=0.0, share_v=1.0)),
    ("all the relevance goes to the attention weights and none to the values",
     dict(share_a=1.0, share_v=0.0)),
    ("the stabilizer is added with the same sign everywhere; it must push each denominator "
     "away from zero, whatever its sign", dict(signed=False)),
    ("the incoming relevance is not divided by the product's output (stabilized): what you "
     "return is Gradient x Input of the product, not a redistribution of R",
     dict(normalise=False)),
    ("the values' relevance is collected over the wrong index of A: value j is read by the "
     "queries i whose row of A weights it, so sum over the rows of A, not its columns",
     dict(transpose=False)),
]


def check_uniform_av(fn: Callable, n_cases: int = 6) -> None:
    """Grade ``fn(A, v, R, eps) -> (R_A, R_v)``, the uniform rule for ``z = A @ v``.

    ``A`` is ``(B, T, T)`` (rows of attention weights), ``v`` is ``(B, T, d)`` and ``R`` the
    relevance of ``z``, ``(B, T, d)``.  The function must return the relevance of every
    entry of ``A`` and of ``v`` by the uniform rule of AttnLRP :cite:`achtibat2024attnlrp`
    with the ε stabilizer ``ε·sign(z)`` on the sum over the contracted index.  ε varies over
    the cases (1e-2, 0.1, 1), so a function that ignores it fails; the package's
    ``matmul_uniform`` may not be used.  Prints a success line or raises
    :class:`ExerciseError` naming the mistake.
    """
    __tracebackhide__ = True
    package = {"the package's matmul_uniform": products.matmul_uniform,
               "the package's uniform matmul rule": products._UniformMatmul}
    for seed in range(n_cases):
        eps = [1e-2, 0.1, 1.0][seed % 3]
        case = _case(seed)
        where = f"case {seed} (eps = {eps:g})"
        expected = _rule(**case, eps=eps)
        variants = [(text, _rule(**case, eps=eps, **kw)) for text, kw in _MISTAKES]
        other = 0.1 if eps == 1e-2 else 1e-2
        variants.append(("your function ignores its `eps` argument: it gives the result of "
                         f"another eps, but this case asks for eps = {eps:g}",
                         _rule(**case, eps=other)))
        variants.append(("your function ignores its `eps` argument: it gives the result of "
                         f"eps = 0, but this case asks for eps = {eps:g}", _rule(**case, eps=0.0)))
        inputs = {k: v.clone() for k, v in case.items()}
        got = run_learner(fn, where, inputs, package, eps=eps)
        if not isinstance(got, tuple | list) or len(got) != 2:
            fail(f"{where}: return a tuple (R_A, R_v).")
        got = [check_tensor(f"{where}, {n}", t, e.shape).double()
               for n, t, e in zip(["R_A", "R_v"], got, expected, strict=True)]
        rel = 1e-7
        if all(close(g, e, rel) for g, e in zip(got, expected, strict=True)):
            continue
        for text, variant in variants:
            if all(close(g, w, rel) for g, w in zip(got, variant, strict=True)):
                fail(f"{where}: your result matches a common mistake: {text}.")
        ok = [close(g, e, rel) for g, e in zip(got, expected, strict=True)]
        r_in = float(case["R"].sum())
        sums = [float(g.sum()) for g in got]
        if ok[0] != ok[1]:
            right, wrong = ("R_A", "R_v") if ok[0] else ("R_v", "R_A")
            fail(f"{where}: {right} is right but {wrong} is not. Relevance in: {r_in:.4f}; "
                 f"your R_A sums to {sums[0]:.4f} and R_v to {sums[1]:.4f}.")
        fail(f"{where}: R_A and R_v both differ from the reference. Relevance in: {r_in:.4f}; "
             f"your R_A sums to {sums[0]:.4f} and R_v to {sums[1]:.4f} (with a small eps the "
             "two shares should be about equal and add up to nearly all of it).")
    print(f"Correct: your uniform rule for A·v matches the reference on {n_cases} random cases "
          "(eps = 1e-2, 0.1 and 1).")
