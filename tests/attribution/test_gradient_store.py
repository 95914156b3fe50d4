"""GradientStore against LoGradTracIn (the reference), and its resumable, checked file format.

The problems are test_layer_projection.py's (float64 models, 3 checkpoints, 9 training samples):
with ``shard_rows`` 4 every checkpoint has 3 shards (4, 4 and 1 rows), 9 shards in all.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from attribution import AttributionError, LoGradTracIn
from attribution import gradient_store
from attribution.gradient_store import GradientStore
from datanet.models import load_checkpoint, save_checkpoint
from tests.attribution.test_layer_projection import MODELS, _build
from tests.attribution.test_tracin_zoo import LEARNING_RATES

pytestmark = pytest.mark.usefixtures("one_torch_thread")

K, SEED, SHARD_ROWS, N_SHARDS = 4, 2, 4, 9
REPO = Path(__file__).resolve().parents[2]


def _store(directory: Path, task, **kwargs) -> GradientStore:
    return GradientStore.build(directory, task, k=K, seed=SEED, shard_rows=SHARD_ROWS, **kwargs)


def _count_writes(monkeypatch, fail_at: int | None = None) -> list[Path]:
    """Record the paths ``_write_shard`` is called with; raise KeyboardInterrupt at call ``fail_at``."""
    calls, write = [], gradient_store._write_shard

    def counted(path, gradients, header_sha256):
        calls.append(path)
        if len(calls) == fail_at:
            raise KeyboardInterrupt
        return write(path, gradients, header_sha256)

    monkeypatch.setattr(gradient_store, "_write_shard", counted)
    return calls


@pytest.mark.parametrize("name", ["gpt2", "mlp"])
def test_store_scores_equal_lograd_tracin(tmp_path, name):
    p = _build(MODELS[name], tmp_path / "checkpoints")
    expected = LoGradTracIn(k=K, seed=SEED).fit(p.task).scores(p.test_x, p.test_y)
    built = _store(tmp_path / "store", p.task)
    shards = sorted((tmp_path / "store").glob("checkpoint-*/shard-*.npy"))
    assert len(shards) == N_SHARDS and {np.load(s).dtype for s in shards} == {np.dtype(np.float32)}
    assert built.manifest["weights"] == list(LEARNING_RATES)
    opened = GradientStore.open(tmp_path / "store", p.task, k=K, seed=SEED)
    for store in (built, opened):
        actual = store.scores(p.test_x, p.test_y, block_rows=3)
        np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max())


def test_an_interrupted_build_resumes_with_the_missing_shards_only(tmp_path, monkeypatch):
    p = _build(MODELS["mlp"], tmp_path / "checkpoints")
    _store(tmp_path / "reference", p.task)
    with monkeypatch.context() as patched:
        _count_writes(patched, fail_at=2)
        with pytest.raises(KeyboardInterrupt):
            _store(tmp_path / "store", p.task)
    assert not (tmp_path / "store" / "manifest.json").exists()
    assert [s.name for s in (tmp_path / "store").rglob("shard-*.npy")] == ["shard-0.npy"]
    calls = _count_writes(monkeypatch)
    _store(tmp_path / "store", p.task)
    assert len(calls) == N_SHARDS - 1
    assert (tmp_path / "store" / "manifest.json").read_bytes() == (tmp_path / "reference" / "manifest.json").read_bytes()
    assert not list((tmp_path / "store").rglob("*.tmp"))


KILLED_BUILD = """
import dataclasses, os, signal, sys
from attribution import gradient_store
from tests.attribution.test_layer_projection import MODELS, _build
write = gradient_store._write_shard
def write_then_die(*args):
    digest = write(*args)
    os.kill(os.getpid(), signal.SIGKILL)
    return digest
gradient_store._write_shard = write_then_die
task = dataclasses.replace(_build(MODELS["mlp"], sys.argv[2]).task, checkpoints=sys.argv[3:])
gradient_store.GradientStore.build(sys.argv[1], task, k=4, seed=2, shard_rows=4)
"""


def test_a_build_killed_after_one_shard_resumes_with_the_missing_shards_only(tmp_path, monkeypatch):
    p = _build(MODELS["mlp"], tmp_path / "checkpoints")
    reference = _store(tmp_path / "reference", p.task)
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    killed = subprocess.run([sys.executable, "-c", KILLED_BUILD, str(tmp_path / "store"), str(tmp_path / "own"),
                             *map(str, p.task.checkpoints)], capture_output=True, text=True, cwd=REPO, env=env)
    assert killed.returncode == -9, killed.stderr
    assert not (tmp_path / "store" / "manifest.json").exists()
    assert [s.name for s in (tmp_path / "store").rglob("shard-*.npy")] == ["shard-0.npy"]
    calls = _count_writes(monkeypatch)
    resumed = _store(tmp_path / "store", p.task)
    assert len(calls) == N_SHARDS - 1
    assert resumed.manifest == reference.manifest
    assert (tmp_path / "store" / "manifest.json").read_bytes() == (tmp_path / "reference" / "manifest.json").read_bytes()


def test_a_corrupted_shard_is_refused_on_open_and_recomputed_on_rebuild(tmp_path, monkeypatch):
    p = _build(MODELS["mlp"], tmp_path / "checkpoints")
    _store(tmp_path / "store", p.task)
    manifest = (tmp_path / "store" / "manifest.json").read_bytes()
    shard = tmp_path / "store" / "checkpoint-1" / "shard-1.npy"
    data = bytearray(shard.read_bytes())
    data[-5] ^= 0x01  # a bit of the last float
    shard.write_bytes(bytes(data))
    with pytest.raises(AttributionError, match="checkpoint-1/shard-1.npy"):
        GradientStore.open(tmp_path / "store", p.task, k=K, seed=SEED)
    calls = _count_writes(monkeypatch)
    _store(tmp_path / "store", p.task)
    assert calls == [shard]
    assert (tmp_path / "store" / "manifest.json").read_bytes() == manifest
    GradientStore.open(tmp_path / "store", p.task, k=K, seed=SEED)


def test_a_store_of_other_parameters_or_another_task_is_refused_naming_the_field(tmp_path):
    p = _build(MODELS["mlp"], tmp_path / "checkpoints")
    directory = tmp_path / "store"
    _store(directory, p.task)
    with pytest.raises(AttributionError, match="seed differs"):
        GradientStore.open(directory, p.task, k=K, seed=SEED + 1)
    with pytest.raises(AttributionError, match="k differs"):
        GradientStore.open(directory, p.task, k=K + 1, seed=SEED)
    with pytest.raises(AttributionError, match="seed differs"):
        GradientStore.build(directory, p.task, k=K, seed=SEED + 1, shard_rows=SHARD_ROWS)
    with pytest.raises(AttributionError, match="train_x differs"):
        GradientStore.open(directory, dataclasses.replace(p.task, train_x=p.task.train_x + 1e-3), k=K, seed=SEED)
    with pytest.raises(AttributionError, match="train_y differs"):
        GradientStore.open(directory, dataclasses.replace(p.task, train_y=p.task.train_y.flip(0)), k=K, seed=SEED)
    net = copy.deepcopy(p.model)
    load_checkpoint(net, p.task.checkpoints[1])
    assert save_checkpoint(net, tmp_path / "checkpoints", 2, 0.07) == p.task.checkpoints[1]  # same weights, other bytes
    with pytest.raises(AttributionError, match="checkpoint_sha256 differs"):
        GradientStore.open(directory, p.task, k=K, seed=SEED)


def test_shards_of_an_unfinished_build_for_other_parameters_are_refused(tmp_path, monkeypatch):
    p = _build(MODELS["mlp"], tmp_path / "checkpoints")
    with monkeypatch.context() as patched:
        _count_writes(patched, fail_at=2)
        with pytest.raises(KeyboardInterrupt):
            _store(tmp_path / "store", p.task)
    with pytest.raises(AttributionError, match="shard-0.npy was computed for another task or parameters"):
        GradientStore.build(tmp_path / "store", p.task, k=K, seed=SEED + 1, shard_rows=SHARD_ROWS)


def test_scores_read_every_shard_through_a_memory_map(tmp_path, monkeypatch):
    p = _build(MODELS["mlp"], tmp_path / "checkpoints")
    store = _store(tmp_path / "store", p.task)
    loaded, load = [], np.load
    monkeypatch.setattr(np, "load", lambda *args, **kwargs: loaded.append(load(*args, **kwargs)) or loaded[-1])
    store.scores(p.test_x, p.test_y, block_rows=2)
    assert len(loaded) == N_SHARDS and all(isinstance(a, np.memmap) for a in loaded)
