"""Shared fixtures: tiny batch parameters that exercise every behaviour in seconds."""

import pytest

TINY = {
    "dataset": "wine",
    "n_contributors": 5,
    "scenario": "honest:2,noisy:1,duplicate:1,out_of_domain:1",
    "noise_rate": 0.3,
    "epochs": 2,
    "reward_pool": 1000,
}


@pytest.fixture(scope="session")
def tiny_params() -> dict:
    """A fresh copy of :data:`TINY` (tests may change it)."""
    return dict(TINY)
