"""The LRP explorer: composites built from the reader's choices, live updates, static fallback."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import lrp_teach as lt
from lrp_teach import rules
from lrp_teach.widgets import ExplorerSettings, LRPExplorer, build_composite, explorer

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
        nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 3),
    ).eval()


@pytest.fixture(scope="module")
def x():
    return torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))


def test_build_composite_assigns_groups(model):
    s = ExplorerSettings(gamma=0.5, epsilon=0.1)
    table = build_composite(s).assign(model).rules()
    assert isinstance(table["0"], rules.ZBox)
    assert isinstance(table["3"], rules.Gamma) and table["3"].gamma == 0.5
    assert isinstance(table["6"], rules.Epsilon) and table["6"].epsilon == 0.1
    assert isinstance(table["8"], rules.Zero)
    flat = build_composite(ExplorerSettings(input_rule="flat", conv_rule="LRP-0"))
    table = flat.assign(model).rules()
    assert isinstance(table["0"], rules.Flat) and isinstance(table["3"], rules.Zero)


def test_bad_settings():
    with pytest.raises(ValueError, match="unknown rule"):
        build_composite(ExplorerSettings(conv_rule="LRP-42"))
    with pytest.raises(ValueError, match="input-layer rule"):
        build_composite(ExplorerSettings(dense_rule="w²"))


def test_explorer_matches_explain_and_updates(model, x):
    ex = explorer(model, x, low=0.0, high=1.0, class_names=["a", "b", "c"])
    R, target = ex.explain()
    assert target == int(model(x[:1]).argmax(1))
    expected = lt.explain(model, x[:1], target=target,
                          composite=lt.composites.Composite(
                              by_type={nn.Conv2d: rules.Gamma(0.25),
                                       nn.Linear: rules.Epsilon(0.25)},
                              first=rules.ZBox(0.0, 1.0), last=rules.Zero()))
    assert torch.allclose(R, expected[0])
    fig = ex.update(conv_rule="LRP-0", target=2, index=1)
    assert ex.settings.conv_rule == "LRP-0" and ex.settings.target == 2
    R2, t2 = ex.explain()
    assert t2 == 2 and not torch.allclose(R2, R)
    assert len(fig.axes) >= 2
    with pytest.raises(ValueError, match="input-layer rule"):
        ex.update(output_rule="flat")
    assert ex.settings.output_rule == "LRP-0"  # a rejected change leaves the settings alone


def test_controls_drive_the_display(model, x, monkeypatch):
    pytest.importorskip("ipywidgets")
    shown = []

    class Handle:
        def update(self, obj):
            shown.append(obj)

    def fake_display(obj, display_id=False):
        shown.append(obj)
        return Handle() if display_id else None

    monkeypatch.setattr("IPython.display.display", fake_display)
    ex = LRPExplorer(model, x)
    ex.show()
    box, image = shown[0], shown[1]
    assert type(box).__name__ == "VBox"
    assert type(image).__name__ == "Image" and image.data[:4] == b"\x89PNG"  # static figure
    ex.controls["gamma"].value = 2.0
    assert ex.settings.gamma == 2.0
    assert len(shown) == 3 and shown[2].data != image.data  # the figure was redrawn


def test_explorer_rejects_bad_input(model, x):
    with pytest.raises(ValueError, match="batch of images"):
        LRPExplorer(model, x[0])
    with pytest.raises(ValueError, match="class names"):
        LRPExplorer(model, x, class_names=["a"])
