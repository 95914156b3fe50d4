"""Figures of a serve-sim (:mod:`~datanet_lab.serving.sim`), saved under ``inference/figures/``."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import StrMethodFormatter

from ledger.fees import DustReport
from datanet_lab.figures import save
from datanet_lab.serving.economy import CONTRIBUTOR


def earnings_bars(earnings: pd.DataFrame) -> Figure:
    """Two panels of an ``earnings.csv`` table (``id, role, units``): units paid per contributor
    (left) and where the fees went (right: each fee role, the contributors' payouts together, the
    unallocated and the carried units)."""
    contributors = earnings[earnings["role"] == CONTRIBUTOR]
    places = earnings[earnings["role"] != CONTRIBUTOR].set_index("id")["units"]
    places = pd.concat([pd.Series({"contributors (paid)": contributors["units"].sum()}), places])
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.6), gridspec_kw={"width_ratios": [3, 2]})
    left.bar(contributors["id"], contributors["units"], color="#4477aa")
    left.set(xlabel="contributor", ylabel="units paid", title="inference earnings by contributor (closed epochs)")
    right.bar(places.index, places.to_numpy(), color="#ccbb44")
    right.set(ylabel="units", title="fees by role")
    right.tick_params(axis="x", labelrotation=30)
    for ax in (left, right):
        ax.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def dust_bars(dust: DustReport) -> Figure:
    """Per method of paying the stream's contributors' parts, the units never paid (lost) and the
    units not paid to their earner in this epoch (moved to another contributor by per-inference
    largest remainders; carried to the next epoch by the accrual)."""
    methods = ["floor per inference", "largest remainders\nper inference", "accrual, closed once"]
    lost = [dust.floor_lost, 0.0, dust.accrual_lost]
    elsewhere = [0.0, dust.hamilton_moved, dust.accrual_carried]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    positions = range(len(methods))
    ax.bar([p - 0.2 for p in positions], lost, width=0.4, color="#ee6677", label="lost (never paid)")
    ax.bar([p + 0.2 for p in positions], elsewhere, width=0.4, color="#66ccee",
           label="moved to another contributor / carried to the next epoch")
    for p, (a, b) in enumerate(zip(lost, elsewhere)):
        ax.annotate(f"{a:,.0f}", (p - 0.2, a), ha="center", va="bottom", fontsize=8)
        ax.annotate(f"{b:,.1f}", (p + 0.2, b), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(list(positions), methods)
    ax.set(ylabel="units", title=f"dust over {dust.inferences:,} inferences ({dust.earned:,} units earned by credit)")
    ax.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def write_figures(directory: Path, earnings: pd.DataFrame, dust: DustReport) -> tuple[Path, ...]:
    """Draw :func:`earnings_bars` and :func:`dust_bars` into ``directory`` (``earnings.png``,
    ``dust.png``) and return their paths."""
    paths = []
    for name, fig in (("earnings", earnings_bars(earnings)), ("dust", dust_bars(dust))):
        paths.append(save(fig, directory, name))
        plt.close(fig)
    return tuple(paths)
