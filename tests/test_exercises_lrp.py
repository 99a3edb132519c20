"""Chapter 3: the γ and ε checkers accept the solution and name each typical mistake."""

from __future__ import annotations

import pytest
import torch

import lrp_teach as lt
from lrp_teach.exercises import ExerciseError


def gamma_rule(layer, a, R, gamma, *, boost_bias=True, bias=True, times_a=True, rho=None):
    W, b = layer.weight.detach(), layer.bias.detach()
    rho = rho or (lambda w: w + gamma * w.clamp(min=0))
    W_g = rho(W)
    b_g = (rho(b) if boost_bias else b) if bias else 0 * b
    z = a @ W_g.T + b_g
    c = (R / z) @ W_g
    return a * c if times_a else c


def epsilon_rule(layer, a, R, eps, *, signed=True, bias=True):
    W, b = layer.weight.detach(), layer.bias.detach()
    z = a @ W.T + (b if bias else 0)
    z = z + (eps * torch.where(z >= 0, 1.0, -1.0) if signed else eps)
    return a * ((R / z) @ W)


def _message(check, fn):
    with pytest.raises(ExerciseError) as info:
        check(fn)
    return str(info.value)


FORMULA = ["clamp", "b + gamma", "sign(z)", "w+ =", "z + eps"]


def test_gamma_checker_accepts_the_solution(capsys):
    lt.exercises.check_gamma_rule(gamma_rule)
    assert "25 random cases" in capsys.readouterr().out


def in_place(layer, a, R, gamma):
    with torch.no_grad():
        layer.weight.add_(gamma * layer.weight.clamp(min=0))
        layer.bias.add_(gamma * layer.bias.clamp(min=0))
    W, b = layer.weight, layer.bias
    return (a * ((R / (a @ W.T + b)) @ W)).detach()


@pytest.mark.parametrize(("wrong", "expected"), [
    (lambda l, a, R, g: gamma_rule(l, a, R, 0.0), "not boosted by gamma"),
    (lambda l, a, R, g: gamma_rule(l, a, R, g, boost_bias=False), "boosts the weights but not"),
    (lambda l, a, R, g: gamma_rule(l, a, R, g, bias=False), "bias is missing"),
    (lambda l, a, R, g: gamma_rule(l, a, R, g, times_a=False), "not multiplied by the activ"),
    (lambda l, a, R, g: gamma_rule(l, a, R, g, rho=lambda w: w + g * w.abs()), "|w|"),
    (lambda l, a, R, g: gamma_rule(l, a, R, 0.25), "ignores its `gamma`"),
    (in_place, "in place"),
    (lambda l, a, R, g: lt.core.propagate(l, lt.rules.Gamma(g, stabilizer=0), a, R),
     "the package's"),
    (lambda l, a, R, g: gamma_rule(l, a, R, g)[:, :1], "shape of a"),
])
def test_gamma_checker_names_the_mistake(wrong, expected):
    message = _message(lt.exercises.check_gamma_rule, wrong)
    assert expected in message, message
    for fragment in FORMULA:
        assert fragment not in message


def test_epsilon_checker_accepts_the_solution(capsys):
    lt.exercises.check_epsilon_rule(epsilon_rule)
    assert "agree with the reference" in capsys.readouterr().out


@pytest.mark.parametrize(("wrong", "expected"), [
    (lambda l, a, R, e: epsilon_rule(l, a, R, e, signed=False), "same sign for every neuron"),
    (lambda l, a, R, e: epsilon_rule(l, a, R, e, bias=False), "bias is missing"),
    (lambda l, a, R, e: epsilon_rule(l, a, R, 1e-9), "epsilon is missing or ignored"),
    (lambda l, a, R, e: lt.core.propagate(l, lt.rules.Epsilon(e), a, R), "the package's"),
])
def test_epsilon_checker_names_the_mistake(wrong, expected):
    message = _message(lt.exercises.check_epsilon_rule, wrong)
    assert expected in message, message
    for fragment in FORMULA:
        assert fragment not in message


def test_stub_gives_a_short_message_without_checker_source():
    def gamma_rule(layer, a, R, gamma):
        raise NotImplementedError("Write `gamma_rule` (exercise ex-lrp-gamma), then run it.")

    with pytest.raises(ExerciseError) as info:
        lt.exercises.check_gamma_rule(gamma_rule)
    assert "not implemented yet" in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__
