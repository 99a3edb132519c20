"""Deep Taylor Decomposition: every LRP rule as a Taylor expansion at a root point.

Chapter 4 of the book. Deep Taylor Decomposition (DTD) :cite:`montavon2017dtd` models the
relevance of neuron k as a function of the activations a of the layer below,

    R_k(a) = max(0, Σ_j a_j w_jk + b_k) · c_k,   c_k locally constant,

and redistributes it by a first-order Taylor expansion at a reference point ã^(k):

    R_{j←k} = (a_j − ã_j^(k)) · w_jk · c_k .

The reference point is found by a line search from a against a search direction v^(k),
ã^(k) = a − t v^(k), until the neuron's pre-activation is zero (a *root point*). Each choice
of v gives one LRP rule :cite:`montavon2019overview`:

=========  ===============================================  ================
rule       search direction v_j (for the bias: v_0)         input domain
=========  ===============================================  ================
``w2``     w_jk                      (v_0 = b_k)            ℝ^d
``zplus``  a_j 1[w_jk > 0]           (v_0 = 1[b_k > 0])     a ≥ 0
``zbox``   (a_j − l_j) 1[w_jk > 0] + (a_j − h_j) 1[w_jk < 0]  (v_0 = 0)  l ≤ a ≤ h
``zero``   a_j                       (v_0 = 1)              a ≥ 0, root 0
``gamma``  a_j (1 + γ 1[w_jk > 0])   (v_0 = 1 + γ 1[b_k > 0])  a ≥ 0
``epsilon``  a_j (v_0 = 1), stopped where z_k(ã) = t·ε: not a root  a ≥ 0
=========  ===============================================  ================

The package convention (DESIGN.md) treats the bias as the weight of a constant input
a_0 = 1, so with ``bias="input"`` (the default) the search moves that input too, and the
bias keeps the share v_0 b_k / Σ v w of R_k. With ``bias="fixed"`` the constant input does
not move (v_0 = 0): the root point is a genuine point of the input space, and the whole of
R_k goes to the inputs.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from .taylor import root_point as _line_search

__all__ = [
    "RULES",
    "Redistribution",
    "direction",
    "gamma_explorer",
    "neuron_root_point",
    "plot_neuron",
    "redistribute",
    "relevance_factors",
    "relevance_model_check",
]

RULES = ("w2", "zplus", "zbox", "zero", "gamma", "epsilon")


class Redistribution(NamedTuple):
    """Result of :func:`redistribute`.

    Attributes
    ----------
    relevance : torch.Tensor
        R_j = Σ_k (a_j − ã_j^(k)) w_jk c_k, shape (B, d).
    absorbed : torch.Tensor
        The part of each R_k that no input receives: the bias term (a_0 − ã_0) b_k c_k plus
        the zero-order term R_k(ã), shape (B, K).
    reference : torch.Tensor
        The reference points ã^(k), shape (B, K, d) (input coordinates only).
    t : torch.Tensor
        Step lengths of the line searches, shape (B, K); ã = a − t v.
    """

    relevance: torch.Tensor
    absorbed: torch.Tensor
    reference: torch.Tensor
    t: torch.Tensor


def _weights(layer: nn.Module | tuple[torch.Tensor, torch.Tensor | None], like: torch.Tensor):
    if isinstance(layer, nn.Linear):
        w, b = layer.weight, layer.bias
    elif isinstance(layer, tuple) and len(layer) == 2:
        w, b = layer
    else:
        raise TypeError(
            "dtd works on one fully connected layer: pass an nn.Linear or a (weight, bias) "
            f"tuple with weight of shape (K, d); got {type(layer).__name__}"
        )
    w = w.detach().to(like.dtype)
    if w.dim() != 2:
        raise ValueError(f"weight must have shape (K, d), got {tuple(w.shape)}")
    b = torch.zeros(w.shape[0], dtype=like.dtype) if b is None else b.detach().to(like.dtype)
    if b.shape != (w.shape[0],):
        raise ValueError(f"bias must have shape ({w.shape[0]},), got {tuple(b.shape)}")
    return w, b


def _bounds(value: float | torch.Tensor | None, a: torch.Tensor, name: str) -> torch.Tensor:
    if value is None:
        raise ValueError(f"rule 'zbox' needs the input bound {name}")
    t = torch.as_tensor(value, dtype=a.dtype)
    try:
        return torch.broadcast_to(t, a.shape)
    except RuntimeError:
        raise ValueError(
            f"bound {name} of shape {tuple(t.shape)} does not broadcast to a {tuple(a.shape)}"
        ) from None


def direction(
    rule: str,
    w: torch.Tensor,
    b: torch.Tensor,
    a: torch.Tensor,
    *,
    gamma: float = 0.25,
    low: float | torch.Tensor | None = None,
    high: float | torch.Tensor | None = None,
    bias: str = "input",
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The DTD search direction v^(k) of every neuron k, and its bias component v_0.

    See the table in the module docstring, and :cite:`montavon2017dtd`,
    :cite:`montavon2019overview` for the derivations.

    Parameters
    ----------
    rule : str
        One of ``"w2", "zplus", "zbox", "zero", "gamma", "epsilon"``.
    w, b : torch.Tensor
        Weights (K, d) and bias (K,).
    a : torch.Tensor
        Activations (B, d).
    gamma : float
        The γ of ``"gamma"``.
    low, high : float or torch.Tensor
        Box bounds of ``"zbox"``.
    bias : {"input", "fixed"}
        Whether the constant input a_0 = 1 moves along the search (package convention) or
        stays fixed.

    Returns
    -------
    v, v0 : torch.Tensor
        Shapes (B, K, d) and (B, K).
    """
    if rule not in RULES:
        raise ValueError(f"unknown DTD rule {rule!r}; choose one of {', '.join(RULES)}")
    if bias not in ("input", "fixed"):
        raise ValueError(f"bias must be 'input' or 'fixed', got {bias!r}")
    B, K = a.shape[0], w.shape[0]
    A = a[:, None, :]  # (B, 1, d)
    pos = (w > 0).to(a.dtype)[None]  # (1, K, d)
    bpos = (b > 0).to(a.dtype)[None].expand(B, K)
    ones = torch.ones(B, K, dtype=a.dtype)
    if rule == "w2":
        v, v0 = w[None].expand(B, K, -1), b[None].expand(B, K)
    elif rule == "zplus":
        v, v0 = A * pos, bpos
    elif rule == "zbox":
        lo, hi = _bounds(low, a, "low"), _bounds(high, a, "high")
        if bool((a < lo).any() or (a > hi).any()):
            raise ValueError("rule 'zbox': the activations must lie inside the box [low, high]")
        neg = (w < 0).to(a.dtype)[None]
        v = (A - lo[:, None, :]) * pos + (A - hi[:, None, :]) * neg
        v0 = torch.zeros(B, K, dtype=a.dtype)
    elif rule in ("zero", "epsilon"):
        v, v0 = A.expand(B, K, -1), ones
    else:  # gamma
        if not gamma >= 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        v, v0 = A * (1 + gamma * pos), 1 + gamma * bpos
    if bias == "fixed":
        v0 = torch.zeros_like(v0)
    return v.contiguous(), v0.contiguous()


def neuron_root_point(
    w: torch.Tensor,
    b: float | torch.Tensor,
    a: torch.Tensor,
    v: torch.Tensor,
    *,
    v0: float | torch.Tensor = 0.0,
    epsilon: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Root point of one neuron z(a) = wᵀa + b along −v, found by line search.

    Searches ã = a − t v (and ã_0 = 1 − t v_0 for the constant input) for the first t ≥ 0
    with z(ã) = t·ε, using :func:`lrp_teach.taylor.root_point` (bracketing and bisection;
    it never uses the closed form t = z/(vᵀw + v_0 b)). With ε = 0 this is the root point
    of DTD :cite:`montavon2017dtd`; with ε > 0 it is the reference point of LRP-ε, which is
    not a root :cite:`montavon2019overview`.

    Parameters
    ----------
    w : torch.Tensor
        Weights (d,), or (N, d) for N independent neurons.
    b : float or torch.Tensor
        Bias (scalar or (N,)).
    a : torch.Tensor
        Activations (d,) or (N, d).
    v : torch.Tensor
        Search direction, shaped like ``a`` (batched like ``w``).
    v0 : float or torch.Tensor
        Component of the direction along the constant input a_0 = 1.
    epsilon : float
        Stop where z(ã) = t·ε instead of z(ã) = 0.

    Returns
    -------
    reference, t : torch.Tensor
        ã (shaped like ``v``) and t.
    """
    batched = v.dim() == 2
    W = w if w.dim() == 2 else w.expand_as(v)
    A = a if a.dim() == v.dim() else a.expand_as(v)
    dtype = v.dtype
    n = v.shape[0] if batched else 1
    bb = torch.as_tensor(b, dtype=dtype).reshape(-1).expand(n)
    vv0 = torch.as_tensor(v0, dtype=dtype).reshape(-1).expand(n)
    V = v.reshape(n, -1)
    Wf, Af = W.reshape(n, -1), A.reshape(n, -1)
    # Extended coordinates: [a, a_0] with a_0 = 1, moving along -[v, v0].
    x = torch.cat([Af, torch.ones(n, 1, dtype=dtype)], 1)
    d = -torch.cat([V, vv0[:, None]], 1)

    dd = (d * d).sum(1)

    def g(p: torch.Tensor) -> torch.Tensor:
        z = (p[:, :-1] * Wf).sum(1) + p[:, -1] * bb
        if not epsilon:
            return z
        return z - epsilon * ((p - x) * d).sum(1) / dd  # z(ã) − ε·t

    res = _line_search(g, x, d, batched=True)
    ref = res.point[:, :-1].reshape(v.shape)
    t = res.t if batched else res.t[0]
    return ref, t


def redistribute(
    layer: nn.Module | tuple[torch.Tensor, torch.Tensor | None],
    a: torch.Tensor,
    R: torch.Tensor,
    rule: str,
    *,
    gamma: float = 0.25,
    epsilon: float = 0.0,
    low: float | torch.Tensor | None = None,
    high: float | torch.Tensor | None = None,
    bias: str = "input",
) -> Redistribution:
    r"""Redistribute a layer's relevance by Deep Taylor Decomposition, one neuron at a time.

    For each sample and each output neuron k with R_k ≠ 0, the relevance model
    R_k(a) = max(0, z_k(a)) c_k gives c_k = R_k / z_k. The reference point ã^(k) is found
    numerically by :func:`neuron_root_point` along the rule's direction
    (:func:`direction`), and the first-order Taylor terms

    .. math:: R_{j \leftarrow k} = (a_j - \tilde a_j^{(k)})\, w_{jk}\, c_k ,
              \qquad R_j = \sum_k R_{j \leftarrow k}

    are summed over k :cite:`montavon2017dtd`. Because the neuron is linear between a and
    its root point, the expansion has no remainder.

    Parameters
    ----------
    layer : nn.Linear or (weight, bias)
        The layer; weight (K, d), bias (K,) or None.
    a : torch.Tensor
        Input activations, shape (B, d).
    R : torch.Tensor
        Relevance of the outputs, shape (B, K). Neurons with z_k ≤ 0 must have R_k = 0
        (the relevance model is zero there).
    rule : str
        One of :data:`RULES`.
    gamma, epsilon, low, high : float
        Parameters of the ``"gamma"``, ``"epsilon"`` and ``"zbox"`` rules.
    bias : {"input", "fixed"}
        See the module docstring.

    Returns
    -------
    Redistribution
        Input relevance (B, d), absorbed share (B, K), reference points and step lengths.
    """
    if not isinstance(a, torch.Tensor) or not isinstance(R, torch.Tensor):
        raise TypeError("a and R must be torch tensors")
    if a.dim() != 2:
        raise ValueError(f"a must have shape (B, d), got {tuple(a.shape)}")
    w, b = _weights(layer, a)
    K, d = w.shape
    if a.shape[1] != d:
        raise ValueError(f"a has {a.shape[1]} features but the layer expects {d}")
    if R.shape != (a.shape[0], K):
        raise ValueError(f"R must have shape ({a.shape[0]}, {K}), got {tuple(R.shape)}")
    if rule == "epsilon" and not epsilon > 0:
        raise ValueError("rule 'epsilon' needs epsilon > 0 (epsilon = 0 is rule 'zero')")
    if rule in ("zplus", "zero", "gamma", "epsilon") and bool((a < 0).any()):
        raise ValueError(f"rule {rule!r} is derived for non-negative activations (a >= 0)")
    R = R.detach().to(a.dtype)
    a = a.detach()
    z = a @ w.T + b
    if bool(((z <= 0) & (R != 0)).any()):
        raise ValueError(
            "R_k must be 0 where z_k <= 0: the DTD relevance model is R_k = max(0, z_k) c_k"
        )
    v, v0 = direction(rule, w, b, a, gamma=gamma, low=low, high=high, bias=bias)
    B = a.shape[0]
    ref = a[:, None, :].expand(B, K, d).clone()
    t = torch.zeros(B, K, dtype=a.dtype)
    active = R != 0
    if bool(active.any()):
        idx = active.nonzero(as_tuple=True)
        wk = w[idx[1]]
        slope = (v[idx] * wk).sum(1) + v0[idx] * b[idx[1]]
        if bool((slope <= 0).any()):
            raise ValueError(
                f"rule {rule!r}: for some neuron the direction does not decrease z_k "
                "(v·w <= 0), so there is no root point along it"
            )
        r, tt = neuron_root_point(
            wk, b[idx[1]], a[idx[0]], v[idx], v0=v0[idx],
            epsilon=epsilon if rule == "epsilon" else 0.0,
        )
        ref[idx], t[idx] = r, tt
    c = torch.where(active, R / torch.where(active, z, torch.ones_like(z)), torch.zeros_like(z))
    relevance = ((a[:, None, :] - ref) * w[None] * c[:, :, None]).sum(1)
    absorbed = R - ((a[:, None, :] - ref) * w[None]).sum(2) * c
    return Redistribution(relevance, absorbed, ref, t)


def relevance_factors(
    first: nn.Linear,
    upper: nn.Module,
    a: torch.Tensor,
    *,
    target: int,
    composite=None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""Relevance R_k of the neurons of ``first`` and the factors c_k = R_k / z_k.

    The layers ``first``, a ReLU and ``upper`` are run forward from ``a``, and the
    ``target`` logit is explained down to the ReLU outputs h_k = max(0, z_k) with
    :func:`lrp_teach.core.explain`. DTD's relevance model :cite:`montavon2017dtd` says
    R_k(a) = max(0, z_k(a)) c_k with c_k locally constant; this function returns the c_k
    to check that.

    Parameters
    ----------
    first : nn.Linear
        The layer whose output neurons k are studied.
    upper : nn.Module
        The network above ``first`` and its ReLU.
    a : torch.Tensor
        Input activations of ``first``, shape (B, d).
    target : int
        The explained logit.
    composite : lrp_teach.composites.Composite, optional
        Rules of the ``upper`` layers (passed to ``explain``).

    Returns
    -------
    R, c, z : torch.Tensor
        Relevances, factors (0 where z_k <= 0) and pre-activations, each (B, K).
    """
    from .core import explain

    if not isinstance(first, nn.Linear):
        raise TypeError(f"first must be an nn.Linear, got {type(first).__name__}")
    with torch.no_grad():
        z = first(a)
    h = torch.relu(z)
    R = explain(upper, h, target=target, composite=composite)
    on = z > 0
    c = torch.where(on, R / torch.where(on, z, torch.ones_like(z)), torch.zeros_like(z))
    return R, c, z


def relevance_model_check(
    first: nn.Linear,
    upper: nn.Module,
    a: torch.Tensor,
    *,
    target: int,
    composite=None,
    sigma: float = 0.01,
    trials: int = 10,
    low: float | None = None,
    high: float | None = None,
    seed: int = 0,
) -> dict[str, float]:
    r"""Measure how constant DTD's c_k are under small perturbations of the activations.

    For ``trials`` perturbations a' = a + σ·n (n standard normal, clipped to [low, high]
    when given) it compares the factors c_k(a') with c_k(a) (:func:`relevance_factors`)
    on the neurons that are active at both points and carry relevance. If the relevance
    model R_k = max(0, z_k) c_k held with constant c_k, every relative change of R_k would
    come from z_k :cite:`montavon2017dtd`.

    Parameters
    ----------
    first, upper, a, target, composite
        As in :func:`relevance_factors`.
    sigma : float
        Standard deviation of the perturbation.
    trials : int
        Number of perturbations.
    low, high : float, optional
        Clip the perturbed activations to this range (e.g. the pixel range).
    seed : int
        Seed of the perturbations.

    Returns
    -------
    dict
        ``"c_median"``, ``"c_p90"``: median and 90th percentile of |Δc_k| / |c_k|;
        ``"z_median"``: median |Δz_k| / |z_k|; ``"R_median"``: median |ΔR_k| / |R_k|;
        ``"exact_share"``: share of neurons whose c_k changed by less than 1e-9 relatively;
        ``"neurons"``: number of (sample, neuron, trial) triples measured.
    """
    if sigma <= 0 or trials < 1:
        raise ValueError(f"sigma must be > 0 and trials >= 1, got sigma={sigma}, trials={trials}")
    R, c, z = relevance_factors(first, upper, a, target=target, composite=composite)
    g = torch.Generator().manual_seed(seed)
    dc, dz, dR = [], [], []
    for _ in range(trials):
        a2 = a + sigma * torch.randn(a.shape, generator=g, dtype=a.dtype)
        if low is not None or high is not None:
            a2 = a2.clamp(min=low, max=high)
        R2, c2, z2 = relevance_factors(first, upper, a2, target=target, composite=composite)
        keep = (z > 0) & (z2 > 0) & (R.abs() > 1e-12)
        dc.append(((c2 - c).abs() / c.abs())[keep])
        dz.append(((z2 - z).abs() / z.abs())[keep])
        dR.append(((R2 - R).abs() / R.abs())[keep])
    rc, rz, rR = torch.cat(dc), torch.cat(dz), torch.cat(dR)
    if rc.numel() == 0:
        raise ValueError("no neuron is active with nonzero relevance; nothing to measure")
    return {
        "c_median": rc.median().item(),
        "c_p90": rc.quantile(0.9).item(),
        "z_median": rz.median().item(),
        "R_median": rR.median().item(),
        "exact_share": (rc < 1e-9).double().mean().item(),
        "neurons": float(rc.numel()),
    }


#: Colours and labels of the rules in :func:`plot_neuron`.
_STYLE = {
    "w2": ("tab:blue", "$w^2$: v = w"),
    "zplus": ("tab:red", "$z^+$: v = a·1[w>0]"),
    "zbox": ("tab:green", "$z^B$: box [l, h]"),
    "zero": ("tab:gray", "LRP-0: v = a"),
    "gamma": ("tab:purple", "LRP-γ"),
    "epsilon": ("tab:brown", "LRP-ε (not a root)"),
}


def plot_neuron(
    w: torch.Tensor,
    b: float,
    a: torch.Tensor,
    *,
    rules: tuple[str, ...] = ("w2", "zplus", "zbox", "zero", "gamma"),
    gamma: float = 0.25,
    epsilon: float = 0.5,
    low: float = 0.0,
    high: float = 1.0,
    gamma_path: bool = False,
    ax=None,
):
    """Draw a 2-D ReLU neuron, its hyperplane z = 0, a data point and each rule's root point.

    The root points are found by :func:`neuron_root_point` along each rule's direction
    (:func:`direction`, ``bias="fixed"``, so they are points of the input plane)
    :cite:`montavon2017dtd`.

    Parameters
    ----------
    w : torch.Tensor
        The neuron's two weights.
    b : float
        Its bias.
    a : torch.Tensor
        The data point (2,), with z(a) > 0.
    rules : tuple of str
        Which rules to draw.
    gamma, epsilon, low, high : float
        Parameters of ``"gamma"``, ``"epsilon"`` and ``"zbox"`` (the box is drawn too).
    gamma_path : bool
        Also draw the curve of LRP-γ reference points for γ from 0 to 1000.
    ax : matplotlib Axes, optional
        Where to draw.

    Returns
    -------
    dict
        ``{rule: root point}`` of the drawn rules.
    """
    import matplotlib.pyplot as plt

    w = torch.as_tensor(w, dtype=torch.float64)
    a = torch.as_tensor(a, dtype=torch.float64)
    if w.shape != (2,) or a.shape != (2,):
        raise ValueError("plot_neuron draws a neuron with two inputs: w and a of shape (2,)")
    if not float(a @ w + b) > 0:
        raise ValueError("the data point must activate the neuron: w·a + b > 0")
    if ax is None:
        _, ax = plt.subplots(figsize=(5.6, 5.0))
    lim = (min(low, 0.0) - 0.25, max(high, 1.0) + 0.25)
    grid = torch.linspace(lim[0], lim[1], 200, dtype=torch.float64)
    g1, g2 = torch.meshgrid(grid, grid, indexing="xy")
    z = w[0] * g1 + w[1] * g2 + b
    ax.contourf(g1, g2, z.clamp(min=0), levels=12, cmap="Reds", alpha=0.55)
    ax.contour(g1, g2, z, levels=[0.0], colors="k", linewidths=2)
    ax.plot([low, high, high, low, low], [low, low, high, high, low], ":", color="k", lw=1,
            label=f"input box [{low:g}, {high:g}]²")
    W, B = w[None], torch.tensor([b], dtype=torch.float64)
    roots = {}
    for rule in rules:
        v, _ = direction(rule, W, B, a[None], gamma=gamma, low=low, high=high, bias="fixed")
        eps = epsilon if rule == "epsilon" else 0.0
        root, _ = neuron_root_point(w, b, a, v[0, 0], epsilon=eps)
        roots[rule] = root
        colour, label = _STYLE[rule]
        if rule == "gamma":
            label = f"LRP-γ (γ = {gamma:g})"
        ax.annotate("", xy=tuple(root.tolist()), xytext=tuple(a.tolist()),
                    arrowprops={"arrowstyle": "->", "color": colour, "lw": 1.6})
        ax.plot(*root.tolist(), "o", color=colour, ms=7, label=label)
    if gamma_path:
        pts = []
        for gam in torch.logspace(-2, 3, 60).tolist():
            v, _ = direction("gamma", W, B, a[None], gamma=gam, bias="fixed")
            pts.append(neuron_root_point(w, b, a, v[0, 0])[0])
        pts = torch.stack(pts)
        ax.plot(pts[:, 0], pts[:, 1], "-", color="tab:purple", lw=3, alpha=0.35,
                label="LRP-γ roots, γ from 0.01 to 1000")
    ax.plot(*a.tolist(), "k*", ms=15, label="data point a")
    ax.set(xlim=lim, ylim=lim, aspect="equal", xlabel="$a_1$", ylabel="$a_2$",
           title=f"neuron max(0, {w[0]:.2g}·a₁ {w[1]:+.2g}·a₂ {b:+.2g})\nblack line: z = 0")
    ax.legend(loc="upper left", fontsize=7.5, framealpha=0.9)
    return roots


def gamma_explorer(w: torch.Tensor, b: float, a: torch.Tensor, gamma: float = 0.25):
    """Interactive :func:`plot_neuron` for LRP-γ: drag γ and watch the root point move.

    The figure is displayed with an IPython display id and updated in place; the slider is
    an ipywidgets ``FloatLogSlider``. A rendered page (no kernel) keeps the figure drawn for
    the initial γ, so the explorer degrades to a static figure. Without ipywidgets only the
    static figure is shown.

    Parameters
    ----------
    w, b, a
        As in :func:`plot_neuron`.
    gamma : float
        Initial γ.

    Returns
    -------
    The slider widget, or ``None`` without ipywidgets.
    """
    import matplotlib.pyplot as plt
    from IPython.display import display

    def draw(gam: float):
        fig, ax = plt.subplots(figsize=(5.6, 5.0))
        plot_neuron(w, b, a, rules=("zplus", "zero", "gamma"), gamma=gam, gamma_path=True,
                    ax=ax)
        plt.close(fig)
        return fig

    handle = display(draw(gamma), display_id=True)
    try:
        import ipywidgets
    except ImportError:
        return None
    slider = ipywidgets.FloatLogSlider(value=gamma, base=10, min=-2, max=3, step=0.05,
                                       description="γ", continuous_update=False)
    slider.observe(lambda change: handle.update(draw(change["new"])), names="value")
    display(slider)
    return slider
