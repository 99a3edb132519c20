"""The chapter 5 residual-split checker accepts the answer and names each typical mistake."""

from __future__ import annotations

import re
import traceback

import pytest
import torch

import lrp_teach as lt
from lrp_teach.exercises import ExerciseError


def _sign(z):
    return torch.where(z >= 0, 1.0, -1.0).to(z.dtype)


def right(a, b, R, epsilon=0.0):
    z = a + b
    z = z + epsilon * _sign(z)
    s = torch.where(z == 0, torch.zeros_like(R), R / torch.where(z == 0, torch.ones_like(z), z))
    return a * s, b * s


def halves(a, b, R, epsilon=0.0):
    return R / 2, R / 2


def swapped(a, b, R, epsilon=0.0):
    R_a, R_b = right(a, b, R, epsilon)
    return R_b, R_a


def no_epsilon(a, b, R, epsilon=0.0):
    return right(a, b, R, 0.0)


def unsigned_epsilon(a, b, R, epsilon=0.0):
    z = a + b + epsilon
    s = torch.where(z == 0, torch.zeros_like(R), R / torch.where(z == 0, torch.ones_like(z), z))
    return a * s, b * s


def torch_sign(a, b, R, epsilon=0.0):  # sign(0) = 0: the stabilizer vanishes at a zero sum
    z = a + b
    z = z + epsilon * torch.sign(z)
    if epsilon == 0:
        return right(a, b, R, 0.0)
    return a * R / z, b * R / z


def sign_zero_negative(a, b, R, epsilon=0.0):
    z = a + b
    z = z + epsilon * torch.where(z > 0, 1.0, -1.0).to(z.dtype)
    if epsilon == 0:
        return right(a, b, R, 0.0)
    return a * R / z, b * R / z


def naive_zero(a, b, R, epsilon=0.0):  # divides by a zero sum when epsilon = 0
    z = a + b
    z = z + epsilon * _sign(z)
    return a * R / z, b * R / z


def not_conserving(a, b, R, epsilon=0.0):
    R_a, _ = right(a, b, R, epsilon)
    return R_a, R.clone() * (a + b != 0) * 0.5


def zero_sum_keeps_R(a, b, R, epsilon=0.0):
    R_a, R_b = right(a, b, R, epsilon)
    if epsilon == 0:
        R_a = torch.where(a + b == 0, R / 2, R_a)
        R_b = torch.where(a + b == 0, R / 2, R_b)
    return R_a, R_b


def in_place(a, b, R, epsilon=0.0):
    R_a, R_b = right(a, b, R, epsilon)
    a.mul_(1.0)
    R += 0.0
    a[..., 0] = 0.5
    return R_a, R_b


def flattened(a, b, R, epsilon=0.0):
    R_a, R_b = right(a, b, R, epsilon)
    return R_a.flatten(), R_b.flatten()


def one_tensor(a, b, R, epsilon=0.0):
    return torch.stack(right(a, b, R, epsilon))


def float64_always(a, b, R, epsilon=0.0):
    return tuple(t.double() for t in right(a, b, R, epsilon))


def slightly_off(a, b, R, epsilon=0.0):  # conserves, but shifts a little from b to a
    R_a, R_b = right(a, b, R, epsilon)
    shift = 0.01 * R * (a + b != 0)
    return R_a + shift, R_b - shift


def crashes(a, b, R, epsilon=0.0):
    return right(a.view(-1, 2), b, R, epsilon)  # 7 elements do not fit in pairs


WRONG = [
    (halves, "equal halves"),
    (swapped, "swapped"),
    (no_epsilon, "stabilizer is missing"),
    (unsigned_epsilon, "regardless of its sign"),
    (torch_sign, "sign of 0 is handled wrongly"),
    (sign_zero_negative, "sign of 0 is handled wrongly"),
    (naive_zero, "zero denominator sends no relevance"),
    (not_conserving, "not conserved"),
    (zero_sum_keeps_R, "both parts must be 0"),
    (in_place, "changed its input a in place"),
    (flattened, "has shape"),
    (one_tensor, "return two tensors"),
    (float64_always, "keep the inputs' dtype"),
    (slightly_off, "largest difference"),
    (crashes, "raised RuntimeError"),
]

# pieces of the answer that no message may give away
FORMULA = [r"a\s*/\s*\(", r"/\s*\(\s*a\s*\+\s*b", r"a\s*\*\s*R\s*/", r"R\s*\*\s*a\s*/",
           r"a\s*/\s*z", r"\*\s*sign\(", r"epsilon\s*\*", r"\\frac"]


def _message(wrong) -> str:
    with pytest.raises(ExerciseError) as info:
        lt.exercises.check_residual_split(wrong)
    return str(info.value)


def test_right_answer_passes(capsys):
    lt.exercises.check_residual_split(right)
    out = capsys.readouterr().out
    assert "agree with the reference" in out and "float32 and float64" in out


def test_checker_is_listed_in_the_package():
    assert "check_residual_split" in lt.exercises.__all__
    assert "check_residual_split" in lt.exercises.resnet.__all__


@pytest.mark.parametrize(("wrong", "words"), WRONG, ids=[w.__name__ for w, _ in WRONG])
def test_wrong_variant_is_named(wrong, words):
    message = _message(wrong)
    assert words in message, message
    for pattern in FORMULA:
        assert not re.search(pattern, message), (pattern, message)


def test_the_cases_contain_ties_zero_sums_and_both_dtypes():
    from lrp_teach.exercises.resnet import _cases

    cases = list(_cases(torch.Generator().manual_seed(5151)))
    dtypes = {a.dtype for _, a, _, _, _ in cases}
    assert dtypes == {torch.float32, torch.float64}
    assert any(((a + b) == 0).any() and eps == 0 for _, a, b, _, eps in cases)
    assert any(((a + b) == 0).any() and eps > 0 for _, a, b, _, eps in cases)
    assert any(((a == b) & (a != 0)).any() for _, a, b, _, _ in cases)
    assert {eps for *_, eps in cases} >= {0.0, 0.01, 1.0}
    assert len({a.shape for _, a, _, _, _ in cases}) >= 4


def test_reference_is_computed_before_the_learner_runs():
    # a function that corrupts its inputs after computing the right answer is caught, and the
    # reference it is compared with still comes from the untouched inputs
    def corrupt_R(a, b, R, epsilon=0.0):
        out = right(a, b, R, epsilon)
        R.zero_()
        return out

    assert "changed its input R in place" in _message(corrupt_R)


def test_stub_says_not_implemented_without_checker_source():
    def residual_split(a, b, R, epsilon=0.0):
        raise NotImplementedError("Write `residual_split` (exercise ex-cnn-residual), then run "
                                  "the checker below.")

    with pytest.raises(NotImplementedError) as info:
        lt.exercises.check_residual_split(residual_split)
    message = str(info.value)
    assert message.startswith("residual_split is not implemented yet.")
    assert "Write `residual_split`" in message  # the hint of the labs stub survives
    # the traceback ends in the learner's function, not in the checker
    last = traceback.extract_tb(info.value.__traceback__)[-1]
    assert last.name == "residual_split"
    assert info.value.__cause__ is None and info.value.__context__ is None
