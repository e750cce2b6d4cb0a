"""Asking the MLflow model registry which version to serve."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

from mlship.errors import clip, describe

from .config import Config
from .spec import ServingSpec

RESOLVED = "Resolved"
MLFLOW_UNREACHABLE = "MlflowUnreachable"
MLFLOW_ACCESS_DENIED = "MlflowAccessDenied"
MODEL_NOT_FOUND = "ModelNotFound"
ALIAS_NOT_FOUND = "AliasNotFound"
VERSION_NOT_FOUND = "VersionNotFound"
VERSION_NOT_READY = "VersionNotReady"

_MAX_DETAIL = 300


@dataclasses.dataclass(frozen=True)
class Resolution:
    """The registry's answer: a version, or the reason there is none (CamelCase) and why."""

    version: str | None
    reason: str
    message: str

    @property
    def ok(self) -> bool:
        return self.version is not None


def classify_error(
    spec: ServingSpec,
    *,
    error_code: str | None,
    http_status: int | None,
    text: str,
    detail: str | None = None,
) -> Resolution:
    """Turn an MLflow client error into a Resolution that says exactly what is wrong.

    `text` is the error's whole message, matched on; `detail` what the message shows of it
    (default: `text`, clipped).
    """
    detail = clip(text if detail is None else detail, _MAX_DETAIL)
    where = f"MLflow at {spec.tracking_uri}"
    lowered = text.lower()
    if error_code == "RESOURCE_DOES_NOT_EXIST":
        if "model version" in lowered and spec.pinned_version:
            return Resolution(
                None, VERSION_NOT_FOUND,
                f"version {spec.pinned_version} of registered model '{spec.model}'"
                f" does not exist in {where}",
            )
        return Resolution(
            None, MODEL_NOT_FOUND, f"registered model '{spec.model}' does not exist in {where}"
        )
    if spec.alias and "alias" in lowered and "not found" in lowered:
        return Resolution(
            None, ALIAS_NOT_FOUND,
            f"registered model '{spec.model}' has no alias '{spec.alias}' in {where}",
        )
    if http_status in (401, 403) or error_code in ("PERMISSION_DENIED", "UNAUTHENTICATED"):
        return Resolution(None, MLFLOW_ACCESS_DENIED, f"{where} refused access: {detail}")
    return Resolution(None, MLFLOW_UNREACHABLE, f"cannot query {where}: {detail}")


def configure_client(config: Config) -> None:
    """Make MLflow's client fail fast: the operator retries with its own backoff."""
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(max(1, int(config.registry_timeout)))
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def drop_pooled_connections() -> None:
    """Make MLflow's next request open new connections instead of reusing pooled ones.

    MLflow caches one requests Session, with its keep-alive pool, per process. During an outage
    a proxy or catch-all responder on MLflow's address can answer on those connections and keep
    them open; without this they are reused after MLflow is back, and every query fails until
    the process restarts. Sessions in use by another thread finish their request undisturbed:
    the cache only forgets them.
    """
    from mlflow.utils import request_utils

    request_utils._cached_get_request_session.cache_clear()


def _client(uri: str) -> Any:
    from mlflow import MlflowClient  # heavy import, kept out of module import time

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def resolve(spec: ServingSpec, client_factory: Callable[[str], Any] = _client) -> Resolution:
    """Ask the registry for the version the CR wants: the alias's target or the pinned one."""
    from mlflow.exceptions import MlflowException

    client = client_factory(spec.tracking_uri)
    failed: Resolution | None
    try:
        if spec.pinned_version:
            mv = client.get_model_version(spec.model, spec.pinned_version)
        else:
            mv = client.get_model_version_by_alias(spec.model, spec.alias)
    except MlflowException as err:
        failed = classify_error(
            spec, error_code=err.error_code, http_status=err.get_http_status_code(),  # type: ignore[no-untyped-call]
            text=str(err), detail=describe(err, _MAX_DETAIL),
        )
    except Exception as err:  # noqa: BLE001 - any transport failure means "unreachable"
        failed = classify_error(
            spec, error_code=None, http_status=None, text=repr(err),
            detail=describe(err, _MAX_DETAIL),
        )
    else:
        failed = None
    if failed is not None:
        # Not an answer from MLflow's registry: whatever answered may be holding our connections.
        if failed.reason in (MLFLOW_UNREACHABLE, MLFLOW_ACCESS_DENIED):
            drop_pooled_connections()
        return failed
    version = str(mv.version)
    status = str(getattr(mv, "status", "READY") or "READY")
    if status != "READY":
        return Resolution(
            None, VERSION_NOT_READY,
            f"version {version} of '{spec.model}' is {status} in the registry, not READY",
        )
    via = f"alias '{spec.alias}'" if spec.alias else "pinned version"
    return Resolution(version, RESOLVED, f"{via} of '{spec.model}' is version {version}")
