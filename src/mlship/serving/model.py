"""The served model: download, load, self-test payload, and batch prediction.

Loading goes through `mlflow.pyfunc.load_model`, so every serialization the sklearn flavour
writes (skops with its recorded `skops_trusted_types`, pickle, cloudpickle) loads as MLflow
itself loads it, and prediction keeps MLflow's schema enforcement and the model's `predict_fn`.

When the version's parity tag says its compiled form (mlship.ml.compiled, stored at
registration) gave scikit-learn's answers on the holdout, parsed tables are scored with that
instead: the same answers without scikit-learn's per-call cost. Otherwise, or when it cannot be
loaded, scikit-learn scores them, and /metadata and the mlship_model_predictor metric say why.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

from mlship.errors import describe
from mlship.events import schema
from mlship.mlflow_io import compiled
from mlship.mlflow_io.compiled import SKLEARN
from mlship.names import TAG_TASK
from mlship.serving.config import ServingConfig
from mlship.serving.protocol import (
    CSV,
    JSON,
    BadRequest,
    Column,
    Parsed,
    Table,
    Unstructured,
    columns_from_signature,
    split_rows,
)

log = logging.getLogger(__name__)

_DTYPES = {
    "double": "float64",
    "float": "float32",
    "long": "int64",
    "integer": "int32",
    "boolean": "bool",
    "string": "object",
}


class ModelLoadError(RuntimeError):
    """The model version cannot be downloaded or deserialized."""


class PredictionFailed(Exception):
    """The model raised on one request's (signature-valid) input: answered with 400, as MLflow
    does, since the same model just passed its self-test."""


@dataclass(frozen=True, slots=True)
class ModelInfo:
    name: str
    version: str
    uri: str
    run_id: str | None
    model_uuid: str | None
    signature: dict[str, Any] | None
    mlflow_version: str | None
    task: str | None = None  # classification / regression: what a /feedback label must be
    task_source: str = ""  # where the task was read (see model_task)
    predictor: str = SKLEARN  # what scores parsed tables: COMPILED or SKLEARN
    predictor_reason: str = ""  # why (the parity record, or why not)
    predictor_reason_code: str = ""  # the same as a metric label (see compiled_predictor)
    loaded_at: float = field(default_factory=time.time)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "uri": self.uri,
            "run_id": self.run_id,
            "model_uuid": self.model_uuid,
            "signature": self.signature,
            "mlflow_version": self.mlflow_version,
            "task": self.task,
            "task_source": self.task_source,
            "predictor": self.predictor,
            "predictor_reason": self.predictor_reason,
            "predictor_reason_code": self.predictor_reason_code,
            "loaded_at": self.loaded_at,
        }


@dataclass(slots=True)
class ServedModel:
    pyfunc: Any  # mlflow.pyfunc.PyFuncModel
    info: ModelInfo
    columns: tuple[Column, ...] | None
    example: bytes | None  # a JSON /invocations body from the model's own input example
    fast: Any = None  # mlship.ml.compiled.CompiledPredictor when info.predictor is COMPILED

    def predict_many(self, inputs: Sequence[Parsed]) -> list[Any]:
        """One result per input (an exception instance for a failed one). All tables go to the
        model in a single call; if that call fails, each is retried alone so one bad request
        cannot fail its batch neighbours."""
        results: list[Any] = [None] * len(inputs)
        tables: dict[int, Table] = {}
        for i, item in enumerate(inputs):
            if isinstance(item, Table):
                tables[i] = item
            else:
                results[i] = self._predict_unstructured(item)
        if len(tables) > 1:
            batch = list(tables.values())
            try:
                parts = split_rows(self._predict_tables(batch), [t.n_rows for t in batch])
            except Exception:
                log.debug("batch of %d failed; retrying each alone", len(batch), exc_info=True)
            else:
                for i, part in zip(tables, parts, strict=True):
                    results[i] = part
                return results
        for i, table in tables.items():
            results[i] = self._predict_one_table(table)
        return results

    def _predict_one_table(self, table: Table) -> Any:
        try:
            predictions = self._predict_tables([table])
        except Exception as e:
            return PredictionFailed(_describe(e))
        try:
            return split_rows(predictions, [table.n_rows])[0]
        except ValueError as e:
            return RuntimeError(str(e))  # the model's fault, not the input's: a 500

    def _predict_tables(self, tables: Sequence[Table]) -> Any:
        import numpy as np
        import pandas as pd

        assert self.columns is not None  # noqa: S101 - tables exist only for column signatures
        data = {}
        for i, col in enumerate(self.columns):
            values = list(chain.from_iterable(t.columns[i] for t in tables))
            try:
                data[col.name] = np.asarray(values, dtype=_DTYPES[col.kind])
            except (TypeError, ValueError, OverflowError):
                data[col.name] = np.asarray(values, dtype=object)  # nulls in optional int columns
        if self.fast is not None:
            return self.fast.predict(data)
        return self.pyfunc.predict(pd.DataFrame(data))

    def _predict_unstructured(self, item: Unstructured) -> Any:
        from io import StringIO

        from mlflow.exceptions import MlflowException
        from mlflow.pyfunc.scoring_server import infer_and_parse_data, parse_csv_input

        schema = self.pyfunc.metadata.get_input_schema()
        try:
            if item.content_type == CSV:
                assert isinstance(item.payload, str)  # noqa: S101
                data = parse_csv_input(StringIO(item.payload), schema)
            else:
                data = infer_and_parse_data(item.payload, schema)
        except MlflowException as e:
            return BadRequest(e.message)
        try:
            return self.pyfunc.predict(data)
        except Exception as e:
            return PredictionFailed(_describe(e))


def _describe(e: BaseException) -> str:
    message = getattr(e, "message", None) or str(e)
    return f"the model could not score this input: {type(e).__name__}: {message}"


def _resolve_version(config: ServingConfig) -> tuple[str, str]:
    """The concrete models:/name/version to load (an alias URI is resolved once, here)."""
    uri, version = config.model_uri, config.model_version
    if uri.startswith("models:/") and "@" in uri:
        from mlflow import MlflowClient

        alias = uri.rstrip("/").split("@", 1)[1]
        mv = MlflowClient(config.tracking_uri).get_model_version_by_alias(config.model_name, alias)
        version = str(mv.version)
        uri = f"models:/{config.model_name}/{version}"
    return uri, version


def load_model(config: ServingConfig) -> ServedModel:
    """Download and deserialize the configured model version; raise ModelLoadError saying why."""
    import mlflow
    import mlflow.artifacts
    import mlflow.pyfunc

    try:
        uri, version = _resolve_version(config)
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=uri,
            dst_path=tempfile.mkdtemp(prefix="mlship-model-"),
            tracking_uri=config.tracking_uri,
        )
        pyfunc = mlflow.pyfunc.load_model(local)
    except Exception as e:
        hint = ""
        if type(e).__name__ == "UntrustedTypesFoundException" or "untrusted" in str(e).lower():
            hint = (
                " (the skops file references types outside the model's skops_trusted_types: "
                "re-log the model with skops_trusted_types listing them)"
            )
        raise ModelLoadError(f"cannot load {config.model_uri}: {describe(e, 3000)}{hint}") from e

    meta = pyfunc.metadata
    signature = _signature_dict(meta.signature)
    columns = None
    if meta.signature is not None and meta.signature.inputs is not None:
        columns = columns_from_signature(meta.signature.inputs.to_dict())
    example = _example_body(meta, local)
    tags = _version_tags(config, uri)
    task, task_source = model_task(
        None if tags is None else tags.get(TAG_TASK), signature["outputs"] if signature else None
    )
    column_names = None if columns is None else [c.name for c in columns]
    choice = compiled.choose(tags, column_names, config.tracking_uri)
    info = ModelInfo(
        name=config.model_name,
        version=version,
        uri=uri,
        run_id=meta.run_id,
        model_uuid=meta.model_uuid,
        signature=signature,
        mlflow_version=meta.mlflow_version,
        task=task,
        task_source=task_source,
        predictor=choice.kind,
        predictor_reason=choice.reason,
        predictor_reason_code=choice.code,
    )
    log.info("predictions by %s: %s", info.predictor, choice.reason)
    return ServedModel(pyfunc=pyfunc, info=info, columns=columns, example=example, fast=choice.predictor)


_CLASS_TYPES = {"long", "integer", "string", "boolean", "int8", "int16", "int32", "int64",
                "uint8", "uint16", "uint32", "uint64", "bool", "str", "object"}
_NUMBER_TYPES = {"double", "float", "float16", "float32", "float64"}


def model_task(tag: str | None, outputs: Any) -> tuple[str | None, str]:
    """The model's task (what /feedback labels must be) and where it was read.

    The version's `mlship.task` tag first: the pipeline's register step writes the task it
    trained for, which is the truth (a classifier of classes 0.0 and 1.0 has a double output).
    Without it (a model registered by hand), the output signature's type: integer, string or
    boolean outputs are classes, floating-point ones are numbers (a regression). Else None."""
    if tag in (schema.CLASSIFICATION, schema.REGRESSION):
        return tag, f"the version's {TAG_TASK} tag"
    types: set[str] = set()
    for spec in outputs or []:
        if not isinstance(spec, dict):
            return None, ""
        kind = spec.get("type")
        if kind == "tensor":
            kind = (spec.get("tensor-spec") or {}).get("dtype")
        types.add(str(kind))
    if types and types <= _CLASS_TYPES:
        return schema.CLASSIFICATION, f"the output signature ({', '.join(sorted(types))})"
    if types and types <= _NUMBER_TYPES:
        return schema.REGRESSION, f"the output signature ({', '.join(sorted(types))})"
    return None, ""


def _version_tags(config: ServingConfig, uri: str) -> dict[str, str] | None:
    """The registered version's tags; None for a model not loaded from the registry or when the
    registry cannot say (a warning: /feedback then goes by the signature, scikit-learn scores)."""
    parts = uri.removeprefix("models:/").split("/")
    if not uri.startswith("models:/") or len(parts) != 2 or config.tracking_uri is None:
        return None
    try:
        from mlflow import MlflowClient

        version = MlflowClient(config.tracking_uri).get_model_version(parts[0], parts[1])
    except Exception as e:
        log.warning("could not read %s's tags (%s); the task comes from its signature", uri, e)
        return None
    return {k: v for k, v in (version.tags or {}).items() if isinstance(v, str)}


def _signature_dict(signature: Any) -> dict[str, Any] | None:
    """The signature as plain JSON (MLflow's to_dict nests JSON strings)."""
    if signature is None:
        return None
    parts = {"inputs": signature.inputs, "outputs": signature.outputs, "params": signature.params}
    return {key: part.to_dict() if part is not None else None for key, part in parts.items()}


def _example_body(meta: Any, local_path: str) -> bytes | None:
    """The model's own serving input example (MLflow writes it next to the input example)."""
    try:
        serving_input = meta.get_serving_input(local_path)
    except Exception:  # an unreadable example is reported by the self-test instead
        log.warning("could not read the model's serving input example", exc_info=True)
        return None
    return serving_input.encode() if serving_input else None


def synthetic_body(columns: tuple[Column, ...]) -> bytes:
    """A one-row JSON request from the column signature, for models saved without an example."""
    import orjson

    zero = {"double": 0.0, "float": 0.0, "long": 0, "integer": 0, "boolean": False, "string": ""}
    return orjson.dumps({"dataframe_records": [{c.name: zero[c.kind] for c in columns}]})


def self_test_input(model: ServedModel) -> tuple[bytes, str]:
    """The request the server must answer before it reports ready, and its content type."""
    if model.example is not None:
        return model.example, JSON
    if model.columns is not None:
        return synthetic_body(model.columns), JSON
    raise ModelLoadError(
        "the model has neither an input example nor a column signature to self-test with; "
        "log it with input_example=..."
    )
