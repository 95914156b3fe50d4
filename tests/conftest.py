"""Shared fixtures: tiny batch parameters that exercise every behaviour in seconds."""

import pytest
import torch

TINY = {
    "dataset": "wine",
    "n_contributors": 5,
    "scenario": "honest:2,noisy:1,duplicate:1,out_of_domain:1",
    "noise_rate": 0.3,
    "epochs": 2,
    "reward_pool": 1000,
    "lds_subsets": 20,
    "mlp_seeds": 2,
    "mlp_models": 2,
    "inference_requests": 200,
    "rounds": 3,
}


@pytest.fixture(scope="session")
def tiny_params() -> dict:
    """A fresh copy of :data:`TINY` (tests may change it)."""
    return dict(TINY)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models on a busy 2-core box: one intra-op thread avoids OpenMP thrashing.

    Use with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
