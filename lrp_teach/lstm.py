"""LRP for LSTMs (Arras et al. 2017), on ``torch.nn.LSTM`` weights as they are.

The module explains models made of an optional ``nn.Embedding``, one ``nn.LSTM`` layer
(uni- or bidirectional, ``batch_first=True``) and one ``nn.Linear`` output layer that
reads the final hidden states ``[h_fwd(L-1), h_bwd(0)]`` (``L`` = a sequence's length),
exactly as ``nn.LSTM`` returns them in ``h_n`` for a packed batch. The package's own
:class:`LSTMClassifier` and :class:`LSTMRegressor` have this shape, and so does any model
a user builds from the same three layers.

Relevance starts at the target's raw score and flows backwards through time:

* linear maps (output layer, gate pre-activations) use the ε rule with stabilizer
  ``ε·sign(z)`` and a ``bias_factor`` (0: bias and stabilizer absorb their share; 1: that
  share is spread over the N inputs, and relevance is conserved exactly);
* the products ``o ⊙ tanh(c)``, ``f ⊙ c_{t-1}`` and ``i ⊙ g`` give all relevance to the
  signal (``rule="all"``, signal-take-all) or split it between gate and signal
  (``"prop"``, ``"abs"``, ``"half"``), the variants compared by Arras et al. (2019);
* the cell update ``c_t = f ⊙ c_{t-1} + i ⊙ g`` is split by the ε rule (identity weights,
  no bias, N = 2H); tanh passes relevance unchanged.

Everything is batched over sequences of different lengths and runs on CPU or CUDA. The
module also holds the baselines chapter 7 compares against (gradient, gradient x input,
integrated gradients, occlusion) and word deletion, all with the same call signature
``(model, inputs, lengths, target)``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

__all__ = [
    "LSTMClassifier",
    "LSTMRegressor",
    "LSTMRelevance",
    "RULES",
    "cell_step_relevance",
    "deletion_curve",
    "explain",
    "explain_steps",
    "gradient",
    "gradient_x_input",
    "integrated_gradients",
    "occlusion",
    "scores",
]

RULES = ("all", "prop", "abs", "half")


# --------------------------------------------------------------------------- models


class LSTMClassifier(nn.Module):
    """Embedding -> one-layer LSTM (batch first) -> linear layer on the final states.

    ``forward(tokens, lengths)`` packs the padded batch, so padding never changes the
    result; the linear layer reads ``h_n``: ``f = W [h_fwd(L-1), h_bwd(0)] + b`` (or only
    ``h_fwd(L-1)``), the BiLSTM classifier of :cite:`arras2017wassa` on an LSTM
    :cite:`hochreiter1997`.

    Parameters
    ----------
    vocab_size, emb_dim, hidden, n_classes : int
        Sizes of the vocabulary, the embedding, the LSTM state and the output.
    bidirectional : bool
        Whether to add a second LSTM that reads the sentence backwards.
    padding_idx : int
        Index of the padding token (its embedding is zero).
    """

    def __init__(
        self,
        vocab_size: int,
        emb_dim: int,
        hidden: int,
        n_classes: int,
        bidirectional: bool = False,
        padding_idx: int = 0,
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, emb_dim, padding_idx=padding_idx)
        self.lstm = nn.LSTM(emb_dim, hidden, batch_first=True, bidirectional=bidirectional)
        self.linear = nn.Linear(hidden * (2 if bidirectional else 1), n_classes)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return self.linear(_final_states(self.lstm, self.embedding(tokens), lengths))


class LSTMRegressor(nn.Module):
    """One-layer LSTM on real-valued inputs (batch first) -> linear layer on the final states.

    ``f = W h_fwd(L-1) + b`` (bidirectional: ``W [h_fwd(L-1), h_bwd(0)] + b``), the regressor
    of the toy arithmetic task :cite:`arras2019evaluating`.

    Parameters
    ----------
    input_dim, hidden : int
        Sizes of one input step and of the LSTM state.
    n_outputs : int
        Number of outputs (1 for a scalar regression).
    bidirectional : bool
        Whether to add a backward LSTM.
    """

    def __init__(
        self, input_dim: int, hidden: int, n_outputs: int = 1, bidirectional: bool = False
    ) -> None:
        super().__init__()
        self.lstm = nn.LSTM(input_dim, hidden, batch_first=True, bidirectional=bidirectional)
        self.linear = nn.Linear(hidden * (2 if bidirectional else 1), n_outputs)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return self.linear(_final_states(self.lstm, x, lengths))


def _final_states(lstm: nn.LSTM, x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """``[h_fwd(L-1), h_bwd(0)]`` from a packed run of ``lstm`` (what ``h_n`` holds)."""
    if lengths is None:
        lengths = torch.full((x.shape[0],), x.shape[1], dtype=torch.int64)
    packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
    _, (h_n, _) = lstm(packed)
    return torch.cat(list(h_n), dim=-1)


# --------------------------------------------------------------------------- model parts


@dataclass
class _Parts:
    embedding: nn.Embedding | None
    lstm: nn.LSTM
    linear: nn.Linear

    @property
    def hidden(self) -> int:
        return self.lstm.hidden_size

    @property
    def directions(self) -> int:
        return 2 if self.lstm.bidirectional else 1

    def weights(self, direction: int, dtype: torch.dtype, device: torch.device):
        """``(W_ih, W_hh, b_ih + b_hh)`` of one direction, detached copies."""
        suffix = "_reverse" if direction == 1 else ""
        lstm = self.lstm
        w_ih = getattr(lstm, f"weight_ih_l0{suffix}").detach().to(device, dtype)
        w_hh = getattr(lstm, f"weight_hh_l0{suffix}").detach().to(device, dtype)
        if lstm.bias:
            b_ih = getattr(lstm, f"bias_ih_l0{suffix}").detach().to(device, dtype)
            b = b_ih + getattr(lstm, f"bias_hh_l0{suffix}").detach().to(device, dtype)
        else:
            b = torch.zeros(w_ih.shape[0], dtype=dtype, device=device)
        return w_ih, w_hh, b


_ALLOWED = (nn.Embedding, nn.LSTM, nn.Linear, nn.Dropout)


def _parts(model: nn.Module) -> _Parts:
    """Find the embedding, LSTM and output layer of ``model``; raise on anything else."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    found: dict[type, list[tuple[str, nn.Module]]] = {t: [] for t in _ALLOWED}
    for name, module in model.named_modules():
        if module is model and not isinstance(module, _ALLOWED):
            continue
        kind = next((t for t in _ALLOWED if isinstance(module, t)), None)
        if kind is None:
            if any(True for _ in module.parameters(recurse=False)):
                raise TypeError(
                    f"lt.lstm.explain supports models made of nn.Embedding, one nn.LSTM and "
                    f"one nn.Linear; layer {name!r} ({type(module).__name__}) has no LRP rule"
                )
            continue
        found[kind].append((name, module))
    if len(found[nn.LSTM]) != 1 or len(found[nn.Linear]) != 1 or len(found[nn.Embedding]) > 1:
        raise TypeError(
            "lt.lstm.explain needs exactly one nn.LSTM, one nn.Linear output layer and at "
            f"most one nn.Embedding; found {len(found[nn.LSTM])} LSTM, "
            f"{len(found[nn.Linear])} Linear, {len(found[nn.Embedding])} Embedding"
        )
    lstm = found[nn.LSTM][0][1]
    linear = found[nn.Linear][0][1]
    embedding = found[nn.Embedding][0][1] if found[nn.Embedding] else None
    if lstm.num_layers != 1:
        raise ValueError(
            f"only one-layer LSTMs are supported (num_layers={lstm.num_layers}); stack "
            "explanations layer by layer is not implemented"
        )
    if getattr(lstm, "proj_size", 0):
        raise ValueError(f"LSTMs with proj_size={lstm.proj_size} are not supported; use 0")
    if not lstm.batch_first:
        raise ValueError("the LSTM must use batch_first=True (inputs of shape (B, T, E))")
    width = lstm.hidden_size * (2 if lstm.bidirectional else 1)
    if linear.in_features != width:
        raise ValueError(
            f"the output layer reads {linear.in_features} features, but the LSTM's final "
            f"states have {width}; the model must apply its nn.Linear to [h_fwd, h_bwd]"
        )
    if embedding is not None and embedding.embedding_dim != lstm.input_size:
        raise ValueError(
            f"embedding dimension {embedding.embedding_dim} != LSTM input size {lstm.input_size}"
        )
    return _Parts(embedding, lstm, linear)


# --------------------------------------------------------------------------- input checks


def _prepare(
    parts: _Parts,
    inputs: torch.Tensor,
    lengths: torch.Tensor | None,
    dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Embedded inputs ``(B, T, E)`` in ``dtype`` and validated lengths ``(B,)``."""
    if not isinstance(inputs, torch.Tensor):
        raise TypeError(f"inputs must be a torch.Tensor, got {type(inputs).__name__}")
    device = parts.lstm.weight_ih_l0.device
    if parts.embedding is not None:
        if inputs.dim() != 2 or inputs.dtype not in (torch.int64, torch.int32):
            raise ValueError(
                "a model with an nn.Embedding takes token indices of shape (B, T) and "
                f"integer dtype; got shape {tuple(inputs.shape)} and dtype {inputs.dtype}"
            )
        n = parts.embedding.num_embeddings
        if inputs.numel() and (inputs.min() < 0 or inputs.max() >= n):
            raise ValueError(f"token indices must lie in [0, {n}); got {int(inputs.max())}")
        x = parts.embedding.weight.detach().to(device, dtype)[inputs.to(device).long()]
    else:
        e = parts.lstm.input_size
        if inputs.dim() != 3 or inputs.shape[-1] != e or not inputs.is_floating_point():
            raise ValueError(
                f"inputs must be a float tensor of shape (B, T, {e}); got shape "
                f"{tuple(inputs.shape)} and dtype {inputs.dtype}"
            )
        x = inputs.detach().to(device, dtype)
    batch, steps = x.shape[:2]
    if batch == 0 or steps == 0:
        raise ValueError(
            f"inputs must have at least one sequence and one step; got {batch}x{steps}"
        )
    if lengths is None:
        lengths = torch.full((batch,), steps, dtype=torch.int64, device=device)
    else:
        lengths = torch.as_tensor(lengths).to(device)
        if lengths.shape != (batch,) or lengths.is_floating_point():
            raise ValueError(
                f"lengths must be an integer tensor of shape ({batch},); got shape "
                f"{tuple(lengths.shape)} and dtype {lengths.dtype}"
            )
        if lengths.min() < 1 or lengths.max() > steps:
            raise ValueError(
                f"lengths must lie in [1, {steps}] (the padded length); got "
                f"[{int(lengths.min())}, {int(lengths.max())}]"
            )
        lengths = lengths.long()
    valid = torch.arange(steps, device=device)[None, :] < lengths[:, None]
    return x * valid[..., None], lengths


def _targets(
    target: int | torch.Tensor | None, logits: torch.Tensor
) -> torch.Tensor:
    """Target index per sequence; ``None`` picks the largest output."""
    batch, n_out = logits.shape
    if target is None:
        return logits.argmax(dim=1)
    t = torch.as_tensor(target, device=logits.device)
    if t.is_floating_point():
        raise ValueError(f"target must be an int or an integer tensor, got dtype {t.dtype}")
    t = t.long().expand(batch) if t.dim() == 0 else t.long()
    if t.shape != (batch,):
        raise ValueError(f"target must be an int or have shape ({batch},); got {tuple(t.shape)}")
    if t.min() < 0 or t.max() >= n_out:
        raise ValueError(
            f"target out of range: the model has {n_out} outputs, got indices in "
            f"[{int(t.min())}, {int(t.max())}]"
        )
    return t


# --------------------------------------------------------------------------- forward


def _sgn(z: torch.Tensor) -> torch.Tensor:
    """sign with sign(0) = +1."""
    return torch.where(z >= 0, 1.0, -1.0).to(z.dtype)


def _run(
    x: torch.Tensor,
    lengths: torch.Tensor,
    w_ih: torch.Tensor,
    w_hh: torch.Tensor,
    b: torch.Tensor,
    reverse: bool,
) -> dict[str, torch.Tensor]:
    """Explicit LSTM recurrence of one direction, with packed-sequence semantics.

    Returns per-step tensors ``(B, T, ·)``: pre-activations, gates, states and the previous
    states each step read. The reverse direction starts from a zero state at ``L-1``.
    """
    batch, steps, _ = x.shape
    hidden = w_hh.shape[1]
    h = x.new_zeros(batch, hidden)
    c = x.new_zeros(batch, hidden)
    xw = x @ w_ih.T + b  # (B, T, 4H): the input part of every step at once
    out = {k: [None] * steps for k in ("pre", "h_prev", "c_prev", "c", "h")}
    order = range(steps - 1, -1, -1) if reverse else range(steps)
    for t in order:
        pre = xw[:, t] + h @ w_hh.T
        i, f, g, o = pre.chunk(4, dim=1)
        i, f, g, o = i.sigmoid(), f.sigmoid(), g.tanh(), o.sigmoid()
        c_new = f * c + i * g
        h_new = o * c_new.tanh()
        out["pre"][t], out["h_prev"][t], out["c_prev"][t] = pre, h, c
        out["c"][t], out["h"][t] = c_new, h_new
        if reverse:  # padding steps keep the state at zero, as packed sequences do
            keep = (t < lengths).to(x.dtype)[:, None]
            h, c = h_new * keep, c_new * keep
        else:
            h, c = h_new, c_new
    return {k: torch.stack(v, dim=1) for k, v in out.items()}


def _features(parts: _Parts, x: torch.Tensor, lengths: torch.Tensor, dtype: torch.dtype):
    """Final states ``[h_fwd(L-1), h_bwd(0)]`` and the per-direction recurrences."""
    rows = torch.arange(x.shape[0], device=x.device)
    runs, feats = [], []
    for d in range(parts.directions):
        run = _run(x, lengths, *parts.weights(d, dtype, x.device), reverse=d == 1)
        runs.append(run)
        feats.append(run["h"][rows, lengths - 1] if d == 0 else run["h"][:, 0])
    return torch.cat(feats, dim=1), runs


def scores(
    model: nn.Module,
    inputs: torch.Tensor,
    lengths: torch.Tensor | None = None,
    *,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """The model's outputs ``(B, n_out)`` computed by this module's explicit recurrence.

    Equals ``model(inputs, lengths)`` for the package's models (to float precision); used
    to check that the explained path is the model's forward pass: the recurrence of
    :cite:`hochreiter1997` in torch's gate order, ``f = W [h_fwd(L-1), h_bwd(0)] + b``.
    """
    parts = _parts(model)
    x, lengths = _prepare(parts, inputs, lengths, dtype)
    with torch.no_grad():
        feat, _ = _features(parts, x, lengths, dtype)
        w, b = _linear(parts, dtype, x.device)
        return feat @ w.T + b


def _linear(parts: _Parts, dtype: torch.dtype, device: torch.device):
    w = parts.linear.weight.detach().to(device, dtype)
    b = parts.linear.bias
    b = torch.zeros(w.shape[0], dtype=dtype, device=device) if b is None else b.detach()
    return w, b.to(device, dtype)


# --------------------------------------------------------------------------- LRP


def _epsilon_linear(
    inputs: list[torch.Tensor],
    weights: list[torch.Tensor],
    z: torch.Tensor,
    bias: torch.Tensor,
    relevance: torch.Tensor,
    eps: float,
    bias_factor: float,
) -> list[torch.Tensor]:
    """ε rule for ``z = Σ_groups a_g W_g^T + b``, returning the relevance of each group.

    R_i = Σ_j (a_i w_ij + bias_factor·(b_j + ε s_j)/N) / (z_j + ε s_j) · R_j, N = total
    number of inputs over all groups.
    """
    den = z + eps * _sgn(z)
    s = relevance / den
    n_inputs = sum(a.shape[-1] for a in inputs)
    share = bias_factor * ((bias + eps * _sgn(z)) * s).sum(-1, keepdim=True) / n_inputs
    return [a * (s @ w) + share for a, w in zip(inputs, weights, strict=True)]


def _split(
    rule: str, gate: torch.Tensor, signal: torch.Tensor, relevance: torch.Tensor,
    eps: float, bias_factor: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Relevance of a product ``gate ⊙ signal`` split into (gate, signal) shares."""
    if rule == "all":
        return torch.zeros_like(relevance), relevance
    if rule == "half":
        return 0.5 * relevance, 0.5 * relevance
    if rule == "prop":  # the epsilon rule over the two factors, N = 2
        sign = _sgn(gate + signal)
        s = relevance / (gate + signal + eps * sign)
        share = bias_factor * eps * sign / 2
        return (gate + share) * s, (signal + share) * s
    # abs: the same with absolute values
    s = relevance / (gate.abs() + signal.abs() + eps)
    share = bias_factor * eps / 2
    return (gate.abs() + share) * s, (signal.abs() + share) * s


def _cell_backward(
    x: torch.Tensor,
    h_prev: torch.Tensor,
    c_prev: torch.Tensor,
    pre: torch.Tensor,
    w_ih: torch.Tensor,
    w_hh: torch.Tensor,
    b: torch.Tensor,
    r_h: torch.Tensor,
    r_c: torch.Tensor,
    eps: float,
    bias_factor: float,
    rule: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    i, f, g, o = pre.chunk(4, dim=-1)
    i, f, g, o = i.sigmoid(), f.sigmoid(), g.tanh(), o.sigmoid()
    fc, ig = f * c_prev, i * g
    c = fc + ig
    # h = o * tanh(c): the signal tanh(c) passes its share to c unchanged
    r_o, r_tanh = _split(rule, o, c.tanh(), r_h, eps, bias_factor)
    r_c = r_c + r_tanh
    # c = f*c_prev + i*g: epsilon rule over the two summands, identity weights, N = 2H
    hidden = c.shape[-1]
    den = c + eps * _sgn(c)
    s = r_c / den
    share = bias_factor * (eps * _sgn(c) * s).sum(-1, keepdim=True) / (2 * hidden)
    r_fc, r_ig = fc * s + share, ig * s + share
    r_f, r_cprev = _split(rule, f, c_prev, r_fc, eps, bias_factor)
    r_i, r_g = _split(rule, i, g, r_ig, eps, bias_factor)
    # gates and g: relevance passes the nonlinearity unchanged to the pre-activations
    r_pre = torch.cat([r_i, r_f, r_g, r_o], dim=-1)
    r_x, r_hprev = _epsilon_linear(
        [x, h_prev], [w_ih, w_hh], pre, b, r_pre, eps, bias_factor
    )
    return r_x, r_hprev, r_cprev


def cell_step_relevance(
    x: torch.Tensor,
    h_prev: torch.Tensor,
    c_prev: torch.Tensor,
    w_ih: torch.Tensor,
    w_hh: torch.Tensor,
    b: torch.Tensor,
    r_h: torch.Tensor,
    r_c: torch.Tensor,
    epsilon: float = 1e-3,
    bias_factor: float = 0.0,
    rule: str = "all",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """LRP through one LSTM step (torch gate order i, f, g, o), batched.

    The step computes ``z = W_ih x + W_hh h_{t-1} + b``, ``(i, f, g, o) = (σ, σ, tanh, σ)(z)``,
    ``c = f ⊙ c_{t-1} + i ⊙ g`` and ``h = o ⊙ tanh(c)``. Given the relevance ``r_h`` of h and
    ``r_c`` of c (from the following step), it returns ``(R_x, R_{h_{t-1}}, R_{c_{t-1}})``:

    1. ``R_c ← r_c + R_h`` (signal-take-all: o gets nothing, tanh is passed unchanged);
    2. ``R_{f⊙c_{t-1}} = (f c_{t-1} + δ ε s/2H) / (c + ε s) R_c`` and the same for ``i ⊙ g``
       (ε rule, identity weights, N = 2H, ``s = sign(c)``, ``δ`` = ``bias_factor``);
    3. ``R_{c_{t-1}} = R_{f⊙c_{t-1}}`` and ``R_g = R_{i⊙g}``;
    4. ``R_{x,k} = Σ_j (x_k W_jk + δ(b_j + ε s_j)/N) / (z_j + ε s_j) R_j`` over the rows j of
       g (N = E + H), and the same for ``h_{t-1}`` with ``W_hh``.

    Other ``rule`` values split each product between gate and signal instead
    (:cite:`arras2019evaluating`); the gate's share then flows to its own pre-activation.
    See :cite:`arras2017wassa` and :cite:`arras2019lstm`.

    Parameters
    ----------
    x : (B, E) tensor
    h_prev, c_prev : (B, H) tensors
    w_ih : (4H, E) tensor
    w_hh : (4H, H) tensor
    b : (4H,) tensor, ``b_ih + b_hh``
    r_h, r_c : (B, H) tensors
    epsilon, bias_factor : float
    rule : {"all", "prop", "abs", "half"}
    """
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    pre = x @ w_ih.T + h_prev @ w_hh.T + b
    return _cell_backward(x, h_prev, c_prev, pre, w_ih, w_hh, b, r_h, r_c, epsilon, bias_factor,
                          rule)


@dataclass
class LSTMRelevance:
    """Result of :func:`explain`.

    Attributes
    ----------
    input : torch.Tensor
        Relevance per input dimension, ``(B, T, E)``; zero on padding.
    initial : torch.Tensor
        Relevance left on the (zero) initial states, ``(B,)``, summed over directions.
    score : torch.Tensor
        The explained output (target logit or regression output), ``(B,)``.
    target : torch.Tensor
        The explained output index, ``(B,)``.
    lengths : torch.Tensor
        ``(B,)``.
    """

    input: torch.Tensor
    initial: torch.Tensor
    score: torch.Tensor
    target: torch.Tensor
    lengths: torch.Tensor

    @property
    def tokens(self) -> torch.Tensor:
        """Relevance per time step (token), ``(B, T)``: the sum over input dimensions."""
        return self.input.sum(-1)

    @property
    def absorbed(self) -> torch.Tensor:
        """Relevance absorbed by biases and stabilizers, ``(B,)``: score - inputs - initial."""
        return self.score - self.tokens.sum(-1) - self.initial


def _validate(model: nn.Module, inputs, lengths, embeddings: list[str]) -> None:
    """Shape, dtype and range checks with messages that name the fix."""
    if not isinstance(inputs, torch.Tensor):
        raise TypeError(f"inputs must be a torch.Tensor, got {type(inputs).__name__}")
    if embeddings:
        emb = model.get_submodule(embeddings[0])
        if inputs.dim() != 2 or inputs.dtype not in (torch.int64, torch.int32):
            raise ValueError(
                "a model with an nn.Embedding takes token indices of shape (B, T) and "
                f"integer dtype; got shape {tuple(inputs.shape)} and dtype {inputs.dtype}")
        n = emb.num_embeddings
        if inputs.numel() and (inputs.min() < 0 or inputs.max() >= n):
            raise ValueError(f"token indices must lie in [0, {n}); got {int(inputs.max())}")
    else:
        lstm = next((m for m in model.modules() if isinstance(m, nn.LSTM)), None)
        e = lstm.input_size if lstm is not None else inputs.shape[-1]
        if inputs.dim() != 3 or inputs.shape[-1] != e or not inputs.is_floating_point():
            raise ValueError(f"inputs must be a float tensor of shape (B, T, {e}); got shape "
                             f"{tuple(inputs.shape)} and dtype {inputs.dtype}")
    if lengths is not None:
        lengths = torch.as_tensor(lengths)
        batch, steps = inputs.shape[:2]
        if lengths.shape != (batch,) or lengths.is_floating_point():
            raise ValueError(f"lengths must be an integer tensor of shape ({batch},); got "
                             f"shape {tuple(lengths.shape)} and dtype {lengths.dtype}")
        if lengths.min() < 1 or lengths.max() > steps:
            raise ValueError(f"lengths must lie in [1, {steps}] (the padded length); got "
                             f"[{int(lengths.min())}, {int(lengths.max())}]")


def explain(
    model: nn.Module,
    inputs: torch.Tensor,
    lengths: torch.Tensor | None = None,
    target: int | torch.Tensor | None = None,
    *,
    epsilon: float = 1e-3,
    bias_factor: float = 0.0,
    rule: str = "all",
    dtype: torch.dtype = torch.float64,
) -> LSTMRelevance:
    """LRP for an LSTM model, through the engine: ``model(inputs, lengths)`` as written.

    A thin wrapper over :func:`lrp_teach.attribute` with ``Epsilon(epsilon, bias_factor)``
    on every ``nn.Linear`` and ``nn.LSTM`` (:mod:`lrp_teach.engine.recurrent`):

    .. math::
        R_i = \\sum_j \\frac{a_i w_{ij} + \\delta (b_j + \\varepsilon s_j)/N}
        {z_j + \\varepsilon s_j} R_j,\\qquad s_j = \\operatorname{sign}(z_j),

    with signal-take-all at the gates, as in :cite:`arras2017wassa`.  Whatever the model's
    forward does with the LSTM's outputs is explained as written.  With ``bias_factor=1``
    (:math:`\\delta`) relevance is conserved: ``Σ R_input + R_initial = f_c``.  Other
    ``rule`` values (``"prop"``, ``"abs"``, ``"half"``) use :func:`explain_steps`.

    Parameters
    ----------
    model : nn.Module
        Called as ``model(inputs, lengths)`` (``model(inputs)`` without lengths); left
        untouched (a float64 copy is explained when ``dtype`` differs from its own).
    inputs : torch.Tensor
        Token indices ``(B, T)`` for a model with an ``nn.Embedding``, else ``(B, T, E)``.
    lengths : torch.Tensor, optional
        ``(B,)`` lengths in ``[1, T]``.
    target : int or torch.Tensor, optional
        Output to explain; ``None`` explains the largest output.
    epsilon, bias_factor : float
        The ε rule's stabilizer and bias share.
    rule : {"all", "prop", "abs", "half"}
    dtype : torch.dtype
        Precision of the computation (float64 by default).

    Returns
    -------
    LSTMRelevance
        ``input`` is the relevance of the embedded (or real) inputs ``(B, T, E)``;
        ``initial`` the share left on the zero initial states (``bias_factor > 0``).
    """
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    if rule != "all":
        return explain_steps(model, inputs, lengths, target, epsilon=epsilon,
                             bias_factor=bias_factor, rule=rule, dtype=dtype)
    from .engine.composites import Composite
    from .engine.core import attribute
    from .rules import Epsilon

    eps_rule = Epsilon(epsilon, bias_factor)
    work = model
    if any(p.dtype != dtype for p in model.parameters()):
        work = copy.deepcopy(model).to(dtype)
    embeddings = [n for n, m in work.named_modules() if isinstance(m, nn.Embedding)]
    _validate(work, inputs, lengths, embeddings)
    if inputs.is_floating_point():
        inputs = inputs.to(dtype)
    args = (inputs,) if lengths is None else (inputs, torch.as_tensor(lengths))
    composite = Composite(by_type={nn.Linear: eps_rule, nn.LSTM: eps_rule})
    at = embeddings[:1] if not inputs.is_floating_point() else []
    res = attribute(work, args, target, composite, at=at)
    relevance = res.at[at[0]] if at else res.inputs[0]
    if lengths is None:
        lengths = torch.full((inputs.shape[0],), inputs.shape[1], dtype=torch.long)
    return LSTMRelevance(input=relevance, initial=res.lost, score=res.logit,
                         target=res.target, lengths=torch.as_tensor(lengths).long())


def explain_steps(
    model: nn.Module,
    inputs: torch.Tensor,
    lengths: torch.Tensor | None = None,
    target: int | torch.Tensor | None = None,
    *,
    epsilon: float = 1e-3,
    bias_factor: float = 0.0,
    rule: str = "all",
    dtype: torch.dtype = torch.float64,
) -> LSTMRelevance:
    """LRP for ``[nn.Embedding] -> nn.LSTM -> nn.Linear``, step by step (the teaching form).

    The explicit backward recursion through time that chapter 7 derives; :func:`explain`
    computes the same (``rule="all"``) through the engine, for any forward.  This form also
    offers the product rules that :cite:`arras2019evaluating` compare.

    Relevance starts at the target's score ``f_c`` and is propagated back through the output
    layer, then through time, step by step (:func:`cell_step_relevance`):

    .. math::
        R_i = \\sum_j \\frac{a_i w_{ij} + \\delta (b_j + \\varepsilon s_j)/N}
        {z_j + \\varepsilon s_j} R_j,\\qquad s_j = \\operatorname{sign}(z_j),

    with signal-take-all at the gates (``rule="all"``), as in :cite:`arras2017wassa`.
    With ``bias_factor=1`` (``δ``) relevance is conserved exactly:
    ``Σ R_input + R_initial = f_c``.

    Parameters
    ----------
    model : nn.Module
        Embedding (optional), one LSTM layer (``batch_first=True``, uni- or bidirectional,
        no projection) and a linear layer reading ``[h_fwd(L-1), h_bwd(0)]``. Left untouched.
    inputs : torch.Tensor
        Token indices ``(B, T)`` if the model has an embedding, else floats ``(B, T, E)``.
    lengths : torch.Tensor, optional
        ``(B,)`` lengths in ``[1, T]``; steps at or after a length are padding. Default: T.
    target : int or torch.Tensor, optional
        Output to explain; ``None`` explains the largest output.
    epsilon : float
        Stabilizer ε.
    bias_factor : float
        0 (default): bias and stabilizer absorb their share; 1: conserve exactly.
    rule : {"all", "prop", "abs", "half"}
        How products gate ⊙ signal split relevance :cite:`arras2019evaluating`.
    dtype : torch.dtype
        Precision of the computation (float64 by default).

    Returns
    -------
    LSTMRelevance
    """
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    if epsilon < 0:
        raise ValueError(f"epsilon must be non-negative, got {epsilon}")
    if bias_factor < 0:
        raise ValueError(f"bias_factor must be non-negative, got {bias_factor}")
    eps = epsilon
    parts = _parts(model)
    x, lengths = _prepare(parts, inputs, lengths, dtype)
    batch, steps, _ = x.shape
    hidden = parts.hidden
    rows = torch.arange(batch, device=x.device)
    with torch.no_grad():
        feat, runs = _features(parts, x, lengths, dtype)
        w_out, b_out = _linear(parts, dtype, x.device)
        logits = feat @ w_out.T + b_out
        tgt = _targets(target, logits)
        start = torch.zeros_like(logits)
        start[rows, tgt] = logits[rows, tgt]
        (r_feat,) = _epsilon_linear([feat], [w_out], logits, b_out, start, eps, bias_factor)
        r_input = torch.zeros_like(x)
        r_initial = x.new_zeros(batch)
        for d, run in enumerate(runs):
            w_ih, w_hh, b = parts.weights(d, dtype, x.device)
            r_h_final = r_feat[:, d * hidden : (d + 1) * hidden]
            r_h = torch.zeros_like(r_h_final)
            r_c = torch.zeros_like(r_h_final)
            order = range(steps) if d == 1 else range(steps - 1, -1, -1)
            for t in order:
                if d == 0:  # the forward direction's relevance enters at L-1
                    r_h = r_h + r_h_final * (t == lengths - 1).to(dtype)[:, None]
                elif t == 0:  # the backward direction's enters at position 0
                    r_h = r_h + r_h_final
                r_x, r_h, r_c = _cell_backward(
                    x[:, t], run["h_prev"][:, t], run["c_prev"][:, t], run["pre"][:, t],
                    w_ih, w_hh, b, r_h, r_c, eps, bias_factor, rule,
                )
                if d == 1:  # the previous state of the last valid step is the initial state
                    valid = (t < lengths).to(dtype)[:, None]
                    r_x = r_x * valid
                    last = (t == lengths - 1).to(dtype)
                    r_initial += last * (r_h.sum(-1) + r_c.sum(-1))
                    r_h, r_c = r_h * (1 - last)[:, None], r_c * (1 - last)[:, None]
                r_input[:, t] += r_x
            if d == 0:
                r_initial += r_h.sum(-1) + r_c.sum(-1)
    return LSTMRelevance(
        input=r_input, initial=r_initial, score=logits[rows, tgt], target=tgt, lengths=lengths
    )


# --------------------------------------------------------------------------- baselines


def _work(model: nn.Module, inputs, lengths, dtype):
    """The model in ``dtype`` (a copy when needed), its arguments, and the lengths."""
    embeddings = [n for n, m in model.named_modules() if isinstance(m, nn.Embedding)]
    _validate(model, inputs, lengths, embeddings)
    work = model
    if any(p.dtype != dtype for p in model.parameters()):
        work = copy.deepcopy(model).to(dtype)
    if inputs.is_floating_point():
        inputs = inputs.to(dtype)
    if lengths is None:
        full = torch.full((inputs.shape[0],), inputs.shape[1], dtype=torch.long)
        return work, inputs, full
    lengths = torch.as_tensor(lengths).long()
    return work, (inputs, lengths), lengths


def _mask(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    valid = torch.arange(x.shape[1], device=x.device)[None, :] < lengths.to(x.device)[:, None]
    return x * valid[..., None]


def gradient(
    model: nn.Module,
    inputs: torch.Tensor,
    lengths: torch.Tensor | None = None,
    target: int | torch.Tensor | None = None,
    *,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """:func:`lrp_teach.baselines.gradient` of ``model(inputs, lengths)``, ``(B, T, E)``.

    Sensitivity analysis :cite:`simonyan2014`; for token inputs the gradient is taken with
    respect to the embedded vectors (zero on padding).
    """
    from . import baselines

    work, args, lengths = _work(model, inputs, lengths, dtype)
    return _mask(baselines.gradient(work, args, target), lengths)


def gradient_x_input(
    model: nn.Module,
    inputs: torch.Tensor,
    lengths: torch.Tensor | None = None,
    target: int | torch.Tensor | None = None,
    *,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """:func:`lrp_teach.baselines.gradient_x_input`, ``(B, T, E)`` :cite:`arras2019evaluating`."""
    from . import baselines

    work, args, lengths = _work(model, inputs, lengths, dtype)
    return _mask(baselines.gradient_x_input(work, args, target), lengths)


def integrated_gradients(
    model: nn.Module,
    inputs: torch.Tensor,
    lengths: torch.Tensor | None = None,
    target: int | torch.Tensor | None = None,
    *,
    steps: int = 32,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """:func:`lrp_teach.baselines.integrated_gradients` from the all-zero input, ``(B, T, E)``.

    .. math:: R_{t,k} = x_{t,k} \\int_0^1 \\frac{\\partial f_c}{\\partial x_{t,k}}
              (\\alpha x)\\, d\\alpha

    by the trapezoidal rule on ``steps`` points :cite:`sundararajan2017`; for token inputs
    the path runs through the embedded vectors.
    """
    from . import baselines

    work, args, lengths = _work(model, inputs, lengths, dtype)
    return _mask(baselines.integrated_gradients(work, args, target, steps=steps), lengths)


def occlusion(
    model: nn.Module,
    inputs: torch.Tensor,
    lengths: torch.Tensor | None = None,
    target: int | torch.Tensor | None = None,
    *,
    dims: list[int] | None = None,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Occlusion of one step at a time, :func:`lrp_teach.baselines.occlusion`, ``(B, T, 1)``.

    ``R_t = f_c(x) - f_c(x with x_t = 0)``, one value per step (so ``.sum(-1)`` gives the
    token relevance as for the other methods) :cite:`zeiler2014`. ``dims`` restricts the
    occlusion to some input dimensions (e.g. ``[0]``, the value channel of the arithmetic
    task); default: all of them.
    """
    from . import baselines

    work, args, lengths = _work(model, inputs, lengths, dtype)
    R = baselines.occlusion(work, args, target, patch=1, features=dims)
    first = 0 if dims is None else dims[0]
    return _mask(R[..., first:first + 1], lengths)


def deletion_curve(
    model: nn.Module,
    tokens: torch.Tensor,
    lengths: torch.Tensor | None,
    relevance: torch.Tensor,
    target: torch.Tensor,
    n_steps: int,
    *,
    order: str = "most",
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """:func:`lrp_teach.evaluation.deletion_curve` of ``model(tokens, lengths)``."""
    from .evaluation import deletion_curve as curve

    work, args, lengths = _work(model, tokens, lengths, dtype)
    return curve(work, args, relevance, target, n_steps, order=order, lengths=lengths)
