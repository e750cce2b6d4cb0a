"""The Open Inference Protocol (V2, KServe v2) REST API, next to MLflow's /invocations.

Pure functions turn an infer request into the same validated `Table` /invocations parses (so a
V2 request is scored exactly as an /invocations one: the micro-batcher, `predict_many`, the
compiled predictor, metrics, the inference log and prediction events), and the model's
predictions into a V2 response; `routes` adds the thin handlers to the app.

A request gives the signature's columns either as one 1-D tensor per column (named after it,
shape [n]) or as one 2-D tensor of shape [n, ncols] (any name, columns in signature order);
`data` is flat in row-major order or nested to exactly the tensor's shape. Only JSON tensor
data is accepted (not the binary-data or shared-memory extensions). Errors are `{"error": ...}`:
400 for input that cannot be scored, 404 for another model or version, 503 until ready.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mlship.serving.batcher import BatcherClosed
from mlship.serving.model import PredictionFailed
from mlship.serving.protocol import (
    BadRequest,
    Column,
    JsonLiteral,
    Table,
    coerce_value,
    encode_predictions,
    fill_missing,
    json_type,
    loads_with_literals,
    quoted,
    quoted_names,
    table_of,
)

if TYPE_CHECKING:
    from mlship.serving.app import ServingState

log = logging.getLogger(__name__)

SERVER_NAME = "mlship"
PLATFORM = "mlflow_pyfunc"
OUTPUT = "predict"  # the one output tensor: the model's predictions
JSON_TYPE = "application/json"
BINARY_HEADER = "inference-header-content-length"  # the binary tensor data extension

# The V2 datatype of each signature column kind (what model metadata advertises).
DATATYPE = {
    "double": "FP64",
    "float": "FP32",
    "long": "INT64",
    "integer": "INT32",
    "boolean": "BOOL",
    "string": "BYTES",
}
_INTS = ("INT8", "INT16", "INT32", "INT64")
_UINTS = ("UINT8", "UINT16", "UINT32", "UINT64")
_FLOATS = ("FP16", "FP32", "FP64")
DATATYPES = ("BOOL", *_UINTS, *_INTS, *_FLOATS, "BYTES")
# The request datatypes each column kind takes (integers widen to floats, as in /invocations).
_ACCEPTS = {
    "double": {*_FLOATS, *_INTS, *_UINTS},
    "float": {*_FLOATS, *_INTS, *_UINTS},
    "long": {*_INTS, *_UINTS},
    "integer": {*_INTS, *_UINTS},
    "boolean": {"BOOL"},
    "string": {"BYTES"},
}
_REQUEST_KEYS = ("id", "parameters", "inputs", "outputs")


@dataclass(frozen=True, slots=True)
class InferRequest:
    id: str | None
    table: Table


@dataclass(frozen=True, slots=True)
class _Tensor:
    name: str
    shape: tuple[int, ...]
    datatype: str
    data: list[Any]  # flat, row-major, each element checked against the datatype


# --- requests ----------------------------------------------------------------------------------


def parse_infer(
    body: bytes, columns: tuple[Column, ...] | None, *, binary: bool = False
) -> InferRequest:
    """Parse and validate one infer request body into the model's Table (BadRequest if not)."""
    if binary:
        raise BadRequest(
            "binary tensor data (Inference-Header-Content-Length) is not supported: "
            "send each tensor's 'data' as JSON (tritonclient: binary_data=False)"
        )
    if columns is None:
        raise BadRequest(
            "the model has no column signature, so V2 tensors cannot be matched to its inputs: "
            "use /invocations"
        )
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        doc = loads_with_literals(body, e, literals=True)
    if not isinstance(doc, dict):
        raise BadRequest(f"the infer request must be a JSON object, got {json_type(doc)}")
    unknown = [key for key in doc if key not in _REQUEST_KEYS]
    if unknown:
        raise BadRequest(
            f"unexpected key(s) in the infer request: {quoted(unknown)}; "
            f"it takes {quoted(_REQUEST_KEYS)}"
        )
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise BadRequest(f"'id' must be a string, got {json_type(request_id)}")
    if not isinstance(doc.get("parameters", {}), dict):
        raise BadRequest(f"'parameters' must be an object, got {json_type(doc['parameters'])}")
    _check_outputs(doc.get("outputs", []))
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise BadRequest("'inputs' must be a non-empty array of tensors")
    tensors = [_tensor(i, raw) for i, raw in enumerate(inputs)]
    seen: set[str] = set()
    for t in tensors:
        if t.name in seen:
            raise BadRequest(f"input {t.name!r} is given twice")
        seen.add(t.name)
    if len(tensors) == 1 and len(tensors[0].shape) == 2:
        return InferRequest(request_id, _from_matrix(tensors[0], columns))
    return InferRequest(request_id, _from_columns(tensors, columns))


def _check_outputs(outputs: Any) -> None:
    if not isinstance(outputs, list):
        raise BadRequest(f"'outputs' must be an array, got {json_type(outputs)}")
    for i, out in enumerate(outputs):
        name = out.get("name") if isinstance(out, dict) else None
        if not isinstance(name, str):
            raise BadRequest(f"requested output {i} must be an object with a 'name'")
        if name != OUTPUT:
            raise BadRequest(f"unknown output {name!r}: the model's one output is {OUTPUT!r}")


def _tensor(i: int, raw: Any) -> _Tensor:
    if not isinstance(raw, dict):
        raise BadRequest(
            f"input {i} must be an object with name, shape, datatype and data, "
            f"got {json_type(raw)}"
        )
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise BadRequest(f"input {i} needs a 'name', a non-empty string")
    parameters = raw.get("parameters") or {}
    if isinstance(parameters, dict) and (
        "binary_data_size" in parameters or "shared_memory_region" in parameters
    ):
        raise BadRequest(
            f"input {name!r}: binary and shared-memory tensor data are not supported: "
            "send 'data' as JSON"
        )
    shape = raw.get("shape")
    if (
        not isinstance(shape, list)
        or not shape
        or not all(type(d) is int and d >= 0 for d in shape)
    ):
        raise BadRequest(
            f"input {name!r}: 'shape' must be a non-empty list of non-negative integers, "
            f"got {_show(shape)}"
        )
    datatype = raw.get("datatype")
    if datatype not in DATATYPES:
        raise BadRequest(
            f"input {name!r}: unknown datatype {_show(datatype)}; "
            f"the V2 datatypes are {', '.join(DATATYPES)}"
        )
    if "data" not in raw:
        raise BadRequest(f"input {name!r} has no 'data'")
    data = _flatten(name, raw["data"], shape)
    for k, value in enumerate(data):
        _check_element(name, datatype, k, value)
    return _Tensor(name, tuple(shape), datatype, data)


def _flatten(name: str, data: Any, shape: list[int]) -> list[Any]:
    """The tensor's elements in row-major order: `data` flat, or nested to exactly `shape`."""
    if not isinstance(data, list):
        raise BadRequest(f"input {name!r}: 'data' must be an array, got {json_type(data)}")
    if not any(isinstance(v, list) for v in data):
        size = math.prod(shape)
        if len(data) != size:
            raise BadRequest(
                f"input {name!r}: shape {shape} holds {size} value(s), 'data' has {len(data)}"
            )
        return data
    flat: list[Any] = []

    def walk(part: Any, depth: int) -> bool:
        if not isinstance(part, list) or len(part) != shape[depth]:
            return False
        if depth == len(shape) - 1:
            flat.extend(part)
            return not any(isinstance(v, list) for v in part)
        return all(walk(sub, depth + 1) for sub in part)

    if not walk(data, 0):
        raise BadRequest(
            f"input {name!r}: the nested 'data' does not match shape {shape}; "
            "send it flat (row-major) or nested to exactly that shape"
        )
    return flat


def _check_element(name: str, datatype: str, k: int, value: Any) -> None:
    vtype = type(value)
    if datatype in _FLOATS:
        ok, what = vtype in (int, float, JsonLiteral), "numbers"
    elif datatype in _INTS:
        ok, what = vtype is int, "integers"
    elif datatype in _UINTS:
        ok, what = vtype is int and value >= 0, "non-negative integers"
    elif datatype == "BOOL":
        ok, what = vtype is bool, "booleans (true or false)"
    else:  # BYTES
        ok, what = vtype is str, "strings"
    if not ok:
        plain = value is None or vtype is JsonLiteral  # null, NaN, Infinity: say just that
        got = _show(value) if plain else f"{json_type(value)} {_show(value)}"
        raise BadRequest(f"input {name!r}: {datatype} data must hold {what}; element {k} is {got}")


def _check_fits(t: _Tensor, col: Column, hint: str = "") -> None:
    if t.datatype not in _ACCEPTS[col.kind]:
        raise BadRequest(
            f"input {t.name!r}: datatype {t.datatype} does not fit column {col.name!r} "
            f"({col.kind}); send {DATATYPE[col.kind]}{hint}"
        )


def _from_columns(tensors: list[_Tensor], columns: tuple[Column, ...]) -> Table:
    """One 1-D tensor per signature column, named after it."""
    by_name = {t.name: t for t in tensors}
    known = {c.name for c in columns}
    unknown = [t.name for t in tensors if t.name not in known]
    if unknown:
        raise BadRequest(
            f"unknown input tensor(s) {quoted(unknown)}: the model's inputs are "
            f"{quoted_names(columns)}, one 1-D tensor each, or one 2-D tensor [n, {len(columns)}]"
        )
    missing = [c.name for c in columns if c.required and c.name not in by_name]
    if missing:
        raise BadRequest(f"missing input tensor(s) {quoted(missing)}")
    first = tensors[0]
    for t in tensors:
        if len(t.shape) != 1:
            raise BadRequest(
                f"input {t.name!r}: shape {list(t.shape)} is not 1-D: send one tensor [n] per "
                f"column, or one 2-D tensor [n, {len(columns)}] with the columns in signature order"
            )
        if t.shape[0] != first.shape[0]:
            raise BadRequest(
                f"input tensors have different lengths: {t.name!r} has {t.shape[0]} value(s), "
                f"{first.name!r} has {first.shape[0]}"
            )
    n_rows = first.shape[0]
    out = []
    for col in columns:
        given = by_name.get(col.name)
        if given is None:
            out.append(fill_missing(col, n_rows))
            continue
        _check_fits(given, col)
        out.append([coerce_value(col, value, r) for r, value in enumerate(given.data)])
    return table_of(out, n_rows)


def _from_matrix(t: _Tensor, columns: tuple[Column, ...]) -> Table:
    """One 2-D tensor [n, ncols]: row-major, the columns in signature order."""
    n_rows, width = t.shape
    if width != len(columns):
        raise BadRequest(
            f"input {t.name!r}: shape {list(t.shape)} has {width} column(s), the model takes "
            f"{len(columns)}: {quoted_names(columns)}"
        )
    mixed = len({DATATYPE[c.kind] for c in columns}) > 1
    hint = " (one 1-D tensor per column lets each column have its own datatype)" if mixed else ""
    out = []
    for j, col in enumerate(columns):
        _check_fits(t, col, hint)
        out.append([coerce_value(col, value, r) for r, value in enumerate(t.data[j::width])])
    return table_of(out, n_rows)


# --- responses ---------------------------------------------------------------------------------


def infer_response(
    predictions: Any, model_name: str, model_version: str, request_id: str
) -> dict[str, Any]:
    """The V2 response for one request's predictions (ValueError if they make no tensor)."""
    array = _as_array(predictions)
    response: dict[str, Any] = {"model_name": model_name}
    if model_version:
        response["model_version"] = model_version
    response["id"] = request_id
    response["outputs"] = [
        {
            "name": OUTPUT,
            "datatype": _datatype_of(array),
            "shape": list(array.shape),
            "data": array.ravel().tolist(),
        }
    ]
    return response


def _as_array(predictions: Any) -> Any:
    import numpy as np

    if isinstance(predictions, dict):
        raise ValueError(
            f"the model returned {len(predictions)} named outputs; V2 serving writes one"
        )
    array = predictions.to_numpy() if hasattr(predictions, "to_numpy") else np.asarray(predictions)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim not in (1, 2):
        raise ValueError(f"the model's predictions have {array.ndim} dimensions, not 1 or 2")
    if array.dtype.kind == "S":
        array = np.char.decode(array, "utf-8").astype(object)
    return array


def _datatype_of(array: Any) -> str:
    kind, bits = array.dtype.kind, array.dtype.itemsize * 8
    if kind == "b":
        return "BOOL"
    if kind in "iuf":
        return f"{'INT' if kind == 'i' else 'UINT' if kind == 'u' else 'FP'}{bits}"
    values = array.ravel().tolist()
    types = {type(v) for v in values}
    if kind == "U" or types <= {str}:
        return "BYTES"
    if types <= {bool}:
        return "BOOL"
    if types <= {int}:
        return "INT64"
    if types <= {int, float}:
        return "FP64"
    shown = ", ".join(sorted(t.__name__ for t in types))
    raise ValueError(f"the model's predictions ({shown}) cannot be written as a V2 tensor")


def model_metadata(
    name: str, version: str, columns: tuple[Column, ...] | None, outputs: Any
) -> dict[str, Any]:
    """Model metadata: the signature's columns as [-1] tensors, the output when it is known."""
    output = _output_metadata(outputs)
    return {
        "name": name,
        "versions": [version] if version else [],
        "platform": PLATFORM,
        "inputs": [
            {"name": c.name, "datatype": DATATYPE[c.kind], "shape": [-1]} for c in columns or ()
        ],
        "outputs": [] if output is None else [output],
    }


_NUMPY_DATATYPE = {
    "bool": "BOOL", "int8": "INT8", "int16": "INT16", "int32": "INT32", "int64": "INT64",
    "uint8": "UINT8", "uint16": "UINT16", "uint32": "UINT32", "uint64": "UINT64",
    "float16": "FP16", "float32": "FP32", "float64": "FP64", "str": "BYTES",
}  # fmt: skip


def _output_metadata(outputs: Any) -> dict[str, Any] | None:
    """The output tensor from the MLflow output signature (`Schema.to_dict()`), if it says one
    column or one tensor of a V2 datatype; else None (the datatype is known only per answer)."""
    if not isinstance(outputs, list) or len(outputs) != 1 or not isinstance(outputs[0], dict):
        return None
    spec = outputs[0]
    datatype = DATATYPE.get(str(spec.get("type")))
    shape: Any = [-1]
    if spec.get("type") == "tensor":
        tensor = spec.get("tensor-spec") or {}
        datatype = _NUMPY_DATATYPE.get(str(tensor.get("dtype")))
        shape = tensor.get("shape") or [-1]
    return None if datatype is None else {"name": OUTPUT, "datatype": datatype, "shape": shape}


def server_metadata() -> dict[str, Any]:
    version = "unknown"
    with contextlib.suppress(importlib_metadata.PackageNotFoundError):
        version = importlib_metadata.version(SERVER_NAME)
    return {"name": SERVER_NAME, "version": version, "extensions": []}


def encode_error(message: str) -> bytes:
    return orjson.dumps({"error": message})


def _show(value: Any) -> str:
    if isinstance(value, JsonLiteral):
        return value.text
    return orjson.dumps(value).decode()[:40]


# --- routes ------------------------------------------------------------------------------------

Handler = Callable[[Request], Any]


def routes(
    state: ServingState,
    timed: Callable[[str, Handler], Handler],
    protected: Callable[[str, Handler], Handler] | None = None,
) -> list[Route]:
    """The V2 endpoints over the app's state (`timed` counts them in the request metrics;
    `protected`, `timed` by default, also guards the infer routes with the bearer token)."""
    from mlship.serving import app  # here: app imports this module to build its routes

    config = state.config
    server = orjson.dumps(server_metadata())

    def json(content: Any, status: int = 200) -> Response:
        return Response(orjson.dumps(content), status_code=status, media_type=JSON_TYPE)

    def error(message: str, status: int) -> Response:
        return Response(encode_error(message), status_code=status, media_type=JSON_TYPE)

    def not_ready() -> Response:
        return error(state.error or f"model {config.model_uri} is loading", 503)

    def served_version() -> str:
        return state.model.info.version if state.model is not None else config.model_version

    def wrong_model(request: Request) -> Response | None:
        """404 unless the path names the served model (and version, if it names one)."""
        name, version = request.path_params["name"], request.path_params.get("version")
        if name != config.model_name:
            return error(f"unknown model {name!r}: this server serves {config.model_name!r}", 404)
        served = served_version()
        if version is not None and version != served:
            has = f"version {served!r}" if served else "no registry version"
            return error(f"unknown version {version!r} of model {name!r}: it serves {has}", 404)
        return None

    def event_id(header: str | None, given: str | None) -> str:
        """The request's event key (what /feedback names): its X-Request-Id header (a bad one is
        a 400, as on /invocations), else its `id` when that can key an event, else a new one."""
        if header is not None:
            return app.request_id(header)
        if given is not None:
            with contextlib.suppress(BadRequest):
                return app.request_id(given)
        return app.request_id(None)

    async def live(request: Request) -> Response:
        return json({"live": True})

    async def ready(request: Request) -> Response:
        return json({"ready": True}) if state.ready else not_ready()

    async def metadata(request: Request) -> Response:
        return Response(server, media_type=JSON_TYPE)

    async def model(request: Request) -> Response:
        refused = wrong_model(request)
        if refused is not None:
            return refused
        if state.model is None:
            return not_ready()
        info = state.model.info
        outputs = (info.signature or {}).get("outputs")
        return json(model_metadata(info.name, info.version, state.model.columns, outputs))

    async def model_ready(request: Request) -> Response:
        refused = wrong_model(request)
        if refused is not None:
            return refused
        return json({"name": config.model_name, "ready": True}) if state.ready else not_ready()

    async def infer(request: Request) -> Response:
        refused = wrong_model(request)
        if refused is not None:
            return refused
        if not state.ready or state.batcher is None or state.model is None:
            return not_ready()
        rid = app.request_id(None)
        try:
            with state.batcher.arriving():
                body = await app.read_body(request)
                parsed = parse_infer(
                    body, state.model.columns, binary=BINARY_HEADER in request.headers
                )
            rid = event_id(request.headers.get(app.REQUEST_ID), parsed.id)
            predictions = await state.batcher.submit(parsed.table)
            if state.events is not None or state.recorder is not None:
                app.record(state, rid, parsed.table, encode_predictions(predictions))
            info = state.model.info
            id_ = rid if parsed.id is None else parsed.id
            response = json(infer_response(predictions, info.name, info.version, id_))
        except (BadRequest, PredictionFailed) as e:
            status = e.status if isinstance(e, BadRequest) else 400
            response = error(getattr(e, "message", None) or str(e), status)
        except BatcherClosed as e:
            response = error(str(e), 503)
        except Exception as e:
            log.exception("V2 scoring failed")
            response = error(f"internal error while scoring: {type(e).__name__}: {e}", 500)
        response.raw_headers.append((b"x-request-id", rid.encode()))
        return response

    guard = protected or timed
    model_path = "/v2/models/{name}"
    version_path = "/v2/models/{name}/versions/{version}"
    get, post = ["GET"], ["POST"]
    return [
        Route("/v2/health/live", live, methods=get),
        Route("/v2/health/ready", timed("/v2/health/ready", ready), methods=get),
        Route("/v2", timed("/v2", metadata), methods=get),
        Route(model_path, timed(model_path, model), methods=get),
        Route(version_path, timed(model_path, model), methods=get),
        Route(f"{model_path}/ready", timed(f"{model_path}/ready", model_ready), methods=get),
        Route(f"{version_path}/ready", timed(f"{model_path}/ready", model_ready), methods=get),
        Route(f"{model_path}/infer", guard(f"{model_path}/infer", infer), methods=post),
        Route(f"{version_path}/infer", guard(f"{model_path}/infer", infer), methods=post),
    ]
