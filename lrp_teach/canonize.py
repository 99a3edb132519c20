"""Canonization: fold BatchNorm into the neighbouring Linear/Conv layer.

In eval mode a BatchNorm layer is the affine map :math:`y = s \\odot x + t` per channel, with

.. math::  s = \\frac{\\gamma}{\\sqrt{\\sigma^2 + \\varepsilon}}, \\qquad t = \\beta - \\mu s .

Folded into the *preceding* layer :math:`z = Wa + b`, it gives :math:`W' = \\mathrm{diag}(s) W`,
:math:`b' = s \\odot b + t`; folded into the *following* layer (when the BatchNorm comes
first), :math:`W' = W \\mathrm{diag}(s)`, :math:`b' = b + W t`.  The model computes the same
function, and LRP then treats the pair as one layer, as recommended in
:cite:`montavon2019overview` and :cite:`samek2022chapter`.

The module is callable: ``lt.canonize(model)`` is ``lt.canonize.canonize(model)``.
"""

from __future__ import annotations

import copy
import sys
import types

import torch
from torch import nn

__all__ = ["canonize", "fold_batchnorm"]

_BN = (nn.BatchNorm1d, nn.BatchNorm2d)
_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d)
_SKIP = (nn.Identity, nn.Dropout)


def _scale_shift(bn: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError(
            f"{bn} has no running statistics (track_running_stats=False): it normalizes with "
            "batch statistics, which no fixed linear layer can reproduce"
        )
    with torch.no_grad():
        std = torch.sqrt(bn.running_var + bn.eps)
        weight = bn.weight if bn.affine else torch.ones_like(std)
        bias = bn.bias if bn.affine else torch.zeros_like(std)
        s = weight / std
        return s, bias - bn.running_mean * s


def _view(v: torch.Tensor, layer: nn.Module, axis: int) -> torch.Tensor:
    shape = [1] * layer.weight.dim()
    shape[axis] = -1
    return v.reshape(shape)


def fold_batchnorm(layer: nn.Module, bn: nn.Module, *, bn_first: bool = False) -> nn.Module:
    """Return a copy of ``layer`` with ``bn`` folded in (``bn_first``: BN acts on its input).

    .. math::  W' = \\mathrm{diag}(s) W,\\ b' = s \\odot b + t \\quad\\text{or}\\quad
               W' = W \\mathrm{diag}(s),\\ b' = b + W t

    Parameters
    ----------
    layer : nn.Linear, nn.Conv1d or nn.Conv2d
        The neighbouring layer (not modified).
    bn : nn.BatchNorm1d or nn.BatchNorm2d
        The BatchNorm layer (its running statistics are used).
    bn_first : bool
        True when the BatchNorm comes before ``layer``.

    Raises
    ------
    ValueError
        When the channel counts do not match, for a grouped convolution after the BatchNorm,
        or a padded convolution after it (zero padding after a BatchNorm is not the image of
        zero padding before it, so no folding is exact at the borders).
    """
    s, t = _scale_shift(bn)
    new = copy.deepcopy(layer)
    with torch.no_grad():
        w = new.weight
        if new.bias is None:
            new.bias = nn.Parameter(torch.zeros(w.shape[0], dtype=w.dtype, device=w.device))
        if not bn_first:
            if w.shape[0] != s.numel():
                raise ValueError(f"cannot fold {bn} into {layer}: {s.numel()} channels vs "
                                 f"{w.shape[0]} outputs")
            w.mul_(_view(s, new, 0))
            new.bias.mul_(s).add_(t)
            return new
        if isinstance(new, nn.Linear):
            n_in = w.shape[1]
            if n_in % s.numel():
                raise ValueError(f"cannot fold {bn} into {layer}: {s.numel()} channels vs "
                                 f"{n_in} inputs")
            rep = n_in // s.numel()  # BatchNorm over channels, then Flatten, then Linear
            s_in, t_in = s.repeat_interleave(rep), t.repeat_interleave(rep)
            new.bias.add_(w @ t_in)
            w.mul_(s_in[None, :])
            return new
        if new.groups != 1 or w.shape[1] != s.numel():
            raise ValueError(f"cannot fold {bn} into the following {layer}")
        padding = new.padding if not isinstance(new.padding, str) else (
            (0,) if new.padding == "valid" else (1,))
        if any(p != 0 for p in padding):
            raise ValueError(
                f"cannot fold {bn} into the following padded {layer}: the zero padding of the "
                "convolution would no longer be zero before the BatchNorm. Place BatchNorm "
                "after the convolution, or use an unpadded convolution."
            )
        new.bias.add_((w * _view(t, new, 1)).flatten(1).sum(1))
        w.mul_(_view(s, new, 1))
        return new


def _sequentials(model: nn.Module) -> list[nn.Sequential]:
    """The outermost nn.Sequential containers of ``model`` (the model itself if it is one)."""
    out: list[nn.Sequential] = []

    def walk(m: nn.Module) -> None:
        if isinstance(m, nn.Sequential):
            out.append(m)
            return
        for child in m.children():
            walk(child)

    walk(model)
    return out


def _leaves(seq: nn.Module, parent: nn.Module | None = None, name: str = ""):
    if isinstance(seq, nn.Sequential):
        for child_name, child in seq.named_children():
            yield from _leaves(child, seq, child_name)
    else:
        yield parent, name, seq


def canonize(model: nn.Module) -> nn.Module:
    """Return a deep copy of ``model`` with every BatchNorm folded into a Linear/Conv layer.

    Each ``BatchNorm1d``/``BatchNorm2d`` inside an ``nn.Sequential`` (nested ones included)
    is folded into the preceding Linear/Conv layer (Identity and Dropout in between are
    skipped); when no such layer directly precedes it (for example the BatchNorm comes
    first, or after a ReLU), into the following one, possibly through a ``Flatten``.  The
    BatchNorm is replaced by ``nn.Identity``.  The copy is in eval mode's arithmetic: the
    running statistics are used.  See :cite:`montavon2019overview`.

    Parameters
    ----------
    model : nn.Module
        The model; it is not modified.

    Returns
    -------
    nn.Module
        The canonized copy, whose outputs equal the original's (in eval mode) up to
        rounding (1e-5 in float32).

    Raises
    ------
    ValueError
        For a BatchNorm with no Linear/Conv layer to fold into, or outside any nn.Sequential.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"canonize expects a torch.nn.Module, got {type(model).__name__}")
    new = copy.deepcopy(model)
    seqs = _sequentials(new)
    inside = {id(m) for s in seqs for m in s.modules()}
    for name, m in new.named_modules():
        if isinstance(m, _BN) and id(m) not in inside:
            raise ValueError(f"BatchNorm '{name}' is not inside an nn.Sequential; canonize "
                             "cannot tell which layer it follows")
    for seq in seqs:
        items = list(_leaves(seq))
        for i, (parent, name, m) in enumerate(items):
            if not isinstance(m, _BN):
                continue
            j = i - 1
            while j >= 0 and isinstance(items[j][2], _SKIP):
                j -= 1
            if j >= 0 and isinstance(items[j][2], _LAYERS):
                p, n, layer = items[j]
                p._modules[n] = fold_batchnorm(layer, m)
                items[j] = (p, n, p._modules[n])
            else:
                k = i + 1
                while k < len(items) and isinstance(items[k][2], _SKIP + (nn.Flatten,)):
                    k += 1
                if k == len(items) or not isinstance(items[k][2], _LAYERS):
                    raise ValueError(
                        f"BatchNorm {m} has no Linear/Conv layer next to it to fold into"
                    )
                if isinstance(items[k][2], (nn.Conv1d, nn.Conv2d)) and any(
                    isinstance(items[q][2], nn.Flatten) for q in range(i + 1, k)
                ):
                    raise ValueError(f"cannot fold {m} through a Flatten into a convolution")
                p, n, layer = items[k]
                p._modules[n] = fold_batchnorm(layer, m, bn_first=True)
                items[k] = (p, n, p._modules[n])
            parent._modules[name] = nn.Identity().train(m.training)
    return new


class _CallableModule(types.ModuleType):
    """Lets ``lt.canonize(model)`` call :func:`canonize` while the module stays importable."""

    def __call__(self, model: nn.Module) -> nn.Module:
        return canonize(model)


sys.modules[__name__].__class__ = _CallableModule
