"""Bad input found by trying: each is refused up front with exit code 2 and a message naming the
file, field or value, and nothing is written (the directory holding the inputs is unchanged)."""

import hashlib
from pathlib import Path

import pandas as pd
import pytest

from datanet_lab.cli import main
from datanet_lab.params import check
from datanet_lab.sweeps.sweep_config import load

WINE = ["-p", "dataset", "wine", "-p", "n_contributors", "5", "-p", "scenario", "honest:5"]


def snapshot(directory: Path) -> dict[str, str]:
    """Every path under ``directory`` with the SHA-256 of its bytes (directories: "")."""
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else ""
            for p in sorted(directory.rglob("*"))}


def refused(tmp_path: Path, capsys, argv: list[str]) -> str:
    """Run ``argv``; check exit code 2, one line on stderr and that ``tmp_path`` is unchanged;
    return stderr."""
    before = snapshot(tmp_path)
    assert main(argv) == 2
    assert snapshot(tmp_path) == before
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("datanet-lab: error: "), err
    return err


RUN_CASES = {
    "repeated -p": (["-p", "epochs", "2", "-p", "epochs", "3"], "parameter 'epochs' given 2 times ('2', '3'): give it once"),
    "compare_l2 NaN": (["-p", "compare_l2", "nan"], "parameter 'compare_l2' must be a finite number within float32's range"),
    "compare_l2 inf": (["-p", "compare_l2", "inf"], "'compare_l2' must be a finite number within float32's range (magnitude <= 3.403e+38), got inf"),
    "compare_l2 beyond float32": (["-p", "compare_l2", "1e39"], "'compare_l2' must be a finite number within float32's range (magnitude <= 3.403e+38), got 1e+39"),
    "noise_rate NaN": (["-p", "noise_rate", "nan"], "parameter 'noise_rate' must be a finite number"),
    "reward_pool beyond JSON": (["-p", "reward_pool", str(2**53)], f"parameter 'reward_pool' = {2**53} is beyond the integers JSON carries exactly"),
    "reward_pool plus stakes beyond JSON": (["-p", "reward_pool", str(2**53 - 1000)],
                                            f"reward_pool={2**53 - 1000} plus the 10000 units its 10 contributors stake"),
    "n_contributors 10**20": (["-p", "n_contributors", str(10**20)], f"parameter 'n_contributors' = {10**20} is beyond"),
    "n_contributors beyond the data": (["-p", "n_contributors", str(10**15)],
                                       f"n_contributors={10**15}: more contributors than the 1437 training samples dataset 'digits' leaves"),
    "one contributor": (["-p", "n_contributors", "1"], "n_contributors must be >= 2 (payouts and the method comparisons"),
    "negative seed": (["-p", "seed", "-1"], "seed must be in [0, 4294967295] (scikit-learn's random_state), got -1"),
    "seed beyond scikit-learn": (["-p", "seed", str(2**32)], f"seed must be in [0, 4294967295] (scikit-learn's random_state), got {2**32}"),
    "scenario for another count": (["-p", "n_contributors", "6", "-p", "scenario", "honest:5"],
                                   "scenario 'honest:5' names 5 contributors but n_contributors is 6"),
    "a text parameter in the default batch": (["-p", "text_epochs", "3"],
                                              "unknown parameter(s) ['text_epochs']: no notebook declares them"),
    "text_max_tokens beyond MiniLM": (["--text", "-p", "text_max_tokens", "600"],
                                      "text_max_tokens must be in [8, 512] (MiniLM's position limit), got 600"),
    "unknown text behaviour": (["--text", "-p", "text_scenario", "honest:2,sybil:1"],
                               "unknown behaviour 'sybil' in scenario 'honest:2,sybil:1'"),
    "missing text file": (["--text", "-p", "text_dataset", "missing.jsonl"], "text file not found: missing.jsonl"),
    "unknown text method": (["--text", "-p", "text_attribution_method", "magic"], "unknown text_attribution_method 'magic'"),
    "text_per_package 10**9": (["--text", "-p", "text_per_package", str(10**9)],
                               "text_per_package must be <= 1000 (numpy holds about 1,200 docstrings"),
    "text_scenario of 10**9 contributors": (["--text", "-p", "text_scenario", f"honest:{10**9}"],
                                            f"text_scenario 'honest:{10**9}' names {10**9} contributors but text_dataset "
                                            "'docstrings' with text_per_package=60 (7 packages) leaves at most 336 training texts"),
    "docstrings too few for the text scenario": (["--text", "-p", "text_per_package", "1"],
                                                 "names 9 contributors but text_dataset 'docstrings' with text_per_package=1 "
                                                 "(7 packages) leaves at most 6 training texts"),
    "gen_scenario without one honest contributor per package": (
        ["--generation", "-p", "gen_scenario", "honest:4,memorised:1"],
        "gen_scenario: scenario 'honest:4,memorised:1' has 4 honest contributors but packages names 5"),
    "gen_scenario with two memorised": (["--generation", "-p", "gen_scenario", "honest:5,memorised:2"],
                                        "gen_scenario: at most one memorised contributor (they share one passage); "
                                        "scenario 'honest:5,memorised:2' has 2"),
    "gen_scenario of 10**9 honest contributors": (["--generation", "-p", "gen_scenario", f"honest:{10**9}"],
                                                  f"gen_scenario: scenario 'honest:{10**9}' has {10**9} honest contributors"),
    "gen_scenario of 10**9 duplicates": (["--generation", "-p", "gen_scenario", f"honest:5,duplicate:{10**9}"],
                                         f"gen_scenario 'honest:5,duplicate:{10**9}' with gen_per_contributor=6 needs "
                                         f"{6 * (10**9 + 5)} submitted documents; at most 5000"),
    "gen_scenario beyond the off-topic docstrings": (["--generation", "-p", "gen_scenario", "honest:5,off_topic:60"],
                                                     "with gen_per_contributor=6 needs 360 off-topic docstrings; at most 300"),
    "gen_per_contributor beyond the docstrings": (["--generation", "-p", "gen_per_contributor", "1000"],
                                                  "with gen_per_contributor=1000 needs 1212 docstrings from each of its 5 "
                                                  "packages; at most 500"),
    "gen_max_new_tokens beyond the positions": (["--generation", "-p", "gen_max_new_tokens", "65"],
                                                "gen_max_new_tokens must be <= 64 (the GPT-2's 128 positions less a "
                                                "prompt's eot and up to 63 tokens), got 65"),
    "gen_temperature 1e-40": (["--generation", "-p", "gen_temperature", "1e-40"],
                              "gen_temperature must be 0 (greedy) or in [0.01, 10]"),
    "gen_width 2**20": (["--generation", "-p", "gen_width", str(2**20)], "gen_width must be <= 1024 (GPT-2 medium's width"),
    "inference_fee 2**53-1": (["-p", "inference_fee", str(2**53 - 1)],
                              f"inference_fee={2**53 - 1} x inference_requests=2000 = {(2**53 - 1) * 2000} units (the epoch "
                              "pays them all, split by role) passes the ledger's integer range"),
    "inference_requests 10**9": (["-p", "inference_requests", str(10**9)],
                                 "inference_requests must be <= 100000 (notebook 09 keeps every inference's credit"),
    "rounds 10**6": (["-p", "rounds", str(10**6)], "rounds must be <= 100 (each round retrains, re-attributes and pays"),
    "rounds beyond the dataset": (["-p", "dataset", "wine", "-p", "n_contributors", "5", "-p", "rounds", "30"],
                                  "rounds=30: dataset 'wine' leaves 142 training rows, fewer than the plan draws with one "
                                  "row per batch (210)"),
    "round_rows 2**53-1": (["-p", "round_rows", str(2**53 - 1)],
                           f"round_rows={2**53 - 1}: more rows per batch than the 1437 training rows dataset 'digits' leaves"),
}


@pytest.mark.parametrize("case", RUN_CASES)
def test_bad_run_parameter(case, tmp_path, capsys):
    args, message = RUN_CASES[case]
    assert message in refused(tmp_path, capsys, ["run", *args, "--out", str(tmp_path / "results")])


def test_a_text_file_with_fewer_rows_than_contributors(tmp_path, capsys):
    path = tmp_path / "notes.csv"
    pd.DataFrame({"text": [f"note number {i} about things" for i in range(10)], "label": ["a", "b"] * 5}).to_csv(path, index=False)
    err = refused(tmp_path, capsys, ["run", "--text", "-p", "text_dataset", str(path), "--out", str(tmp_path / "results")])
    assert ("text_scenario 'honest:4,noisy:1,duplicate:1,paraphrase_sybil:1,off_topic:1,backdoor:1' names 9 "
            f"contributors but text file {path} (10 rows) leaves at most 8 training texts") in err


def write_table(path: Path, frame: pd.DataFrame) -> None:
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path)


FILES = {
    "label holds a mapping": ("nested.parquet", pd.DataFrame({"a": [1.0, 2.0, 3.0], "y": [{"k": 1}, {"k": 2}, {"k": 1}]}),
                              "label column 'y' of {path} holds {{'k': 1}} (dict) in data row 1: a label must be a single value"),
    "label holds a list": ("listed.parquet", pd.DataFrame({"a": [1.0, 2.0, 3.0], "y": [[1], [2], [1]]}),
                           "label column 'y' of {path} holds array([1]) (ndarray) in data row 1"),
    "one label class": ("one.csv", pd.DataFrame({"a": [1.0, 2.0, 3.0], "y": ["cat", "cat", "cat"]}),
                        "label column 'y' of {path} holds 1 class(es) ['cat']: classification needs at least 2"),
}


@pytest.mark.parametrize("case", FILES)
def test_bad_dataset_file(case, tmp_path, capsys):
    name, frame, message = FILES[case]
    path = tmp_path / name
    write_table(path, frame)
    args = ["run", "-p", "dataset", str(path), "-p", "label_column", "y", "--out", str(tmp_path / "results")]
    assert message.format(path=path) in refused(tmp_path, capsys, args)


def test_a_repeated_column_name_is_refused(tmp_path, capsys):
    path = tmp_path / "twice.csv"
    path.write_text("a,y,y\n1,0,0\n2,1,1\n3,0,0\n")
    args = ["run", "-p", "dataset", str(path), "-p", "label_column", "y", "--out", str(tmp_path / "results")]
    assert f"dataset file {path} names column(s) ['y'] more than once" in refused(tmp_path, capsys, args)


def test_out_naming_a_file_or_an_impossible_path(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    err = refused(tmp_path, capsys, ["run", *WINE, "--out", str(afile)])
    assert f"results directory {afile} exists and is not a directory" in err
    err = refused(tmp_path, capsys, ["run", *WINE, "--out", str(afile / "results")])
    assert f"cannot create the results directory {afile / 'results'}: Not a directory" in err
    err = refused(tmp_path, capsys, ["sweep", str(write_sweep(tmp_path, "s.yaml", "fixed: {dataset: wine}\n")), "--out", str(afile)])
    assert f"runs directory {afile} exists and is not a directory" in err


def test_default_scenario_scales_to_the_contributor_count():
    assert check({"dataset": "wine", "n_contributors": 6})["scenario"] == "honest:4,noisy:1,duplicate:1"
    assert check({"dataset": "wine", "n_contributors": 2})["scenario"] == "honest:1,noisy:1"
    assert check({"dataset": "wine"})["scenario"] == "honest:6,noisy:2,duplicate:1,out_of_domain:1"
    assert check({"dataset": "wine", "n_contributors": 6, "scenario": "honest:6"})["scenario"] == "honest:6"


def write_sweep(directory: Path, name: str, text: str | bytes) -> Path:
    path = directory / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


FIXED = 'fixed: {dataset: wine, n_contributors: 5, scenario: "honest:5"}\n'
SWEEPS = {
    "not UTF-8": (b"name: caf\xe9\n", "cannot read sweep file {path}: not UTF-8 text (byte 0xe9 at offset 9)"),
    "fixed a list": ("fixed: [dataset, wine]\n", "{path}: fixed must be a mapping (name: value), got ['dataset', 'wine'] (list)"),
    "fixed a string": ("fixed: wine\n", "{path}: fixed must be a mapping (name: value), got 'wine' (str)"),
    "grid a list": ("grid: [seed, 1]\n", "{path}: grid must be a mapping (name: value), got ['seed', 1] (list)"),
    "product a list": ("grid: {product: [seed, 1]}\n", "{path}: grid.product must be a mapping (name: value), got ['seed', 1] (list)"),
    "zip a mapping": ("grid: {zip: {seed: [1]}}\n", "{path}: grid.zip must be a list of mappings, got {{'seed': [1]}} (dict)"),
    "name null": ("name: null\n", "{path}: name must be a str, got None (NoneType)"),
    "name a number": ("name: 3\n", "{path}: name must be a str, got 3 (int)"),
    "name a list": ("name: [a]\n", "{path}: name must be a str, got ['a'] (list)"),
    "name leaves --out": ("name: ../../x\n", "{path}: name '../../x' must be one path component"),
    "name hidden": ("name: .x\n", "{path}: name '.x' must be one path component"),
    "no notebooks": ("notebooks: []\n", "{path}: notebooks must be a non-empty list of notebook file names, got []"),
    "unknown kernel": ("kernel: no-such-kernel\n", "{path}: kernel 'no-such-kernel' is not installed; installed: ["),
    "a million runs": (FIXED + "grid: {product: {seed: [%s], epochs: [%s]}}\n" % (",".join(map(str, range(1000))), ",".join(map(str, range(1, 1001)))),
                       "{path}: the grid has 1,000,000 runs (1000 (grid.product.seed) x 1000 (grid.product.epochs)), more than --max-runs 10,000"),
    "NaN in a grid": (FIXED + "grid: {product: {noise_rate: [0.1, .nan]}}\n",
                      "{path}: grid.product.noise_rate: parameter 'noise_rate' must be a finite number within float32's range"),
    "10**30 in a grid": (FIXED + "grid: {zip: [{seed: [0, %d]}]}\n" % 10**30,
                         "{path}: grid.zip[0].seed: parameter 'seed' = %d is beyond the integers JSON carries exactly" % 10**30),
    "1e39 in fixed": (FIXED.replace("}", ", compare_l2: 1.0e+39}"), "{path}: fixed.compare_l2: parameter 'compare_l2' must be a finite number"),
    "reward_pool beyond JSON": (FIXED.replace("}", f", reward_pool: {2**53}}}"), "{path}: fixed.reward_pool: parameter 'reward_pool'"),
    "one contributor": ("fixed: {dataset: wine}\ngrid: {product: {n_contributors: [1, 2]}}\n",
                        "{path}: grid.product.n_contributors: n_contributors must be >= 2"),
}


@pytest.mark.parametrize("case", SWEEPS)
def test_bad_sweep(case, tmp_path, capsys):
    text, message = SWEEPS[case]
    path = write_sweep(tmp_path, "bad.yaml", text)
    assert message.format(path=path) in refused(tmp_path, capsys, ["sweep", str(path), "--out", str(tmp_path / "runs")])


def test_max_runs_is_an_option(tmp_path, capsys):
    path = write_sweep(tmp_path, "s.yaml", FIXED + "grid: {product: {seed: [0, 1, 2]}}\n")
    err = refused(tmp_path, capsys, ["sweep", str(path), "--max-runs", "2", "--out", str(tmp_path / "runs")])
    assert "the grid has 3 runs (3 (grid.product.seed)), more than --max-runs 2" in err
    assert len(load(path, max_runs=3).runs) == 3


def test_a_sweep_scales_the_default_scenario_too(tmp_path):
    path = write_sweep(tmp_path, "s.yaml", "fixed: {dataset: wine}\ngrid: {product: {n_contributors: [2, 6]}}\n")
    assert [r.params["scenario"] for r in load(path).runs] == ["honest:1,noisy:1", "honest:4,noisy:1,duplicate:1"]
