"""The checkers of chapters 5 and 6 accept correct answers and diagnose typical mistakes."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import lrp_teach as lt
from lrp_teach.exercises import ExerciseError


def fold(conv, bn, eps=True, conv_bias=True):
    scale = bn.weight / (bn.running_var + (bn.eps if eps else 0.0)).sqrt()
    new = copy.deepcopy(conv)
    if new.bias is None:
        new.bias = torch.nn.Parameter(torch.zeros(conv.out_channels, dtype=conv.weight.dtype))
    b = conv.bias if (conv.bias is not None and conv_bias) else 0.0
    with torch.no_grad():
        new.weight.mul_(scale.view(-1, 1, 1, 1))
        new.bias.copy_(scale * (b - bn.running_mean) + bn.bias)
    return new


def test_fold_batchnorm(capsys):
    lt.exercises.check_fold_batchnorm(fold)
    assert "fold correctly" in capsys.readouterr().out
    with pytest.raises(ExerciseError, match="left out eps"):
        lt.exercises.check_fold_batchnorm(lambda c, b: fold(c, b, eps=False))
    with pytest.raises(ExerciseError, match="own bias is missing"):
        lt.exercises.check_fold_batchnorm(lambda c, b: fold(c, b, conv_bias=False))
    def in_place(conv, bn):
        conv.weight.data.mul_(2)
        return fold(conv, bn)

    with pytest.raises(ExerciseError, match="changed the original"):
        lt.exercises.check_fold_batchnorm(in_place)
    with pytest.raises(ExerciseError, match="nn.Conv2d"):
        lt.exercises.check_fold_batchnorm(lambda c, b: fold(c, b).weight)


def wta(a, R_out, k):
    _, idx = F.max_pool2d(a, k, return_indices=True)
    R = torch.zeros_like(a).flatten(2)
    R.scatter_(2, idx.flatten(2), R_out.flatten(2))
    return R.view_as(a)


def test_maxpool_relevance(capsys):
    lt.exercises.check_maxpool_relevance(wta)
    assert "winner-take-all" in capsys.readouterr().out

    def proportional(a, R_out, k):
        return a * F.interpolate(R_out / F.avg_pool2d(a, k) / k ** 2, scale_factor=k)

    with pytest.raises(ExerciseError, match="average pooling"):
        lt.exercises.check_maxpool_relevance(proportional)
    with pytest.raises(ExerciseError, match="not conserved"):
        lt.exercises.check_maxpool_relevance(lambda a, R, k: 2 * wta(a, R, k))


def test_aopc(capsys):
    lt.exercises.check_aopc(lambda c: (c[:, :1] - c).mean(1))
    assert "agree" in capsys.readouterr().out
    with pytest.raises(ExerciseError, match="L \\+ 1"):
        lt.exercises.check_aopc(lambda c: (c[:, :1] - c).sum(1) / (c.shape[1] - 1))
    with pytest.raises(ExerciseError, match="sign"):
        lt.exercises.check_aopc(lambda c: (c - c[:, :1]).mean(1))
    # the reference itself passes through the package function
    lt.exercises.check_aopc(lt.evaluation.aopc)


def test_relevance_mass_accuracy(capsys):
    lt.exercises.check_relevance_mass_accuracy(lt.evaluation.relevance_mass_accuracy)
    assert "agree" in capsys.readouterr().out
    with pytest.raises(ExerciseError, match="signed"):
        lt.exercises.check_relevance_mass_accuracy(
            lambda R, m: (R * m).sum((1, 2)) / R.sum((1, 2)))
    with pytest.raises(ExerciseError, match="shape"):
        lt.exercises.check_relevance_mass_accuracy(lambda R, m: (R * m).sum())
