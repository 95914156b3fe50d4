"""Figures name the attribution method whose credit they show."""

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from datanet_lab import figures, pipeline

TINY = dict(dataset="wine", n_contributors=3, scenario="honest:3", epochs=1)


def _labels(fig) -> str:
    return " ".join([fig.get_suptitle(), *(ax.get_xlabel() for ax in fig.axes)])


@pytest.mark.parametrize("method", ["grad_cosine", "random"])
def test_the_top_samples_figure_names_the_runs_method_when_scored_and_when_reused(tmp_path, method):
    run = pipeline.open_run(str(tmp_path), attribution_method=method, **TINY)
    dn = pipeline.datanet(run)
    for result in (pipeline.attribute(run), pipeline.attribute(run)):  # scored, then reused from its manifest
        fig = figures.top_influential(result.sample_credit, dn.train_x, pipeline.behaviours(run), dn.image_shape)
        assert f"{method} credit" in _labels(fig) and "TracIn" not in _labels(fig)
        plt.close(fig)


def test_the_image_figure_names_the_given_method_and_a_figure_without_one_is_refused():
    samples = pd.DataFrame({"sample_id": ["s0", "s1"], "contributor": ["c00", "c01"], "credit": [0.5, -0.5]})
    behaviours = pd.Series({"c00": "honest", "c01": "noisy"})
    pixels = np.array([[0.0] * 4, [1.0] * 4])
    fig = figures.top_influential(samples, pixels, behaviours, (2, 2), k=2, method="trak")
    assert fig.get_suptitle() == "Training samples by trak credit (+ = lowered test loss)"
    plt.close(fig)
    with pytest.raises(ValueError, match="the figure names the method of its credit"):
        figures.top_influential(samples, pixels, behaviours, None, k=1)
