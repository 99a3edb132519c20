"""The order in which a model runs its Linear/Conv layers.

Composites number layers (``first``, ``last``, ``by_index``) in order of execution.  For a
nested ``nn.Sequential`` that order is its structure (:func:`named_layers`); for any other
model it is found by running it once (:func:`trace`), with a
:class:`torch.overrides.TorchFunctionMode` that notes each ``F.linear``/``F.conv*`` call made
with the weight of a Linear/Conv module.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from .state import preserved

__all__ = ["PARAMETRIC", "named_layers", "trace"]

PARAMETRIC = (nn.Linear, nn.Conv1d, nn.Conv2d)


class _Order(TorchFunctionMode):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.paths = {id(m): n for n, m in reversed(list(model.named_modules()))}
        self.owner = {id(m.weight): m for m in model.modules() if isinstance(m, PARAMETRIC)}
        self.executed: list[tuple[str, nn.Module]] = []
        self.seen: set[int] = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name in ("linear", "conv1d", "conv2d", "multi_head_attention_forward"):
            if name == "multi_head_attention_forward":  # its out_proj is a Linear
                weight = args[11] if len(args) > 11 else kwargs.get("out_proj_weight")
            else:
                weight = args[1] if len(args) > 1 else kwargs.get("weight")
            m = self.owner.get(id(weight))
            if m is not None and id(m) not in self.seen:
                self.seen.add(id(m))
                self.executed.append((self.paths.get(id(m), type(m).__name__), m))
        return func(*args, **kwargs)


def trace(model: nn.Module, inputs) -> list[tuple[str, nn.Module]]:
    """The Linear/Conv modules that ``model(*inputs)`` executes, in first-call order.

    The model is run once in eval mode without gradients and handed back as it was.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    args = inputs if isinstance(inputs, tuple) else (inputs,)
    args = tuple(x.detach() if isinstance(x, Tensor) else x for x in args)
    order = _Order(model)
    with preserved(model), torch.no_grad(), order:
        model(*args)
    return order.executed


def named_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The leaf layers of a (nested) ``nn.Sequential`` in forward order, with their paths.

    For other models the order of execution is only known by running them: use
    :func:`trace`.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    out: list[tuple[str, nn.Module]] = []

    def walk(module: nn.Module, path: str) -> None:
        if isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward:
            for name, child in module.named_children():
                walk(child, f"{path}.{name}" if path else name)
            return
        if next(module.children(), None) is not None:
            raise TypeError(
                f"'{path or type(module).__name__}' ({type(module).__name__}) is not an "
                "nn.Sequential: its order of execution is known only by running it; pass an "
                "example input (composite.assign(model, x) or lt.engine.trace(model, x))")
        out.append((path or type(module).__name__, module))

    walk(model, "")
    return out
