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
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mlship.serving.batcher import BatcherClosed, MicroBatcher
from mlship.serving.config import ServingConfig
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

log = logging.getLogger(__name__)

EXIT_CONFIG = 2
EXIT_LOAD_FAILED = 3
EXIT_SELF_TEST_FAILED = 4
MAX_BODY_BYTES = 64 * 1024 * 1024
# The inference log's last flush at shutdown, after the requests in flight are answered; with
# the preStop sleep and MLSHIP_SHUTDOWN_TIMEOUT_S it stays within the pod's grace period.
FINAL_FLUSH_TIMEOUT_S = 5.0
JSON_TYPE = "application/json"

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
    ready: bool = False
    error: str | None = None


def _json(content: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(content), status_code=status, media_type=JSON_TYPE)


def _error(message: str, status: int, code: str) -> Response:
    return Response(encode_error(message, code), status_code=status, media_type=JSON_TYPE)


def _not_ready(state: ServingState) -> Response:
    message = state.error or f"model {state.config.model_uri} is loading"
    return _error(message, 503, "TEMPORARILY_UNAVAILABLE")


async def _read_body(request: Request) -> bytes:
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
    state.recorder = _recorder(state, model)
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


def _explain(e: BaseException) -> str:
    return getattr(e, "message", None) or f"{type(e).__name__}: {e}"


def create_app(config: ServingConfig, on_fatal: FatalHandler) -> Starlette:
    metrics = ServingMetrics(config.model_name, config.model_version)
    state = ServingState(config=config, metrics=metrics)
    mlflow_version = _mlflow_version()

    def timed(endpoint: str, handler: Callable[[Request], Any]) -> Callable[[Request], Any]:
        async def wrapped(request: Request) -> Response:
            started = time.perf_counter()
            response: Response = await handler(request)
            metrics.observe_request(endpoint, response.status_code, time.perf_counter() - started)
            return response

        return wrapped

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

    async def invocations(request: Request) -> Response:
        if not state.ready or state.batcher is None or state.model is None:
            return _not_ready(state)
        batcher = state.batcher
        try:
            with batcher.arriving():
                body = await _read_body(request)
                parsed = parse_invocation(
                    body, request.headers.get("content-type"), state.model.columns
                )
            answer = await _predict(state, parsed)
            if state.recorder is not None and isinstance(parsed, Table):
                state.recorder.record(parsed, answer)
            return Response(answer, media_type=JSON_TYPE)
        except (BadRequest, PredictionFailed) as e:
            status = e.status if isinstance(e, BadRequest) else 400
            code = "UNSUPPORTED_MEDIA_TYPE" if status == 415 else "BAD_REQUEST"
            return _error(_explain(e), status, code)
        except BatcherClosed as e:
            return _error(str(e), 503, "TEMPORARILY_UNAVAILABLE")
        except Exception as e:
            log.exception("scoring failed")
            return _error(f"internal error while scoring: {_explain(e)}", 500, "INTERNAL_ERROR")

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
            if state.batcher is not None:
                await state.batcher.close()
            if state.recorder is not None:
                await state.recorder.close(FINAL_FLUSH_TIMEOUT_S)

    routes = [
        # The body limit is _read_body's: Starlette's max_body_size answers 413 in plain text.
        Route("/invocations", timed("/invocations", invocations), methods=["POST"]),
        Route("/ping", timed("/ping", health), methods=["GET"]),
        Route("/health", timed("/health", health), methods=["GET"]),
        Route("/livez", livez, methods=["GET"]),
        Route("/version", timed("/version", version), methods=["GET"]),
        Route("/metadata", timed("/metadata", model_metadata), methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.serving = state
    return app
