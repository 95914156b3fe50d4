"""Query-time attribution reproduces the run's scores and roll-up, and its sign means what it says."""

import copy

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import attribution
from attribution.fast_tracin import GradientFactors
from datanet.models import load_checkpoint
from datanet_lab import pipeline
from datanet_lab.serving import (QueryAttributor, RequestError, ServingError, TrainGradients, rollup_matrix,
                                 run_test_inputs)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_params):
    """Tiny finished runs by (model, attribution_method)."""
    made = {}
    for model, method in (("logreg", "tracin_captum"), ("mlp", "tracin_captum"), ("logreg", "grad_dot")):
        run = pipeline.open_run(str(tmp_path_factory.mktemp(f"{model}-{method}")), **tiny_params, model=model,
                                attribution_method=method)
        pipeline.attribute(run)
        made[model, method] = run
    return made


def _task(run) -> attribution.AttributionTask:
    dn, trained = pipeline.datanet(run), pipeline.train_model(run)
    return attribution.AttributionTask(trained.model, torch.from_numpy(dn.train_x), torch.from_numpy(dn.train_y),
                                       trained.checkpoints, load_checkpoint)


@pytest.mark.parametrize("key", [("logreg", "tracin_captum"), ("mlp", "tracin_captum"), ("logreg", "grad_dot")])
def test_with_the_test_labels_it_reproduces_the_runs_scores_and_rollup(runs, key):
    run = runs[key]
    served = QueryAttributor.from_run(str(run.directory))  # a path: parameters from the manifests
    dn = pipeline.datanet(run)
    result = served.attribute(dn.test_x, labels=dn.test_y)
    scores = np.load(run.directory / "attribution" / "scores.npy")
    np.testing.assert_allclose(result.scores, scores, rtol=1e-5, atol=1e-6 * np.abs(scores).max())
    samples = pd.read_csv(run.directory / "attribution" / "sample_credit.csv")
    order = pipeline.submission_order(run, dn)
    expected = np.column_stack([
        attribution.contributor_credit(scores[:, [j]], dn.train_contributors, dn.contributors,
                                       samples["cluster"].to_numpy(), order).to_numpy()
        for j in range(scores.shape[1])])
    assert served.contributors == dn.contributors
    np.testing.assert_allclose(result.contributor_credit, expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max())
    recorded = pd.read_csv(run.directory / "attribution" / "contributor_credit.csv", index_col="contributor")
    np.testing.assert_allclose(result.contributor_credit.mean(axis=1), recorded.loc[list(dn.contributors), "attribution"],
                               rtol=1e-5, atol=1e-6 * np.abs(expected).max())


def test_without_labels_it_attributes_the_loss_at_the_predicted_class(runs):
    run = runs["mlp", "tracin_captum"]
    served = QueryAttributor.from_run(run)
    x = run_test_inputs(run)[:7]
    result = served.attribute(x)
    model = pipeline.train_model(run).model
    with torch.no_grad():
        logits = model(torch.from_numpy(x).float())
    np.testing.assert_array_equal(result.predictions, logits.argmax(dim=1).numpy())
    np.testing.assert_array_equal(result.labels, result.predictions)
    np.testing.assert_allclose(result.probabilities, torch.softmax(logits.double(), dim=1).numpy(), rtol=1e-6)
    reference = attribution.CaptumTracIn().fit(_task(run)).scores(torch.from_numpy(x).float(),
                                                                  torch.from_numpy(result.predictions))
    np.testing.assert_allclose(result.scores, reference, rtol=1e-5, atol=1e-6 * np.abs(reference).max())


def test_a_positive_score_means_a_step_on_that_sample_raises_confidence_in_the_answer(runs):
    run = runs["logreg", "grad_dot"]  # the gradient dot at the trained model: a first-order step's effect
    served = QueryAttributor.from_run(run)
    dn = pipeline.datanet(run)
    x = run_test_inputs(run)[:1]
    result = served.attribute(x)
    model = copy.deepcopy(pipeline.train_model(run).model).double()
    answer, step = int(result.predictions[0]), 1e-4

    def log_confidence(m: nn.Module) -> float:
        with torch.no_grad():
            return float(torch.log_softmax(m(torch.from_numpy(x)), dim=1)[0, answer])

    before = log_confidence(model)
    for i in (int(result.scores[:, 0].argmax()), int(result.scores[:, 0].argmin())):
        stepped = copy.deepcopy(model)
        loss = nn.functional.cross_entropy(stepped(torch.from_numpy(dn.train_x[i : i + 1]).double()),
                                           torch.from_numpy(dn.train_y[i : i + 1]), reduction="sum")
        grads = torch.autograd.grad(loss, list(stepped.parameters()))
        with torch.no_grad():
            for p, g in zip(stepped.parameters(), grads):
                p -= step * g
        change = log_confidence(stepped) - before
        np.testing.assert_allclose(change, step * result.scores[i, 0], rtol=1e-2)
    assert result.scores[:, 0].max() > 0 > result.scores[:, 0].min()


def test_a_batch_answers_as_its_inputs_one_at_a_time(runs):
    served = QueryAttributor.from_run(runs["mlp", "tracin_captum"])
    x = run_test_inputs(runs["mlp", "tracin_captum"])[:4]
    batch = served.attribute(x)
    for j in range(len(x)):
        one = served.attribute(x[j : j + 1])
        np.testing.assert_allclose(one.scores[:, 0], batch.scores[:, j], rtol=1e-5, atol=1e-6 * np.abs(batch.scores).max())
        np.testing.assert_allclose(one.contributor_credit[:, 0], batch.contributor_credit[:, j], rtol=1e-5,
                                   atol=1e-6 * np.abs(batch.contributor_credit).max())


def _random_factors(rng, n, weights, shared_input):
    """Per checkpoint, two Gram layers (the first's input the same at every checkpoint when
    ``shared_input``) and other parameters' gradients, float64."""
    first = torch.from_numpy(rng.standard_normal((n, 4)))
    out = []
    for _ in weights:
        a0 = first if shared_input else torch.from_numpy(rng.standard_normal((n, 4)))
        linear = [(a0, torch.from_numpy(rng.standard_normal((n, 3)))),
                  (torch.from_numpy(rng.standard_normal((n, 5))), torch.from_numpy(rng.standard_normal((n, 2))))]
        out.append(GradientFactors(linear, torch.from_numpy(rng.standard_normal((n, 6)))))
    return out


@pytest.mark.parametrize("train_shared, query_shared", [(True, True), (False, False), (True, False)])
def test_train_gradients_equal_the_weighted_sum_of_per_checkpoint_dots(train_shared, query_shared):
    rng = np.random.default_rng(0)
    weights = [0.5, 0.25, 2.0]
    train, queries = _random_factors(rng, 9, weights, train_shared), _random_factors(rng, 4, weights, query_shared)
    naive = sum(w * t.dot(q) for w, t, q in zip(weights, train, queries))
    np.testing.assert_allclose(TrainGradients(train, weights).dot(queries).numpy(), naive.numpy(), rtol=1e-12)
    # and the dots are those of the materialised per-sample gradients (δ aᵀ flattened, then other)
    def flat(factors):
        return torch.cat([torch.einsum("no,ni->noi", d, a).reshape(len(a), -1) for a, d in factors.linear]
                         + [factors.other], dim=1)
    materialised = sum(w * flat(t) @ flat(q).T for w, t, q in zip(weights, train, queries))
    np.testing.assert_allclose(naive.numpy(), materialised.numpy(), rtol=1e-12)


def test_train_gradients_refuse_a_checkpoint_count_that_differs():
    rng = np.random.default_rng(0)
    train = TrainGradients(_random_factors(rng, 5, [1.0, 1.0], True), [1.0, 1.0])
    with pytest.raises(ValueError, match="1 checkpoints' query factors, expected 2"):
        train.dot(_random_factors(rng, 3, [1.0], True))
    with pytest.raises(ValueError, match="2 checkpoints' factors for 1 weights"):
        TrainGradients(_random_factors(rng, 5, [1.0, 1.0], True), [1.0])


def test_the_rollup_matrix_is_contributor_credit_per_column():
    rng = np.random.default_rng(1)
    n = 40
    clusters = rng.integers(0, 15, n)
    clusters = np.unique(clusters, return_inverse=True)[1]  # ids 0..k-1, several multi-member clusters
    order = rng.permutation(1000)[:n]
    owners = rng.choice(["a", "b", "c"], n)
    everyone = ("a", "b", "c", "idle")  # a contributor without accepted samples gets 0
    scores = rng.standard_normal((n, 6))
    matrix = rollup_matrix(owners, everyone, clusters, order)
    expected = np.column_stack([attribution.contributor_credit(scores[:, [j]], owners, everyone, clusters, order).to_numpy()
                                for j in range(scores.shape[1])])
    assert (np.bincount(clusters) > 1).sum() >= 5
    np.testing.assert_allclose(matrix @ scores, expected, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match=r"contributors \['c'\] outside the contributor list"):
        rollup_matrix(owners, ("a", "b"), clusters, order)


def test_checkpoint_weights_are_the_checkpoints_learning_rates(runs):
    task = _task(runs["logreg", "tracin_captum"])
    rates = [float(torch.load(p, weights_only=True)["learning_rate"]) for p in task.checkpoints]
    assert len(rates) == 2
    assert attribution.FastTracIn().fit(task).checkpoint_weights == rates
    assert attribution.FastGradientDot().fit(task).checkpoint_weights == [1.0]


@pytest.mark.parametrize(("key", "computed_by"), [(("logreg", "tracin_captum"), "tracin_fast"),
                                                   (("logreg", "grad_dot"), "grad_dot_fast")])
def test_it_names_the_method_that_computes_the_credit_not_the_runs(runs, key, computed_by):
    assert runs[key].params["attribution_method"] == key[1]
    assert QueryAttributor.from_run(runs[key]).method == computed_by


def test_a_method_without_query_time_attribution_is_named():
    task = attribution.AttributionTask(nn.Sequential(nn.Linear(3, 2)), torch.zeros(4, 3), torch.zeros(4, dtype=torch.long),
                                       ["x.pt"], load_checkpoint)
    for method in ("trak", "shapley"):
        with pytest.raises(ServingError, match=rf"'{method}' has no query-time attribution; supported: "
                                               r"\['grad_dot', 'grad_dot_fast', 'grad_dot_lograd', 'tracin_captum', 'tracin_fast', 'tracin_lograd'\]$"):
            QueryAttributor(task, method, ["a"] * 4, ["a"], np.arange(4), np.arange(4))


def test_a_run_without_a_step_is_refused_naming_the_step(tmp_path, tiny_params):
    with pytest.raises(ServingError, match="run directory not found"):
        QueryAttributor.from_run(tmp_path / "absent")
    with pytest.raises(ServingError, match="no 'build' step"):
        QueryAttributor.from_run(tmp_path)
    run = pipeline.open_run(str(tmp_path / "trained"), **tiny_params)
    pipeline.train_model(run)
    before = sorted(p.relative_to(run.directory) for p in run.directory.rglob("*"))
    for given in (run, run.directory):
        with pytest.raises(ServingError, match="no 'attribute' step .*pipeline.attribute"):
            QueryAttributor.from_run(given)
    assert sorted(p.relative_to(run.directory) for p in run.directory.rglob("*")) == before  # nothing computed


def test_bad_inputs_and_labels_are_refused(runs):
    served = QueryAttributor.from_run(runs["logreg", "tracin_captum"])
    x = run_test_inputs(runs["logreg", "tracin_captum"])[:3]
    with pytest.raises(RequestError, match=r"shape \(n, 13\), got \(3, 12\)"):
        served.attribute(x[:, :-1])
    bad = x.copy()
    bad[1, 4] = np.nan
    with pytest.raises(ValueError, match="data row 2, field 4 is nan"):
        served.attribute(bad)
    with pytest.raises(RequestError, match=r"labels must hold one class index in \[0, 3\)"):
        served.attribute(x, labels=np.array([0, 1, 3]))
    with pytest.raises(RequestError, match="labels must hold"):
        served.attribute(x, labels=np.array([0, 1]))
