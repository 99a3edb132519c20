"""Chapters 7 and 8: the checkers accept the solution and name each typical mistake."""

from __future__ import annotations

import pytest
import torch

import lrp_teach as lt
from lrp_teach.exercises import ExerciseError
from lrp_teach.exercises.lstm import _case, _step


def _message(check, fn):
    with pytest.raises(ExerciseError) as info:
        check(fn)
    return str(info.value)


def cell(x, h_prev, c_prev, w_ih, w_hh, b, r_h, r_c, eps, signed=True, add_rh=True, rows=2):
    def stab(z):
        return eps * torch.where(z >= 0, 1.0, -1.0).to(z.dtype) if signed else eps

    z = x @ w_ih.T + h_prev @ w_hh.T + b
    zi, zf, zg, _ = z.chunk(4, dim=1)
    i, f, g = zi.sigmoid(), zf.sigmoid(), zg.tanh()
    c = f * c_prev + i * g
    s = (r_c + r_h if add_rh else r_c) / (c + stab(c))
    H = h_prev.shape[1]
    zr = z[:, rows * H:(rows + 1) * H]
    s_g = i * g * s / (zr + stab(zr))
    sl = slice(rows * H, (rows + 1) * H)
    return x * (s_g @ w_ih[sl]), h_prev * (s_g @ w_hh[sl]), f * c_prev * s


def test_reference_step_is_the_package_rule():
    case = _case(3)
    for ours, theirs in zip(_step(**case, eps=0.1),
                            lt.lstm.cell_step_relevance(*case.values(), 0.1), strict=True):
        assert torch.allclose(ours, theirs, atol=1e-12)


def test_lstm_checker_accepts_the_solution(capsys):
    lt.exercises.check_lstm_cell_lrp(cell)
    assert "matches the reference on 6" in capsys.readouterr().out


@pytest.mark.parametrize(("wrong", "expected"), [
    (lambda eps, **a: cell(**a, eps=eps, signed=False), "same sign everywhere"),
    (lambda eps, **a: cell(**a, eps=eps, add_rh=False), "relevance of h is not added"),
    (lambda eps, **a: cell(**a, eps=eps, rows=1), "rows of the forget gate"),
    (lambda eps, **a: cell(**a, eps=1e-3), "ignores its `eps`"),
    (lambda eps, **a: lt.lstm.cell_step_relevance(*a.values(), eps), "the package's"),
])
def test_lstm_checker_names_the_mistake(wrong, expected):
    message = _message(lt.exercises.check_lstm_cell_lrp, wrong)
    assert expected in message, message
    for fragment in ["f*c_prev /", "eps*sign", "R_c_prev =", "W_ih[g rows]"]:
        assert fragment not in message


def concat(o, q, weight, bias, R_h, eps, with_bias=True, swap=False):
    d = o.shape[-1]
    w1, w2, w3 = weight[:, :d], weight[:, d:2 * d], weight[:, 2 * d:]
    z = (o @ w1.T)[:, :, None] + (o @ w2.T)[:, None] + (q @ w3.T + (bias if with_bias else 0)
                                                         )[:, None, None]
    s = R_h / (z + eps * torch.where(z >= 0, 1.0, -1.0))
    first, second = (s.sum(2), s.sum(1)) if not swap else (s.sum(1), s.sum(2))
    return o * (first @ w1) + o * (second @ w2), q * (s.sum((1, 2)) @ w3)


def test_concat_checker_accepts_the_solution(capsys):
    lt.exercises.check_pair_concat_relevance(concat)
    assert "matches the reference on 5" in capsys.readouterr().out


def raises_inside(o, q, weight, bias, R_h, eps):
    return o @ weight  # a shape error of the learner's own


@pytest.mark.parametrize(("wrong", "expected"), [
    (lambda *a: concat(*a, with_bias=False), "bias is left out of the denominator"),
    (lambda *a: concat(*a, swap=True), "bookkeeping is swapped"),
    (lambda o, q, w, b, R, eps: concat(o, q, w, b, R, 0.01), "ignores its `eps`"),
    (raises_inside, "raised RuntimeError"),
    (lambda *a: concat(*a)[0], "return a tuple"),
])
def test_concat_checker_names_the_mistake(wrong, expected):
    message = _message(lt.exercises.check_pair_concat_relevance, wrong)
    assert expected in message, message
    assert "(i, *)" not in message and "N^2" not in message


def coordinate_share(R_o, R_q):
    A = R_o.abs()
    return A[..., -2:].sum((1, 2)) / (A.sum((1, 2)) + R_q.abs().sum(1))


def test_coordinate_share_checker(capsys):
    lt.exercises.check_coordinate_share(coordinate_share)
    assert "agree" in capsys.readouterr().out
    assert "signs cancel" in _message(
        lt.exercises.check_coordinate_share,
        lambda R_o, R_q: R_o[..., -2:].sum((1, 2)) / (R_o.sum((1, 2)) + R_q.sum(1)))
    assert "question's relevance is left out" in _message(
        lt.exercises.check_coordinate_share,
        lambda R_o, R_q: R_o.abs()[..., -2:].sum((1, 2)) / R_o.abs().sum((1, 2)))
    assert "first two channels" in _message(
        lt.exercises.check_coordinate_share,
        lambda R_o, R_q: R_o.abs()[..., :2].sum((1, 2)) / (R_o.abs().sum((1, 2))
                                                          + R_q.abs().sum(1)))
    assert "one share per object" in _message(
        lt.exercises.check_coordinate_share,
        lambda R_o, R_q: R_o.abs()[..., -2:].sum(2) / R_o.abs().sum(2))
