"""Explaining with Taylor expansions: root points, first-order terms, gradients and paths.

Chapter 2 of the book. A prediction f(x) is explained by a first-order Taylor expansion
at a reference point x̃,

    f(x) = f(x̃) + Σ_i ∂f/∂x_i(x̃) · (x_i − x̃_i) + remainder,

and when x̃ is a *root point* (f(x̃) = 0) the first-order terms R_i form an explanation
that sums to f(x) up to the remainder :cite:`bach2015,montavon2018methods`. This module
finds root points by line search, computes the terms and the remainder, and implements
the two gradient methods the chapter contrasts with it: Gradient x Input and Integrated
Gradients (a Taylor expansion integrated along a path, :cite:`sundararajan2017`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import nn

__all__ = [
    "Decomposition",
    "RootPoint",
    "decompose",
    "gradient",
    "gradient_noise",
    "gradient_x_input",
    "integrated_gradients",
    "linear_relevance",
    "make_mlp",
    "root_point",
]

Function = Callable[[torch.Tensor], torch.Tensor]


class RootPoint(NamedTuple):
    """Result of :func:`root_point`.

    Attributes
    ----------
    point : torch.Tensor
        The root point x̃ = x + t·d, same shape as ``x``.
    t : torch.Tensor
        The step length along the direction: a 0-d tensor, or shape (B,) in batched mode.
    value : torch.Tensor
        f(x̃), which is zero up to the tolerance.
    iterations : int
        Number of bisection steps taken.
    """

    point: torch.Tensor
    t: torch.Tensor
    value: torch.Tensor
    iterations: int


class Decomposition(NamedTuple):
    """Result of :func:`decompose`: f(x) = zero_order + terms.sum() + remainder.

    Attributes
    ----------
    terms : torch.Tensor
        First-order terms ∂f/∂x_i(x̃)·(x_i − x̃_i), same shape as ``x``.
    zero_order : torch.Tensor
        f(x̃); zero when x̃ is a root point.
    remainder : torch.Tensor
        Everything the first-order expansion misses: f(x) − f(x̃) − Σ_i terms_i.
    value : torch.Tensor
        f(x), the quantity being explained.
    """

    terms: torch.Tensor
    zero_order: torch.Tensor
    remainder: torch.Tensor
    value: torch.Tensor


def _check_tensor(name: str, value: object) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if not value.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {value.dtype}")
    if not torch.isfinite(value).all():
        raise ValueError(f"{name} contains NaN or inf")
    return value


def _evaluate(f: Function, x: torch.Tensor, batched: bool) -> torch.Tensor:
    with torch.no_grad():
        out = f(x)
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"f must return a torch.Tensor, got {type(out).__name__}")
    expected = (x.shape[0],) if batched else ()
    if tuple(out.shape) != expected:
        mode = f"a tensor of shape ({x.shape[0]},), one value per row" if batched else "a scalar"
        raise ValueError(f"f must return {mode}; got shape {tuple(out.shape)}")
    return out


def root_point(
    f: Function,
    x: torch.Tensor,
    direction: torch.Tensor,
    *,
    batched: bool = False,
    t_max: float = 1e6,
    tol: float = 1e-13,
    max_iter: int = 200,
) -> RootPoint:
    r"""Find the first root of f along the ray x + t·d, t ≥ 0, by bracketing and bisection.

    The search evaluates f on the ray

    .. math:: \tilde x(t) = x + t\,d, \qquad t \ge 0,

    doubles t until the sign of f changes (bracketing), then bisects the bracket until it
    is shorter than ``tol·(1 + t)`` and finishes with one secant step, which is exact
    when f is linear on the bracket (as for a ReLU network inside one linear region).
    This is how Deep Taylor Decomposition finds root points :cite:`montavon2017dtd`.

    Parameters
    ----------
    f : callable
        Maps a tensor shaped like ``x`` to a scalar (or, with ``batched=True``, to one
        value per row of ``x``).
    x : torch.Tensor
        The starting point (the data point to explain).
    direction : torch.Tensor
        The search direction d, same shape as ``x``. To search *against* a vector v, as
        DTD does, pass ``-v``.
    batched : bool
        Treat the first dimension of ``x`` as a batch and search every row independently.
    t_max : float
        Give up (``ValueError``) if f keeps its sign up to t = t_max.
    tol : float
        Relative length of the final bracket.
    max_iter : int
        Largest number of bisection steps.

    Returns
    -------
    RootPoint
        The root point, the step t, f at the root point and the number of bisection steps.

    Raises
    ------
    ValueError
        If shapes differ, d is zero, or f has no sign change on [0, t_max].
    """
    x = _check_tensor("x", x)
    direction = _check_tensor("direction", direction)
    if direction.shape != x.shape:
        raise ValueError(
            f"direction must have the shape of x {tuple(x.shape)}, got {tuple(direction.shape)}"
        )
    if batched and x.dim() < 2:
        raise ValueError("batched=True needs x of shape (B, ...) with at least 2 dimensions")
    if t_max <= 0 or tol <= 0 or max_iter < 1:
        raise ValueError("t_max and tol must be positive and max_iter at least 1")
    x = x.detach()
    d = direction.detach().to(x.dtype)
    shape = (x.shape[0],) + (1,) * (x.dim() - 1) if batched else ()

    def at(t: torch.Tensor) -> torch.Tensor:
        return x + t.reshape(shape) * d if batched else x + t * d

    f0 = _evaluate(f, x, batched)
    n = x.shape[0] if batched else None
    zeros = torch.zeros(n, dtype=x.dtype) if batched else torch.zeros((), dtype=x.dtype)
    d_norm = d.flatten(1).abs().amax(1) if batched else d.abs().max()
    done = f0 == 0
    if bool(((d_norm == 0) & ~done).any()):
        raise ValueError("direction is zero where f(x) != 0: no root can be reached along it")

    # Bracketing: grow t_hi until the sign flips for every row.
    lo, hi = zeros.clone(), torch.ones_like(zeros)
    f_lo = f0.clone()
    f_hi = _evaluate(f, at(hi), batched)
    while True:
        same = (torch.sign(f_hi) == torch.sign(f0)) & ~done & (f_hi != 0)
        if not bool(same.any()):
            break
        if bool((hi[same] >= t_max).any()):
            raise ValueError(
                f"f keeps the sign of f(x) = {f0.flatten()[0].item():.4g} along the whole ray "
                f"up to t = {t_max:g}: no root point in this direction. Try another direction "
                "or a larger t_max."
            )
        lo = torch.where(same, hi, lo)
        f_lo = torch.where(same, f_hi, f_lo)
        hi = torch.where(same, hi * 2, hi)
        f_hi = _evaluate(f, at(hi), batched)

    # Bisection on [lo, hi], where f(lo) has the sign of f(x) and f(hi) does not.
    iterations = 0
    for iterations in range(1, max_iter + 1):  # noqa: B007
        if bool(((hi - lo) <= tol * (1 + hi)).all()):
            break
        mid = (lo + hi) / 2
        f_mid = _evaluate(f, at(mid), batched)
        keep_lo = torch.sign(f_mid) == torch.sign(f0)
        lo = torch.where(keep_lo, mid, lo)
        f_lo = torch.where(keep_lo, f_mid, f_lo)
        hi = torch.where(keep_lo, hi, mid)
        f_hi = torch.where(keep_lo, f_hi, f_mid)

    # One secant step inside the final bracket (exact for a linear f).
    denom = f_hi - f_lo
    secant = lo - f_lo * (hi - lo) / torch.where(denom == 0, torch.ones_like(denom), denom)
    t = torch.where(denom == 0, hi, secant.clamp(min=0))
    t = torch.minimum(torch.maximum(t, lo), hi)
    t = torch.where(done, zeros, t)
    point = at(t)
    return RootPoint(point, t, _evaluate(f, point, batched), iterations)


def gradient(f: Function, x: torch.Tensor) -> torch.Tensor:
    """∂f/∂x at x, for a scalar-valued f (or a sum over a batch of independent rows).

    Parameters
    ----------
    f : callable
        Differentiable function returning a scalar or one value per row.
    x : torch.Tensor
        The point.

    Returns
    -------
    torch.Tensor
        The gradient of ``f(x).sum()``, shaped like ``x``.
    """
    x = _check_tensor("x", x).detach().requires_grad_(True)
    with torch.enable_grad():
        out = f(x)
        (g,) = torch.autograd.grad(out.sum(), x)
    return g


def decompose(
    f: Function, x: torch.Tensor, x_ref: torch.Tensor, *, nudge: float = 0.0
) -> Decomposition:
    r"""First-order Taylor decomposition of f(x) at the reference point x̃.

    .. math::

        f(x) = f(\tilde x) + \sum_i \underbrace{\frac{\partial f}{\partial x_i}
        \Big|_{\tilde x} (x_i - \tilde x_i)}_{R_i} + \varepsilon

    When x̃ is a root point, f(x̃) = 0 and the terms R_i explain f(x) up to the
    remainder ε :cite:`bach2015,montavon2017dtd`.

    A root point of a ReLU network usually sits on a kink, where PyTorch's derivative of
    ReLU is 0. DTD means the derivative on the side of x; ``nudge > 0`` evaluates the
    gradient at x̃ + nudge·(x − x̃) to get it (any small value inside the same linear
    region gives the same, exact, gradient).

    Parameters
    ----------
    f : callable
        Differentiable function returning a scalar.
    x : torch.Tensor
        The point to explain.
    x_ref : torch.Tensor
        The reference point x̃, same shape as ``x``.
    nudge : float
        Evaluate the gradient at x̃ + nudge·(x − x̃) (0 ≤ nudge < 1).

    Returns
    -------
    Decomposition
        Terms R_i, zero-order term f(x̃), remainder ε and f(x).
    """
    x = _check_tensor("x", x).detach()
    x_ref = _check_tensor("x_ref", x_ref).detach()
    if x.shape != x_ref.shape:
        raise ValueError(
            f"x_ref must have the shape of x {tuple(x.shape)}, got {tuple(x_ref.shape)}"
        )
    if not 0.0 <= nudge < 1.0:
        raise ValueError(f"nudge must be in [0, 1), got {nudge}")
    fx = _evaluate(f, x, batched=False)
    f_ref = _evaluate(f, x_ref, batched=False)
    terms = gradient(f, x_ref + nudge * (x - x_ref)) * (x - x_ref)
    return Decomposition(terms, f_ref, fx - f_ref - terms.sum(), fx)


def linear_relevance(
    w: torch.Tensor, b: float | torch.Tensor, x: torch.Tensor, *, bias: str = "separate"
) -> torch.Tensor:
    r"""Exact decomposition of a linear model f(x) = wᵀx + b.

    .. math:: R_i = w_i x_i \quad (\text{bias separate}), \qquad
              R_i = w_i x_i + b / d \quad (\text{bias spread})

    With ``bias="separate"`` the bias is not given to any input: Σ_i R_i = f(x) − b, and
    b is the model's answer for x = 0. With ``bias="spread"`` it is split evenly over the
    d inputs, and Σ_i R_i = f(x) (:cite:`bach2015`, :cite:`montavon2018methods`).

    Parameters
    ----------
    w : torch.Tensor
        Weights, shape (d,).
    b : float or torch.Tensor
        Scalar bias.
    x : torch.Tensor
        Inputs, shape (d,) or (B, d).
    bias : {"separate", "spread"}
        Where the bias goes.

    Returns
    -------
    torch.Tensor
        Relevances, shaped like ``x``.
    """
    w = _check_tensor("w", w)
    x = _check_tensor("x", x)
    if w.dim() != 1 or x.shape[-1] != w.shape[0]:
        raise ValueError(f"w must have shape (d,) matching x's last dimension; got {tuple(w.shape)}"
                         f" and x {tuple(x.shape)}")
    b = torch.as_tensor(b, dtype=x.dtype)
    if b.numel() != 1:
        raise ValueError(f"b must be a scalar, got shape {tuple(b.shape)}")
    R = w * x
    if bias == "separate":
        return R
    if bias == "spread":
        return R + b.reshape(()) / w.shape[0]
    raise ValueError(f"bias must be 'separate' or 'spread', got {bias!r}")


def gradient_x_input(f: Function, x: torch.Tensor) -> torch.Tensor:
    r"""Gradient x Input: R_i = x_i · ∂f/∂x_i(x).

    For a ReLU network without biases, f is positively homogeneous of degree 1, so
    Euler's identity gives Σ_i R_i = f(x): Gradient x Input is then the Taylor
    expansion at the root point x̃ = 0 :cite:`montavon2018methods,ancona2018`.

    Parameters
    ----------
    f : callable
        Differentiable function returning a scalar (or one value per row).
    x : torch.Tensor
        The input.

    Returns
    -------
    torch.Tensor
        Relevances, shaped like ``x``.
    """
    x = _check_tensor("x", x)
    return gradient(f, x) * x.detach()


def integrated_gradients(
    f: Function, x: torch.Tensor, x_ref: torch.Tensor, *, steps: int = 64
) -> torch.Tensor:
    r"""Integrated Gradients: first-order Taylor terms integrated along the straight path.

    .. math:: R_i = (x_i - \tilde x_i) \int_0^1
              \frac{\partial f}{\partial x_i}\big(\tilde x + \alpha (x - \tilde x)\big)\,d\alpha

    The integral is approximated by the midpoint rule with ``steps`` points. By the
    fundamental theorem of calculus, Σ_i R_i → f(x) − f(x̃) (completeness)
    :cite:`sundararajan2017`.

    Parameters
    ----------
    f : callable
        Differentiable function returning a scalar per input row; it is called on a batch
        of ``steps`` points shaped ``(steps, *x.shape)``, so it must accept a leading
        batch dimension and return shape ``(steps,)``.
    x : torch.Tensor
        The input (no batch dimension).
    x_ref : torch.Tensor
        The baseline x̃, same shape as ``x``.
    steps : int
        Number of midpoint-rule nodes.

    Returns
    -------
    torch.Tensor
        Relevances, shaped like ``x``.
    """
    x = _check_tensor("x", x).detach()
    x_ref = _check_tensor("x_ref", x_ref).detach()
    if x.shape != x_ref.shape:
        raise ValueError(
            f"x_ref must have the shape of x {tuple(x.shape)}, got {tuple(x_ref.shape)}"
        )
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    alphas = (torch.arange(steps, dtype=x.dtype) + 0.5) / steps
    path = x_ref + alphas.reshape((steps,) + (1,) * x.dim()) * (x - x_ref)
    path.requires_grad_(True)
    with torch.enable_grad():
        out = f(path)
        if tuple(out.shape) != (steps,):
            raise ValueError(
                f"f must map a batch of shape {tuple(path.shape)} to shape ({steps},); "
                f"got {tuple(out.shape)}"
            )
        (g,) = torch.autograd.grad(out.sum(), path)
    return g.mean(0) * (x - x_ref)


def make_mlp(
    n_in: int, n_out: int, depth: int, width: int = 64, bias: bool = True
) -> nn.Sequential:
    """A plain ReLU multilayer perceptron with ``depth`` hidden layers (no skip connections).

    Parameters
    ----------
    n_in, n_out : int
        Input and output sizes.
    depth : int
        Number of hidden ReLU layers (at least 1).
    width : int
        Width of every hidden layer.
    bias : bool
        Whether the linear layers have biases.

    Returns
    -------
    torch.nn.Sequential
        Linear, ReLU, ..., Linear.
    """
    if depth < 1 or width < 1:
        raise ValueError(f"depth and width must be at least 1, got depth={depth}, width={width}")
    layers: list[nn.Module] = []
    size = n_in
    for _ in range(depth):
        layers += [nn.Linear(size, width, bias=bias), nn.ReLU()]
        size = width
    layers.append(nn.Linear(size, n_out, bias=bias))
    return nn.Sequential(*layers)


def gradient_noise(
    f: Function, x0: torch.Tensor, x1: torch.Tensor, *, points: int = 256
) -> dict[str, float]:
    r"""How rough the gradient is along the segment from x0 to x1.

    Samples the gradient g(s) = ∇f(x0 + s(x1 − x0)) at ``points`` evenly spaced s and
    reports:

    * ``"correlation"``: mean cosine similarity between neighbouring gradients
      g(s_m) and g(s_{m+1}). It is close to 1 for smooth functions and drops as the
      gradient "shatters" :cite:`balduzzi2017`;
    * ``"changes"``: share of neighbouring pairs whose gradients differ (for a ReLU
      network: how often the segment crosses into a new linear region);
    * ``"roughness"``: mean ‖g(s_{m+1}) − g(s_m)‖ / mean ‖g(s_m)‖.

    Parameters
    ----------
    f : callable
        Differentiable function returning one value per row of a batch.
    x0, x1 : torch.Tensor
        End points of the segment, same shape, no batch dimension.
    points : int
        Number of samples (at least 3).

    Returns
    -------
    dict
        The three statistics as floats.
    """
    x0 = _check_tensor("x0", x0).detach()
    x1 = _check_tensor("x1", x1).detach()
    if x0.shape != x1.shape:
        raise ValueError(f"x0 and x1 must have the same shape, got {tuple(x0.shape)} and "
                         f"{tuple(x1.shape)}")
    if points < 3:
        raise ValueError(f"points must be at least 3, got {points}")
    s = torch.linspace(0, 1, points, dtype=x0.dtype).reshape((points,) + (1,) * x0.dim())
    g = gradient(f, x0 + s * (x1 - x0)).flatten(1)
    a, b = g[:-1], g[1:]
    cos = torch.nn.functional.cosine_similarity(a, b, dim=1, eps=1e-30)
    diff = (b - a).norm(dim=1)
    changed = diff > 1e-12 * g.norm(dim=1).max()
    return {
        "correlation": cos.mean().item(),
        "changes": changed.to(x0.dtype).mean().item(),
        "roughness": (diff.mean() / g.norm(dim=1).mean()).item(),
    }
