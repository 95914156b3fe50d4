"""The generation run end to end on a tiny LM Datanet: one ``generation_payment`` per generation
(fee conserved, payees registered, the credit table agreeing), span credit on the run's real
corpus, the offline re-check accepting the run and naming every forgery, manifests, determinism,
the LOCO comparison against a direct retrain, the ``gen_*`` parameter checks, and the reference
span engine paying what the infini-gram engine pays.

The tiny run lives under a path holding the words the infini-gram engine sorts its files by
(``table``, ``offset``, ...): a run directory works wherever it is.
"""

import copy
import hashlib
import json
import math
import os
import re
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import ledger  # noqa: E402
from attribution.base import AttributionError  # noqa: E402
from attribution.spans import ReferenceSpanMatcher, SpanIndex  # noqa: E402
from datanet.errors import DataSourceError  # noqa: E402
from datanet.models import lm  # noqa: E402
from datanet_lab import cli, provenance  # noqa: E402
from datanet_lab.experiments.compare_generation import compare_generation  # noqa: E402
from datanet_lab.generation_check import check_generations  # noqa: E402
from datanet_lab.params import ParameterError, resolve  # noqa: E402
from datanet_lab.pipeline import generation as gen  # noqa: E402
from datanet_lab.pipeline.generation.pay_step import corpus, credit_spans  # noqa: E402
from datanet_lab.pipeline.manifest import ManifestError  # noqa: E402
from datanet_lab.pipeline.run import PAYOUT_AUTHORITY, Run, open_run  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY_GEN = {"gen_per_contributor": 2, "gen_epochs": 3, "gen_width": 32, "gen_vocab_size": 512, "gen_prompts": 3,
            "gen_max_new_tokens": 24, "gen_min_span": 3, "gen_temperature": 0.0}
"""A run of a few seconds whose greedy generations hold spans: the memorised passage's opening
(one payee) and whitespace runs that several contributors' documents share."""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny run, stepped through pay; the fresh outputs of each step."""
    run = gen.generation_run(open_run(str(tmp_path_factory.mktemp("stable-table-offset-unigram")), **TINY_GEN))
    dn, trained, index = gen.build_generation(run), gen.train_generation(run), gen.index_generation(run)
    generations = gen.generate_texts(run)
    return {"run": run, "dn": dn, "trained": trained, "index": index, "generations": generations,
            "table": gen.pay_generation(run)}


def payments(run: Run) -> list[ledger.Entry]:
    with run.ledger() as book:
        return list(book.entries("generation_payment"))


def head(run: Run) -> ledger.Entry:
    with run.ledger() as book:
        return book.head()


def copy_run(tiny, tmp_path_factory, name: str) -> Run:
    """A copy of the tiny run directory (keystore included) to forge or damage."""
    target = tmp_path_factory.mktemp(name) / "generation"
    shutil.copytree(tiny["run"].directory, target)
    return Run(target, tiny["run"].params)


# --- 1. one payment per generation --------------------------------------------------------------


def test_every_generation_is_paid_once_its_fee_conserved_to_registered_payees(tiny):
    run, generations, table = tiny["run"], tiny["generations"], tiny["table"]
    assert ledger.verify(run.ledger_path).ok
    entries = payments(run)
    assert [e.payload["generation_id"] for e in entries] == [f"g{k:04d}" for k in range(run.params["gen_prompts"])]
    assert len(entries) == len(generations) == run.params["gen_prompts"]
    with run.ledger() as book:
        registered = set(book.public_keys())
    fee = run.params["generation_fee"]
    for entry, generation in zip(entries, generations):
        paid = entry.payload
        assert entry.actor == PAYOUT_AUTHORITY
        assert paid["fee"] == fee and sum(paid["payouts"].values()) + paid["unallocated"] == fee
        assert set(paid["payouts"]) <= registered and all(u > 0 for u in paid["payouts"].values())
        assert paid["evidence"]["generated_ids"] == list(generation.generated_ids)
        assert paid["evidence"]["prompt_ids"] == list(generation.prompt_ids)
        rows = table[table["generation"] == paid["generation_id"]]
        assert sorted(rows["contributor"]) == list(tiny["dn"].contributors)
        assert {c: u for c, u in zip(rows["contributor"], rows["units"]) if u} == paid["payouts"]
        credited = {c: v for c, v in zip(rows["contributor"], rows["credit"]) if v > 0}
        assert credited == pytest.approx(paid["evidence"]["credit"], rel=1e-12)
        total = sum(credited.values())
        for contributor, units in paid["payouts"].items():  # largest remainders: within a unit of the exact share
            assert abs(units - fee * credited[contributor] / total) < 1
        assert (paid["unallocated"] == fee) == (not paid["evidence"]["spans"])
    assert any(e.payload["payouts"] for e in entries), "the tiny run should pay at least one generation"


# --- 2. the credit rule on the run's corpus ----------------------------------------------------


def test_the_memorised_passage_is_credited_to_its_contributor_and_random_ids_to_nobody(tiny):
    run, dn, trained, index = tiny["run"], tiny["dn"], tiny["trained"], tiny["index"]
    (memoriser,) = [c for c, b in dn.behaviours.items() if b == "memorised"]
    eot = trained.tokenizer.convert_tokens_to_ids(lm.EOT)
    ids = tuple(lm.encode_documents(trained.tokenizer, [dn.memorised_passage])[0])
    passage = lm.Generation("", (eot,), ids, dn.memorised_passage)
    min_len, max_count = run.params["gen_min_span"], run.params["gen_max_count"]
    spans = index.spans(list(passage.generated_ids), min_len, max_count)
    reference = ReferenceSpanMatcher(trained.documents, len(trained.tokenizer))
    assert spans == reference.spans(list(ids), min_len, max_count)
    assert sum(s.end - s.start for s in spans) >= 0.9 * len(ids)
    with run.ledger() as book:
        seq = {e.payload["sample_id"]: e.seq for e in book.entries("contribution")}
    docs = corpus(dn, trained.documents, len(trained.tokenizer), seq)
    credit = credit_spans(spans, passage.generated_ids, docs).credit
    assert credit[memoriser] / credit.sum() > 0.5
    # every occurrence lies in the memoriser's documents, so it holds each span's whole weight:
    # -sum log p(t) under add-one unigram counts of the training tokens
    counts = Counter(t for d in trained.documents for t in d)
    n_tokens, vocab = sum(counts.values()), len(trained.tokenizer)
    assert all(docs.contributors[d] == memoriser for s in spans for d in s.documents)
    weight = sum(-math.log((counts[t] + 1) / (n_tokens + vocab)) for s in spans for t in ids[s.start:s.end])
    assert credit[memoriser] == pytest.approx(weight, rel=1e-9)

    noise = np.random.default_rng(0).integers(1, vocab, size=48).tolist()
    assert index.spans(noise, min_len, max_count) == [] == reference.spans(noise, min_len, max_count)
    assert credit_spans([], tuple(noise), docs).credit.sum() == 0


# --- 3. the offline re-check -------------------------------------------------------------------


def test_check_generations_accepts_every_payment_of_the_run(tiny):
    checks = check_generations(tiny["run"].directory)
    assert [c.generation_id for c in checks] == [e.payload["generation_id"] for e in payments(tiny["run"])]
    assert all(c.ok and str(c).startswith("OK") for c in checks), [str(c) for c in checks]
    assert cli.main(["ledger", "check-generation", str(tiny["run"].directory)]) == 0


def forgeries(entries: list[ledger.Entry], registered: set[str]) -> dict[str, tuple[dict, str]]:
    """Validly shaped copies of real payments, each altered once, with what the check must name."""
    spanned = next(e.payload for e in entries if e.payload["evidence"]["spans"])
    paid = next(e.payload for e in entries if e.payload["payouts"])
    offset = copy.deepcopy(spanned)
    offset["evidence"]["spans"][0]["occurrences"][0][2] += 1
    moved = copy.deepcopy(paid)
    payees = sorted(moved["payouts"])
    if len(payees) > 1:  # one unit from one payee to another
        moved["payouts"][payees[0]] -= 1
        moved["payouts"][payees[1]] += 1
    else:  # half of the only payee's units to a registered contributor the rule did not pay
        other = sorted(c for c in registered if c.startswith("c") and c not in payees)[0]
        half = moved["payouts"][payees[0]] // 2
        moved["payouts"] = {payees[0]: moved["payouts"][payees[0]] - half, other: half}
    ids = copy.deepcopy(spanned)
    first = ids["evidence"]["spans"][0]["start"]
    ids["evidence"]["generated_ids"][first] = (ids["evidence"]["generated_ids"][first] + 1) % 500 + 1
    fee = copy.deepcopy(spanned)
    fee["fee"] += 1
    fee["unallocated"] += 1
    limits = copy.deepcopy(spanned)
    limits["evidence"]["min_len"] += 1
    return {"offset": (offset, "spans differ"), "units": (moved, "payouts differ"),
            "generated_ids": (ids, "evidence generated_ids differ from the run's generation"),
            "fee": (fee, "fee 1001 units, the run pays 1000"), "min_len": (limits, "evidence min_len is")}


def test_forged_payments_are_reported_failed_naming_what_differs(tiny, tmp_path_factory, capsys):
    forged = copy_run(tiny, tmp_path_factory, "forged")
    entries = payments(forged)
    with forged.ledger() as book:
        registered = set(book.public_keys())
        cases = forgeries(entries, registered)
        appended = {name: book.append("generation_payment", PAYOUT_AUTHORITY, payload).seq
                    for name, (payload, _) in cases.items()}
    assert ledger.verify(forged.ledger_path).ok  # signed by the payout authority: only the re-check can tell
    checks = {c.seq: c for c in check_generations(forged.directory)}
    assert all(checks[e.seq].ok for e in entries)
    for name, (payload, reason) in cases.items():
        check = checks[appended[name]]
        assert not check.ok and check.generation_id == payload["generation_id"], name
        assert check.problem.startswith(reason), (name, check.problem)
        assert str(check).startswith(f"FAILED {payload['generation_id']} (entry {appended[name]})")
    assert "span 0" in checks[appended["offset"]].problem
    capsys.readouterr()
    assert cli.main(["ledger", "check-generation", str(forged.directory)]) == 1
    out = capsys.readouterr().out
    assert out.count("FAILED") == 1 + len(cases)  # one line each and the summary
    assert f"{len(entries)} of {len(entries) + len(cases)} generation payments re-check; {len(cases)} FAILED" in out


def test_a_generation_paid_twice_fails_even_when_its_evidence_rechecks(tiny, tmp_path_factory):
    forged = copy_run(tiny, tmp_path_factory, "twice")
    entries = payments(forged)
    original = next(e for e in entries if e.payload["payouts"])
    again = copy.deepcopy(original.payload)
    contributor = next(iter(again["evidence"]["credit"]))
    again["evidence"]["credit"][contributor] *= 1 + 1e-12  # another statement, the same credit within the checker's rtol
    with forged.ledger() as book:
        seq = book.append("generation_payment", PAYOUT_AUTHORITY, again).seq
    checks = {c.seq: c for c in check_generations(forged.directory)}
    assert all(checks[e.seq].ok for e in entries)
    assert not checks[seq].ok
    assert checks[seq].problem == f"generation {again['generation_id']} is paid again: entry {original.seq} paid it first"


def test_a_damaged_index_corpus_is_detected(tiny, tmp_path_factory):
    damaged = copy_run(tiny, tmp_path_factory, "damaged")
    folder = damaged.directory / "index"
    name = "tokenized" + ".0"
    tokens = np.fromfile(folder / name, dtype="<u2")
    position = len(tokens) // 2 + int(tokens[len(tokens) // 2] == 0xFFFF)  # a token, not a separator
    tokens[position] = (int(tokens[position]) + 1) % 500
    tokens.tofile(folder / name)
    with pytest.raises(AttributionError, match=name):
        check_generations(damaged.directory)
    # with the index's own record of its hash forged too, the documents no longer match the dataset's
    meta = folder / "datanet-span-index.json"
    recorded = json.loads(meta.read_text())
    recorded["corpus_sha256"] = hashlib.sha256((folder / name).read_bytes()).hexdigest()
    meta.write_text(json.dumps(recorded))
    checks = check_generations(damaged.directory)
    assert checks and all(not c.ok and "index's documents" in c.problem for c in checks)


@pytest.mark.parametrize("part, error, names", [
    ("dataset", DataSourceError, "lm_datanet.json"),
    ("index", FileNotFoundError, "datanet-span-index.json is missing"),
    ("training/checkpoints", FileNotFoundError, "no epoch-\\* checkpoint"),
])
def test_a_run_missing_what_the_check_reads_is_refused_naming_it(tiny, tmp_path_factory, part, error, names):
    damaged = copy_run(tiny, tmp_path_factory, "partial")
    shutil.rmtree(damaged.directory / part)
    with pytest.raises(error, match=names):
        check_generations(damaged.directory)


# --- 4. manifests ------------------------------------------------------------------------------


def damage(run: Run, part: str) -> Path:
    """Damage one file the check reads: truncate the last checkpoint's weights or overwrite a JSON file."""
    path = run.directory / part.replace("LAST", sorted((run.directory / "training" / "checkpoints").glob("epoch-*"))[-1].name)
    if path.suffix == ".safetensors":
        path.write_bytes(path.read_bytes()[:100])
    else:
        path.write_text("not JSON {")
    return path


@pytest.mark.parametrize("part, names", [
    ("training/checkpoints/LAST/model.safetensors", "LAST: cannot be loaded as the trained model .*SafetensorError"),
    ("training/checkpoints/LAST/tokenizer.json", "LAST: cannot be loaded as the trained model .*JSONDecodeError"),
    ("dataset/lm_datanet.json", "lm_datanet.json: cannot be read: JSONDecodeError"),
    ("manifests/pay.json", "pay.json: cannot be read: JSONDecodeError"),
])
def test_a_damaged_run_file_is_one_line_naming_it_and_exit_2(tiny, tmp_path_factory, capsys, part, names):
    damaged = copy_run(tiny, tmp_path_factory, "damaged-file")
    path = damage(damaged, part)
    names = names.replace("LAST", path.parent.name)
    with pytest.raises(DataSourceError, match=names):
        check_generations(damaged.directory)
    capsys.readouterr()
    assert cli.main(["ledger", "check-generation", str(damaged.directory)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert re.match(rf"datanet-lab: error: {re.escape(str(damaged.directory))}/.*{names}", captured.err)


def test_a_payment_with_malformed_evidence_fails_naming_the_field(tiny, tmp_path_factory, capsys):
    forged = copy_run(tiny, tmp_path_factory, "malformed")
    original = next(e.payload for e in payments(forged) if e.payload["evidence"]["credit"])
    no_spans, text_credit = copy.deepcopy(original), copy.deepcopy(original)
    del no_spans["evidence"]["spans"]
    text_credit["evidence"]["credit"] = {c: str(v) for c, v in text_credit["evidence"]["credit"].items()}
    with forged.ledger() as book:
        seqs = [book.append("generation_payment", PAYOUT_AUTHORITY, p).seq for p in (no_spans, text_credit)]
    checks = {c.seq: c for c in check_generations(forged.directory)}
    assert checks[seqs[0]].problem == "generation_payment evidence payload: required field 'spans' is missing"
    assert checks[seqs[1]].problem.startswith("generation_payment evidence payload: field 'credit' must be a JSON "
                                              "object of finite numbers, got {")
    capsys.readouterr()
    assert cli.main(["ledger", "check-generation", str(forged.directory)]) == 1
    assert capsys.readouterr().out.count("FAILED") == 3  # the two entries and the summary


def test_the_reference_engine_pays_what_the_default_engine_pays(tiny, tmp_path_factory):
    run = gen.generation_run(open_run(str(tmp_path_factory.mktemp("reference")), **TINY_GEN, span_engine="reference"))
    table = gen.pay_generation(run)
    assert not (run.directory / "index" / "table.0").exists()  # built without infini-gram's indexer
    assert gen.index_generation(run).engine == "reference"
    pd.testing.assert_frame_equal(table, tiny["table"])
    assert [e.payload for e in payments(run)] == [e.payload for e in payments(tiny["run"])]
    assert all(c.ok for c in check_generations(run.directory))
    # the default engine's spans of the generations, searched together, are infini-gram's engine's
    index, limits = tiny["index"], (run.params["gen_min_span"], run.params["gen_max_count"])
    queries = [list(g.generated_ids) for g in tiny["generations"]]
    assert index.engine == "vectorized" and any(index.spans_batch(queries, *limits))
    infini_gram = SpanIndex.open(index.directory, "infini_gram")
    assert index.spans_batch(queries, *limits) == [infini_gram.spans(q, *limits) for q in queries]


def test_steps_reuse_their_outputs_and_refuse_another_min_span(tiny):
    run = tiny["run"]
    before = head(run)
    assert gen.generate_texts(run) == tiny["generations"]
    pd.testing.assert_frame_equal(gen.pay_generation(run), tiny["table"])
    assert head(run) == before
    credit = {p.name: p.read_bytes() for p in (run.directory / "credit").iterdir()}
    other = gen.generation_run(open_run(str(run.directory.parent), **{**TINY_GEN, "gen_min_span": 4}))
    with pytest.raises(ManifestError, match="gen_min_span=3.*gen_min_span=4"):
        gen.pay_generation(other)
    assert head(run) == before
    assert {p.name: p.read_bytes() for p in (run.directory / "credit").iterdir()} == credit


# --- 5. determinism ----------------------------------------------------------------------------


def fresh_run(directory: Path, seed: int) -> tuple[str, bytes, str]:
    """Generations, credit table and the hash of the ledger's entry contents (what two runs share
    under their own random keys) of a fresh run sampled at the default temperature."""
    run = gen.generation_run(open_run(str(directory), **{**TINY_GEN, "gen_epochs": 1, "gen_per_contributor": 1,
                                                         "gen_temperature": 0.7, "seed": seed}))
    gen.pay_generation(run)
    return ((run.directory / "generations.jsonl").read_text(),
            (run.directory / "credit" / "generation_credit.csv").read_bytes(),
            provenance.ledger_entries_sha256(run.ledger_path))


@pytest.mark.slow
def test_the_same_seed_gives_the_same_generations_ledger_and_credit(tmp_path_factory):
    first = fresh_run(tmp_path_factory.mktemp("same"), 0)
    assert fresh_run(tmp_path_factory.mktemp("same"), 0) == first
    other = fresh_run(tmp_path_factory.mktemp("other"), 1)
    assert other[0] != first[0] and other[2] != first[2]


# --- 6. LOCO comparison ------------------------------------------------------------------------


@pytest.mark.slow
def test_compare_generation_against_loco_and_a_direct_retrain(tiny, tmp_path_factory):
    run, dn, trained, generations = tiny["run"], tiny["dn"], tiny["trained"], tiny["generations"]
    result = compare_generation(run, seeds=(0,), workers=1)
    contributors = sorted(set(dn.train_contributors))
    n_gen = len(generations)
    assert result.contributors == contributors and result.generations == [f"g{k:04d}" for k in range(n_gen)]
    assert result.truth.shape == (1, len(contributors), n_gen) and np.isfinite(result.truth).all()
    assert list(result.table["method"]) == ["span", "tracin", "grad_dot", "tracin_lograd", "random"]
    assert result.ceiling is None
    table = tiny["table"]
    for c, contributor in enumerate(contributors):
        for g, gen_id in enumerate(result.generations):
            rows = table[(table["generation"] == gen_id) & (table["contributor"] == contributor)]
            assert result.credit["span"][c, g] == pytest.approx(rows["credit"].sum())
    for row in result.table.itertuples():
        credit = result.credit[row.method]
        assert credit.shape == (len(contributors), n_gen) and np.isfinite(credit).all()
        rho = result.per_generation[result.per_generation["method"] == row.method]["spearman"].to_numpy()
        # a reference: pandas' rank correlation, undefined where either side is constant
        for g in range(n_gen):
            if np.ptp(credit[:, g]) == 0:
                assert np.isnan(rho[g])
            else:
                expected = pd.Series(credit[:, g]).corr(pd.Series(result.truth[0, :, g]), method="spearman")
                assert rho[g] == pytest.approx(expected)
        assert row.generations + row.undefined == n_gen and row.generations == np.isfinite(rho).sum()
        if row.generations:
            assert -1 <= row.spearman <= 1 and row.spearman == pytest.approx(np.nanmean(rho))
        else:
            assert math.isnan(row.spearman)

    # Δ[c, :] = log p_full(g) − log p_{−c}(g), both retrained from scratch with seed 0
    (memoriser,) = [c for c, b in dn.behaviours.items() if b == "memorised"]
    c = contributors.index(memoriser)
    owners = np.asarray(dn.train_contributors)
    retrainer = lm.LMRetrainer.from_tokenizer(trained.documents, trained.tokenizer, trained.config)
    prompts, generated = [g.prompt_ids for g in generations], [g.generated_ids for g in generations]
    full = lm.sequence_log_likelihoods(retrainer(np.arange(len(owners)), 0), prompts, generated)
    without = lm.sequence_log_likelihoods(retrainer(np.flatnonzero(owners != memoriser), 0), prompts, generated)
    np.testing.assert_allclose(result.truth[0, c], full - without, rtol=1e-6, atol=1e-6)


def test_the_results_file_figures_are_the_runs_own(tiny, tmp_path_factory):
    """What ``datanet-lab run --generation`` writes for the README: read back from the finished run."""
    from datanet_lab import results_files
    from datanet_lab.experiments.compare_generation import write

    run = copy_run(tiny, tmp_path_factory, "results-file")
    comparison = compare_generation(run, seeds=(0,), workers=1)
    write(comparison, run.directory)
    figures = results_files.generation_figures(run.directory.parent, params=run.params)
    dn, table = tiny["dn"], tiny["table"]
    assert "ceiling" not in figures  # one retrain seed: no seed ceiling
    assert figures["documents"] == len(dn.accepted) and figures["generations"] == len(tiny["generations"])
    for row in comparison.table.itertuples():
        assert figures[f"{row.method}.generations"] == row.generations
        assert figures.get(f"{row.method}.spearman") == (None if math.isnan(row.spearman) else pytest.approx(row.spearman))
    (memoriser,) = [c for c, b in dn.behaviours.items() if b == "memorised"]
    assert figures["memorised.units"] == table[(table["generation"] == "g0000") & (table["contributor"] == memoriser)]["units"].sum()
    paid = table[table["generation"] == figures["shared.generation"]]
    assert sorted(paid["units"][paid["units"] > 0], reverse=True) == [
        figures[f"shared.units.{k}"] for k in range(figures["shared.contributors"])]
    assert figures["shared.contributors"] == table[table["units"] > 0].groupby("generation").size().max()
    spans = pd.read_csv(run.directory / "credit" / "spans.csv")
    assert figures["generations_without_span"] == len(tiny["generations"]) - spans["generation"].nunique()
    written = results_files.write(tmp_path_factory.mktemp("results") / "g.json", figures, "datanet-lab run --generation")
    assert written["figures"]["memorised.units"] == figures["memorised.units"]


# --- 7. parameters -----------------------------------------------------------------------------


@pytest.mark.parametrize("name, good, bad, expect", [
    ("gen_width", 32, 30, "a multiple of 4"),
    ("gen_vocab_size", 65535, 65536, "<= 65535"),
    ("gen_min_span", 2, 1, ">= 2"),
])
def test_bad_generation_parameters_are_named(name, good, bad, expect):
    assert resolve({name: good})[name] == good
    with pytest.raises(ParameterError, match=rf"{name} must be {expect}.*got {bad}"):
        resolve({name: bad})


def test_an_unknown_span_engine_is_named():
    assert resolve({"span_engine": "reference"})["span_engine"] == "reference"
    with pytest.raises(ParameterError, match=r"unknown span_engine 'suffix'; expected one of "
                                             r"\['vectorized', 'infini_gram', 'reference'\]"):
        resolve({"span_engine": "suffix"})
