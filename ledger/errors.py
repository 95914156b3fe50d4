"""Errors raised by the ledger; each message names the file, entry, field or value at fault."""


class LedgerError(Exception):
    """A ledger operation was refused (bad input, missing file); nothing was written."""


class LedgerIntegrityError(LedgerError):
    """A stored ledger does not verify: an entry's hash, link or payload is wrong."""
