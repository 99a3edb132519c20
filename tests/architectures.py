"""Small test architectures that are *not* an ``nn.Sequential``, written for these tests.

They have the shapes of well-known families (torchvision cannot be installed next to the
pinned CPU torch, and its source is not copied here), at a size that runs in milliseconds
in float64:

* :class:`TinyVGG`: ``features`` / ``avgpool`` / ``classifier``, ``torch.flatten`` in
  ``forward`` (the torchvision layout);
* :class:`TinyResNet`: a stem (conv, BN, ReLU, max-pool), :class:`BasicBlock` and
  :class:`Bottleneck` blocks with BatchNorm after every convolution and a downsample branch
  (1x1 conv with stride 2, BN), written partly functionally (``F.relu``, ``out += identity``,
  ``out = out + identity``, ``torch.flatten``);
* :class:`TinyDenseNet`: layers whose outputs are concatenated to their inputs, a transition
  (1x1 conv, average pooling), a classifier;
* :class:`TwoInput`: ``forward(image, vector)`` with two branches joined by ``torch.cat``;
* :class:`FunctionalBNCNN`: a learner's BatchNorm CNN written with ``F.relu`` and
  ``torch.flatten`` (for canonization).

Every ``make_*`` factory takes a seed and a dtype, returns the model in eval mode and, with
``bias=False``, a version without any bias (its BatchNorms then have zero shift, so that the
folded layers stay bias-free and LRP-0 conserves relevance exactly).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "DenseLayer",
    "FunctionalBNCNN",
    "TinyDenseNet",
    "TinyResNet",
    "TinyVGG",
    "TwoInput",
    "he_init",
    "make_densenet",
    "make_functional_cnn",
    "make_resnet",
    "make_two_input",
    "make_vgg",
    "randomize_batchnorm",
]

# input shapes used by the tests (batch first)
VGG_INPUT = (3, 12, 12)
RESNET_INPUT = (3, 16, 16)
DENSENET_INPUT = (2, 8, 8)
TWO_INPUT = ((1, 8, 8), (5,))
FUNCTIONAL_INPUT = (1, 8, 8)
N_CLASSES = 5


class TinyVGG(nn.Module):
    """A torchvision-style VGG at toy size: 12x12 inputs, two max-pools, 3x3 features, an
    adaptive average pool to 2x2 (overlapping windows), a Linear/ReLU/Dropout classifier."""

    def __init__(self, bias: bool = True, n_classes: int = N_CLASSES) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1, bias=bias), nn.ReLU(inplace=True),
            nn.Conv2d(4, 4, 3, padding=1, bias=bias), nn.ReLU(inplace=True),
            nn.MaxPool2d(2, 2),
            nn.Conv2d(4, 6, 3, padding=1, bias=bias), nn.ReLU(inplace=True),
            nn.MaxPool2d(2, 2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((2, 2))
        self.classifier = nn.Sequential(
            nn.Linear(6 * 2 * 2, 16, bias=bias), nn.ReLU(True), nn.Dropout(0.5),
            nn.Linear(16, n_classes, bias=bias),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


def conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with BN; the sum goes through its own ReLU module ``relu_out``
    (so that the tests can read the relevance at the sum as ``"<block>.relu_out:in"``)."""

    expansion = 1

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = conv3x3(cin, cout, stride)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = conv3x3(cout, cout)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(conv1x1(cin, cout, stride), nn.BatchNorm2d(cout))
        self.relu_out = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out + identity
        return self.relu_out(out)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride), 1x1 expand, each with BN; one ReLU module
    called three times; the skip added in place (``out += identity``)."""

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int = 1) -> None:
        super().__init__()
        cout = width * self.expansion
        self.conv1 = conv1x1(cin, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, stride)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, cout)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(conv1x1(cin, cout, stride), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        out = self.relu(out)
        return out


class TinyResNet(nn.Module):
    """Stem (3x3 conv, BN, ReLU, 3x3/2 max-pool) -> BasicBlock(4) -> BasicBlock(8, /2,
    downsample) -> Bottleneck(width 2 -> 8, /2, downsample) -> Bottleneck(identity) ->
    adaptive average pool -> fc.  16x16 inputs."""

    def __init__(self, bias: bool = True, n_classes: int = N_CLASSES, maxpool: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, padding=1) if maxpool else nn.Identity()
        self.layer1 = nn.Sequential(BasicBlock(4, 4))
        self.layer2 = nn.Sequential(BasicBlock(4, 8, stride=2))
        self.layer3 = nn.Sequential(Bottleneck(8, 2, stride=2), Bottleneck(8, 2))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(8, n_classes, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.fc(x)


class DenseLayer(nn.Module):
    """conv 3x3 -> BN -> ReLU, concatenated to the input along the channels."""

    def __init__(self, cin: int, growth: int, bias: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, growth, 3, padding=1, bias=bias)
        self.norm = nn.BatchNorm2d(growth)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        new = F.relu(self.norm(self.conv(x)))
        return torch.cat([x, new], 1)


class TinyDenseNet(nn.Module):
    """Stem conv + ReLU, a dense block of three layers (growth 3), a transition (1x1 conv,
    ReLU, 2x2 average pool), a functional adaptive average pool to 2x2, ``view`` and a
    two-layer classifier.  8x8 inputs with 2 channels."""

    def __init__(self, bias: bool = True, n_classes: int = N_CLASSES) -> None:
        super().__init__()
        self.stem = nn.Conv2d(2, 4, 3, padding=1, bias=bias)
        growth = 3
        self.block = nn.ModuleList([DenseLayer(4 + i * growth, growth, bias) for i in range(3)])
        cin = 4 + 3 * growth
        self.transition = nn.Sequential(
            nn.Conv2d(cin, 6, 1, bias=bias), nn.ReLU(), nn.AvgPool2d(2))
        self.head = nn.Linear(6 * 2 * 2, 10, bias=bias)
        self.out = nn.Linear(10, n_classes, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))
        for layer in self.block:
            x = layer(x)
        x = self.transition(x)
        x = F.adaptive_avg_pool2d(x, 2)
        x = x.view(x.size(0), -1)
        return self.out(F.relu(self.head(x)))


class TwoInput(nn.Module):
    """``forward(image, vector)``: a conv branch on the image (1x8x8), a Linear branch on
    the vector (5), scaled by a constant, concatenated, two Linear layers on top."""

    def __init__(self, bias: bool = True, n_classes: int = N_CLASSES) -> None:
        super().__init__()
        self.image_conv = nn.Conv2d(1, 3, 3, bias=bias)  # 8x8 -> 6x6
        self.vector_fc = nn.Linear(5, 6, bias=bias)
        self.joint = nn.Linear(3 * 3 * 3 + 6, 12, bias=bias)
        self.out = nn.Linear(12, n_classes, bias=bias)

    def forward(self, image: torch.Tensor, vector: torch.Tensor) -> torch.Tensor:
        a = F.max_pool2d(F.relu(self.image_conv(image)), 2)  # 3x3x3
        a = torch.flatten(a, 1)
        b = torch.relu(self.vector_fc(vector)) * 0.5
        h = F.relu(self.joint(torch.cat([a, b], dim=1)))
        return self.out(h)


class FunctionalBNCNN(nn.Module):
    """A learner's BatchNorm CNN with a functional forward (``F.relu``, ``F.max_pool2d``,
    ``torch.flatten``): conv-BN twice, then Linear-BatchNorm1d-ReLU-Linear.  1x8x8 inputs."""

    def __init__(self, bias: bool = True, n_classes: int = N_CLASSES) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 6, 3, bias=bias)  # 4x4 -> 2x2
        self.bn2 = nn.BatchNorm2d(6)
        self.fc1 = nn.Linear(6 * 2 * 2, 10, bias=bias)
        self.bn3 = nn.BatchNorm1d(10)
        self.fc2 = nn.Linear(10, n_classes, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.relu(self.bn2(self.conv2(x)))
        x = torch.flatten(x, 1)
        x = F.relu(self.bn3(self.fc1(x)))
        return self.fc2(x)


def randomize_batchnorm(model: nn.Module, seed: int = 0, shift: bool = True) -> nn.Module:
    """Give every BatchNorm random running statistics and affine parameters (in place), so
    that folding is not the identity.  ``shift=False`` keeps the folded shift at zero
    (running mean 0, beta 0), for bias-free models."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                dtype = next(m.parameters()).dtype if m.affine else torch.float32
                var = torch.rand(n, generator=g) + 0.5
                mean = 0.3 * torch.randn(n, generator=g) * shift
                if m.track_running_stats:
                    m.running_var.copy_(var.to(dtype))
                    m.running_mean.copy_(mean.to(dtype))
                    m.num_batches_tracked.fill_(7)
                if m.affine:
                    # scales away from 0 (both signs): the folded weights stay well scaled
                    sign = torch.where(torch.rand(n, generator=g) < 0.2, -1.0, 1.0)
                    m.weight.copy_((sign * (0.5 + torch.rand(n, generator=g))).to(dtype))
                    m.bias.copy_((0.2 * torch.randn(n, generator=g) * shift).to(dtype))
    return model


def he_init(model: nn.Module, seed: int = 0) -> nn.Module:
    """He-normal weights and visible biases (in place): logits of order 1, and every bias
    doing something."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g).to(m.weight.dtype)
                               * (2 / fan_in) ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
    return model


def _finish(model: nn.Module, seed: int, dtype: torch.dtype, bias: bool) -> nn.Module:
    he_init(model, seed)
    randomize_batchnorm(model, seed + 1, shift=bias)
    return model.to(dtype).eval()


def make_vgg(seed: int = 0, dtype: torch.dtype = torch.float64, bias: bool = True) -> TinyVGG:
    torch.manual_seed(seed)
    return _finish(TinyVGG(bias), seed, dtype, bias)


def make_resnet(seed: int = 0, dtype: torch.dtype = torch.float64, bias: bool = True,
                maxpool: bool = True) -> TinyResNet:
    torch.manual_seed(seed)
    return _finish(TinyResNet(bias, maxpool=maxpool), seed, dtype, bias)


def make_densenet(seed: int = 0, dtype: torch.dtype = torch.float64,
                  bias: bool = True) -> TinyDenseNet:
    torch.manual_seed(seed)
    return _finish(TinyDenseNet(bias), seed, dtype, bias)


def make_two_input(seed: int = 0, dtype: torch.dtype = torch.float64,
                   bias: bool = True) -> TwoInput:
    torch.manual_seed(seed)
    return _finish(TwoInput(bias), seed, dtype, bias)


def inputs_for(name: str, batch: int = 3, seed: int = 0, dtype: torch.dtype = torch.float64,
               low: float = -1.0, high: float = 1.0):
    """Random inputs in ``[low, high]`` for the model ``name`` (a tuple for "two_input")."""
    g = torch.Generator().manual_seed(1000 + seed)

    def rand(shape):
        return (low + (high - low) * torch.rand((batch, *shape), generator=g)).to(dtype)

    if name == "two_input":
        return tuple(rand(s) for s in TWO_INPUT)
    shape = {"vgg": VGG_INPUT, "resnet": RESNET_INPUT, "densenet": DENSENET_INPUT,
             "functional_cnn": FUNCTIONAL_INPUT}[name]
    return rand(shape)


def make_functional_cnn(seed: int = 0, dtype: torch.dtype = torch.float64,
                        bias: bool = True) -> FunctionalBNCNN:
    torch.manual_seed(seed)
    return _finish(FunctionalBNCNN(bias), seed, dtype, bias)


MAKERS = {"vgg": make_vgg, "resnet": make_resnet, "densenet": make_densenet,
          "two_input": make_two_input, "functional_cnn": make_functional_cnn}
