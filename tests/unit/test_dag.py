"""Load the DAG folder the way the dag-processor does and inspect mlship_training.

Airflow runs in a subprocess with its own AIRFLOW_HOME so its configuration never leaks into
(or from) the test session; the subprocess reports what it found as JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

DAGS = Path(__file__).resolve().parents[2] / "dags"
STEPS = ["ingest", "validate", "featurize", "train", "evaluate", "register"]
SEARCH = ["tune_plan", "tune_trial", "tune_best"]  # pods of train's image, when a search runs
# one trial pod's arguments, as a plan's result has them (the probe unmaps tune_trial with them)
TRIAL_ARGS = ["trial", "--search-run-id", "s", "--share", "[]"]

PROBE = r"""
import json, sys
from pathlib import Path
from kubernetes.client import ApiClient
from airflow.dag_processing.dagbag import BundleDagBag
from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.sdk.definitions.mappedoperator import MappedOperator

folder = Path(sys.argv[1])
bag = BundleDagBag(dag_folder=str(folder), bundle_path=folder, include_examples=False)
out = {"import_errors": {str(k): str(v) for k, v in bag.import_errors.items()},
       "dag_ids": sorted(bag.dags)}
def describe(dag):
    d = {"schedule": str(dag.schedule), "catchup": dag.catchup,
         "max_active_runs": dag.max_active_runs,
         "params": {k: dag.params[k] for k in dag.params}, "tasks": {}}
    for t in dag.tasks:
        mapped = isinstance(t, MappedOperator)
        expanded = sorted(t.expand_input.value) if mapped else []
        if mapped:  # one trial pod, as the plan's result would make it
            t = t.unmap({"arguments": ["trial", "--search-run-id", "s", "--share", "[]"]})
        d["tasks"][t.task_id] = {
            "mapped": mapped,
            "expanded": expanded,
            "trigger_rule": str(getattr(t.trigger_rule, "value", t.trigger_rule)),
            "max_active_tis_per_dagrun": t.max_active_tis_per_dagrun,
            "type": type(t).__name__,
            "is_kpo": isinstance(t, KubernetesPodOperator),
            "upstream": sorted(t.upstream_task_ids),
            "retries": t.retries,
            "retry_delay": t.retry_delay.total_seconds(),
        }
        if isinstance(t, KubernetesPodOperator):
            d["tasks"][t.task_id].update({
                "image": t.image,
                "on_finish_action": str(getattr(t.on_finish_action, "value", t.on_finish_action)),
                "do_xcom_push": t.do_xcom_push,
                "get_logs": t.get_logs,
                "pod": ApiClient().sanitize_for_serialization(t.build_pod_request_obj()),
            })
        for attr in ("trigger_dag_id", "trigger_run_id", "conf", "fail_when_dag_is_paused",
                     "skip_when_already_exists"):
            if hasattr(t, attr):
                d["tasks"][t.task_id][attr] = getattr(t, attr)
    return d

out["dags"] = {dag_id: describe(dag) for dag_id, dag in bag.dags.items()}
out.update(out["dags"].get("mlship_training", {}))
print("PROBE-RESULT " + json.dumps(out, default=str))
"""

# A finished step pod through StepPodOperator.cleanup, the provider's hook every failed pod goes
# through (sync and deferrable): only the two Kubernetes API calls are replaced.
CLEANUP_PROBE = r"""
import json, sys
from pathlib import Path
from airflow.dag_processing.dagbag import BundleDagBag
from airflow.sdk.exceptions import AirflowFailException
from kubernetes.client import models as k8s

folder = Path(sys.argv[1])
bag = BundleDagBag(dag_folder=str(folder), bundle_path=folder, include_examples=False)
task = bag.dags["mlship_training"].get_task("validate")
task.log_events_on_failure = False  # reads events from the API: none here
task.pod_manager.read_pod = lambda pod: pod  # the pod as the API would return it
task.patch_already_checked = lambda pod, reraise=True: None  # a label write to the API

def pod(code, message):
    return k8s.V1Pod(
        metadata=k8s.V1ObjectMeta(name="mlship-validate-x", namespace="mlship", labels={}, annotations={}),
        spec=k8s.V1PodSpec(containers=[k8s.V1Container(name="base")]),
        status=k8s.V1PodStatus(phase="Failed", container_statuses=[k8s.V1ContainerStatus(
            name="base", image="i", image_id="", ready=False, restart_count=0,
            state=k8s.V1ContainerState(terminated=k8s.V1ContainerStateTerminated(
                exit_code=code, message=message)))]))

out = {}
for code in (65, 1):
    p = pod(code, f"mlship validate failed: exit {code}")
    try:
        task.cleanup(p, p)
        out[code] = ["no exception"]
    except Exception as e:
        out[code] = [type(e).__name__, isinstance(e, AirflowFailException), str(e)]
print("PROBE-RESULT " + json.dumps(out))
"""

KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: none, cluster: {server: "https://127.0.0.1:9"}}]
users: [{name: none, user: {token: none}}]
contexts: [{name: none, context: {cluster: none, user: none}}]
current-context: none
"""


CONNECTION_WITH_SIDECAR = json.dumps(
    {"conn_type": "kubernetes", "extra": {"xcom_sidecar_container_image": "python:3.11-slim"}}
)


def run_probe(home: Path, probe: str = PROBE, **settings: str) -> dict:
    """Loads the DAG folder in a fresh interpreter with only `settings` as configuration."""
    home.mkdir(parents=True, exist_ok=True)
    # building a pod spec loads a kube config; nothing is ever sent to this address
    (home / "kubeconfig").write_text(KUBECONFIG)
    env = {
        k: v for k, v in os.environ.items()
        if not k.startswith(("AIRFLOW", "MLSHIP_", "KUBERNETES_SERVICE"))
    }
    env.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "false",
        "KUBECONFIG": str(home / "kubeconfig"),
        **settings,
    })
    proc = subprocess.run(
        [sys.executable, "-c", probe, str(DAGS)],
        capture_output=True, text=True, env=env, timeout=240, check=False,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("PROBE-RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    return json.loads(lines[-1].removeprefix("PROBE-RESULT "))


def pods(probe: dict) -> dict[str, dict]:
    """mlship_training's pod tasks (all but the search's ShortCircuitOperator), tune_trial as one
    of its mapped pods."""
    return {task_id: t for task_id, t in probe["tasks"].items() if t["is_kpo"]}


def sidecars(probe: dict) -> dict[str, dict]:
    return {
        step: next(c for c in t["pod"]["spec"]["containers"] if c["name"] == "airflow-xcom-sidecar")
        for step, t in pods(probe).items()
    }


@pytest.fixture(scope="module")
def probe(tmp_path_factory) -> dict:
    return run_probe(
        tmp_path_factory.mktemp("airflow-home"),
        MLSHIP_IMAGE_TRAIN="registry.test/mlship/step-train:1.0",
        MLSHIP_NAMESPACE="ml-pipelines",
        MLSHIP_SCHEDULE="@hourly",
        MLSHIP_XCOM_SIDECAR_IMAGE="registry.test/mlship/base:1.0",
        MLSHIP_IMAGE_PULL_POLICY="Never",
        MLSHIP_SOURCE_HEADERS_SECRET="api-headers",  # noqa: S106 - a Secret's name, not a secret
        MLSHIP_SOURCE_HEADERS_SECRET_KEY="keys.json",  # noqa: S106 - its key's name
        MLSHIP_SOURCE_CREDENTIALS_SECRET="cloud-creds",  # noqa: S106 - a Secret's name
        # set too, and overridden by MLSHIP_XCOM_SIDECAR_IMAGE
        AIRFLOW_CONN_KUBERNETES_DEFAULT=CONNECTION_WITH_SIDECAR,
    )


def test_dag_folder_imports_without_errors(probe):
    assert probe["import_errors"] == {}
    assert probe["dag_ids"] == ["mlship_batch_score", "mlship_drift", "mlship_training"]


def test_steps_run_in_order(probe):
    tasks = probe["tasks"]
    assert sorted(tasks) == sorted([*STEPS, *SEARCH, "tune_needed"])
    for before, after in zip(STEPS, STEPS[1:], strict=False):
        if after != "train":
            assert tasks[after]["upstream"] == [before]
    assert tasks["ingest"]["upstream"] == []
    assert tasks["train"]["upstream"] == ["featurize", "tune_best"]  # with or without a search
    assert pods(probe).keys() == {*STEPS, *SEARCH}


def test_the_search_sits_between_featurize_and_train_and_is_skipped_without_trials(probe):
    tasks = probe["tasks"]
    assert tasks["tune_needed"]["type"] == "ShortCircuitOperator"  # no pod decides it
    assert tasks["tune_needed"]["upstream"] == ["featurize"]
    assert tasks["tune_plan"]["upstream"] == ["tune_needed"]
    assert tasks["tune_trial"]["upstream"] == ["tune_plan"]
    assert tasks["tune_best"]["upstream"] == ["tune_trial"]
    # one pod per item of the plan's result; max_parallel bounds the items, not Airflow
    assert (tasks["tune_trial"]["mapped"], tasks["tune_trial"]["expanded"]) == (True, ["arguments"])
    assert tasks["tune_trial"]["max_active_tis_per_dagrun"] is None
    assert not any(t["mapped"] for task_id, t in tasks.items() if task_id != "tune_trial")
    # a failed trial does not stop best; a skipped search (tune_needed false) skips best, and
    # train runs after featurize alone
    assert tasks["tune_best"]["trigger_rule"] == "all_done_min_one_success"
    assert tasks["train"]["trigger_rule"] == "none_failed_min_one_success"
    assert {t["trigger_rule"] for task_id, t in tasks.items()
            if task_id not in ("train", "tune_best")} == {"all_success"}
    for step in SEARCH:  # train's image, its resources, the tune module with its command first
        container = tasks[step]["pod"]["spec"]["containers"][0]
        assert tasks[step]["image"] == "registry.test/mlship/step-train:1.0"
        assert container["command"] == ["python", "-m", "mlship.steps.tune"]
        assert container["args"][0] == step.removeprefix("tune_")
        assert container["resources"] == tasks["train"]["pod"]["spec"]["containers"][0]["resources"]
        assert tasks[step]["pod"]["metadata"]["name"].startswith(f"mlship-{step.replace('_', '-')}-")
    assert tasks["tune_trial"]["pod"]["spec"]["containers"][0]["args"] == TRIAL_ARGS
    best_args = tasks["tune_best"]["pod"]["spec"]["containers"][0]["args"]
    assert best_args[:3] == ["best", "--plan", "{{ ti.xcom_pull(task_ids='tune_plan') | tojson }}"]
    train_args = tasks["train"]["pod"]["spec"]["containers"][0]["args"]
    assert train_args[train_args.index("--tuned-hyperparameters") + 1] == (
        "{{ (ti.xcom_pull(task_ids='tune_best') or {}).get('hyperparameters') | tojson }}")


def test_the_trigger_forms_search_fields_default_to_no_search(probe):
    params = probe["params"]
    assert (params["tune_trials"], params["tune_search"], params["tune_space"]) == (0, "random", {})
    assert (params["tune_folds"], params["max_parallel"]) == (3, 4)


def test_every_step_has_its_own_image_from_configuration(probe):
    images = {step: t["image"] for step, t in pods(probe).items()}
    assert len({images[step] for step in STEPS}) == len(STEPS)  # the search's are train's
    assert images["train"] == "registry.test/mlship/step-train:1.0"
    assert images["ingest"] == "mlship-step-ingest:dev"
    for step, t in pods(probe).items():
        assert t["is_kpo"], t["type"]
        container = t["pod"]["spec"]["containers"][0]
        assert container["image"] == images[step]
        module = "tune" if step in SEARCH else step
        assert container["command"] == ["python", "-m", f"mlship.steps.{module}"]
        assert t["pod"]["metadata"]["namespace"] == "ml-pipelines"


def test_schedule_retries_xcom_and_pod_lifecycle(probe):
    assert probe["schedule"] == "@hourly"
    assert probe["catchup"] is False
    assert probe["max_active_runs"] == 1
    for t in pods(probe).values():
        assert t["retries"] == 2 and t["retry_delay"] == 60.0
        assert t["do_xcom_push"] is True and t["get_logs"] is True
        assert t["on_finish_action"] == "delete_succeeded_pod"


def test_trigger_form_params(probe):
    params = probe["params"]
    assert params["dataset"] == "sklearn:iris"
    assert params["auto_promote"] is True
    assert params["threshold"] is None
    for name in ("target", "task", "estimator", "hyperparameters", "model_name", "margin",
                 "metric", "validation_rules", "seed"):
        assert name in params


def test_pods_meet_the_restricted_pod_security_profile(probe):
    for step, t in pods(probe).items():
        spec = t["pod"]["spec"]
        pod_sc = spec.get("securityContext", {})
        assert pod_sc.get("runAsNonRoot") is True, step
        assert pod_sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", step
        assert not spec.get("hostNetwork") and not spec.get("hostPID"), step
        assert all("hostPath" not in v for v in spec.get("volumes", [])), step
        names = [c["name"] for c in spec["containers"]]
        assert "airflow-xcom-sidecar" in names, step  # do_xcom_push adds it
        for c in spec["containers"]:
            sc = c.get("securityContext", {})
            assert sc.get("allowPrivilegeEscalation") is False, (step, c["name"])
            assert "ALL" in sc.get("capabilities", {}).get("drop", []), (step, c["name"])
            assert not sc.get("capabilities", {}).get("add"), (step, c["name"])
            assert sc.get("runAsUser", pod_sc.get("runAsUser")) == 10001, (step, c["name"])
            assert not sc.get("privileged"), (step, c["name"])


def test_resources_requests_and_limits(probe):
    for step, t in pods(probe).items():
        res = t["pod"]["spec"]["containers"][0]["resources"]
        assert set(res) == {"requests", "limits"}, step
        assert {"cpu", "memory"} <= set(res["requests"]) and "memory" in res["limits"], step
    train = probe["tasks"]["train"]["pod"]["spec"]["containers"][0]["resources"]
    assert train["limits"]["memory"] == "2Gi"


SOURCE_TASKS = {("mlship_training", "ingest"), ("mlship_batch_score", "score")}


def test_only_the_source_pods_read_the_source_secrets(probe):
    for dag_id, dag in probe["dags"].items():
        for task_id, t in dag["tasks"].items():
            if not t["is_kpo"]:
                continue
            containers = {c["name"]: c for c in t["pod"]["spec"]["containers"]}
            env = {e["name"]: e for e in containers["base"]["env"]}
            assert env["MLFLOW_TRACKING_URI"]["value"] and env["HOME"]["value"] == "/tmp", task_id
            headers = env.pop("MLSHIP_SOURCE_HEADERS", None)
            env_from = containers["base"].get("envFrom")
            if (dag_id, task_id) in SOURCE_TASKS:
                # the kubelet reads the Secrets: their values are never in the DAG or the pod spec
                assert headers == {"name": "MLSHIP_SOURCE_HEADERS", "valueFrom": {"secretKeyRef": {
                    "name": "api-headers", "key": "keys.json", "optional": False}}}, task_id
                assert env_from == [{"secretRef": {"name": "cloud-creds", "optional": False}}], task_id
            else:
                assert headers is None, (dag_id, task_id)
                assert not env_from, (dag_id, task_id)  # no whole Secret
            assert all("valueFrom" not in e for e in env.values()), (dag_id, task_id)
            assert "env" not in containers["airflow-xcom-sidecar"], (dag_id, task_id)
            assert "envFrom" not in containers["airflow-xcom-sidecar"], (dag_id, task_id)


def test_xcom_sidecar_runs_from_the_configured_image_not_alpine(probe):
    for step, t in pods(probe).items():
        containers = {c["name"]: c for c in t["pod"]["spec"]["containers"]}
        sidecar = containers["airflow-xcom-sidecar"]
        assert sidecar["image"] == "registry.test/mlship/base:1.0", step  # not the connection's
        assert sidecar["imagePullPolicy"] == "Never", step
        assert containers["base"]["imagePullPolicy"] == "Never", step
        assert not any(c["image"].startswith("alpine") for c in containers.values()), step
        # still the provider's sidecar: its command and the shared XCom volume
        assert sidecar["command"][:2] == ["sh", "-c"], step
        assert {"name": "xcom", "mountPath": "/airflow/xcom"} in sidecar["volumeMounts"], step
        assert sidecar["resources"] == {"requests": {"cpu": "10m", "memory": "16Mi"},
                                        "limits": {"cpu": "100m", "memory": "64Mi"}}, step
        sc = sidecar["securityContext"]
        assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 10001, step
        assert sc["readOnlyRootFilesystem"] is True, step
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, step


def test_xcom_sidecar_image_falls_back_to_the_connection_then_to_mlship_base(tmp_path):
    with_connection = run_probe(tmp_path / "a", AIRFLOW_CONN_KUBERNETES_DEFAULT=CONNECTION_WITH_SIDECAR)
    assert {c["image"] for c in sidecars(with_connection).values()} == {"python:3.11-slim"}
    unconfigured = run_probe(tmp_path / "b")
    assert {c["image"] for c in sidecars(unconfigured).values()} == {"mlship-base:dev"}
    assert {c["imagePullPolicy"] for c in sidecars(unconfigured).values()} == {"IfNotPresent"}


def test_drift_dag_checks_in_its_own_pod_then_triggers_training_with_the_reason(probe):
    dag = probe["dags"]["mlship_drift"]
    assert dag["schedule"] == "@hourly" and dag["catchup"] is False and dag["max_active_runs"] == 1
    tasks = dag["tasks"]
    assert sorted(tasks) == ["detect", "retrain", "retrain_needed"]
    assert tasks["retrain_needed"]["upstream"] == ["detect"]
    assert tasks["retrain"]["upstream"] == ["retrain_needed"]
    detect = tasks["detect"]
    assert detect["is_kpo"] and detect["image"] == "mlship-step-drift:dev"
    container = detect["pod"]["spec"]["containers"][0]
    assert container["command"] == ["python", "-m", "mlship.steps.drift"]
    assert detect["pod"]["metadata"]["labels"]["app.kubernetes.io/component"] == "drift-check"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert tasks["retrain_needed"]["type"] == "ShortCircuitOperator"
    retrain = tasks["retrain"]
    assert retrain["type"] == "TriggerDagRunOperator"
    assert retrain["trigger_dag_id"] == "mlship_training"
    assert "reason" in retrain["conf"] and "xcom_pull(task_ids='detect')" in retrain["conf"]["reason"]
    assert retrain["fail_when_dag_is_paused"] is True and retrain["skip_when_already_exists"] is True
    assert {"model_name", "alias", "window_minutes", "min_rows", "threshold"} <= set(dag["params"])
    assert dag["params"]["threshold"] == 0.5 and dag["params"]["min_rows"] == 100


def test_batch_score_dag_scores_in_its_own_pod_with_the_forms_flags(probe):
    dag = probe["dags"]["mlship_batch_score"]
    assert dag["schedule"] == "None" and dag["catchup"] is False
    assert list(dag["tasks"]) == ["score"]
    score = dag["tasks"]["score"]
    assert score["is_kpo"] and score["image"] == "mlship-step-score:dev"
    container = score["pod"]["spec"]["containers"][0]
    assert container["command"] == ["python", "-m", "mlship.steps.score"]
    assert container["args"][:12] == [
        "--model-name", "{{ params.model_name }}", "--alias", "{{ params.alias }}",
        "--version", "{{ params.version }}", "--input", "{{ params.input }}",
        "--predictor", "{{ params.predictor }}", "--batch-experiment", "{{ params.batch_experiment }}",
    ]
    assert container["resources"]["limits"]["memory"] == "4Gi"
    assert score["pod"]["metadata"]["labels"]["app.kubernetes.io/component"] == "batch-score"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert dag["params"] == {"model_name": "iris", "alias": "champion", "version": None,
                             "input": "sklearn:iris", "predictor": "auto", "batch_experiment": "mlship-batch"}


def test_drift_schedule_and_defaults_come_from_configuration(tmp_path):
    probe = run_probe(
        tmp_path, MLSHIP_DRIFT_SCHEDULE="none", MLSHIP_DRIFT_THRESHOLD="0.25",
        MLSHIP_DRIFT_MIN_ROWS="500", MLSHIP_IMAGE_DRIFT="registry.test/mlship/step-drift:2.0",
    )
    dag = probe["dags"]["mlship_drift"]
    assert dag["schedule"] == "None"
    assert (dag["params"]["threshold"], dag["params"]["min_rows"]) == (0.25, 500)
    assert dag["tasks"]["detect"]["image"] == "registry.test/mlship/step-drift:2.0"


def test_a_step_pod_that_exited_65_fails_its_task_without_retries(tmp_path) -> None:
    out = run_probe(tmp_path, CLEANUP_PROBE)
    kind, no_retry, message = out["65"]
    assert (kind, no_retry) == ("AirflowFailException", True)
    assert message == (
        "mlship validate failed: exit 65\n"
        "(exit code 65: the input is wrong, so the task fails without retries)"
    )
    kind, no_retry, message = out["1"]  # any other failure: the provider's, retried
    assert (kind, no_retry) == ("AirflowException", False)
    assert message == "Pod mlship-validate-x returned a failure.\nmlship validate failed: exit 1"
