"""Small helpers shared by the chapters: seeding and device/dtype handling."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

__all__ = ["accuracy", "fit_classifier", "seed_everything", "set_book_defaults"]


def seed_everything(seed: int = 0) -> torch.Generator:
    """Seed Python's, NumPy's and PyTorch's generators.

    Parameters
    ----------
    seed : int
        The seed for every generator.

    Returns
    -------
    torch.Generator
        A fresh generator seeded with ``seed``, for code that prefers an explicit one.
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    return torch.Generator().manual_seed(seed)


def set_book_defaults(seed: int = 0, threads: int = 1) -> None:
    """What every chapter's setup cell does: seed everything and limit torch's threads.

    Small models run much slower with several threads when the other cores are busy
    (measured up to 15x on a 2-core CI machine), so the book uses one thread.
    """
    seed_everything(seed)
    torch.set_num_threads(threads)


def fit_classifier(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int = 200,
    lr: float = 1e-2,
    weight_decay: float = 0.0,
    batch_size: int | None = None,
    seed: int = 0,
) -> list[float]:
    """Train ``model`` with Adam and cross-entropy; returns the loss after each epoch.

    Small helper for the chapters that train a model in a few seconds. Full-batch when
    ``batch_size`` is None. The model is left in eval mode.
    """
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    losses = []
    model.train()
    n = len(x)
    size = n if batch_size is None else batch_size
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator)
        total = 0.0
        for start in range(0, n, size):
            idx = order[start : start + size]
            optimiser.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            optimiser.step()
            total += loss.item() * len(idx)
        losses.append(total / n)
    model.eval()
    return losses


@torch.no_grad()
def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Share of the samples whose arg-max prediction equals the label."""
    return (model(x).argmax(dim=1) == y).double().mean().item()


def round_floats(x, digits: int = 6):
    """``x`` with every float inside dicts and lists rounded to ``digits`` decimals (for JSON)."""
    if isinstance(x, float):
        return round(x, digits)
    if isinstance(x, dict):
        return {k: round_floats(v, digits) for k, v in x.items()}
    if isinstance(x, list):
        return [round_floats(v, digits) for v in x]
    return x
