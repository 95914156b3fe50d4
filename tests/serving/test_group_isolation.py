"""One request that the float32 model cannot serve fails alone: the requests group-committed with
it are answered and provable."""

import numpy as np
import pytest

import ledger
from datanet_lab.serving.requests import RequestError
from datanet_lab.serving.server import Server


def test_an_overflowing_request_fails_alone_and_its_group_is_served(run_dir):
    with Server(run_dir, batch_size=8, max_wait_ms=500.0) as server:
        server.start()
        width = server.economy.attributor.n_features
        good = np.ones((1, width))
        bad = np.ones((1, width))
        bad[0, 0] = 3e38  # finite in float32, infinite once standardized
        futures = [server.submit(good), server.submit(bad), server.submit(good)]
        answers = [futures[0].result(timeout=60), futures[2].result(timeout=60)]
        with pytest.raises(RequestError, match=r"row 0: the float32 model's output or credit is not finite"):
            futures[1].result(timeout=60)
        for (answer,) in (a.results for a in answers):
            receipt = server.receipt(answer["receipt_id"])
            assert ledger.receipts.check_receipt(receipt, server.head()["log_public_key"]).ok
        assert server.economy.account.fees == 2 * 1000  # the refused request was never charged (default fee)


def test_a_lone_overflowing_request_is_refused_naming_its_row(run_dir):
    with Server(run_dir) as server:
        server.start()
        bad = np.ones((2, server.economy.attributor.n_features))
        bad[1, 0] = 3e38
        with pytest.raises(RequestError, match="row 1"):
            server.submit(bad).result(timeout=60)
