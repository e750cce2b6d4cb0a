"""Model-registry look-ups shared by evaluate and register."""

from __future__ import annotations

from mlflow.entities.model_registry import ModelVersion, RegisteredModel
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mlship.ml.gate import CHAMPION
from mlship.mlflow_io.tracking import TAG_RUN_KEY, check_run_key


def _missing(exc: MlflowException) -> bool:
    return exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "INVALID_PARAMETER_VALUE")


def version_by_alias(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if _missing(exc):
            return None
        raise


def champion(client: MlflowClient, name: str) -> ModelVersion | None:
    return version_by_alias(client, name, CHAMPION)


def versions_for_run_key(client: MlflowClient, name: str, key: str) -> list[ModelVersion]:
    """Versions of `name` already registered by the pipeline run `key` (a re-run finds them)."""
    if registered_model(client, name) is None:
        return []
    return list(
        client.search_model_versions(
            f"name = '{name}' and tags.`{TAG_RUN_KEY}` = '{check_run_key(key)}'"
        )
    )


def registered_model(client: MlflowClient, name: str) -> RegisteredModel | None:
    try:
        return client.get_registered_model(name)
    except MlflowException as exc:
        if _missing(exc):
            return None
        raise
