"""Figures of a run, drawn the way a paper would show them, and saved under ``figures/``."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

BEHAVIOUR_COLOURS = {
    "honest": "#4477aa",
    "noisy": "#ee6677",
    "duplicate": "#ccbb44",
    "out_of_domain": "#aa3377",
    "malformed": "#bbbbbb",
    "paraphrase_sybil": "#66ccee",
    "off_topic": "#228833",
    "backdoor": "#222222",
    "memorised": "#ee7733",
}


def save(fig: Figure, directory: Path, name: str) -> Path:
    """Write ``fig`` to ``directory/name.png`` (150 dpi) and return the path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.png"
    fig.savefig(path, dpi=150, bbox_inches="tight", metadata={"Software": None})
    return path


def training_curves(history: pd.DataFrame) -> Figure:
    """Cross-entropy loss and accuracy per epoch, train vs held-out test."""
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(9, 3.2))
    for split, style in (("train", "--"), ("test", "-")):
        loss_ax.plot(history["epoch"], history[f"{split}_loss"], style, marker="o", label=split)
        acc_ax.plot(history["epoch"], history[f"{split}_accuracy"], style, marker="o", label=split)
    loss_ax.set(xlabel="epoch", ylabel="cross-entropy loss (nats/sample)", title="Loss")
    acc_ax.set(xlabel="epoch", ylabel="accuracy (fraction correct)", title="Accuracy", ylim=(0, 1))
    for ax in (loss_ax, acc_ax):
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def ig_heatmaps(inputs: np.ndarray, attributions: np.ndarray, targets: np.ndarray, image_shape: tuple[int, int], n: int = 6) -> Figure:
    """Test images (top) beside their Integrated Gradients maps (bottom, red = pushed toward the
    predicted class, blue = against), for the first ``n`` test samples."""
    fig, axes = plt.subplots(2, n, figsize=(1.6 * n, 3.6))
    limit = np.abs(attributions[:n]).max()
    for i in range(n):
        axes[0, i].imshow(inputs[i].reshape(image_shape), cmap="gray_r")
        axes[0, i].set_title(f"pred {targets[i]}", fontsize=9)
        heat = axes[1, i].imshow(attributions[i].reshape(image_shape), cmap="RdBu_r", vmin=-limit, vmax=limit)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(heat, ax=axes[1, :].tolist(), shrink=0.8, label="IG attribution (logit units)")
    return fig


def ig_feature_bars(attributions: np.ndarray, feature_names: tuple[str, ...], top: int = 15) -> Figure:
    """Mean |IG attribution| per feature over the test set (tabular data), largest first."""
    importance = pd.Series(np.abs(attributions).mean(axis=0), index=list(feature_names)).nlargest(top)[::-1]
    fig, ax = plt.subplots(figsize=(6, 0.3 * len(importance) + 1))
    ax.barh(importance.index, importance.values, color="#4477aa")
    ax.set(xlabel="mean |IG attribution| over test samples (logit units)", title="Feature importance (Integrated Gradients)")
    fig.tight_layout()
    return fig


METHOD = "method"
"""Key in a sample-credit frame's ``attrs`` naming the attribution method (registry name) that made it."""


def top_influential(samples: pd.DataFrame, train_x: np.ndarray, behaviours: pd.Series, image_shape: tuple[int, int] | None,
                    k: int = 6, method: str | None = None) -> Figure:
    """The ``k`` most helpful and ``k`` most harmful training samples by credit, each labelled
    with its contributor and that contributor's planted behaviour; the credit is labelled with
    ``method``, by default the one ``samples.attrs`` names (:data:`METHOD`).

    Raises:
        ValueError: no method given and ``samples`` names none.
    """
    method = method or samples.attrs.get(METHOD)
    if not method:
        raise ValueError(f"top_influential: pass method=, or samples.attrs[{METHOD!r}]: the figure names the method of its credit")
    order = samples["credit"].to_numpy().argsort()
    picks = {"most helpful": order[::-1][:k], "most harmful": order[:k]}
    if image_shape is None:
        fig, ax = plt.subplots(figsize=(7, 0.3 * 2 * k + 1))
        rows = np.concatenate([picks["most harmful"], picks["most helpful"][::-1]])
        labels = [f"{samples.sample_id[i]} ({behaviours[samples.contributor[i]]})" for i in rows]
        values = samples["credit"].to_numpy()[rows]
        ax.barh(labels, values, color=[BEHAVIOUR_COLOURS[behaviours[samples.contributor[i]]] for i in rows])
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set(xlabel=f"{method} credit (mean influence on test loss; + = helped)", title="Most helpful and harmful training samples")
        fig.tight_layout()
        return fig
    fig, axes = plt.subplots(2, k, figsize=(1.8 * k, 4.8))
    for row, (title, indices) in enumerate(picks.items()):
        for col, i in enumerate(indices):
            ax = axes[row, col]
            ax.imshow(train_x[i].reshape(image_shape), cmap="gray_r")
            contributor = samples.contributor[i]
            ax.set_title(f"{contributor} ({behaviours[contributor]})\n{samples.credit[i]:+.3f}", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[row, 0].set_ylabel(title)
    fig.suptitle(f"Training samples by {method} credit (+ = lowered test loss)")
    fig.tight_layout()
    return fig


def contributor_bars(values: pd.Series, behaviours: pd.Series, ylabel: str, title: str) -> Figure:
    """One bar per contributor, coloured by planted behaviour, with a legend of behaviours."""
    fig, ax = plt.subplots(figsize=(8, 3.4))
    colours = [BEHAVIOUR_COLOURS[behaviours[c]] for c in values.index]
    ax.bar(values.index, values.to_numpy(), color=colours)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set(xlabel="contributor", ylabel=ylabel, title=title)
    seen = dict.fromkeys(behaviours[values.index])
    ax.legend(handles=[plt.Rectangle((0, 0), 1, 1, color=BEHAVIOUR_COLOURS[b]) for b in seen], labels=list(seen), fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig
