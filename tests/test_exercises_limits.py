"""The chapter 10 checker accepts the reference and names typical mistakes."""

from __future__ import annotations

import pytest
import torch

import lrp_teach as lt
from lrp_teach.exercises import ExerciseError


def _remove(x, mask, fill):
    return torch.where(mask, torch.as_tensor(fill, dtype=x.dtype), x)


def right(score, x, mask_a, mask_b, fill=0.0):
    with torch.no_grad():
        return (score(x) - score(_remove(x, mask_a, fill)) - score(_remove(x, mask_b, fill))
                + score(_remove(x, mask_a | mask_b, fill)))


def test_reference_passes(capsys):
    lt.exercises.check_interaction(right)
    assert "20 random cases agree" in capsys.readouterr().out


def test_package_function_passes():
    lt.exercises.check_interaction(lt.limits.interaction)


@pytest.mark.parametrize(
    ("wrong", "message"),
    [
        (lambda s, x, a, b, fill=0.0: -right(s, x, a, b, fill), "sign is flipped"),
        (lambda s, x, a, b, fill=0.0: s(x) - s(_remove(x, a, fill)) - s(_remove(x, b, fill)),
         "is missing"),
        (lambda s, x, a, b, fill=0.0: s(x) - s(_remove(x, a, fill)) - s(_remove(x, b, fill))
         + s(_remove(x, a & b, fill)), "intersection"),
        (lambda s, x, a, b, fill=0.0: right(s, x, a, b, 0.0), "fill"),
        (lambda s, x, a, b, fill=0.0: right(s, x, a, b, fill)[:, None], "shape"),
        (lambda s, x, a, b, fill=0.0: right(s, x, a, b, fill).tolist(), "torch.Tensor"),
        (lambda s, x, a, b, fill=0.0: right(s, x, a, b, fill) + 0.01, "largest difference"),
        (lambda s, x, a, b: right(s, x, a, b), "raised TypeError"),
        (lambda s, x, a, b, fill=0.0: right(s, x.mul_(1.0), a, b, fill) if x.fill_(0.5) is None
         else right(s, x, a, b, fill), "in place"),
    ],
)
def test_wrong_answers_fail_with_a_helpful_message(wrong, message):
    with pytest.raises(ExerciseError, match=message) as info:
        lt.exercises.check_interaction(wrong)
    for fragment in ["f(x without A and B)", "mask_a | mask_b", "I_AB = "]:
        assert fragment not in str(info.value)


def test_stub_is_reported_as_not_implemented():
    def stub(score, x, mask_a, mask_b, fill=0.0):
        raise NotImplementedError("write it")

    with pytest.raises(ExerciseError, match="not implemented yet") as info:
        lt.exercises.check_interaction(stub)
    assert "write it" in str(info.value) and info.value.__suppress_context__
