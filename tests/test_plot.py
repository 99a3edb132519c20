import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch

import lrp_teach as lt


def test_colormap_is_white_at_zero_red_positive_blue_negative():
    r, g, b, _ = lt.plot.CMAP(0.5)
    assert min(r, g, b) > 0.95  # white centre
    r, g, b, _ = lt.plot.CMAP(1.0)
    assert r > g and r > b  # red for positive
    r, g, b, _ = lt.plot.CMAP(0.0)
    assert b > r and b > g  # blue for negative


def test_heatmap_scale_is_symmetric_and_centred():
    R = torch.tensor([[0.0, 2.0], [-0.5, 0.1]])
    ax = lt.plot.heatmap(R, colorbar=False)
    image = ax.get_images()[0]
    assert image.get_clim() == (-2.0, 2.0)
    assert np.allclose(image.get_array(), R.numpy())


def test_to_map_sums_channels_and_reshapes_vectors():
    R = torch.arange(12.0).view(1, 3, 2, 2)
    assert np.allclose(lt.plot.to_map(R), R[0].sum(0).numpy())
    assert lt.plot.to_map(torch.ones(64)).shape == (8, 8)
    with pytest.raises(ValueError, match="square"):
        lt.plot.to_map(torch.ones(10))
    with pytest.raises(ValueError, match="batch"):
        lt.plot.to_map(torch.ones(2, 1, 4, 4))


def test_all_zero_map_draws_white():
    ax = lt.plot.heatmap(torch.zeros(3, 3), colorbar=False)
    assert ax.get_images()[0].get_clim() == (-1.0, 1.0)


def test_grid_labels_and_shared_row_scale():
    maps = [[torch.ones(4, 4), -3 * torch.ones(4, 4)], [torch.zeros(4, 4), 0.5 * torch.ones(4, 4)]]
    fig = lt.plot.grid(maps, ["a", "b"], ["m1", "m2"], images=[torch.rand(4, 4)] * 2)
    axes = fig.axes
    assert axes[0].get_title() == "input" and axes[1].get_title() == "m1"
    assert axes[0].get_ylabel() == "a" and axes[3].get_ylabel() == "b"
    assert axes[1].get_images()[0].get_clim() == (-3.0, 3.0)  # row 1 shares |R|max = 3
    assert axes[4].get_images()[0].get_clim() == (-0.5, 0.5)
    with pytest.raises(ValueError, match="row labels"):
        lt.plot.grid(maps, ["only one"], ["m1", "m2"])


def test_overlay_requires_matching_shapes():
    with pytest.raises(ValueError, match="same size"):
        lt.plot.overlay(torch.rand(4, 4), torch.rand(5, 5))
    ax = lt.plot.overlay(torch.rand(4, 4), torch.randn(4, 4))
    assert len(ax.get_images()) == 2


def test_words_html_colours_and_escapes():
    html = str(lt.plot.words_html(["not", "<good>"], torch.tensor([-1.0, 1.0])))
    assert "&lt;good&gt;" in html and "<good>" not in html
    assert "title='-1.0000'" in html and "title='+1.0000'" in html
    with pytest.raises(ValueError, match="2 tokens but 1"):
        lt.plot.words_html(["a", "b"], [1.0])


def test_contrast_ratio_matches_wcag_reference_values():
    # WCAG 2: black on white is 21:1, a colour with itself 1:1; mid grey #777 on white ~4.48
    assert lt.plot.contrast_ratio((0, 0, 0), (1, 1, 1)) == pytest.approx(21.0)
    assert lt.plot.contrast_ratio((0.3, 0.5, 0.2), (0.3, 0.5, 0.2)) == pytest.approx(1.0)
    grey = 0x77 / 255
    assert lt.plot.contrast_ratio((grey,) * 3, (1, 1, 1)) == pytest.approx(4.48, abs=0.01)
    assert lt.plot.relative_luminance((1, 0, 0)) == pytest.approx(0.2126)


def test_word_heatmap_text_is_readable_on_every_background():
    import re

    # every colour of the map, including the darkest red and blue, with the chosen text colour
    values = torch.linspace(-1, 1, 41)
    html = str(lt.plot.words_html([f"w{k}" for k in range(41)], values))
    styles = re.findall(r"background-color:rgb\((\d+),(\d+),(\d+)\);[^']*color:(black|white)",
                        html)
    assert len(styles) == 41
    worst = min(lt.plot.contrast_ratio([int(c) / 255 for c in rgb],
                                       (0, 0, 0) if ink == "black" else (1, 1, 1))
                for *rgb, ink in styles)
    assert worst >= 4.5
    inks = {ink for *_, ink in styles}
    assert inks == {"black", "white"}  # dark ends get white text, light middle black
    # the top word of a heatmap (full red) is white on dark red
    top = str(lt.plot.words_html(["top", "low"], torch.tensor([1.0, 0.1])))
    assert re.search(r"color:white'>top", top) and re.search(r"color:black'>low", top)
