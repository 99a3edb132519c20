"""Chapters 1 and 2: the checkers accept the solution and name each typical mistake."""

from __future__ import annotations

import re

import pytest
import torch

import lrp_teach as lt
from lrp_teach import taylor
from lrp_teach.exercises import ExerciseError


def _message(check, fn) -> str:
    with pytest.raises(ExerciseError) as info:
        check(fn)
    return str(info.value)


def _no_formula(message: str, *fragments: str) -> None:
    for fragment in fragments:
        assert fragment not in message, f"the message gives the answer away ({fragment!r})"


# chapter 1 ------------------------------------------------------------------------------

def test_linear_relevance_accepts_the_solution(capsys):
    lt.exercises.check_linear_relevance(lambda w, b, x: x * w + b / w.numel())
    assert "20 random cases" in capsys.readouterr().out


@pytest.mark.parametrize(("wrong", "expected"), [
    (lambda w, b, x: x * w, "bias b = .* is lost"),
    (lambda w, b, x: x * w + b, "whole bias to every input, so it is counted d"),
    (lambda w, b, x: x * w + b * (x * w) / (x * w).sum(1, keepdim=True),
     "in proportion to the contributions"),
    (lambda w, b, x: x * w + b * x / x.sum(1, keepdim=True), "in proportion to the input values"),
    (lambda w, b, x: x * w + b / x.shape[0], "batch size"),
    (lambda w, b, x: 2 * x * w + b / w.numel(), "conservation is broken"),
    (lambda w, b, x: x.mul_(w) + b / w.numel(), "in place"),
    (lambda w, b, x: (x * w).sum(1), "expected shape"),
])
def test_linear_relevance_names_the_mistake(wrong, expected):
    message = _message(lt.exercises.check_linear_relevance, wrong)
    assert re.search(expected, message), message
    _no_formula(message, "b / d", "b/d", "/ w.numel", "+ b /")


def test_linear_relevance_stub_is_not_implemented_yet():
    def linear_relevance(w, b, x):
        raise NotImplementedError("Write `linear_relevance` (exercise ex-why-bias), then run it.")

    message = _message(lt.exercises.check_linear_relevance, linear_relevance)
    assert "not implemented yet" in message and "Write `linear_relevance`" in message


# chapter 2: Integrated Gradients ---------------------------------------------------------

def _quad(f, x, x_ref, alphas, weights):
    grads = taylor.gradient(f, x_ref + alphas[:, None] * (x - x_ref))
    return (weights[:, None] * grads).sum(0) * (x - x_ref)


def trapezoid(f, x, x_ref, steps):
    alphas = torch.linspace(0, 1, steps + 1, dtype=x.dtype)
    weights = torch.full((steps + 1,), 1.0 / steps, dtype=x.dtype)
    weights[0] = weights[-1] = 0.5 / steps
    return _quad(f, x, x_ref, alphas, weights)


def riemann(where):
    def ig(f, x, x_ref, steps):
        t = torch.linspace(0, 1, steps + 1, dtype=x.dtype)
        t = {"left": t[:-1], "right": t[1:], "mid": (t[:-1] + t[1:]) / 2}[where]
        return _quad(f, x, x_ref, t, torch.full((steps,), 1.0 / steps, dtype=x.dtype))
    return ig


def test_integrated_gradients_accepts_the_trapezoid(capsys):
    lt.exercises.check_integrated_gradients(trapezoid)
    assert "trapezoidal rule agrees" in capsys.readouterr().out


@pytest.mark.parametrize(("wrong", "expected"), [
    (riemann("mid"), "the midpoint rule"),
    (riemann("left"), "a left Riemann sum"),
    (riemann("right"), "a right Riemann sum"),
    (lambda f, x, r, steps: taylor.integrated_gradients(f, x, r, steps=steps), "midpoint rule"),
    (lambda f, x, r, steps: trapezoid(f, x, r, 64), "does not change when `steps`"),
    (lambda f, x, r, steps: trapezoid(f, x, r, steps) * x / (x - r), "multiplied by x instead"),
    (lambda f, x, r, steps: -trapezoid(f, x, r, steps), "sign is flipped"),
])
def test_integrated_gradients_names_the_mistake(wrong, expected):
    message = _message(lt.exercises.check_integrated_gradients, wrong)
    assert expected in message, message
    _no_formula(message, "alpha in", "0.5 /", "weights[0]", "linspace")


# chapter 2: nearest root -----------------------------------------------------------------

def nearest_root(w, b, x):
    fx = x @ w + b
    return w * (fx * w / (w @ w))


@pytest.mark.parametrize(("wrong", "expected"), [
    (lambda w, b, x: -nearest_root(w, b, x), "wrong way"),
    (lambda w, b, x: w * x, "Gradient x Input"),
    (lambda w, b, x: nearest_root(w, 0.0, x), "without the bias"),
    (lambda w, b, x: (x @ w + b) * w / (w @ w), "not the Taylor terms"),
    (lambda w, b, x: (x @ w + b) * w**2 / (w @ w).sqrt(), "not on the hyperplane"),
    (lambda w, b, x: torch.full_like(x, float(x @ w + b) / x.numel()), "not the nearest one"),
])
def test_nearest_root_names_the_mistake(wrong, expected):
    message = _message(lt.exercises.check_nearest_root_relevance, wrong)
    assert expected in message, message
    _no_formula(message, "w.(x - t w)", "||w||^2", "w**2", "w_i (x_i - x_root_i)")


def test_nearest_root_accepts_the_solution(capsys):
    lt.exercises.check_nearest_root_relevance(nearest_root)
    assert "correct on 20" in capsys.readouterr().out
