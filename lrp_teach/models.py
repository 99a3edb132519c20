"""The small networks that the book explains, built from layers the LRP engine supports.

Every model is a (nested) :class:`torch.nn.Sequential` of ``Linear``, ``Conv2d``,
``BatchNorm2d``, ``ReLU``, ``MaxPool2d`` and ``Flatten`` layers, so that composites can
address its layers by type, by index or by name (``features.0``, ``classifier.3``), and
:func:`lrp_teach.canonize` can fold each BatchNorm into the convolution before it.

The shipped weights (``lt.pretrained.load("digits_cnn")`` etc.) were trained by the recipes
in :mod:`lrp_teach.train.digits`.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

__all__ = ["count_parameters", "digits_cnn", "digits_mlp"]


def digits_mlp(hidden: tuple[int, int] = (100, 50), n_classes: int = 10) -> nn.Sequential:
    """A ReLU multilayer perceptron for flattened 8x8 digits (64 inputs in ``[0, 1]``).

    The forward pass is the one of the LRP overview :cite:`montavon2019overview`,

    .. math:: a^{(l)}_k = \\max\\big(0, \\textstyle\\sum_j a^{(l-1)}_j w_{jk} + b_k\\big),

    with a linear top layer whose outputs are the class logits.

    Parameters
    ----------
    hidden : tuple of two ints
        Widths of the two hidden layers (64-100-50-10 by default).
    n_classes : int
        Number of output logits.

    Returns
    -------
    torch.nn.Sequential
        ``Linear(64, h1), ReLU, Linear(h1, h2), ReLU, Linear(h2, n_classes)``.
    """
    if len(hidden) != 2 or min(hidden) < 1:
        raise ValueError(f"hidden must be two positive widths, got {hidden!r}")
    h1, h2 = (int(h) for h in hidden)
    return nn.Sequential(
        nn.Linear(64, h1),
        nn.ReLU(),
        nn.Linear(h1, h2),
        nn.ReLU(),
        nn.Linear(h2, n_classes),
    )


def digits_cnn(channels: tuple[int, int] = (16, 32), hidden: int = 64, n_classes: int = 10,
               size: int = 16) -> nn.Sequential:
    """A small convolutional network for 16x16 digits in ``[0, 1]`` (about 38k parameters).

    Two blocks ``Conv3x3 -> BatchNorm -> ReLU -> MaxPool2x2`` (``features``) are followed by
    ``Flatten -> Linear -> ReLU -> Linear`` (``classifier``). A convolution computes the
    same pre-activation as a linear layer whose weights are shared across positions
    :cite:`montavon2019overview`,

    .. math:: z_k = \\textstyle\\sum_{j} a_j w_{jk} + b_k,\\quad
              w_{jk} = W[c_k, c_j, p_j - p_k],

    so every LRP rule for linear layers applies to it unchanged.

    Parameters
    ----------
    channels : tuple of two ints
        Output channels of the two convolutions.
    hidden : int
        Width of the hidden fully connected layer.
    n_classes : int
        Number of output logits.
    size : int
        Side length of the input images (a multiple of 4).

    Returns
    -------
    torch.nn.Sequential
        With two named children, ``features`` and ``classifier``.
    """
    if len(channels) != 2 or min(channels) < 1:
        raise ValueError(f"channels must be two positive widths, got {channels!r}")
    if size < 4 or size % 4:
        raise ValueError(f"size must be a positive multiple of 4, got {size}")
    c1, c2 = (int(c) for c in channels)
    features = nn.Sequential(
        nn.Conv2d(1, c1, kernel_size=3, padding=1),
        nn.BatchNorm2d(c1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, kernel_size=3, padding=1),
        nn.BatchNorm2d(c2),
        nn.ReLU(),
        nn.MaxPool2d(2),
    )
    classifier = nn.Sequential(
        nn.Flatten(),
        nn.Linear(c2 * (size // 4) ** 2, hidden),
        nn.ReLU(),
        nn.Linear(hidden, n_classes),
    )
    return nn.Sequential(OrderedDict(features=features, classifier=classifier))


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
