"""Errors of the Datanet layer; each message names the file, field or value at fault."""


class DatanetError(Exception):
    """Root of every error Datanet Lab raises on bad input; nothing was written."""


class DataSourceError(DatanetError):
    """A dataset could not be loaded: unknown name, missing or unreadable file, missing column."""


class ScenarioError(DatanetError):
    """A contributor scenario spec is malformed or does not fit the Datanet."""
