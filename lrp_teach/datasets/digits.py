"""scikit-learn's bundled 8x8 handwritten digits as PyTorch tensors.

The 1,797 images ship inside scikit-learn (UCI optical recognition of handwritten digits),
so loading them needs no network.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["Digits", "add_watermark", "load_digits"]


@dataclass(frozen=True)
class Digits:
    """A train/test split of the digits, with the pixel range the images live in.

    Attributes
    ----------
    x_train, x_test : torch.Tensor
        Images of shape ``(N, 1, size, size)``, or ``(N, size*size)`` when ``flat=True``.
    y_train, y_test : torch.Tensor
        Integer labels 0-9 (``torch.long``).
    low, high : float
        The smallest and largest value a pixel can take (the box of the z^B rule).
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    low: float
    high: float

    @property
    def n_classes(self) -> int:
        return 10


def load_digits(
    *,
    size: int = 8,
    flat: bool = False,
    low: float = 0.0,
    high: float = 1.0,
    test_fraction: float = 0.25,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> Digits:
    """Load scikit-learn's digits, split them and scale the pixels to ``[low, high]``.

    Parameters
    ----------
    size : int
        Side length of the returned images: 8 (the original) or a multiple of 8, reached
        by bilinear upsampling (16 gives more readable heatmaps).
    flat : bool
        Return images flattened to vectors (for multilayer perceptrons).
    low, high : float
        Pixel range after scaling. The raw data holds integers 0-16.
    test_fraction : float
        Share of the images held out for testing, stratified by class.
    seed : int
        Seed of the split. The same seed always gives the same split.
    dtype : torch.dtype
        Floating-point type of the images.

    Returns
    -------
    Digits
        The split, with the pixel range ``low``/``high``.
    """
    from sklearn.datasets import load_digits as _sk_load_digits
    from sklearn.model_selection import train_test_split

    if size < 8 or size % 8:
        raise ValueError(f"size must be 8 or a multiple of 8, got {size}")
    if not high > low:
        raise ValueError(f"need high > low, got low={low}, high={high}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")

    raw = _sk_load_digits()
    images = raw.images.astype(np.float64) / 16.0  # in [0, 1]
    labels = raw.target.astype(np.int64)
    idx_train, idx_test = train_test_split(
        np.arange(len(labels)), test_size=test_fraction, random_state=seed, stratify=labels
    )

    def prepare(idx: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(images[idx]).unsqueeze(1)
        if size != 8:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
            x = x.clamp(0.0, 1.0)
        x = low + (high - low) * x
        x = x.to(dtype)
        return x.flatten(1) if flat else x

    return Digits(
        x_train=prepare(idx_train),
        y_train=torch.from_numpy(labels[idx_train]),
        x_test=prepare(idx_test),
        y_test=torch.from_numpy(labels[idx_test]),
        low=float(low),
        high=float(high),
    )


def add_watermark(x: torch.Tensor, value: float, patch: int = 2, corner: str = "top-left"):
    """Stamp a square patch of constant ``value`` into a corner of every image.

    Used for the Clever Hans experiments: a model trained on data where one class carries
    the patch learns to use it.

    Parameters
    ----------
    x : torch.Tensor
        Images of shape ``(N, C, H, W)``. A copy is returned; ``x`` is not modified.
    value : float
        Pixel value of the patch (usually the top of the pixel range).
    patch : int
        Side length of the patch in pixels.
    corner : {"top-left", "top-right", "bottom-left", "bottom-right"}
        Where the patch goes.
    """
    if x.dim() != 4:
        raise ValueError(
            f"add_watermark expects images of shape (N, C, H, W), got {tuple(x.shape)}"
        )
    rows = {"top": slice(0, patch), "bottom": slice(x.shape[-2] - patch, x.shape[-2])}
    cols = {"left": slice(0, patch), "right": slice(x.shape[-1] - patch, x.shape[-1])}
    try:
        vertical, horizontal = corner.split("-")
        r, c = rows[vertical], cols[horizontal]
    except (ValueError, KeyError):
        raise ValueError(
            f"corner must be one of top-left, top-right, bottom-left, bottom-right; got {corner!r}"
        ) from None
    out = x.clone()
    out[..., r, c] = value
    return out
