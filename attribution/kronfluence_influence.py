"""Influence functions by kronfluence (EK-FAC; https://github.com/pomonam/kronfluence), the field's
reference implementation, behind the kit's :class:`~attribution.base.Attributor` interface.

kronfluence approximates the Fisher of every ``nn.Linear`` / ``nn.Conv2d`` layer (GPT-2's
``Conv1D`` is converted to an equivalent ``nn.Linear`` on the method's own model copy) and scores
``<P ∇f(query), ∇ℓ(train)>`` with ``P`` the damped inverse of that curvature (``strategy``:
``"ekfac"``, ``"kfac"``, ``"diagonal"``, or ``"identity"``: no curvature, a gradient dot product
over those layers). Parameters outside those layers (embeddings, layer norms) are not attributed.
Its ``(n_queries, n_train)`` scores are returned transposed, ``(n_train, n_test)``: positive =
upweighting training sample ``i`` lowers test sample ``j``'s loss (it helped), the kit's sign.

The curvature is the empirical Fisher (the true targets) unless ``sample_targets`` draws targets
from the model's predictive distribution (the true Fisher, kronfluence's default): an
:class:`~attribution.base.AttributionTask` knows its loss only on the true targets, so sampling
needs the task's own rule (e.g. :func:`datanet.models.lm.sample_labels` for a causal LM).

kronfluence is the optional ``peers`` extra (``pip install -e ".[peers]"``, in the lock); it is
imported when a :class:`KronfluenceInfluence` is made, so the rest of the kit runs without it.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils import data
from transformers.pytorch_utils import Conv1D

from attribution.base import (AttributionError, AttributionTask, Attributor, Inputs, LossFn, forward, n_samples,
                             require_finite, summed_loss, take)

STRATEGIES = ("ekfac", "kfac", "diagonal", "identity")
SampleTargets = Callable[[Any, torch.Tensor, torch.Generator], torch.Tensor]
"""``sample_targets(outputs, targets, generator) -> targets`` drawn from the model's predictive
distribution, in ``targets``' form (positions ``targets`` ignores stay ignored)."""


def _require_kronfluence() -> None:
    try:
        import kronfluence  # noqa: F401  (the optional `peers` extra)
    except ImportError as error:
        raise ImportError("ekfac_kronfluence needs kronfluence, the optional `peers` extra: "
                          "pip install -e \".[peers]\" (requirements.lock pins it)") from error


def linear_copy(model: nn.Module) -> nn.Module:
    """``model`` with every GPT-2 ``Conv1D`` (weight ``(in, out)``) replaced, in place, by the
    ``nn.Linear`` computing the same function (weight ``(out, in)``), which kronfluence tracks."""
    for name, child in model.named_children():
        if isinstance(child, Conv1D):
            linear = nn.Linear(child.weight.shape[0], child.weight.shape[1], dtype=child.weight.dtype)
            with torch.no_grad():
                linear.weight.copy_(child.weight.t())
                linear.bias.copy_(child.bias)
            setattr(model, name, linear)
        else:
            linear_copy(child)
    return model


class _Root(nn.Module):
    """The task's model as the child of a root: kronfluence replaces a model's layers in their
    parents, so a model that is itself one layer needs one above it."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.model(*args, **kwargs)


class _Rows(data.Dataset):
    """Sample ``i`` of ``(x, y)`` as ``(x row, y row)``; :func:`_collate` stacks them back into a batch."""

    def __init__(self, x: Inputs, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return n_samples(self.x)

    def __getitem__(self, index: int) -> tuple[Inputs, torch.Tensor]:
        return take(self.x, index), self.y[index]


def _stack(rows: list[Any]) -> Any:
    """Rows of a tensor, tuple or mapping of tensors stacked into a batch of the same form
    (torch's default collate would turn a tuple into a list)."""
    first = rows[0]
    if isinstance(first, torch.Tensor):
        return torch.stack(rows)
    if isinstance(first, tuple):
        return tuple(_stack([row[k] for row in rows]) for k in range(len(first)))
    return {key: _stack([row[key] for row in rows]) for key in first}


def _collate(samples: list[tuple[Inputs, torch.Tensor]]) -> tuple[Inputs, torch.Tensor]:
    return _stack([x for x, _ in samples]), torch.stack([y for _, y in samples])


def _task(loss_fn: LossFn, test_loss: LossFn, sample_targets: SampleTargets | None, generator: torch.Generator) -> Any:
    """A kronfluence ``Task``: the summed training loss of a batch, the summed test loss as the measurement."""
    from kronfluence.task import Task

    class KitTask(Task):
        def compute_train_loss(self, batch: tuple[Inputs, torch.Tensor], model: nn.Module, sample: bool = False
                               ) -> torch.Tensor:
            x, y = batch
            outputs = forward(model, x)
            if sample:
                with torch.no_grad():
                    y = sample_targets(outputs.detach(), y, generator)
            return summed_loss(loss_fn, outputs, y)

        def compute_measurement(self, batch: tuple[Inputs, torch.Tensor], model: nn.Module) -> torch.Tensor:
            x, y = batch
            return summed_loss(test_loss, forward(model, x), y)

        def get_attention_mask(self, batch: tuple[Inputs, torch.Tensor]) -> torch.Tensor | None:
            # Padded positions stay out of the covariances (kronfluence's rule for sequence models).
            x, _ = batch
            return x.get("attention_mask") if isinstance(x, Mapping) else None

    return KitTask()


class KronfluenceInfluence(Attributor):
    """kronfluence's pairwise influence scores (module docstring), at the trained model or summed
    over every checkpoint.

    Args:
        strategy: kronfluence's curvature (``STRATEGIES``; default ``"ekfac"``).
        every_checkpoint: sum the scores over the task's checkpoints, each with its own curvature
            and weight 1 (default ``False``: the last checkpoint only).
        damping: added to the curvature's eigenvalues (kronfluence's default ``1e-8``; ``None``:
            its heuristic, 0.1 × their mean).
        sample_targets: draws targets for the true Fisher (``None``: the empirical Fisher).
        seed: seeds ``sample_targets``.
        batch_size: samples per kronfluence batch, training and query.
    """

    name = "ekfac_kronfluence"

    def __init__(self, strategy: str = "ekfac", every_checkpoint: bool = False, damping: float | None = 1e-8,
                 sample_targets: SampleTargets | None = None, seed: int = 0, batch_size: int = 32) -> None:
        _require_kronfluence()
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown kronfluence strategy {strategy!r}; expected one of {STRATEGIES}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.strategy, self.every_checkpoint, self.damping = strategy, every_checkpoint, damping
        self.sample_targets, self.seed, self.batch_size = sample_targets, seed, batch_size
        self._task: AttributionTask | None = None
        self._directory: tempfile.TemporaryDirectory | None = None

    def fit(self, task: AttributionTask) -> KronfluenceInfluence:
        """Fit kronfluence's curvature factors at each checkpoint used (kept in a temporary directory)."""
        from kronfluence.arguments import FactorArguments

        self._task = task
        self._directory = tempfile.TemporaryDirectory(prefix="kronfluence-")
        train = _Rows(task.train_x, task.train_y)
        args = FactorArguments(strategy=self.strategy, use_empirical_fisher=self.sample_targets is None)
        for t in self._checkpoints():
            with _kronfluence_call():
                self._analyzer(t).fit_all_factors(factors_name=self.strategy, dataset=train,
                                                  per_device_batch_size=self.batch_size, factor_args=args,
                                                  dataloader_kwargs=_loader())
        return self

    def scores(self, test_x: Inputs, test_y: torch.Tensor) -> np.ndarray:
        """``(n_train, n_test)`` float64: kronfluence's pairwise scores, transposed (summed over the
        checkpoints when ``every_checkpoint``)."""
        from kronfluence.arguments import ScoreArguments

        if self._task is None:
            raise RuntimeError(f"{self.name}: call fit before scores")
        if n_samples(test_x) != len(test_y):
            raise ValueError(f"test_x has {n_samples(test_x)} samples but test_y has {len(test_y)}")
        train, query = _Rows(self._task.train_x, self._task.train_y), _Rows(test_x, test_y)
        total = np.zeros((self._task.n_train, len(test_y)))
        for t in self._checkpoints():
            with _kronfluence_call():
                analyzer = self._analyzer(t)
                analyzer.compute_pairwise_scores(
                    scores_name="pairwise", factors_name=self.strategy, query_dataset=query, train_dataset=train,
                    per_device_query_batch_size=self.batch_size, per_device_train_batch_size=self.batch_size,
                    score_args=ScoreArguments(damping_factor=self.damping), dataloader_kwargs=_loader(),
                    overwrite_output_dir=True)
            pairwise = analyzer.load_pairwise_scores("pairwise")["all_modules"]  # (n_test, n_train)
            total += pairwise.double().numpy().T
        return require_finite(total, self.name)

    def _checkpoints(self) -> range:
        n = len(self._task.checkpoints)
        return range(n) if self.every_checkpoint else range(n - 1, n)

    def _analyzer(self, t: int) -> Any:
        """A kronfluence ``Analyzer`` on a fresh copy of the model at checkpoint ``t``, its factors
        and scores under this attributor's directory."""
        from kronfluence.analyzer import Analyzer, prepare_model

        model = copy.deepcopy(self._task.model)
        self._task.load_checkpoint(model, str(self._task.checkpoints[t]))
        model = linear_copy(_Root(model))
        layers = [(name, m) for name, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
        odd = [f"{name} ({type(m).__name__})" for name, m in layers if type(m) not in (nn.Linear, nn.Conv2d)]
        if odd or not layers:  # kronfluence wraps exactly these two types and fails on a subclass
            raise AttributionError(f"{self.name}: kronfluence attributes exact nn.Linear, nn.Conv2d (and GPT-2 Conv1D) "
                                   f"layers; " + (f"these subclass them: {odd}" if odd else "the model has none"))
        generator = torch.Generator().manual_seed(self.seed + t)
        kf_task = _task(self._task.loss_fn, self._task.test_loss, self.sample_targets, generator)
        return Analyzer(analysis_name=f"checkpoint-{t}", model=prepare_model(model, kf_task), task=kf_task, cpu=True,
                        disable_tqdm=True, output_dir=self._directory.name)


@contextlib.contextmanager
def _kronfluence_call() -> Iterator[None]:
    """Around each kronfluence phase: it calls ``gc.collect()`` after every phase (to hand
    accelerator memory back), ~0.5 s a call over a process holding transformers and a test
    session; with the heap frozen the collections scan only what kronfluence made (the rest is
    collectable again after). Its ``torch.cuda.amp.GradScaler`` deprecation warning is dropped:
    the scaler is disabled here (no mixed precision)."""
    gc.freeze()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"`torch\.cuda\.amp\.GradScaler", category=FutureWarning)
            yield
    finally:
        gc.unfreeze()


def _loader() -> Any:
    from kronfluence.utils.dataset import DataLoaderKwargs

    return DataLoaderKwargs(collate_fn=_collate)
