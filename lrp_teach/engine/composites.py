"""Composites: which LRP rule goes to which layer.

A composite maps each Linear/Conv layer of a model to a rule, by (in order of precedence)

1. the layer's name (its path in ``model.named_modules()``, e.g. ``"features.0"``),
2. its index among the Linear/Conv layers in forward order (negative indices count from
   the top: ``-1`` is the last layer),
3. its position: ``first`` or ``last`` Linear/Conv layer,
4. its type (``nn.Linear``, ``nn.Conv2d``, ...; a base class such as
   ``nn.modules.conv._ConvNd`` matches all convolutions),
5. the ``default`` rule.

Layers without parameters (ReLU, pooling, Flatten, ...) need no rule.  The presets follow
:cite:`montavon2019overview` and :cite:`kohlbrenner2020`; ``composite.assign(model)`` lists
which rule went where.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from dataclasses import dataclass

from torch import Tensor, nn

from .rules import ActivationRule, AlphaBeta, Epsilon, Flat, Gamma, Pass, Rule, ZBox, Zero, ZPlus

__all__ = [
    "Assignment",
    "BestPractice",
    "Composite",
    "EpsilonAlpha2Beta1",
    "EpsilonGamma",
    "EpsilonGammaBox",
    "EpsilonPlus",
    "EpsilonPlusFlat",
    "RuleMap",
    "Uniform",
]


@dataclass(frozen=True)
class Assignment:
    """The rule of one Linear/Conv layer, and why (``by`` names the matching criterion)."""

    index: int
    name: str
    layer: nn.Module
    rule: Rule
    by: str


class RuleMap(list):
    """A list of :class:`Assignment`, printed as a table ("which rule went where")."""

    def _rows(self) -> list[tuple[str, ...]]:
        return [(str(a.index), a.name, repr(a.layer), repr(a.rule), a.by) for a in self]

    def __str__(self) -> str:
        rows = [("#", "layer", "module", "rule", "chosen by"), *self._rows()]
        widths = [max(len(r[c]) for r in rows) for c in range(5)]
        return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip()
                         for r in rows)

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{h}</th>" for h in ("#", "layer", "module", "rule", "chosen by"))
        body = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in r) + "</tr>"
                       for r in self._rows())
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    def rules(self) -> dict[str, Rule]:
        """``{layer name: rule}``."""
        return {a.name: a.rule for a in self}


def _check_rule(rule: object, where: str) -> Rule | ActivationRule | None:
    if rule is not None and not isinstance(rule, (Rule, ActivationRule)):
        raise TypeError(f"{where} must be an lrp_teach.rules.Rule, got {type(rule).__name__}")
    return rule


#: The rule of an nn.LSTM that no criterion matches: the ε rule of Arras et al. (2017).
LSTM_DEFAULT = Epsilon(1e-3)


class Composite:
    """Map the Linear/Conv layers of a model to LRP rules.

    Precedence: ``by_name`` > ``by_index`` > ``first``/``last`` > ``by_type`` > ``default``.

    Parameters
    ----------
    default : Rule, optional
        The rule of layers no other criterion matches.  Without it such a layer raises
        ``TypeError`` when the composite is applied.
    by_type : dict {type or tuple of types: Rule}, optional
        Rules by layer class; the most specific class in the layer's MRO wins.
    by_name : dict {str: Rule}, optional
        Rules by path in ``model.named_modules()``.
    by_index : dict {int: Rule}, optional
        Rules by index among the Linear/Conv layers in forward order (negative allowed).
    first, last : Rule, optional
        Rules of the first and the last Linear/Conv layer executed.
    sums : Epsilon, optional
        The rule at every sum of two input-dependent tensors (residual additions): ``None``
        (the default) keeps the plain sum, which splits relevance in proportion to the
        summands, :math:`R_a = a/(a+b)\\,R`; ``Epsilon(e)`` divides by
        :math:`a + b + e\\,\\mathrm{sign}(a+b)` instead and absorbs the rest.

    Element-wise activations (``nn.Tanh``, ``nn.GELU``, ...) and ``nn.LSTM`` may be mapped
    by type or name too; unmatched, activations get :class:`~lrp_teach.rules.Pass` and an
    LSTM gets ``Epsilon(1e-3)``.

    Examples
    --------
    >>> comp = Composite(default=Epsilon(0.25), by_type={nn.Conv2d: Gamma(0.25)},
    ...                  first=ZBox(0.0, 1.0), last=Zero())
    >>> print(comp.assign(model))
    """

    def __init__(
        self,
        default: Rule | None = None,
        by_type: Mapping[type | tuple[type, ...], Rule] | None = None,
        by_name: Mapping[str, Rule] | None = None,
        by_index: Mapping[int, Rule] | None = None,
        first: Rule | None = None,
        last: Rule | None = None,
        sums: Rule | None = None,
    ) -> None:
        if sums is not None and not isinstance(sums, (Epsilon, Zero)):
            raise TypeError(f"sums must be lrp_teach.rules.Epsilon(e) or Zero(), got {sums!r}")
        self.sums = sums
        self.default = _check_rule(default, "default")
        self.first = _check_rule(first, "first")
        self.last = _check_rule(last, "last")
        self.by_type: dict[type, Rule] = {}
        for key, rule in (by_type or {}).items():
            for cls in key if isinstance(key, tuple) else (key,):
                if not isinstance(cls, type):
                    raise TypeError(f"by_type keys must be layer classes, got {cls!r}")
                self.by_type[cls] = _check_rule(rule, f"by_type[{cls.__name__}]")
        self.by_name = {str(k): _check_rule(v, f"by_name[{k!r}]") for k, v in
                        (by_name or {}).items()}
        self.by_index = {}
        for k, v in (by_index or {}).items():
            if not isinstance(k, int) or isinstance(k, bool):
                raise TypeError(f"by_index keys must be ints, got {k!r}")
            self.by_index[k] = _check_rule(v, f"by_index[{k}]")

    @property
    def needs_count(self) -> bool:
        """Whether the rules depend on how many Linear/Conv layers the model executes."""
        return self.last is not None or any(k < 0 for k in self.by_index)

    def _match(self, index: int, count: int | None, name: str, layer: nn.Module):
        if name in self.by_name:
            return self.by_name[name], "name"
        for k, rule in self.by_index.items():
            if (k if k >= 0 or count is None else k + count) == index:
                return rule, f"index {k}"
        if self.first is not None and index == 0:
            return self.first, "first"
        if self.last is not None and count is not None and index == count - 1:
            return self.last, "last"
        for cls in type(layer).__mro__:
            if cls in self.by_type:
                return self.by_type[cls], f"type {cls.__name__}"
        if self.default is not None:
            return self.default, "default"
        return None, ""

    def rule_for(self, index: int, count: int | None, name: str, layer: nn.Module) -> Rule:
        """The rule of the Linear/Conv layer executed as number ``index`` (of ``count``)."""
        rule, _ = self._match(index, count, name, layer)
        if rule is None:
            raise TypeError(
                f"no rule for layer '{name}' ({type(layer).__name__}, Linear/Conv layer "
                f"#{index}): give the composite a default or a rule for this layer"
            )
        return rule

    def module_rule(self, name: str, module: nn.Module):
        """The rule of an LSTM or an element-wise activation module (by name, then type)."""
        if name in self.by_name:
            return self.by_name[name]
        for cls in type(module).__mro__:
            if cls in self.by_type:
                return self.by_type[cls]
        return LSTM_DEFAULT if isinstance(module, nn.LSTM) else Pass()

    def check_used(self, executed: list[tuple[str, nn.Module]]) -> None:
        """After a run: every ``by_index`` entry must name an executed Linear/Conv layer."""
        count = len(executed)
        for k in self.by_index:
            if not -count <= k < count:
                raise ValueError(f"by_index {k} is out of range: the model executes {count} "
                                 "Linear/Conv layers")

    def assign_layers(self, layers: list[tuple[str, nn.Module]]) -> RuleMap:
        """Assign rules to the Linear/Conv entries of ``(name, layer)`` pairs (forward order)."""
        from .core import PARAMETRIC

        params = [(n, m) for n, m in layers if isinstance(m, PARAMETRIC)]
        names = {n for n, _ in layers}
        unknown = [n for n in self.by_name if n not in names]
        if unknown:
            raise ValueError(f"by_name refers to unknown layers {unknown}; the model's layers "
                             f"are {sorted(names)}")
        self.check_used(params)
        count = len(params)
        out = RuleMap()
        for i, (name, layer) in enumerate(params):
            rule = self.rule_for(i, count, name, layer)
            out.append(Assignment(i, name, layer, rule, self._match(i, count, name, layer)[1]))
        return out

    def assign(self, model: nn.Module, *inputs) -> RuleMap:
        """Which rule goes to which Linear/Conv layer of ``model``, as a printable table.

        The layers are numbered in order of execution; for a model other than a nested
        ``nn.Sequential`` pass an example input, with which the model is run once.
        """
        from .core import named_layers, trace

        layers = trace(model, inputs if len(inputs) != 1 else inputs[0]) if inputs else (
            named_layers(model))
        if inputs:
            names = {n for n, _ in model.named_modules()}
            unknown = [n for n in self.by_name if n not in names]
            if unknown:
                raise ValueError(f"by_name refers to unknown layers {unknown}")
            layers = layers + [(n, m) for n, m in model.named_modules()
                               if n in self.by_name and (n, m) not in layers]
        return self.assign_layers(layers)

    def __repr__(self) -> str:
        parts = []
        for key in ("default", "first", "last"):
            if getattr(self, key) is not None:
                parts.append(f"{key}={getattr(self, key)!r}")
        if self.by_type:
            parts.append("by_type={" + ", ".join(f"{c.__name__}: {r!r}" for c, r in
                                                 self.by_type.items()) + "}")
        if self.by_index:
            parts.append(f"by_index={self.by_index!r}")
        if self.by_name:
            parts.append(f"by_name={self.by_name!r}")
        return f"{type(self).__name__}({', '.join(parts)})"


class Uniform(Composite):
    """The same rule on every Linear/Conv layer."""

    def __init__(self, rule: Rule) -> None:
        super().__init__(default=rule)


_CONV = nn.modules.conv._ConvNd


class EpsilonGamma(Composite):
    """``Epsilon`` on Linear layers, ``Gamma`` on convolutions; the default of ``explain``.

    Parameters
    ----------
    epsilon : float
        Stabilizer of the Linear layers (default 1e-6).
    gamma : float
        :math:`\\gamma` of the convolutions (default 0.25, :cite:`montavon2019overview`).
    """

    def __init__(self, epsilon: float = 1e-6, gamma: float = 0.25, **kwargs) -> None:
        super().__init__(by_type={nn.Linear: Epsilon(epsilon), _CONV: Gamma(gamma)}, **kwargs)


class EpsilonGammaBox(EpsilonGamma):
    """:class:`EpsilonGamma` with :class:`~lrp_teach.rules.ZBox` on the first layer.

    The preset of zennit :cite:`anders2021zennit` and the LRP overview
    :cite:`montavon2019overview`: z^B at the pixels (bounds ``low``, ``high``),
    ``Gamma(gamma)`` on convolutions, ``Epsilon(epsilon)`` on Linear layers.
    """

    def __init__(
        self,
        low: float | Tensor,
        high: float | Tensor,
        epsilon: float = 1e-6,
        gamma: float = 0.25,
    ) -> None:
        super().__init__(epsilon, gamma, first=ZBox(low, high))


class EpsilonPlus(Composite):
    """``Epsilon`` on Linear layers, ``ZPlus`` on convolutions :cite:`kohlbrenner2020`."""

    def __init__(self, epsilon: float = 1e-6, **kwargs) -> None:
        super().__init__(by_type={nn.Linear: Epsilon(epsilon), _CONV: ZPlus()}, **kwargs)


class EpsilonPlusFlat(EpsilonPlus):
    """:class:`EpsilonPlus` with :class:`~lrp_teach.rules.Flat` on the first layer
    :cite:`kohlbrenner2020`."""

    def __init__(self, epsilon: float = 1e-6) -> None:
        super().__init__(epsilon, first=Flat())


class EpsilonAlpha2Beta1(Composite):
    """``Epsilon`` on Linear layers, ``AlphaBeta(2, 1)`` on convolutions
    :cite:`kohlbrenner2020`."""

    def __init__(self, epsilon: float = 1e-6) -> None:
        super().__init__(by_type={nn.Linear: Epsilon(epsilon), _CONV: AlphaBeta(2.0, 1.0)})


class BestPractice(Composite):
    """The chapter's best practice :cite:`montavon2019overview`: LRP-0 on top, ε in the
    middle, γ below, z^B at the pixels.

    With :math:`L` Linear/Conv layers numbered :math:`0, \\dots, L-1` in forward order:

    * layer 0 (the pixels) gets ``ZBox(low, high)``;
    * layer :math:`L-1` (the output) gets ``Zero()``;
    * of the :math:`m = L - 2` layers in between, the lower ``n_gamma`` get ``Gamma(gamma)``
      and the upper :math:`m - n_\\gamma` get ``Epsilon(epsilon)``.  The default
      :math:`n_\\gamma = \\lceil m/2 \\rceil` puts γ on the lower half (for a CNN, usually the
      convolutions) and, for :math:`m = 1` as in a three-layer MLP, γ on the single middle
      layer, as in the tutorial :cite:`montavon2019tutorial`.

    Parameters
    ----------
    low, high : float or Tensor
        Input bounds for z^B.
    epsilon : float
        ε of the upper middle layers, in units of their pre-activations (default 0.25).
    gamma : float
        γ of the lower middle layers (default 0.25).
    n_gamma : int, optional
        How many middle layers get γ (default :math:`\\lceil m/2 \\rceil`).
    """

    def __init__(
        self,
        low: float | Tensor,
        high: float | Tensor,
        epsilon: float = 0.25,
        gamma: float = 0.25,
        n_gamma: int | None = None,
    ) -> None:
        super().__init__(first=ZBox(low, high), last=Zero())
        self._epsilon, self._gamma = Epsilon(epsilon), Gamma(gamma)  # validates both
        if n_gamma is not None and (not isinstance(n_gamma, int) or n_gamma < 0):
            raise ValueError(f"n_gamma must be an int >= 0, got {n_gamma!r}")
        self.epsilon, self.gamma, self.n_gamma = epsilon, gamma, n_gamma

    @property
    def needs_count(self) -> bool:
        return True

    def rule_for(self, index: int, count: int | None, name: str, layer: nn.Module) -> Rule:
        if count is None:
            raise ValueError("BestPractice needs the number of layers (run through explain)")
        middle = max(count - 2, 0)
        n_gamma = -(-middle // 2) if self.n_gamma is None else self.n_gamma
        if not 0 <= n_gamma <= middle:
            raise ValueError(f"n_gamma={n_gamma} must lie in 0..{middle} (the middle layers)")
        self.by_index = {i: self._gamma for i in range(1, 1 + n_gamma)}
        self.by_index.update({i: self._epsilon for i in range(1 + n_gamma, count - 1)})
        return super().rule_for(index, count, name, layer)

    def assign_layers(self, layers):
        from .core import PARAMETRIC

        count = sum(isinstance(m, PARAMETRIC) for _, m in layers)
        if count:
            self.rule_for(0, count, "", nn.Identity())  # sets by_index for this count
        return super().assign_layers(layers)
