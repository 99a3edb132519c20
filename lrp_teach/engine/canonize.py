"""Canonization: fold BatchNorm into the neighbouring Linear/Conv layer.

In eval mode a BatchNorm layer is the affine map :math:`y = s \\odot x + t` per channel, with

.. math::  s = \\frac{\\gamma}{\\sqrt{\\sigma^2 + \\varepsilon}}, \\qquad t = \\beta - \\mu s .

Folded into the *preceding* layer :math:`z = Wa + b`, it gives :math:`W' = \\mathrm{diag}(s) W`,
:math:`b' = s \\odot b + t`; folded into the *following* layer (when the BatchNorm comes
first), :math:`W' = W \\mathrm{diag}(s)`, :math:`b' = b + W t`.  The model computes the same
function, and LRP then treats the pair as one layer, as recommended in
:cite:`montavon2019overview` and :cite:`samek2022chapter`.

The module is callable: ``lt.canonize(model, x)`` is ``lt.canonize.canonize(model, x)``.
"""

from __future__ import annotations

import copy
import sys
import types

import torch
from torch import nn
from torch.nn.modules import module as _module_hooks
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakIdKeyDictionary

from .state import preserved

__all__ = ["canonize", "fold_batchnorm"]

_BN = (nn.BatchNorm1d, nn.BatchNorm2d)
_LAYERS_ALL = (nn.Linear, nn.Conv1d, nn.Conv2d)
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


def _canonize_sequential(model: nn.Module) -> nn.Module:
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


_ALIAS = {"dropout", "contiguous", "clone"}
_RESHAPES = {"flatten", "view", "reshape"}


class _Tracer(TorchFunctionMode):
    """Records, while the model runs once, which tensor each layer and BatchNorm produced."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.paths = {id(m): n for n, m in model.named_modules()}
        self.owner = {id(m.weight): m for m in model.modules() if isinstance(m, _LAYERS)}
        self.produced = WeakIdKeyDictionary()  # tensor -> ("layer"|"bn"|"alias", module, src)
        self.uses = WeakIdKeyDictionary()  # tensor -> list of (op name, output, module)
        self.bn_calls: list[tuple[nn.Module, torch.Tensor, torch.Tensor]] = []
        self.calls: dict[int, int] = {}
        self.stack: list[nn.Module] = []

    def pre(self, module, args):
        self.stack.append(module)
        self.calls[id(module)] = self.calls.get(id(module), 0) + 1

    def post(self, module, args, output):
        if self.stack and self.stack[-1] is module:
            self.stack.pop()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = getattr(func, "__name__", "")
        flat = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        layer = None
        if name in ("linear", "conv1d", "conv2d"):
            weight = args[1] if len(args) > 1 else kwargs.get("weight")
            layer = self.owner.get(id(weight))
        if not any(isinstance(t, torch.Tensor) for t in tree_flatten(out)[0]):
            return out  # sizes and shapes are no use of the values
        for t in flat:
            if t in self.produced:
                self.uses.setdefault(t, []).append((name, out, layer))
        if not isinstance(out, torch.Tensor):
            return out
        top = self.stack[-1] if self.stack else None
        if layer is not None:
            self.produced[out] = ("layer", layer, None)
        elif name == "batch_norm" and isinstance(top, _BN):
            self.produced[out] = ("bn", top, None)
            self.bn_calls.append((top, args[0], out))
        elif name in _ALIAS | _RESHAPES and flat and flat[0] in self.produced:
            kind = "alias" if name in _ALIAS else "reshape"
            self.produced[out] = (kind, None, flat[0])
        return out


def _source(tracer: _Tracer, t: torch.Tensor):
    """Follow aliases (dropout in eval, clone) back to the tensor a layer produced."""
    chain = []
    while t in tracer.produced and tracer.produced[t][0] == "alias":
        chain.append(t)
        t = tracer.produced[t][2]
    return t, chain


def _single_use(tracer: _Tracer, t: torch.Tensor) -> tuple | None:
    uses = tracer.uses.get(t, [])
    return uses[0] if len(uses) == 1 else None


def _replace(root: nn.Module, path: str, new: nn.Module) -> None:
    parent = root
    *parents, last = path.split(".")
    for p in parents:
        parent = getattr(parent, p)
    parent._modules[last] = new


def _canonize_traced(model: nn.Module, inputs: tuple) -> nn.Module:
    new = copy.deepcopy(model)
    tracer = _Tracer(new)
    pre = _module_hooks.register_module_forward_pre_hook(tracer.pre)
    post = _module_hooks.register_module_forward_hook(tracer.post)
    try:
        with preserved(new), torch.no_grad(), tracer:
            new(*inputs)
    finally:
        pre.remove()
        post.remove()
    paths = tracer.paths
    for name, m in new.named_modules():
        if isinstance(m, _BN) and tracer.calls.get(id(m), 0) == 0:
            raise ValueError(f"BatchNorm '{name}' is not executed by the model's forward on "
                             "the example input, so canonize cannot tell what it follows")
    folds = []
    for bn, t_in, t_out in tracer.bn_calls:
        where = f"BatchNorm '{paths[id(bn)]}'"
        if tracer.calls.get(id(bn), 0) > 1:
            raise ValueError(f"{where} is called more than once; canonize cannot fold it")
        src, chain = _source(tracer, t_in)
        info = tracer.produced.get(src)
        if info is not None and info[0] == "layer":
            layer = info[1]
            links = [src, *reversed(chain)]
            if all(_single_use(tracer, v) is not None for v in links) and tracer.calls.get(
                    id(layer), 0) == 1:
                folds.append((bn, layer, False))
                continue
            raise ValueError(
                f"{where} follows '{paths[id(layer)]}', whose output is also used elsewhere "
                "(or which is called more than once): folding would change that other use")
        # no layer before it: fold into the one layer that reads it, if there is one
        t, through_flatten = t_out, False
        while True:
            use = _single_use(tracer, t)
            if use is None:
                break
            op, out, layer = use
            if layer is not None:
                if through_flatten and not isinstance(layer, nn.Linear):
                    raise ValueError(f"cannot fold {where} through a reshape into a convolution")
                if tracer.calls.get(id(layer), 0) != 1:
                    break
                folds.append((bn, layer, True))
                break
            if op in _ALIAS | _RESHAPES:
                through_flatten |= op in _RESHAPES
                t = out
                continue
            break
        else:  # pragma: no cover
            pass
        if not folds or folds[-1][0] is not bn:
            raise ValueError(
                f"{where} has no Linear/Conv layer next to it to fold into: it neither follows "
                "one directly nor feeds exactly one (BatchNorm after a ReLU, or before a "
                "nonlinearity, cannot be folded exactly)")
    for bn, layer, bn_first in folds:
        layer_path = paths[id(layer)]
        current = new.get_submodule(layer_path)
        try:
            folded = fold_batchnorm(current, bn, bn_first=bn_first)
        except ValueError as err:
            raise ValueError(f"BatchNorm '{paths[id(bn)]}': {err}") from None
        _replace(new, layer_path, folded)
        _replace(new, paths[id(bn)], nn.Identity().train(bn.training))
    return new


def _check_same(model: nn.Module, new: nn.Module, inputs: tuple) -> None:
    with preserved(model), preserved(new), torch.no_grad():
        a, b = model(*inputs), new(*inputs)
    if not isinstance(a, torch.Tensor):
        return
    tol = 1e-12 if a.dtype == torch.float64 else 1e-5
    scale = a.abs().max().clamp(min=1e-30)
    if float((a - b).abs().max() / scale) > tol:  # a fold that is not exact is a bug
        raise RuntimeError("canonize: the folded model's output differs from the original by "
                           f"{float((a - b).abs().max()):.3g}; please report this model")


def canonize(model: nn.Module, *example_inputs) -> nn.Module:
    """Return a copy of ``model`` with every BatchNorm folded into a Linear/Conv layer.

    The model is run once on ``example_inputs`` (in eval mode, without gradients), and each
    BatchNorm is matched with the layer it follows in the order of execution, whatever the
    module structure and the forward (functional ``F.relu``, skip connections, ...): a
    BatchNorm whose input is the output of a Linear/Conv layer, used by nothing else, is
    folded into it (:math:`W' = \\mathrm{diag}(s) W`, :math:`b' = s \\odot b + t`); a
    BatchNorm with no such layer before it is folded into the one layer that reads its
    output (possibly through a reshape into a Linear layer), if that layer is unpadded.  The
    BatchNorm is replaced by ``nn.Identity``.  The copy computes the same function in eval
    mode (checked on the example), and LRP then treats each pair as one layer
    :cite:`montavon2019overview`.

    Parameters
    ----------
    model : nn.Module
        The model; it is not modified.
    *example_inputs
        The arguments of ``model(*example_inputs)`` for one run.  They may be omitted for a
        (nested) ``nn.Sequential``, whose order is its structure.

    Returns
    -------
    nn.Module
        The canonized copy.

    Raises
    ------
    ValueError
        Naming every BatchNorm that cannot be folded exactly: after a ReLU with nothing to
        fold into, before a padded convolution, one whose layer's output is also used
        elsewhere, one called more than once, or one without running statistics.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"canonize expects a torch.nn.Module, got {type(model).__name__}")
    if not example_inputs:
        if not any(isinstance(m, _BN) for m in model.modules()):
            return copy.deepcopy(model)
        sequential = isinstance(model, nn.Sequential) and all(
            isinstance(m, nn.Sequential) or next(m.children(), None) is None
            for m in model.modules())
        if not sequential:
            raise TypeError(
                f"{type(model).__name__} is not an nn.Sequential: canonize needs an example "
                "input to find which layer each BatchNorm follows; call "
                "lt.canonize(model, x)")
        return _canonize_sequential(model)
    new = _canonize_traced(model, example_inputs)
    _check_same(model, new, example_inputs)
    return new


class _CallableModule(types.ModuleType):
    """Lets ``lt.canonize(model)`` call :func:`canonize` while the module stays importable."""

    def __call__(self, model: nn.Module, *example_inputs) -> nn.Module:
        return canonize(model, *example_inputs)


sys.modules[__name__].__class__ = _CallableModule
