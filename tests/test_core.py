"""The LRP engine against the slow explicit reference, closed forms, conservation, safety."""

from __future__ import annotations

import copy

import pytest
import torch
from reference_lrp import reference_lrp
from torch import nn

import lrp_teach as lt
from lrp_teach.composites import Composite, Uniform
from lrp_teach.rules import AlphaBeta, Epsilon, Flat, Gamma, WSquare, ZBox, Zero, ZPlus

torch.set_num_threads(1)
DT = torch.float64


def mlp(bias: bool = True) -> nn.Sequential:
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Linear(6, 7, bias=bias), nn.ReLU(),
        nn.Sequential(nn.Linear(7, 5, bias=bias), nn.ReLU(), nn.Dropout(0.3)),
        nn.Linear(5, 4, bias=bias),
    ).to(DT).eval()


def cnn(bias: bool = True) -> nn.Sequential:
    torch.manual_seed(2)
    return nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1, bias=bias), nn.ReLU(), nn.MaxPool2d(2),
        nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, stride=1, bias=bias), nn.ReLU()),
        nn.AvgPool2d(2), nn.Conv2d(4, 4, 2, bias=bias), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Identity(),
        nn.Linear(4, 5, bias=bias), nn.ReLU(), nn.Linear(5, 3, bias=bias),
    ).to(DT).eval()


def cnn1d(bias: bool = True) -> nn.Sequential:
    torch.manual_seed(3)
    return nn.Sequential(
        nn.Conv1d(2, 3, 3, padding=2, dilation=2, bias=bias), nn.ReLU(), nn.MaxPool1d(2),
        nn.Conv1d(3, 4, 3, stride=2, bias=bias), nn.ReLU(), nn.AvgPool1d(2),
        nn.AdaptiveAvgPool1d(2), nn.Flatten(), nn.Linear(8, 3, bias=bias),
    ).to(DT).eval()


INPUTS = {"mlp": (mlp, (4, 6)), "cnn": (cnn, (3, 2, 8, 8)), "cnn1d": (cnn1d, (3, 2, 16))}
UNIFORM_RULES = [Zero(), Epsilon(0.1), Gamma(0.25), ZPlus(), AlphaBeta(2.0, 1.0),
                 AlphaBeta(1.0, 0.0), Zero(stabilizer=0)]
FIRST_RULES = [ZBox(-1.0, 1.0), WSquare(), Flat(), Gamma(0.5), AlphaBeta(2.0, 1.0)]


def n_params(model: nn.Module) -> int:
    return sum(isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)) for m in model.modules())


def x_for(kind: str, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(INPUTS[kind][1], generator=g, dtype=DT) * 2 - 1)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("kind", list(INPUTS))
@pytest.mark.parametrize("rule", UNIFORM_RULES, ids=repr)
def test_engine_matches_reference_uniform(kind, bias, rule):
    model = INPUTS[kind][0](bias)
    x = x_for(kind)
    target = torch.tensor([0, 1, 2, 1][: x.shape[0]])
    R = lt.explain(model, x, target, Uniform(rule))
    expected = reference_lrp(model, [rule] * n_params(model), x, target)
    assert R.dtype == DT and R.shape == x.shape
    torch.testing.assert_close(R, expected, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("kind", list(INPUTS))
@pytest.mark.parametrize("first", FIRST_RULES, ids=repr)
def test_engine_matches_reference_first_layer_rules(kind, bias, first):
    model = INPUTS[kind][0](bias)
    x = x_for(kind, seed=1)
    comp = Composite(default=Epsilon(0.01), first=first, by_type={nn.Conv2d: Gamma(0.1)})
    rules = [r.rule for r in comp.assign(model)]
    R = lt.explain(model, x, 1, comp)
    expected = reference_lrp(model, rules, x, torch.ones(x.shape[0], dtype=torch.long))
    torch.testing.assert_close(R, expected, atol=1e-10, rtol=1e-10)


def test_zbox_with_tensor_bounds_and_flatten_in_front():
    torch.manual_seed(4)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 5), nn.ReLU(), nn.Linear(5, 3)).to(DT).eval()
    low = -torch.rand(1, 4, 4, dtype=DT)
    high = torch.rand(1, 4, 4, dtype=DT)
    x = low + (high - low) * torch.rand(2, 1, 4, 4, dtype=DT)
    comp = Composite(default=Zero(), first=ZBox(low, high))
    R, report = lt.explain(model, x, 0, comp, check=True)
    expected = reference_lrp(model, [ZBox(low, high), Zero()], x, torch.zeros(2, dtype=torch.long))
    torch.testing.assert_close(R, expected, atol=1e-10, rtol=1e-10)
    # the box layer's input relevance includes the box terms: it is the input relevance
    torch.testing.assert_close(report["1"].relevance_in, R.flatten(1).sum(1))


def test_lrp0_equals_gradient_times_input_without_bias():
    for kind in INPUTS:
        model = INPUTS[kind][0](False)
        x = x_for(kind, seed=2).requires_grad_(True)
        out = model(x)
        grad = torch.autograd.grad(out[:, 1].sum(), x)[0]
        R_exact = lt.explain(model, x, 1, Uniform(Zero(stabilizer=0)))
        torch.testing.assert_close(R_exact, (x * grad).detach(), atol=1e-12, rtol=1e-12)
        R_default = lt.explain(model, x, 1, Uniform(Zero()))
        torch.testing.assert_close(R_default, (x * grad).detach(), atol=1e-5, rtol=1e-4)


# (AlphaBeta conserves only where a neuron has both positive and negative contributions,
# which small random layers do not guarantee; test_rules checks it on wide layers.  ZPlus
# loses the relevance of neurons without positive weights, which happen in small layers.)
CONSERVING = [Zero(stabilizer=0), Gamma(0.25, stabilizer=0)]


@pytest.mark.parametrize("kind", list(INPUTS))
@pytest.mark.parametrize("rule", CONSERVING, ids=repr)
@pytest.mark.parametrize("first", [None, ZBox(-1.0, 1.0, stabilizer=0), WSquare(stabilizer=0),
                                   Flat(stabilizer=0)], ids=repr)
def test_exact_conservation_without_bias(kind, rule, first):
    model = INPUTS[kind][0](False)
    x = x_for(kind, seed=3)
    comp = Composite(default=rule, first=first)
    R, report = lt.explain(model, x, None, comp, check=True)
    torch.testing.assert_close(R.flatten(1).sum(1), report.logit, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(report.total, report.logit, atol=1e-10, rtol=1e-10)
    for entry in report.layers:
        assert entry.absorbed.abs().max() < 1e-10, (entry.name, entry.absorbed)


def test_epsilon_absorbs_exactly_the_stabilizer_share():
    model = mlp(False)
    x = x_for("mlp", seed=4)
    eps = 0.5
    _, report = lt.explain(model, x, 2, Uniform(Epsilon(eps)), check=True)
    acts = [x]
    for m in [model[0], model[1], model[2][0], model[2][1], model[3]]:
        acts.append(m(acts[-1]))
    for name in ("0", "2.0"):
        entry = report[name]
        # the relevance R_k leaving layer k's output; the passed-on share is z/(z + eps sign z)
        R_k = entry.relevance_out
        assert torch.all(entry.relevance_in.abs() <= R_k.abs() + 1e-12)
    entry = report["3"]
    z = acts[-1][:, 2]
    torch.testing.assert_close(entry.relevance_out, z)
    torch.testing.assert_close(entry.relevance_in, z * z / (z + eps * torch.sign(z)))


def test_gamma_tends_to_zplus():
    model = cnn(True)
    x = x_for("cnn").abs()
    R_plus = lt.explain(model, x, 0, Uniform(ZPlus()))
    R_big = lt.explain(model, x, 0, Uniform(Gamma(1e9)))
    torch.testing.assert_close(R_big, R_plus, atol=1e-6, rtol=1e-6)
    R_ab = lt.explain(model, x, 0, Uniform(AlphaBeta(1, 0)))
    torch.testing.assert_close(R_ab, R_plus, atol=1e-10, rtol=1e-10)


def test_targets_and_batching():
    model = cnn(True)
    x = x_for("cnn")
    pred = model(x).argmax(1)
    torch.testing.assert_close(lt.explain(model, x), lt.explain(model, x, pred))
    t = torch.tensor([2, 0, 1])
    R = lt.explain(model, x, t)
    for i in range(3):
        torch.testing.assert_close(R[i : i + 1], lt.explain(model, x[i : i + 1], int(t[i])))
    torch.testing.assert_close(lt.explain(model, x, torch.tensor(1)), lt.explain(model, x, 1))


def test_float32_agrees_with_float64():
    model = cnn(True)
    x = x_for("cnn")
    comp = lt.composites.EpsilonGammaBox(-1.0, 1.0)
    R64 = lt.explain(model, x, 0, comp)
    R32 = lt.explain(copy.deepcopy(model).float(), x.float(), 0, comp)
    assert R32.dtype == torch.float32
    torch.testing.assert_close(R32.double(), R64, atol=1e-5, rtol=1e-3)


def test_report_table_and_attributes():
    model = cnn(True)
    x = x_for("cnn")[:1]
    R, report = lt.explain(model, x, 0, check=True)
    # one entry per rule-carrying layer, in execution order
    assert [e.name for e in report.layers] == [
        n for n, m in lt.core.named_layers(model) if isinstance(m, lt.core.PARAMETRIC)]
    text = str(report)
    assert "3.0" in text and "Gamma(gamma=0.25)" in text and "target logit" in text
    assert "<table>" in report._repr_html_()
    torch.testing.assert_close(report.total, R.flatten(1).sum(1))
    torch.testing.assert_close(report.logit, model(x)[:, 0].detach())
    # the layers chain: what leaves one layer downwards enters the next one below
    for upper, lower in zip(report.layers[1:], report.layers[:-1], strict=True):
        torch.testing.assert_close(upper.relevance_in, lower.relevance_out)
    torch.testing.assert_close(lt.conservation_report(model, x, 0).logit, report.logit)
    with pytest.raises(KeyError, match="no layer named"):
        report["nope"]


def test_propagate_single_layers_against_reference():
    torch.manual_seed(5)
    layer = nn.Conv2d(2, 3, 3, padding=1).to(DT)
    a = torch.rand(2, 2, 5, 5, dtype=DT)
    R_out = torch.randn(2, 3, 5, 5, dtype=DT)
    for rule in [Zero(), Epsilon(0.3), Gamma(0.5), ZPlus(), AlphaBeta(2, 1), ZBox(0.0, 1.0),
                 WSquare(), Flat()]:
        got = lt.core.propagate(layer, rule, a, R_out)
        z = layer(a).detach()
        # the reference, with R_out injected as the relevance of a one-layer model's output
        model = nn.Sequential(layer)
        ref = _reference_single(model, rule, a, R_out, z)
        torch.testing.assert_close(got, ref, atol=1e-10, rtol=1e-10)
    with pytest.raises(ValueError, match="R_out has shape"):
        lt.core.propagate(layer, Zero(), a, R_out[:, :2])
    with pytest.raises(TypeError, match="Linear or Conv"):
        lt.core.propagate(nn.ReLU(), Zero(), a, R_out)


def _reference_single(model, rule, a, R_out, z):
    from reference_lrp import _param_step, spec

    return _param_step(model[0], a, R_out, spec(rule))


# ----------------------------------------------------------------------------- safety


def test_unsupported_layer_names_type_and_path():
    model = nn.Sequential(nn.Linear(4, 4), nn.Sequential(nn.Linear(4, 4), nn.PReLU()),
                          nn.Linear(4, 2))
    with pytest.raises(TypeError, match=r"PReLU at module '1\.1'"):
        lt.explain(model, torch.rand(1, 4))
    softmax = nn.Sequential(nn.Linear(4, 4), nn.Sequential(nn.Softmax(dim=1)), nn.Linear(4, 2))
    with pytest.raises(TypeError, match=r"softmax.*module '1\.0' \(Softmax\)"):
        lt.explain(softmax, torch.rand(1, 4))


def test_batchnorm_asks_for_canonize():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(),
                          nn.Linear(2 * 4 * 4, 2)).eval()
    with pytest.raises(TypeError, match=r"BatchNorm2d at module '1'.*lt\.canonize"):
        lt.explain(model, torch.rand(1, 1, 6, 6))
    R = lt.explain(lt.canonize(model), torch.rand(1, 1, 6, 6))
    assert R.shape == (1, 1, 6, 6)


def test_custom_container_is_explained_as_written():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 3)

        def forward(self, x):
            return self.fc(x) * 2

    torch.manual_seed(0)
    model = nn.Sequential(Block(), nn.ReLU(), nn.Linear(3, 2)).double()
    scaled = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 2)).double()
    with torch.no_grad():  # the same function, with the factor 2 inside the layer
        scaled[0].weight.copy_(2 * model[0].fc.weight)
        scaled[0].bias.copy_(2 * model[0].fc.bias)
        scaled[2].load_state_dict(model[2].state_dict())
    x = torch.rand(4, 3, dtype=DT)
    comp = Composite(default=Epsilon(0.0))  # LRP-0 does not see a layer's scale
    torch.testing.assert_close(lt.explain(model, x, 0, comp), lt.explain(scaled, x, 0, comp),
                               atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize(
    ("x", "error", "match"),
    [
        (torch.rand(2, 5), ValueError, "expects 6 input features"),
        (torch.rand(6), ValueError, "batch dimension"),
        (torch.tensor([[0.0, 1, 2, float("nan"), 0, 0]]), ValueError, "NaN or infinite"),
        (torch.tensor([[0.0, 1, 2, float("inf"), 0, 0]]), ValueError, "NaN or infinite"),
        (torch.ones(2, 6, dtype=torch.long), TypeError, "floating-point"),
        (torch.ones(2, 6, dtype=torch.float16), TypeError, "float16"),
        ([[0.0] * 6], TypeError, "torch.Tensor"),
    ],
)
def test_bad_inputs(x, error, match):
    with pytest.raises(error, match=match):
        lt.explain(mlp().float(), x)


def test_bad_conv_input_shape():
    with pytest.raises(ValueError, match=r"2 channels.*shape \(3, 1, 8, 8\)"):
        lt.explain(cnn(), torch.rand(3, 1, 8, 8, dtype=DT))


@pytest.mark.parametrize("target", [4, -1, torch.tensor([0, 9, 1, 1])])
def test_target_out_of_range(target):
    with pytest.raises(ValueError, match="4 classes"):
        lt.explain(mlp(), x_for("mlp"), target)


def test_bad_target_types():
    with pytest.raises(TypeError, match="target"):
        lt.explain(mlp(), x_for("mlp"), 1.5)
    with pytest.raises(ValueError, match="3 entries"):
        lt.explain(mlp(), x_for("mlp"), torch.tensor([0, 1, 2]))


def test_input_rule_on_inner_layer_is_refused():
    comp = Composite(default=Zero(), by_index={1: ZBox(0.0, 1.0)})
    with pytest.raises(ValueError, match="input-layer rule"):
        lt.explain(mlp(), x_for("mlp"), 0, comp)


def snapshot(model: nn.Module):
    return (
        {k: v.clone() for k, v in model.state_dict().items()},
        [m.training for m in model.modules()],
        [p.requires_grad for p in model.parameters()],
        [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks))
         for m in model.modules()],
    )


def assert_untouched(model, before):
    state, flags, req, hooks = before
    after = snapshot(model)
    assert after[0].keys() == state.keys()
    for k in state:
        assert torch.equal(after[0][k], state[k]), k
    assert after[1:] == (flags, req, hooks)
    assert all(p.grad is None for p in model.parameters())


def test_model_left_untouched_and_training_mode_warns():
    model = nn.Sequential(cnn(True), nn.Dropout(0.5)).train()
    before = snapshot(model)
    with pytest.warns(UserWarning, match="training mode"):
        R = lt.explain(model, x_for("cnn"), 0, lt.composites.EpsilonAlpha2Beta1())
    assert_untouched(model, before)
    assert model.training
    model.eval()
    torch.testing.assert_close(R, lt.explain(model, x_for("cnn"), 0,
                                             lt.composites.EpsilonAlpha2Beta1()))
    import warnings

    with warnings.catch_warnings():  # no Dropout: the training flag changes nothing
        warnings.simplefilter("error")
        lt.explain(cnn(True).train(), x_for("cnn"), 0)


def test_model_untouched_after_an_error_in_the_backward_pass():
    class Broken(Zero):
        def backward(self, op, state, s):
            raise RuntimeError("injected failure")

    model = cnn(True)
    handle = model[0].register_forward_hook(lambda *args: None)  # the user's own hook stays
    before = snapshot(model)
    with pytest.raises(RuntimeError, match="injected failure"):
        lt.explain(model, x_for("cnn"), 0, Composite(default=Zero(), by_name={"3.0": Broken()}))
    assert_untouched(model, before)
    handle.remove()
    assert all(len(m._forward_hooks) == 0 for m in model.modules())


@pytest.mark.parametrize("rule", UNIFORM_RULES + [Epsilon(0.0)], ids=repr)
@pytest.mark.parametrize("first", [None, ZBox(0.0, 1.0), WSquare(), Flat()], ids=repr)
def test_zero_input_and_dead_units_give_zeros_not_nan(rule, first):
    comp = Composite(default=rule, first=first)
    for kind in INPUTS:
        model = INPUTS[kind][0](True)
        x = torch.zeros(INPUTS[kind][1], dtype=DT)
        R = lt.explain(model, x, 0, comp)
        assert torch.isfinite(R).all()
        dead = copy.deepcopy(model)
        last_hidden = [m for m in dead.modules() if isinstance(m, (nn.Linear, nn.Conv1d,
                                                                    nn.Conv2d))][-2]
        with torch.no_grad():
            last_hidden.bias.fill_(-1e3)  # this layer's ReLU never fires
        R = lt.explain(dead, x_for(kind), 0, comp)
        assert torch.isfinite(R).all() and torch.count_nonzero(R) == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    model = cnn(True)
    x = x_for("cnn")
    comp = lt.composites.EpsilonGammaBox(-1.0, 1.0)
    R_gpu = lt.explain(copy.deepcopy(model).cuda(), x.cuda(), 0, comp)
    assert R_gpu.device.type == "cuda"
    torch.testing.assert_close(R_gpu.cpu(), lt.explain(model, x, 0, comp))


# ------------------------------------------------------------------ exercise checkers


def _gamma_solution(layer, a, R, gamma):
    W, b = layer.weight, layer.bias
    Wg, bg = W + gamma * W.clamp(min=0), b + gamma * b.clamp(min=0)
    z = a @ Wg.T + bg + 1e-9
    return a * ((R / z) @ Wg)


def test_gamma_checker_accepts_a_solution_and_diagnoses_mistakes(capsys):
    lt.exercises.check_gamma_rule(_gamma_solution)
    assert "25 random cases" in capsys.readouterr().out

    def no_gamma(layer, a, R, gamma):
        return _gamma_solution(layer, a, R, 0.0)

    def bias_plain(layer, a, R, gamma):
        W, b = layer.weight, layer.bias
        Wg = W + gamma * W.clamp(min=0)
        return a * ((R / (a @ Wg.T + b)) @ Wg)

    def no_a(layer, a, R, gamma):
        return _gamma_solution(layer, a, R, gamma) / a.clamp(min=1e-12) * (a > 0)

    def wrong_shape(layer, a, R, gamma):
        return R

    for fn, match in [(no_gamma, "positive part"), (bias_plain, "bias is not treated"),
                      (wrong_shape, "shape of a")]:
        with pytest.raises(lt.exercises.ExerciseError, match=match):
            lt.exercises.check_gamma_rule(fn)
    with pytest.raises(lt.exercises.ExerciseError, match="conservation is broken"):
        lt.exercises.check_gamma_rule(no_a)


def test_epsilon_checker(capsys):
    def solution(layer, a, R, eps):
        z = layer(a)
        z = z + eps * torch.where(z >= 0, 1.0, -1.0).to(z.dtype)
        return a * ((R / z) @ layer.weight)

    lt.exercises.check_epsilon_rule(solution)
    assert "check_epsilon_rule: 25 random cases" in capsys.readouterr().out

    def unsigned(layer, a, R, eps):
        return a * ((R / (layer(a) + eps)) @ layer.weight)

    with pytest.raises(lt.exercises.ExerciseError, match="same sign for every neuron"):
        lt.exercises.check_epsilon_rule(unsigned)


@pytest.mark.parametrize("comp", [lt.composites.EpsilonGammaBox(-1.0, 1.0),
                                  lt.composites.EpsilonAlpha2Beta1(),
                                  lt.composites.EpsilonPlusFlat(), Uniform(Zero(stabilizer=0))],
                         ids=repr)
def test_check_mode_gives_the_same_relevance_in_float32_channels_last(comp):
    # check=True keeps every ReLU separate; check=False folds them into the layer before and,
    # for float32 CPU convolutions, runs in channels-last layout
    model = copy.deepcopy(cnn(True)).float()
    x = x_for("cnn").float()
    R_fast = lt.explain(model, x, 1, comp)
    R_checked, _ = lt.explain(model, x, 1, comp, check=True)
    torch.testing.assert_close(R_fast, R_checked, atol=1e-6, rtol=1e-5)
    R64 = lt.explain(cnn(True), x_for("cnn"), 1, comp)
    torch.testing.assert_close(R_fast.double(), R64, atol=1e-5, rtol=1e-3)
