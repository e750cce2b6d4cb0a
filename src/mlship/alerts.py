"""Alerts: what happened to a model, said to a webhook, so that a person hears of it.

    {"text": "mlship: drift in iris v3: 4 of 4 features drifted ... | MLflow: <url> | Airflow: <url>",
     "kind": "drift", "model": "iris", "version": "3", "summary": "...",
     "links": {"mlflow": "<url>", "airflow": "<url>"}}

A generic JSON body whose `text` is what Slack's (and compatible chat) incoming webhooks show; the
other fields are for programs. The webhook's URL comes from $MLSHIP_ALERT_WEBHOOK_URL (the chart
fills it from a Secret: a chat webhook's URL is a credential); unset, nothing is sent. Links are
built from $MLSHIP_MLFLOW_UI_URL (else the tracking URI) and $MLSHIP_AIRFLOW_UI_URL (else none).

Sending never fails what it reports on: a webhook that is away or refuses is tried ATTEMPTS times,
each on a new connection (something else may answer on a dead address), then logged and given up.
Only a 2xx counts as received. Logs name the webhook's host only, never its path (the secret).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

import requests

from mlship import names

log = logging.getLogger(__name__)

WEBHOOK_ENV = names.ALERT_WEBHOOK_ENV
MLFLOW_UI_ENV = names.MLFLOW_UI_ENV
AIRFLOW_UI_ENV = names.AIRFLOW_UI_ENV
KINDS = ("drift", "gate_failed")
ATTEMPTS = 3
TIMEOUT_S = 5.0
BACKOFF_S = 1.0


@dataclass(frozen=True)
class Alert:
    kind: str
    model: str
    version: str
    summary: str
    links: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown alert kind {self.kind!r}; one of: {', '.join(KINDS)}")


def body(alert: Alert) -> dict[str, Any]:
    headline = {
        "drift": f"drift in {alert.model} v{alert.version}",
        "gate_failed": f"{alert.model} v{alert.version} failed the quality gate",
    }[alert.kind]
    links = " | ".join(f"{name.capitalize()}: {url}" for name, url in alert.links.items())
    return {
        "text": f"mlship: {headline}: {alert.summary}" + (f" | {links}" if links else ""),
        "kind": alert.kind,
        "model": alert.model,
        "version": alert.version,
        "summary": alert.summary,
        "links": dict(alert.links),
    }


def links(
    env: Mapping[str, str],
    tracking_uri: str | None,
    *,
    experiment_id: str | None = None,
    run_id: str | None = None,
    model: str | None = None,
    version: str | None = None,
    dag_id: str | None = None,
    dag_run_id: str | None = None,
) -> dict[str, str]:
    """Where a person looks next: the MLflow run and model version (when MLflow has a web UI),
    and the Airflow DAG run (when Airflow's UI URL is known)."""
    out: dict[str, str] = {}
    mlflow_ui = (env.get(MLFLOW_UI_ENV, "").strip() or tracking_uri or "").rstrip("/")
    if mlflow_ui.startswith(("http://", "https://")):
        if experiment_id and run_id:
            out["mlflow"] = f"{mlflow_ui}/#/experiments/{experiment_id}/runs/{run_id}"
        if model and version:
            out["version"] = f"{mlflow_ui}/#/models/{quote(model, safe='')}/versions/{version}"
    airflow_ui = env.get(AIRFLOW_UI_ENV, "").strip().rstrip("/")
    if airflow_ui and dag_id and dag_run_id:
        out["airflow"] = f"{airflow_ui}/dags/{dag_id}/runs/{quote(dag_run_id, safe='')}"
    return out


def where(url: str) -> str:
    """The webhook as logs may name it: scheme and host, not the path that holds its secret."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or '?'}"


def send(
    alert: Alert,
    env: Mapping[str, str] | None = None,
) -> bool:
    """Posts the alert to the webhook; True once it answered 2xx, False when there is none or it
    never did. Never raises."""
    url = (os.environ if env is None else env).get(WEBHOOK_ENV, "").strip()
    if not url:
        return False
    payload = body(alert)
    for attempt in range(1, ATTEMPTS + 1):
        try:
            with requests.Session() as session:  # a new connection per attempt, never a pooled one
                response = session.post(url, json=payload, timeout=TIMEOUT_S)
            if 200 <= response.status_code < 300:
                log.info("alert %s for %s v%s sent to %s", alert.kind, alert.model, alert.version,
                         where(url))  # fmt: skip
                return True
            problem = f"answered {response.status_code}"
        except requests.RequestException as e:
            problem = f"{type(e).__name__}"
        log.warning("alert %s: the webhook at %s %s (attempt %d of %d)", alert.kind, where(url),
                    problem, attempt, ATTEMPTS)  # fmt: skip
        if attempt < ATTEMPTS:
            time.sleep(BACKOFF_S * attempt)
    log.error("alert %s for %s v%s was not delivered to %s", alert.kind, alert.model,
              alert.version, where(url))  # fmt: skip
    return False
