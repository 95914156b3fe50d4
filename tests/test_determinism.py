"""Same parameters and seed, same numbers: the batch's steps executed twice in-process (the
papermill batch itself runs once, in tests/test_runner.py; its notebooks only call these steps)."""

import pytest

import ledger
from datanet_lab import pipeline, provenance
from datanet_lab.experiments.compare import compare, default_methods
from datanet_lab.params import DEFAULTS
from datanet_lab.experiments.problem import Problem
from datanet_lab.serving.sim import serve_sim


def _paid_and_served(directory, params: dict) -> dict:
    """Build, train, attribute, pay and serve 50 inferences in ``directory``; what must reproduce."""
    run = pipeline.open_run(str(directory), **params)
    payouts = pipeline.pay(run)
    serve_sim(run.directory, requests=50, fee=1000, seed=run.params["seed"], log=lambda line: None)
    with ledger.Ledger(run.ledger_path) as book:
        entries = [(e.kind, e.actor, e.timestamp, e.payload) for e in book.entries()]
        log_key = book.log_public_key
    return {"payouts": payouts.to_csv(index=False), "entries": entries, "log_key": log_key,
            "scores": (run.directory / "attribution" / "scores.npy").read_bytes()}


@pytest.mark.parametrize("model", ["logreg", "mlp"])
def test_the_same_seed_gives_the_same_payouts_scores_and_entry_payloads(model, tiny_params, tmp_path):
    params = {k: v for k, v in tiny_params.items() if k in DEFAULTS} | {"model": model}
    first, second = (_paid_and_served(tmp_path / name, params) for name in ("a", "b"))
    assert first["payouts"] == second["payouts"] and first["scores"] == second["scores"]
    assert first["entries"] == second["entries"]
    assert first["log_key"] != second["log_key"]  # each run signs with its own random keys
    hashes = [provenance.output_hashes(tmp_path / name) for name in ("a", "b")]
    assert hashes[0] == hashes[1] and provenance.LEDGER_ENTRIES in hashes[0]  # what reproduce compares
    assert {"payouts.csv", "attribution/scores.npy", "inference/receipts.jsonl"} <= set(hashes[0])
    other_seed = _paid_and_served(tmp_path / "c", params | {"seed": 1})
    assert other_seed["payouts"] != first["payouts"]  # the comparison can fail


def test_the_same_seed_gives_the_same_comparison_table(tmp_path):
    problem = Problem.planted("wine", "", "honest:2,noisy:1,duplicate:1,out_of_domain:1", 5, 0.3, 0, 0.01)
    tables = [compare(problem, default_methods(0, projection_dim=32), tmp_path / name, n_subsets=6, seed=0,
                      shapley=False).table for name in ("a", "b")]
    timing = ["seconds", "peak_mib"]  # wall time and memory are measured, not computed
    assert tables[0].drop(columns=timing).equals(tables[1].drop(columns=timing))
