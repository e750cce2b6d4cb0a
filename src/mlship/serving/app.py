"""The HTTP application: MLflow's scoring endpoints plus readiness, liveness, metadata, metrics.

The model loads in the background after the server starts listening, so `/livez` answers at
once; `/ping` and `/health` turn 200 only after the model is loaded and has scored its own
input example through the same path as a client request. A load or self-test failure calls
`on_fatal(exit_code, message)`, which makes the process exit (see the package docstring).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from typing import Any
from urllib.parse import quote

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mlship import traffic
from mlship.events import schema
from mlship.names import TAG_TASK
from mlship.names import ServingEnv as E
from mlship.serving import v2
from mlship.serving.auth import require_token
from mlship.serving.batcher import BatcherClosed, MicroBatcher
from mlship.serving.config import ServingConfig
from mlship.serving.events import EventProducer, QueueFull, producer_config
from mlship.serving.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from mlship.serving.metrics import ServingMetrics
from mlship.serving.model import (
    ModelLoadError,
    PredictionFailed,
    ServedModel,
    load_model,
    self_test_input,
)
from mlship.serving.protocol import (
    BadRequest,
    Parsed,
    Table,
    encode_error,
    encode_predictions,
    parse_invocation,
)
from mlship.serving.recorder import InferenceRecorder, MlflowSink
from mlship.serving.routing import CandidateAnswer, Forward, Router

log = logging.getLogger(__name__)

EXIT_CONFIG = 2
EXIT_LOAD_FAILED = 3
EXIT_SELF_TEST_FAILED = 4
MAX_BODY_BYTES = 64 * 1024 * 1024
# The inference log's (or the events') last flush at shutdown, after the requests in flight are
# answered; with the preStop sleep and MLSHIP_SHUTDOWN_TIMEOUT_S it stays within the pod's grace
# period.
FINAL_FLUSH_TIMEOUT_S = 5.0
JSON_TYPE = "application/json"
MAX_FEEDBACK_LABELS = 10_000  # per /feedback request
REQUEST_ID = "X-Request-Id"
ROUTING_MISSING_MESSAGE = (
    f"{traffic.ROUTING_PATH} needs the header Authorization: Bearer <token>, the token in "
    f"{E.ROUTING_TOKEN} (the operator's routing token)"
)

FatalHandler = Callable[[int, str], None]


def _mlflow_version() -> str:
    for dist in ("mlflow", "mlflow-skinny"):
        with contextlib.suppress(importlib_metadata.PackageNotFoundError):
            return importlib_metadata.version(dist)
    return "unknown"


@dataclass(slots=True)
class ServingState:
    config: ServingConfig
    metrics: ServingMetrics
    model: ServedModel | None = None
    batcher: MicroBatcher[Parsed] | None = None
    recorder: InferenceRecorder | None = None
    events: EventProducer | None = None
    router: Router | None = None  # only with a routing token (mlship.serving.routing)
    ready: bool = False
    error: str | None = None
    # X-Model-Name and X-Model-Version, encoded once: added to every /invocations response.
    model_headers: list[tuple[bytes, bytes]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Scored:
    """This server's answer to an /invocations request, and the table to record when it is the
    one the client gets."""

    status: int
    body: bytes
    table: Table | None = None

    def response(self) -> Response:
        return Response(self.body, status_code=self.status, media_type=JSON_TYPE)


class CandidateResponse(Response):
    """A canary candidate's answer, passed on with its own X-Model-Name and X-Model-Version."""


def _header_value(value: str) -> bytes:
    """A header value: as is when printable ASCII (registry names are), else percent-encoded."""
    return (value if value.isascii() and value.isprintable() else quote(value)).encode()


def model_headers(name: str, version: str) -> list[tuple[bytes, bytes]]:
    headers = [(b"x-model-name", _header_value(name))]
    if version:  # unknown until loaded when the URI names an alias
        headers.append((b"x-model-version", _header_value(version)))
    return headers


def request_id(given: str | None) -> str:
    """The client's X-Request-Id (BadRequest naming the problem when it cannot be an event key),
    else a new one: 32 random hex characters."""
    if given is None:
        return os.urandom(16).hex()
    try:
        return schema.check_request_id(given)
    except schema.BadEvent as e:
        raise BadRequest(f"the {REQUEST_ID} header: {e}") from None


def _json(content: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(content), status_code=status, media_type=JSON_TYPE)


def _error(message: str, status: int, code: str) -> Response:
    return Response(encode_error(message, code), status_code=status, media_type=JSON_TYPE)


def _failed(e: Exception) -> Scored:
    """A scoring request's failure, in MLflow's error shape."""
    if isinstance(e, BadRequest | PredictionFailed):
        status = e.status if isinstance(e, BadRequest) else 400
        code = "UNSUPPORTED_MEDIA_TYPE" if status == 415 else "BAD_REQUEST"
        return Scored(status, encode_error(_explain(e), code))
    if isinstance(e, BatcherClosed):
        return Scored(503, encode_error(str(e), "TEMPORARILY_UNAVAILABLE"))
    log.error("scoring failed", exc_info=e)
    return Scored(500, encode_error(f"internal error while scoring: {_explain(e)}", "INTERNAL_ERROR"))


def _not_ready(state: ServingState) -> Response:
    message = state.error or f"model {state.config.model_uri} is loading"
    return _error(message, 503, "TEMPORARILY_UNAVAILABLE")


async def read_body(request: Request) -> bytes:
    """The request body, refused with 413 (as BadRequest, so in the JSON error shape) when it is
    over MAX_BODY_BYTES: by its Content-Length before reading, else while reading."""
    declared = request.headers.get("content-length", "")
    too_large = f"the body is over the limit of {MAX_BODY_BYTES} bytes"
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise BadRequest(f"{too_large} (Content-Length: {declared})", 413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise BadRequest(too_large, 413)
        chunks.append(chunk)
    return b"".join(chunks)


async def _predict(state: ServingState, parsed: Parsed) -> bytes:
    assert state.batcher is not None  # noqa: S101
    return encode_predictions(await state.batcher.submit(parsed))


def record(state: ServingState, rid: str, table: Table, answer: bytes) -> None:
    """A scored table (and its answer, as /invocations encodes it) to the prediction events,
    else to the inference log, when either is on: /invocations and the V2 API alike."""
    if state.events is not None:
        state.events.predictions(rid, table, answer)
    elif state.recorder is not None:
        state.recorder.record(table, answer)


async def load_and_self_test(state: ServingState, on_fatal: FatalHandler) -> None:
    config = state.config
    log.info("loading %s", config.model_uri)
    started = time.monotonic()
    try:
        model = await asyncio.to_thread(load_model, config)
    except ModelLoadError as e:
        state.error = str(e)
        on_fatal(EXIT_LOAD_FAILED, str(e))
        return
    # The model is long-lived: keep the collector from re-scanning its objects on every pass.
    gc.collect()
    gc.freeze()
    state.model = model
    state.metrics.set_predictor(model.info.predictor, model.info.predictor_reason_code)
    state.batcher = MicroBatcher(
        model.predict_many,
        max_batch_size=config.max_batch_size,
        max_wait_s=config.max_batch_wait_s,
        size_of=lambda p: p.n_rows if isinstance(p, Table) else 1,
        on_batch=state.metrics.observe_batch,
    )
    state.batcher.start()
    try:
        body, content_type = self_test_input(model)
        parsed = parse_invocation(body, content_type, model.columns)
        answer = await _predict(state, parsed)
    except Exception as e:
        message = f"self-test of {config.model_uri} on its input example failed: {_explain(e)}"
        state.error = message
        on_fatal(EXIT_SELF_TEST_FAILED, message)
        return
    if config.kafka_bootstrap_servers is not None:
        state.events = _events(state, model, config.kafka_bootstrap_servers)
    else:
        state.recorder = _recorder(state, model)
    state.model_headers = model_headers(model.info.name, model.info.version)
    state.ready = True
    state.metrics.set_ready(True)
    log.info(
        "serving %s (version %s, run %s): ready in %.1fs; self-test answered %s",
        model.info.name,
        model.info.version,
        model.info.run_id,
        time.monotonic() - started,
        answer[:200].decode(errors="replace"),
    )


def _recorder(state: ServingState, model: ServedModel) -> InferenceRecorder | None:
    config, metrics = state.config, state.metrics
    if config.inference_log_sample_rate <= 0 or config.tracking_uri is None:
        return None
    if model.columns is None:
        log.warning(
            "inference log: %s has no column signature, so its requests are not logged",
            config.model_uri,
        )
        return None
    sink = MlflowSink(
        config.tracking_uri, config.inference_log_experiment, model.info.name, model.info.version
    )
    recorder = InferenceRecorder(
        sink,
        [c.name for c in model.columns],
        metrics,
        sample_rate=config.inference_log_sample_rate,
        flush_s=config.inference_log_flush_s,
    )
    recorder.start()
    log.info(
        "inference log: recording %g%% of requests to experiment %r every %gs",
        config.inference_log_sample_rate * 100,
        config.inference_log_experiment,
        config.inference_log_flush_s,
    )
    return recorder


def _events(state: ServingState, model: ServedModel, bootstrap: str) -> EventProducer:
    config = state.config
    if model.columns is None:
        log.warning(
            "events: %s has no column signature, so its requests make no prediction events "
            "(labels are taken)",
            config.model_uri,
        )
    events = EventProducer(
        producer_config(bootstrap, queue_max_messages=config.kafka_queue_max_messages),
        state.metrics,
        model=model.info.name,
        version=model.info.version or "unknown",  # a local path: no registry version
        columns=[c.name for c in model.columns] if model.columns is not None else None,
        predictions_topic=config.predictions_topic,
        labels_topic=config.labels_topic,
        sample_rate=config.inference_log_sample_rate,
        linger_s=config.kafka_linger_ms / 1000,
    )
    events.start()
    log.info(
        "events: %g%% of requests to topic %r, labels to %r, on Kafka at %s; labels are %s "
        "(task from %s)",
        config.inference_log_sample_rate * 100, config.predictions_topic, config.labels_topic,
        bootstrap, model.info.task or "refused: the task is unknown", model.info.task_source or "-",
    )  # fmt: skip
    return events


def _explain(e: BaseException) -> str:
    return getattr(e, "message", None) or f"{type(e).__name__}: {e}"


def create_app(config: ServingConfig, on_fatal: FatalHandler) -> Starlette:
    metrics = ServingMetrics(config.model_name, config.model_version)
    state = ServingState(config=config, metrics=metrics)
    if config.routing_token is not None:
        state.router = Router()
    mlflow_version = _mlflow_version()

    def timed(endpoint: str, handler: Callable[[Request], Any]) -> Callable[[Request], Any]:
        async def wrapped(request: Request) -> Response:
            started = time.perf_counter()
            response: Response = await handler(request)
            metrics.observe_request(endpoint, response.status_code, time.perf_counter() - started)
            return response

        return wrapped

    def protected(endpoint: str, handler: Callable[[Request], Any]) -> Callable[[Request], Any]:
        """`timed`, behind the bearer token when one is configured (its 401s are counted too)."""
        return timed(endpoint, require_token(config.auth_token, handler))

    async def health(request: Request) -> Response:
        if state.ready:
            return Response(b"\n", media_type=JSON_TYPE)
        return _not_ready(state)

    async def livez(request: Request) -> Response:
        return Response(b"ok\n", media_type="text/plain")

    async def version(request: Request) -> Response:
        return Response(mlflow_version, media_type=JSON_TYPE)  # MLflow answers the bare string

    async def model_metadata(request: Request) -> Response:
        if state.model is None:
            return _not_ready(state)
        return _json({**state.model.info.as_dict(), "ready": state.ready})

    async def metrics_endpoint(request: Request) -> Response:
        return Response(metrics.render(), media_type=METRICS_CONTENT_TYPE)

    fallback_headers = model_headers(config.model_name, config.model_version)

    async def invocations(request: Request) -> Response:
        forwarded = traffic.FORWARDED_HEADER in request.headers  # by a stable pod, to this one
        started = time.perf_counter() if forwarded else 0.0
        try:
            rid = request_id(request.headers.get(REQUEST_ID))
        except BadRequest as e:
            rid = request_id(None)
            response = _error(e.message, 400, "BAD_REQUEST")
        else:
            response = await _invocations(request, rid)
        # Every answer says which request it was and which version gave it, errors too.
        response.raw_headers.append((b"x-request-id", rid.encode()))
        if not isinstance(response, CandidateResponse):  # that one names its own version
            response.raw_headers += state.model_headers or fallback_headers
        if forwarded:
            handling = f"{(time.perf_counter() - started) * 1000:.3f}".encode()
            response.raw_headers.append((traffic.HANDLING_HEADER.encode(), handling))
        return response

    async def _invocations(request: Request, rid: str) -> Response:
        if not state.ready or state.batcher is None or state.model is None:
            return _not_ready(state)
        router = state.router  # None unless this request is routed: one check when not routing
        if router is not None and (
            router.route is None or traffic.FORWARDED_HEADER in request.headers
        ):
            router = None  # no route; or the request came from a stable pod: never again
        started = time.perf_counter() if router is not None else 0.0
        try:
            with state.batcher.arriving():
                body = await read_body(request)
                parsed = parse_invocation(
                    body, request.headers.get("content-type"), state.model.columns
                )
        except Exception as e:
            scored = _failed(e)
            if router is not None:
                router.observe_stable(time.perf_counter() - started, scored.status)
            return scored.response()
        if router is None:
            scored = await _score(parsed)
        else:
            forward = Forward(
                body, request.headers.get("content-type"), request.headers.get("authorization"), rid
            )
            result = await router.handle(_score(parsed), forward, started)
            if isinstance(result, CandidateAnswer):  # its own pod records it, not this one
                response = CandidateResponse(result.body, status_code=result.status)
                response.raw_headers += result.headers
                return response
            scored = result
        if scored.table is not None:
            record(state, rid, scored.table, scored.body)
        return scored.response()

    async def _score(parsed: Parsed) -> Scored:
        try:
            answer = await _predict(state, parsed)
        except Exception as e:
            return _failed(e)
        return Scored(200, answer, parsed if isinstance(parsed, Table) else None)

    async def routing_admin(request: Request) -> Response:
        router = state.router
        assert router is not None  # noqa: S101 - the route exists only with a router
        if request.method == "PUT":
            try:
                route = traffic.parse_push(orjson.loads(await read_body(request)))
            except BadRequest as e:
                return _error(e.message, e.status, "BAD_REQUEST")
            except orjson.JSONDecodeError as e:
                return _error(f"the body is not JSON: {e}", 400, "BAD_REQUEST")
            except ValueError as e:
                return _error(str(e), 400, "BAD_REQUEST")
            router.apply(route)
        return _json(router.report().to_json())

    async def feedback(request: Request) -> Response:
        if config.kafka_bootstrap_servers is None:
            return _error(
                "feedback is off on this server: labels go to Kafka, and "
                "MLSHIP_KAFKA_BOOTSTRAP_SERVERS is not set (docs/events.md)",
                404, "ENDPOINT_NOT_FOUND",
            )  # fmt: skip
        if not state.ready or state.model is None or state.events is None:
            return _not_ready(state)
        info = state.model.info
        if info.task is None:
            return _error(
                f"feedback is off for {info.uri}: its task is unknown (no {TAG_TASK} tag on the "
                "version and no output signature saying classes or numbers), so no label can be "
                "checked; tag the version with classification or regression",
                404, "ENDPOINT_NOT_FOUND",
            )  # fmt: skip
        try:
            body = await read_body(request)
            labels = schema.feedback(body, info.name, info.task, time.time())
        except BadRequest as e:
            return _error(e.message, e.status, "BAD_REQUEST")
        except schema.BadEvent as e:
            return _error(str(e), 400, "BAD_REQUEST")
        if len(labels) > MAX_FEEDBACK_LABELS:
            return _error(
                f"{len(labels)} labels in one request; send at most {MAX_FEEDBACK_LABELS}",
                413, "BAD_REQUEST",
            )  # fmt: skip
        try:
            state.events.labels(labels)
        except QueueFull as e:
            return _error(str(e), 503, "TEMPORARILY_UNAVAILABLE")
        return _json({"accepted": len(labels)}, 202)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        loader = asyncio.create_task(load_and_self_test(state, on_fatal), name="load-model")
        try:
            yield
        finally:
            state.ready = False
            metrics.set_ready(False)
            if not loader.done():
                loader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await loader
            if state.router is not None:
                await state.router.close()
            if state.batcher is not None:
                await state.batcher.close()
            if state.recorder is not None:
                await state.recorder.close(FINAL_FLUSH_TIMEOUT_S)
            if state.events is not None:
                await state.events.close(FINAL_FLUSH_TIMEOUT_S)

    routes = [
        # The body limit is read_body's: Starlette's max_body_size answers 413 in plain text.
        Route("/invocations", protected("/invocations", invocations), methods=["POST"]),
        Route("/feedback", protected("/feedback", feedback), methods=["POST"]),
        Route("/ping", timed("/ping", health), methods=["GET"]),
        Route("/health", timed("/health", health), methods=["GET"]),
        Route("/livez", livez, methods=["GET"]),
        Route("/version", timed("/version", version), methods=["GET"]),
        Route("/metadata", timed("/metadata", model_metadata), methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        *v2.routes(state, timed, protected),  # the Open Inference Protocol (docs/serving-v2.md)
    ]
    if config.routing_token is not None:  # canary and shadow routing (mlship.serving.routing)
        admin = require_token(config.routing_token, routing_admin, ROUTING_MISSING_MESSAGE)
        path = traffic.ROUTING_PATH
        routes.append(Route(path, timed(path, admin), methods=["GET", "PUT"]))
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.serving = state
    return app
