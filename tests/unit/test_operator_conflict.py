"""Another owner's object under a child's name, on its own: conflict.name_conflict."""

from __future__ import annotations

import pytest
from _operator_fixtures import CONFIG, UID, make_cr
from mlship_operator.conflict import name_conflict
from mlship_operator.rollout import Observed
from mlship_operator.spec import serving_spec

pytestmark = pytest.mark.unit

SPEC = serving_spec(make_cr(), CONFIG)
OURS = Observed(exists=True, owned=True, version="1")


def service(*refs: dict) -> dict:
    return {"metadata": {"name": "iris", "ownerReferences": list(refs)}}


def test_no_conflict_when_nothing_else_holds_the_names() -> None:
    assert name_conflict(SPEC, Observed(), None) is None
    assert name_conflict(SPEC, OURS, None) is None
    assert name_conflict(SPEC, OURS, service({"uid": UID, "controller": True})) is None


def test_a_foreign_deployment() -> None:
    assert name_conflict(SPEC, Observed(exists=True, owned=False), None) == (
        "a Deployment named iris already exists and is not controlled by this ModelDeployment;"
        " delete that Deployment or rename the ModelDeployment")


@pytest.mark.parametrize("refs", [
    (),                                              # no owner at all
    ({"uid": "someone-else", "controller": True},),  # another controller
    ({"uid": UID},),                                 # ours, but not as controller
    ({"uid": UID, "controller": False}, {"uid": "x", "controller": True}),
])
def test_a_service_we_do_not_control(refs: tuple) -> None:
    assert name_conflict(SPEC, OURS, service(*refs)) == (
        "a Service named iris already exists and is not controlled by this ModelDeployment;"
        " delete that Service or rename the ModelDeployment")
    assert name_conflict(SPEC, Observed(), service(*refs)) is not None


def test_the_deployment_is_named_first() -> None:
    got = name_conflict(SPEC, Observed(exists=True, owned=False), service())
    assert got is not None and got.startswith("a Deployment")
