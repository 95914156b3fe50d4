"""What a ledger entry may say: a payload schema per kind and the payout rules over the log.

One definition serves both sides: the store refuses a batch that breaks any of it (nothing is
written) and the verifier reports the first stored entry that does, so the two cannot drift.

* :func:`payload_problem` checks one payload against its kind's :class:`Schema`: required fields,
  their types and ranges (``bool`` is not an integer; money is an integer number of units in
  ``[0, 2**53 - 1]``, the canonical-JSON safe range), and, for the money kinds and receipt
  batches, no unknown field.
  The record kinds (contribution, runs, ...) name only the fields their readers rely on; the rest
  of such a payload is the record's own detail.
* :class:`PayoutRules` follows the money kinds (``stake``, ``slash``, ``payout``, ``payout_epoch``,
  ``generation_payment``) in sequence order: every contributor staked, slashed or paid has a
  registered key; a slash never exceeds what its contributor has left at stake; epochs are
  numbered 1, 2, 3, ... and open one at a time (an epoch's first slash or payment opens it, its
  ``payout_epoch`` entry closes it), so a payment into a closed epoch (a replay) or into one that
  was never opened is refused; an epoch opens and closes within one append batch
  (:func:`ledger.epoch_records` writes it whole); a contributor is paid once per epoch; the epoch
  entry's ``paid`` and ``slashed`` equal the sums of its entries and
  ``paid + unallocated == pool + slashed``. A ``generation_payment`` stands outside the epochs: it
  pays its own fee, to registered contributors only.

Each kind names the roles entitled to sign it (:attr:`Schema.roles`, the role an actor's key was
registered with): :func:`role_problem` refuses any other signer, so a contributor's key cannot
commit a receipt batch or pay an epoch. Contributors stake and contribute, validators validate,
the curator versions the dataset, trainers and attributors record their runs, a sweep runner its
sweep runs; the payout authority pays epochs and generations, and an inference host commits
receipt batches and pays the epochs of its fees. The log's own key (role ``log``) signs no entry.

A schema may add a rule across its fields (:attr:`Schema.rule`): a ``generation_payment``'s
``payouts`` plus ``unallocated`` equal its ``fee``; a ``receipt_batch``'s role totals sum to its
``fee_total``. :func:`schema_problem` applies a schema to other documents too (the receipts of
:mod:`ledger.receipts`).
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable, Container, Mapping
from dataclasses import dataclass, field
from typing import Any

from ledger.keys import ACTOR_PATTERN

_HEX64 = re.compile(r"[0-9a-f]{64}")

SAFE_INT = 2**53 - 1
"""The largest integer canonical JSON (RFC 8785, I-JSON) carries exactly."""


@dataclass(frozen=True)
class Field:
    """A field's expectation in words, and the test a value must pass."""

    expect: str
    accepts: Callable[[Any], bool]


def _integer(low: int, high: int, what: str) -> Field:
    return Field(f"{what}, an integer in [{low}, {high}]", lambda v: type(v) is int and low <= v <= high)


UNITS = _integer(0, SAFE_INT, "money units")
EPOCH = _integer(1, SAFE_INT, "an epoch number")
TEXT = Field("a string", lambda v: type(v) is str)
FLAG = Field("true or false", lambda v: type(v) is bool)
OBJECT = Field("a JSON object", lambda v: type(v) is dict)
NUMBER = Field("a finite number", lambda v: type(v) in (int, float) and math.isfinite(v))
ACTOR = Field(f"an actor id matching {ACTOR_PATTERN.pattern}", lambda v: type(v) is str and ACTOR_PATTERN.fullmatch(v) is not None)
STATUS = Field("'ok' or 'failed'", lambda v: type(v) is str and v in ("ok", "failed"))
DIGEST = Field("a SHA-256 digest, 64 lower-case hex digits", lambda v: type(v) is str and _HEX64.fullmatch(v) is not None)
COUNT = _integer(1, SAFE_INT, "a count")
POSITION = _integer(0, SAFE_INT, "a position (0 is the first)")
ANY = Field("any JSON value", lambda v: True)
UNITS_BY_ACTOR = Field(
    f"a JSON object mapping ids (matching {ACTOR_PATTERN.pattern}) to money units",
    lambda v: type(v) is dict and all(ACTOR.accepts(k) and UNITS.accepts(a) for k, a in v.items()),
)


@dataclass(frozen=True)
class Schema:
    """The fields of one kind's payload; ``closed``: no other field is allowed; ``rule``: what is
    wrong across the fields of a payload whose fields passed (or ``None``); ``roles``: the roles
    whose actors may sign an entry of this kind (none for a document that is no entry)."""

    required: Mapping[str, Field]
    optional: Mapping[str, Field] = field(default_factory=dict)
    closed: bool = True
    rule: Callable[[Mapping[str, Any]], str | None] | None = None
    roles: frozenset[str] = frozenset()


def _sums_to(parts: str, whole: str, extra: str | None = None) -> Callable[[Mapping[str, Any]], str | None]:
    """Rule: the values of the object ``parts`` (plus the field ``extra``) sum to the field ``whole``."""
    def rule(payload: Mapping[str, Any]) -> str | None:
        if parts not in payload:
            return None
        total = sum(payload[parts].values()) + (payload[extra] if extra else 0)
        if total != payload[whole]:
            named = f"{parts} + {extra}" if extra else parts
            return f"{named} total {total} units, {whole} is {payload[whole]}"
        return None
    return rule


CONTRIBUTOR, VALIDATOR, CURATOR, TRAINER, ATTRIBUTOR = "contributor", "validator", "curator", "trainer", "attributor"
PAYOUT_AUTHORITY, HOST, RUNNER = "payout-authority", "host", "runner"
"""The roles that sign entries (module docstring)."""
_PAYERS = frozenset({PAYOUT_AUTHORITY, HOST})

SCHEMAS: dict[str, Schema] = {
    "stake": Schema({"contributor": ACTOR, "amount": UNITS}, roles=frozenset({CONTRIBUTOR})),
    "slash": Schema({"epoch": EPOCH, "contributor": ACTOR, "amount": UNITS, "reason": TEXT}, roles=_PAYERS),
    "payout": Schema({"epoch": EPOCH, "contributor": ACTOR, "amount": UNITS}, roles=_PAYERS),
    "payout_epoch": Schema(
        {"epoch": EPOCH, "pool": UNITS, "slashed": UNITS, "paid": UNITS, "unallocated": UNITS},
        {"rule": TEXT, "harm_threshold": NUMBER, "dataset_version": TEXT},
        roles=_PAYERS,
    ),
    "contribution": Schema({"sample_id": TEXT}, closed=False, roles=frozenset({CONTRIBUTOR})),
    "validation": Schema({"sample_id": TEXT, "accepted": FLAG}, closed=False, roles=frozenset({VALIDATOR})),
    "dataset_version": Schema({"version": TEXT}, closed=False, roles=frozenset({CURATOR})),
    "training_run": Schema({"dataset_version": TEXT}, closed=False, roles=frozenset({TRAINER})),
    "attribution_run": Schema({"method": TEXT, "dataset_version": TEXT}, closed=False, roles=frozenset({ATTRIBUTOR})),
    "sweep_run": Schema({"run_id": TEXT, "status": STATUS, "params": OBJECT}, closed=False, roles=frozenset({RUNNER})),
    "generation_payment": Schema(
        {"generation_id": TEXT, "fee": UNITS, "payouts": UNITS_BY_ACTOR, "unallocated": UNITS, "rule": TEXT, "evidence": OBJECT},
        rule=_sums_to("payouts", "fee", extra="unallocated"),
        roles=frozenset({PAYOUT_AUTHORITY}),
    ),
    "receipt_batch": Schema(
        {"batch_id": TEXT, "root": DIGEST, "count": COUNT, "fee_total": UNITS},
        {"fee_by_role": UNITS_BY_ACTOR},
        rule=_sums_to("fee_by_role", "fee_total"),
        roles=frozenset({HOST}),
    ),
}
KINDS = frozenset(SCHEMAS)
MONEY_KINDS = frozenset({"stake", "slash", "payout", "payout_epoch", "generation_payment"})


def payload_problem(kind: str, payload: Any) -> str | None:
    """What is wrong with ``payload`` (decoded JSON) as a ``kind`` entry, or ``None``."""
    schema = SCHEMAS.get(kind)
    if schema is None:
        return f"unknown kind {kind!r}; expected one of {sorted(KINDS)}"
    return schema_problem(kind, schema, payload)


def role_problem(kind: str, actor: str, role: str) -> str | None:
    """What is wrong with ``actor``, registered with ``role``, signing a ``kind`` entry, or ``None``."""
    schema = SCHEMAS.get(kind)
    if schema is None or role in schema.roles:
        return None  # an unknown kind is :func:`payload_problem`'s to report
    return f"{kind} signed by {actor!r}, whose role {role!r} may not sign it (only {sorted(schema.roles)})"


def schema_problem(kind: str, schema: Schema, payload: Any) -> str | None:
    """What is wrong with ``payload`` (decoded JSON) under ``schema``, or ``None``; messages start
    with ``kind`` (what the payload is)."""
    if type(payload) is not dict:
        return f"{kind} payload must be a JSON object, got {_show(payload)}"
    for name, rule in schema.required.items():
        if name not in payload:
            return f"{kind} payload: required field {name!r} is missing"
        if not rule.accepts(payload[name]):
            return f"{kind} payload: field {name!r} must be {rule.expect}, got {_show(payload[name])}"
    for name, rule in schema.optional.items():
        if name in payload and not rule.accepts(payload[name]):
            return f"{kind} payload: field {name!r} must be {rule.expect}, got {_show(payload[name])}"
    if schema.closed and len(payload) > len(schema.required):
        unknown = sorted(set(payload) - set(schema.required) - set(schema.optional))
        if unknown:
            allowed = sorted([*schema.required, *schema.optional])
            return f"{kind} payload: unknown field(s) {unknown}; a {kind} holds only {allowed}"
    problem = schema.rule(payload) if schema.rule else None
    return f"{kind} payload: {problem}" if problem else None


def _show(value: Any) -> str:
    text = repr(value)
    return f"{text[:60]}… ({type(value).__name__})" if len(text) > 60 else f"{text} ({type(value).__name__})"


@dataclass
class _OpenEpoch:
    epoch: int
    since: int  # the entry that opened it
    paid: int = 0
    slashed: int = 0
    payees: set[str] = field(default_factory=set)


class PayoutRules:
    """The payout rules (module docstring), fed the money entries of a log in sequence order.

    Each :meth:`step` takes one entry whose payload passed :func:`payload_problem` and returns what
    it breaks, or ``None`` and records it. After a broken rule the state is undefined: the verifier
    stops at the first problem, the store checks a batch on a :meth:`copy`.
    """

    def __init__(self) -> None:
        self.at_stake: dict[str, int] = {}
        self.closed_at: dict[int, int] = {}  # epoch -> the entry that closed it
        self.open: _OpenEpoch | None = None

    def copy(self) -> PayoutRules:
        return copy.deepcopy(self)

    def step(self, seq: int, kind: str, payload: Mapping[str, Any], registered: Container[str]) -> str | None:
        """Apply entry ``seq``; ``registered``: the actors with a registered key (who may be paid)."""
        if kind == "generation_payment":  # outside the epochs: it pays its own fee
            unknown = sorted(c for c in payload["payouts"] if c not in registered)
            if unknown:
                return f"generation_payment pays {unknown}, who have no registered key (unregistered payee)"
            return None
        contributor = payload.get("contributor")
        if contributor is not None and contributor not in registered:
            return f"{kind} of contributor {contributor!r}, who has no registered key (unregistered payee)"
        if kind == "stake":
            self.at_stake[contributor] = self.at_stake.get(contributor, 0) + payload["amount"]
            return None
        if kind not in MONEY_KINDS:
            return None
        epoch = payload["epoch"]
        problem = self._epoch_problem(epoch)
        if problem:
            return problem
        tally = self.open = self.open or _OpenEpoch(epoch, seq)
        if kind == "slash":
            left = self.at_stake.get(contributor, 0)
            if payload["amount"] > left:
                return f"slash of {payload['amount']} units exceeds the {left} units {contributor!r} has left at stake"
            self.at_stake[contributor] = left - payload["amount"]
            tally.slashed += payload["amount"]
            return None
        if kind == "payout":
            if contributor in tally.payees:
                return f"contributor {contributor!r} paid twice in payout epoch {epoch}"
            tally.payees.add(contributor)
            tally.paid += payload["amount"]
            return None
        self.open, self.closed_at[epoch] = None, seq
        if (tally.paid, tally.slashed) != (payload["paid"], payload["slashed"]):
            return (f"payout epoch {epoch}: its entries pay {tally.paid} and slash {tally.slashed}, "
                    f"the epoch says {payload['paid']} and {payload['slashed']}")
        if payload["paid"] + payload["unallocated"] != payload["pool"] + payload["slashed"]:
            return f"payout epoch {epoch}: paid + unallocated != pool + slashed"
        return None

    def _epoch_problem(self, epoch: int) -> str | None:
        if epoch in self.closed_at:
            return f"payout epoch {epoch} was already paid (closed at entry {self.closed_at[epoch]}): a replay"
        if self.open is not None:
            if epoch != self.open.epoch:
                return f"payout epoch {epoch} while epoch {self.open.epoch} (opened at entry {self.open.since}) is open: one epoch at a time"
            return None
        expected = max(self.closed_at, default=0) + 1
        if epoch != expected:
            return f"payout epoch {epoch} was never opened: the next epoch is {expected}"
        return None

    def batch_end_problem(self) -> tuple[int, str] | None:
        """``(entry, reason)`` when an epoch is still open where a batch ends, else ``None``."""
        if self.open is None:
            return None
        return self.open.since, (f"payout epoch {self.open.epoch} opened at entry {self.open.since} is not closed in "
                                 f"its batch (a payout_epoch entry must close it in the batch that opens it)")
