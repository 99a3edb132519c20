"""The small networks that the book explains, built from layers the LRP engine supports.

``digits_mlp`` and ``digits_cnn`` are (nested) :class:`torch.nn.Sequential` models of
``Linear``, ``Conv2d``, ``BatchNorm2d``, ``ReLU``, ``MaxPool2d`` and ``Flatten`` layers, so
that composites can address their layers by type, by index or by name (``features.0``,
``classifier.3``). ``digits_resnet`` is a residual network with a forward of its own
(functional ``F.relu``, skip additions, ``torch.flatten``), the kind of model the engine
explains by running that forward. :func:`lrp_teach.canonize` folds each BatchNorm into the
convolution before it.

The shipped weights (``lt.pretrained.load("digits_cnn")`` etc.) were trained by the recipes
in :mod:`lrp_teach.train.digits`.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BasicBlock", "DigitsResNet", "count_parameters", "digits_cnn", "digits_mlp",
           "digits_resnet"]


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


class BasicBlock(nn.Module):
    """A residual block of two 3x3 convolutions with BatchNorm and a skip connection.

    The block computes :math:`\\mathrm{relu}(F(x) + S(x))` :cite:`he2016resnet`, with the
    residual branch :math:`F = \\mathrm{bn_2} \\circ \\mathrm{conv_2} \\circ \\mathrm{relu}
    \\circ \\mathrm{bn_1} \\circ \\mathrm{conv_1}` and the skip :math:`S` either the identity
    or, when the block changes the shape (``stride > 1`` or a new channel count), the
    ``downsample`` branch ``1x1 conv -> BatchNorm``. The convolutions have no bias: the
    BatchNorm after each of them supplies the shift.

    Parameters
    ----------
    c_in, c_out : int
        Input and output channels.
    stride : int
        Stride of the first convolution (and of the downsample convolution).
    """

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample: nn.Module | None = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        out = out + identity
        return F.relu(out)


class DigitsResNet(nn.Module):
    """A small residual network: a stem, residual blocks, a global average pool and a Linear layer.

    Attributes ``conv1``/``bn1`` (the stem), ``block1``, ``block2``, ... (the blocks),
    ``avgpool`` and ``fc``; module paths such as ``block2.downsample.0`` name the layers.
    """

    def __init__(self, channels: tuple[int, ...], strides: tuple[int, ...],
                 n_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, channels[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels[0])
        c_in = channels[0]
        self.n_blocks = len(channels)
        for i, (c_out, stride) in enumerate(zip(channels, strides, strict=True), start=1):
            self.add_module(f"block{i}", BasicBlock(c_in, c_out, stride))
            c_in = c_out
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        for i in range(1, self.n_blocks + 1):
            x = getattr(self, f"block{i}")(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.fc(x)


def digits_resnet(channels: tuple[int, ...] = (16, 32, 32), strides: tuple[int, ...] = (1, 2, 2),
                  n_classes: int = 10) -> DigitsResNet:
    """A small residual network for digits in ``[0, 1]`` (about 39k parameters).

    A stem ``Conv3x3 -> BatchNorm -> ReLU`` is followed by one :class:`BasicBlock` per entry
    of ``channels``, an adaptive average pool, ``torch.flatten`` and a Linear layer. With the
    defaults, ``block1`` keeps 16 channels and has an identity skip; ``block2`` (16 -> 32)
    and ``block3`` (32 -> 32) halve the resolution and have a ``downsample`` skip. The
    global pool makes the network accept any image size (the book uses 16x16).

    Parameters
    ----------
    channels : tuple of ints
        Output channels of the stem (``channels[0]``) and of each block.
    strides : tuple of ints
        Stride of each block (1 or 2), one per entry of ``channels``.
    n_classes : int
        Number of output logits.

    Returns
    -------
    DigitsResNet
    """
    if not channels or min(channels) < 1:
        raise ValueError(f"channels must be positive widths, got {channels!r}")
    if len(strides) != len(channels) or not set(strides) <= {1, 2}:
        raise ValueError(f"strides must be 1 or 2, one per block, got {strides!r}")
    return DigitsResNet(tuple(int(c) for c in channels), tuple(int(s) for s in strides),
                        n_classes)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
