"""The engine runs the model's own forward: VGG, ResNet, DenseNet block and a two-input
model against the hand-written float64 reference of ``reference_graph.py``.

The first tests check the reference itself (against the Sequential engine, against a
second reference, and against Gradient x Input, which LRP-0 equals on bias-free ReLU
networks), so that the engine tests below compare with something known to be right.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from architectures import MAKERS, inputs_for
from reference_graph import Tape, layer_list, reference, rules_for
from reference_lrp import reference_lrp
from torch import nn

import lrp_teach as lt
from lrp_teach.composites import (
    BestPractice,
    Composite,
    EpsilonAlpha2Beta1,
    EpsilonGamma,
    EpsilonGammaBox,
    Uniform,
)
from lrp_teach.rules import Epsilon, Gamma, ZBox, Zero

torch.set_num_threads(1)

ARCHS = ["vgg", "resnet", "densenet", "two_input"]
BATCH = 3
TARGETS = torch.tensor([0, 3, 1])  # a different class per sample
TOL = 1e-10  # relative to the largest target logit of the batch

# (preset name for reference_graph.rules_for, composite factory)
COMPOSITES = {
    "epsilon_gamma": lambda: EpsilonGamma(),
    "epsilon_gamma_box": lambda: EpsilonGammaBox(-1.0, 1.0),
    "zero": lambda: Uniform(Zero()),
    "epsilon0.1": lambda: Uniform(Epsilon(0.1)),
    "epsilon_alpha2_beta1": lambda: EpsilonAlpha2Beta1(),
    "best_practice": lambda: BestPractice(-1.0, 1.0),
}


def as_tuple(v):
    return v if isinstance(v, tuple) else (v,)


def prepared(arch: str, bias: bool = True, seed: int = 0):
    """(original model, model for the engine, inputs): BN models are canonized first."""
    model = MAKERS[arch](seed=seed, bias=bias)
    inputs = inputs_for(arch, BATCH, seed)
    has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    engine_model = lt.canonize(model, *as_tuple(inputs)) if has_bn else model
    return model, engine_model, inputs


def assert_close(actual, expected, scale, tol=TOL, what=""):
    actual, expected = as_tuple(actual), as_tuple(expected)
    assert len(actual) == len(expected), what
    for a, e in zip(actual, expected, strict=True):
        assert a.shape == e.shape, f"{what}: shape {tuple(a.shape)} vs {tuple(e.shape)}"
        err = (a.double() - e).abs().max().item()
        assert err <= tol * scale, f"{what}: max abs difference {err:.3e} (scale {scale:.3g})"


def scale_of(ref) -> float:
    return max(ref.logit.abs().max().item(), 1.0)


def _values(model, x, paths_out, paths_in):
    """The values (cloned) at module outputs / first inputs, by the user's own hooks."""
    modules = dict(model.named_modules())
    got, handles = {}, []
    for p in paths_out:
        handles.append(modules[p].register_forward_hook(
            lambda m, i, o, p=p: got.__setitem__(p, o.detach().clone())))
    for p in paths_in:
        handles.append(modules[p].register_forward_hook(
            lambda m, i, o, p=p: got.__setitem__(p + ":in", i[0].detach().clone())))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return got


# ---- the reference, checked first ------------------------------------------------------


@pytest.mark.parametrize("preset", list(COMPOSITES))
def test_reference_matches_sequential_engine_and_second_reference(preset):
    """VGG rebuilt as an nn.Sequential (same modules, nn.Flatten): the graph reference
    equals the current engine and the layer-list reference."""
    model = MAKERS["vgg"]()
    x = inputs_for("vgg", BATCH)
    seq = nn.Sequential(*model.features, model.avgpool, nn.Flatten(), *model.classifier).eval()
    rules = rules_for(preset, layer_list(model, x), -1.0, 1.0)
    ref = reference(model, x, TARGETS, rules)
    assert_close(ref.output, model(x).detach(), scale_of(ref), 1e-12, "reference forward")
    assert_close(reference_lrp(seq, rules, x, TARGETS), ref.relevance, scale_of(ref),
                 what="reference_lrp")
    assert_close(lt.explain(seq, x, TARGETS, COMPOSITES[preset]()), ref.relevance,
                 scale_of(ref), what="engine on the Sequential")


@pytest.mark.parametrize("arch", ARCHS)
def test_reference_lrp0_is_gradient_times_input_without_bias(arch):
    """On bias-free ReLU networks (BN shift 0) LRP-0 without stabilizer is x * df/dx: this
    checks the reference's residual split, concatenation, pooling and BN fold."""
    model = MAKERS[arch](bias=False)
    inputs = as_tuple(inputs_for(arch, BATCH))
    xs = [v.clone().requires_grad_(True) for v in inputs]
    y = model(*xs)
    grads = torch.autograd.grad(y[torch.arange(BATCH), TARGETS].sum(), xs)
    n = len(layer_list(model, inputs))
    ref = reference(model, inputs, TARGETS, [Zero(stabilizer=0)] * n)
    assert_close(ref.output, y.detach(), scale_of(ref), 1e-12, "reference forward")
    assert_close(tuple(x.detach() * g for x, g in zip(xs, grads, strict=True)),
                 ref.relevance, scale_of(ref), what="gradient x input")
    assert abs(ref.logit).min() > 1e-3  # a non-trivial check


def test_reference_epsilon_at_sums_absorbs_the_stabilizer_share():
    """With epsilon at the sums and LRP-0 elsewhere, a bias-free ResNet loses exactly
    R * eps / (|z| + eps) at each sum; with a huge epsilon nearly everything is absorbed."""
    model = MAKERS["resnet"](bias=False)
    x = inputs_for("resnet", BATCH)
    n = len(layer_list(model, x))
    plain = reference(model, x, TARGETS, [Zero(stabilizer=0)] * n)
    eps = reference(model, x, TARGETS, [Zero(stabilizer=0)] * n, sums_epsilon=0.1)
    huge = reference(model, x, TARGETS, [Zero(stabilizer=0)] * n, sums_epsilon=1e9)
    total = plain.relevance[0].flatten(1).sum(1)
    assert_close(total, plain.logit, scale_of(plain), what="conservation")
    t_eps = eps.relevance[0].flatten(1).sum(1)
    assert ((t_eps - plain.logit).abs() > 1e-6).all()
    assert huge.relevance[0].abs().max() < 1e-6 * scale_of(plain)
    # at one sum, by hand: the two shares add up to R_z * z / (z + eps sign z)
    blk = "layer2.0"
    v = _values(model, x, [f"{blk}.downsample", f"{blk}.bn2"], [f"{blk}.relu_out"])
    z = v[f"{blk}.relu_out:in"]
    assert (v[f"{blk}.downsample"] + v[f"{blk}.bn2"] - z).abs().max() < 1e-12
    R_z = eps.at[f"{blk}.relu_out:in"]
    assert R_z.abs().max() > 1e-3
    shares = eps.at[f"{blk}.downsample"] + eps.at[f"{blk}.bn2"]
    sign = torch.where(z >= 0, 1.0, -1.0).to(z.dtype)
    assert_close(shares, R_z * z / (z + 0.1 * sign), scale_of(eps), what="epsilon sum")


# ---- the engine against the reference --------------------------------------------------


@pytest.mark.parametrize("preset", list(COMPOSITES))
@pytest.mark.parametrize("arch", ARCHS)
def test_engine_matches_reference(arch, preset):
    model, engine_model, inputs = prepared(arch)
    rules = rules_for(preset, layer_list(model, inputs), -1.0, 1.0)
    ref = reference(model, inputs, TARGETS, rules)
    R = lt.explain(engine_model, inputs, TARGETS, COMPOSITES[preset]())
    assert type(R) is type(inputs)
    assert_close(R, ref.relevance, scale_of(ref), what=f"{arch}/{preset}")


def test_engine_default_composite_and_predicted_target():
    """composite=None is EpsilonGamma, target=None the predicted class (per sample)."""
    model, engine_model, x = prepared("resnet")
    pred = model(x).argmax(1)
    ref = reference(model, x, pred, rules_for("epsilon_gamma", layer_list(model, x)))
    assert_close(lt.explain(engine_model, x), ref.relevance, scale_of(ref), what="defaults")
    ref3 = reference(model, x, torch.full((BATCH,), 3),
                     rules_for("epsilon_gamma", layer_list(model, x)))
    assert_close(lt.explain(engine_model, x, 3), ref3.relevance, scale_of(ref3), what="int")


def test_engine_tensor_bounds_for_zbox():
    """Per-channel tensor bounds (shape (3, 1, 1)) at the VGG's first convolution."""
    model, _, x = prepared("vgg")
    low = torch.tensor([-1.0, -1.2, -1.5], dtype=torch.float64).view(3, 1, 1)
    high = torch.tensor([1.0, 1.3, 1.1], dtype=torch.float64).view(3, 1, 1)
    layers = layer_list(model, x)
    ref = reference(model, x, TARGETS, rules_for("epsilon_gamma_box", layers, low, high))
    R = lt.explain(model, x, TARGETS, EpsilonGammaBox(low, high))
    assert_close(R, ref.relevance, scale_of(ref), what="tensor bounds")


@pytest.mark.parametrize("base", ["epsilon_gamma", "zero"])
def test_engine_epsilon_at_sums(base):
    model, engine_model, x = prepared("resnet")
    layers = layer_list(model, x)
    if base == "zero":
        comp = Composite(default=Zero(), sums=Epsilon(0.1))
    else:
        comp = Composite(by_type={nn.Linear: Epsilon(1e-6), nn.Conv2d: Gamma(0.25)},
                         sums=Epsilon(0.1))
    ref = reference(model, x, TARGETS, rules_for(base, layers), sums_epsilon=0.1)
    plain = reference(model, x, TARGETS, rules_for(base, layers))
    R = lt.explain(engine_model, x, TARGETS, comp)
    assert (ref.relevance[0] - plain.relevance[0]).abs().max() > 1e-3 * scale_of(ref)
    assert_close(R, ref.relevance, scale_of(ref), what=f"sums=Epsilon(0.1), {base}")


def test_index_counts_linear_conv_calls_in_execution_order():
    """In BasicBlock the downsample (defined last) runs first: index 3 is
    'layer2.0.downsample.0', not 'layer2.0.conv1'."""
    model, engine_model, x = prepared("resnet")
    layers = layer_list(model, x)
    assert layers[3][0] == "layer2.0.downsample.0"
    rules = [Epsilon(1e-6)] * len(layers)
    rules[3] = Gamma(1.0)
    rules[0] = ZBox(-1.0, 1.0)
    rules[-1] = Epsilon(0.5)  # "last" needs the count of executed layers
    ref = reference(model, x, TARGETS, rules)
    comp = Composite(default=Epsilon(1e-6), by_index={3: Gamma(1.0)}, first=ZBox(-1.0, 1.0),
                     last=Epsilon(0.5))
    assert_close(lt.explain(engine_model, x, TARGETS, comp), ref.relevance, scale_of(ref),
                 what="by_index in execution order")
    by_name = Composite(default=Epsilon(1e-6), first=ZBox(-1.0, 1.0), last=Epsilon(0.5),
                        by_name={"layer2.0.downsample.0": Gamma(1.0)})
    assert_close(lt.explain(engine_model, x, TARGETS, by_name), ref.relevance,
                 scale_of(ref), what="by_name")


# ---- residual sums: the proportional split -------------------------------------------------


@pytest.mark.parametrize("sums", [None, 0.1])
def test_residual_split_is_proportional(sums):
    """At z = main + skip: R_skip = skip / z * R_z (plain sum, as Gradient x Input gives),
    or skip / (z + eps sign z) * R_z with Composite(sums=Epsilon(eps))."""
    model, engine_model, x = prepared("resnet")
    blk = "layer2.0"
    v = _values(engine_model, x, [f"{blk}.downsample", f"{blk}.conv2"], [f"{blk}.relu_out"])
    skip, main, z = v[f"{blk}.downsample"], v[f"{blk}.conv2"], v[f"{blk}.relu_out:in"]
    assert (skip + main - z).abs().max() < 1e-12
    comp = EpsilonGamma() if sums is None else Composite(
        by_type={nn.Linear: Epsilon(1e-6), nn.Conv2d: Gamma(0.25)}, sums=Epsilon(sums))
    points = [f"{blk}.downsample", f"{blk}.conv2", f"{blk}.relu_out:in"]
    att = lt.attribute(engine_model, x, TARGETS, comp, at=points)
    R_z = att.at[f"{blk}.relu_out:in"]
    if sums is None:
        den = torch.where(z == 0, torch.full_like(z, float("inf")), z)
    else:
        den = z + sums * torch.where(z >= 0, 1.0, -1.0).to(z.dtype)
    scale = max(att.logit.abs().max().item(), 1.0)
    assert R_z.abs().max() > 1e-3 * scale  # relevance does arrive here
    assert_close(att.at[f"{blk}.downsample"], skip / den * R_z, scale, what="skip share")
    assert_close(att.at[f"{blk}.conv2"], main / den * R_z, scale, what="main share")
    # and the same numbers as the reference, at more places (in-place += in Bottleneck)
    layers = layer_list(model, x)
    ref = reference(model, x, TARGETS, rules_for("epsilon_gamma", layers), sums_epsilon=sums)
    more = ["layer3.0.conv3", "layer3.0.downsample", "layer1.0.relu_out:in", "fc:in"]
    att2 = lt.attribute(engine_model, x, TARGETS, comp, at=points + more)
    for p in points + more:
        assert_close(att2.at[p], ref.at[p], scale, what=f"relevance at {p}")


# ---- conservation and the report ---------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
def test_conservation_without_bias(arch):
    """Bias-free models, LRP-0 without stabilizer: sum of R equals the logit, and the
    relevance is exactly Gradient x Input."""
    _, engine_model, inputs = prepared(arch, bias=False)
    R, report = lt.explain(engine_model, inputs, TARGETS, Uniform(Zero(stabilizer=0)),
                           check=True)
    total = sum(r.flatten(1).sum(1) for r in as_tuple(R))
    logit = engine_model(*as_tuple(inputs))[torch.arange(BATCH), TARGETS].detach()
    scale = max(logit.abs().max().item(), 1.0)
    assert_close(total, logit, scale, what="sum R vs logit")
    assert_close(report.logit, logit, scale, what="report.logit")
    xs = [v.clone().requires_grad_(True) for v in as_tuple(inputs)]
    out = engine_model(*xs)
    grads = torch.autograd.grad(out[torch.arange(BATCH), TARGETS].sum(), xs)
    assert_close(R, tuple(x.detach() * g for x, g in zip(xs, grads, strict=True)), scale,
                 what="gradient x input")


@pytest.mark.parametrize("arch", ARCHS)
def test_report_lists_every_call_in_execution_order(arch):
    model, engine_model, inputs = prepared(arch)
    layers = layer_list(model, inputs)
    rules = rules_for("best_practice", layers, -1.0, 1.0)
    ref = reference(model, inputs, TARGETS, rules)
    R, report = lt.explain(engine_model, inputs, TARGETS, BestPractice(-1.0, 1.0), check=True)
    names = [e.name for e in report.layers]
    assert names == [c.name for c in ref.calls]
    paths = dict(engine_model.named_modules())
    assert all(n in paths for n in names)
    assert [e.layer for e in report.layers] == [c.layer for c in ref.calls]
    assert [str(e.rule) for e in report.layers] == [repr(r) for r in rules]
    scale = scale_of(ref)
    assert_close(report.logit, ref.logit, scale, what="logit")
    total = sum(r.flatten(1).sum(1) for r in ref.relevance)
    assert_close(report.total, total, scale, what="total")
    for e, c in zip(report.layers, ref.calls, strict=True):
        assert e.relevance_out.shape == (BATCH,)
        assert_close(e.relevance_out, c.relevance_out, scale, what=f"{e.name} relevance_out")
        assert_close(e.absorbed, c.relevance_out - c.relevance_in, scale,
                     what=f"{e.name} absorbed")
    # the layers' absorbed shares account for all that is lost (sums/pools lose nothing)
    absorbed = sum(e.absorbed for e in report.layers)
    assert_close(absorbed, report.logit - report.total, scale, what="absorbed sum")


def test_modules_called_twice_are_reported_per_call():
    """A Linear applied twice in forward appears twice in the report (one entry per call)."""

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp = nn.Linear(4, 4)
            self.shared = nn.Linear(4, 4)
            self.out = nn.Linear(4, 3)

        def forward(self, x):
            h = torch.relu(self.shared(torch.relu(self.inp(x))))
            return self.out(torch.relu(self.shared(h)))

    torch.manual_seed(0)
    model = Twice().double().eval()
    x = torch.randn(2, 4, dtype=torch.float64)
    _, report = lt.explain(model, x, 0, Uniform(Epsilon(0.01)), check=True)
    assert [e.name for e in report.layers] == ["inp", "shared", "shared", "out"]
    absorbed = sum(e.absorbed for e in report.layers)
    assert_close(absorbed, report.logit - report.total, 1.0, what="absorbed sum")


def test_two_input_model_returns_one_relevance_per_input():
    model, _, (image, vector) = prepared("two_input")
    R, report = lt.explain(model, (image, vector), TARGETS, EpsilonGammaBox(-1.0, 1.0),
                           check=True)
    assert isinstance(R, tuple) and len(R) == 2
    assert R[0].shape == image.shape and R[1].shape == vector.shape
    assert R[0].dtype == R[1].dtype == torch.float64
    logit = model(image, vector)[torch.arange(BATCH), TARGETS].detach()
    scale = max(logit.abs().max().item(), 1.0)
    sums = R[0].flatten(1).sum(1) + R[1].sum(1)
    assert_close(report.total, sums, scale, what="report.total")
    absorbed = sum(e.absorbed for e in report.layers)
    assert_close(sums + absorbed, logit, scale, what="sums + absorbed")
    assert_close(sums + report.absorbed, logit, scale, what="sums + report.absorbed")
    # both inputs matter
    assert R[0].abs().sum(dim=(1, 2, 3)).min() > 0 and R[1].abs().sum(1).min() > 0


# ---- linear functional ops inside forward ---------------------------------------------------

B = 3
LINEAR_OPS = {
    "subtract": lambda a, b: a - b,
    "scale and add": lambda a, b: 2.0 * a + b / 4.0,
    "add a constant": lambda a, b: a + 1.0,
    "cat": lambda a, b: torch.cat([a, b], 1),
    "stack + flatten": lambda a, b: torch.stack([a, b], 1).flatten(1),
    "stack + permute + reshape": lambda a, b: torch.stack([a, b], 2).permute(0, 2, 1)
    .reshape(a.shape[0], -1),
    "view + transpose": lambda a, b: a.view(a.shape[0], 2, 4).transpose(1, 2)
    .reshape(a.shape[0], 8),
    "slice": lambda a, b: a[:, 2:6],
    "index with None": lambda a, b: a[:, None, :].squeeze(1),
    "index with a list": lambda a, b: a[:, [0, 3, 5]],
    "unsqueeze + squeeze": lambda a, b: a.unsqueeze(1).squeeze(1) + b,
    "sum": lambda a, b: torch.stack([a, b], 2).sum(2),
    "mean": lambda a, b: a.view(a.shape[0], 2, 4).mean(2),
}


class OpNet(nn.Module):
    def __init__(self, op):
        super().__init__()
        self.op = op
        self.fc_a, self.fc_b = nn.Linear(5, 8), nn.Linear(5, 8)
        k = op(torch.zeros(1, 8), torch.zeros(1, 8)).shape[1]
        self.head = nn.Linear(k, 4)

    def forward(self, x):
        a, b = F.relu(self.fc_a(x)), F.relu(self.fc_b(x))
        return self.head(self.op(a, b))


@pytest.mark.parametrize("name", list(LINEAR_OPS))
def test_linear_functional_ops_are_explained(name):
    """Each supported linear op between two Linear layers: the engine equals the reference
    (LRP-0 through the op, epsilon on the layers)."""
    from architectures import he_init

    op = LINEAR_OPS[name]
    model = he_init(OpNet(op).double(), seed=5).eval()
    x = torch.randn(B, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    target = torch.tensor([0, 2, 3])
    t = Tape(model)
    i = t.input(x)
    a = t.relu(t.param(model.fc_a, i))
    b = t.relu(t.param(model.fc_b, i))
    out = t.param(model.head, t.linear(op, [a, b]))
    ref = t.lrp(out, target, [Epsilon(0.01)] * 3)
    scale = max(t.value(out).abs().max().item(), 1.0)
    R = lt.explain(model, x, target, Uniform(Epsilon(0.01)))
    assert_close(R, ref[0], scale, what=name)
