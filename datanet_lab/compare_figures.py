"""Figures of the method comparison (notebook 05): LDS with confidence intervals, removal curves,
and cost against accuracy."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure


def lds_bars(table: pd.DataFrame, title: str = "Linear datamodeling score") -> Figure:
    """Sample- and contributor-level LDS per method; whiskers: 95% CI over test samples."""
    ordered = table.sort_values("lds_sample")
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(ordered) + 1.2))
    y = range(len(ordered))
    ax.barh([v + 0.2 for v in y], ordered["lds_sample"], height=0.4, xerr=1.0 * ordered["lds_sample_ci95"], label="sample-level", color="#4477aa")
    ax.barh([v - 0.2 for v in y], ordered["lds_contributor"], height=0.4, label="contributor-level", color="#ccbb44")
    ax.set_yticks(list(y), ordered["method"])
    ax.set(xlabel="LDS (Spearman vs retrained test loss)", xlim=(-0.2, 1.0), title=title)
    ax.axvline(0, color="black", lw=0.8)
    ax.legend(loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def removal_curves(removal: pd.DataFrame) -> Figure:
    """Test accuracy after retraining without the top-credited fraction of samples."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for method, rows in removal.groupby("method", sort=False):
        ax.plot(rows["fraction"], rows["accuracy"], marker="o", label=method)
    ax.set(xlabel="fraction of training samples removed (highest credit first)", ylabel="test accuracy", title="Removal curves")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def cost_vs_lds(table: pd.DataFrame) -> Figure:
    """Wall seconds (log scale) against sample-level LDS."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.scatter(table["seconds"], table["lds_sample"])
    for row in table.itertuples():
        ax.annotate(row.method, (row.seconds, row.lds_sample), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set(xscale="log", xlabel="fit + score seconds (log)", ylabel="sample-level LDS", title="Cost vs accuracy")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def text_comparison(table: pd.DataFrame, ceiling: float | None, backdoor: pd.DataFrame) -> Figure:
    """Left: sample-level LDS per method on each text model (whiskers: 95% CI over test texts;
    dashed: the fine-tuned model's retrain-seed ceiling). Right: backdoor forensics per method on
    the fine-tuned model (precision@10 of the poisoned rows ranked by credit on triggered test
    texts, and by credit over the training gradient's norm (0 where a method has none); AUC)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8), gridspec_kw={"width_ratios": [3, 2]})
    models = list(dict.fromkeys(table["model"]))
    methods = list(dict.fromkeys(table["method"]))
    width = 0.8 / len(models)
    for k, (model, colour) in enumerate(zip(models, ("#ccbb44", "#4477aa"))):
        rows = table[table["model"] == model].set_index("method").reindex(methods)
        left.bar([i + (k - (len(models) - 1) / 2) * width for i in range(len(methods))], rows["lds_sample"], width,
                 yerr=rows["lds_sample_ci95"], label=model, color=colour)
    if ceiling is not None:
        left.axhline(ceiling, color="#4477aa", ls="--", lw=1, label=f"minilm seed ceiling ({ceiling:.2f})")
    left.axhline(0, color="black", lw=0.8)
    left.set_xticks(range(len(methods)), methods, rotation=20, ha="right")
    left.set(ylabel="sample-level LDS (Spearman vs retrained test loss)", title="Attribution vs retraining")
    left.legend(fontsize=8)
    left.grid(axis="y", alpha=0.3)
    positions = range(len(backdoor))
    bars = (("precision_at_10", "precision@10, score", "#aa3377"), ("normalized_precision_at_10",
            "precision@10, score / gradient norm", "#ee6677"), ("auc", "AUC, score", "#66ccee"))
    for k, (column, label, colour) in enumerate(bars):
        right.bar([p + (k - 1) * 0.27 for p in positions], backdoor[column].fillna(0), 0.27, label=label, color=colour)
    right.set_xticks(list(positions), backdoor["method"], rotation=20, ha="right")
    right.set(ylim=(0, 1.05), ylabel="poisoned rows ranked first", title="Backdoor forensics (triggered test texts)")
    right.legend(fontsize=8)
    right.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig
