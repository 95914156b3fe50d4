"""``datanet-lab report runs/<sweep>``: one table of every finished run, and metric-vs-axis figures.

The table (``report/metrics.csv``) has a row per run: its id, its parameters, the scalar entries
of its ``metrics.json`` (per-contributor entries dropped) and ``payout_share.<behaviour>``, the
fraction of everything paid out (``payouts.csv``) that went to contributors of that planted
behaviour (empty when the scenario has none). Swept axes are the parameters that vary; for each
plotted metric and each axis a figure shows the mean over ``over`` (seeds) with a 95% Student-t
confidence interval, one line per combination of the other axes.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import yaml
from matplotlib.figure import Figure
from scipy import stats

from datanet import DatanetError
from datanet_lab import figures
from datanet_lab.batch.runner import make_directory

PER_CONTRIBUTOR = ("attribution", "payout")
NOT_PLOTTED = ("ledger.",)
"""Bookkeeping metrics that go to the table but get no figure."""


def collect(sweep_dir: Path) -> tuple[pd.DataFrame, list[str], list[str]]:
    """The table of finished runs, its parameter columns and its metric columns.

    Raises:
        DatanetError: ``sweep_dir`` holds no finished run with a ``metrics.json``.
    """
    if not Path(sweep_dir).is_dir():
        raise DatanetError(f"sweep directory {sweep_dir} not found (or not a directory)")
    rows = []
    for run in sorted(p for p in Path(sweep_dir).iterdir() if (p / "metrics.json").is_file() and (p / "params.yaml").is_file()):
        params = yaml.safe_load((run / "params.yaml").read_text())
        metrics = json.loads((run / "metrics.json").read_text())
        for key in PER_CONTRIBUTOR:
            metrics.pop(key, None)
        row = {"run_id": run.name, **params, **pd.json_normalize(metrics).iloc[0].to_dict()}
        if (run / "payouts.csv").is_file():
            payouts = pd.read_csv(run / "payouts.csv", keep_default_na=False)
            shares = payouts.groupby("behaviour")["payout"].sum() / payouts["payout"].sum()  # NaN when nothing was paid
            row.update({f"payout_share.{b}": float(s) for b, s in shares.items()})
        rows.append((row, list(params)))
    if not rows:
        raise DatanetError(f"{sweep_dir}: no finished run (a directory with metrics.json and params.yaml)")
    table = pd.DataFrame([row for row, _ in rows])
    param_columns = list(dict.fromkeys(c for _, names in rows for c in names))
    metric_columns = [c for c in table.columns if c not in param_columns and c != "run_id"]
    return table, param_columns, metric_columns


def swept_axes(table: pd.DataFrame, param_columns: list[str], over: str) -> list[str]:
    """The parameters that take more than one value, ``over`` excepted."""
    return [c for c in param_columns if c != over and table[c].nunique() > 1]


def mean_ci(values: pd.Series) -> pd.Series:
    """Mean, 95% Student-t half-width (NaN for a single value) and count of ``values`` (NaN dropped)."""
    values = values.dropna()
    n = len(values)
    half = stats.t.ppf(0.975, n - 1) * values.std(ddof=1) / np.sqrt(n) if n > 1 else np.nan
    return pd.Series({"mean": values.mean(), "ci95": half, "n": n})


def metric_figure(table: pd.DataFrame, metric: str, axis: str, others: list[str], over: str) -> Figure:
    """``metric`` vs ``axis``: mean ± 95% CI over ``over``, a line per combination of ``others``."""
    levels = sorted(table[axis].unique())
    numeric = pd.api.types.is_numeric_dtype(table[axis])
    fig, ax = plt.subplots(figsize=(max(5.0, 1.3 * len(levels) + 2), 3.6))
    groups = list(table.groupby(others)) if others else [((), table)]
    for i, (key, group) in enumerate(groups):
        summary = group.groupby(axis)[metric].apply(mean_ci).unstack().reindex(levels)
        x = np.arange(len(levels)) + 0.08 * (i - (len(groups) - 1) / 2)  # dodge overlapping error bars
        label = ", ".join(f"{o}={v}" for o, v in zip(others, key if isinstance(key, tuple) else (key,)))
        ax.errorbar(x, summary["mean"], yerr=summary["ci95"], marker="o", capsize=3, label=label or None,
                    linestyle="-" if numeric else "none")  # no lines between unordered categories
    ax.set_xticks(np.arange(len(levels)), [str(v) for v in levels], rotation=15 if len(levels) > 2 else 0, fontsize=8)
    n = int(table.groupby([axis, *others])[metric].count().max())
    ax.set(xlabel=axis, ylabel=metric, title=f"{metric} vs {axis} (mean ± 95% CI over {n} values of {over})")
    if others:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def write_report(sweep_dir: str | Path, out: str | Path | None = None, over: str = "seed") -> Path:
    """Write ``metrics.csv`` and ``figures/<metric>_vs_<axis>.png`` into ``out`` (default
    ``sweep_dir/report``), replacing it whole; return ``out``."""
    sweep_dir = Path(sweep_dir)
    out = Path(out) if out is not None else sweep_dir / "report"
    if out.exists() and not out.is_dir():
        raise DatanetError(f"report directory {out} exists and is not a directory")
    table, param_columns, metric_columns = collect(sweep_dir)
    axes = swept_axes(table, param_columns, over)
    plotted = [m for m in metric_columns if not m.startswith(NOT_PLOTTED) and pd.api.types.is_numeric_dtype(table[m])
               and not pd.api.types.is_bool_dtype(table[m])]
    make_directory(out.parent, "report's parent")
    building = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    table.to_csv(building / "metrics.csv", index=False)
    for metric in plotted:
        for axis in axes:
            fig = metric_figure(table, metric, axis, [a for a in axes if a != axis], over)
            figures.save(fig, building / "figures", f"{metric}_vs_{axis}")
            plt.close(fig)
    shutil.rmtree(out, ignore_errors=True)
    building.rename(out)
    return out
