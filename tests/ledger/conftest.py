"""Shared fixtures of the ledger tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from ledger import Entry, Keystore, Ledger, fixed_clock, schemas, store


@pytest.fixture
def forge() -> Callable[[Path, Keystore, list], list[Entry]]:
    """Append records the way an attacker holding every key would: with a store whose schema, role
    and payout checks are switched off (hashes, signatures, Merkle nodes and tree heads stay right),
    as if the rows were written directly. Only the verifier can catch what it writes."""

    def append(path: Path, keystore: Keystore, records: list) -> list[Entry]:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(store, "payload_problem", lambda kind, payload: None)
            patch.setattr(store, "role_problem", lambda kind, actor, role: None)
            patch.setattr(store.Ledger, "_refuse_stored_role_breach", lambda self, conn: None)
            patch.setattr(schemas.PayoutRules, "step", lambda self, *args: None)
            patch.setattr(schemas.PayoutRules, "batch_end_problem", lambda self: None)
            with Ledger(path, keystore=keystore, clock=fixed_clock()) as book:
                for actor in {actor for _, actor, _ in records} - set(book.public_keys()):
                    book.register(actor, "attacker")
                return book.append_many(records)

    return append
