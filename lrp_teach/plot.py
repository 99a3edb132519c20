"""Figures that teach: zero-centred heatmaps, overlays, labelled grids and word heatmaps.

Relevance is signed. Every map here uses one diverging colormap whose centre (white) is
exactly zero: red is evidence *for* the explained output, blue evidence *against* it, and
the colour scale is symmetric, ``[-vmax, vmax]``, so that equal colours mean equal
magnitudes on both sides.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.colors import LinearSegmentedColormap
from matplotlib.figure import Figure

__all__ = [
    "CMAP",
    "contrast_ratio",
    "draw_architecture",
    "draw_pairs",
    "grid",
    "HEAT",
    "heatmap",
    "overlay",
    "plot_question",
    "question_figure",
    "relative_luminance",
    "scene_overlay",
    "symmetric_limit",
    "text_colour",
    "to_map",
    "words_html",
]

#: Blue (negative) - white (zero) - red (positive). A perceptually ordered variant of the
#: "bwr" map used in the LRP literature.
CMAP = LinearSegmentedColormap.from_list(
    "lrp",
    [
        "#053061",
        "#2166ac",
        "#4393c3",
        "#92c5de",
        "#f7f7f7",
        "#f4a582",
        "#d6604d",
        "#b2182b",
        "#67001f",
    ],
)


def to_map(relevance: Any) -> np.ndarray:
    """Turn a relevance tensor into a 2-D array for display.

    Accepts shapes ``(H, W)``, ``(C, H, W)`` and ``(1, C, H, W)``; channels are summed, since
    relevance is additive. A vector of length ``n*n`` is reshaped to ``(n, n)``.
    """
    if isinstance(relevance, torch.Tensor):
        relevance = relevance.detach().cpu().double().numpy()
    array = np.asarray(relevance, dtype=np.float64)
    if array.ndim == 4:
        if array.shape[0] != 1:
            raise ValueError(f"to_map got a batch of {array.shape[0]} maps; pass one at a time")
        array = array[0]
    if array.ndim == 3:
        array = array.sum(axis=0)
    if array.ndim == 1:
        side = int(round(np.sqrt(array.size)))
        if side * side != array.size:
            raise ValueError(f"cannot display a vector of length {array.size} as a square image")
        array = array.reshape(side, side)
    if array.ndim != 2:
        raise ValueError(f"cannot display relevance of shape {np.shape(relevance)} as an image")
    return array


def symmetric_limit(*maps: Any, percentile: float = 100.0) -> float:
    """The colour limit ``vmax`` shared by ``maps``: the given percentile of ``|R|``.

    Returns 1.0 when every value is zero, so that an all-zero map is drawn white.
    """
    values = np.concatenate([np.abs(to_map(m)).ravel() for m in maps])
    limit = float(np.percentile(values, percentile)) if values.size else 0.0
    return limit if limit > 0 else 1.0


def heatmap(
    relevance: Any,
    ax: Axes | None = None,
    *,
    title: str | None = None,
    colorbar: bool = True,
    vmax: float | None = None,
    percentile: float = 100.0,
) -> Axes:
    """Draw a relevance map with zero at the centre of the colour scale.

    Parameters
    ----------
    relevance : tensor or array
        ``(H, W)``, ``(C, H, W)`` or ``(1, C, H, W)``; channels are summed.
    ax : matplotlib Axes, optional
        Where to draw; a new figure is made when omitted.
    title : str, optional
        Axes title.
    colorbar : bool
        Add a colour bar labelled "relevance".
    vmax : float, optional
        Colour limit; the scale is ``[-vmax, vmax]``. Defaults to the ``percentile`` of |R|.
    percentile : float
        Used when ``vmax`` is None; values beyond it saturate (e.g. 99.5 for noisy maps).

    Returns
    -------
    matplotlib Axes
    """
    array = to_map(relevance)
    if ax is None:
        _, ax = plt.subplots(figsize=(3.2, 3.0))
    limit = vmax if vmax is not None else symmetric_limit(array, percentile=percentile)
    image = ax.imshow(array, cmap=CMAP, vmin=-limit, vmax=limit, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=10)
    if colorbar:
        bar = ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
        bar.set_label("relevance")
    return ax


def overlay(
    image: Any,
    relevance: Any,
    ax: Axes | None = None,
    *,
    title: str | None = None,
    alpha: float = 0.7,
    vmax: float | None = None,
    colorbar: bool = False,
) -> Axes:
    """Draw a relevance map over a grey-scale version of the input image.

    The image is shown in grey; the heatmap is drawn on top with an opacity that grows with
    ``|R|``, so irrelevant pixels show the input and relevant ones show their colour.
    """
    img = to_map(image)
    rel = to_map(relevance)
    if img.shape != rel.shape:
        raise ValueError(f"image {img.shape} and relevance {rel.shape} must have the same size")
    if ax is None:
        _, ax = plt.subplots(figsize=(3.2, 3.0))
    lo, hi = float(img.min()), float(img.max())
    ax.imshow(img, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1, interpolation="nearest")
    limit = vmax if vmax is not None else symmetric_limit(rel)
    rgba = CMAP((np.clip(rel / limit, -1, 1) + 1) / 2)
    rgba[..., 3] = alpha * np.clip(np.abs(rel) / limit, 0, 1)
    ax.imshow(rgba, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=10)
    if colorbar:
        mappable = plt.cm.ScalarMappable(cmap=CMAP, norm=plt.Normalize(-limit, limit))
        ax.figure.colorbar(mappable, ax=ax, fraction=0.046, pad=0.04).set_label("relevance")
    return ax


def _as_rows(maps: Any) -> list[list[Any]]:
    if isinstance(maps, torch.Tensor | np.ndarray):
        if maps.ndim < 3:
            raise ValueError("grid expects maps of shape [rows, cols, H, W] or a nested list")
        return [list(row) for row in maps]
    rows = [list(row) for row in maps]
    if not rows or not all(rows):
        raise ValueError("grid needs at least one row and one column of maps")
    return rows


def grid(
    maps: Any,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    *,
    scale: str = "row",
    images: Sequence[Any] | None = None,
    image_label: str = "input",
    cell_size: float = 1.6,
    percentile: float = 100.0,
    colorbar: bool = True,
    title: str | None = None,
) -> Figure:
    """A labelled grid of heatmaps, e.g. rows = inputs, columns = methods.

    Parameters
    ----------
    maps : nested list or tensor ``[rows, cols, H, W]``
        The relevance maps (``None`` entries are left blank).
    row_labels, col_labels : sequence of str, optional
        Labels written left of each row and above each column.
    scale : {"row", "cell", "all"}
        Colour scale shared by each row (default: compare methods on one input), by each cell
        alone, or by the whole grid.
    images : sequence, optional
        One input image per row, drawn in grey in an extra first column.
    image_label : str
        Title of that extra column.
    cell_size : float
        Size of one cell in inches.
    percentile : float
        Percentile of |R| that sets each scale's limit.
    colorbar : bool
        Add one colour bar per row (``scale="row"``) or one for the grid (``scale="all"``).
    title : str, optional
        Figure title.
    """
    if scale not in {"row", "cell", "all"}:
        raise ValueError(f"scale must be 'row', 'cell' or 'all', got {scale!r}")
    rows = _as_rows(maps)
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    if row_labels is not None and len(row_labels) != n_rows:
        raise ValueError(f"{len(row_labels)} row labels for {n_rows} rows")
    if col_labels is not None and len(col_labels) != n_cols:
        raise ValueError(f"{len(col_labels)} column labels for {n_cols} columns")
    if images is not None and len(images) != n_rows:
        raise ValueError(f"{len(images)} images for {n_rows} rows")
    offset = 1 if images is not None else 0
    fig, axes = plt.subplots(
        n_rows,
        n_cols + offset,
        figsize=(
            cell_size * (n_cols + offset) + (0.8 if colorbar else 0.3),
            cell_size * n_rows + 0.4,
        ),
        squeeze=False,
    )
    present = [m for row in rows for m in row if m is not None]
    global_limit = symmetric_limit(*present, percentile=percentile) if present else 1.0
    for i, row in enumerate(rows):
        row_present = [m for m in row if m is not None]
        row_limit = symmetric_limit(*row_present, percentile=percentile) if row_present else 1.0
        if images is not None:
            axes[i, 0].imshow(to_map(images[i]), cmap="gray", interpolation="nearest")
            axes[i, 0].set_xticks([])
            axes[i, 0].set_yticks([])
            if i == 0:
                axes[i, 0].set_title(image_label, fontsize=9)
        for j in range(n_cols):
            ax = axes[i, j + offset]
            ax.set_xticks([])
            ax.set_yticks([])
            m = row[j] if j < len(row) else None
            if m is None:
                ax.axis("off")
                continue
            limit = {"row": row_limit, "all": global_limit}.get(scale)
            heatmap(m, ax=ax, colorbar=False, vmax=limit, percentile=percentile)
            if i == 0 and col_labels is not None:
                ax.set_title(col_labels[j], fontsize=9)
        if row_labels is not None:
            axes[i, 0].set_ylabel(row_labels[i], fontsize=9)
        if colorbar and scale == "row":
            mappable = plt.cm.ScalarMappable(cmap=CMAP, norm=plt.Normalize(-row_limit, row_limit))
            fig.colorbar(mappable, ax=list(axes[i]), fraction=0.02, pad=0.01)
    if colorbar and scale == "all":
        mappable = plt.cm.ScalarMappable(cmap=CMAP, norm=plt.Normalize(-global_limit, global_limit))
        fig.colorbar(mappable, ax=axes.ravel().tolist(), fraction=0.02, pad=0.01).set_label(
            "relevance"
        )
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


class _HTML:
    """Minimal rich-display object (works without IPython installed)."""

    def __init__(self, data: str) -> None:
        self.data = data

    def _repr_html_(self) -> str:
        return self.data

    def __str__(self) -> str:
        return self.data


def relative_luminance(rgb: Sequence[float]) -> float:
    r"""Relative luminance of an sRGB colour with channels in ``[0, 1]`` (WCAG 2).

    .. math:: L = 0.2126\,R + 0.7152\,G + 0.0722\,B, \qquad
              C = \begin{cases} c / 12.92 & c \le 0.04045 \\
              ((c + 0.055) / 1.055)^{2.4} & \text{otherwise} \end{cases}

    for each linearized channel :math:`C` of the gamma-encoded value :math:`c`.
    """
    lin = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb[:3]]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def contrast_ratio(a: Sequence[float], b: Sequence[float]) -> float:
    r"""WCAG 2 contrast ratio :math:`(L_1 + 0.05) / (L_2 + 0.05)` of two sRGB colours,
    :math:`L_1 \ge L_2` their relative luminances (1 to 21; body text needs at least 4.5)."""
    hi, lo = sorted((relative_luminance(a), relative_luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def text_colour(background: Sequence[float]) -> tuple[float, float, float]:
    """Black or white, whichever contrasts more with ``background`` (sRGB in ``[0, 1]``)."""
    black, white = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    return black if contrast_ratio(background, black) >= contrast_ratio(background, white) \
        else white


def words_html(
    tokens: Sequence[str],
    relevances: Any,
    *,
    vmax: float | None = None,
    show_values: bool = False,
) -> _HTML:
    """Colour each word by its relevance (red positive, blue negative, white zero).

    The text of each word is black or white, whichever contrasts more with its background
    (:func:`text_colour`), so that dark red and dark blue words stay readable.

    Parameters
    ----------
    tokens : sequence of str
        The words, in order.
    relevances : sequence of float or tensor
        One relevance per word.
    vmax : float, optional
        Relevance that gets the full colour; defaults to ``max |R|``.
    show_values : bool
        Write each word's relevance under it as a tooltip and in small print.

    Returns
    -------
    An object with ``_repr_html_`` that notebooks display as coloured text; ``str()`` gives
    the HTML.
    """
    if isinstance(relevances, torch.Tensor):
        relevances = relevances.detach().cpu().double().tolist()
    values = [float(v) for v in relevances]
    if len(values) != len(tokens):
        raise ValueError(f"{len(tokens)} tokens but {len(values)} relevances")
    limit = vmax if vmax is not None else (max((abs(v) for v in values), default=0.0) or 1.0)
    spans = []
    for token, value in zip(tokens, values, strict=True):
        r, g, b, _ = CMAP(0.5 + 0.5 * float(np.clip(value / limit, -1, 1)))
        background = (int(255 * r), int(255 * g), int(255 * b))
        colour = "rgb({},{},{})".format(*background)
        ink = "black" if text_colour([c / 255 for c in background])[0] == 0.0 else "white"
        text = html.escape(str(token))
        extra = f"<sub style='font-size:0.6em'>{value:+.2f}</sub>" if show_values else ""
        spans.append(
            f"<span title='{value:+.4f}' style='background-color:{colour};padding:1px 3px;"
            f"margin:1px;border-radius:3px;color:{ink}'>{text}{extra}</span>"
        )
    return _HTML(
        "<div style='line-height:1.9;font-family:sans-serif'>" + " ".join(spans) + "</div>"
    )


# --------------------------------------------------------------------------- figures of chapter 8


def _luminance(image: Any) -> np.ndarray:
    """The ``(H, W)`` luminance ``0.299 R + 0.587 G + 0.114 B`` of a ``(3, H, W)`` image."""
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().double().numpy()
    array = np.asarray(image, dtype=np.float64)
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim == 2:
        return array
    if array.ndim == 3 and array.shape[0] in (1, 3):
        array = np.moveaxis(array, 0, -1)
    if array.ndim != 3 or array.shape[-1] not in (1, 3):
        raise ValueError(f"image must have shape (3, H, W) or (H, W); got {np.shape(image)}")
    if array.shape[-1] == 1:
        return array[..., 0]
    return array @ np.array([0.299, 0.587, 0.114])


def _pooled(relevance: Any, pooling: str) -> np.ndarray:
    """Channel-pool ``(C, H, W)`` (or ``(1, C, H, W)``) relevance, or pool an ``(H, W)`` map
    as one channel, with :func:`lrp_teach.evaluation.pool` (in the relevance's precision)."""
    from .evaluation import pool

    r = torch.as_tensor(relevance).detach().cpu()
    if not r.is_floating_point():
        r = r.double()
    if r.dim() == 4 and r.shape[0] == 1:
        r = r[0]
    if r.dim() not in (2, 3):
        raise ValueError(f"relevance must have shape (C, H, W) or (H, W); got {tuple(r.shape)}")
    return pool(r[None], pooling)[0].numpy()


#: Sequential colormap of :func:`scene_overlay`: the bright part of matplotlib's "hot"
#: (dark red - red - orange - yellow), which stands out on a grey scene.
HEAT = LinearSegmentedColormap.from_list("heat", plt.get_cmap("hot")(np.linspace(0.2, 0.92, 256)))


def scene_overlay(
    ax: Axes,
    image: Any,
    relevance: Any,
    *,
    pooling: str = "sum,pos",
    vmax: float | None = None,
    colorbar: bool = True,
    title: str | None = None,
    alpha: float = 0.9,
    cmap: Any = None,
) -> Axes:
    """Draw pooled relevance over a grey-scale scene, in the style of CLEVR-XAI.

    The scene is shown by its luminance in grey; the channel-pooled relevance (one
    non-negative value per pixel, :func:`lrp_teach.evaluation.pool`) is drawn on top with a
    sequential colormap whose opacity grows with the value: zero is transparent and shows the
    scene, ``vmax`` is drawn at opacity ``alpha``. One sees which object lights up.

    Parameters
    ----------
    ax : matplotlib Axes
        Where to draw.
    image : tensor or array
        ``(3, H, W)`` scene in ``[0, 1]`` (``(1, 3, H, W)`` and ``(H, W)`` are accepted).
    relevance : tensor or array
        ``(C, H, W)`` pixel relevance, pooled over channels with ``pooling``, or an
        ``(H, W)`` map (e.g. Grad-CAM), pooled as one channel.
    pooling : str
        One of :data:`lrp_teach.evaluation.POOLINGS`.
    vmax : float, optional
        Value drawn with the full colour and opacity; defaults to the map's maximum.
    colorbar : bool
        Add a colour bar labelled with the pooling.
    title : str, optional
        Axes title.
    alpha : float
        Opacity at ``vmax``.
    cmap : colormap or str, optional
        Sequential colormap; defaults to :data:`HEAT`.

    Returns
    -------
    matplotlib Axes
        ``ax``; ``ax.images[0]`` is the scene, ``ax.images[1]`` (absent for an all-zero map)
        the pooled relevance, whose ``get_array()`` is the pooled map.
    """
    grey = _luminance(image)
    heat = _pooled(relevance, pooling)
    if heat.shape != grey.shape:
        raise ValueError(f"image {grey.shape} and relevance {heat.shape} must have the same size")
    cmap = HEAT if cmap is None else plt.get_cmap(cmap)
    ax.imshow(grey, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    top = float(heat.max()) if heat.size else 0.0
    limit = float(vmax) if vmax is not None and vmax > 0 else top
    norm = plt.Normalize(0.0, limit if limit > 0 else 1.0)
    if limit > 0 and top > 0:
        opacity = alpha * np.clip(heat / limit, 0.0, 1.0)
        ax.imshow(heat, cmap=cmap, norm=norm, alpha=opacity, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=10)
    if colorbar:
        mappable = plt.cm.ScalarMappable(cmap=cmap, norm=norm)
        bar = ax.figure.colorbar(mappable, ax=ax, fraction=0.046, pad=0.03)
        bar.set_label(pooling, fontsize=7, labelpad=2)
        bar.ax.tick_params(labelsize=7)
        ticks = [0.0, norm.vmax / 2, norm.vmax]
        bar.set_ticks(ticks)
        bar.ax.set_yticklabels(["0"] + [f"{t:.2g}" for t in ticks[1:]])
    return ax


def plot_question(ax, words: list[str], relevance, *, vmax: float | None = None,
                  y: float = 0.5, fontsize: int = 9, colorbar: bool = False) -> list:
    """Write ``words`` on ``ax`` as boxes coloured by ``relevance`` (red +, blue -).

    The colour scale is :data:`lrp_teach.plot.CMAP` on ``[-vmax, vmax]`` (default
    ``max |R|``), the colours of :func:`lrp_teach.plot.words_html`, for a static figure. The
    text of each box is black or white, whichever contrasts more with the box
    (:func:`text_colour`). Words that would run past the right edge of ``ax`` go onto a new
    line; the block of lines is centred vertically at ``y`` (axes coordinates).

    Parameters
    ----------
    ax : matplotlib Axes
        Where to write; its axis is switched off.
    words : list of str
        The question's words.
    relevance : sequence of float or tensor
        One relevance per word (further values, e.g. padding, are ignored).
    vmax : float, optional
        Relevance that gets the full colour; defaults to ``max |R|``.
    y : float
        Vertical centre of the text block in axes coordinates.
    fontsize : int
        Font size of the words.
    colorbar : bool
        Add a small horizontal colour bar for the words' scale at the bottom of ``ax``.

    Returns
    -------
    list of matplotlib Text
        One per word, in order.
    """
    values = [float(v) for v in torch.as_tensor(relevance).reshape(-1)[:len(words)]]
    if len(values) != len(words):
        raise ValueError(f"{len(words)} words but {len(values)} relevances")
    limit = vmax or max(max((abs(v) for v in values), default=0.0), 1e-12)
    ax.set_axis_off()
    figure = ax.figure
    renderer = figure.canvas.get_renderer()
    to_axes = ax.transAxes.inverted()
    pad = 0.25 * fontsize * figure.dpi / 72  # the box's padding, in pixels
    box_w, box_h = to_axes.transform((2 * pad, 2 * pad)) - to_axes.transform((0, 0))
    gap = box_w + 0.4 * box_w  # between two boxes: both paddings and a little space
    texts, rows, x, line_height = [], [[]], 0.0, 0.0
    for word, value in zip(words, values, strict=True):
        colour = CMAP(0.5 + 0.5 * max(-1.0, min(1.0, value / limit)))
        text = ax.text(0.0, y, word, transform=ax.transAxes, fontsize=fontsize, va="center",
                       color=text_colour(colour[:3]),
                       bbox={"boxstyle": "round,pad=0.25", "fc": colour, "ec": "none"})
        extent = text.get_window_extent(renderer=renderer).transformed(to_axes)
        line_height = max(line_height, extent.height + box_h)
        if rows[-1] and x + extent.width > 1.0:
            rows.append([])
            x = 0.0
        rows[-1].append((text, x))
        texts.append(text)
        x += extent.width + gap
    step = 1.25 * line_height
    first = y + step * (len(rows) - 1) / 2
    for k, row in enumerate(rows):
        for text, left in row:
            text.set_position((left + box_w / 2, first - k * step))
    if colorbar:
        cax = ax.inset_axes([0.3, 0.04, 0.4, 0.05])
        mappable = plt.cm.ScalarMappable(cmap=CMAP, norm=plt.Normalize(-limit, limit))
        bar = figure.colorbar(mappable, cax=cax, orientation="horizontal")
        bar.set_label("word relevance", fontsize=7, labelpad=1)
        bar.ax.tick_params(labelsize=6, length=2, pad=1)
        bar.set_ticks([-limit, 0.0, limit])
        bar.ax.set_xticklabels([f"{-limit:.2g}", "0", f"{limit:.2g}"])
    return texts


def _cell_centre(index: int, grid: int, cell: int) -> tuple[float, float]:
    """``(x, y)`` pixel coordinates of the centre of grid cell ``index`` (row-major)."""
    row, col = divmod(index, grid)
    centre = (cell - 1) / 2
    return col * cell + centre, row * cell + centre


def draw_pairs(ax, pair_relevance: torch.Tensor, top: int = 3, colour: str = "black", *,
               symmetric: bool = False, labels: bool = True) -> list[tuple[int, int, float]]:
    """Draw the ``top`` most relevant pairs ``(i, j)``, ``i != j``, as lines between cells.

    ``pair_relevance`` is one question's ``(N, N)`` map (:attr:`VQARelevance.pairs`) over the
    ``N = 16`` cells of the ``4 x 4`` grid of a ``48 x 48`` image axes. Line widths are
    proportional to the pair's relevance relative to the most relevant one,
    ``max(0.5, 0.5 + 3 R / R_max)`` points, so the most relevant pair gets the widest line.

    Parameters
    ----------
    ax : matplotlib Axes
        An axes showing the image in pixel coordinates (e.g. after ``imshow``).
    pair_relevance : tensor
        ``(N, N)`` relevance of the ordered pairs ``(i, j)``.
    top : int
        Number of pairs to draw.
    colour : str
        Colour of the lines.
    symmetric : bool
        Rank unordered pairs ``{i, j}`` by ``R_ij + R_ji`` instead of ordered pairs; with
        ordered pairs both ``(i, j)`` and ``(j, i)`` may be drawn (their labels differ in
        place: each sits a third of the way from the pair's first cell).
    labels : bool
        Write the rank (1 = most relevant) in a small circle on each line.

    Returns
    -------
    list of (int, int, float)
        The drawn pairs ``(i, j, R)``, most relevant first.
    """
    from .datasets.clevr_lite import CELL

    r = torch.as_tensor(pair_relevance).detach().cpu().clone().double()
    n = r.shape[0]
    grid = int(round(n ** 0.5))
    if symmetric:
        r = r + r.T
        r = r.masked_fill(~torch.ones(n, n, dtype=torch.bool).triu(1), -float("inf"))
        available = n * (n - 1) // 2
    else:
        r.fill_diagonal_(-float("inf"))
        available = n * (n - 1)
    k = max(0, min(int(top), available))
    best = r.flatten().topk(k)
    pairs = [(*divmod(int(f), n), float(v)) for f, v in zip(best.indices, best.values,
                                                            strict=True)]
    scale = max((abs(v) for *_, v in pairs), default=0.0) or 1.0
    for rank, (i, j, value) in enumerate(pairs, start=1):
        (xi, yi), (xj, yj) = _cell_centre(i, grid, CELL), _cell_centre(j, grid, CELL)
        width = max(0.5, 0.5 + 3.0 * value / scale)
        ax.plot([xi, xj], [yi, yj], color=colour, lw=width, alpha=0.8, solid_capstyle="round",
                marker="o", ms=3 + width / 2, zorder=3)
        if labels:
            t = 0.5 if symmetric else 1 / 3
            ax.text(xi + t * (xj - xi), yi + t * (yj - yi), str(rank), fontsize=6,
                    ha="center", va="center", color="black", zorder=4,
                    bbox={"boxstyle": "circle,pad=0.15", "fc": "white", "ec": colour, "lw": 0.8})
    return pairs


def question_figure(
    image: Any,
    words: list[str],
    pixel_relevance: Any,
    word_relevance: Any,
    pair_relevance: Any = None,
    *,
    title: str | None = None,
    pooling: str = "sum,pos",
    answer: str | None = None,
) -> Figure:
    """One question at a glance: the scene, its pooled relevance and the coloured question.

    Three panels: the scene in colour; :func:`scene_overlay` of ``pixel_relevance`` with its
    colour bar (and, when ``pair_relevance`` is given, the three most relevant unordered cell
    pairs by :func:`draw_pairs` with ``symmetric=True``); and the question by
    :func:`plot_question`, wrapped, with its word colour bar and the ``answer`` under it.

    Parameters
    ----------
    image : tensor or array
        ``(3, 48, 48)`` scene in ``[0, 1]``.
    words : list of str
        The question's words.
    pixel_relevance : tensor or array
        ``(3, 48, 48)`` (or ``(48, 48)``) pixel relevance.
    word_relevance : sequence of float or tensor
        One relevance per word.
    pair_relevance : tensor, optional
        ``(16, 16)`` relevance of the object pairs.
    title : str, optional
        Figure title.
    pooling : str
        Channel pooling of the overlay (:func:`lrp_teach.evaluation.pool`).
    answer : str, optional
        Written under the question.

    Returns
    -------
    matplotlib Figure
    """
    figure = plt.figure(figsize=(9.0, 3.0))
    top = 0.86 if title else 0.92
    spec = figure.add_gridspec(1, 3, width_ratios=[1.0, 1.12, 1.4], left=0.02, right=0.98,
                               bottom=0.06, top=top, wspace=0.3)
    scene_ax, heat_ax, text_ax = (figure.add_subplot(spec[0, k]) for k in range(3))
    colour = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else image
    colour = np.asarray(colour, dtype=np.float64)
    scene_ax.imshow(np.clip(np.moveaxis(colour, 0, -1), 0, 1), interpolation="nearest")
    scene_ax.set_xticks([])
    scene_ax.set_yticks([])
    scene_ax.set_title("scene", fontsize=10)
    scene_overlay(heat_ax, image, pixel_relevance, pooling=pooling,
                  title="pixel relevance" + (" and top pairs" if pair_relevance is not None
                                             else ""))
    if pair_relevance is not None:
        draw_pairs(heat_ax, torch.as_tensor(pair_relevance), top=3, colour="#00b4ff",
                   symmetric=True)
    text_ax.set_title("question (word relevance)", fontsize=10)
    plot_question(text_ax, list(words), word_relevance, y=0.62, fontsize=10, colorbar=True)
    if answer is not None:
        text_ax.text(0.5, 0.25, f"answer: {answer}", transform=text_ax.transAxes,
                     ha="center", va="center", fontsize=10, fontweight="bold")
    if title:
        figure.suptitle(title, fontsize=11)
    return figure


def draw_architecture(ax, pair_geometry: bool = False) -> None:
    """Draw the relation network's anatomy as a block diagram on ``ax``.

    With ``pair_geometry``, ``g`` also reads each pair's geometry ``c_ij``.
    """
    boxes = {
        "image": ("image\n3 x 48 x 48", 0.04, 0.75),
        "cnn": ("CNN\n3 x (conv, BN, ReLU)", 0.21, 0.75),
        "objects": ("objects o_i: 16 cells\n24 features + 2 coords", 0.44, 0.75),
        "words": ("question\nwords", 0.04, 0.2),
        "lstm": ("Embedding\n+ LSTM", 0.21, 0.2),
        "q": ("q\n64 units", 0.44, 0.2),
        "g": (("g(o_i, o_j, q, c_ij)" if pair_geometry else "g(o_i, o_j, q)")
              + "\nall 16 x 16 pairs", 0.66, 0.48),
        "sum": ("sum / N", 0.82, 0.48),
        "f": ("f\nanswer logits", 0.95, 0.48),
    }
    artists = {}
    for key, (text, x, y) in boxes.items():
        artists[key] = ax.text(x, y, text, ha="center", va="center", fontsize=8,
                               transform=ax.transAxes,
                               bbox={"boxstyle": "round,pad=0.4", "fc": "#e8eef7", "ec": "#335"})
    edges = [("image", "cnn"), ("cnn", "objects"), ("words", "lstm"), ("lstm", "q"),
             ("objects", "g"), ("q", "g"), ("g", "sum"), ("sum", "f")]
    for a, b in edges:
        ax.annotate("", xy=(0.0, 0.5), xycoords=artists[b], xytext=(1.0, 0.5),
                    textcoords=artists[a],
                    arrowprops={"arrowstyle": "->", "color": "#335", "shrinkA": 4, "shrinkB": 4})
    ax.set_axis_off()
