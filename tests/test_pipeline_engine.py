"""The step engine (datanet_lab.pipeline.engine): a step stopped anywhere finishes when run again,
as if never stopped; results are loaded once per process."""

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import ledger
from datanet_lab import pipeline
from datanet_lab.pipeline import engine, generation, manifest, text

WINE = dict(dataset="wine", n_contributors=3, scenario="honest:2,duplicate:1", epochs=1, signing_keys="seeded")
"""A run whose pay slashes a stake (the duplicate's rejected rows), so a resumed pay must plan from the stakes before its epoch."""
STEPS = {"build": pipeline.build, "train": pipeline.train_model, "attribute": pipeline.attribute, "pay": pipeline.pay}
"""Each step by name, in order, with the function that runs it."""


@pytest.fixture(scope="module")
def stages(tmp_path_factory) -> dict[str, Path]:
    """A run directory just before each step (``build``: empty) and after the last (``done``)."""
    base = tmp_path_factory.mktemp("stages")
    names = [*STEPS, "done"]
    (base / names[0]).mkdir()
    for name, after in zip(STEPS, names[1:]):
        shutil.copytree(base / name, base / after)
        STEPS[name](pipeline.open_run(str(base / after), **WINE))
    with ledger.Ledger(base / "done" / "ledger.sqlite") as book:
        assert any(e.payload["amount"] > 0 for e in book.entries("slash"))
    return {name: base / name for name in names}


def _open(directory: Path) -> pipeline.Run:
    return pipeline.open_run(str(directory), **WINE)


def _files(directory: Path) -> dict[str, str]:
    """SHA-256 of every file of a run directory but its keystore, ledger and staging directory."""
    return {p.relative_to(directory).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*"))
            if p.is_file() and p.relative_to(directory).parts[0] not in ("keystore", engine.STAGING)
            and p.name != "ledger.sqlite"}


def _entries(run: pipeline.Run) -> list[tuple]:
    with run.ledger() as book:
        return [(e.kind, e.actor, e.timestamp, e.payload) for e in book.entries()]


def _stop(*_, **__):
    raise KeyboardInterrupt("stopped")


def _stop_after(function, calls: int = 1):
    done = []

    def stopped(*args, **kwargs):
        function(*args, **kwargs)
        done.append(None)
        if len(done) == calls:
            raise KeyboardInterrupt("stopped")
    return stopped


STOPS = {  # where a step stops: each stops it by patching what the engine calls there
    "after compute": lambda mp: mp.setattr(engine, "append_once", _stop),
    "after the ledger append": lambda mp: mp.setattr(engine, "append_once", _stop_after(engine.append_once)),
    "after the first rename": lambda mp: mp.setattr(engine, "move_into_place", _stop_after(engine.move_into_place)),
    "after the second rename": lambda mp: mp.setattr(engine, "move_into_place", _stop_after(engine.move_into_place, 2)),
    "before the manifest": lambda mp: mp.setattr(manifest, "write", _stop),
}
CASES = [(step, where) for step in STEPS for where in STOPS
         if where != "after the second rename" or len(getattr(manifest, step.upper()).outputs) > 1]


@pytest.mark.parametrize("step, where", CASES)
def test_a_step_stopped_anywhere_finishes_when_run_again_as_if_never_stopped(stages, tmp_path, monkeypatch, step, where):
    shutil.copytree(stages[step], tmp_path / "run")
    run = _open(tmp_path / "run")
    with monkeypatch.context() as patched:
        STOPS[where](patched)
        with pytest.raises(KeyboardInterrupt):
            STEPS[step](run)
    assert not manifest.manifest_path(run.directory, step).exists()
    STEPS[step](run)
    after = [*STEPS, "done"][list(STEPS).index(step) + 1]
    assert _files(run.directory) == _files(stages[after])  # outputs byte-identical
    assert _entries(run) == _entries(_open(stages[after]))  # every record once
    assert not (run.directory / engine.STAGING).exists()


def test_a_stopped_step_is_not_finished_over_other_ledger_records(stages, tmp_path, monkeypatch):
    shutil.copytree(stages["train"], tmp_path / "run")
    run = _open(tmp_path / "run")
    with monkeypatch.context() as patched:
        STOPS["after the ledger append"](patched)
        with pytest.raises(KeyboardInterrupt):
            pipeline.train_model(run)
    before, files = _entries(run), _files(run.directory)
    other = pipeline.open_run(str(run.directory), **(WINE | {"epochs": 2}))
    with pytest.raises(pipeline.ManifestError, match=r"train: .* already records this step otherwise than this run "
                                                     r"computes it \(record 0 of 1: the ledger holds training_run by "
                                                     r"trainer .*'epochs': 1.*this run makes training_run .*'epochs': 2"):
        pipeline.train_model(other)
    assert _entries(run) == before and _files(run.directory) == files
    assert not manifest.manifest_path(run.directory, "train").exists()


def test_a_pay_loads_each_earlier_step_once(stages, tmp_path, monkeypatch):
    shutil.copytree(stages["pay"], tmp_path / "run")
    checked = []
    check = manifest.check

    def counted(run_dir, step, params):
        checked.append(step.name)
        return check(run_dir, step, params)
    monkeypatch.setattr(manifest, "check", counted)
    pipeline.pay(_open(tmp_path / "run"))
    assert {name: checked.count(name) for name in STEPS} == dict.fromkeys(STEPS, 1)


KILLED_BUILD = """
import os, signal, sys
from datanet_lab import pipeline
from datanet_lab.pipeline import engine
move = engine.move_into_place
def move_then_die(staged, target):
    move(staged, target)
    os.kill(os.getpid(), signal.SIGKILL)
engine.move_into_place = move_then_die
pipeline.build(pipeline.open_run(sys.argv[1], **{WINE}))
"""


@pytest.mark.slow
def test_a_build_killed_after_its_ledger_append_and_first_rename_finishes_when_run_again(stages, tmp_path):
    killed = subprocess.run([sys.executable, "-c", KILLED_BUILD.replace("{WINE}", repr(WINE)), str(tmp_path / "run")],
                            capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr
    run = _open(tmp_path / "run")
    assert (tmp_path / "run" / "dataset").is_dir() and not manifest.manifest_path(run.directory, "build").exists()
    pipeline.build(run)
    assert _files(run.directory) == _files(stages["train"])
    assert _entries(run) == _entries(_open(stages["train"]))


TINY_GEN = {"gen_per_contributor": 2, "gen_epochs": 3, "gen_width": 32, "gen_vocab_size": 512, "gen_prompts": 3,
            "gen_max_new_tokens": 24, "gen_min_span": 3, "gen_temperature": 0.0, "signing_keys": "seeded"}


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
def test_a_generation_pay_stopped_after_its_ledger_append_finishes_when_run_again(tmp_path, monkeypatch):
    gen = generation
    runs = {name: gen.generation_run(pipeline.open_run(str(tmp_path / name), **TINY_GEN)) for name in ("whole", "stopped")}
    paid = gen.pay_generation(runs["whole"])
    gen.index_generation(runs["stopped"])
    gen.generate_texts(runs["stopped"])  # all but the pay
    with monkeypatch.context() as patched:
        patched.setattr(ledger.Ledger, "append_many", _stop_after(ledger.Ledger.append_many))
        with pytest.raises(KeyboardInterrupt):
            gen.pay_generation(runs["stopped"])
    assert not manifest.manifest_path(runs["stopped"].directory, "pay").exists()
    pd.testing.assert_frame_equal(gen.pay_generation(runs["stopped"]), paid)
    assert _entries(runs["stopped"]) == _entries(runs["whole"])  # every payment once
    assert (_files(runs["stopped"].directory)["credit/spans.csv"] == _files(runs["whole"].directory)["credit/spans.csv"])


SMALL_TEXT = {"text_per_package": 12, "text_epochs": 1, "text_ig_examples": 1, "signing_keys": "seeded"}


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
def test_text_steps_stopped_before_their_manifests_finish_when_run_again(tmp_path, monkeypatch):
    runs = {name: text.text_run(pipeline.open_run(str(tmp_path / name), **SMALL_TEXT)) for name in ("whole", "stopped")}
    text.attribute_text(runs["whole"])
    for function in (text.build_text, text.encode_text, text.train_text, text.attribute_text):
        with monkeypatch.context() as patched:
            patched.setattr(manifest, "write", _stop)
            with pytest.raises(KeyboardInterrupt):
                function(runs["stopped"])
        function(runs["stopped"])
    stopped, whole = (_files(runs[name].directory) for name in ("stopped", "whole"))
    timed = {"training/models.csv", "manifests/train.json", "manifests/attribute.json"}  # models.csv holds seconds
    assert set(stopped) == set(whole) and {k for k in whole if stopped[k] != whole[k]} <= timed
    assert _entries(runs["stopped"]) == _entries(runs["whole"])
