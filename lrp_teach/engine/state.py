"""The one save/restore of a model's state, and the one target resolution of the package.

Every method of the package (LRP and the baselines) runs the user's model through
:func:`preserved`, which puts it in eval mode for the call and hands it back exactly as it
was: every submodule's training flag, and every buffer bitwise, also after an error.
Parameters are never written by the package.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

__all__ = ["preserved", "resolve_target"]


@contextmanager
def preserved(model: nn.Module) -> Iterator[nn.Module]:
    """Run ``model`` in eval mode; restore training flags and buffers afterwards.

    Buffers are compared after the call and copied back only where the user's forward
    changed them (a BatchNorm in training mode, a counter), so no buffer is rewritten
    needlessly.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    flags = [(m, m.training) for m in model.modules()]
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    model.eval()
    try:
        yield model
    finally:
        for module, flag in flags:
            module.training = flag
        with torch.no_grad():
            for b, saved in buffers:
                if b.shape != saved.shape or not torch.equal(b, saved):
                    b.copy_(saved)


def resolve_target(out: Tensor, target: int | Tensor | None) -> Tensor:
    """The class to explain per sample, a ``LongTensor[B]`` on ``out``'s device.

    ``out`` is the model output of shape ``(batch, classes)``; ``target`` is ``None`` (the
    predicted class), an ``int`` (the same class for every sample) or an integer tensor with
    one entry or one per sample.
    """
    if not isinstance(out, Tensor) or out.dim() != 2:
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(
            f"the model output has shape {shape}; explaining needs logits of shape "
            "(batch, classes)"
        )
    batch, classes = out.shape
    if target is None:
        return out.detach().argmax(dim=1)
    if isinstance(target, Tensor):
        if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
            raise TypeError(f"target must be an int or an integer tensor, got {target.dtype}")
        t = target.to(out.device).long().reshape(-1)
        if t.numel() == 1:
            t = t.expand(batch)
        elif t.numel() != batch:
            raise ValueError(f"target has {t.numel()} entries, but the batch has {batch}")
    elif isinstance(target, numbers.Integral) and not isinstance(target, bool):
        t = torch.full((batch,), int(target), dtype=torch.long, device=out.device)
    else:
        raise TypeError(
            f"target must be None, an int or a LongTensor, got {type(target).__name__}")
    bad = (t < 0) | (t >= classes)
    if bool(bad.any()):
        raise ValueError(
            f"target {t[bad][0].item()} is out of range: the model has {classes} classes "
            f"(valid targets 0..{classes - 1})"
        )
    return t.clone()
