"""Tests for datanet.training: checkpoints, determinism, RNG hygiene, accuracy, config checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from datanet import build_datanet, load_table, parse_scenario
from datanet.models import Standardize, build_model, standardization
from datanet.training import TrainConfig, load_checkpoint, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def wine():
    return build_datanet(load_table("wine"), parse_scenario("honest:2", 2), noise_rate=0.0, seed=0).datanet


@pytest.fixture(scope="module")
def digits():
    return build_datanet(load_table("digits"), parse_scenario("honest:4", 4), noise_rate=0.0, seed=0).datanet


@pytest.mark.parametrize("model", ["logreg", "mlp"])
def test_one_checkpoint_file_per_epoch(wine, tmp_path, model):
    config = TrainConfig(model=model, epochs=3, learning_rate=0.07, batch_size=16, seed=1)
    result = train(wine, config, tmp_path / "ckpt")
    assert [p.name for p in result.checkpoints] == ["epoch_001.pt", "epoch_002.pt", "epoch_003.pt"]
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["epoch_001.pt", "epoch_002.pt", "epoch_003.pt"]
    for epoch, path in enumerate(result.checkpoints, 1):
        saved = torch.load(path, weights_only=True)
        assert set(saved) == {"state_dict", "learning_rate", "epoch"}
        assert saved["learning_rate"] == pytest.approx(0.07)
        assert saved["epoch"] == epoch
    assert result.history["epoch"].tolist() == [1, 2, 3]
    assert {"train_loss", "train_accuracy", "test_loss", "test_accuracy"} <= set(result.history.columns)
    # Successive epochs really moved the weights.
    first = torch.load(result.checkpoints[0], weights_only=True)["state_dict"]
    last = torch.load(result.checkpoints[-1], weights_only=True)["state_dict"]
    assert any(not torch.equal(first[k], last[k]) for k in first)


@pytest.mark.parametrize("model", ["logreg", "mlp"])
def test_load_checkpoint_round_trip(wine, tmp_path, model):
    config = TrainConfig(model=model, epochs=2, learning_rate=0.03, seed=4)
    result = train(wine, config, tmp_path)
    train_x = torch.from_numpy(wine.train_x)
    fresh = build_model(model, train_x, wine.n_classes)
    saved = torch.load(result.checkpoints[-1], weights_only=True)["state_dict"]
    assert any(not torch.equal(fresh.state_dict()[k], saved[k]) for k in saved)
    lr = load_checkpoint(fresh, result.checkpoints[-1])
    assert isinstance(lr, float) and lr == pytest.approx(0.03)
    for key, value in fresh.state_dict().items():
        assert torch.equal(value, saved[key]), key
    # The last checkpoint is the returned model.
    for key, value in result.model.state_dict().items():
        assert torch.equal(value, saved[key]), key
    x = torch.from_numpy(wine.test_x)
    with torch.no_grad():
        assert torch.equal(fresh.eval()(x), result.model(x))
    # An earlier checkpoint loads different weights into the same model.
    load_checkpoint(fresh, result.checkpoints[0])
    first = torch.load(result.checkpoints[0], weights_only=True)["state_dict"]
    assert all(torch.equal(fresh.state_dict()[k], first[k]) for k in first)


def test_standardize_buffers_come_from_the_training_set(wine, tmp_path):
    result = train(wine, TrainConfig(epochs=1), tmp_path)
    standardize = result.model[0]
    assert isinstance(standardize, Standardize)
    np.testing.assert_allclose(standardize.mean.numpy(), wine.train_x.mean(axis=0), rtol=1e-5)
    std = wine.train_x.astype(np.float64).std(axis=0, ddof=0)
    np.testing.assert_allclose(standardize.std.numpy(), np.where(std > 0, std, 1.0), rtol=1e-5)
    assert [name for name, _ in result.model.named_parameters()] == ["1.weight", "1.bias"]
    with torch.no_grad():
        seen = standardize(torch.from_numpy(wine.train_x)).double().numpy()
    np.testing.assert_allclose(seen.std(axis=0), 1.0, rtol=1e-4)  # unit variance on the training set


def test_standardization_centres_constant_features_without_scaling_them():
    x = np.array([[1.0, 5.0], [3.0, 5.0]])
    mean, std = standardization(x)
    np.testing.assert_array_equal(mean, [2.0, 5.0])
    np.testing.assert_array_equal(std, [1.0, 1.0])  # population std of (1, 3) is 1; the constant column gets 1
    mean, std = standardization(np.array([[0.0], [4.0]]))
    np.testing.assert_array_equal(std, [2.0])
    with pytest.raises(ValueError, match="shape"):
        standardization(np.zeros((0, 3)))


def test_load_checkpoint_refuses_a_file_of_another_format(tmp_path):
    model = build_model("logreg", torch.zeros(4, 3), 2)
    torch.save({"weights": model.state_dict()}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match=r"other\.pt.*missing \['state_dict', 'learning_rate'\]"):
        load_checkpoint(model, tmp_path / "other.pt")


@pytest.mark.parametrize("model", ["logreg", "mlp"])
def test_same_seed_gives_identical_checkpoint_bytes(wine, tmp_path, model):
    config = TrainConfig(model=model, epochs=2, seed=3)
    a = train(wine, config, tmp_path / "a")
    b = train(wine, config, tmp_path / "b")
    for pa, pb in zip(a.checkpoints, b.checkpoints, strict=True):
        assert pa.read_bytes() == pb.read_bytes()
    c = train(wine, TrainConfig(model=model, epochs=2, seed=4), tmp_path / "c")
    for pa, pc in zip(a.checkpoints, c.checkpoints, strict=True):
        assert pa.read_bytes() != pc.read_bytes()
        sa = torch.load(pa, weights_only=True)["state_dict"]
        sc = torch.load(pc, weights_only=True)["state_dict"]
        assert not torch.equal(sa["1.weight"], sc["1.weight"])


def test_train_leaves_the_global_rng_alone(wine, tmp_path):
    torch.manual_seed(1234)
    before = torch.get_rng_state().clone()
    expected_next = torch.rand(5)
    torch.set_rng_state(before)
    train(wine, TrainConfig(model="mlp", epochs=2, seed=0), tmp_path)
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(torch.rand(5), expected_next)


def test_global_seed_does_not_change_the_result(wine, tmp_path):
    torch.manual_seed(1)
    a = train(wine, TrainConfig(model="mlp", epochs=1, seed=0), tmp_path / "a")
    torch.manual_seed(2)
    b = train(wine, TrainConfig(model="mlp", epochs=1, seed=0), tmp_path / "b")
    assert a.checkpoints[0].read_bytes() == b.checkpoints[0].read_bytes()


@pytest.mark.parametrize("model", ["logreg", "mlp"])
def test_digits_accuracy_well_above_chance(digits, tmp_path, model):
    result = train(digits, TrainConfig(model=model, epochs=5, seed=0), tmp_path)
    # Check the reported accuracy against one computed here from the model.
    with torch.no_grad():
        predictions = result.model(torch.from_numpy(digits.test_x)).argmax(dim=1).numpy()
    accuracy = float((predictions == digits.test_y).mean())
    assert accuracy > 0.85
    assert result.test_accuracy == pytest.approx(accuracy, abs=1e-6)
    assert not result.model.training


@pytest.mark.parametrize("model", ["svm", "", "LogReg"])
def test_config_rejects_unknown_model(model):
    with pytest.raises(ValueError, match="unknown model"):
        TrainConfig(model=model)


@pytest.mark.parametrize("epochs", [0, -1])
def test_config_rejects_too_few_epochs(epochs):
    with pytest.raises(ValueError, match="epochs"):
        TrainConfig(epochs=epochs)


def test_build_model_rejects_unknown_name():
    with pytest.raises(ValueError, match="'cnn'"):
        build_model("cnn", torch.zeros(4, 3), 2)
