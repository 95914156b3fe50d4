"""The fast non-transformer reference: TF-IDF features + L2 logistic regression (scikit-learn).

It shows what the MiniLM encoder buys on a text Datanet: the same train/test split scored by a
bag-of-words model in about a second.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.pipeline import Pipeline, make_pipeline

NGRAMS = (1, 2)
MIN_DF = 2
C = 10.0
"""Inverse L2 strength of the logistic regression (scikit-learn's ``C``)."""


@dataclass(frozen=True)
class TfidfResult:
    """The fitted pipeline and its test ``accuracy`` and ``loss`` (mean cross-entropy, nats)."""

    pipeline: Pipeline
    accuracy: float
    loss: float

    @property
    def n_features(self) -> int:
        return len(self.pipeline[0].vocabulary_)


def tfidf_logreg(train_texts: Sequence[str], train_y: Sequence[int], test_texts: Sequence[str],
                 test_y: Sequence[int], seed: int = 0, *, ngrams: tuple[int, int] = NGRAMS, min_df: int = MIN_DF,
                 c: float = C) -> TfidfResult:
    """Fit sublinear TF-IDF word ``ngrams`` (terms in at least ``min_df`` training texts) and a
    multinomial logistic regression (L-BFGS, inverse L2 strength ``c``) on the training texts;
    score it on the test texts. Deterministic: the solver is exact, ``seed`` is its ``random_state``.

    Raises:
        ValueError: a split is empty, lengths differ, or a test class is absent from training
            (the model could not give it a probability).
    """
    train_y, test_y = np.asarray(train_y, dtype=np.int64), np.asarray(test_y, dtype=np.int64)
    for split, texts, y in (("train", train_texts, train_y), ("test", test_texts, test_y)):
        if not len(texts) or len(texts) != len(y):
            raise ValueError(f"{split}: need as many labels as texts (at least one), got {len(texts)} texts and {len(y)} labels")
    unseen = sorted(set(test_y.tolist()) - set(train_y.tolist()))
    if unseen:
        raise ValueError(f"test classes {unseen} have no training text")
    pipeline = make_pipeline(TfidfVectorizer(ngram_range=ngrams, min_df=min_df, sublinear_tf=True),
                             LogisticRegression(C=c, max_iter=5000, random_state=seed))
    pipeline.fit(list(train_texts), train_y)
    proba = pipeline.predict_proba(list(test_texts))
    classes = pipeline.classes_
    accuracy = float((classes[proba.argmax(axis=1)] == test_y).mean())
    return TfidfResult(pipeline, accuracy, float(log_loss(test_y, proba, labels=classes)))
