"""Telling the stable pods what share of requests to send to the canary, and reading back what
they counted: one PUT /admin/routing per ready pod per tick (thin I/O).

Pushed on every tick, not once: a restarted pod starts with no route and gets it within a tick.
"""

from __future__ import annotations

import http.client
import json
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from mlship.traffic import ROUTING_PATH, Report, Route, parse_report

from . import resource as r

_TIMEOUT_S = 2.0
_LOG = logging.getLogger(__name__)


def ready_pod_ips(pods: Iterable[Mapping[str, Any]]) -> list[str]:
    ips = []
    for pod in pods:
        status = pod.get("status") or {}
        ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                    for c in status.get("conditions") or ())
        if ready and status.get("podIP") and not (pod.get("metadata") or {}).get("deletionTimestamp"):
            ips.append(status["podIP"])
    return ips


def _put(ip: str, body: bytes, token: str) -> Report:
    conn = http.client.HTTPConnection(ip, r.CONTAINER_PORT, timeout=_TIMEOUT_S)
    try:
        conn.request("PUT", ROUTING_PATH, body, {
            "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        response = conn.getresponse()
        text = response.read()
    finally:
        conn.close()
    if response.status != 200:
        raise ValueError(f"HTTP {response.status}: {text[:200].decode(errors='replace')}")
    return parse_report(json.loads(text))


def push(
    ips: Iterable[str],
    route: Route | None,
    token: str,
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger] = _LOG,
) -> Report | None:
    """Send `route` (None: stop routing) to each pod; the figures of those that count under the
    route's id, summed (None when none answered)."""
    body = json.dumps(route.to_json() if route else {"rollout": None}).encode()
    total: Report | None = None
    for ip in ips:
        try:
            report = _put(ip, body, token)
        except (OSError, ValueError) as err:  # a pod going away, or not (yet) the server we meant
            logger.warning("routing push to pod %s failed: %s", ip, err)
            continue
        if route is None or report.rollout != route.rollout:
            continue
        total = report if total is None else total.merge(report)
    return total

