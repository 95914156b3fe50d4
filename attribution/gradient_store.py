"""A directory of projected training gradients per checkpoint, for TracIn beyond memory.

**Format** (version :data:`FORMAT`): ``checkpoint-<t>/shard-<i>.npy`` holds the float32
``(rows, dim)`` projected per-sample gradients φ_t (:class:`~attribution.layer_projection.LayerProjection`
at checkpoint ``t``'s weights) of training rows ``i·shard_rows`` up to ``(i+1)·shard_rows``; next to
it ``shard-<i>.json`` records its sha256 and the sha256 of the store's header (the fields below
bar ``weights`` and ``shards``). ``manifest.json``, written last, holds the header: ``format``,
``model_class``, ``parameter_shapes``, ``checkpoint_sha256`` (each checkpoint file's bytes),
``train_x`` and ``train_y`` (sha256, dtype, shape of each tensor), ``k``, ``seed``, ``dims``,
``paths``, ``n_train``, ``shard_rows``, ``dtype``; then ``weights`` (each checkpoint's learning
rate) and ``shards`` (per checkpoint, each shard's file name and sha256). Every file is written
to a temporary name and renamed, so a killed build leaves finished shards only, and a rebuild
computes the missing or corrupted ones. A store opened for another task or other parameters
raises :class:`~attribution.base.AttributionError` naming the field that differs.

Scores are LoGradTracIn's, ``Σ_t w_t φ_t(train_i) · φ_t(test_j)`` (positive = training on ``i``
lowered the loss on ``j``), read shard by shard through ``np.load(mmap_mode="r")``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attribution.base import AttributionError, AttributionTask, Inputs, input_parts, n_samples, require_finite, take
from attribution.files import file_sha256
from attribution.layer_projection import DEFAULT_K, LayerProjection
from attribution.lograd import projected

FORMAT = 1
MANIFEST = "manifest.json"
NAME = "tracin_lograd_store"


class GradientStore:
    """Projected training gradients on disk (see the module docstring); use :meth:`build` or :meth:`open`."""

    def __init__(self, directory: Path, task: AttributionTask, projection: LayerProjection, manifest: dict[str, Any]) -> None:
        self.directory, self.manifest = directory, manifest
        self._task, self._projection = task, projection

    @classmethod
    def build(cls, directory: str | Path, task: AttributionTask, k: int | None = DEFAULT_K, seed: int = 0,
              batch_size: int = 32, shard_rows: int = 4096) -> GradientStore:
        """Compute and write every missing or corrupted shard, then the manifest.

        Raises:
            AttributionError: ``directory`` holds a store (or shards) of another task or parameters.
        """
        if shard_rows < 1:
            raise ValueError(f"shard_rows must be >= 1, got {shard_rows}")
        directory = Path(directory)
        task, projection = projected(task, k, seed, batch_size, NAME)
        header = _header(task, projection, shard_rows)
        if (directory / MANIFEST).exists():
            _check(directory, _read(directory / MANIFEST), header)
        header_sha256 = hashlib.sha256(_dumps(header)).hexdigest()
        weights, shards = [], {}
        for t, checkpoint in enumerate(task.checkpoints):
            weights.append(float(task.load_checkpoint(task.model, str(checkpoint))))
            folder = directory / f"checkpoint-{t}"
            folder.mkdir(parents=True, exist_ok=True)
            shards[folder.name] = []
            for i, start in enumerate(range(0, task.n_train, shard_rows)):
                path = folder / f"shard-{i}.npy"
                digest = _finished(path, header_sha256)
                if digest is None:
                    rows = slice(start, start + shard_rows)
                    gradients = projection(take(task.train_x, rows), task.train_y[rows], task.loss_fn)
                    digest = _write_shard(path, gradients.detach().cpu().numpy().astype(np.float32), header_sha256)
                shards[folder.name].append({"file": path.name, "sha256": digest})
        manifest = header | {"weights": weights, "shards": shards}
        _write_atomic(directory / MANIFEST, _dumps(manifest))
        return cls(directory, task, projection, manifest)

    @classmethod
    def open(cls, directory: str | Path, task: AttributionTask, k: int | None = DEFAULT_K, seed: int = 0,
             batch_size: int = 32) -> GradientStore:
        """The store in ``directory``, checked against ``task``, ``k``, ``seed`` and every shard's sha256.

        Raises:
            AttributionError: no manifest, a field that differs (named), or a shard whose bytes
                do not match its recorded sha256 (named).
        """
        directory = Path(directory)
        if not (directory / MANIFEST).exists():
            raise AttributionError(f"gradient store {directory}: no {MANIFEST} (an unfinished build?)")
        manifest = _read(directory / MANIFEST)
        task, projection = projected(task, k, seed, batch_size, NAME)
        _check(directory, manifest, _header(task, projection, manifest.get("shard_rows")))
        for folder, shards in manifest["shards"].items():
            for shard in shards:
                path = directory / folder / shard["file"]
                if not path.exists() or file_sha256(path) != shard["sha256"]:
                    raise AttributionError(f"gradient store {directory}: shard {folder}/{shard['file']} is missing or "
                                           f"does not match its sha256 (corrupted; build again to recompute it)")
        return cls(directory, task, projection, manifest)

    def scores(self, test_x: Inputs, test_y: torch.Tensor, block_rows: int = 4096) -> np.ndarray:
        """``(n_train, n_test)`` float64 ``Σ_t w_t φ_t(train) φ_t(test)ᵀ``, ``block_rows`` training
        rows of one memory-mapped shard at a time."""
        task = self._task
        out = np.zeros((task.n_train, n_samples(test_x)), dtype=np.float64)
        for t, (checkpoint, weight) in enumerate(zip(task.checkpoints, self.manifest["weights"])):
            task.load_checkpoint(task.model, str(checkpoint))
            test = self._projection(test_x, test_y, task.test_loss).detach().cpu().double().numpy().T  # (dim, n_test)
            for i, shard in enumerate(self.manifest["shards"][f"checkpoint-{t}"]):
                gradients = np.load(self.directory / f"checkpoint-{t}" / shard["file"], mmap_mode="r")  # (rows, dim)
                offset = i * self.manifest["shard_rows"]
                for start in range(0, len(gradients), block_rows):
                    block = np.asarray(gradients[start:start + block_rows], dtype=np.float64)
                    out[offset + start:offset + start + len(block)] += weight * (block @ test)
        return require_finite(out, NAME)


def _header(task: AttributionTask, projection: LayerProjection, shard_rows: int | None) -> dict[str, Any]:
    """What a store's shards are computed from (every field :func:`_check` compares)."""
    return {
        "format": FORMAT,
        "model_class": f"{type(task.model).__module__}.{type(task.model).__qualname__}",
        "parameter_shapes": {n: list(p.shape) for n, p in task.model.named_parameters()},
        "checkpoint_sha256": [file_sha256(Path(c)) for c in task.checkpoints],
        "train_x": {name: _fingerprint(t) for name, t in input_parts(task.train_x)},
        "train_y": _fingerprint(task.train_y),
        "k": projection.k,
        "seed": projection.seed,
        "dims": projection.dims,
        "paths": projection.paths,
        "n_train": task.n_train,
        "shard_rows": shard_rows,
        "dtype": "float32",
    }


def _fingerprint(tensor: torch.Tensor) -> dict[str, Any]:
    array = np.ascontiguousarray(tensor.detach().cpu().numpy())
    return {"sha256": hashlib.sha256(array.tobytes()).hexdigest(), "dtype": array.dtype.str, "shape": list(array.shape)}


def _check(directory: Path, manifest: dict[str, Any], header: dict[str, Any]) -> None:
    for field, expected in header.items():
        if manifest.get(field) != expected:
            raise AttributionError(f"gradient store {directory}: {field} differs: the store has {manifest.get(field)!r}, "
                                   f"the task and parameters give {expected!r}")


def _finished(path: Path, header_sha256: str) -> str | None:
    """The sha256 of shard ``path`` when it and its sidecar are complete and agree, else ``None``."""
    sidecar = path.with_suffix(".json")
    if not path.exists() or not sidecar.exists():
        return None
    record = _read(sidecar)
    if record["header_sha256"] != header_sha256:
        raise AttributionError(f"gradient store: {path} was computed for another task or parameters "
                               f"(its header sha256 differs); use another directory")
    return record["sha256"] if file_sha256(path) == record["sha256"] else None


def _write_shard(path: Path, gradients: np.ndarray, header_sha256: str) -> str:
    """Write ``gradients`` to ``path`` and then its sidecar, each atomically; its sha256."""
    buffer = io.BytesIO()
    np.save(buffer, gradients)
    data = buffer.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    _write_atomic(path, data)
    _write_atomic(path.with_suffix(".json"), _dumps({"sha256": digest, "header_sha256": header_sha256}))
    return digest


def _write_atomic(path: Path, data: bytes) -> None:
    """``data`` to a temporary file next to ``path``, flushed to disk, then renamed onto ``path``."""
    temporary = path.with_name(f".{path.name}.tmp")
    with temporary.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def _dumps(value: dict[str, Any]) -> bytes:
    return json.dumps(value, indent=1, sort_keys=True).encode()


def _read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())
