"""The figure of a Datanet grown in rounds: cumulative earnings per contributor, with and without reputation."""

from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.ticker import StrMethodFormatter

from datanet_lab.figures import BEHAVIOUR_COLOURS
from datanet_lab.experiments.rounds import TURN_ROUND, RoundsResult

ROLE_STYLES = {
    "honest": (BEHAVIOUR_COLOURS["honest"], "-"),
    "late_joiner": ("#228833", "-"),
    "upgrader": ("#66ccee", "--"),
    "noisy": (BEHAVIOUR_COLOURS["noisy"], "--"),
    "duplicate": (BEHAVIOUR_COLOURS["duplicate"], ":"),
    "sleeper": ("#222222", "-."),
}
"""Colour and line style per role of :data:`datanet_lab.experiments.rounds.CAST`."""


def cumulative_earnings(with_reputation: RoundsResult, without: RoundsResult) -> Figure:
    """Two panels sharing the y axis, payouts split by credit alone (left) and by credit ×
    reputation weight (right): each contributor's cumulative earnings (units) after each round,
    one line per contributor styled by its role, a dotted line where the sleeper turns and the
    upgrader's rows are superseded.

    Raises:
        ValueError: the runs are not one without and one with reputation.
    """
    if without.reputation or not with_reputation.reputation:
        raise ValueError(f"expected a run with reputation and one without, got reputation="
                         f"{with_reputation.reputation} and {without.reputation}")
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, result, title in ((axes[0], without, "split by credit"), (axes[1], with_reputation, "split by credit × reputation")):
        for contributor, rows in result.earnings.groupby("contributor"):
            role = rows["role"].iloc[0]
            colour, style = ROLE_STYLES[role]
            ax.plot(rows["round"], rows["cumulative"], style, color=colour, marker="o", markersize=4,
                    label=f"{contributor} ({role})")
        ax.axvline(TURN_ROUND - 0.5, color="#888888", linestyle=":", linewidth=1)
        ax.set(xlabel="round (dotted: the sleeper turns, the upgrade supersedes)", title=title, xticks=sorted(result.earnings["round"].unique()))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("cumulative earnings (units)")
    axes[0].yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    axes[1].legend(loc="upper left", bbox_to_anchor=(1.02, 1), fontsize=8, title="contributor (role)")
    fig.tight_layout()
    return fig
