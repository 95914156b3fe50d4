"""Token attribution heatmaps: HTML for the notebook, a matplotlib figure for a paper.

Both colour each token by its signed attribution on one diverging scale shared by all rows
(``RdBu_r``, symmetric about 0): red = the token pushed the target logit up (towards the class),
blue = against. Inputs are per-sample token strings (e.g. ``tokenizer.convert_ids_to_tokens`` over
a sample's real length) and their ``(length,)`` attributions, such as
:meth:`attribution.TokenAttributions.sample` gives.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize, to_hex
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

CMAP = "RdBu_r"
CONTINUATION = "##"
"""WordPiece's prefix of a piece that continues the previous one."""
COLORBAR_LABEL = "attribution to the predicted class (logit units)"
CHAR_WIDTH = 0.602
"""Advance width of a DejaVu Sans Mono character, in em: lays the figure's cells out exactly."""


def _checked(tokens: Sequence[Sequence[str]], attributions: Sequence[np.ndarray],
             titles: Sequence[str] | None) -> list[np.ndarray]:
    values = [np.asarray(a, dtype=np.float64) for a in attributions]
    if len(tokens) != len(values) or not tokens:
        raise ValueError(f"need one attribution row per token row (at least one), got {len(tokens)} and {len(values)}")
    for i, (row, a) in enumerate(zip(tokens, values)):
        if a.shape != (len(row),):
            raise ValueError(f"row {i}: {len(row)} tokens but attributions of shape {a.shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"row {i}: attributions hold NaN or infinite values")
    if titles is not None and len(titles) != len(tokens):
        raise ValueError(f"{len(titles)} titles for {len(tokens)} rows")
    return values


def _limit(values: list[np.ndarray]) -> float:
    """The colour scale's half-range: the largest |attribution| (1 when all are 0)."""
    peak = max(float(np.abs(a).max(initial=0.0)) for a in values)
    return peak if peak > 0 else 1.0


def merge_wordpieces(tokens: Sequence[str], attributions: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Words from WordPiece tokens (``"token", "##izer"`` -> ``"tokenizer"``) with their pieces'
    attributions summed (attributions are additive, so a word's total is kept)."""
    words: list[str] = []
    sums: list[float] = []
    for token, value in zip(tokens, np.asarray(attributions, dtype=np.float64)):
        if token.startswith(CONTINUATION) and len(token) > len(CONTINUATION) and words:
            words[-1] += token[len(CONTINUATION):]
            sums[-1] += value
        else:
            words.append(token)
            sums.append(value)
    return words, np.array(sums)


def token_html(tokens: Sequence[Sequence[str]], attributions: Sequence[np.ndarray],
               titles: Sequence[str] | None = None) -> str:
    """An HTML block: a legend line, then per sample its (optional) title and its tokens, each on
    its colour with its value on hover. Continuation pieces are joined to the previous piece (their
    ``##`` in the hover text). Every string is HTML-escaped."""
    values = _checked(tokens, attributions, titles)
    limit = _limit(values)
    norm, cmap = Normalize(-limit, limit), colormaps[CMAP]
    red, blue = to_hex(cmap(norm(limit))), to_hex(cmap(norm(-limit)))
    parts = ['<div style="font-family:sans-serif;line-height:1.9">',
             f'<div style="margin-bottom:6px"><span style="background:{red};color:white;padding:1px 4px">red</span> = pushed '
             f'towards the target class, <span style="background:{blue};color:white;padding:1px 4px">blue</span> = against; '
             f'colour scale ±{limit:.3g} logit units (hover a token for its attribution)</div>']
    for i, (row, a) in enumerate(zip(tokens, values)):
        if titles is not None:
            parts.append(f'<div style="font-weight:bold;margin-top:6px">{html.escape(titles[i])}</div>')
        cells = []
        for token, value in zip(row, a):
            piece = token.startswith(CONTINUATION) and len(token) > len(CONTINUATION)
            shown = token[len(CONTINUATION):] if piece else token
            text = "white" if abs(norm(value) - 0.5) > 0.3 else "black"
            cells.append(("" if piece or not cells else " ")
                         + f'<span title="{html.escape(token)}: {value:+.4g}" style="background:{to_hex(cmap(norm(value)))};'
                         f'color:{text};padding:1px 2px;border-radius:2px">{html.escape(shown)}</span>')
        parts.append(f"<div>{''.join(cells)}</div>")
    parts.append("</div>")
    return "\n".join(parts)


def token_heatmap(tokens: Sequence[Sequence[str]], attributions: Sequence[np.ndarray], titles: Sequence[str] | None = None,
                  *, width_chars: int = 88, fontsize: float = 9.0, label: str = COLORBAR_LABEL) -> Figure:
    """One text block per sample (its title above), words as cells coloured by attribution on a
    diverging colormap symmetric about 0, lines wrapped at ``width_chars`` characters; a colorbar
    labelled ``label`` below. WordPieces are merged into words, their attributions summed
    (:func:`merge_wordpieces`), as the caption under the colorbar says."""
    values = _checked(tokens, attributions, titles)
    limit = _limit(values)
    norm, cmap = Normalize(-limit, limit), colormaps[CMAP]
    cells: list[tuple[float, int, str, float]] = []  # (x in characters, line, word, attribution)
    headings: list[tuple[int, str]] = []
    line = 0
    for i, (row, a) in enumerate(zip(tokens, values)):
        if titles is not None:
            headings.append((line, titles[i]))
            line += 1
        x = 0.0
        for word, value in zip(*merge_wordpieces(row, a)):
            if x > 0 and x + len(word) + 1 > width_chars:
                x, line = 0.0, line + 1
            cells.append((x, line, word, value))
            x += len(word) + 1.4  # one character of padding inside the cell, 0.4 between cells
        line += 2  # the last line, then a blank one
    n_lines = line - 1
    line_in = 2.0 * fontsize / 72  # inches per line
    char_in = CHAR_WIDTH * fontsize / 72
    margin = 0.04  # of the figure's width, each side
    fig = plt.figure(figsize=(width_chars * char_in / (1 - 2 * margin), n_lines * line_in + 1.1))
    grid = fig.add_gridspec(2, 1, height_ratios=[n_lines * line_in, 0.12], hspace=0.9 / (n_lines * line_in + 0.2),
                            left=margin, right=1 - margin)
    ax, bar_ax = fig.add_subplot(grid[0]), fig.add_subplot(grid[1])
    for x, y, word, value in cells:
        ax.add_patch(Rectangle((x, y + 0.1), len(word) + 1, 0.8, facecolor=cmap(norm(value)), edgecolor="none"))
        ax.text(x + 0.5, y + 0.5, word, family="monospace", fontsize=fontsize, va="center", ha="left",
                color="white" if abs(norm(value) - 0.5) > 0.3 else "black")
    for y, title in headings:
        ax.text(0, y + 0.5, title, fontsize=fontsize, fontweight="bold", va="center", ha="left")
    ax.set(xlim=(0, width_chars), ylim=(n_lines, 0))
    ax.axis("off")
    fig.colorbar(ScalarMappable(norm, cmap), cax=bar_ax, orientation="horizontal", label=label)
    bar_ax.set_title("wordpieces merged into words (attributions summed)", fontsize=fontsize - 1, loc="right", pad=2)
    return fig
