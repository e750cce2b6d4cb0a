"""Names shared by the CRD, the operator and the children it creates."""

from __future__ import annotations

from mlship import names

GROUP = "mlship.io"
VERSION = "v1alpha1"
PLURAL = "modeldeployments"
KIND = "ModelDeployment"
API_VERSION = f"{GROUP}/{VERSION}"

FINALIZER = f"{GROUP}/finalizer"
FIELD_MANAGER = "mlship-operator"
DEFAULT_ALIAS = names.CHAMPION

# Labels on every child object (the app.kubernetes.io/* set is the recommended one).
LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_PART_OF = "app.kubernetes.io/part-of"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_MODEL_VERSION = f"{GROUP}/model-version"

APP_NAME = "mlship-serving"
MANAGED_BY = "mlship-operator"

# Annotations: model names may not fit label syntax, so they live here.
ANNOTATION_MODEL = f"{GROUP}/model"
ANNOTATION_CONFIG_HASH = f"{GROUP}/config-hash"
# A person's hand on a staged rollout, set on the ModelDeployment (`kubectl annotate`).
ANNOTATION_PAUSED = f"{GROUP}/paused"
ANNOTATION_PROMOTE = f"{GROUP}/promote"
ANNOTATION_ABORT = f"{GROUP}/abort"

CONTAINER_NAME = "server"
CONTAINER_PORT = 8080
SERVICE_PORT = 80
