"""The engine that runs the user's forward: the model comes back exactly as it was (also
after an error), the user's own hooks still run, what the engine cannot explain is refused
by name, element-wise activations get the identity rule, and bad calls get clear errors."""

from __future__ import annotations

import json
import re
import shutil
import warnings

import pytest
import torch
import torch.nn.functional as F
from architectures import he_init, make_two_input, make_vgg
from reference_graph import Tape
from torch import nn
from torch.nn.modules import module as module_globals

import lrp_teach as lt
from lrp_teach.composites import (
    BestPractice,
    Composite,
    EpsilonGamma,
    EpsilonGammaBox,
    Uniform,
)
from lrp_teach.rules import AlphaBeta, Epsilon, Gamma, ZBox, Zero

torch.set_num_threads(1)

_MODULE_HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks",
                 "_backward_pre_hooks", "_forward_hooks_with_kwargs",
                 "_forward_pre_hooks_with_kwargs", "_forward_hooks_always_called",
                 "_state_dict_hooks", "_state_dict_pre_hooks")
_GLOBAL_HOOKS = ("_global_forward_hooks", "_global_forward_pre_hooks",
                 "_global_backward_hooks", "_global_backward_pre_hooks",
                 "_global_forward_hooks_with_kwargs", "_global_forward_hooks_always_called",
                 "_global_module_registration_hooks", "_global_parameter_registration_hooks",
                 "_global_buffer_registration_hooks")


# ---- (a) the model is left exactly as it was -----------------------------------------------


class Net(nn.Module):
    """Conv, a residual add, Dropout, two Linear layers; ``mode`` makes forward fail
    after the first layer ran: "raise" (the user's own error) or "softmax" (refused by the
    engine)."""

    def __init__(self, mode: str = ""):
        super().__init__()
        self.mode = mode
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.conv_skip = nn.Conv2d(1, 3, 1)
        self.act = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.drop = nn.Dropout(0.3)
        self.fc1 = nn.Linear(3 * 4 * 4, 8)
        self.fc2 = nn.Linear(8, 4)

    def forward(self, x):
        h = self.conv(x)
        if self.mode == "raise":
            raise RuntimeError("boom in the user's forward")
        if self.mode == "softmax":
            h = torch.softmax(h, dim=1)
        h = self.pool(self.act(h + self.conv_skip(x)))
        h = self.drop(torch.flatten(h, 1))
        return self.fc2(F.relu(self.fc1(h)))


def snapshot(model: nn.Module) -> dict:
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "training": {n: m.training for n, m in model.named_modules()},
        "hooks": {(n, h): list(getattr(m, h)) for n, m in model.named_modules()
                  for h in _MODULE_HOOKS},
        "globals": {h: list(getattr(module_globals, h)) for h in _GLOBAL_HOOKS},
        "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
        "own_attributes": {n: sorted(vars(m)) for n, m in model.named_modules()},
        "forward_patched": [n for n, m in model.named_modules() if "forward" in vars(m)],
        "grad_mode": torch.is_grad_enabled(),
    }


def assert_untouched(model: nn.Module, before: dict) -> None:
    now = snapshot(model)
    for key in ("training", "hooks", "globals", "requires_grad", "own_attributes",
                "forward_patched", "grad_mode"):
        assert now[key] == before[key], key
    assert list(now["state"]) == list(before["state"])
    for k, v in before["state"].items():
        assert torch.equal(now["state"][k], v), f"{k} changed"
    assert all(p.grad is None for p in model.parameters()), "gradients left on parameters"


def mixed_flags(model: nn.Module) -> nn.Module:
    model.train()
    model.conv.eval()
    model.fc2.eval()  # a mix: the model and the dropout train, two layers in eval
    return model


def _net(mode=""):
    return mixed_flags(he_init(Net(mode).double(), seed=3))


X = torch.rand(2, 1, 8, 8, dtype=torch.float64)


def test_model_untouched_after_explain():
    model = _net()
    before = snapshot(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a training-mode warning is allowed
        R, report = lt.explain(model, X, 1, check=True)
        lt.attribute(model, X, 1, at=["fc1", "conv:in"])
    assert R.shape == X.shape
    assert_untouched(model, before)


def test_explain_computes_in_eval_mode_with_dropout_in_training_mode():
    model = _net()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        R1 = lt.explain(model, X, 1, Uniform(Epsilon(0.01)))
        R2 = lt.explain(model, X, 1, Uniform(Epsilon(0.01)))
        model_eval = _net().eval()
        R3 = lt.explain(model_eval, X, 1, Uniform(Epsilon(0.01)))
    assert torch.equal(R1, R2) and torch.allclose(R1, R3, rtol=0, atol=1e-14)


@pytest.mark.parametrize("mode, error, match", [
    ("raise", RuntimeError, "boom"),
    ("softmax", TypeError, "softmax"),
])
def test_model_untouched_after_an_error_mid_forward(mode, error, match):
    model = _net(mode)
    before = snapshot(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(error, match=match):
            lt.explain(model, X, 1)
    assert_untouched(model, before)
    # nothing of the engine stays active: softmax and friends work again outside explain
    torch.softmax(torch.randn(2, 3, requires_grad=True) * 2, 1).sum().backward()
    assert torch._C._len_torch_function_stack() == 0
    model.mode = ""
    y = model.eval()(X)
    assert y.shape == (2, 4)


def test_explain_inside_no_grad_restores_the_grad_mode():
    model = _net().eval()
    with torch.no_grad():
        R = lt.explain(model, X, 1)
        assert not torch.is_grad_enabled()
    assert R.abs().sum() > 0 and not R.requires_grad


# ---- (b) the user's own hooks still run -----------------------------------------------------


def test_users_own_hooks_run_during_explain_and_stay():
    model = _net().eval()
    seen, pre = [], []
    h1 = model.fc1.register_forward_hook(lambda m, i, o: seen.append(o.detach().clone()))
    h2 = model.conv.register_forward_pre_hook(lambda m, i: pre.append(1))
    before = snapshot(model)
    R = lt.explain(model, X, 1, Uniform(Epsilon(1e-9)))
    assert len(seen) >= 1 and len(pre) == len(seen)  # once per forward the engine runs
    with torch.no_grad():
        expected_fc1 = model.fc1(torch.flatten(model.pool(model.act(
            model.conv(X) + model.conv_skip(X))), 1))
    for value in seen:  # the hook saw the model's own values
        assert torch.allclose(value, expected_fc1, rtol=0, atol=1e-12)
    assert R.abs().sum() > 0
    assert_untouched(model, before)
    for h in (h1, h2):
        h.remove()


def test_users_hook_that_changes_an_output_is_part_of_the_explained_function():
    """A forward hook that doubles fc2's output: the explained logit is the doubled one and
    the relevance doubles (every rule is homogeneous in the relevance)."""
    model = _net().eval()
    comp = Uniform(Epsilon(1e-9))
    R1 = lt.explain(model, X, 1, comp)
    handle = model.fc2.register_forward_hook(lambda m, i, o: o * 2.0)
    R2, report = lt.explain(model, X, 1, comp, check=True)
    logit = model(X)[:, 1].detach()  # includes the factor 2 of the hook
    handle.remove()
    assert torch.allclose(report.logit, logit, rtol=0, atol=1e-12)
    assert torch.allclose(R2, 2 * R1, rtol=0, atol=1e-12)


# ---- (c) refusals ------------------------------------------------------------------------


class MyScale(nn.Module):
    """A leaf the engine does not know, with a parameter."""

    def __init__(self, n):
        super().__init__()
        self.w = nn.Parameter(torch.ones(n))

    def forward(self, x):
        return x * self.w


class Wrap(nn.Module):
    """fc_in -> ``gate_block`` (whatever it does) -> fc_out."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.fc_in = nn.Linear(4, 6)
        self.gate_block = block
        self.fc_out = nn.Linear(6, 3)

    def forward(self, x):
        return self.fc_out(self.gate_block(F.relu(self.fc_in(x))))


class Fn(nn.Module):
    def __init__(self, fn, with_param=False, with_bn=False):
        super().__init__()
        self.fn = fn
        self.proj = nn.Linear(6, 6)
        if with_param:
            self.raw = nn.Parameter(torch.randn(6, 6) * 0.3)
            self.raw_conv = nn.Parameter(torch.randn(6, 6, 1) * 0.3)
        if with_bn:
            self.register_buffer("mean", torch.zeros(6))
            self.register_buffer("var", torch.ones(6))

    def forward(self, h):
        return self.fn(self, h)


REFUSED = {
    "product": (lambda s, h: s.proj(h) * h, r"mul|\*|product"),
    "softmax": (lambda s, h: torch.softmax(h, dim=1), "softmax"),
    "F.softmax": (lambda s, h: F.softmax(s.proj(h), dim=-1), "softmax"),
    "exp": (lambda s, h: torch.exp(h), "exp"),
    "log": (lambda s, h: torch.log(h + 1.0), "log"),
    "divide": (lambda s, h: h / (s.proj(h) + 10.0), "div"),
    "F.linear": (lambda s, h: F.linear(h, s.raw), "linear"),
    "matmul": (lambda s, h: h @ s.raw, "matmul|mm"),
    "F.conv1d": (lambda s, h: F.conv1d(h.unsqueeze(2), s.raw_conv).squeeze(2), "conv"),
    "F.batch_norm": (lambda s, h: F.batch_norm(h, s.mean, s.var), "batch_norm"),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_functional_ops_that_have_no_rule_are_refused_by_name(name):
    fn, match = REFUSED[name]
    torch.manual_seed(0)
    model = Wrap(Fn(fn, with_param=True, with_bn=True)).double().eval()
    x = torch.randn(2, 4, dtype=torch.float64)
    model(x)  # the model itself runs
    before = snapshot(model)
    with pytest.raises(TypeError, match=match) as info:
        lt.explain(model, x, 0)
    assert "gate_block" in str(info.value), "the message should name the module path"
    assert_untouched(model, before)


def test_unknown_leaf_with_parameters_is_refused_with_type_and_path():
    torch.manual_seed(0)
    model = Wrap(nn.Sequential(nn.Linear(6, 6), MyScale(6))).double().eval()
    x = torch.randn(2, 4, dtype=torch.float64)
    with pytest.raises(TypeError) as info:
        lt.explain(model, x, 0)
    assert "MyScale" in str(info.value) and "gate_block.1" in str(info.value)


def test_uncanonized_batchnorm_asks_for_canonize():
    torch.manual_seed(0)
    model = Wrap(nn.BatchNorm1d(6)).double().eval()
    x = torch.randn(2, 4, dtype=torch.float64)
    with pytest.raises(TypeError, match="canonize") as info:
        lt.explain(model, x, 0)
    assert "gate_block" in str(info.value)
    model2 = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(),
                           nn.Linear(2 * 6 * 6, 3)).double().eval()
    with pytest.raises(TypeError, match="canonize"):
        lt.explain(model2, X, 0)


# ---- (d) element-wise activations: the identity rule --------------------------------------


ACTIVATIONS = {
    "Tanh": nn.Tanh, "Sigmoid": nn.Sigmoid, "GELU": nn.GELU, "SiLU": nn.SiLU,
    "LeakyReLU": lambda: nn.LeakyReLU(0.1), "ELU": nn.ELU, "Softplus": nn.Softplus,
}


class ActNet(nn.Module):
    def __init__(self, act: nn.Module):
        super().__init__()
        self.fc1 = nn.Linear(5, 7)
        self.act = act
        self.fc2 = nn.Linear(7, 7)
        self.fc3 = nn.Linear(7, 3)

    def forward(self, x):
        h = self.act(self.fc1(x))
        return self.fc3(F.gelu(self.fc2(h)))


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_identity_rule_at_elementwise_activations(name):
    torch.manual_seed(0)
    model = ActNet(ACTIVATIONS[name]()).double().eval()
    x = torch.randn(4, 5, dtype=torch.float64)
    att = lt.attribute(model, x, torch.tensor([0, 1, 2, 0]), Uniform(Epsilon(0.01)),
                       at=["act", "act:in", "fc2", "fc3:in"])
    scale = max(att.logit.abs().max().item(), 1.0)
    assert att.at["act"].abs().max() > 1e-3 * scale
    # module activation: relevance at its input equals relevance at its output
    assert (att.at["act"] - att.at["act:in"]).abs().max() <= 1e-12 * scale
    # F.gelu between fc2 and fc3: the same
    assert (att.at["fc2"] - att.at["fc3:in"]).abs().max() <= 1e-12 * scale
    # and the whole explanation equals the reference with the identity rule
    t = Tape(model)
    i = t.input(x)
    i = t.activation(model.act, t.param(model.fc1, i), model.act)
    i = t.activation(F.gelu, t.param(model.fc2, i))
    out = t.param(model.fc3, i)
    R = t.lrp(out, torch.tensor([0, 1, 2, 0]), [Epsilon(0.01)] * 3)
    assert (att.inputs[0] - R[0]).abs().max() <= 1e-10 * scale


def test_functional_activations_get_the_identity_rule():
    class FnAct(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(5, 6), nn.Linear(6, 6)
            self.fc3 = nn.Linear(6, 2)

        def forward(self, x):
            h = torch.tanh(self.fc1(x))
            h = F.silu(self.fc2(h)) + torch.sigmoid(h)  # a sum of two branches, too
            return self.fc3(h)

    torch.manual_seed(1)
    model = FnAct().double().eval()
    x = torch.randn(3, 5, dtype=torch.float64)
    R = lt.explain(model, x, 1, Uniform(Epsilon(0.01)))
    t = Tape(model)
    i = t.input(x)
    a = t.activation(torch.tanh, t.param(model.fc1, i))
    b = t.activation(F.silu, t.param(model.fc2, a))
    c = t.activation(torch.sigmoid, a)
    out = t.param(model.fc3, t.add(b, c))
    ref = t.lrp(out, torch.ones(3, dtype=torch.long), [Epsilon(0.01)] * 3)
    scale = max(t.value(out).abs().max().item(), 1.0)
    assert (R - ref[0]).abs().max() <= 1e-10 * scale


# ---- (e) bad input ---------------------------------------------------------------------


def _zennit_like():
    class EpsilonGammaBox:  # zennit's preset has this name; it is not an lrp_teach composite
        def __init__(self, low, high):
            self.low, self.high = low, high

        def context(self, model):  # zennit's interface, not ours
            raise AssertionError("must not be called")

    return EpsilonGammaBox


EpsilonGammaBoxLookalike = _zennit_like()


def _vgg():
    return make_vgg()


def _x(batch=3):
    return torch.rand(batch, 3, 12, 12, dtype=torch.float64) * 2 - 1


def _explain(**kw):
    args = {"model": _vgg(), "inputs": _x(), "target": 0, "composite": None}
    args.update(kw)
    return lt.explain(args["model"], args["inputs"], args["target"], args["composite"])


class _Vector(nn.Module):
    def __init__(self, kind):
        super().__init__()
        self.kind = kind
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        y = self.fc(x)
        if self.kind == "1d":
            return y.sum(1)
        if self.kind == "tuple":
            return y, y.detach()
        return y.unsqueeze(2)


_X4 = torch.randn(2, 4, dtype=torch.float64)

BAD_CALLS = {
    # composites of the wrong type
    "composite dict": (lambda: _explain(composite={"default": Epsilon()}), TypeError, "dict"),
    "composite zennit-like": (lambda: _explain(composite=EpsilonGammaBoxLookalike(0, 1)),
                              TypeError, "EpsilonGammaBox"),
    "composite class, not instance": (lambda: _explain(composite=EpsilonGamma), TypeError,
                                      "EpsilonGamma"),
    "composite str": (lambda: _explain(composite="epsilon"), TypeError, "str"),
    "composite list of rules": (lambda: _explain(composite=[Epsilon()]), TypeError, "list"),
    # rules and composites built with bad parameters
    "ZBox low > high": (lambda: ZBox(1.0, 0.0), ValueError, "low"),
    "ZBox low > high after broadcasting": (
        lambda: _explain(composite=EpsilonGammaBox(
            torch.tensor([-1.0, 2.0, -1.0], dtype=torch.float64).view(3, 1, 1), 1.0)),
        ValueError, "low"),
    "ZBox high < low after broadcasting": (
        lambda: _explain(composite=EpsilonGammaBox(
            0.5, torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64).view(3, 1, 1))),
        ValueError, "low"),
    "ZBox bounds that do not broadcast": (
        lambda: _explain(composite=EpsilonGammaBox(torch.zeros(5, dtype=torch.float64), 1.0)),
        ValueError, "broadcast"),
    "Epsilon(-1)": (lambda: Epsilon(-1.0), ValueError, "epsilon|stabilizer"),
    "Gamma(-0.5)": (lambda: Gamma(-0.5), ValueError, "gamma"),
    "AlphaBeta(1, 1)": (lambda: AlphaBeta(1.0, 1.0), ValueError, "alpha"),
    "stabilizer NaN": (lambda: Zero(stabilizer=float("nan")), ValueError, "stabilizer"),
    "BestPractice(epsilon=-1)": (lambda: BestPractice(-1.0, 1.0, epsilon=-1),
                                 ValueError, "epsilon"),
    "BestPractice(gamma=-1)": (lambda: BestPractice(-1.0, 1.0, gamma=-1), ValueError, "gamma"),
    "EpsilonGamma(epsilon=-1)": (lambda: EpsilonGamma(epsilon=-1), ValueError, "epsilon"),
    "Composite default str": (lambda: Composite(default="eps"), TypeError, "Rule"),
    "Composite by_type str key": (lambda: Composite(by_type={"Linear": Epsilon()}),
                                  TypeError, "class"),
    "Composite sums str": (lambda: Composite(default=Epsilon(), sums="eps"), TypeError,
                           "sums"),
    "by_name unknown layer": (
        lambda: _explain(composite=Composite(default=Epsilon(), by_name={"nope.layer": Zero()})),
        ValueError, "nope.layer"),
    "by_index out of range": (
        lambda: _explain(composite=Composite(default=Epsilon(), by_index={99: Zero()})),
        ValueError, "99"),
    "no rule for the convolutions": (
        lambda: _explain(composite=Composite(by_type={nn.Linear: Epsilon()})),
        TypeError, re.escape("features.0")),
    "input rule on an inner layer": (
        lambda: _explain(composite=Composite(default=Epsilon(),
                                             by_name={"classifier.0": ZBox(-1.0, 1.0)})),
        ValueError, re.escape("classifier.0")),
    # targets
    "target too large": (lambda: _explain(target=5), ValueError, "out of range"),
    "target negative": (lambda: _explain(target=-1), ValueError, "out of range"),
    "target tensor too short": (lambda: _explain(target=torch.tensor([0, 1])), ValueError,
                                "entries|batch"),
    "target float tensor": (lambda: _explain(target=torch.tensor([0.0, 1.0, 2.0])),
                            TypeError, "target"),
    "target str": (lambda: _explain(target="cat"), TypeError, "target"),
    "target float": (lambda: _explain(target=1.5), TypeError, "target"),
    "target bool": (lambda: _explain(target=True), TypeError, "target"),
    # inputs
    "x with NaN": (lambda: _explain(inputs=_x().index_fill_(2, torch.tensor([3]),
                                                            float("nan"))),
                   ValueError, "NaN"),
    "x with inf": (lambda: _explain(inputs=_x().index_fill_(3, torch.tensor([0]),
                                                            float("inf"))),
                   ValueError, "inf"),
    "NaN in the second input": (
        lambda: lt.explain(make_two_input(), (torch.rand(2, 1, 8, 8, dtype=torch.float64),
                                              torch.full((2, 5), float("nan"),
                                                         dtype=torch.float64)), 0),
        ValueError, "NaN"),
    "x a list": (lambda: _explain(inputs=_x().tolist()), TypeError, "list"),
    "x a numpy array": (lambda: _explain(inputs=_x().numpy()), TypeError, "ndarray"),
    "model a function": (lambda: lt.explain(lambda t: t.sum(1, keepdim=True), _x(), 0),
                         TypeError, "Module"),
    "model output 1-d": (lambda: lt.explain(_Vector("1d").double(), _X4, 0), ValueError,
                         "output"),
    "model output 3-d": (lambda: lt.explain(_Vector("3d").double(), _X4, 0), ValueError,
                         "output"),
    "model output a tuple": (lambda: lt.explain(_Vector("tuple").double(), _X4, 0),
                             (TypeError, ValueError), "output|returned"),
    "attribute at an unknown path": (
        lambda: lt.attribute(_vgg(), _x(), 0, at=["features.99"]), (ValueError, KeyError),
        re.escape("features.99")),
}


@pytest.mark.parametrize("name", list(BAD_CALLS))
def test_bad_call(name):
    call, error, match = BAD_CALLS[name]
    with pytest.raises(error, match=match):
        call()


def test_composite_of_the_wrong_type_is_not_an_attribute_error():
    for composite in ({"a": 1}, EpsilonGammaBoxLookalike(0.0, 1.0), object(), 3):
        try:
            _explain(composite=composite)
        except TypeError as err:
            assert type(composite).__name__ in str(err)
        else:  # pragma: no cover
            raise AssertionError(f"{composite!r} was accepted as a composite")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_are_refused_or_upcast_with_a_warning(dtype):
    model = make_vgg(dtype=torch.float32)
    x = _x().to(dtype)
    name = str(dtype).removeprefix("torch.")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            R = lt.explain(model, x, 0)
        except TypeError as err:
            assert name in str(err), str(err)
            return
    assert R.dtype == torch.float32, R.dtype
    assert any(name in str(w.message) for w in caught), [str(w.message) for w in caught]


def test_inputs_outside_the_box_warn_and_inside_do_not():
    model = make_vgg()
    x = _x()  # in [-1, 1]
    with pytest.warns(UserWarning, match=r"(?i)outside|exceed|beyond|not within"):
        lt.explain(model, x, 0, EpsilonGammaBox(0.0, 1.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lt.explain(model, x, 0, EpsilonGammaBox(-1.0, 1.0))


def test_negative_lstm_bias_factor_is_rejected():
    from lrp_teach.lstm import LSTMClassifier

    torch.manual_seed(0)
    model = LSTMClassifier(10, 4, 3, 2).eval()
    tokens = torch.randint(1, 10, (2, 5))
    with pytest.raises(ValueError, match="bias_factor"):
        lt.lstm.explain(model, tokens, bias_factor=-1.0)


# ---- a broken data folder ------------------------------------------------------------------


@pytest.fixture
def data_copy(tmp_path, monkeypatch):
    src = lt.pretrained.data_dir()
    dst = tmp_path / "data"
    (dst / "weights").mkdir(parents=True)
    shutil.copy(src / "MANIFEST.json", dst / "MANIFEST.json")
    shutil.copy(src / "weights" / "digits_mlp.pt", dst / "weights" / "digits_mlp.pt")
    monkeypatch.setenv("LRP_TEACH_DATA", str(dst))
    assert lt.pretrained.data_dir() == dst
    return dst


def test_corrupted_manifest_names_the_file(data_copy):
    path = data_copy / "MANIFEST.json"
    path.write_text(path.read_text()[:200], encoding="utf-8")  # truncated JSON
    with pytest.raises(lt.pretrained.PretrainedError, match="MANIFEST.json"):
        lt.pretrained.load("digits_mlp")
    with pytest.raises(lt.pretrained.PretrainedError, match="MANIFEST.json"):
        lt.pretrained.available()


def test_manifest_of_the_wrong_shape_names_the_file(data_copy):
    (data_copy / "MANIFEST.json").write_text("[1, 2, 3]\n", encoding="utf-8")
    with pytest.raises(lt.pretrained.PretrainedError, match="MANIFEST.json"):
        lt.pretrained.load("digits_mlp")


def test_manifest_entry_without_hash_names_the_entry(data_copy):
    path = data_copy / "MANIFEST.json"
    manifest = json.loads(path.read_text(encoding="utf-8"))
    del manifest["weights"]["digits_mlp"]["sha256"]
    path.write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(lt.pretrained.PretrainedError, match="digits_mlp"):
        lt.pretrained.load("digits_mlp")


def test_corrupted_weight_file_names_the_file(data_copy):
    path = data_copy / "weights" / "digits_mlp.pt"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(lt.pretrained.PretrainedError, match="digits_mlp.pt"):
        lt.pretrained.load("digits_mlp")
