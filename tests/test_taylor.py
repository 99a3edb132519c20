"""Tests of lrp_teach.taylor against closed forms."""

from __future__ import annotations

import math

import pytest
import torch

from lrp_teach import taylor

torch.set_num_threads(1)
DT = torch.float64


def test_root_point_of_linear_function_matches_closed_form():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(5, generator=g, dtype=DT)
    b = 0.3
    x = torch.randn(5, generator=g, dtype=DT)
    f = lambda z: z @ w + b  # noqa: E731
    d = -w if f(x) > 0 else w
    res = taylor.root_point(f, x, d)
    t_exact = abs(f(x).item()) / (w @ w).item()
    assert res.t.item() == pytest.approx(t_exact, rel=1e-12)
    assert abs(res.value.item()) < 1e-12
    assert torch.allclose(res.point, x + t_exact * d, atol=1e-12)


def test_root_point_finds_first_root_of_nonlinear_function():
    # f(x) = cos(|x|) on the ray from 0.1*e1 along e1: first root at |x| = pi/2.
    f = lambda z: torch.cos(z.norm())  # noqa: E731
    x = torch.tensor([0.1, 0.0], dtype=DT)
    res = taylor.root_point(f, x, torch.tensor([1.0, 0.0], dtype=DT))
    assert res.point[0].item() == pytest.approx(math.pi / 2, abs=1e-10)
    assert res.iterations > 10


def test_root_point_batched_rows_are_independent():
    w = torch.tensor([1.0, 2.0], dtype=DT)
    f = lambda z: z @ w - 1.0  # noqa: E731
    x = torch.tensor([[2.0, 1.0], [0.0, 0.0], [0.5, 0.25]], dtype=DT)
    d = torch.tensor([[-1.0, 0.0], [0.0, 1.0], [0.0, 0.0]], dtype=DT)
    res = taylor.root_point(f, x, d, batched=True)
    assert torch.allclose(res.t, torch.tensor([3.0, 0.5, 0.0], dtype=DT), atol=1e-12)
    assert res.value.abs().max() < 1e-12


def test_root_point_errors():
    f = lambda z: z.sum() + 1.0  # noqa: E731
    x = torch.zeros(3, dtype=DT)
    with pytest.raises(ValueError, match="no root point"):
        taylor.root_point(f, x, torch.ones(3, dtype=DT), t_max=100)
    with pytest.raises(ValueError, match="direction is zero"):
        taylor.root_point(f, x, torch.zeros(3, dtype=DT))
    with pytest.raises(ValueError, match="shape"):
        taylor.root_point(f, x, torch.ones(2, dtype=DT))
    with pytest.raises(TypeError, match="floating-point"):
        taylor.root_point(f, torch.zeros(3, dtype=torch.long), torch.ones(3, dtype=DT))
    with pytest.raises(ValueError, match="scalar"):
        taylor.root_point(lambda z: z, x, -torch.ones(3, dtype=DT))


def test_decompose_quadratic_remainder_is_second_order_term():
    # f(x) = x1^2 + 3 x2: first-order at x_ref leaves remainder (x1 - r1)^2 exactly.
    f = lambda z: z[0] ** 2 + 3 * z[1]  # noqa: E731
    x = torch.tensor([2.0, 1.0], dtype=DT)
    r = torch.tensor([0.5, -1.0], dtype=DT)
    dec = taylor.decompose(f, x, r)
    assert torch.allclose(dec.terms, torch.tensor([2 * 0.5 * 1.5, 3 * 2.0], dtype=DT))
    assert dec.zero_order.item() == pytest.approx(0.25 - 3.0)
    assert dec.remainder.item() == pytest.approx(1.5**2, abs=1e-12)
    total = dec.zero_order + dec.terms.sum() + dec.remainder
    assert total.item() == pytest.approx(dec.value.item(), abs=1e-12)


def test_decompose_at_root_of_relu_neuron_is_exact():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(6, generator=g, dtype=DT)
    x = torch.rand(6, generator=g, dtype=DT)
    b = 1.0 - (x @ w).item()  # makes f(x) = 1 > 0
    z = lambda v: v @ w + b  # noqa: E731
    root = taylor.root_point(z, x, -w).point
    dec = taylor.decompose(lambda v: torch.relu(z(v)), x, root, nudge=1e-6)
    assert abs(dec.remainder.item()) < 1e-12
    assert torch.allclose(dec.terms, w**2 / (w @ w), atol=1e-12)


def test_decompose_at_kink_needs_nudge():
    # relu(x1 + x2 - 1) at x = (1, 1); the root along -(1, 1) is (0.5, 0.5), exactly on the kink,
    # where torch's relu'(0) = 0: the plain gradient there explains nothing.
    f = lambda v: torch.relu(v.sum() - 1.0)  # noqa: E731
    x = torch.ones(2, dtype=DT)
    root = taylor.root_point(lambda v: v.sum() - 1.0, x, -x).point
    assert torch.equal(root, torch.full((2,), 0.5, dtype=DT))
    flat = taylor.decompose(f, x, root)
    assert flat.terms.abs().max() == 0 and flat.remainder.item() == 1.0
    dec = taylor.decompose(f, x, root, nudge=1e-3)
    assert torch.equal(dec.terms, torch.full((2,), 0.5, dtype=DT)) and dec.remainder == 0
    with pytest.raises(ValueError, match="nudge"):
        taylor.decompose(f, x, root, nudge=1.0)


def test_linear_relevance_bias_handling():
    w = torch.tensor([1.0, -2.0, 0.5], dtype=DT)
    x = torch.tensor([[1.0, 1.0, 2.0]], dtype=DT)
    R = taylor.linear_relevance(w, 0.6, x)
    assert torch.allclose(R, torch.tensor([[1.0, -2.0, 1.0]], dtype=DT))
    Rs = taylor.linear_relevance(w, 0.6, x, bias="spread")
    assert Rs.sum().item() == pytest.approx((x @ w + 0.6).item())
    with pytest.raises(ValueError, match="separate"):
        taylor.linear_relevance(w, 0.6, x, bias="nowhere")
    with pytest.raises(ValueError, match="shape"):
        taylor.linear_relevance(w, 0.6, torch.ones(2, dtype=DT))


def test_gradient_x_input_is_complete_for_bias_free_relu_net():
    torch.manual_seed(0)
    net = taylor.make_mlp(5, 1, depth=3, width=8, bias=False).to(DT)
    x = torch.randn(5, dtype=DT)
    f = lambda z: net(z).squeeze(-1)  # noqa: E731
    R = taylor.gradient_x_input(f, x)
    assert R.sum().item() == pytest.approx(f(x).item(), abs=1e-12)


def test_integrated_gradients_completeness_and_linear_case():
    w = torch.tensor([1.0, -3.0], dtype=DT)
    x = torch.tensor([2.0, 1.0], dtype=DT)
    ig = taylor.integrated_gradients(lambda z: z @ w, x, torch.zeros(2, dtype=DT), steps=3)
    assert torch.allclose(ig, w * x)  # exact for linear f, any number of steps
    f = lambda z: torch.tanh(z).sum(-1) * z[..., 0]  # noqa: E731
    base = torch.zeros(2, dtype=DT)
    errs = [
        abs(taylor.integrated_gradients(f, x, base, steps=s).sum().item() - (f(x) - f(base)).item())
        for s in (4, 16, 64)
    ]
    assert errs[0] > errs[1] > errs[2] and errs[2] < 1e-3
    with pytest.raises(ValueError, match="steps"):
        taylor.integrated_gradients(f, x, base, steps=0)


def test_gradient_noise_of_linear_function_is_zero():
    w = torch.tensor([1.0, 2.0, 3.0], dtype=DT)
    x0, x1 = torch.zeros(3, dtype=DT), torch.ones(3, dtype=DT)
    stats = taylor.gradient_noise(lambda z: z @ w, x0, x1)
    assert stats["correlation"] == pytest.approx(1.0)
    assert stats["changes"] == 0.0 and stats["roughness"] == 0.0


def test_gradient_noise_grows_with_depth_of_random_relu_nets():
    # Balduzzi et al. 2017: gradients of deeper plain ReLU nets decorrelate faster.
    torch.manual_seed(0)
    x0, x1 = torch.zeros(4, dtype=DT) - 1, torch.ones(4, dtype=DT)
    rough = {}
    for depth in (1, 8):
        vals = []
        for seed in range(3):
            torch.manual_seed(seed)
            net = taylor.make_mlp(4, 1, depth=depth, width=32).to(DT)
            s = taylor.gradient_noise(lambda z: net(z).squeeze(-1), x0, x1, points=200)  # noqa: B023
            vals.append(s["changes"])
        rough[depth] = sum(vals) / len(vals)
    assert rough[8] > 2 * rough[1]


def test_make_mlp_validates():
    with pytest.raises(ValueError, match="depth"):
        taylor.make_mlp(3, 1, depth=0)
    net = taylor.make_mlp(3, 2, depth=2, width=4)
    assert sum(isinstance(m, torch.nn.Linear) for m in net) == 3


def test_nearest_root_checker_accepts_solution_and_rejects_w_times_x(capsys):
    from lrp_teach.exercises import ExerciseError, check_nearest_root_relevance

    def solution(w, b, x):
        return w * (x - (x - (x @ w + b) * w / (w @ w)))

    check_nearest_root_relevance(solution)
    assert "20 random linear models" in capsys.readouterr().out
    with pytest.raises(ExerciseError, match="Gradient x Input"):
        check_nearest_root_relevance(lambda w, b, x: w * x)


def test_integrated_gradients_checker_accepts_solution_and_rejects_gradient_x_input(capsys):
    from lrp_teach.exercises import ExerciseError, check_integrated_gradients

    def solution(f, x, r, steps):  # the trapezoidal rule on steps + 1 points
        alphas = torch.linspace(0, 1, steps + 1, dtype=x.dtype)
        grads = taylor.gradient(f, r + alphas[:, None] * (x - r))
        weights = torch.full((steps + 1,), 1.0 / steps, dtype=x.dtype)
        weights[0] = weights[-1] = 0.5 / steps
        return (x - r) * (weights[:, None] * grads).sum(0)

    check_integrated_gradients(solution)
    capsys.readouterr()
    with pytest.raises(ExerciseError, match="midpoint rule"):  # the package's own quadrature
        check_integrated_gradients(lambda f, x, r, steps: taylor.integrated_gradients(
            f, x, r, steps=steps))
    with pytest.raises(ExerciseError):
        check_integrated_gradients(lambda f, x, r, steps: taylor.gradient(f, x[None])[0] * (x - r))
