"""Shared machinery of the exercise checkers.

Conventions every checker follows:

* the reference is computed *before* the learner's function runs, on copies of the inputs,
  and :func:`unchanged` reports an input that the learner's function changed in place;
* the learner's function is called through :func:`call`, which turns an unfilled stub
  (``NotImplementedError``) into a short "not implemented yet" message and any other error
  into a message that names the case, with the learner's own traceback kept;
* :func:`forbidden` runs the learner's function while watching for calls into the
  package's own implementation of the rule the exercise asks for;
* every failure goes through :func:`fail`; the checker frames set ``__tracebackhide__`` so
  that IPython's traceback shows the message and not the checker's source (which holds the
  reference implementation).

Messages name the mistake ("the bias is missing from the denominator") and the numbers that
show it; they never spell out the formula of the solution.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch

__all__ = ["ExerciseError", "compare"]


class ExerciseError(AssertionError):
    """The learner's answer disagrees with the reference; the message says where and how."""


def fail(message: str) -> None:
    """Raise :class:`ExerciseError` with ``message`` and no chained context."""
    raise ExerciseError(message) from None


def tolerance(*dtypes: torch.dtype) -> float:
    """Relative tolerance for comparing results computed in the least precise of ``dtypes``."""
    precise = all(d == torch.float64 for d in dtypes)
    return 1e-9 if precise else 2e-4


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def close(got: torch.Tensor, expected: torch.Tensor, rel: float) -> bool:
    """``got`` within ``rel`` of ``expected``, relative to the largest entry of ``expected``."""
    if tuple(got.shape) != tuple(expected.shape):
        return False
    got = got.detach().to(torch.float64)
    expected = expected.detach().to(torch.float64)
    if not torch.isfinite(got).all():
        return False
    scale = float(expected.abs().max()) if expected.numel() else 0.0
    return bool(((got - expected).abs() <= rel * (1.0 + scale)).all())


def first_match(got: torch.Tensor, variants: Iterable[tuple[str, torch.Tensor]], rel: float
                ) -> str | None:
    """The description of the first wrong variant that ``got`` reproduces, if any."""
    for description, variant in variants:
        if close(got, variant, rel):
            return description
    return None


def call(fn: Callable, *args: Any, where: str = "", **kwargs: Any) -> Any:
    """Run the learner's ``fn``; report a stub or an error in words."""
    __tracebackhide__ = True
    name = getattr(fn, "__name__", "your function")
    stub = None
    try:
        return fn(*args, **kwargs)
    except NotImplementedError as err:
        stub = str(err)
    except ExerciseError:
        raise
    except Exception as err:
        context = f" on {where}" if where else ""
        advice = ""
        if "dtype" in str(err) or "Double" in str(err) or "Float" in str(err):
            advice = (" The inputs of this case are not in torch's default dtype: a tensor "
                      "created without `dtype=` (for example by torch.where with Python "
                      "numbers, torch.ones or torch.tensor) takes the default dtype; create it "
                      "from the inputs instead (`.to(z.dtype)`, `torch.ones_like`).")
        _reraise(f"`{name}` raised {type(err).__name__}{context}: {err}.{advice}", err)
    detail = f" ({stub})" if stub else ""
    fail(f"`{name}` is not implemented yet: it raised NotImplementedError{detail}.")


def _reraise(message: str, err: Exception) -> None:
    raise ExerciseError(message) from err


def snapshot(**values: Any) -> dict[str, torch.Tensor]:
    """Copies of the tensors (and of every tensor in a module's state) passed by name."""
    out: dict[str, torch.Tensor] = {}
    for name, value in values.items():
        if isinstance(value, torch.nn.Module):
            for key, tensor in value.state_dict().items():
                out[f"{name}.{key}"] = tensor.detach().clone()
        elif isinstance(value, torch.Tensor):
            out[name] = value.detach().clone()
    return out


def unchanged(before: dict[str, torch.Tensor], where: str, **values: Any) -> None:
    """Fail if a tensor recorded by :func:`snapshot` was changed by the learner's function."""
    __tracebackhide__ = True
    now = snapshot(**values)
    changed = [k for k, v in before.items()
               if k not in now or now[k].shape != v.shape or not torch.equal(now[k], v)]
    if changed:
        fail(
            f"{where}: your function changed its input {', '.join(f'`{c}`' for c in changed)} "
            "in place (an in-place operation such as `mul_`, `add_`, `+=`, `copy_` or a write "
            "to `.data`). An LRP rule must leave the layer and the activations as they were: "
            "work on new tensors."
        )


@contextlib.contextmanager
def forbidden(used: list[str], **targets: Any) -> Iterator[None]:
    """Watch for calls into the package's own implementations while the block runs.

    ``targets`` maps a readable name ("the package's ZBox rule") to a function or a class
    (all functions defined in the class body count). Every name whose code was entered is
    appended to ``used``; the checker reports it after the learner's function returned.
    Found by code object, so it does not matter how the learner imported it.
    """
    codes: dict[Any, str] = {}
    for label, target in targets.items():
        if isinstance(target, type):
            for member in vars(target).values():
                member = getattr(member, "__func__", member)
                member = getattr(member, "fget", member)
                code = getattr(member, "__code__", None)
                if code is not None:
                    codes[code] = label
        else:
            codes[target.__code__] = label

    def profile(frame, event, arg):
        if event == "call":
            label = codes.get(frame.f_code)
            if label is not None and label not in used:
                used.append(label)

    previous = sys.getprofile()
    sys.setprofile(profile)
    try:
        yield
    finally:
        sys.setprofile(previous)


def report_forbidden(used: list[str], where: str) -> None:
    __tracebackhide__ = True
    if used:
        fail(
            f"{where}: your function calls {' and '.join(used)}. The exercise asks you to write "
            "the rule yourself from tensor operations, without the package's implementation."
        )


def run_learner(fn: Callable, where: str, inputs: dict[str, Any], package: dict | None = None,
                **extra: Any) -> Any:
    """Call ``fn(**inputs, **extra)`` on the caller's copies: report an exception, an input
    changed in place, or a call into one of the ``package`` functions the exercise forbids."""
    __tracebackhide__ = True
    before = snapshot(**inputs)
    used: list[str] = []
    with forbidden(used, **(package or {})):
        got = call(fn, **inputs, **extra, where=where)
    unchanged(before, where, **inputs)
    report_forbidden(used, where)
    return got


def check_tensor(what: str, got: object, shape: tuple[int, ...]) -> torch.Tensor:
    """Fail unless ``got`` is a finite tensor of ``shape``; return it detached."""
    __tracebackhide__ = True
    if not isinstance(got, torch.Tensor):
        fail(f"{what}: expected a torch.Tensor, got {type(got).__name__}.")
    if tuple(got.shape) != tuple(shape):
        fail(f"{what}: expected shape {tuple(shape)}, got {tuple(got.shape)}.")
    if not torch.isfinite(got.detach()).all():
        fail(f"{what}: the result contains NaN or inf; is a denominator zero?")
    return got.detach()


def compare(
    what: str,
    got: object,
    expected: torch.Tensor,
    *,
    atol: float = 1e-6,
    rtol: float = 1e-5,
    hint: str = "",
) -> None:
    """Raise :class:`ExerciseError` unless ``got`` matches ``expected``.

    Parameters
    ----------
    what : str
        What is being compared, in words ("relevance of layer 2 for case 3").
    got : object
        The learner's value; must be a tensor of the expected shape.
    expected : torch.Tensor
        The reference value.
    atol, rtol : float
        Tolerances of :func:`torch.allclose`.
    hint : str
        A sentence appended to the message on failure.
    """
    __tracebackhide__ = True
    suffix = f" Hint: {hint}" if hint else ""
    if not isinstance(got, torch.Tensor):
        fail(f"{what}: expected a torch.Tensor, got {type(got).__name__}.{suffix}")
    if tuple(got.shape) != tuple(expected.shape):
        fail(f"{what}: expected shape {tuple(expected.shape)}, got {tuple(got.shape)}.{suffix}")
    dtype = got.dtype
    got = got.detach().to(expected.dtype)
    if not torch.isfinite(got).all():
        fail(f"{what}: the result contains NaN or inf.{suffix}")
    if not torch.allclose(got, expected, atol=atol, rtol=rtol):
        err = (got - expected).abs().max().item()
        fail(f"{what}: largest difference from the reference is {err:.3g} "
             f"(your result is {dtype_name(dtype)}).{suffix}")
