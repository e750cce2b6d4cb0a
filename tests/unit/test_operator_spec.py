"""A ModelDeployment read into a ServingSpec: every field, its default, and what overrides it."""

from __future__ import annotations

import pytest
from _operator_fixtures import CONFIG, UID, make_cr
from mlship_operator.config import from_env
from mlship_operator.spec import (
    CANARY,
    DEFAULT_CANARY_STEPS,
    DEFAULT_RESOURCES,
    DEFAULT_SHADOW_STEP,
    REPLACE,
    SHADOW,
    Analysis,
    Autoscaling,
    InvalidSpec,
    Rollout,
    ServingSpec,
    Steering,
    Step,
    serving_spec,
)

from mlship.traffic import CANARY as CANARY_MODE
from mlship.traffic import SHADOW as SHADOW_MODE

pytestmark = pytest.mark.unit


def test_a_minimal_cr_takes_every_default() -> None:
    cr = make_cr()
    del cr["metadata"]["generation"]  # not yet set: counts as the first
    assert serving_spec(cr, CONFIG) == ServingSpec(
        name="iris", namespace="models", uid=UID, generation=1, model="iris", alias="champion",
        pinned_version=None, tracking_uri="http://mlflow.mlship:5000",
        serving_tracking_uri="http://mlflow.mlship:5000", replicas=1, autoscaling=None,
        resources=DEFAULT_RESOURCES,
        image="mlship-serving:dev", poll_interval=5.0, progress_deadline=180,
        inference_log_sample_rate=1.0, inference_log_flush_seconds=10,
    )


def test_every_field_the_cr_sets_wins() -> None:
    resources = {"requests": {"cpu": "2"}}
    cr = make_cr({
        "model": "wine", "version": 7, "alias": "ignored-when-pinned", "trackingUri": "http://other:5000//",
        "replicas": 0, "resources": resources, "image": "reg/serving:2", "pollIntervalSeconds": 2,
        "progressDeadlineSeconds": 60, "inferenceLog": {"sampleRate": 0, "flushSeconds": 3},
    }, generation=4)
    spec = serving_spec(cr, CONFIG)
    assert spec == ServingSpec(
        name="iris", namespace="models", uid=UID, generation=4, model="wine", alias=None,
        pinned_version="7", tracking_uri="http://other:5000", serving_tracking_uri="http://other:5000",
        replicas=0, autoscaling=None, resources=resources, image="reg/serving:2", poll_interval=2.0,
        progress_deadline=60,
        inference_log_sample_rate=0.0,  # 0 is "log nothing", not "use the default"
        inference_log_flush_seconds=3,
    )
    assert spec.registry_key == ("http://other:5000", "wine", None, "7")


@pytest.mark.parametrize("version", [None, ""])
def test_no_version_follows_the_alias(version) -> None:
    spec = serving_spec(make_cr({"model": "iris", "version": version, "alias": "staging"}), CONFIG)
    assert (spec.alias, spec.pinned_version) == ("staging", None)
    assert spec.registry_key == ("http://mlflow.mlship:5000", "iris", "staging", None)


def test_the_operators_serving_uri_is_the_default_for_pods_only() -> None:
    config = from_env({"MLFLOW_TRACKING_URI": "http://localhost:5000",
                       "MLSHIP_SERVING_TRACKING_URI": "http://mlflow.mlship:5000"})
    spec = serving_spec(make_cr(), config)
    assert (spec.tracking_uri, spec.serving_tracking_uri) == ("http://localhost:5000", "http://mlflow.mlship:5000")


def test_a_tracking_uri_ending_in_a_capital_keeps_it() -> None:
    spec = serving_spec(make_cr({"model": "iris", "trackingUri": "http://MLFLOWX/"}), CONFIG)
    assert spec.tracking_uri == "http://MLFLOWX"


def test_a_tracking_uri_not_allowed_is_refused_naming_the_allowed_ones() -> None:
    config = from_env({"MLFLOW_TRACKING_URI": "http://localhost:5000",
                       "MLSHIP_SERVING_TRACKING_URI": "https://u:secret@mlflow.mlship",
                       "MLSHIP_ALLOWED_TRACKING_URIS": "http://team-a:5000"})
    with pytest.raises(InvalidSpec) as info:
        serving_spec(make_cr({"model": "iris", "trackingUri": "http://u:p@evil:5000/"}), config)
    assert str(info.value) == (
        "spec.trackingUri 'http://evil:5000' is not one this operator may use (allowed:"
        " http://localhost:5000, http://team-a:5000, https://mlflow.mlship); an operator admin"
        " can add it to operator.allowedTrackingUris (MLSHIP_ALLOWED_TRACKING_URIS)"
    )  # no credentials: the message goes into the CR's status


@pytest.mark.parametrize("uri", [
    "http://localhost:5000/", "https://mlflow.mlship", "http://team-a:5000",
    "http://someone:else@team-a:5000",  # credentials do not change where it goes
])
def test_the_operators_own_and_the_listed_uris_are_allowed(uri: str) -> None:
    config = from_env({"MLFLOW_TRACKING_URI": "http://localhost:5000",
                       "MLSHIP_SERVING_TRACKING_URI": "https://u:secret@mlflow.mlship",
                       "MLSHIP_ALLOWED_TRACKING_URIS": "http://team-a:5000/"})
    spec = serving_spec(make_cr({"model": "iris", "trackingUri": uri}), config)
    assert spec.tracking_uri == spec.serving_tracking_uri == uri.rstrip("/")


def test_only_its_own_uris_by_default() -> None:
    config = from_env({"MLFLOW_TRACKING_URI": "http://mlflow.mlship:5000"})
    assert serving_spec(make_cr(), config).tracking_uri == "http://mlflow.mlship:5000"
    with pytest.raises(InvalidSpec, match="allowed: http://mlflow.mlship:5000\\)"):
        serving_spec(make_cr({"model": "iris", "trackingUri": "http://mlflow.mlship:5001"}), config)


def test_autoscaling_takes_its_defaults_and_keeps_the_replicas_inside_them() -> None:
    spec = serving_spec(make_cr({"model": "iris", "autoscaling": {"maxReplicas": 4}}), CONFIG)
    assert spec.autoscaling == Autoscaling(min_replicas=1, max_replicas=4, cpu_utilization=80)
    assert spec.replicas == 1
    assert serving_spec(make_cr({"model": "iris"}), CONFIG).autoscaling is None


def test_every_autoscaling_field_the_cr_sets_wins() -> None:
    spec = serving_spec(make_cr({"model": "iris", "replicas": 3, "autoscaling": {
        "minReplicas": 2, "maxReplicas": 5, "targetCPUUtilizationPercentage": 60}}), CONFIG)
    assert spec.autoscaling == Autoscaling(min_replicas=2, max_replicas=5, cpu_utilization=60)
    assert spec.replicas == 3  # within the bounds: as the autoscaler (or kubectl scale) set it


@pytest.mark.parametrize(("replicas", "clamped"), [(1, 2), (2, 2), (5, 5), (9, 5)])
def test_replicas_are_clamped_into_the_autoscaling_bounds(replicas: int, clamped: int) -> None:
    spec = serving_spec(make_cr({"model": "iris", "replicas": replicas,
                                 "autoscaling": {"minReplicas": 2, "maxReplicas": 5}}), CONFIG)
    assert spec.replicas == clamped


def test_replicas_outside_bounds_are_kept_without_autoscaling() -> None:
    assert serving_spec(make_cr({"model": "iris", "replicas": 9}), CONFIG).replicas == 9


def test_autoscaling_with_max_below_min_is_refused() -> None:
    cr = make_cr({"model": "iris", "autoscaling": {"minReplicas": 3, "maxReplicas": 2}})
    with pytest.raises(InvalidSpec) as info:
        serving_spec(cr, CONFIG)
    assert str(info.value) == "spec.autoscaling.maxReplicas (2) is below minReplicas (3)"


def test_max_equal_to_min_is_a_fixed_size() -> None:
    cr = make_cr({"model": "iris", "replicas": 1,
                  "autoscaling": {"minReplicas": 3, "maxReplicas": 3}})
    spec = serving_spec(cr, CONFIG)
    assert (spec.replicas, spec.autoscaling) == (3, Autoscaling(3, 3, 80))


@pytest.mark.parametrize(("window", "expected"), [(None, None), (0, 0), (60, 60)])
def test_the_scale_down_window_is_kept_as_given_and_zero_is_not_unset(window, expected) -> None:
    autoscaling = {"maxReplicas": 3}
    if window is not None:
        autoscaling["scaleDownStabilizationSeconds"] = window
    spec = serving_spec(make_cr({"model": "iris", "autoscaling": autoscaling}), CONFIG)
    assert spec.autoscaling is not None and spec.autoscaling.scale_down_window == expected


@pytest.mark.parametrize(
    ("auth", "expected"),
    [
        (None, None),
        ({"tokenSecretRef": {"name": "iris-token"}}, ("iris-token", "token")),
        ({"tokenSecretRef": {"name": "iris-token", "key": "bearer"}}, ("iris-token", "bearer")),
    ],
)
def test_auth_names_the_tokens_secret_and_key(auth, expected) -> None:
    spec = {"model": "iris"} if auth is None else {"model": "iris", "auth": auth}
    assert serving_spec(make_cr(spec), CONFIG).auth_token_secret == expected


def test_auth_without_a_secret_name_is_refused() -> None:
    cr = make_cr({"model": "iris", "auth": {"tokenSecretRef": {"key": "token"}}})
    with pytest.raises(InvalidSpec, match="spec.auth.tokenSecretRef.name is required"):
        serving_spec(cr, CONFIG)


def _rollout(rollout: dict | None) -> Rollout:
    spec = {"model": "iris"} if rollout is None else {"model": "iris", "rollout": rollout}
    return serving_spec(make_cr(spec), CONFIG).rollout


@pytest.mark.parametrize("rollout", [None, {}, {"strategy": "Replace"}, {"strategy": None}])
def test_no_rollout_or_replace_is_todays_behaviour(rollout) -> None:
    assert _rollout(rollout) == Rollout(strategy=REPLACE, steps=(), analysis=Analysis())
    assert Analysis() == Analysis(
        max_error_rate=0.01, max_latency_ratio=1.5, latency_slack_ms=10.0, min_agreement=0.95)


@pytest.mark.parametrize("steps", [None, []])
def test_canary_without_steps_takes_the_default_steps(steps) -> None:
    rollout = {"strategy": "Canary"} if steps is None else {"strategy": "Canary", "steps": steps}
    assert _rollout(rollout) == Rollout(strategy=CANARY, steps=DEFAULT_CANARY_STEPS)
    assert DEFAULT_CANARY_STEPS == (Step(10, 60, 100), Step(50, 60, 100))


def test_shadow_is_one_step_that_copies_every_request_by_default() -> None:
    assert _rollout({"strategy": "Shadow"}) == Rollout(strategy=SHADOW, steps=(DEFAULT_SHADOW_STEP,))
    assert DEFAULT_SHADOW_STEP == Step(100, 60, 100, SHADOW_MODE)
    assert _rollout({"strategy": "Shadow", "shadow": {"weight": 20, "minRequests": 0}}).steps == (
        Step(20, 60, 0, SHADOW_MODE),)


def test_a_canary_with_a_shadow_runs_the_shadow_step_first() -> None:
    rollout = _rollout({"strategy": "Canary", "shadow": {"durationSeconds": 30},
                        "steps": [{"weight": 20}]})
    assert rollout.steps == (Step(100, 30, 100, SHADOW_MODE), Step(20, 60, 100, CANARY_MODE))
    assert rollout.staged and not Rollout().staged
    default = _rollout({"strategy": "Canary", "shadow": {}})
    assert default.steps == (DEFAULT_SHADOW_STEP, *DEFAULT_CANARY_STEPS)


def test_annotations_steer_a_rollout() -> None:
    def steering(annotations: dict) -> Steering:
        return serving_spec(make_cr(annotations=annotations), CONFIG).steering

    assert steering({}) == Steering(paused=False, promote=None, abort=None)
    assert steering({"mlship.io/paused": "True", "mlship.io/promote": "7",
                     "mlship.io/abort": "8"}) == Steering(paused=True, promote="7", abort="8")
    assert steering({"mlship.io/paused": "false", "mlship.io/promote": ""}) == Steering()
    with pytest.raises(InvalidSpec) as info:
        steering({"mlship.io/paused": "yes"})
    assert str(info.value) == (
        'annotation mlship.io/paused must be "true" or "false", not \'yes\':'
        " `kubectl annotate mldep <name> mlship.io/paused-` removes it")


def test_every_rollout_field_the_cr_sets_wins() -> None:
    rollout = _rollout({
        "strategy": "Canary",
        "steps": [{"weight": 5, "durationSeconds": 30, "minRequests": 0},  # 0: judge at once
                  {"weight": 25},
                  {"weight": 100, "durationSeconds": 600, "minRequests": 5000}],
        "analysis": {"maxErrorRate": 0, "maxLatencyRatio": 2, "latencySlackMs": 0,
                     "minAgreement": 1},
    })
    assert rollout == Rollout(
        strategy=CANARY,
        steps=(Step(weight=5, seconds=30, min_requests=0), Step(25, 60, 100), Step(100, 600, 5000)),
        analysis=Analysis(max_error_rate=0.0, max_latency_ratio=2.0, latency_slack_ms=0.0,
                          min_agreement=1.0),  # zeros are thresholds, not "unset"
    )


def test_analysis_fields_left_out_take_their_defaults() -> None:
    rollout = _rollout({"strategy": "Canary", "analysis": {"minAgreement": 0.8}})
    assert rollout.analysis == Analysis(min_agreement=0.8)


@pytest.mark.parametrize(
    ("rollout", "message"),
    [
        ({"strategy": "Blue"},
         "spec.rollout.strategy 'Blue' is not one this operator knows (Replace, Shadow, Canary)"),
        ({"strategy": "Shadow", "steps": [{"weight": 10}]},
         "spec.rollout.steps are only for strategy Canary (this one is Shadow):"
         " set spec.rollout.strategy to Canary or remove the steps"),
        ({"shadow": {}},
         "spec.rollout.shadow is only for strategy Shadow or Canary (this one is Replace):"
         " set spec.rollout.strategy or remove the shadow"),
        ({"strategy": "Shadow", "shadow": {"weight": 0}},
         "spec.rollout.shadow.weight must be a whole percent from 1 to 100, not 0"),
        ({"steps": [{"weight": 10}]},
         "spec.rollout.steps are only for strategy Canary (this one is Replace):"
         " set spec.rollout.strategy to Canary or remove the steps"),
        ({"strategy": "Replace", "steps": [{"weight": 10}]},
         "spec.rollout.steps are only for strategy Canary (this one is Replace):"
         " set spec.rollout.strategy to Canary or remove the steps"),
        ({"strategy": "Canary", "steps": [{"weight": 10}, {"weight": 50}, {"weight": 50}]},
         "spec.rollout.steps[2].weight (50) must be above steps[1].weight (50):"
         " the weights must increase"),
        ({"strategy": "Canary", "steps": [{"weight": 50}, {"weight": 10}]},
         "spec.rollout.steps[1].weight (10) must be above steps[0].weight (50):"
         " the weights must increase"),
        ({"strategy": "Canary", "steps": [{"durationSeconds": 60}]},
         "spec.rollout.steps[0].weight must be a whole percent from 1 to 100, not None"),
        ({"strategy": "Canary", "steps": [{"weight": 10}, {"weight": 101}]},
         "spec.rollout.steps[1].weight must be a whole percent from 1 to 100, not 101"),
        ({"strategy": "Canary", "steps": [{"weight": 0}]},
         "spec.rollout.steps[0].weight must be a whole percent from 1 to 100, not 0"),
    ],
)
def test_a_rollout_the_crd_would_refuse_is_refused_saying_what_to_change(rollout, message) -> None:
    with pytest.raises(InvalidSpec) as info:
        _rollout(rollout)
    assert str(info.value) == message


def test_a_canary_needs_the_operators_routing_key() -> None:
    cr = make_cr({"model": "iris", "rollout": {"strategy": "Canary"}})
    keyless = from_env({"MLFLOW_TRACKING_URI": "http://mlflow.mlship:5000"})
    with pytest.raises(InvalidSpec, match="needs the operator's routing key.*MLSHIP_ROUTING_KEY"):
        serving_spec(cr, keyless)
    assert serving_spec(cr, CONFIG).rollout.strategy == CANARY
