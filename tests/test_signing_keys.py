"""A run signs with random keys unless it asks for seeded ones: the same parameters give the same
entry payloads either way, and only seeded keys give the same signatures and ledger head."""

import pytest

import ledger
from datanet_lab import pipeline
from datanet_lab.params import ParameterError

TINY = dict(dataset="wine", n_contributors=3, scenario="honest:2,duplicate:1")


def _build(directory, **options) -> tuple[str, str, list]:
    """Build a run's Datanet (its stakes, contributions and validations go to the ledger); return
    the log's key, the head hash and every entry's ``(kind, actor, timestamp, payload)``."""
    run = pipeline.open_run(str(directory), **TINY, **options)
    pipeline.datanet(run)
    with ledger.Ledger(run.ledger_path) as book:
        payloads = [(e.kind, e.actor, e.timestamp, e.payload) for e in book.entries()]
        return book.log_public_key, book.head().hash, payloads


def test_a_run_signs_with_random_keys_by_default_with_the_same_payloads(tmp_path):
    first, second = _build(tmp_path / "a"), _build(tmp_path / "b")
    assert first[0] != second[0] and first[1] != second[1]  # nobody who knows the seed can sign for the run
    assert first[2] == second[2] and len(first[2]) > 10
    assert ledger.verify(tmp_path / "a" / "ledger.sqlite").ok
    assert not (tmp_path / "a" / "keystore" / ledger.keys.SEED_FILE).exists()


def test_seeded_keys_reproduce_the_ledger_byte_for_byte(tmp_path):
    first, second = _build(tmp_path / "a", signing_keys="seeded"), _build(tmp_path / "b", signing_keys="seeded")
    assert first == second
    assert first[2] == _build(tmp_path / "c")[2]


@pytest.mark.parametrize("made, reopened", [("random", "random"), ("seeded", "random"), ("seeded", "seeded")])
def test_reopening_a_run_directory_reuses_its_keystore(tmp_path, made, reopened):
    key = _build(tmp_path / "run", signing_keys=made)[0]
    run = pipeline.open_run(str(tmp_path / "run"), **TINY, signing_keys=reopened)
    with run.ledger() as book:  # a keystore with another log key is refused here
        assert book.log_public_key == key
    newcomer = ledger.keys.public_hex(run.keystore().key("newcomer"))
    seeded = pipeline.open_run(str(tmp_path / "other"), **TINY, signing_keys="seeded").keystore().key("newcomer")
    assert (newcomer == ledger.keys.public_hex(seeded)) == (made == "seeded")  # a new actor's key follows the keystore


def test_a_random_keystore_cannot_become_seeded_and_a_bad_option_is_refused(tmp_path):
    _build(tmp_path / "a")
    with pytest.raises(ledger.LedgerError, match="holds random keys"):
        pipeline.open_run(str(tmp_path / "a"), **TINY, signing_keys="seeded").ledger()
    with pytest.raises(ParameterError, match=r"signing_keys must be one of \['random', 'seeded'\], got 'fixed'"):
        pipeline.open_run(str(tmp_path / "b"), signing_keys="fixed")
    assert not (tmp_path / "b").exists()
