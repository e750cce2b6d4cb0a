"""The ModelDeployment CRD: one source of truth, a complete structural schema, examples that
validate, a status schema that holds everything the operator writes, least-privilege RBAC."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from _operator_fixtures import CONFIG, deployment_config_hash, make_cr
from mlship_operator import resource
from mlship_operator import spec as spec_module
from mlship_operator.decide import decide
from mlship_operator.registry import Resolution
from mlship_operator.rollout import Observed, Phase
from mlship_operator.spec import serving_spec

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
CHART_CRD = ROOT / "charts/mlship/crds/modeldeployments.mlship.io.yaml"
MANIFEST_CRD = ROOT / "manifests/crd.yaml"
EXAMPLES = sorted((ROOT / "manifests/examples").glob("*.yaml"))


@pytest.fixture(scope="module")
def crd() -> dict[str, Any]:
    return yaml.safe_load(CHART_CRD.read_text())


@pytest.fixture(scope="module")
def schema(crd) -> dict[str, Any]:
    (version,) = crd["spec"]["versions"]
    return version["schema"]["openAPIV3Schema"]


def test_manifest_copy_does_not_drift_from_the_chart() -> None:
    assert MANIFEST_CRD.read_bytes() == CHART_CRD.read_bytes(), (
        "manifests/crd.yaml differs from the chart's CRD: copy "
        "charts/mlship/crds/modeldeployments.mlship.io.yaml over it"
    )


def test_names_match_the_operator(crd) -> None:
    spec = crd["spec"]
    assert crd["metadata"]["name"] == f"{resource.PLURAL}.{resource.GROUP}"
    assert spec["group"] == resource.GROUP and spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == resource.KIND
    assert spec["names"]["plural"] == resource.PLURAL
    assert spec["names"]["categories"] == ["mlship"]
    (version,) = spec["versions"]
    assert version["name"] == resource.VERSION and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}, "scale": {
        "specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector"}}


def _field(schema: dict[str, Any], json_path: str) -> dict[str, Any]:
    node = schema
    for part in json_path.lstrip(".").split("."):
        assert part in node.get("properties", {}), f"no field {json_path} in the schema"
        node = node["properties"][part]
    return node


def test_the_scale_subresource_points_at_fields_the_schema_has(crd, schema) -> None:
    scale = crd["spec"]["versions"][0]["subresources"]["scale"]
    # what kubectl scale and a HorizontalPodAutoscaler read and write: ints, and a selector string
    assert _field(schema, scale["specReplicasPath"])["type"] == "integer"
    assert _field(schema, scale["statusReplicasPath"])["type"] == "integer"
    assert _field(schema, scale["labelSelectorPath"])["type"] == "string"
    # the CRD's bounds of spec.replicas agree with the autoscaler's
    replicas = _field(schema, ".spec.replicas")
    auto = _field(schema, ".spec.autoscaling")["properties"]
    assert (replicas["minimum"], replicas["maximum"]) == (
        auto["minReplicas"]["minimum"], auto["maxReplicas"]["maximum"])


def test_autoscaling_requires_max_checks_min_by_cel_and_defaults_like_the_operator(schema) -> None:
    field = _field(schema, ".spec.autoscaling")
    assert field["required"] == ["maxReplicas"]
    assert field["x-kubernetes-validations"] == [{
        "rule": "!has(self.minReplicas) || self.maxReplicas >= self.minReplicas",
        "message": "spec.autoscaling.maxReplicas must be at least minReplicas",
    }]
    assert "default" not in field  # absent means no autoscaler
    props = field["properties"]
    assert props["minReplicas"]["default"] == 1
    assert props["targetCPUUtilizationPercentage"]["default"] == spec_module.DEFAULT_CPU_UTILIZATION
    assert "default" not in props["scaleDownStabilizationSeconds"]  # unset: the autoscaler's 300 s
    jsonschema.validate(make_cr({"model": "iris", "autoscaling": {"maxReplicas": 3}}), schema)
    jsonschema.validate(make_cr({"model": "iris", "replicas": 2, "autoscaling": {
        "minReplicas": 2, "maxReplicas": 50, "targetCPUUtilizationPercentage": 10}}), schema)


# Short names of built-in kinds and of popular ML-serving CRDs (KServe, Seldon, ...).
TAKEN = {"po", "svc", "deploy", "ds", "sts", "rs", "rc", "cm", "ns", "no", "pv", "pvc", "sa",
         "ep", "ing", "netpol", "hpa", "pdb", "cj", "crd", "crds", "csr", "ev", "limits", "quota",
         "sc", "pc", "psp", "md", "mds", "isvc", "sdep", "mlm", "ml", "mld", "dep", "deps"}


def test_short_name_collides_with_nothing_common(crd) -> None:
    names = crd["spec"]["names"]["shortNames"]
    assert names and not set(names) & TAKEN


def _walk(node: dict[str, Any], path: str):
    yield path, node
    for name, child in (node.get("properties") or {}).items():
        yield from _walk(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from _walk(node["items"], f"{path}[]")


def test_every_field_has_a_description_and_a_type(schema) -> None:
    # metadata is the one exception: the API server forbids anything but its type there
    missing = [p for p, node in _walk(schema, "")
               if not node.get("description") and p != ".metadata"]
    assert not missing, f"fields without a description: {missing}"
    untyped = [p for p, node in _walk(schema, "")
               if "type" not in node and not node.get("x-kubernetes-int-or-string")]
    assert not untyped, f"fields without a type (not structural): {untyped}"


def test_objects_are_closed_except_metadata(schema) -> None:
    open_objects = [
        p for p, node in _walk(schema, "")
        if node.get("type") == "object" and not node.get("properties") and p != ".metadata"
    ]
    assert not open_objects
    assert not any(n.get("x-kubernetes-preserve-unknown-fields") for _, n in _walk(schema, ""))


def test_conditions_are_a_map_list_in_the_metav1_condition_shape(schema) -> None:
    conds = schema["properties"]["status"]["properties"]["conditions"]
    assert conds["x-kubernetes-list-type"] == "map"
    assert conds["x-kubernetes-list-map-keys"] == ["type"]
    item = conds["items"]
    assert set(item["required"]) == {"type", "status", "lastTransitionTime", "reason", "message"}
    assert item["properties"]["status"]["enum"] == ["True", "False", "Unknown"]
    assert item["properties"]["lastTransitionTime"]["format"] == "date-time"


def test_cross_field_rules_are_cel_with_messages(schema) -> None:
    rules = [
        rule for _, node in _walk(schema, "") for rule in node.get("x-kubernetes-validations", [])
    ]
    assert len(rules) >= 8
    assert all(rule.get("message") for rule in rules)
    spec_rules = schema["properties"]["spec"]["x-kubernetes-validations"]
    assert any("has(self.alias) && has(self.version)" in r["rule"] for r in spec_rules)


def _columns(crd) -> dict[str, dict]:
    return {col["name"]: col for col in crd["spec"]["versions"][0]["additionalPrinterColumns"]}


def test_printer_columns(crd, schema) -> None:
    cols = _columns(crd)
    default = [name for name, col in cols.items() if not col.get("priority")]
    assert default == ["Model", "Alias", "Version", "Ready", "Available", "Age"]
    assert [name for name, col in cols.items() if col.get("priority") == 1]
    for name, col in cols.items():
        path = col["jsonPath"].split("[")[0].lstrip(".").split(".")
        if path[0] == "metadata":
            continue
        node = schema
        for part in path:
            assert part in node.get("properties", {}), f"column {name}: no field {col['jsonPath']}"
            node = node["properties"][part]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_validate_against_the_schema(path: Path, schema) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert docs
    for doc in docs:
        assert doc["apiVersion"] == resource.API_VERSION and doc["kind"] == resource.KIND
        jsonschema.validate(doc, schema)
        serving_spec({**doc, "metadata": {**doc["metadata"], "uid": "u"}}, CONFIG)


@pytest.mark.parametrize(
    "spec",
    [
        {},  # model is required
        {"model": ""},
        {"model": "iris", "replicas": 0},
        {"model": "iris", "replicas": 51},
        {"model": "iris", "alias": "has space"},
        {"model": "iris", "version": 3},  # must be a string
        {"model": "iris", "pollIntervalSeconds": 1},
        {"model": "iris", "progressDeadlineSeconds": 5},
        {"model": "iris", "resources": {"limits": {"memory": "lots"}}},
        {"model": "iris", "inferenceLog": {"sampleRate": 1.5}},
        {"model": "iris", "inferenceLog": {"sampleRate": -0.1}},
        {"model": "iris", "inferenceLog": {"flushSeconds": 0}},
        {"model": "iris", "inferenceLog": {"flushSeconds": 2.5}},
        {"model": "iris", "autoscaling": {}},  # maxReplicas is required
        {"model": "iris", "autoscaling": {"minReplicas": 1}},
        {"model": "iris", "autoscaling": {"maxReplicas": 0}},
        {"model": "iris", "autoscaling": {"maxReplicas": 51}},
        {"model": "iris", "autoscaling": {"minReplicas": 0, "maxReplicas": 2}},
        {"model": "iris", "autoscaling": {"maxReplicas": 2, "targetCPUUtilizationPercentage": 9}},
        {"model": "iris", "autoscaling": {"maxReplicas": 2, "targetCPUUtilizationPercentage": 101}},
        {"model": "iris", "autoscaling": {"maxReplicas": 2, "scaleDownStabilizationSeconds": -1}},
        {"model": "iris", "autoscaling": {"maxReplicas": 2, "scaleDownStabilizationSeconds": 3601}},
        {"model": "iris", "rollout": {"strategy": "Blue"}},
        {"model": "iris", "rollout": {"strategy": "Shadow", "shadow": {"weight": 0}}},
        {"model": "iris", "rollout": {"strategy": "Shadow", "shadow": {"weight": 101}}},
        {"model": "iris", "rollout": {"strategy": "Shadow", "shadow": {"durationSeconds": 0}}},
        {"model": "iris", "rollout": {"strategy": "Shadow", "shadow": {"minRequests": -1}}},
        {"model": "iris", "rollout": {"strategy": "Canary", "steps": [{"durationSeconds": 60}]}},
        {"model": "iris", "rollout": {"strategy": "Canary", "steps": [{"weight": 0}]}},
        {"model": "iris", "rollout": {"strategy": "Canary", "steps": [{"weight": 101}]}},
        {"model": "iris", "rollout": {"strategy": "Canary", "steps": [{"weight": 2.5}]}},
        {"model": "iris", "rollout": {"strategy": "Canary",
                                      "steps": [{"weight": w} for w in range(1, 12)]}},
        {"model": "iris", "rollout": {"strategy": "Canary",
                                      "steps": [{"weight": 10, "durationSeconds": 0}]}},
        {"model": "iris", "rollout": {"strategy": "Canary",
                                      "steps": [{"weight": 10, "durationSeconds": 86401}]}},
        {"model": "iris", "rollout": {"strategy": "Canary",
                                      "steps": [{"weight": 10, "minRequests": -1}]}},
        {"model": "iris", "rollout": {"strategy": "Canary",
                                      "steps": [{"weight": 10, "minRequests": 10_000_001}]}},
        {"model": "iris", "rollout": {"analysis": {"maxErrorRate": 1.01}}},
        {"model": "iris", "rollout": {"analysis": {"maxErrorRate": -0.01}}},
        {"model": "iris", "rollout": {"analysis": {"maxLatencyRatio": 0.99}}},
        {"model": "iris", "rollout": {"analysis": {"latencySlackMs": -1}}},
        {"model": "iris", "rollout": {"analysis": {"minAgreement": 1.5}}},
        {"model": "iris", "rollout": {"analysis": {"minAgreement": -0.5}}},
    ],
)
def test_schema_rejects_out_of_bounds_values(spec: dict, schema) -> None:
    doc = make_cr(spec)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, schema)


def test_inference_log_defaults_match_the_operators(schema) -> None:
    field = schema["properties"]["spec"]["properties"]["inferenceLog"]
    assert field["default"] == {}  # so the API server fills in the defaults below when it is absent
    props = field["properties"]
    assert props["sampleRate"]["default"] == spec_module.DEFAULT_INFERENCE_LOG_SAMPLE_RATE
    assert props["flushSeconds"]["default"] == spec_module.DEFAULT_INFERENCE_LOG_FLUSH_SECONDS
    jsonschema.validate(make_cr({"model": "iris", "inferenceLog": {"sampleRate": 0}}), schema)
    jsonschema.validate(make_cr({"model": "iris", "inferenceLog": {"sampleRate": 0.05}}), schema)


def test_rollout_defaults_match_the_operators_and_absent_means_replace(schema) -> None:
    field = _field(schema, ".spec.rollout")
    assert "default" not in field  # old CRs stay as they are: no rollout is today's Replace
    props = field["properties"]
    assert props["strategy"]["enum"] == list(spec_module.STRATEGIES)
    assert props["strategy"]["default"] == spec_module.REPLACE
    assert "default" not in props["steps"]  # the operator's DEFAULT_CANARY_STEPS, for Canary only
    step = props["steps"]["items"]
    assert step["required"] == ["weight"]
    assert (step["properties"]["weight"]["minimum"], step["properties"]["weight"]["maximum"]) == (
        1, 100)
    assert step["properties"]["durationSeconds"]["default"] == spec_module.DEFAULT_STEP_SECONDS
    assert step["properties"]["minRequests"]["default"] == spec_module.DEFAULT_STEP_MIN_REQUESTS
    shadow = props["shadow"]["properties"]
    assert "default" not in props["shadow"]  # with Canary, no shadow step unless asked for
    assert (shadow["weight"]["default"], shadow["durationSeconds"]["default"],
            shadow["minRequests"]["default"]) == (
        spec_module.DEFAULT_SHADOW_STEP.weight, spec_module.DEFAULT_SHADOW_STEP.seconds,
        spec_module.DEFAULT_SHADOW_STEP.min_requests)
    analysis = props["analysis"]
    assert analysis["default"] == {}  # so the API server shows the thresholds in effect
    defaults = spec_module.Analysis()
    assert {name: node["default"] for name, node in analysis["properties"].items()} == {
        "maxErrorRate": defaults.max_error_rate, "maxLatencyRatio": defaults.max_latency_ratio,
        "latencySlackMs": defaults.latency_slack_ms, "minAgreement": defaults.min_agreement,
    }


def test_rollout_cel_rules_refuse_steps_without_canary_and_weights_that_do_not_grow(
    schema,
) -> None:
    field = _field(schema, ".spec.rollout")
    assert field["x-kubernetes-validations"] == [{
        "rule": "!has(self.steps) || size(self.steps) == 0 ||"
                " (has(self.strategy) && self.strategy == 'Canary')",
        "message": "spec.rollout.steps are only for strategy Canary: set spec.rollout.strategy"
                   " to Canary or remove the steps",
        "fieldPath": ".steps",
    }, {
        "rule": "!has(self.shadow) || (has(self.strategy) && self.strategy != 'Replace')",
        "message": "spec.rollout.shadow is only for strategy Shadow or Canary: set"
                   " spec.rollout.strategy or remove the shadow",
        "fieldPath": ".shadow",
    }]
    steps = field["properties"]["steps"]
    (rule,) = steps["x-kubernetes-validations"]
    assert rule["message"] == "spec.rollout.steps weights must increase from one step to the next"
    # CEL has no pairwise loop: the rule lists the indices, and must list all that maxItems allows
    indices = list(range(1, steps["maxItems"]))
    assert rule["rule"] == (
        f"{indices}.all(i, i >= size(self) || self[i - 1].weight < self[i].weight)")


@pytest.mark.parametrize(
    "rollout",
    [
        {},
        {"strategy": "Replace"},
        {"strategy": "Canary"},
        {"strategy": "Canary", "steps": []},
        {"strategy": "Shadow"},
        {"strategy": "Shadow", "shadow": {"weight": 1, "durationSeconds": 86400,
                                          "minRequests": 0}},
        {"strategy": "Canary", "shadow": {}, "steps": [{"weight": 20}]},
        {"strategy": "Canary", "steps": [{"weight": 1, "durationSeconds": 1, "minRequests": 0},
                                         {"weight": 100, "durationSeconds": 86400,
                                          "minRequests": 10_000_000}]},
        {"strategy": "Canary", "steps": [{"weight": w} for w in range(10, 101, 10)]},
        {"strategy": "Canary", "analysis": {"maxErrorRate": 0, "maxLatencyRatio": 1,
                                            "latencySlackMs": 0, "minAgreement": 1}},
        {"strategy": "Canary", "analysis": {"maxErrorRate": 1, "maxLatencyRatio": 10,
                                            "latencySlackMs": 250.5, "minAgreement": 0}},
    ],
)
def test_rollouts_within_bounds_validate_and_parse(rollout: dict, schema) -> None:
    cr = make_cr({"model": "iris", "rollout": rollout})
    jsonschema.validate(cr, schema)
    serving_spec(cr, CONFIG)


def test_rollout_columns_show_in_wide_output(crd) -> None:
    cols = _columns(crd)
    assert {name: (cols[name]["jsonPath"], cols[name]["type"], cols[name].get("priority"))
            for name in ("Strategy", "Step", "Mode", "Share", "Candidate")} == {
        "Strategy": (".spec.rollout.strategy", "string", 1),
        "Step": (".status.rollout.step", "integer", 1),
        "Mode": (".status.rollout.mode", "string", 1),
        "Share": (".status.rollout.weight", "integer", 1),
        "Candidate": (".status.rollout.candidate", "string", 1),
    }


def test_the_rollout_status_holds_every_figure_the_operator_will_write(schema) -> None:
    field = copy.deepcopy(schema["properties"]["status"]["properties"]["rollout"])
    field["additionalProperties"] = False
    status = {
        "strategy": "Canary", "candidate": "4", "phase": "Analysing", "step": 0, "mode": "Canary",
        "weight": 10,
        "stepStartedAt": "2026-01-01T00:00:00Z", "requests": 120, "errors": 1, "agreement": 0.97,
        "candidateP99Ms": 12.5, "stableP99Ms": 11.0, "message": "step 1 of 2: 10 % for 60 s",
    }
    assert set(field["properties"]) == set(status)
    jsonschema.validate(status, field)
    assert field["properties"]["stepStartedAt"]["format"] == "date-time"


def test_everything_the_operator_writes_fits_the_status_schema(schema) -> None:
    """Unknown status fields would be pruned silently by the API server."""
    status_schema = copy.deepcopy(schema["properties"]["status"])
    # status written along a rollout that fails and is rolled back
    cr = make_cr()
    spec = serving_spec(cr, CONFIG)
    h = deployment_config_hash(cr, CONFIG)

    def obs(v, phase, **kw):
        return Observed(exists=True, version=v, config_hash=h, phase=phase, ready_replicas=1, **kw)

    status: dict = {}
    steps = [("1", obs("1", Phase.COMPLETE)), ("2", obs("1", Phase.COMPLETE)),
             ("2", obs("2", Phase.FAILED, reason="CrashLoopBackOff", message="m"))]
    for version, observed in steps:
        status = decide(spec=spec, status=status, resolution=Resolution(version, "Resolved", ""),
                        observed=observed, config_hash=h, url="http://x", now="2026-01-01T00:00:00Z"
                        ).status
    assert "lastFailure" in status and "configHash" in status["lastFailure"]
    assert {"replicas", "selector"} <= set(status)
    status_schema["additionalProperties"] = False
    for sub in ("lastFailure",):
        status_schema["properties"][sub]["additionalProperties"] = False
    status_schema["properties"]["conditions"]["items"]["additionalProperties"] = False
    jsonschema.validate(status, status_schema)


RBAC = ROOT / "manifests/operator-rbac.yaml"
NEEDED = {
    ("mlship.io", "modeldeployments"): {"get", "list", "watch", "patch"},
    ("mlship.io", "modeldeployments/status"): {"patch"},
    ("mlship.io", "modeldeployments/finalizers"): {"update"},
    # a canary's Deployment and Service are deleted once it is promoted or aborted
    ("apps", "deployments"): {"get", "create", "patch", "delete"},
    ("", "services"): {"get", "create", "patch", "delete"},
    ("", "secrets"): {"create"},  # the routing token: never read nor changed
    # optional children: deleted when the spec no longer asks for them
    ("autoscaling", "horizontalpodautoscalers"): {"get", "create", "patch", "delete"},
    ("policy", "poddisruptionbudgets"): {"get", "create", "patch", "delete"},
    ("", "pods"): {"list"},
    ("discovery.k8s.io", "endpointslices"): {"list"},  # a canary's Service ready for traffic
    ("", "events"): {"create"},
}


def test_rbac_grants_what_the_operator_uses_and_nothing_broad() -> None:
    docs = [d for d in yaml.safe_load_all(RBAC.read_text()) if d]
    (role,) = [d for d in docs if d["kind"] == "ClusterRole"]
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for res in rule["resources"]:
                granted.setdefault((group, res), set()).update(rule["verbs"])
    for key, verbs in NEEDED.items():
        assert verbs <= granted.get(key, set()), f"missing {key}: {verbs - granted.get(key, set())}"
    assert set(granted) == set(NEEDED), f"more than needed: {set(granted) - set(NEEDED)}"
    flat = {v for verbs in granted.values() for v in verbs}
    assert "*" not in flat
    assert granted[("", "secrets")] == {"create"}
    bindings = [d for d in docs if d["kind"] in ("RoleBinding", "ClusterRoleBinding")]
    assert bindings and all(b["roleRef"]["name"] == role["metadata"]["name"] for b in bindings)
