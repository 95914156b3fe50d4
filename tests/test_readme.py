"""The README and docs/ say what the code does: their result tables match the notebooks' stored
outputs of cells nbval re-computes, every parameter is documented with its default, and every
command they show exists.

A README table checked against a notebook follows a marker line
``<!-- checked against notebooks/NAME.ipynb -->``. Its first column names rows of a DataFrame the
notebook displays (by the DataFrame's index name or a column of that name); every other column
whose header :data:`COLUMNS` maps must equal the notebook's value to the precision the README
prints. The notebook's table is found by the columns the README uses, so a notebook may display
several tables. The stored outputs are what `make notebooks` wrote; nbval re-executes the
notebooks in `make test`.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest

from datanet_lab import performance
from datanet_lab.params import DEFAULTS

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
MARKER = re.compile(r"^<!-- checked against (notebooks/[\w.-]+\.ipynb) -->\n((?:\|.*\|\n)+)", re.MULTILINE)

COLUMNS = {
    # README header -> the notebook DataFrame's column (or index) name
    "method": "method",
    "sample LDS": "lds_sample",
    "contributor LDS": "lds_contributor",
    "LOCO corr": "loco_corr",
    "Shapley corr": "shapley_corr",
    "noisy AUC": "noisy_auc",
    "noisy-sample AUC": "noisy_sample_auc",
    "contributor": "contributor",
    "behaviour": "behaviour",
    "accepted": "accepted",
    "rejected": "rejected",
    "credit": "attribution",
    "stake": "stake",
    "slashed": "slashed",
    "payout": "payout",
    # notebook 05's sybil study (datanet_lab.experiments.sybil.study)
    "copy noise (std)": "noise",
    "identities": "k",
    "gain, summed": "gain_summed",
    "gain, radius": "gain_radius",
    "gain": "gain_gradient",
    "copier's share": "copier_gradient",
    "copier's share, radius": "copier_radius",
    "escaped": "escaped",
    "worth by retraining": "retrain_value",
    "beyond a duplicate": "beyond_duplicate",
}
KEYS = ("method", "contributor", "copy noise (std)", "identities")
"""README headers that identify a row (together, when a table has several)."""
NUMBER = re.compile(r"^-?\d[\d,]*(\.\d+)?$")


class _HTMLTables(HTMLParser):
    """The ``<table>`` elements of pandas' HTML display: each a list of rows of cell texts."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs) -> None:
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


CHECKED_CELL = re.compile(r"^\s*#\s*NBVAL_CHECK_OUTPUT\s*$", re.MULTILINE)


def notebook_tables(path: Path, checked_only: bool = False) -> list[dict[str, dict[str, str]]]:
    """Every table the notebook shows, as ``{column or index name: {row label: text}}``: the
    DataFrames it displays (HTML) and those it prints with ``to_string`` (text, as nbval checks).
    ``checked_only``: only the outputs of cells marked ``# NBVAL_CHECK_OUTPUT``, which nbval
    compares with what the code computes when it re-executes the notebook.

    pandas' HTML has a header row (an empty corner, then the columns), a second header row
    holding the index name when it has one, then a row per index value (``th``) and values.
    """
    tables = []
    for cell in nbformat.read(path, as_version=4).cells:
        if checked_only and not CHECKED_CELL.search(cell.source):
            continue
        for output in cell.get("outputs", []):
            tables += _text_tables(output.get("text", ""))
            html = output.get("data", {}).get("text/html", "")
            if "<table" not in html:
                continue
            parser = _HTMLTables()
            parser.feed(html)
            for rows in parser.tables:
                header, body = rows[0], rows[1:]
                index_name = ""
                if body and len(body[0]) == len(header) and not any(body[0][1:]):  # the index-name row
                    index_name, body = body[0][0], body[1:]
                names = [index_name or "index", *header[1:]]
                tables.append({name: {row[0]: row[k] for row in body} for k, name in enumerate(names)})
    return tables


def _text_tables(text: str) -> list[dict[str, dict[str, str]]]:
    """Tables printed as aligned text: a header line of names, then lines of as many cells.

    Cells are split on whitespace, so this reads ``DataFrame.to_string(index=False)`` of cells
    without spaces; rows are labelled by their position.
    """
    tables, lines = [], [line.split() for line in text.splitlines()]
    start = 0
    while start < len(lines):
        end = start + 1
        while end < len(lines) and len(lines[end]) == len(lines[start]) >= 2:
            end += 1
        header, body = lines[start], lines[start + 1:end]
        if body and not any(NUMBER.match(name) for name in header):
            tables.append({name: {str(r): row[k] for r, row in enumerate(body)} for k, name in enumerate(header)})
        start = end
    return tables


def markdown_table(text: str) -> tuple[list[str], list[list[str]]]:
    """(headers, rows) of a pipe table; cells lose backticks and bold marks, minus signs become '-'."""
    lines = [line.strip().strip("|").split("|") for line in text.strip().splitlines()]
    clean = [[cell.strip().replace("`", "").replace("*", "").replace("−", "-") for cell in line] for line in lines]
    return clean[0], clean[2:]


def _checked_tables() -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in MARKER.finditer(README.read_text())]


def test_the_readme_has_checked_result_tables():
    assert {name for name, _ in _checked_tables()} >= {
        "notebooks/04_ledger_and_payouts.ipynb", "notebooks/05_compare_methods.ipynb", "notebooks/06_compare_mlp.ipynb"}


@pytest.mark.parametrize("notebook, table", _checked_tables(), ids=lambda v: v if v.endswith("ipynb") else "")
def test_readme_table_matches_the_notebooks_stored_output(notebook, table):
    headers, rows = markdown_table(table)
    keys = [h for h in headers if h in KEYS]
    assert keys, f"README table from {notebook} has none of the row-naming columns {KEYS}"
    for header, *cells in zip(headers, *rows):
        if header not in COLUMNS:  # a description: it must not carry an unchecked figure
            assert not any(NUMBER.match(c) for c in cells), f"README column {header!r} holds numbers no notebook checks"
    wanted = {COLUMNS[h] for h in headers if h in COLUMNS}
    candidates = [t for t in notebook_tables(ROOT / notebook, checked_only=True) if wanted <= set(t)]
    assert len(candidates) == 1, (f"{notebook}: {len(candidates)} stored tables of cells marked # NBVAL_CHECK_OUTPUT "
                                  f"(re-computed by nbval) have the columns {sorted(wanted)}")
    (stored,) = candidates
    labels = next(iter(stored.values())).keys()  # the displayed table's row labels
    by_key = {tuple(_normal(stored[COLUMNS[h]][label]) for h in keys): label for label in labels}
    for row in rows:
        cells = dict(zip(headers, row))
        key = tuple(_normal(cells[h]) for h in keys)
        assert key in by_key, f"README row {key} is not in {notebook}'s table"
        for header, value in cells.items():
            if header in keys or header not in COLUMNS:
                continue
            printed = stored[COLUMNS[header]][by_key[key]]
            where = f"README {key} {header!r}: {value!r} vs {notebook}'s {printed!r}"
            if NUMBER.match(value):
                decimals = len(value.partition(".")[2])
                assert decimals <= len(printed.partition(".")[2]), f"{where}: more digits than the notebook prints"
                assert abs(float(value.replace(",", "")) - float(printed)) <= 0.5 * 10.0**-decimals + 1e-12, where
            else:
                assert value == printed, where


def _normal(cell: str) -> str | float:
    """A key cell as a number when it is one (README ``0.05`` names the notebook's ``0.050``)."""
    return float(cell.replace(",", "")) if NUMBER.match(cell) else cell


def test_readme_quotes_notebook_06s_ceiling():
    streams = "".join(o.get("text", "") for c in nbformat.read(ROOT / "notebooks/06_compare_mlp.ipynb", as_version=4).cells
                      for o in c.get("outputs", []))
    printed = re.search(r"^ceiling .*: (\d\.\d+)$", streams, re.MULTILINE)
    quoted = re.search(r"ceiling[^.|]*?(\d\.\d{3})|(\d\.\d{3})[^.|]*?ceiling", README.read_text())
    assert printed and quoted, "notebook 06 prints the seed-vs-seed ceiling and the README quotes it"
    assert (quoted.group(1) or quoted.group(2)) == printed.group(1)


def test_the_parameter_page_lists_every_parameter_with_its_default():
    headers, rows = markdown_table(re.search(r"^\|.*\|\n(?:\|.*\|\n)+", (DOCS / "parameters.md").read_text(), re.MULTILINE).group(0))
    assert headers[:2] == ["parameter", "default"]
    documented = {row[0]: row[1] for row in rows}
    assert set(documented) == set(DEFAULTS)
    for name, default in DEFAULTS.items():
        assert documented[name].replace('"', "") == str(default), f"docs/parameters.md: {name} default {documented[name]!r}, the code's {default!r}"


def _documents() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def _make_targets() -> set[str]:
    done = subprocess.run(["make", "-s", "help"], cwd=ROOT, capture_output=True, text=True, check=True)
    return {line.split()[0] for line in done.stdout.splitlines() if line.strip()}


@pytest.mark.parametrize("document", _documents(), ids=lambda p: p.name)
def test_every_make_target_shown_exists(document):
    shown = set(re.findall(r"`make ([a-z][\w-]*)", document.read_text()))
    shown |= set(re.findall(r"^make ([a-z][\w-]*)", document.read_text(), re.MULTILINE))
    assert shown <= _make_targets(), f"{document.name} shows make targets `make help` does not list"


def _cli_commands(document: Path) -> list[list[str]]:
    """Each ``datanet-lab ...`` command line in the document's code blocks and inline code, as words."""
    text = document.read_text()
    found = re.findall(r"(?:^|[\s`/])datanet-lab ((?:[a-z][\w-]* ?){1,2})", text, re.MULTILINE)
    return [shlex.split(words) for words in found]


@pytest.mark.parametrize("document", _documents(), ids=lambda p: p.name)
def test_every_cli_command_shown_exists(document):
    from datanet_lab.cli import main

    for words in _cli_commands(document):
        command = words[:2] if words[0] == "ledger" and len(words) > 1 else words[:1]
        try:
            main([*command, "--help"])
        except SystemExit as exit_:
            assert exit_.code == 0, f"{document.name}: `datanet-lab {' '.join(command)}` is not a command"
        else:
            pytest.fail(f"`datanet-lab {' '.join(command)} --help` did not print help")


# README blocks checked against the committed results files of the long runs and the benchmarks

RESULTS = ROOT / "docs" / "results"
RESULTS_MARKER = re.compile(r"^<!-- checked against (docs/results/[\w.-]+\.json):\s+([^>]*?)\s*-->\n((?:.+\n)+)", re.MULTILINE)
FIGURE = re.compile(r"(?<![\w.,\-−^@])[−-]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?![\w^-]|\.\d|,\d{3})")
"""A number as the README prints one in running text: ``1,244``, ``0.911``, ``−0.006``, ``18%``;
not a digit inside a word or name (``GPT-2``, ``p50``, ``g0003``, ``x10``, ``2-layer``, ``10M``,
``precision@10``, ``3,072-token``)."""
SEPARATOR = re.compile(r"^\|(?:\s*:?-+:?\s*\|)+$")


def _without_table_headers(block: str) -> str:
    """``block`` less each table's header row and separator (a header names columns, e.g. ``95% CI``)."""
    lines = block.splitlines()
    headers = {k for k in range(len(lines) - 1) if SEPARATOR.match(lines[k + 1].strip())}
    return "\n".join(line for k, line in enumerate(lines) if k not in headers and k - 1 not in headers)


def _results_blocks() -> list[tuple[str, list[str], str]]:
    """Each marked block: (results file, the names of its figures in order, the block's text up to
    the next blank line)."""
    return [(m.group(1), m.group(2).split(), m.group(3)) for m in RESULTS_MARKER.finditer(README.read_text())]


def _figure(record: dict, name: str):
    """A results file's figure by name; ``parameters.NAME`` is a parameter of the command."""
    if name.startswith("parameters."):
        return record["parameters"][name.removeprefix("parameters.")]
    return record["figures"][name]


def block_disagreements(block: str, names: list[str], record: dict) -> list[str]:
    """What a README block says that its results file does not: the block's numbers, in order,
    must equal the numeric figures ``names`` name, in order, at the precision the README prints
    (every number of the block is one of them); each string figure must appear in the block."""
    missing = [name for name in names if name not in record["figures"]
               and name.removeprefix("parameters.") not in record.get("parameters", {})]
    if missing:
        return [f"no figure {name!r} in the results file" for name in missing]
    numeric = [name for name in names if not isinstance(_figure(record, name), str)]
    problems = [f"{name!r} = {_figure(record, name)!r} is not in the block" for name in names
                if isinstance(_figure(record, name), str) and _figure(record, name) not in block]
    printed = FIGURE.findall(_without_table_headers(block))
    if len(printed) != len(numeric):
        return problems + [f"the block prints {len(printed)} numbers {printed} but names {len(numeric)} figures {numeric}"]
    for text, name in zip(printed, numeric):
        value = _figure(record, name)
        if isinstance(value, bool):
            problems.append(f"{name!r} is a bool, not a number")
            continue
        decimals = len(text.partition(".")[2])
        shown = float(text.replace(",", "").replace("−", "-"))
        if abs(shown - value) > 0.5 * 10.0**-decimals + 1e-9:
            problems.append(f"README prints {text} for {name!r}, the results file holds {value!r}")
    return problems


def test_the_readme_checks_every_results_file():
    markers = re.findall(r"^<!-- checked against docs/results", README.read_text(), re.MULTILINE)
    assert len(markers) == len(_results_blocks()), "a results-file marker the test cannot read (its form: " \
        "'<!-- checked against docs/results/NAME.json: figure names -->', then the block, up to a blank line)"
    marked = {name for name, _, _ in _results_blocks()} | {f"docs/results/{t.benchmark}.json" for t in performance.TARGETS}
    committed = {f"docs/results/{path.name}" for path in RESULTS.glob("*.json")}
    assert marked == committed, f"results files without a README block: {committed - marked}; blocks without a file: {marked - committed}"
    assert committed >= {"docs/results/run-text.json", "docs/results/run-generation.json", "docs/results/span_bench.json",
                         "docs/results/inference_bench.json", "docs/results/http_bench.json", "docs/results/text_bench.json"}


@pytest.mark.parametrize("path, names, block", _results_blocks(), ids=lambda v: v if isinstance(v, str) and v.endswith("json") else "")
def test_readme_block_matches_its_results_file(path, names, block):
    from datanet_lab import results_files

    problems = block_disagreements(block, names, results_files.read(ROOT / path))
    assert not problems, f"README block checked against {path}:\n" + "\n".join(problems)


@pytest.mark.parametrize("path", sorted(RESULTS.glob("*.json")), ids=lambda p: p.name)
def test_the_readme_names_the_command_that_writes_each_results_file(path):
    """The README's list of results files names each with the command that refreshes it: the
    make target for a batch, the script for a benchmark."""
    from datanet_lab import results_files

    command = results_files.read(path)["command"]
    listed = re.search(rf"^\| `docs/results/{re.escape(path.name)}` \| (.+) \|$", README.read_text(), re.MULTILINE)
    assert listed, f"README's table of results files lacks {path.name}"
    program = {"--text": "make run-text", "--generation": "make run-generation"}.get(command.split()[2]) \
        if command.startswith("datanet-lab run") else command.split()[1]
    if "lm_model pretrained" in command:
        program = "make run-finetune"
    assert program in listed.group(1), f"README says {path.name} comes from {listed.group(1)!r}; it was written by {command!r}"


def test_a_block_disagreeing_with_its_results_file_is_reported():
    record = {"command": "x", "parameters": {"seeds": 2},
              "figures": {"a": 0.9114, "b": 1244, "c": -0.0061, "d": "g0003", "e": 17.9}}
    names = ["b", "a", "c", "parameters.seeds", "d", "e"]
    good = "| 1,244 texts | 0.911 ± GPT-2 | −0.006 | p50 over 2 seeds, 3,072-token g0003 | 18%. |\n"
    assert block_disagreements(good, names, record) == []
    assert block_disagreements(good.replace("0.911", "0.912"), names, record)  # a wrong figure
    assert block_disagreements(good.replace("0.911", "0.91"), names, record) == []  # fewer decimals, still right
    assert block_disagreements(good.replace("1,244", "1,245"), names, record)
    assert block_disagreements(good.replace("g0003", "g0004"), names, record)  # a wrong string figure
    assert block_disagreements(good.replace("18%", "18% of 5"), names, record)  # a number no figure names
    assert block_disagreements(good, [*names, "missing"], record)
    table = "| n | share (95% CI) |\n|---|---|\n| 1,244 | 0.911 |\n"
    assert block_disagreements(table, ["b", "a"], record) == []  # the header's 95 is no figure
    assert block_disagreements(table + "| 5 | 0.911 |\n", ["b", "a"], record)


def test_the_performance_table_is_the_one_the_results_files_give():
    """The README's performance table is written from the benchmarks' results files, not typed."""
    text = README.read_text()
    assert performance.START in text and performance.END in text, "README lacks the performance table's markers"
    written = text.split(performance.START, 1)[1].split(performance.END, 1)[0].strip()
    assert written == performance.table(RESULTS), "rerun: python -m datanet_lab.performance README.md"


def test_the_performance_table_says_met_or_missed_by_how_much(tmp_path):
    for target in performance.TARGETS:
        path = tmp_path / f"{target.benchmark}.json"
        record = json.loads(path.read_text()) if path.exists() else {"figures": {}}
        record["figures"][target.figure] = target.limit * (1.25 if target.at_most else 0.8)
        path.write_text(json.dumps(record))
    rows = performance.table(tmp_path).splitlines()[2:]
    assert len(rows) == len(performance.TARGETS) and all(row.endswith("| missed by 25% |") or row.endswith(
        "| missed by 20% |") for row in rows)
    readme = tmp_path / "README.md"
    readme.write_text(f"before\n{performance.START}\nold\n{performance.END}\nafter\n")
    performance.rewrite(readme, tmp_path)
    assert readme.read_text() == f"before\n{performance.START}\n{performance.table(tmp_path)}\n{performance.END}\nafter\n"
    (tmp_path / "span_bench.json").unlink()
    with pytest.raises(FileNotFoundError):
        performance.table(tmp_path)
