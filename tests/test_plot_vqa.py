"""The figures of chapter 8: scene overlays, coloured questions, object pairs."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.colors import to_rgb  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from lrp_teach import evaluation, plot  # noqa: E402
from lrp_teach.datasets.clevr_lite import CELL  # noqa: E402

QUESTION = "how many objects have the same shape as the magenta one ?".split()


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture
def scene():
    g = torch.Generator().manual_seed(0)
    image = torch.rand(3, 48, 48, generator=g)
    relevance = torch.randn(3, 48, 48, generator=g)
    return image, relevance


def _colourbar_axes(figure: Figure) -> list:
    """The axes of the figure's colour bars, insets included."""
    axes = [a for ax in figure.axes for a in (ax, *ax.child_axes)]
    return [ax for ax in axes if getattr(ax, "_colorbar", None) is not None]


def _colourbar_labels(figure: Figure) -> list[str]:
    return [ax.get_ylabel() or ax.get_xlabel() for ax in _colourbar_axes(figure)]


@pytest.mark.parametrize("pooling", evaluation.POOLINGS)
def test_overlay_draws_the_pooled_map(scene, pooling):
    image, relevance = scene
    _, ax = plt.subplots(figsize=(3, 3))
    plot.scene_overlay(ax, image, relevance, pooling=pooling)
    assert len(ax.images) == 2
    drawn = np.asarray(ax.images[-1].get_array())
    expected = evaluation.pool(relevance[None], pooling)[0].numpy()
    np.testing.assert_array_equal(drawn, expected)
    # the scene underneath is its luminance, in grey
    grey = np.asarray(ax.images[0].get_array())
    assert grey.shape == (48, 48)
    lum = 0.299 * image[0] + 0.587 * image[1] + 0.114 * image[2]
    np.testing.assert_allclose(grey, lum.numpy(), rtol=1e-5)
    assert ax.images[0].get_cmap().name == "gray"
    # opacity grows with the value: zero is transparent, the maximum most opaque
    alpha = np.asarray(ax.images[-1].get_alpha())
    assert alpha.shape == expected.shape
    assert alpha.flat[expected.argmax()] == pytest.approx(alpha.max())
    assert np.all(alpha[expected == 0] == 0)
    assert ax.images[-1].get_interpolation() == "nearest"
    assert _colourbar_labels(ax.figure) == [pooling]


def test_overlay_takes_a_two_dimensional_map(scene):
    image, _ = scene
    cam = torch.rand(48, 48)
    _, ax = plt.subplots()
    plot.scene_overlay(ax, image, cam, colorbar=False, title="Grad-CAM")
    np.testing.assert_array_equal(np.asarray(ax.images[-1].get_array()), cam.numpy())
    assert _colourbar_labels(ax.figure) == []
    assert ax.get_title() == "Grad-CAM"


def test_overlay_vmax_sets_the_colour_scale(scene):
    image, relevance = scene
    _, ax = plt.subplots()
    plot.scene_overlay(ax, image, relevance, pooling="l1-norm", vmax=0.5)
    heat = ax.images[-1]
    assert heat.norm.vmin == 0.0 and heat.norm.vmax == 0.5
    assert np.asarray(heat.get_alpha()).max() == pytest.approx(0.9)


def test_overlay_of_zeros_draws_only_the_scene(scene):
    image, _ = scene
    _, ax = plt.subplots()
    with np.errstate(all="raise"):
        plot.scene_overlay(ax, image, torch.zeros(3, 48, 48))
        ax.figure.canvas.draw()
    assert len(ax.images) == 1  # the grey scene, no heat
    assert _colourbar_labels(ax.figure) == ["sum,pos"]


def test_overlay_rejects_mismatched_sizes(scene):
    image, _ = scene
    _, ax = plt.subplots()
    with pytest.raises(ValueError, match="same size"):
        plot.scene_overlay(ax, image, torch.rand(3, 24, 24))


def test_word_ink_contrasts_with_its_box():
    values = torch.linspace(-1.0, 0.0, len(QUESTION))  # from darkest blue to white
    _, ax = plt.subplots(figsize=(6, 1.5))
    texts = plot.plot_question(ax, QUESTION, values)
    assert texts == ax.texts[:len(QUESTION)]
    darkest, lightest = ax.texts[0], ax.texts[len(QUESTION) - 1]
    assert to_rgb(darkest.get_color()) == (1.0, 1.0, 1.0)
    assert to_rgb(lightest.get_color()) == (0.0, 0.0, 0.0)
    for text in ax.texts:
        box = text.get_bbox_patch().get_facecolor()
        assert to_rgb(text.get_color()) == plot.text_colour(box[:3])


def test_long_question_wraps_inside_a_narrow_axes():
    figure = plt.figure(figsize=(3, 1.5))
    ax = figure.add_axes([0.05, 0.05, 0.9, 0.9])
    texts = plot.plot_question(ax, QUESTION, torch.rand(len(QUESTION)), y=0.5)
    figure.canvas.draw()
    row_of = [round(t.get_position()[1], 6) for t in texts]
    rows = sorted(set(row_of), reverse=True)
    assert len(rows) >= 2
    assert np.mean(rows) == pytest.approx(0.5)  # the block is centred at y
    assert row_of == sorted(row_of, reverse=True)  # words fill the lines in order
    assert row_of[0] == rows[0] and row_of[-1] == rows[-1]
    to_axes = ax.transAxes.inverted()
    for text in texts:  # every box stays inside the axes
        box = text.get_bbox_patch().get_window_extent().transformed(to_axes)
        assert box.x0 >= -1e-6 and box.x1 <= 1 + 1e-6
    # reading order: left to right within a row
    for row in rows:
        xs = [t.get_position()[0] for t, r in zip(texts, row_of, strict=True) if r == row]
        assert xs == sorted(xs)


def test_short_question_stays_on_one_line():
    _, ax = plt.subplots(figsize=(6, 1.5))
    texts = plot.plot_question(ax, "what shape is the red object ?".split(), torch.rand(7),
                               y=0.6)
    assert {t.get_position()[1] for t in texts} == {0.6}


def test_question_colour_bar():
    _, ax = plt.subplots(figsize=(4, 1.5))
    plot.plot_question(ax, QUESTION, torch.randn(len(QUESTION)), colorbar=True)
    assert _colourbar_labels(ax.figure) == ["word relevance"]
    with pytest.raises(ValueError, match="relevances"):
        plot.plot_question(ax, QUESTION, torch.randn(3))


def _line_pairs(ax) -> list[tuple[int, int]]:
    centre = (CELL - 1) / 2
    pairs = []
    for line in ax.lines:
        (x0, x1), (y0, y1) = line.get_xdata(), line.get_ydata()
        cells = [int(round((y - centre) / CELL)) * 4 + int(round((x - centre) / CELL))
                 for x, y in ((x0, y0), (x1, y1))]
        pairs.append(tuple(cells))
    return pairs


def test_pair_widths_follow_relevance():
    r = torch.zeros(16, 16)
    r[0, 5], r[3, 12], r[7, 8], r[9, 9] = 4.0, 2.0, 1.0, 10.0  # (9, 9) is no pair
    _, ax = plt.subplots()
    ax.imshow(np.zeros((48, 48)))
    drawn = plot.draw_pairs(ax, r, top=3)
    assert [(i, j) for i, j, _ in drawn] == [(0, 5), (3, 12), (7, 8)]
    assert _line_pairs(ax) == [(0, 5), (3, 12), (7, 8)]
    widths = [line.get_linewidth() for line in ax.lines]
    assert widths[0] > widths[1] > widths[2] >= 0.5
    assert widths == pytest.approx([3.5, 2.0, 1.25])  # 0.5 + 3 R / R_max
    assert [t.get_text() for t in ax.texts] == ["1", "2", "3"]
    # the lines join cell centres of the 48 x 48 image
    assert ax.lines[0].get_xdata()[0] == pytest.approx((CELL - 1) / 2)


def test_pairs_old_call_and_symmetric_option():
    g = torch.Generator().manual_seed(1)
    r = torch.rand(16, 16, generator=g)
    _, ax = plt.subplots()
    ax.imshow(np.zeros((48, 48)))
    plot.draw_pairs(ax, r, top=2)  # the chapter's call
    assert len(ax.lines) == 2
    off = r.clone().fill_diagonal_(-1)
    i, j = divmod(int(off.argmax()), 16)
    assert _line_pairs(ax)[0] == (i, j)

    r = torch.zeros(16, 16)
    r[1, 2], r[2, 1], r[4, 6] = 2.5, 1.5, 3.0  # {1, 2} sums to 4 > 3
    _, ax = plt.subplots()
    drawn = plot.draw_pairs(ax, r, top=2, symmetric=True, labels=False)
    assert [(i, j) for i, j, _ in drawn] == [(1, 2), (4, 6)]
    assert drawn[0][2] == pytest.approx(4.0)
    assert ax.lines[0].get_linewidth() > ax.lines[1].get_linewidth()
    assert len(ax.texts) == 0
    _, ax = plt.subplots()
    drawn = plot.draw_pairs(ax, r, top=2)
    assert [(i, j) for i, j, _ in drawn] == [(4, 6), (1, 2)]


def test_question_figure(scene):
    image, relevance = scene
    words = QUESTION
    figure = plot.question_figure(image, words, relevance, torch.randn(len(words)),
                                  torch.rand(16, 16), title="question 3", answer="2")
    assert isinstance(figure, Figure)
    width, height = figure.get_size_inches()
    assert 8 <= width <= 10 and 2.5 <= height <= 4
    labels = _colourbar_labels(figure)
    assert "sum,pos" in labels and "word relevance" in labels
    panels = [ax for ax in figure.axes if ax not in _colourbar_axes(figure)]
    scene_ax, heat_ax, text_ax = panels[:3]
    np.testing.assert_allclose(np.asarray(scene_ax.images[0].get_array()),
                               image.permute(1, 2, 0).numpy(), rtol=1e-6)
    assert len(heat_ax.images) == 2 and len(heat_ax.lines) == 3
    shown = " ".join(t.get_text() for t in text_ax.texts)
    assert " ".join(words) in shown and "answer: 2" in shown
    assert figure._suptitle.get_text() == "question 3"
    figure.canvas.draw()


def test_question_figure_without_pairs(scene):
    image, relevance = scene
    figure = plot.question_figure(image, ["is", "it", "?"], relevance, [0.1, -0.2, 0.0],
                                  pooling="l2-norm")
    assert "l2-norm" in _colourbar_labels(figure)
    assert all(not ax.lines for ax in figure.axes)
