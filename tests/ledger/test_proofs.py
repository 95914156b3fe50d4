"""Offline proofs (ledger.proofs) and their tools: ``verify-proof`` and ``check-head`` check against a
log key the checker chose (``--log-key``, ``--ledger`` or ``--head``), never the document's own."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ledger import Keystore, Ledger, fixed_clock
from ledger.cli import main
from ledger.keys import public_hex
from ledger.proofs import check_document, check_head, consistency_document, head_document, inclusion_document

DOCUMENTS = {"inclusion": lambda book: inclusion_document(book, 2), "consistency": lambda book: consistency_document(book, 3)}


def _log(path: Path, keys: Keystore) -> Path:
    """A ledger of five entries with signed heads of sizes 3 and 5."""
    with Ledger(path, keystore=keys, clock=fixed_clock()) as book:
        for i in range(5):
            book.register(f"c{i}", "contributor")
        book.append_many([("contribution", f"c{i}", {"sample_id": f"s{i}"}) for i in range(3)])
        book.append_many([("contribution", f"c{i}", {"sample_id": f"s{i}"}) for i in range(3, 5)])
    return path


@pytest.fixture(scope="module")
def logs(tmp_path_factory) -> dict[str, tuple[Path, str]]:
    """The real log and a forger's log of the same entries under the forger's own log key: each its
    path and log key."""
    folder = tmp_path_factory.mktemp("logs")
    made = {}
    for name in ("real", "forged"):
        keys = Keystore(folder / f"{name}-keys", seed=name.encode())
        made[name] = (_log(folder / f"{name}.sqlite", keys), public_hex(keys.key("log")))
    return made


def _write(folder: Path, name: str, document: dict) -> Path:
    path = folder / f"{name}.json"
    path.write_text(json.dumps(document))
    return path


def _document(logs, name: str, kind: str) -> dict:
    with Ledger(logs[name][0]) as book:
        return DOCUMENTS[kind](book) if kind in DOCUMENTS else head_document(book, 3)


def _tool(kind: str, logs, given: Path) -> list[str]:
    """The command checking ``given`` (a proof, or a saved head checked against the forged log)."""
    return ["check-head", str(logs["forged"][0]), str(given)] if kind == "head" else ["verify-proof", str(given)]


@pytest.mark.parametrize("kind", ["inclusion", "consistency", "head"])
def test_a_forgers_own_key_document_is_refused_without_a_chosen_key_and_mismatches_the_real_one(logs, tmp_path, capsys, kind):
    """The forger's document holds together under the forger's key, so the tools must not accept
    that key from the document itself."""
    forged, (real_path, real_key), forger_key = _document(logs, "forged", kind), logs["real"], logs["forged"][1]
    given = _write(tmp_path, kind, forged)
    assert main(_tool(kind, logs, given)) == 2
    out, err = capsys.readouterr()
    assert "OK" not in out and err.count("\n") == 1 and "needs a log key you chose" in err and str(given) in err, err
    for chosen in (["--ledger", str(real_path)], ["--log-key", real_key]):
        assert main(_tool(kind, logs, given) + chosen) == 1
        out = capsys.readouterr().out
        assert out.startswith("FAILED (key-mismatch)") and real_key in out and forger_key in out, out


@pytest.mark.parametrize("kind", ["inclusion", "consistency"])
def test_the_real_proof_passes_with_a_chosen_key(logs, tmp_path, capsys, kind):
    real_path, real_key = logs["real"]
    given = _write(tmp_path, kind, _document(logs, "real", kind))
    head = _write(tmp_path, "head", _document(logs, "real", "head"))
    for chosen in (["--ledger", str(real_path)], ["--log-key", real_key], ["--head", str(head)]):
        assert main(["verify-proof", str(given), *chosen]) == 0
        assert capsys.readouterr().out.startswith(f"OK ({'included' if kind == 'inclusion' else 'consistent'})")


def test_the_real_head_passes_with_a_chosen_key_and_the_forged_log_mismatches_it(logs, tmp_path, capsys):
    (real_path, real_key), (forged_path, forger_key) = logs["real"], logs["forged"]
    head = _write(tmp_path, "head", _document(logs, "real", "head"))
    for chosen in (["--ledger", str(real_path)], ["--log-key", real_key], ["--head", str(head)]):
        assert main(["check-head", str(real_path), str(head), *chosen]) == 0
        assert capsys.readouterr().out.startswith("OK (extends)")
    # A log rewritten under a new key does not extend a head of the old one.
    assert main(["check-head", str(forged_path), str(head), "--head", str(head)]) == 1
    out = capsys.readouterr().out
    assert out.startswith("FAILED (key-mismatch)") and str(forged_path) in out and forger_key in out and real_key in out, out


def test_a_chosen_log_key_that_is_not_hex_is_one_line_and_exit_2(logs, tmp_path, capsys):
    head = _write(tmp_path, "head", _document(logs, "real", "head"))
    for args in (["verify-proof", str(head)], ["check-head", str(logs["real"][0]), str(head)]):
        assert main([*args, "--log-key", "ABC"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "the log key must be 64 lower-case hex digits, got 'ABC'" in err, err


@pytest.mark.parametrize("kind", ["inclusion", "consistency"])
def test_check_document_with_another_pinned_key_is_a_key_mismatch_naming_both(logs, kind):
    document, real_key, forger_key = _document(logs, "forged", kind), logs["real"][1], logs["forged"][1]
    assert check_document(document, log_key=forger_key).ok
    check = check_document(document, log_key=real_key)
    assert (check.ok, check.status) == (False, "key-mismatch") and real_key in check.message and forger_key in check.message, check


def test_check_head_needs_a_key_and_names_both_on_a_mismatch(logs):
    (real_path, real_key), forger_key = logs["real"], logs["forged"][1]
    forged_head = _document(logs, "forged", "head")
    with Ledger(real_path) as book:
        assert check_head(book, _document(logs, "real", "head"), real_key).ok
        check = check_head(book, forged_head, real_key)
        assert (check.ok, check.status) == (False, "key-mismatch") and real_key in check.message and forger_key in check.message, check
        with pytest.raises(TypeError):
            check_head(book, forged_head)  # type: ignore[call-arg]
