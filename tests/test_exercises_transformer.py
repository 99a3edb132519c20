"""The checker of the transformer chapter's exercise (uniform rule for A·v)."""

from __future__ import annotations

import pytest
import torch

import lrp_teach as lt
from lrp_teach.exercises import ExerciseError, check_uniform_av
from lrp_teach.products import matmul_uniform


def _sign(z):
    return torch.where(z >= 0, 1.0, -1.0).to(z.dtype)


def correct(A, v, R, eps):
    z = A @ v
    s = R / (2 * (z + eps * _sign(z)))
    return A * (s @ v.transpose(-1, -2)), v * (A.transpose(-1, -2) @ s)


def test_a_correct_answer_passes(capsys):
    check_uniform_av(correct)
    assert "Correct" in capsys.readouterr().out


def test_the_reference_agrees_with_the_engine():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(2, 4, 4, generator=g, dtype=torch.float64).softmax(-1).requires_grad_()
    v = torch.randn(2, 4, 3, generator=g, dtype=torch.float64).requires_grad_()
    R = torch.randn(2, 4, 3, generator=g, dtype=torch.float64)
    eps = 0.1
    z = matmul_uniform(A, v, eps)
    ga, gv = torch.autograd.grad(z, (A, v), R / z.detach())
    r_a, r_v = correct(A.detach(), v.detach(), R, eps)
    torch.testing.assert_close(A.detach() * ga, r_a, rtol=0, atol=1e-12)
    torch.testing.assert_close(v.detach() * gv, r_v, rtol=0, atol=1e-12)


def _full(A, v, R, eps):
    r_a, r_v = correct(A, v, R, eps)
    return 2 * r_a, 2 * r_v


def _cp(A, v, R, eps):
    r_a, r_v = correct(A, v, R, eps)
    return torch.zeros_like(A), 2 * r_v


def _unsigned(A, v, R, eps):
    z = A @ v
    s = R / (2 * (z + eps))
    return A * (s @ v.transpose(-1, -2)), v * (A.transpose(-1, -2) @ s)


def _no_transpose(A, v, R, eps):
    z = A @ v
    s = R / (2 * (z + eps * _sign(z)))
    return A * (s @ v.transpose(-1, -2)), v * (A @ s)


def _ignores_eps(A, v, R, eps):
    return correct(A, v, R, 0.0)


def _in_place(A, v, R, eps):
    R.mul_(1.0)
    R[0, 0, 0] = 0.0
    return correct(A, v, R, eps)


def _uses_package(A, v, R, eps):
    A, v = A.clone().requires_grad_(), v.clone().requires_grad_()
    z = matmul_uniform(A, v, eps)
    ga, gv = torch.autograd.grad(z, (A, v), R / z.detach())
    return A.detach() * ga, v.detach() * gv


@pytest.mark.parametrize(("fn", "message"), [
    (_full, "twice what arrived"),
    (_cp, "CP-LRP"),
    (_unsigned, "same sign everywhere"),
    (_no_transpose, "wrong index of A"),
    (_ignores_eps, "ignores its `eps`"),
    (_in_place, "in place"),
    (_uses_package, "matmul_uniform"),
])
def test_wrong_variants_fail_with_a_message_that_names_the_mistake(fn, message):
    with pytest.raises(ExerciseError, match=message) as err:
        check_uniform_av(fn)
    text = str(err.value)
    assert "/ (2" not in text and "transpose(-1, -2)" not in text  # no formula given away


def test_a_stub_and_a_wrong_shape_are_reported():
    def stub(A, v, R, eps):
        raise NotImplementedError

    with pytest.raises(ExerciseError, match="not implemented"):
        check_uniform_av(stub)
    with pytest.raises(ExerciseError, match="shape"):
        check_uniform_av(lambda A, v, R, eps: (A, v.sum(-1)))


def test_checker_is_exported():
    assert lt.exercises.check_uniform_av is check_uniform_av
