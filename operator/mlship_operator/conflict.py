"""Whether another owner's object holds a child's name: then nothing is touched. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .rollout import Observed, controlled_by
from .spec import ServingSpec


def name_conflict(
    spec: ServingSpec, observed: Observed, service: Mapping[str, Any] | None
) -> str | None:
    """Why this ModelDeployment must leave its children alone, or None.

    `service` is the Service of that name when the tick read it, None when it is absent or
    was not read (it is read on a registry poll or when ours changed, not on every tick).
    """
    if observed.exists and not observed.owned:
        return _message("Deployment", spec.name)
    if service is not None and not controlled_by(service, spec.uid):
        return _message("Service", spec.name)
    return None


def _message(kind: str, name: str) -> str:
    return (
        f"a {kind} named {name} already exists and is not controlled by this"
        f" ModelDeployment; delete that {kind} or rename the ModelDeployment"
    )
