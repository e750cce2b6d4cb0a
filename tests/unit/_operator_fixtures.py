"""Plain-data helpers shared by the operator unit tests (no kopf, no cluster)."""

from __future__ import annotations

import copy
from typing import Any

from mlship_operator import builders
from mlship_operator.config import Config, from_env
from mlship_operator.spec import serving_spec

# The other registries the operator unit tests and manifests/examples name in spec.trackingUri.
OTHER_TRACKING_URIS = ("http://other:5000", "http://other-mlflow:5000", "https://mlflow.other",
                       "https://mlflow.x", "https://mlflow.example", "http://MLFLOWX",
                       "http://mlship-mlflow.mlship.svc.cluster.local:5000")
CONFIG = from_env({"MLFLOW_TRACKING_URI": "http://mlflow.mlship:5000",
                   "MLSHIP_ALLOWED_TRACKING_URIS": ",".join(OTHER_TRACKING_URIS),
                   "MLSHIP_ROUTING_KEY": "routing-key-of-the-unit-tests"})
UID = "0b5e3c1a-1111-2222-3333-444455556666"


def make_cr(spec: dict[str, Any] | None = None, *, generation: int = 1, **meta: Any) -> dict:
    return {
        "apiVersion": "mlship.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {
            "name": "iris", "namespace": "models", "uid": UID, "generation": generation, **meta
        },
        "spec": copy.deepcopy(spec) if spec is not None else {"model": "iris"},
    }


def build_deployment(cr: dict, config: Config, version: str) -> dict[str, Any]:
    """The Deployment a tick applies for `version` of the CR's model."""
    return builders.deployment_template(serving_spec(cr, config), config).for_version(version)


def deployment_config_hash(cr: dict, config: Config) -> str:
    return builders.deployment_template(serving_spec(cr, config), config).config_hash


def build_service(cr: dict, config: Config) -> dict[str, Any]:
    return builders.build_service(serving_spec(cr, config), config)
