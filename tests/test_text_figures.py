"""datanet_lab.text_figures: the HTML heatmap escapes text and shows every token on the shared
diverging scale; the paper figure merges wordpieces and carries its labelled colorbar."""

from __future__ import annotations

import html
import re

import matplotlib
import numpy as np
import pytest
from matplotlib import colormaps
from matplotlib.colors import to_hex

matplotlib.use("Agg")

from datanet_lab.figures import save  # noqa: E402
from datanet_lab.text_figures import COLORBAR_LABEL, merge_wordpieces, token_heatmap, token_html  # noqa: E402

TOKENS = [["[CLS]", "<script>", "alert", "(", "'", "x", "'", ")", "&", "qu", "##ater", "##nion", "[SEP]"],
          ["[CLS]", "plot", "\"y\"", "versus", "x", "[SEP]"]]
VALUES = [np.array([0.0, 0.5, -0.25, 0.1, 0.0, 2.0, 0.0, -0.1, 0.3, 0.2, -0.4, 0.1, 0.0]),
          np.array([0.0, -1.0, 0.25, 0.5, -0.05, 0.0])]


def test_html_escapes_every_token_and_title():
    page = token_html(TOKENS, VALUES, titles=["<b>sample 0</b>", "sample & 1"])
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "<b>sample" not in page and "&lt;b&gt;sample 0&lt;/b&gt;" in page and "sample &amp; 1" in page
    titles = re.findall(r'title="([^"]*)"', page)
    shown = re.findall(r">([^<>]*)</span>", page)
    for row, values in zip(TOKENS, VALUES):
        for token, value in zip(row, values):  # each token, as text and in its hover title with its value
            assert f"{html.escape(token)}: {value:+.4g}" in titles
            assert html.escape(token.removeprefix("##")) in shown
    assert len(titles) == sum(len(row) for row in TOKENS)


def test_html_colours_sign_on_one_scale_with_a_legend():
    page = token_html(TOKENS, VALUES)
    cmap = colormaps["RdBu_r"]
    assert "red</span> = pushed towards the target class" in page and "blue</span> = against" in page
    assert "±2 logit units" in page  # the largest |attribution| of all rows sets the scale
    assert f'title="x: +2" style="background:{to_hex(cmap(1.0))}' in page  # the peak is the darkest red
    assert f'title="plot: -1" style="background:{to_hex(cmap(0.25))}' in page  # half the peak, blue side
    assert f'title="[CLS]: +0" style="background:{to_hex(cmap(0.5))}' in page
    assert '</span><span title="##ater' in page  # a continuation piece is glued to its word


def test_wordpieces_merge_into_words_keeping_their_total():
    words, sums = merge_wordpieces(TOKENS[0], VALUES[0])
    assert words == ["[CLS]", "<script>", "alert", "(", "'", "x", "'", ")", "&", "quaternion", "[SEP]"]
    np.testing.assert_allclose(sums[-2], 0.2 - 0.4 + 0.1)
    assert sums.sum() == pytest.approx(VALUES[0].sum())
    assert merge_wordpieces(["##x", "##", "##y"], np.array([1.0, 2.0, 3.0]))[0] == ["##x", "##y"]  # a leading piece stays


def test_the_figure_builds_with_its_colorbar(tmp_path):
    fig = token_heatmap(TOKENS, VALUES, titles=["test 0: predicted numpy", "test 1: predicted pandas"], width_chars=20)
    text_ax, bar_ax = fig.axes
    assert bar_ax.get_xlabel() == COLORBAR_LABEL == "attribution to the predicted class (logit units)"
    assert bar_ax.get_xlim() == (-2.0, 2.0)
    shown = [t.get_text() for t in text_ax.texts]
    assert shown[:2] == ["[CLS]", "<script>"] and "quaternion" in shown and "qu" not in shown
    assert "test 1: predicted pandas" in shown
    assert save(fig, tmp_path, "tokens").stat().st_size > 1000
    matplotlib.pyplot.close(fig)


@pytest.mark.parametrize(("tokens", "values", "message"), [
    (TOKENS, VALUES[:1], "need one attribution row per token row"),
    ([["a", "b"]], [np.zeros(3)], r"row 0: 2 tokens but attributions of shape \(3,\)"),
    ([["a"]], [np.array([np.nan])], "row 0: attributions hold NaN"),
])
def test_bad_rows_are_refused(tokens, values, message):
    for draw in (token_html, token_heatmap):
        with pytest.raises(ValueError, match=message):
            draw(tokens, values)
