"""The TF-IDF + logistic regression reference."""

import numpy as np
import pytest
from sklearn.metrics import log_loss

from datanet.models.tfidf import tfidf_logreg

TOPICS = {
    0: ["array", "axis", "dtype", "broadcast", "ndarray", "shape"],
    1: ["figure", "axes", "plot", "color", "legend", "marker"],
    2: ["tensor", "gradient", "module", "device", "autograd", "cuda"],
}
SHARED = ["the", "a", "of", "returns", "given", "parameter", "value", "this"]


def toy(n_per_class: int, seed: int) -> tuple[list[str], np.ndarray]:
    """Texts of 3 topics: 4 topic words among 6 shared ones, in random order."""
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for label, words in TOPICS.items():
        for _ in range(n_per_class):
            chosen = [*rng.choice(words, 4), *rng.choice(SHARED, 6)]
            texts.append(" ".join(rng.permutation(chosen)))
            labels.append(label)
    return texts, np.array(labels)


def test_separable_topics_are_learned_and_the_loss_is_the_test_cross_entropy():
    train_texts, train_y = toy(30, seed=0)
    test_texts, test_y = toy(10, seed=1)
    result = tfidf_logreg(train_texts, train_y, test_texts, test_y, seed=0)
    assert result.accuracy > 0.9  # chance is 1/3
    proba = result.pipeline.predict_proba(test_texts)
    assert result.loss == pytest.approx(log_loss(test_y, proba))
    assert result.accuracy == pytest.approx(result.pipeline.score(test_texts, test_y))
    assert result.n_features > len(TOPICS[0])


def test_shuffled_labels_stay_near_chance_and_runs_are_deterministic():
    train_texts, train_y = toy(30, seed=2)
    test_texts, test_y = toy(20, seed=3)
    shuffled = np.random.default_rng(0).permutation(train_y)
    first = tfidf_logreg(train_texts, shuffled, test_texts, test_y, seed=0)
    again = tfidf_logreg(train_texts, shuffled, test_texts, test_y, seed=0)
    assert first.accuracy < 0.6
    assert (first.accuracy, first.loss) == (again.accuracy, again.loss)


def test_a_test_class_without_training_text_is_refused():
    train_texts, train_y = toy(10, seed=4)
    keep = train_y != 2
    with pytest.raises(ValueError, match=r"test classes \[2\] have no training text"):
        tfidf_logreg([t for t, k in zip(train_texts, keep) if k], train_y[keep], train_texts, train_y)


def test_mismatched_lengths_are_refused():
    with pytest.raises(ValueError, match="train: need as many labels as texts"):
        tfidf_logreg(["a b", "c d"], [0], ["a b"], [0])
