"""kopf entry module: start-up settings and the per-ModelDeployment timer. Handlers only delegate.

Run with `python -m mlship_operator` (validates the environment first), or with
`kopf run --standalone -m mlship_operator.main (--all-namespaces | -n NS ...)`.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

import kopf

from . import kube, reconcile, registry
from .config import ConfigError, from_env
from .resource import FIELD_MANAGER, FINALIZER, GROUP, PLURAL, VERSION

# How often each ModelDeployment is looked at. Registry polls happen on their own,
# slower schedule (spec.pollIntervalSeconds, backoff on errors); a tick only reads the
# Deployment, so rollouts are followed within this delay and spec edits applied.
TICK_SECONDS = 2.0
_EVENT_MESSAGE_MAX = 1000


class _QuietTicks(logging.Filter):
    """kopf logs each successful handler run at INFO: one line per CR every tick is noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Timer 'reconcile_tick' succeeded")


logging.getLogger("kopf.objects").addFilter(_QuietTicks())


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: Any, **_: Any) -> None:
    try:
        config = memo.get("config") or from_env(os.environ)
    except ConfigError as err:
        raise kopf.PermanentError(f"invalid configuration: {err}") from err
    memo["config"] = config

    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP)
    # One replica (Deployment strategy Recreate): no peering objects, no RBAC for them.
    settings.peering.standalone = True
    # No cluster-wide watch of CRDs and namespaces: least privilege; namespaces are exact names.
    settings.scanning.disabled = True
    # Only warnings become Events; the operator posts its own meaningful Events.
    settings.posting.level = logging.WARNING
    settings.posting.reporting_component = FIELD_MANAGER
    settings.posting.reporting_instance = socket.gethostname()
    settings.watching.server_timeout = config.watch_server_timeout
    settings.watching.client_timeout = config.watch_server_timeout + 30
    settings.watching.connect_timeout = 10
    settings.networking.connect_timeout = 10
    settings.networking.request_timeout = 60

    registry.configure_client(config)
    kube.load_credentials()
    memo["kube"] = kube.Kube()
    scope = ", ".join(config.namespaces) if config.namespaces else "all namespaces"
    logger.info("mlship operator configured: watching %s, MLflow %s, default image %s",
                scope, config.tracking_uri, config.serving_image)


@kopf.timer(GROUP, VERSION, PLURAL, interval=TICK_SECONDS, backoff=5)
def reconcile_tick(
    body: kopf.Body, memo: kopf.Memo, patch: kopf.Patch, logger: Any, **_: Any
) -> None:
    memory = memo.setdefault("tick", reconcile.TickMemory())  # kopf keeps a memo per object
    result = reconcile.tick(body, memory, memo["config"], memo["kube"], logger=logger)
    for key, value in result.status_patch.items():
        patch.status[key] = value
    for event in result.events:
        kopf.event(body, type=event.type, reason=event.reason,
                   message=event.message[:_EVENT_MESSAGE_MAX])
