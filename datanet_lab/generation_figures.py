"""Figures of generation credit: generations with their matched spans coloured by contributor
(HTML for the notebook, a matplotlib figure for a paper) and the comparison with LOCO retraining.

A token inside a credited span takes the colour of the contributor the span is credited to (the
first by id when several share it; the legend says so); tokens outside every span stay plain.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.patches import Patch

PALETTE = "tab10"


def contributor_colours(contributors: Sequence[str]) -> dict[str, str]:
    """A fixed colour (hex) per contributor id, in sorted order of ``contributors``."""
    cmap = colormaps[PALETTE]
    return {c: to_hex(cmap(k % cmap.N)) for k, c in enumerate(sorted(contributors))}


def token_owners(n_tokens: int, spans: pd.DataFrame) -> list[str | None]:
    """``(n_tokens,)`` the contributor each generated token is credited to, or ``None``:
    ``spans`` holds one generation's credit breakdown rows (``start, end, contributor``);
    overlapping spans keep the earlier span's owner, shared spans the first contributor by id."""
    owners: list[str | None] = [None] * n_tokens
    for _, row in spans.sort_values(["start", "contributor"]).iterrows():
        for t in range(int(row["start"]), min(int(row["end"]), n_tokens)):
            owners[t] = owners[t] or row["contributor"]
    return owners


def spans_html(pieces: Sequence[Sequence[str]], owners: Sequence[Sequence[str | None]], titles: Sequence[str],
               colours: dict[str, str]) -> str:
    """HTML: per generation its ``title`` and decoded token ``pieces``, each credited piece on its
    contributor's colour with the contributor id as a tooltip, and a legend."""
    legend = " ".join(f'<span style="background:{c};color:white;padding:1px 4px">{html.escape(k)}</span>'
                      for k, c in colours.items())
    rows = []
    for title, row, owner in zip(titles, pieces, owners):
        cells = "".join(
            f'<span title="{html.escape(o)}" style="background:{colours[o]};color:white">{html.escape(p)}</span>'
            if o else html.escape(p) for p, o in zip(row, owner))
        rows.append(f"<p><b>{html.escape(title)}</b><br><span style='white-space:pre-wrap;font-family:monospace'>"
                    f"{cells}</span></p>")
    return f"<div><p>credited to: {legend}</p>{''.join(rows)}</div>"


def spans_figure(owners: Sequence[Sequence[str | None]], titles: Sequence[str], colours: dict[str, str]) -> Figure:
    """One row per generation, one cell per generated token, coloured by the contributor its span
    is credited to (white: no span); x = token position in the generation."""
    width = max(len(o) for o in owners)
    fig, ax = plt.subplots(figsize=(10, 0.45 * len(owners) + 1.2))
    image = np.ones((len(owners), width, 3))
    for r, row in enumerate(owners):
        image[r, len(row):] = 0.85  # past the generation's end
        for t, owner in enumerate(row):
            if owner:
                image[r, t] = [int(colours[owner][k:k + 2], 16) / 255 for k in (1, 3, 5)]
    ax.imshow(image, aspect="auto", interpolation="nearest")
    ax.set_yticks(range(len(titles)), [t[:40] for t in titles], fontsize=8)
    ax.set_xlabel("generated token position")
    ax.set_title("Generated tokens inside verbatim training spans, by credited contributor")
    used = sorted({o for row in owners for o in row if o})
    ax.legend(handles=[Patch(color=colours[c], label=c) for c in used] or [Patch(color="white", label="no span")],
              loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, title="contributor")
    fig.tight_layout()
    return fig


def comparison_bars(table: pd.DataFrame, ceiling: float | None = None) -> Figure:
    """Mean Spearman (over generations) of each method's contributor credit with LOCO retraining,
    with its bootstrap 95% interval; the seed-to-seed ceiling as a dashed line when known."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    x = np.arange(len(table))
    mean = table["spearman"].to_numpy(dtype=float)
    low = np.nan_to_num(mean - table["ci_low"].to_numpy(dtype=float))
    high = np.nan_to_num(table["ci_high"].to_numpy(dtype=float) - mean)
    ax.bar(x, np.nan_to_num(mean), yerr=[low, high], capsize=4, color="tab:blue")
    for k, (m, n) in enumerate(zip(mean, table["generations"])):
        ax.annotate(f"n={n}", (k, 0), xytext=(0, -14), textcoords="offset points", ha="center", fontsize=8)
    if ceiling is not None:
        ax.axhline(ceiling, ls="--", color="grey", label=f"seed ceiling {ceiling:.2f}")
        ax.legend(fontsize=8)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(x, table["method"])
    ax.set_ylabel("Spearman with LOCO Δ log-likelihood\n(mean over generations, 95% CI)")
    ax.set_title("Contributor credit for generations vs leave-one-contributor-out")
    fig.tight_layout()
    return fig


def lm_training_curve(history: pd.DataFrame, summary: dict) -> Figure:
    """Mean training NLL per target token by epoch, with the held-out NLL of the trained LM and of
    a unigram (context-free) model as horizontal references (log of their perplexities)."""
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    ax.plot(history["epoch"], history["train_loss"], "--", marker="o", label="training (mean over the epoch)")
    ax.axhline(np.log(summary["validation_perplexity"]), color="tab:green", label="held-out, trained LM")
    ax.axhline(np.log(summary["unigram_perplexity"]), color="grey", ls=":", label="held-out, unigram model")
    ax.set(xlabel="epoch", ylabel="NLL (nats per target token)", title="GPT-2 training")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
