"""The checkers of chapters 5 and 6 accept correct answers and diagnose typical mistakes."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import lrp_teach as lt
from lrp_teach.exercises import ExerciseError


def fold(conv, bn, eps=True, conv_bias=True, sqrt=True, scale_bias=True):
    var = bn.running_var + (bn.eps if eps else 0.0)
    scale = bn.weight / (var.sqrt() if sqrt else var)
    new = copy.deepcopy(conv)
    if new.bias is None:
        new.bias = torch.nn.Parameter(torch.zeros(conv.out_channels, dtype=conv.weight.dtype))
    b = conv.bias if (conv.bias is not None and conv_bias) else 0.0
    with torch.no_grad():
        new.weight.mul_(scale.view(-1, 1, 1, 1))
        shift = b - bn.running_mean
        new.bias.copy_((scale * shift if scale_bias else shift) + bn.bias)
    return new


def fresh_float32(conv, bn):
    """A correct answer that builds a new float32 layer (the default dtype)."""
    s = bn.weight / (bn.running_var + bn.eps).sqrt()
    new = torch.nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size,
                          stride=conv.stride, padding=conv.padding, dtype=torch.float32)
    b = conv.bias if conv.bias is not None else torch.zeros_like(s)
    with torch.no_grad():
        new.weight.copy_(conv.weight * s.view(-1, 1, 1, 1))
        new.bias.copy_(s * (b - bn.running_mean) + bn.bias)
    return new


def _message(check, fn):
    with pytest.raises(ExerciseError) as info:
        check(fn)
    return str(info.value)


FOLD_FORMULA = ["sqrt(running_var", "s * (b - mean)", "gamma / sqrt", "running_var + eps"]


def test_fold_batchnorm_accepts_correct_answers(capsys):
    lt.exercises.check_fold_batchnorm(fold)
    lt.exercises.check_fold_batchnorm(fresh_float32)
    assert "fold correctly" in capsys.readouterr().out


def in_place(conv, bn):
    conv.weight.data.mul_(2)
    return fold(conv, bn)


def no_padding(conv, bn):
    new = fold(conv, bn)
    new.padding = (0, 0)
    return new


@pytest.mark.parametrize(("wrong", "expected"), [
    (lambda c, b: fold(c, b, eps=False), "leaves out BatchNorm's eps"),
    (lambda c, b: fold(c, b, conv_bias=False), "own bias is missing"),
    (lambda c, b: fold(c, b, sqrt=False), "not by the standard deviation"),
    (lambda c, b: fold(c, b, scale_bias=False), "shift is not multiplied"),
    (in_place, "in place"),
    (no_padding, "padding (0, 0) instead of"),
    (lambda c, b: fold(c, b).weight, "nn.Conv2d"),
])
def test_fold_batchnorm_names_the_mistake(wrong, expected):
    message = _message(lt.exercises.check_fold_batchnorm, wrong)
    assert expected in message, message
    assert "running statistics" not in message
    for fragment in FOLD_FORMULA:
        assert fragment not in message


def wta(a, R_out, k):
    _, idx = F.max_pool2d(a, k, return_indices=True)
    R = torch.zeros_like(a).flatten(2)
    R.scatter_add_(2, idx.flatten(2), R_out.flatten(2))
    return R.view_as(a)


def test_maxpool_relevance_accepts_winner_take_all(capsys):
    lt.exercises.check_maxpool_relevance(wta)
    assert "winner-take-all" in capsys.readouterr().out


def mask_ties(a, R_out, k):
    """Gives R_k to every input equal to the window's maximum."""
    m = F.max_pool2d(a, k)
    up = F.interpolate(m, scale_factor=k, mode="nearest")
    R_up = F.interpolate(R_out, scale_factor=k, mode="nearest")
    out = torch.zeros_like(a)
    H, W = up.shape[-2:]
    out[..., :H, :W] = (a[..., :H, :W] == up) * R_up
    return out


def normalized(a, R_out, k):
    """Winner-take-all scaled by a / a: NaN wherever an input is 0."""
    return wta(a, R_out, k) * a / a


def proportional(a, R_out, k):
    H, W = (a.shape[-2] // k) * k, (a.shape[-1] // k) * k
    out = torch.zeros_like(a)
    ac = a[..., :H, :W]
    out[..., :H, :W] = ac * F.interpolate(R_out / F.avg_pool2d(ac, k).clamp(min=1e-12) / k**2,
                                          scale_factor=k)
    return out


@pytest.mark.parametrize(("wrong", "expected"), [
    (proportional, "average pooling"),
    (lambda a, R, k: 2 * wta(a, R, k), "not conserved"),
    (mask_ties, "every tied maximum"),
    (normalized, "NaN"),
])
def test_maxpool_relevance_names_the_mistake(wrong, expected):
    message = _message(lt.exercises.check_maxpool_relevance, wrong)
    assert expected in message, message
    assert "arg max" not in message and "argmax" not in message


def test_aopc(capsys):
    lt.exercises.check_aopc(lambda c: (c[:, :1] - c).mean(1))
    assert "agree" in capsys.readouterr().out
    with pytest.raises(ExerciseError, match="has L = .* terms"):
        lt.exercises.check_aopc(lambda c: (c[:, :1] - c).sum(1) / (c.shape[1] - 1))
    with pytest.raises(ExerciseError, match="sign"):
        lt.exercises.check_aopc(lambda c: (c - c[:, :1]).mean(1))
    with pytest.raises(ExerciseError, match="k = 0 term is left out"):
        lt.exercises.check_aopc(lambda c: (c[:, :1] - c)[:, 1:].mean(1))
    with pytest.raises(ExerciseError, match="in place"):
        lt.exercises.check_aopc(lambda c: c.sub_(c[:, :1].clone()).neg_().mean(1))
    for wrong in [lambda c: (c - c[:, :1]).mean(1), lambda c: (c[:, :1] - c)[:, 1:].mean(1)]:
        message = _message(lt.exercises.check_aopc, wrong)
        assert "divide by L + 1" not in message and ".mean(" not in message
    # the reference itself passes through the package function
    lt.exercises.check_aopc(lt.evaluation.aopc)


def test_relevance_mass_accuracy(capsys):
    lt.exercises.check_relevance_mass_accuracy(lt.evaluation.relevance_mass_accuracy)
    assert "agree" in capsys.readouterr().out
    message = _message(lt.exercises.check_relevance_mass_accuracy,
                       lambda R, m: (R * m).sum((1, 2)) / R.sum((1, 2)))
    assert "signed" in message and "cancel" not in message
    message = _message(lt.exercises.check_relevance_mass_accuracy,
                       lambda R, m: (R.clamp(min=0) * m).sum((1, 2)) / R.clamp(min=0).sum((1, 2)))
    assert "no positive relevance" in message
    with pytest.raises(ExerciseError, match="shape"):
        lt.exercises.check_relevance_mass_accuracy(lambda R, m: (R * m).sum())
    message = _message(lt.exercises.check_relevance_mass_accuracy,
                       lambda R, m: (R.abs() * m).sum((1, 2)) / R.abs().sum((1, 2)))
    assert "absolute" in message
