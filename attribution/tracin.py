"""TracIn through Captum's ``TracInCP`` (the reference implementation).

TracIn (Pruthi et al., 2020) sums, over checkpoints ``t``, ``lr_t * ∇ℓ(z_train; θ_t) · ∇ℓ(z_test; θ_t)``:
positive when a gradient step on the training sample lowers the test loss (a proponent).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from captum.influence import TracInCP
from torch.utils.data import TensorDataset

from attribution.base import AttributionTask, Attributor


class CaptumTracIn(Attributor):
    """Captum ``TracInCP`` over all trainable layers, with its exact per-batch sample gradients.

    Args:
        batch_size: training samples per Captum batch (memory vs. speed; default 256).
    """

    name = "tracin_captum"

    def __init__(self, batch_size: int = 256) -> None:
        self.batch_size = batch_size
        self._tracin: TracInCP | None = None

    def fit(self, task: AttributionTask) -> CaptumTracIn:
        self._tracin = TracInCP(
            task.model,
            TensorDataset(task.train_x, task.train_y),
            checkpoints=[str(p) for p in task.checkpoints],
            # Captum's default loader cannot carry a learning rate beside the weights.
            checkpoints_load_func=task.load_checkpoint,
            loss_fn=task.loss_fn,
            batch_size=self.batch_size,
            sample_wise_grads_per_batch=True,
        )
        return self

    def scores(self, test_x: torch.Tensor, test_y: torch.Tensor) -> np.ndarray:
        if self._tracin is None:
            raise RuntimeError("CaptumTracIn.scores called before fit(task)")
        # Captum answers (n_test, n_train); this package's convention is (n_train, n_test).
        with warnings.catch_warnings():
            # Captum turns on requires_grad for its per-sample hooks and warns each batch that it did.
            warnings.filterwarnings("ignore", message="Input Tensor 0 did not already require gradients")
            influence = self._tracin.influence((test_x, test_y), show_progress=False)
        return influence.detach().double().numpy().T.copy()
