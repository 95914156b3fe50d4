"""The README's performance table, written from the benchmarks' results files (never typed).

Each row is one target: a figure a benchmark wrote to ``docs/results/<benchmark>.json``
(:mod:`datanet_lab.results_files`), its limit and whether the figure meets it. ``make
bench-results`` reruns the benchmarks, then ``python -m datanet_lab.performance README.md``
rewrites the table between :data:`START` and :data:`END`; ``tests/test_readme.py`` checks that
the README holds exactly :func:`table` of the committed files.
"""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import dataclass
from pathlib import Path

START = "<!-- performance table: written by `make bench-results` from docs/results/*.json -->"
END = "<!-- end of the performance table -->"
RESULTS = Path(__file__).resolve().parent.parent / "docs" / "results"


@dataclass(frozen=True)
class Target:
    """``figure`` of ``benchmark``'s results file against ``limit``: at most it (``at_most``) or at
    least it; ``unit`` follows the numbers in the table."""

    what: str
    benchmark: str
    figure: str
    limit: float
    at_most: bool
    unit: str

    def met(self, value: float) -> bool:
        return value <= self.limit if self.at_most else value >= self.limit


TARGETS = (
    Target("span search, 200-token generation on 10M tokens", "span_bench", "10M.vectorized_ms", 2.0, True, " ms"),
    Target("span search against infini-gram's engine, same run", "span_bench", "10M.speedup", 10.0, False, "×"),
    Target("serving end to end against attribution alone, logreg", "inference_bench", "logreg.ratio", 0.5, False, "×"),
    Target("serving end to end against attribution alone, MLP", "inference_bench", "mlp.ratio", 0.5, False, "×"),
    Target("HTTP requests/s, 32 clients, 1-row requests", "http_bench", "c32.requests_per_second", 1000.0, False, "/s"),
    Target("HTTP p99 latency, 32 clients", "http_bench", "c32.p99_ms", 100.0, True, " ms"),
    Target("signed ledger appends against the signing rate, same run", "ledger_bench", "appends.ratio", 0.7, False, "×"),
    Target("FastTracIn against Captum's fast mode, 1 thread (median of 5)", "attribution_bench",
           "speedup.1_threads.median", 20.0, False, "×"),
    Target("FastTracIn against Captum's fast mode, 2 threads (median of 5)", "attribution_bench",
           "speedup.2_threads.median", 20.0, False, "×"),
)


def _number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"


def table(results: Path = RESULTS) -> str:
    """The markdown table of every target: figure, limit, figure / limit, met or missed (by how
    much, relative to the limit).

    Raises:
        FileNotFoundError: a benchmark's results file is missing (run ``make bench-results``).
        KeyError: a results file lacks a target's figure, naming both.
    """
    lines = ["| target | figure | limit | figure / limit | |", "|---|---|---|---|---|"]
    files: dict[str, dict] = {}
    for target in TARGETS:
        if target.benchmark not in files:
            path = Path(results) / f"{target.benchmark}.json"
            files[target.benchmark] = json.loads(path.read_text())["figures"]
        figures = files[target.benchmark]
        if target.figure not in figures:
            raise KeyError(f"{target.benchmark}.json has no figure {target.figure!r} (rerun make bench-results)")
        value = float(figures[target.figure])
        short = abs(value - target.limit) / target.limit
        verdict = "met" if target.met(value) else f"missed by {100 * short:.0f}%"
        sign = "≤" if target.at_most else "≥"
        lines.append(f"| {target.what} (`{target.benchmark}`) | {_number(value)}{target.unit} | "
                     f"{sign} {_number(target.limit)}{target.unit} | {value / target.limit:.2f} | {verdict} |")
    return "\n".join(lines)


def rewrite(readme: Path, results: Path = RESULTS) -> None:
    """Replace the table between :data:`START` and :data:`END` of ``readme`` with :func:`table`.

    Raises:
        ValueError: ``readme`` lacks the markers (nothing is written).
    """
    text = Path(readme).read_text()
    pattern = re.compile(re.escape(START) + r"\n(?:.*?\n)?" + re.escape(END), re.DOTALL)
    if not pattern.search(text):
        raise ValueError(f"{readme}: no performance table between {START!r} and {END!r}")
    Path(readme).write_text(pattern.sub(lambda _: f"{START}\n{table(results)}\n{END}", text))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("readme", type=Path)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    rewrite(args.readme, args.results)


if __name__ == "__main__":
    main()
