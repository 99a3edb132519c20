"""An ipywidgets explorer that re-runs LRP live as the reader changes the rules.

The reader picks a rule for each layer group (input layer, convolutions, dense layers,
output layer), the parameters :math:`\\gamma` and :math:`\\epsilon`, the image and the
target class; the heatmap is recomputed with :func:`lrp_teach.explain` after every change.

The figure is shown as an ordinary cell output whose display is *updated* in place
(``IPython.display`` display ids), and the controls as a widget. A rendered page, which has
no kernel, therefore keeps the figure of the default settings: the explorer degrades to a
static figure by construction. Without ipywidgets installed, :meth:`LRPExplorer.show`
displays that static figure only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from matplotlib.figure import Figure
from torch import nn

__all__ = ["GROUPS", "RULE_CHOICES", "ExplorerSettings", "LRPExplorer", "build_composite",
           "explorer"]

#: The rules a reader can choose, by label, and how each is built from the settings.
RULE_CHOICES: dict[str, Callable[[ExplorerSettings], Any]] = {}

#: The layer groups that get one rule each.
GROUPS = ("input layer", "convolutions", "dense layers", "output layer")


@dataclass(frozen=True)
class ExplorerSettings:
    """One configuration of the explorer: a rule label per group plus parameters.

    The default is the composite best practice :cite:`montavon2019overview`: z^B at the pixels,
    LRP-γ on the convolutions, LRP-ε on the dense layers and LRP-0 at the output.
    """

    input_rule: str = "z^B (box)"
    conv_rule: str = "LRP-γ"
    dense_rule: str = "LRP-ε"
    output_rule: str = "LRP-0"
    gamma: float = 0.25
    epsilon: float = 0.25
    low: float = 0.0
    high: float = 1.0
    index: int = 0
    target: int | None = None

    def rules(self) -> dict[str, str]:
        """``{group: rule label}``."""
        return dict(zip(GROUPS, (self.input_rule, self.conv_rule, self.dense_rule,
                                 self.output_rule), strict=True))


def _register_rules() -> None:
    from . import rules as r

    RULE_CHOICES.update({
        "LRP-0": lambda s: r.Zero(),
        "LRP-ε": lambda s: r.Epsilon(s.epsilon),
        "LRP-γ": lambda s: r.Gamma(s.gamma),
        "LRP-αβ (α=2, β=1)": lambda s: r.AlphaBeta(2.0, 1.0),
        "LRP-z⁺": lambda s: r.ZPlus(),
        "z^B (box)": lambda s: r.ZBox(s.low, s.high),
        "w²": lambda s: r.WSquare(),
        "flat": lambda s: r.Flat(),
    })


_register_rules()
_INPUT_ONLY = ("z^B (box)", "w²", "flat")


def build_composite(settings: ExplorerSettings):
    """The :class:`~lrp_teach.composites.Composite` that ``settings`` describe.

    Precedence follows the composites module: the input and output rules override the
    by-type rules of the convolutions (``nn.Conv1d``/``nn.Conv2d``) and dense layers
    (``nn.Linear``).

    Raises
    ------
    ValueError
        For an unknown rule label, or an input-only rule (z^B, w², flat) chosen for a group
        other than the input layer.
    """
    from .composites import Composite

    for group, label in settings.rules().items():
        if label not in RULE_CHOICES:
            raise ValueError(f"unknown rule {label!r} for the {group}; choose one of "
                             f"{sorted(RULE_CHOICES)}")
        if label in _INPUT_ONLY and group != "input layer":
            raise ValueError(f"{label} is an input-layer rule; it cannot explain the {group}")
    build = {group: RULE_CHOICES[label](settings) for group, label in settings.rules().items()}
    return Composite(
        by_type={nn.Conv1d: build["convolutions"], nn.Conv2d: build["convolutions"],
                 nn.Linear: build["dense layers"]},
        first=build["input layer"],
        last=build["output layer"],
    )


def _png(fig: Figure):
    """The figure as an IPython PNG image (shown the same in a kernel and on a static page)."""
    from io import BytesIO

    from IPython.display import Image

    buffer = BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return Image(data=buffer.getvalue(), format="png")


class LRPExplorer:
    """Interactive LRP heatmaps for a batch of images.

    Parameters
    ----------
    model : torch.nn.Module
        A model :func:`lrp_teach.explain` supports (canonize BatchNorm first).
    x : torch.Tensor
        Images of shape ``(N, C, H, W)``; the reader chooses one by index.
    class_names : sequence of str, optional
        Labels of the output classes (default: their indices).
    settings : ExplorerSettings, optional
        The initial (and static) configuration.
    """

    def __init__(self, model: nn.Module, x: torch.Tensor, *,
                 class_names: Sequence[str] | None = None,
                 settings: ExplorerSettings | None = None) -> None:
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must be a batch of images (N, C, H, W), got {shape}")
        self.model = model
        self.x = x
        with torch.no_grad():
            self.n_classes = int(model(x[:1]).shape[1])
        self.class_names = list(class_names) if class_names is not None else [
            str(i) for i in range(self.n_classes)]
        if len(self.class_names) != self.n_classes:
            raise ValueError(f"got {len(self.class_names)} class names for "
                             f"{self.n_classes} classes")
        self.settings = settings or ExplorerSettings()
        build_composite(self.settings)  # fail early on a bad configuration
        self._handle = None
        self.controls = None

    def explain(self, settings: ExplorerSettings | None = None) -> tuple[torch.Tensor, int]:
        """Relevance of the chosen image under ``settings``, and the explained class."""
        from .core import explain

        s = settings or self.settings
        xi = self.x[s.index:s.index + 1]
        with torch.no_grad():
            pred = int(self.model(xi).argmax(1))
        target = pred if s.target is None else int(s.target)
        R = explain(self.model, xi, target=target, composite=build_composite(s))
        return R[0], target

    def figure(self, settings: ExplorerSettings | None = None) -> Figure:
        """The image next to its heatmap for ``settings`` (the static fallback)."""
        from . import plot

        s = settings or self.settings
        R, target = self.explain(s)
        with torch.no_grad():
            logit = float(self.model(self.x[s.index:s.index + 1])[0, target])
        fig = Figure(figsize=(6.4, 3.0), layout="constrained")
        ax_img, ax_map = fig.subplots(1, 2)
        ax_img.imshow(self.x[s.index].sum(0).cpu().numpy(), cmap="gray")
        ax_img.set_title(f"input #{s.index}")
        ax_img.set_axis_off()
        plot.heatmap(R, ax=ax_map, title=f"class {self.class_names[target]}: "
                                         f"f = {logit:.2f}, ΣR = {float(R.sum()):.2f}")
        rules = ", ".join(f"{g}: {r}" for g, r in s.rules().items())
        fig.suptitle(f"{rules}\nγ = {s.gamma:g}, ε = {s.epsilon:g}", fontsize=8)
        return fig

    def _build_controls(self):
        import ipywidgets as w

        s = self.settings
        inputs = list(RULE_CHOICES)
        inner = [k for k in RULE_CHOICES if k not in _INPUT_ONLY]
        dropdowns = {
            "input_rule": w.Dropdown(options=inputs, value=s.input_rule,
                                     description="input layer"),
            "conv_rule": w.Dropdown(options=inner, value=s.conv_rule,
                                    description="convolutions"),
            "dense_rule": w.Dropdown(options=inner, value=s.dense_rule,
                                     description="dense layers"),
            "output_rule": w.Dropdown(options=inner, value=s.output_rule,
                                      description="output layer"),
        }
        sliders = {
            "gamma": w.FloatLogSlider(value=s.gamma, base=10, min=-2, max=1, step=0.1,
                                      description="γ"),
            "epsilon": w.FloatLogSlider(value=s.epsilon, base=10, min=-6, max=1, step=0.5,
                                        description="ε"),
            "index": w.IntSlider(value=s.index, min=0, max=len(self.x) - 1,
                                 description="image"),
            "target": w.Dropdown(options=[("predicted", None)] + [
                (name, i) for i, name in enumerate(self.class_names)], value=s.target,
                description="target"),
        }
        controls = {**dropdowns, **sliders}
        for name, control in controls.items():
            control.observe(lambda change, name=name: self.update(**{name: change["new"]}),
                            names="value")
        self.controls = controls
        return w.VBox([w.HBox(list(dropdowns.values())[:2]),
                       w.HBox(list(dropdowns.values())[2:]),
                       w.HBox([sliders["gamma"], sliders["epsilon"]]),
                       w.HBox([sliders["index"], sliders["target"]])])

    def update(self, **changes: Any) -> Figure:
        """Change settings (e.g. ``conv_rule="LRP-0"``), recompute and redraw the heatmap."""
        settings = replace(self.settings, **changes)
        build_composite(settings)
        self.settings = settings
        fig = self.figure()
        if self._handle is not None:
            self._handle.update(_png(fig))
        return fig

    def show(self) -> None:
        """Display the controls (if ipywidgets is available) and the updatable figure."""
        from IPython.display import display

        try:
            box = self._build_controls()
        except ImportError:
            box = None
        if box is not None:
            display(box)
        self._handle = display(_png(self.figure()), display_id=True)

    def _ipython_display_(self) -> None:
        self.show()


def explorer(model: nn.Module, x: torch.Tensor, **kwargs: Any) -> LRPExplorer:
    """Create an :class:`LRPExplorer`; leave it as the last line of a cell to display it.

    Keyword arguments go to :class:`LRPExplorer` (``class_names``) or, when they are fields of
    :class:`ExplorerSettings` (``low``, ``high``, ``conv_rule``, ...), to the initial settings.
    """
    fields = set(ExplorerSettings.__dataclass_fields__)
    initial = {k: kwargs.pop(k) for k in list(kwargs) if k in fields}
    settings = kwargs.pop("settings", None) or ExplorerSettings()
    return LRPExplorer(model, x, settings=replace(settings, **initial), **kwargs)
