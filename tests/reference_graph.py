"""A slow, explicit LRP reference for the models of ``tests/architectures.py``.

Written independently of ``lrp_teach``: it never calls the package's engine, composites or
canonizer.  Each architecture's forward pass is written out again here, by hand, as calls
on a :class:`Tape`; the tape stores every intermediate value (float64) and which values
each operation read.  :meth:`Tape.lrp` then walks the tape backwards and applies, per
operation,

* Linear/Conv: the four explicit steps z, s = R/z, c = rho(W)^T s, R = a*c of
  ``reference_lrp._param_step`` (Zero, Epsilon, Gamma, ZPlus, AlphaBeta, ZBox at the input);
  a BatchNorm that follows the layer is folded first, by :func:`fold` below;
* ReLU, element-wise activations with the identity rule, Dropout/Identity, scaling by a
  constant: the relevance passes unchanged;
* max-pooling: winner-take-all; average pooling and adaptive average pooling: LRP-0 with
  the explicit pooling matrix (``reference_lrp._pool_step``);
* flatten/view: a reshape; concatenation: slicing; any other linear map of the
  input-dependent tensors (indexing, permute, sum, mean, subtraction): LRP-0, with the
  transpose taken by a vector-Jacobian product of that map;
* a sum ``z = a + b`` of two input-dependent tensors: the proportional split
  ``R_a = a / z * R`` (0 where z = 0), or with ``sums_epsilon=e`` the epsilon version
  ``R_a = a / (z + e * sign(z)) * R`` with sign(0) = +1.

A value read by several operations collects the relevance that each of them sends back.
Rules are read from ``lrp_teach.rules`` objects only through their parameters
(``reference_lrp.spec``), and :func:`rules_for` maps the presets to rules by its own
reading of their definitions (DESIGN.md and the docstrings of ``lrp_teach.composites``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from reference_lrp import _param_step, _pool_step, spec, stab
from torch import Tensor, nn

from lrp_teach.rules import AlphaBeta, Epsilon, Gamma, ZBox, Zero

PARAM = (nn.Linear, nn.Conv1d, nn.Conv2d)
POOL = (nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d,
        nn.AdaptiveAvgPool2d)
PASS = (nn.ReLU, nn.Dropout, nn.Identity, nn.Tanh, nn.GELU, nn.SiLU, nn.Sigmoid)


def fold(layer: nn.Module, bn: nn.Module | None) -> nn.Module:
    """A float64 copy of ``layer`` with the BatchNorm ``bn`` (which follows it) folded in:
    ``W' = diag(s) W``, ``b' = s * b + t``, ``s = gamma / sqrt(var + eps)``,
    ``t = beta - mean * s``."""
    new = copy.deepcopy(layer).double()
    if bn is None:
        return new
    var = bn.running_var.detach().double()
    mean = bn.running_mean.detach().double()
    gamma = bn.weight.detach().double() if bn.affine else torch.ones_like(var)
    beta = bn.bias.detach().double() if bn.affine else torch.zeros_like(var)
    s = gamma / torch.sqrt(var + bn.eps)
    t = beta - mean * s
    w = new.weight.detach()
    b = torch.zeros(w.shape[0], dtype=torch.float64) if new.bias is None else new.bias.detach()
    new.weight = nn.Parameter(w * s.reshape((-1,) + (1,) * (w.dim() - 1)))
    new.bias = nn.Parameter(s * b + t)
    return new


@dataclass
class Node:
    """One operation of the tape: its kind, the nodes it read, its output value."""

    kind: str
    inputs: list[int]
    value: Tensor
    info: dict = field(default_factory=dict)


@dataclass
class Call:
    """One Linear/Conv call, as the conservation report should list it."""

    name: str
    layer: str
    node: int
    relevance_out: Tensor | None = None
    relevance_in: Tensor | None = None


class Tape:
    """Records a hand-written forward pass; see the module docstring."""

    def __init__(self, model: nn.Module) -> None:
        self.names = {id(m): n for n, m in model.named_modules()}
        self.nodes: list[Node] = []
        self.calls: list[Call] = []
        self.points: dict[str, int] = {}  # "path" / "path:in" -> node id

    # ---- recording ------------------------------------------------------------------
    def _add(self, kind: str, inputs: list[int], value: Tensor, **info) -> int:
        self.nodes.append(Node(kind, inputs, value.detach(), info))
        return len(self.nodes) - 1

    def value(self, i: int) -> Tensor:
        return self.nodes[i].value

    def _mark(self, module: nn.Module | None, i_in: int, i_out: int) -> None:
        if module is None:
            return
        name = self.names[id(module)]
        self.points.setdefault(f"{name}:in", i_in)
        self.points.setdefault(name, i_out)

    def input(self, x: Tensor) -> int:
        return self._add("input", [], x.double())

    def param(self, layer: nn.Module, i: int, bn: nn.Module | None = None) -> int:
        folded = fold(layer, bn)
        with torch.no_grad():
            out = folded(self.value(i))
        j = self._add("param", [i], out, layer=folded)
        self.calls.append(Call(self.names[id(layer)], type(layer).__name__, j))
        self._mark(layer, i, j)
        if bn is not None:
            self._mark(bn, j, j)
        return j

    def relu(self, i: int, module: nn.Module | None = None) -> int:
        j = self._add("pass", [i], torch.relu(self.value(i)))
        self._mark(module, i, j)
        return j

    def activation(self, fn, i: int, module: nn.Module | None = None) -> int:
        """An element-wise activation explained with the identity rule."""
        with torch.no_grad():
            j = self._add("pass", [i], fn(self.value(i)))
        self._mark(module, i, j)
        return j

    def scale(self, i: int, c: float) -> int:
        return self._add("pass", [i], self.value(i) * c)

    def pool(self, layer: nn.Module, i: int) -> int:
        with torch.no_grad():
            out = layer(self.value(i))
        j = self._add("pool", [i], out, layer=layer)
        self._mark(layer if id(layer) in self.names else None, i, j)
        return j

    def reshape(self, i: int, shape) -> int:
        return self._add("reshape", [i], self.value(i).reshape(shape))

    def flatten(self, i: int, module: nn.Module | None = None) -> int:
        v = self.value(i)
        j = self.reshape(i, (v.shape[0], -1))
        self._mark(module, i, j)
        return j

    def add(self, i: int, k: int) -> int:
        return self._add("add", [i, k], self.value(i) + self.value(k))

    def cat(self, items: list[int], dim: int = 1) -> int:
        return self._add("cat", list(items), torch.cat([self.value(i) for i in items], dim),
                         dim=dim)

    def linear(self, fn, items: list[int]) -> int:
        """Any other linear function of input-dependent tensors (indexing, permute, sum,
        mean, subtraction, scaling, ...): LRP-0, R_j = sum_k a_j L_kj R_k / y_k."""
        with torch.no_grad():
            out = fn(*[self.value(i) for i in items])
        return self._add("linear", list(items), out, fn=fn)

    def module(self, m: nn.Module, i: int) -> int:
        """A leaf module (or an nn.Sequential of them)."""
        if isinstance(m, nn.Sequential):
            for child in m:
                i = self.module(child, i)
            return i
        if isinstance(m, PARAM):
            return self.param(m, i)
        if isinstance(m, POOL):
            return self.pool(m, i)
        if isinstance(m, nn.Flatten):
            return self.flatten(i, m)
        if isinstance(m, nn.ReLU):
            return self.relu(i, m)
        if isinstance(m, (nn.Dropout, nn.Identity)):
            j = self._add("pass", [i], self.value(i))
            self._mark(m, i, j)
            return j
        if isinstance(m, PASS):
            return self.activation(m, i, m)
        raise TypeError(f"reference: no rule for {type(m).__name__}")

    # ---- relevance --------------------------------------------------------------------
    def lrp(self, out: int, target: Tensor, rules: list, sums_epsilon: float | None = None,
            ) -> dict[int, Tensor]:
        """Relevance of every node for ``target`` (LongTensor[B]); ``rules`` has one rule per
        Linear/Conv call in execution order.  Fills ``self.calls[*].relevance_out/in``."""
        if len(rules) != len(self.calls):
            raise ValueError(f"{len(rules)} rules for {len(self.calls)} Linear/Conv calls")
        rule_of = {c.node: spec(r) for c, r in zip(self.calls, rules, strict=True)}
        call_of = {c.node: c for c in self.calls}
        y = self.value(out)
        rows = torch.arange(y.shape[0])
        R: dict[int, Tensor] = {out: torch.zeros_like(y)}
        R[out][rows, target] = y[rows, target]

        def send(i: int, r: Tensor) -> None:
            R[i] = R[i] + r if i in R else r

        with torch.no_grad():
            for j in reversed(range(len(self.nodes))):
                node = self.nodes[j]
                r = R.get(j)
                if r is None:
                    r = R[j] = torch.zeros_like(node.value)
                if node.kind == "input":
                    continue
                ins = node.inputs
                if node.kind == "param":
                    a = self.value(ins[0])
                    r_in = _param_step(node.info["layer"], a, r, rule_of[j])
                    call = call_of[j]
                    call.relevance_out = r.flatten(1).sum(1)
                    call.relevance_in = r_in.flatten(1).sum(1)
                    send(ins[0], r_in)
                elif node.kind == "pass":
                    send(ins[0], r)
                elif node.kind == "pool":
                    send(ins[0], _pool_step(node.info["layer"], self.value(ins[0]), r))
                elif node.kind == "reshape":
                    send(ins[0], r.reshape(self.value(ins[0]).shape))
                elif node.kind == "add":
                    z = node.value
                    s = r / stab(z, 0.0 if sums_epsilon is None else sums_epsilon)
                    for i in ins:
                        send(i, self.value(i) * s)
                elif node.kind == "linear":
                    # L^T (R / y) by a vector-Jacobian product of the linear map itself
                    ins_v = [self.value(i).clone().requires_grad_(True) for i in ins]
                    with torch.enable_grad():
                        y_ = node.info["fn"](*ins_v)
                    grads = torch.autograd.grad(y_, ins_v, r / stab(node.value, 0.0),
                                                allow_unused=True)
                    for i, v, g in zip(ins, ins_v, grads, strict=True):
                        if g is not None:
                            send(i, v.detach() * g)
                elif node.kind == "cat":
                    dim, start = node.info["dim"], 0
                    for i in ins:
                        n = self.value(i).shape[dim]
                        send(i, r.narrow(dim, start, n))
                        start += n
                else:  # pragma: no cover
                    raise ValueError(node.kind)
        return R


# ---- the architectures, written out again by hand -----------------------------------------


def _vgg(model, t: Tape, x: Tensor) -> int:
    i = t.module(model.features, t.input(x))
    i = t.pool(model.avgpool, i)
    i = t.flatten(i)
    return t.module(model.classifier, i)


def _basic(blk, t: Tape, i: int) -> int:
    if blk.downsample is None:
        skip = i
    else:
        skip = t.param(blk.downsample[0], i, bn=blk.downsample[1])
        t._mark(blk.downsample, i, skip)
    out = t.relu(t.param(blk.conv1, i, bn=blk.bn1))
    out = t.param(blk.conv2, out, bn=blk.bn2)
    return t.relu(t.add(out, skip), blk.relu_out)


def _bottleneck(blk, t: Tape, i: int) -> int:
    out = t.relu(t.param(blk.conv1, i, bn=blk.bn1))
    out = t.relu(t.param(blk.conv2, out, bn=blk.bn2))
    out = t.param(blk.conv3, out, bn=blk.bn3)
    if blk.downsample is None:
        skip = i
    else:
        skip = t.param(blk.downsample[0], i, bn=blk.downsample[1])
        t._mark(blk.downsample, i, skip)
    return t.relu(t.add(out, skip))


def _resnet(model, t: Tape, x: Tensor) -> int:
    i = t.relu(t.param(model.conv1, t.input(x), bn=model.bn1))
    i = t.module(model.maxpool, i)
    for stage in (model.layer1, model.layer2, model.layer3):
        for blk in stage:
            i = (_basic if type(blk).__name__ == "BasicBlock" else _bottleneck)(blk, t, i)
    i = t.pool(model.avgpool, i)
    return t.param(model.fc, t.flatten(i))


def _densenet(model, t: Tape, x: Tensor) -> int:
    i = t.relu(t.param(model.stem, t.input(x)))
    for layer in model.block:
        new = t.relu(t.param(layer.conv, i, bn=layer.norm))
        i = t.cat([i, new], 1)
    i = t.module(model.transition, i)
    i = t.pool(nn.AdaptiveAvgPool2d(2), i)
    i = t.flatten(i)
    return t.param(model.out, t.relu(t.param(model.head, i)))


def _two_input(model, t: Tape, image: Tensor, vector: Tensor) -> int:
    a = t.input(image)
    b = t.input(vector)
    ia = t.pool(nn.MaxPool2d(2), t.relu(t.param(model.image_conv, a)))
    ia = t.flatten(ia)
    ib = t.scale(t.relu(t.param(model.vector_fc, b)), 0.5)
    h = t.relu(t.param(model.joint, t.cat([ia, ib], 1)))
    return t.param(model.out, h)


def _functional_cnn(model, t: Tape, x: Tensor) -> int:
    i = t.relu(t.param(model.conv1, t.input(x), bn=model.bn1))
    i = t.pool(nn.MaxPool2d(2), i)
    i = t.relu(t.param(model.conv2, i, bn=model.bn2))
    i = t.flatten(i)
    i = t.relu(t.param(model.fc1, i, bn=model.bn3))
    return t.param(model.fc2, i)


FORWARDS = {"TinyVGG": _vgg, "TinyResNet": _resnet, "TinyDenseNet": _densenet,
            "TwoInput": _two_input, "FunctionalBNCNN": _functional_cnn}


def record(model: nn.Module, inputs) -> tuple[Tape, int]:
    """Run the hand-written forward of ``model`` (one of tests/architectures.py) on a tape."""
    inputs = inputs if isinstance(inputs, tuple) else (inputs,)
    t = Tape(model)
    out = FORWARDS[type(model).__name__](model, t, *inputs)
    return t, out


@dataclass
class Reference:
    relevance: tuple[Tensor, ...]  # one per input
    logit: Tensor
    calls: list[Call]
    at: dict[str, Tensor]  # relevance at the marked points ("path", "path:in")
    output: Tensor


def reference(model: nn.Module, inputs, target: Tensor, rules: list,
              sums_epsilon: float | None = None) -> Reference:
    """LRP of ``model`` at ``inputs`` for ``target`` with one rule per Linear/Conv call."""
    t, out = record(model, inputs)
    R = t.lrp(out, target, rules, sums_epsilon)
    inputs_ = [j for j, n in enumerate(t.nodes) if n.kind == "input"]
    y = t.value(out)
    logit = y[torch.arange(y.shape[0]), target]
    at = {k: R[j] for k, j in t.points.items()}
    return Reference(tuple(R[j] for j in inputs_), logit, t.calls, at, y)


def layer_list(model: nn.Module, inputs) -> list[tuple[str, nn.Module]]:
    """The Linear/Conv calls of ``model`` in execution order, as (path, module)."""
    t, _ = record(model, inputs)
    modules = dict(model.named_modules())
    return [(c.name, modules[c.name]) for c in t.calls]


def rules_for(preset: str, layers: list[tuple[str, nn.Module]], low=None, high=None) -> list:
    """The rule of every Linear/Conv call for the named preset, from its definition:

    * ``epsilon_gamma``: Epsilon(1e-6) on Linear, Gamma(0.25) on convolutions;
    * ``epsilon_gamma_box``: the same with ZBox(low, high) on the first call;
    * ``epsilon_alpha2_beta1``: Epsilon(1e-6) on Linear, AlphaBeta(2, 1) on convolutions;
    * ``best_practice``: ZBox on the first call, Zero on the last; of the m calls between,
      the lower ceil(m/2) get Gamma(0.25), the upper ones Epsilon(0.25);
    * ``zero``, ``epsilon0.1``: one rule everywhere.
    """
    n = len(layers)
    conv = [isinstance(m, (nn.Conv1d, nn.Conv2d)) for _, m in layers]
    if preset in ("epsilon_gamma", "epsilon_gamma_box"):
        rules = [Gamma(0.25) if c else Epsilon(1e-6) for c in conv]
        if preset == "epsilon_gamma_box":
            rules[0] = ZBox(low, high)
        return rules
    if preset == "epsilon_alpha2_beta1":
        return [AlphaBeta(2.0, 1.0) if c else Epsilon(1e-6) for c in conv]
    if preset == "best_practice":
        middle = n - 2
        n_gamma = -(-middle // 2)
        return ([ZBox(low, high)] + [Gamma(0.25)] * n_gamma
                + [Epsilon(0.25)] * (middle - n_gamma) + [Zero()])
    if preset == "zero":
        return [Zero()] * n
    if preset == "epsilon0.1":
        return [Epsilon(0.1)] * n
    raise ValueError(preset)
