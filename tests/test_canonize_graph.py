"""lt.canonize on models that are not an nn.Sequential: a ResNet (BatchNorm inside the
blocks and in the downsample branches) and a learner's BatchNorm CNN with a functional
forward.  Same outputs, nothing left unfolded, the user's model untouched, and a clear
error naming every BatchNorm that cannot be folded exactly."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
from architectures import MAKERS, inputs_for
from reference_graph import layer_list, reference, rules_for
from torch import nn

import lrp_teach as lt
from lrp_teach.composites import EpsilonGammaBox

torch.set_num_threads(1)

BN = nn.modules.batchnorm._BatchNorm
MODELS = ["resnet", "functional_cnn", "densenet"]


def snapshot(model: nn.Module):
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    flags = {n: m.training for n, m in model.named_modules()}
    return state, flags


def assert_same(model: nn.Module, before) -> None:
    state, flags = before
    now = model.state_dict()
    assert list(now) == list(state)
    for k, v in state.items():
        assert now[k].dtype == v.dtype and torch.equal(now[k], v), f"{k} changed"
    assert {n: m.training for n, m in model.named_modules()} == flags


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-6), (torch.float64, 1e-12)])
@pytest.mark.parametrize("arch", MODELS)
def test_canonize_keeps_the_outputs(arch, dtype, tol):
    model = MAKERS[arch](dtype=dtype)
    x = inputs_for(arch, 4, dtype=dtype)
    before = snapshot(model)
    canon = lt.canonize(model, x)
    with torch.no_grad():
        y, yc = model(x), canon(x)
    assert yc.dtype == dtype
    rel = ((yc - y).abs().max() / y.abs().max()).item()
    assert rel <= tol, f"relative difference {rel:.2e}"
    assert_same(model, before)
    assert canon is not model


@pytest.mark.parametrize("arch", MODELS)
def test_no_batchnorm_left_and_layers_keep_their_paths(arch):
    model = MAKERS[arch]()
    canon = lt.canonize(model, inputs_for(arch, 2))
    assert not [n for n, m in canon.named_modules() if isinstance(m, BN)]
    new = dict(canon.named_modules())
    bn_paths = [n for n, m in model.named_modules() if isinstance(m, BN)]
    assert len(bn_paths) >= 3
    for n in bn_paths:  # replaced by Identity, at the same place
        assert isinstance(new[n], nn.Identity), n
    for n, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            assert type(new[n]) is type(m), n
    # the folded weights are not the originals (the fold did something), and the copy
    # shares no parameter with the original
    conv = {"resnet": "conv1", "functional_cnn": "conv1", "densenet": "block.0.conv"}[arch]
    old = dict(model.named_modules())[conv]
    assert not torch.equal(new[conv].weight, old.weight)
    assert new[conv].bias is not None
    ptrs = {p.data_ptr() for p in model.parameters()}
    assert not ptrs & {p.data_ptr() for p in canon.parameters()}


def test_canonized_functional_cnn_is_explained_as_written():
    """The learner's functional BN CNN: canonize, then explain; equals the reference (with
    its own fold) to 1e-10 in float64."""
    model = MAKERS["functional_cnn"]()
    x = inputs_for("functional_cnn", 3)
    target = torch.tensor([2, 0, 4])
    ref = reference(model, x, target, rules_for("epsilon_gamma_box", layer_list(model, x),
                                                -1.0, 1.0))
    R = lt.explain(lt.canonize(model, x), x, target, EpsilonGammaBox(-1.0, 1.0))
    scale = max(ref.logit.abs().max().item(), 1.0)
    err = (R - ref.relevance[0]).abs().max().item()
    assert err <= 1e-10 * scale, f"max abs difference {err:.3e}"


@pytest.mark.parametrize("arch", ["resnet", "functional_cnn"])
def test_canonize_in_training_mode_restores_the_flags(arch):
    model = MAKERS[arch]()
    x = inputs_for(arch, 4)
    model.train()
    children = [m for _, m in model.named_children()]
    children[1].eval()  # a mix of train and eval submodules
    before = snapshot(model)
    canon = lt.canonize(model, x)
    assert_same(model, before)  # running statistics untouched as well
    reference_model = MAKERS[arch]().eval()  # same seed: the same model, in eval mode
    with torch.no_grad():
        y = reference_model(x)
        yc = canon.eval()(x)
    assert ((yc - y).abs().max() / y.abs().max()).item() <= 1e-12


def test_canonize_keeps_the_users_hooks_on_the_original():
    """The user's forward hook on the original still runs after canonize."""
    model = MAKERS["resnet"]()
    calls = []
    handle = model.layer1.register_forward_hook(lambda m, i, o: calls.append(1))
    x = inputs_for("resnet", 2)
    lt.canonize(model, x)
    n = len(calls)
    model(x)
    assert len(calls) == n + 1
    handle.remove()


# ---- what cannot be folded --------------------------------------------------------------


class _AfterReLU(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv_a = nn.Conv2d(2, 3, 3, padding=1)
        self.norm_after_relu = nn.BatchNorm2d(3)
        self.conv_b = nn.Conv2d(3, 3, 3, padding=1)  # padded: no fold forward either

    def forward(self, x):
        return self.conv_b(self.norm_after_relu(F.relu(self.conv_a(x))))


class BNAfterReLU(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = _AfterReLU()
        self.fc = nn.Linear(3 * 8 * 8, 4)

    def forward(self, x):
        return self.fc(torch.flatten(F.relu(self.body(x)), 1))


class _PreAct(nn.Module):
    """A pre-activation block: BN -> ReLU -> conv, twice, plus the skip."""

    def __init__(self, c):
        super().__init__()
        self.pre_norm = nn.BatchNorm2d(c)
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.mid_norm = nn.BatchNorm2d(c)  # follows conv1: foldable
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)

    def forward(self, x):
        out = self.conv1(F.relu(self.pre_norm(x)))
        out = self.conv2(F.relu(self.mid_norm(out)))
        return out + x


class PreActNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(2, 4, 3, padding=1, bias=False)
        self.stem_norm = nn.BatchNorm2d(4)  # foldable
        self.block = _PreAct(4)
        self.fc = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.stem_norm(self.stem(x))), 2)
        x = self.block(x)
        return self.fc(torch.flatten(x, 1))


class SharedConvOutput(nn.Module):
    """The conv's output feeds a BatchNorm and, unnormalized, a skip connection."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.shared_norm = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 3)

    def forward(self, x):
        y = self.conv(x)
        out = self.conv2(F.relu(self.shared_norm(y)))
        return self.fc(torch.flatten(F.relu(out + y), 1))


class NoRunningStats(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3)
        self.batch_stats_norm = nn.BatchNorm2d(3, track_running_stats=False)
        self.fc = nn.Linear(3 * 6 * 6, 2)

    def forward(self, x):
        return self.fc(torch.flatten(F.relu(self.batch_stats_norm(self.conv(x))), 1))


@pytest.mark.parametrize("cls, path", [
    (BNAfterReLU, "body.norm_after_relu"),
    (PreActNet, "block.pre_norm"),
    (SharedConvOutput, "shared_norm"),
    (NoRunningStats, "batch_stats_norm"),
])
def test_unfoldable_batchnorm_is_refused_by_name(cls, path):
    from architectures import randomize_batchnorm

    torch.manual_seed(0)
    model = randomize_batchnorm(cls()).double().eval()
    x = torch.randn(2, 2, 8, 8, dtype=torch.float64)
    before = snapshot(model)
    with pytest.raises(ValueError, match=re.escape(path)):
        lt.canonize(model, x)
    assert_same(model, before)


def test_preact_names_only_the_unfoldable_norm():
    """stem_norm and mid_norm follow a conv and fold; the message is about pre_norm."""
    torch.manual_seed(0)
    model = PreActNet().double().eval()
    x = torch.randn(2, 2, 8, 8, dtype=torch.float64)
    with pytest.raises(ValueError) as info:
        lt.canonize(model, x)
    msg = str(info.value)
    assert "block.pre_norm" in msg
    assert "stem_norm" not in msg and "mid_norm" not in msg


def test_canonize_refuses_a_non_module():
    with pytest.raises(TypeError, match="Module"):
        lt.canonize(lambda x: x, torch.zeros(1, 2))
