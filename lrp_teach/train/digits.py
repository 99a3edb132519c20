"""Training recipes for the digits models: ``digits_mlp``, ``digits_cnn``, the residual network
``digits_resnet`` and the Clever Hans model ``digits_cnn_watermark``.

``python -m lrp_teach.train digits_cnn`` trains the model on one CPU thread in seconds,
evaluates it on the generated test split and ships the weights with
:func:`lrp_teach.pretrained.save`. Every recipe is seeded and deterministic.

The watermark model sees a bright square patch in one corner of most training images of one
class (:data:`WATERMARK`), the set-up of the Clever Hans study of Lapuschkin et al. 2019
:cite:`lapuschkin2019cleverhans`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..datasets.digits import add_watermark, load_digits
from ..models import digits_cnn, digits_mlp, digits_resnet
from . import register

__all__ = [
    "WATERMARK",
    "accuracy",
    "fit",
    "train_digits_cnn",
    "train_digits_cnn_watermark",
    "train_digits_mlp",
    "train_digits_resnet",
    "watermark_train_set",
    "watermark_flip_rate",
]

#: The watermark of the Clever Hans model: a ``patch`` x ``patch`` square of value 1 (the top
#: of the pixel range) in ``corner`` of a ``fraction`` of the training images of class
#: ``target``.
WATERMARK: dict[str, Any] = {"target": 3, "patch": 3, "corner": "bottom-right", "fraction": 0.9,
                             "value": 1.0}

register("digits_mlp", "lrp_teach.train.digits:train_digits_mlp")
register("digits_cnn", "lrp_teach.train.digits:train_digits_cnn")
register("digits_resnet", "lrp_teach.train.digits:train_digits_resnet")
register("digits_cnn_watermark", "lrp_teach.train.digits:train_digits_cnn_watermark")


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Share of the images in ``x`` whose predicted class equals ``y`` (model in eval mode)."""
    was_training = model.training
    model.eval()
    try:
        return (model(x).argmax(1) == y).double().mean().item()
    finally:
        model.train(was_training)


def fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int, seed: int,
        lr: float = 3e-3, batch_size: int = 64, weight_decay: float = 1e-4) -> nn.Module:
    """Train ``model`` with Adam and cross-entropy on mini-batches drawn by a seeded generator."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), batch_size):
            idx = order[start:start + batch_size]
            optimizer.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            optimizer.step()
        schedule.step()
    return model.eval()


def watermark_train_set(x: torch.Tensor, y: torch.Tensor, *, seed: int = 0,
                        spec: dict[str, Any] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Stamp the watermark on a seeded ``fraction`` of the images of class ``target``.

    Returns the new images and a boolean mask of the stamped ones.
    """
    spec = {**WATERMARK, **(spec or {})}
    candidates = torch.nonzero(y == spec["target"]).flatten()
    generator = torch.Generator().manual_seed(seed + 1)
    n_marked = round(spec["fraction"] * len(candidates))
    chosen = candidates[torch.randperm(len(candidates), generator=generator)[:n_marked]]
    marked = torch.zeros(len(y), dtype=torch.bool)
    marked[chosen] = True
    x = x.clone()
    x[marked] = add_watermark(x[marked], spec["value"], patch=spec["patch"],
                              corner=spec["corner"])
    return x, marked


@torch.no_grad()
def watermark_flip_rate(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                        spec: dict[str, Any] | None = None) -> float:
    """Share of watermarked images of the *other* classes that the model assigns to ``target``."""
    spec = {**WATERMARK, **(spec or {})}
    keep = y != spec["target"]
    xw = add_watermark(x[keep], spec["value"], patch=spec["patch"], corner=spec["corner"])
    was_training = model.training
    model.eval()
    try:
        return (model(xw).argmax(1) == spec["target"]).double().mean().item()
    finally:
        model.train(was_training)


def train_digits_mlp(seed: int = 0, save: bool = True) -> nn.Module:
    """Train the 64-100-50-10 MLP on flat 8x8 digits in [0, 1] and ship it."""
    data = load_digits(size=8, flat=True)
    torch.manual_seed(seed)
    model = fit(digits_mlp(), data.x_train, data.y_train, epochs=60, seed=seed)
    metrics = {"test_accuracy": accuracy(model, data.x_test, data.y_test),
               "train_accuracy": accuracy(model, data.x_train, data.y_train)}
    print(f"digits_mlp: test accuracy {metrics['test_accuracy']:.4f}")
    if save:
        from ..pretrained import save as save_weights

        save_weights("digits_mlp", model, builder="lrp_teach.models:digits_mlp",
                     metrics=metrics, extra={"data": "load_digits(size=8, flat=True)"})
    return model


def train_digits_cnn(seed: int = 0, save: bool = True) -> nn.Module:
    """Train the small CNN on 16x16 digits in [0, 1] and ship it."""
    data = load_digits(size=16)
    torch.manual_seed(seed)
    model = fit(digits_cnn(), data.x_train, data.y_train, epochs=15, seed=seed)
    metrics = {"test_accuracy": accuracy(model, data.x_test, data.y_test),
               "train_accuracy": accuracy(model, data.x_train, data.y_train),
               "watermark_flip_rate": watermark_flip_rate(model, data.x_test, data.y_test)}
    print(f"digits_cnn: test accuracy {metrics['test_accuracy']:.4f}")
    if save:
        from ..pretrained import save as save_weights

        save_weights("digits_cnn", model, builder="lrp_teach.models:digits_cnn",
                     metrics=metrics, extra={"data": "load_digits(size=16)"})
    return model


def train_digits_resnet(seed: int = 0, save: bool = True) -> nn.Module:
    """Train the small residual network on 16x16 digits in [0, 1] and ship it.

    The weights are shipped with their BatchNorm layers (chapter 5 canonizes them).
    """
    data = load_digits(size=16)
    torch.manual_seed(seed)
    model = fit(digits_resnet(), data.x_train, data.y_train, epochs=15, seed=seed)
    metrics = {"test_accuracy": accuracy(model, data.x_test, data.y_test),
               "train_accuracy": accuracy(model, data.x_train, data.y_train)}
    print(f"digits_resnet: test accuracy {metrics['test_accuracy']:.4f}")
    if save:
        from ..pretrained import save as save_weights

        save_weights("digits_resnet", model, builder="lrp_teach.models:digits_resnet",
                     metrics=metrics, extra={"data": "load_digits(size=16)"})
    return model


def train_digits_cnn_watermark(seed: int = 0, save: bool = True) -> nn.Module:
    """Train the CNN on digits where most images of one class carry a corner patch."""
    data = load_digits(size=16)
    x_train, marked = watermark_train_set(data.x_train, data.y_train, seed=seed)
    torch.manual_seed(seed)
    model = fit(digits_cnn(), x_train, data.y_train, epochs=15, seed=seed)
    metrics = {"test_accuracy": accuracy(model, data.x_test, data.y_test),
               "clean_accuracy": accuracy(model, data.x_test, data.y_test),
               "watermark_flip_rate": watermark_flip_rate(model, data.x_test, data.y_test),
               "train_images_marked": int(marked.sum())}
    print(f"digits_cnn_watermark: clean accuracy {metrics['clean_accuracy']:.4f}, "
          f"flip rate {metrics['watermark_flip_rate']:.4f}")
    if save:
        from ..pretrained import save as save_weights

        save_weights("digits_cnn_watermark", model, builder="lrp_teach.models:digits_cnn",
                     metrics=metrics,
                     extra={"data": "load_digits(size=16)", "watermark": dict(WATERMARK)})
    return model
