"""Small helpers shared by the chapters: seeding and device/dtype handling."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

__all__ = ["seed_everything", "set_book_defaults"]


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
