"""The HTTP API of payable inference: a FastAPI app over a :class:`Service` (the group-commit
server of :mod:`~datanet_lab.serving.server`, or any object with its methods).

Endpoints:

- ``POST /infer``: body ``{"inputs": [[...], ...]}`` (1 to :data:`MAX_ROWS` rows) or
  ``{"input": [...]}`` (one row) of ``n_features`` finite numbers each. Answered once the
  request's micro-batch is committed to the ledger: per row, the prediction, its receipt id and
  what the inference paid (:class:`InferResponse`).
- ``GET /receipts/{receipt_id}``: the receipt and its two-level proof
  (:func:`ledger.receipts.receipt_proof`, checked by :func:`ledger.receipts.check_receipt`).
  ``404`` for an id the server never issued; ``409`` for an id whose batch is being committed
  (an id is only ever answered after its commit, so a client sees this only for an id it
  guessed).
- ``GET /head``: the ledger's latest signed tree head and the log's public key.
- ``GET /earnings``: units per role and per contributor (paid, and accrued balances).

Every ``POST /infer`` answer carries a ``Server-Timing`` header: milliseconds the request spent
per phase (:data:`TIMING_PHASES`) on the server, from its body read to its answer encoded.

A request the service cannot take (shutting down, or stopped by a commit the ledger refused)
gets 503 with its reason; one whose input the model cannot serve, found only while serving it,
gets 422.

Bad requests get a 4xx JSON body ``{"reason": ..., "loc": [...]}`` (``loc`` names the field and
row, as JSON indices from 0) and change nothing: no receipt, no ledger entry. A body over
:data:`MAX_BODY_BYTES` is refused with 413, from its ``Content-Length`` when it declares one and
while it is read otherwise.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from contextlib import suppress
from time import perf_counter
from typing import Any, Protocol

import numpy as np
from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from datanet_lab.serving.requests import RequestError, check_batch, check_input

MAX_BODY_BYTES = 1 << 20
"""The largest ``POST /infer`` body accepted (1 MiB)."""
MAX_ROWS = 64
"""The most inputs one ``POST /infer`` request may carry."""
TIMING_PHASES = ("parse", "queue", "attribution", "split", "hashing", "commit", "answer")
"""The phases of a ``POST /infer`` request on the server, in its ``Server-Timing`` header: ``parse``
(body read, validated and checked), then, as its :class:`Answered` says, ``queue`` (until its
group's serving began: the commit in progress and the group's gathering) and its group's
``attribution``, ``split``, ``hashing`` and ``commit`` (the phases of
:data:`~datanet_lab.serving.economy.PHASES`; ``commit`` holds the receipts file's write and fsync
and the ledger entry's SQLite commit), and ``answer`` (the rest: the group's other work, the
hand-over to the event loop and the answer's encoding)."""


class ApiError(Exception):
    """An HTTP error answered as ``{"reason": reason, "loc": loc}`` with ``status``."""

    def __init__(self, status: int, reason: str, loc: Sequence[str | int] = ()) -> None:
        super().__init__(reason)
        self.status, self.reason, self.loc = status, reason, list(loc)


class UnknownReceipt(LookupError):
    """A receipt id the server never issued."""


class ReceiptPending(LookupError):
    """A receipt id whose batch is not committed yet."""


class ServiceUnavailable(RuntimeError):
    """The service cannot serve requests now (starting, shutting down, or stopped by a failed commit)."""


@dataclasses.dataclass(frozen=True)
class Answered:
    """A served ``POST /infer`` request: ``results``, the fields of :class:`InferResult` per row,
    and ``phases``, seconds it spent per service-side phase of :data:`TIMING_PHASES` (those a
    service does not measure count as ``answer``)."""

    results: list[dict[str, Any]]
    phases: Mapping[str, float] = dataclasses.field(default_factory=dict)


class Service(Protocol):
    """What the app serves from (implemented by :class:`~datanet_lab.serving.server.Server`)."""

    n_features: int

    def submit(self, x: np.ndarray) -> Future[Answered]:
        """Queue ``x`` ``(n, n_features)`` checked inputs; the future gets their :class:`Answered`
        (one result per row) once they are committed, or a
        :class:`~datanet_lab.serving.requests.RequestError` for an input the model cannot serve
        (answered 422), failing that request alone."""

    def receipt(self, receipt_id: str) -> dict[str, Any]:
        """The :func:`~ledger.receipts.receipt_proof` document of a committed receipt.
        Raises :class:`UnknownReceipt` or :class:`ReceiptPending`."""

    def head(self) -> dict[str, Any]:
        """The fields of :class:`HeadResponse`."""

    def earnings(self) -> dict[str, Any]:
        """The fields of :class:`EarningsResponse`."""


class InferRequest(BaseModel):
    """``{"inputs": [[float, ...], ...]}`` or ``{"input": [float, ...]}``: exactly one of them.
    Numbers only (strict: no strings or booleans); width and finiteness are checked against the
    served model by :func:`~datanet_lab.serving.requests.check_input`."""

    model_config = ConfigDict(strict=True, extra="forbid")
    inputs: list[list[float]] | None = None
    input: list[float] | None = None

    @model_validator(mode="after")
    def _one_form(self) -> InferRequest:
        if (self.inputs is None) == (self.input is None):
            raise ValueError("give exactly one of 'inputs' (a list of rows) and 'input' (one row)")
        return self

    def rows(self) -> tuple[str, list[list[float]]]:
        """The field the rows came in and the rows."""
        return ("input", [self.input]) if self.input is not None else ("inputs", self.inputs)


class Credit(BaseModel):
    contributor: str
    score: float


class InferResult(BaseModel):
    """One served input, from its committed receipt: ``prediction`` the class index the model
    answered with softmax ``probability``; ``receipt_id`` (the receipt's ``request_id``) proves it
    (``GET /receipts/{receipt_id}``); ``fee`` units split by role in ``fee_split``; ``shares``
    each positively credited contributor's exact part of the ``contributors`` role in units, as
    ``"n/d"``; ``top`` the contributors with the largest credit, best first (positive = raised
    the model's confidence in its answer)."""

    receipt_id: str
    batch_id: str
    prediction: int
    probability: float
    fee: int
    fee_split: dict[str, int]
    shares: dict[str, str]
    top: list[Credit]


class InferResponse(BaseModel):
    results: list[InferResult]


class HeadResponse(BaseModel):
    """The ledger's latest signed tree head (``size`` entries, hex ``root`` and ``signature``)
    and the hex Ed25519 key of the log that signs heads."""

    size: int
    root: str
    timestamp: str
    signature: str
    log_public_key: str


class EarningsResponse(BaseModel):
    """Every fee unit of the run's committed inferences, as of the last commit: ``fees`` charged
    in all; ``by_role`` units per fee role (``contributors`` included); ``paid`` whole units per
    contributor over closed epochs; ``balances`` each contributor's accrued, unpaid, exact units
    (``"n/d"``; carried remainders included); ``unallocated`` contributors' parts that no
    positive credit claimed. Exactly: ``fees == sum(by_role)``, and ``by_role["contributors"] ==
    sum(paid) + sum(balances) + unallocated``."""

    fees: int
    by_role: dict[str, int]
    paid: dict[str, int]
    balances: dict[str, str]
    unallocated: int


def create_app(service: Service) -> FastAPI:
    """The FastAPI app answering the module docstring's endpoints from ``service``."""
    app = FastAPI(title="Datanet Lab payable inference", summary=__doc__.split("\n\n")[0])

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, error: ApiError) -> JSONResponse:
        return JSONResponse({"reason": error.reason, "loc": error.loc}, status_code=error.status)

    async def infer(request: Request) -> Response:
        start = perf_counter()
        field, x = _checked_rows(await _limited_body(request), service.n_features)
        submitted = perf_counter()
        try:
            answered = await asyncio.wrap_future(service.submit(x))
        except RequestError as exc:  # an input the model cannot serve, found while serving it
            raise ApiError(422, f"{field}: {exc}", [field]) from None
        except ServiceUnavailable as exc:
            raise ApiError(503, str(exc)) from None
        # The results are the service's own checked fields (InferResult's): encoded as they are,
        # not validated again through InferResponse, which cost more CPU than the encoding.
        body = json.dumps({"results": answered.results}, separators=(",", ":"), allow_nan=False).encode()
        phases = {"parse": submitted - start, **answered.phases}
        phases["answer"] = perf_counter() - start - sum(phases.values())
        timing = ", ".join(f"{phase};dur={phases.get(phase, 0.0) * 1e3:.3f}" for phase in TIMING_PHASES)
        return Response(body, media_type="application/json", headers={"server-timing": timing})

    # A plain Starlette route, documented by _openapi: FastAPI's own handling of a route (its
    # dependency solving and response model) cost ~130 us of CPU per request on a 2-core machine,
    # a fifth of what a 1-row request costs in all.
    app.router.add_route("/infer", infer, methods=["POST"], include_in_schema=False)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]

    @app.get("/receipts/{receipt_id}")
    def receipt(receipt_id: str) -> dict[str, Any]:
        try:
            return service.receipt(receipt_id)
        except UnknownReceipt as exc:
            raise ApiError(404, str(exc), ["receipt_id"]) from None
        except ReceiptPending as exc:
            raise ApiError(409, str(exc), ["receipt_id"]) from None

    @app.get("/head", response_model=HeadResponse)
    def head() -> dict[str, Any]:
        return service.head()

    @app.get("/earnings", response_model=EarningsResponse)
    def earnings() -> dict[str, Any]:
        return service.earnings()

    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's OpenAPI document of ``app``, with ``POST /infer`` (:class:`InferRequest` in,
    :class:`InferResponse` out) added."""
    if app.openapi_schema is None:
        document = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        template = "#/components/schemas/{model}"
        for model in (InferRequest, InferResponse):
            schema = model.model_json_schema(ref_template=template)
            schemas |= schema.pop("$defs", {}) | {model.__name__: schema}
        content = {name: {"application/json": {"schema": {"$ref": template.format(model=name)}}}
                   for name in ("InferRequest", "InferResponse")}
        document["paths"]["/infer"] = {"post": {
            "summary": "Infer", "requestBody": {"required": True, "content": content["InferRequest"]},
            "responses": {"200": {"description": "each row's prediction and receipt, once committed",
                                  "content": content["InferResponse"]}}}}
        app.openapi_schema = document
    return app.openapi_schema


async def _limited_body(request: Request) -> bytes:
    """The request body, refused (413) past :data:`MAX_BODY_BYTES` by its declared length or
    as soon as reading it passes the limit."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY_BYTES):
        raise ApiError(413, f"body of {declared} bytes (Content-Length) is over the limit of {MAX_BODY_BYTES} bytes",
                       ["body"])
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise ApiError(413, f"body is over the limit of {MAX_BODY_BYTES} bytes", ["body"])
        chunks.append(chunk)
    return b"".join(chunks)


def _checked_rows(body: bytes, n_features: int) -> tuple[str, np.ndarray]:
    """The field (``"inputs"`` or ``"input"``) and the ``(n, n_features)`` float64 inputs of an
    :class:`InferRequest` body; :class:`ApiError` (400 or 422) naming the first bad field and row."""
    if not body:
        raise ApiError(400, "empty body; expected a JSON object with 'inputs' or 'input'", ["body"])
    try:
        field, rows = InferRequest.model_validate_json(body).rows()
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        loc = list(error["loc"])
        got = f", got {error['input']!r}" if error["type"] not in ("json_invalid", "missing") else ""
        raise ApiError(400 if error["type"] == "json_invalid" else 422, f"{_where(loc)}: {error['msg']}{got}", loc) from None
    if not 1 <= len(rows) <= MAX_ROWS:
        raise ApiError(422, f"{field}: {len(rows)} rows, expected 1 to {MAX_ROWS}", [field])
    if all(len(row) == n_features for row in rows):
        with suppress(RequestError):  # all rows at once; a bad one is found and named row by row below
            return field, check_batch(np.array(rows, dtype=np.float64), n_features)
    for index, row in enumerate(rows):
        try:
            check_input(row, n_features)
        except RequestError as exc:
            loc = [field] if field == "input" else [field, index]
            raise ApiError(422, f"{_where(loc)}: {exc}", loc) from None
    raise AssertionError("check_batch refused rows that check_input accepts")  # they judge values alike


def _where(loc: Sequence[str | int]) -> str:
    """A body location in words: ``["inputs", 2, 5]`` -> ``"inputs row 2 field 5"``, ``["input", 5]``
    -> ``"input field 5"``, ``[]`` -> ``"body"``."""
    if not loc:
        return "body"
    labels = ("row", "field") if loc[0] == "inputs" else ("field",)
    return " ".join([str(loc[0]), *(f"{label} {part}" for label, part in zip(labels, loc[1:]))])
