"""Payable inference: each served input's prediction and its attribution over the training data
by the run's method, rolled up to contributors (:mod:`~datanet_lab.serving.attributor`), the run
it is served from (:mod:`~datanet_lab.serving.runs`), and the reading and checking of inference
inputs (:mod:`~datanet_lab.serving.requests`)."""

from datanet_lab.serving.attributor import QueryAttributor, QueryResult, TrainGradients, rollup_matrix
from datanet_lab.serving.requests import REQUEST_SUFFIXES, RequestError, check_batch, check_input, read_requests
from datanet_lab.serving.runs import STEPS, ServingError, run_test_inputs, served_run

__all__ = ["REQUEST_SUFFIXES", "STEPS", "QueryAttributor", "QueryResult", "RequestError", "ServingError",
           "TrainGradients", "check_batch", "check_input", "read_requests", "rollup_matrix", "run_test_inputs", "served_run"]
