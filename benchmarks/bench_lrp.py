"""Speed and memory of ``lrp_teach.explain`` against an input gradient, captum and zennit.

Two CNNs with random weights (64x64 RGB inputs, 10 classes), CPU, one thread, batch sizes
1 and 8: a VGG-style ``nn.Sequential`` and a small ResNet with a functional forward
(BasicBlocks, ``out + identity``, ``torch.flatten``; BatchNorm folded by ``lt.canonize``).
Methods:

* ``gradient``: the reference, an input-only gradient (weights frozen,
  ``torch.autograd.grad`` with respect to x): one forward, one backward;
* ``eps``, ``gamma``: ``lt.explain`` with ``Epsilon(1e-6)`` / ``Gamma(0.25)`` on every layer
  (floors 1.0x and about 1.5x: γ needs a third convolution per layer, conv(a, W+));
* ``lrp_teach``: ``lt.explain`` with ``EpsilonGammaBox(-1, 1)``;
* ``captum``: ``captum.attr.LRP`` with ``GammaRule`` on convolutions and ``EpsilonRule`` on
  dense layers (captum has no z^B rule; its first layer gets gamma);
* ``zennit``: zennit's ``EpsilonGammaBox(-1, 1)`` through its ``Gradient`` attributor (hooks
  registered once, outside the timed call).

Times are medians over repetitions run round-robin (so that load from other processes
spreads over all methods).  Peak memory is the growth of the resident set size during one
(warm) call, measured in a fresh subprocess per method and batch size (Linux only).

Run: ``python benchmarks/bench_lrp.py`` (``--repeats N``, ``--quick``).
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import subprocess
import sys
import time
import types

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
from torch import nn  # noqa: E402

import lrp_teach as lt  # noqa: E402

METHODS = ("gradient", "eps", "gamma", "lrp_teach", "captum", "zennit")
MODELS = ("vgg", "resnet")
LOW, HIGH = -1.0, 1.0


def import_zennit():
    """Import zennit, or return None when it is not installed.

    zennit 0.5.1 imports ``torchvision.models.resnet`` at import time, only to name two
    classes for its ResNet canonizer; zennit's rules, composites and attributors do not use
    torchvision.  PyPI's torchvision wheels do not import with this torch build, so when
    ``import torchvision`` fails we register a minimal stand-in module holding two
    placeholder classes, which is enough for zennit's import and is never used here.
    """
    try:
        import torchvision  # noqa: F401
    except ImportError:
        tv = types.ModuleType("torchvision")
        models = types.ModuleType("torchvision.models")
        resnet = types.ModuleType("torchvision.models.resnet")

        class BasicBlock(nn.Module):
            """Placeholder for torchvision's ResNet block (never instantiated)."""

        class Bottleneck(nn.Module):
            """Placeholder for torchvision's ResNet block (never instantiated)."""

        resnet.BasicBlock, resnet.Bottleneck = BasicBlock, Bottleneck
        tv.models, models.resnet = models, resnet
        sys.modules.update({"torchvision": tv, "torchvision.models": models,
                            "torchvision.models.resnet": resnet})
    try:
        import zennit.attribution
        import zennit.composites
    except ImportError:
        return None
    return zennit


def vgg_like(seed: int = 0) -> tuple[nn.Sequential, nn.Module]:
    """The benchmark CNN, and a captum-compatible wrapper sharing the same layers."""
    torch.manual_seed(seed)
    cfg = [32, 32, "M", 64, 64, "M", 128, 128, "M", 128, 128, "M"]
    layers: list[nn.Module] = []
    channels = 3
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            layers += [nn.Conv2d(channels, v, 3, padding=1), nn.ReLU()]
            channels = v
    features = nn.Sequential(*layers)
    classifier = nn.Sequential(nn.Linear(128 * 4 * 4, 256), nn.ReLU(), nn.Dropout(),
                               nn.Linear(256, 256), nn.ReLU(), nn.Dropout(), nn.Linear(256, 10))
    model = nn.Sequential(features, nn.Flatten(), classifier).eval()

    class CaptumNet(nn.Module):  # captum has no rule for nn.Flatten
        def __init__(self):
            super().__init__()
            self.features, self.classifier = features, classifier

        def forward(self, x):
            return self.classifier(self.features(x).flatten(1))

    return model, CaptumNet().eval()


class Block(nn.Module):
    """A BasicBlock: conv-BN-ReLU-conv-BN, plus the (downsampled) input, then ReLU."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                      nn.BatchNorm2d(cout))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + (x if self.down is None else self.down(x)))


class ResNet(nn.Module):
    """Stem, four stages of two BasicBlocks (32-64-128-128 channels), pool, fc."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 3, 1, 1, bias=False), nn.BatchNorm2d(32),
                                  nn.ReLU())
        blocks, cin = [], 32
        for cout, stride in ((32, 1), (64, 2), (128, 2), (128, 2)):
            blocks += [Block(cin, cout, stride), Block(cout, cout, 1)]
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(128, 10)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))


def resnet(seed: int = 0) -> nn.Module:
    """The benchmark ResNet, with random BatchNorm statistics, canonized."""
    torch.manual_seed(seed)
    model = ResNet()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    model.eval()
    return lt.canonize(model, inputs(2))


def build(which: str):
    if which == "vgg":
        return vgg_like()
    model = resnet()
    return model, model


def make_method(name: str, model: nn.Module, wrapper: nn.Module):
    """A function x -> relevance (or gradient) for ``target = 0``; None if unavailable."""
    if name == "gradient":  # input-only: a frozen copy, so no weight gradient is built
        frozen = copy.deepcopy(model).requires_grad_(False)

        def run(x):
            x = x.detach().requires_grad_(True)
            return torch.autograd.grad(frozen(x)[:, 0].sum(), x)[0]
        return run
    composites = {
        "eps": lt.composites.Uniform(lt.rules.Epsilon(1e-6)),
        "gamma": lt.composites.Uniform(lt.rules.Gamma(0.25)),
        "lrp_teach": lt.composites.EpsilonGammaBox(LOW, HIGH),
    }
    if name in composites:
        comp = composites[name]
        return lambda x: lt.explain(model, x, 0, comp)
    if name == "captum":
        if wrapper is model and not isinstance(model, nn.Sequential):
            return None  # captum's LRP has no rule for the functional residual sum
        try:
            from captum.attr import LRP
            from captum.attr._utils.lrp_rules import EpsilonRule, GammaRule
        except ImportError:
            return None
        for m in wrapper.modules():
            if isinstance(m, nn.Conv2d):
                m.rule = GammaRule(gamma=0.25)
            elif isinstance(m, nn.Linear):
                m.rule = EpsilonRule(epsilon=1e-6)
        lrp = LRP(copy.deepcopy(wrapper))
        return lambda x: lrp.attribute(x.clone().requires_grad_(True), target=0)
    if name == "zennit":
        zennit = import_zennit()
        if zennit is None or not isinstance(model, nn.Sequential):
            return None  # zennit's hooks cannot see the functional residual sum
        comp = zennit.composites.EpsilonGammaBox(low=LOW, high=HIGH)
        # zennit registers hooks on the model: give it its own copy
        attributor = zennit.attribution.Gradient(model=copy.deepcopy(model), composite=comp)
        attributor.__enter__()  # hooks stay registered for the whole benchmark

        def run(x):
            onehot = torch.zeros(x.shape[0], 10)
            onehot[:, 0] = 1
            # zennit starts from the given output relevance: the logit, as in lrp_teach
            return attributor(x.clone().requires_grad_(True), lambda out: out * onehot)[1]
        return run
    raise ValueError(name)


def inputs(batch: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(batch)
    return torch.rand(batch, 3, 64, 64, generator=g) * (HIGH - LOW) + LOW


def _status_mb(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{key} not in /proc/self/status")


def memory_child(which: str, name: str, batch: int) -> None:
    """Print the peak RSS growth (MB) of one call of ``name`` (run in a fresh process).

    A first call warms up the libraries; then the kernel's peak-RSS counter is reset
    (``/proc/self/clear_refs``) and the second call's peak above the current RSS is
    reported.  The parent starts this process with glibc's mmap threshold fixed, so that
    freed tensors return to the system and the RSS follows the live memory.
    """
    torch.set_num_threads(1)
    model, wrapper = build(which)
    fn = make_method(name, model, wrapper)
    if fn is None:
        print("nan")
        return
    x = inputs(batch)
    fn(x)
    before = _status_mb("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    fn(x)
    print(f"{_status_mb('VmHWM') - before:.1f}")


def measure_memory(which: str, name: str, batch: int) -> float:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="65536")
    out = subprocess.run([sys.executable, __file__, "--memory-child", which, name, str(batch)],
                         capture_output=True, text=True, check=True, env=env)
    return float(out.stdout.strip().splitlines()[-1])


def run_model(which: str, repeats: int, quick: bool) -> None:
    model, wrapper = build(which)
    fns = {name: make_method(name, model, wrapper) for name in METHODS}
    available = [n for n in METHODS if fns[n] is not None]
    print(f"\n== {which}: torch {torch.__version__}, 1 thread, 3x64x64, {repeats} repeats")
    missing = [n for n in METHODS if fns[n] is None]
    if missing:
        print(f"not available for this model: {', '.join(missing)}")
    x1 = inputs(1)
    R_ours = fns["lrp_teach"](x1)
    if fns["zennit"] is not None:
        R_z = fns["zennit"](x1)
        rel = float((R_ours - R_z).abs().max() / R_z.abs().max())
        print(f"lrp_teach vs zennit EpsilonGammaBox: largest difference {rel:.1e} of max |R|")
    rows = []
    for batch in (1, 8):
        x = inputs(batch)
        times = {n: [] for n in available}
        for n in available:  # warm-up
            fns[n](x)
        for _ in range(repeats):
            for n in available:
                t0 = time.perf_counter()
                fns[n](x)
                times[n].append(time.perf_counter() - t0)
        med = {n: statistics.median(v) for n, v in times.items()}
        mem = {} if quick else {n: measure_memory(which, n, batch) for n in available}
        rows.append((batch, med, mem))
    head = f"{'batch':>5}  {'method':<10} {'median ms':>10} {'x gradient':>11} {'peak MB':>8}"
    head += f" {'x gradient':>11}"
    print(head)
    print("-" * len(head))
    for batch, med, mem in rows:
        for n in available:
            m = mem.get(n, float("nan"))
            mg = mem.get("gradient", float("nan"))
            print(f"{batch:>5}  {n:<10} {1e3 * med[n]:>10.1f} {med[n] / med['gradient']:>11.2f}"
                  f" {m:>8.1f} {m / mg if mg else float('nan'):>11.2f}")
    for batch, med, mem in rows:
        g = med["gradient"]
        parts = [f"eps {med['eps'] / g:.2f} (target <= 1.05)",
                 f"gamma {med['gamma'] / g:.2f} (<= 1.58)",
                 f"EpsilonGammaBox {med['lrp_teach'] / g:.2f} (<= 1.5)"]
        if "zennit" in med:
            parts.append(f"zennit/LRP {med['zennit'] / med['lrp_teach']:.2f} (>= 4)")
        if "captum" in med:
            parts.append(f"captum/LRP {med['captum'] / med['lrp_teach']:.2f} (>= 1)")
        if mem:
            parts.append(f"memory {mem['lrp_teach'] / mem['gradient']:.2f} (<= 1.5)")
        print(f"{which} batch {batch}: " + "; ".join(parts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="3 repeats, no memory")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--memory-child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        which, name, batch = args.memory_child
        memory_child(which, name, int(batch))
        return
    torch.set_num_threads(1)
    repeats = 3 if args.quick else args.repeats
    for which in args.models:
        run_model(which, repeats, args.quick)


if __name__ == "__main__":
    main()
