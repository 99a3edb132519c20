"""Chapter 4: the DTD checkers accept the derivation, name mistakes, refuse the package's rules."""

from __future__ import annotations

import pytest
import torch

import lrp_teach as lt
from lrp_teach.exercises import ExerciseError


def zero_to_h(layer, a, R, high, *, sign=-1.0, part="neg", bias=False):
    w = layer.weight.detach()
    h = torch.as_tensor(high, dtype=a.dtype) * torch.ones_like(a)
    wb = w.clamp(max=0) if part == "neg" else w.clamp(min=0)
    z = a @ w.T + sign * h @ wb.T + (layer.bias.detach() if bias else 0)
    s = R / z
    return a * (s @ w) + sign * h * (s @ wb)


def wsquare(layer, a, R, *, power=2, bias=False):
    w = layer.weight.detach()
    num = w.abs() ** power if power != 1 else w
    den = num.sum(1) + (layer.bias.detach() ** 2 if bias else 0)
    return ((R / den) @ num).expand_as(a).clone()


def _message(check, fn):
    with pytest.raises(ExerciseError) as info:
        check(fn)
    return str(info.value)


FORMULA = ["a_j w_jk - h_j", "min(0, w_jk)", "w_jk^2 /", "clamp"]


def test_zero_to_h_accepts_the_derivation(capsys):
    lt.exercises.check_zero_to_h_rule(zero_to_h)
    assert "correct on 8" in capsys.readouterr().out


def _zbox(layer, a, R, high):
    return lt.core.propagate(layer, lt.rules.ZBox(0.0, high, stabilizer=0), a, R)


def _redistribute(layer, a, R, high):
    return lt.dtd.redistribute(layer, a, R, "zbox", low=0.0, high=high).relevance


@pytest.mark.parametrize(("wrong", "expected"), [
    (lambda l, a, R, h: zero_to_h(l, a, R, h, bias=True), "bias is in the denominator"),
    (lambda l, a, R, h: zero_to_h(l, a, R, h, sign=1.0), "wrong sign"),
    (lambda l, a, R, h: zero_to_h(l, a, R, h, part="pos"), "paired with the positive weights"),
    (lambda l, a, R, h: zero_to_h(l, a, R, 0.0), "LRP-0 without the bias"),
    (lambda l, a, R, h: zero_to_h(l, a, R, float(torch.as_tensor(h).max())), "h_j"),
    (_zbox, "the package's ZBox rule"),
    (_redistribute, "the package's dtd.redistribute"),
])
def test_zero_to_h_names_the_mistake(wrong, expected):
    message = _message(lt.exercises.check_zero_to_h_rule, wrong)
    assert expected in message, message
    for fragment in FORMULA:
        assert fragment not in message


def test_zero_to_h_stub_and_in_place():
    def zero_to_h_rule(layer, a, R, high):
        raise NotImplementedError("Write `zero_to_h_rule` (exercise ex-dtd-zero-h), then run it.")

    assert "not implemented yet" in _message(lt.exercises.check_zero_to_h_rule, zero_to_h_rule)

    def in_place(layer, a, R, high):
        out = zero_to_h(layer, a, R, high)
        a.clamp_(min=0.1)
        return out

    assert "in place" in _message(lt.exercises.check_zero_to_h_rule, in_place)


def test_wsquare_accepts_the_derivation(capsys):
    lt.exercises.check_wsquare_rule(wsquare)
    assert "correct on 8" in capsys.readouterr().out


@pytest.mark.parametrize(("wrong", "expected"), [
    (lambda l, a, R: wsquare(l, a, R, power=1), "not squared"),
    (lambda l, a, R: wsquare(l, a, R, power=1.0000001), "|w|"),
    (lambda l, a, R: wsquare(l, a, R, bias=True), "bias is in the denominator"),
    (lambda l, a, R: lt.core.propagate(l, lt.rules.WSquare(stabilizer=0), a, R),
     "the package's"),
])
def test_wsquare_names_the_mistake(wrong, expected):
    message = _message(lt.exercises.check_wsquare_rule, wrong)
    assert expected in message, message
    for fragment in FORMULA:
        assert fragment not in message
