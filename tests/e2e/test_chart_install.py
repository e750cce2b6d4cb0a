"""The whole system on a real cluster, as a user drives it: install the chart in a namespace that
enforces PodSecurity "restricted", `helm test`, train through Airflow's REST API, follow the
lineage in MLflow, serve the champion with a ModelDeployment, promote another version by moving
the alias, feed a bad dataset that must stop at `validate`, look at both UIs in a real browser,
then upgrade the release and restart PostgreSQL.

The tests share one release (the session fixture in conftest.py) and run in file order; each
later test relies on the state the earlier ones leave (finished DAG runs, registered versions, the
ModelDeployment). Figures (install time, DAG runs, promotion) are printed and recorded as junit
properties.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from devkit import wait_for
from e2e.kit import (
    ARTIFACTS,
    BASE_VALUES,
    CHART,
    DAG,
    EXPERIMENT,
    IRIS_ROWS,
    MODEL,
    RELEASE,
    STEPS,
    TAG_RUN_KEY,
    Airflow,
    Release,
    StepPods,
    all_ready,
    condition,
    iris_accuracy,
    predict,
)
from mlflow import MlflowClient
from testkit import require_or_skip

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(3600)]

CHAMPION = "champion"
CHALLENGER = "challenger"


@pytest.fixture(scope="module", autouse=True)
def _remove_the_model_deployment(release: Release) -> Iterator[None]:
    """Later e2e modules share the release: leave them the node's CPU, not this module's server."""
    yield
    if release.deployment:
        release.delete_model_deployment(release.deployment)
        release.deployment = None


def cpu_millis(q: str) -> int:
    return int(q[:-1]) if q.endswith("m") else int(float(q) * 1000)


def mebibytes(q: str) -> int:
    factor = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024}[q[-2:]]
    return int(float(q[:-2]) * factor)


def test_install_is_ready_in_a_restricted_namespace(release: Release, record_property: Any) -> None:
    release.figures["settle_after_install_seconds"] = release.settle()
    pods = release.pods()
    components = {p.metadata.labels["app.kubernetes.io/component"] for p in pods}
    assert {
        "airflow-api-server",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
        "airflow-migrate",
        "mlflow",
        "operator",
        "postgresql",
    } <= components
    # every pod was admitted by PodSecurity "restricted" (enforced: a violating pod is never created)
    ns = release.core.read_namespace(release.namespace)
    assert ns.metadata.labels["pod-security.kubernetes.io/enforce"] == "restricted"
    cpu = memory = 0
    for pod in pods:
        if pod.metadata.labels["app.kubernetes.io/component"] == "airflow-migrate":
            continue  # finished: holds no resources
        for c in pod.spec.containers:
            cpu += cpu_millis(c.resources.requests["cpu"])
            memory += mebibytes(c.resources.requests["memory"])
    release.figures.update(requests_cpu_millicores=cpu, requests_memory_mib=memory)
    for key, value in release.figures.items():
        record_property(key, value)
    print(
        f"\ninstall -> all pods Ready: {release.figures['install_to_ready_seconds']} s; "
        f"requests of the running stack: {cpu}m CPU, {memory} MiB"
    )
    assert cpu <= 900, "the stack must leave a 2-CPU node room for the 1-CPU train step"


def test_helm_test_passes(release: Release) -> None:
    proc = release.helm("test", RELEASE, "--logs", "--timeout", "5m")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for check in ("test-airflow", "test-mlflow", "test-operator"):
        assert f"{RELEASE}-{check}" in proc.stdout


def successful_training_run(release: Release, airflow: Airflow, pods: StepPods, figure: str) -> str:
    """Trigger mlship_training, watch its step pods, record its duration as `figure`; fail unless
    it succeeded. Returns the run id."""
    run_id = airflow.trigger()
    start = time.monotonic()
    state = airflow.wait_run(run_id, on_poll=pods.poll)
    release.figures[figure] = round(time.monotonic() - start, 1)
    airflow.require_success(run_id, state)
    return run_id


def test_training_dag_runs_each_step_in_its_own_pod(release: Release) -> None:
    pods = StepPods(release)
    with release.airflow() as airflow:
        run_id = successful_training_run(release, airflow, pods, "dag_run_seconds")
        release.run_id = run_id
        tasks = airflow.tasks(run_id)
        states = {t: ti["state"] for t, ti in tasks.items()}
        assert {t: states.get(t) for t in STEPS} == dict.fromkeys(STEPS, "success")
        # no search asked for (tune_trials 0): its tasks are skipped without a pod
        assert {t: s for t, s in states.items() if t not in STEPS} == {
            "tune_needed": "success", "tune_plan": "skipped", "tune_trial": "skipped",
            "tune_best": "skipped"}
        tries = {t: tasks[t]["try_number"] for t in STEPS}
        assert tries == dict.fromkeys(STEPS, 1), f"a step was retried: {tries}"
        # the train step's own output (container "base") is in the task log the UI shows
        log = airflow.log(run_id, "train", tasks["train"]["try_number"])
        assert "[base]" in log and "model_uri" in log, (
            f"the train pod's output is not in the task log: {log[-3000:]}"
        )

    assert set(pods.images) == set(STEPS), f"step pods seen: {pods.images}"
    for step in STEPS:
        assert pods.images[step] == {f"mlship-step-{step}:dev"}, f"{step} ran from {pods.images[step]}"
    # the chart's own account, with no API rights; only step pods like these can Airflow start
    assert pods.accounts == {release.name("steps")}

    with release.mlflow_client() as mlflow:
        assert CHAMPION in mlflow.get_registered_model(MODEL).aliases


def pipeline_runs(mlflow: MlflowClient, run_key: str) -> tuple[Any, dict[str, list[Any]]]:
    """The MLflow parent run of one DAG run, and its step runs (one per attempt) by step name."""
    experiment = mlflow.get_experiment_by_name(EXPERIMENT)
    assert experiment is not None, f"no MLflow experiment {EXPERIMENT!r}"
    runs = mlflow.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`{TAG_RUN_KEY}` = '{run_key}'", max_results=100
    )
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1, f"parent runs of {run_key}: {[r.info.run_id for r in parents]}"
    parent = mlflow.get_run(parents[0].info.run_id)  # with its inputs
    steps: dict[str, list[Any]] = {}
    for r in runs:
        if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id:
            steps.setdefault(r.data.tags["mlship.step"], []).append(r)
    return parent, steps


def training_digest(parent: Any) -> str:
    inputs = [
        d
        for d in parent.inputs.dataset_inputs
        if any(t.key == "mlflow.data.context" and t.value == "training" for t in d.tags)
    ]
    assert len(inputs) == 1, f"training dataset inputs of the parent run: {parent.inputs.dataset_inputs}"
    return str(inputs[0].dataset.digest)


def test_mlflow_lineage_leads_from_the_champion_to_the_dag_run_and_its_data(release: Release) -> None:
    from mlship.ml.datasets import load  # the ml extra: only this test needs pandas/scikit-learn

    assert release.run_id, "needs the DAG run of the training test"
    with release.mlflow_client() as mlflow:
        parent, steps = pipeline_runs(mlflow, release.run_id)
        assert parent.info.status == "FINISHED"
        assert set(steps) == set(STEPS), f"step runs under the parent: {sorted(steps)}"
        digest = training_digest(parent)
        # the digest is of the data the run was asked to train on: the bundled iris set
        assert digest == load("sklearn:iris").digest
        assert parent.data.tags["mlship.dataset_digest"] == digest

        champion = mlflow.get_model_version_by_alias(MODEL, CHAMPION)
        # the model was logged by this DAG run's train step ...
        assert champion.run_id in {r.info.run_id for r in steps["train"]}
        train_run = mlflow.get_run(champion.run_id)
        assert train_run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        # ... and the version's lineage tags name the run and the data
        assert champion.tags[TAG_RUN_KEY] == release.run_id
        assert champion.tags["mlship.parent_run_id"] == parent.info.run_id
        assert champion.tags["mlship.dataset_digest"] == digest
        assert champion.tags["mlship.gate"] == CHAMPION
        # ... and its description, what the registry's page shows first, says so in words
        assert champion.description.startswith(f"Trained on sklearn:iris (digest {digest[:12]}) "), (
            champion.description
        )
        assert champion.description.endswith("promoted to champion."), champion.description
        assert parent.data.tags["mlship.model_name"] == MODEL
        assert parent.data.tags["mlship.model_version"] == champion.version  # bare, as everywhere
    release.figures["champion_after_first_run"] = champion.version
    print(
        f"\nDAG run {release.run_id} -> MLflow run {parent.info.run_id} (dataset {digest}) "
        f"-> {MODEL} v{champion.version} @{CHAMPION}"
    )


def test_the_batch_score_dag_scores_a_dataset_with_the_champions_compiled_form(release: Release) -> None:
    import mlflow.artifacts
    import pandas as pd

    from mlship.ml.datasets import load

    batch = "mlship_batch_score"
    with release.airflow() as airflow:
        run_id = airflow.trigger({"model_name": MODEL, "input": "sklearn:iris"}, dag=batch)
        state = airflow.wait_run(run_id, timeout=600, dag=batch)
        assert state == "success", airflow.log(run_id, "score", 1, dag=batch)[-3000:]
    with release.mlflow() as url:
        client = MlflowClient(tracking_uri=url, registry_uri=url)
        champion = client.get_model_version_by_alias(MODEL, CHAMPION)
        exp = client.get_experiment_by_name("mlship-batch")
        (run,) = client.search_runs([exp.experiment_id], filter_string=f"tags.`{TAG_RUN_KEY}` = '{run_id}'")
        tags = run.data.tags
        assert (tags["mlship.model_name"], tags["mlship.model_version"]) == (MODEL, champion.version)
        assert tags["mlship.dataset_digest"] == load("sklearn:iris").digest
        # auto: the faster of the compiled form and scikit-learn on the first rows, answers compared
        predictor, reason = tags["mlship.predictor"], tags["mlship.predictor_reason"]
        assert predictor in ("compiled", "sklearn") and reason.startswith("parity held: 0 of "), reason
        assert "rows/s compiled" in reason, reason
        with tempfile.TemporaryDirectory() as tmp:
            path = mlflow.artifacts.download_artifacts(
                run_id=run.info.run_id, artifact_path="predictions/predictions.parquet", dst_path=tmp,
                tracking_uri=url,
            )
            scored = pd.read_parquet(path)
    assert len(scored) == 150 and {"target", "prediction"} <= set(scored.columns)
    accuracy = float((scored["prediction"] == scored["target"]).mean())
    assert accuracy >= 0.9, f"only {accuracy:.0%} of iris rows predicted right"
    print(f"\nmlship_batch_score {run_id}: 150 rows by {MODEL} v{champion.version} ({reason}), "
          f"{run.data.metrics['rows_per_second']:,.0f} rows/s, accuracy {accuracy:.0%}")


def test_a_second_run_on_the_same_data_registers_a_challenger_not_a_champion(release: Release) -> None:
    # Before the ModelDeployment exists on purpose: on a 2-CPU node that also holds `make up`'s
    # release, a serving pod next to this namespace's stack leaves no room for the 1-CPU train pod.
    assert release.run_id, "needs the DAG run of the training test"
    with release.mlflow_client() as mlflow:
        v1 = mlflow.get_model_version_by_alias(MODEL, CHAMPION)

    pods = StepPods(release)
    with release.airflow() as airflow:
        run_id = successful_training_run(release, airflow, pods, "second_dag_run_seconds")
    assert set(pods.images) == set(STEPS), f"step pods seen: {pods.images}"

    with release.mlflow_client() as mlflow:
        registered = mlflow.search_model_versions(f"name = '{MODEL}' and tags.`{TAG_RUN_KEY}` = '{run_id}'")
        assert len(registered) == 1, f"versions of run {run_id}: {registered}"
        v2 = mlflow.get_model_version(MODEL, registered[0].version)
        assert int(v2.version) > int(v1.version)
        # the same data and seed give an equal score, and an equal score does not beat the champion
        assert mlflow.get_model_version_by_alias(MODEL, CHAMPION).version == v1.version
        assert v2.tags["mlship.gate"] == CHALLENGER, v2.tags.get("mlship.gate_reason")
        assert CHALLENGER in v2.aliases and CHAMPION not in v2.aliases
        assert v2.tags["mlship.dataset_digest"] == v1.tags["mlship.dataset_digest"]
    release.challenger = v2.version
    print(
        f"\nsecond DAG run {run_id}: v{v2.version} registered as {CHALLENGER} "
        f"({v2.tags.get('mlship.gate_reason')}); v{v1.version} stays {CHAMPION}"
    )


def serving(release: Release, name: str, version: str) -> dict[str, Any] | None:
    """The ModelDeployment once it reports `version` rolled out and Ready, else None."""
    md = release.model_deployment(name)
    status = md.get("status") or {}
    ready = condition(md, "Ready")
    if (
        status.get("servingVersion") == version
        and ready.get("status") == "True"
        and status.get("observedGeneration") == md["metadata"]["generation"]
    ):
        return md
    return None


def metadata(url: str) -> dict[str, Any]:
    resp = requests.get(f"{url}/metadata", timeout=30)
    assert resp.ok, f"/metadata answered {resp.status_code}: {resp.text}"
    return dict(resp.json())


def test_model_deployment_serves_the_champion(release: Release) -> None:
    with release.mlflow_client() as mlflow:
        champion = mlflow.get_model_version_by_alias(MODEL, CHAMPION).version
    # a newer version (the challenger) exists: the alias, not the newest number, decides
    assert release.challenger and int(release.challenger) > int(champion)
    start = time.monotonic()
    release.apply_model_deployment(MODEL, {"model": MODEL, "alias": CHAMPION})
    release.deployment = MODEL
    md = wait_for(
        f"ModelDeployment {MODEL} to serve v{champion}", lambda: serving(release, MODEL, champion), 600, 3
    )
    release.figures["model_deployment_ready_seconds"] = round(time.monotonic() - start, 1)
    status = md["status"]
    assert status["desiredVersion"] == status["lastGoodVersion"] == champion
    assert status["alias"] == CHAMPION and status["model"] == MODEL
    assert status["url"] == f"http://{MODEL}.{release.namespace}.svc.cluster.local"
    assert condition(md, "Degraded")["status"] == "False"
    pods = release.serving_pods(MODEL)
    assert all_ready(pods), [(p.metadata.name, p.status.phase) for p in pods]
    assert {p.metadata.labels["mlship.io/model-version"] for p in pods} == {champion}

    rows = [row for row, _ in IRIS_ROWS]
    with release.serving(MODEL) as url:
        meta = metadata(url)
        accuracy = iris_accuracy(url)
        # the Open Inference Protocol (V2) answers as /invocations does
        v2 = requests.post(f"{url}/v2/models/{MODEL}/infer", timeout=30, json={"inputs": [
            {"name": "rows", "shape": [len(rows), 4], "datatype": "FP64", "data": rows}]})
        assert v2.ok, f"V2 infer answered {v2.status_code}: {v2.text}"
        assert v2.json()["outputs"][0]["data"] == predict(url, rows)
        assert requests.get(f"{url}/v2/models/{MODEL}/ready", timeout=30).status_code == 200
    assert meta["version"] == champion
    # registered by the pipeline's register step, which compiled it and checked parity (#14)
    assert (meta["predictor"], meta["predictor_reason_code"]) == ("compiled", "parity_held"), meta
    assert accuracy >= 0.9, f"only {accuracy:.0%} of known iris rows predicted right"
    seconds = release.figures["model_deployment_ready_seconds"]
    print(f"\nModelDeployment {MODEL}: v{champion} Ready {seconds} s after it was applied")


def test_moving_the_champion_alias_rolls_the_deployment_to_the_new_version(release: Release) -> None:
    assert release.deployment and release.challenger, "needs the ModelDeployment and the challenger"
    with release.mlflow_client() as mlflow:
        v1 = mlflow.get_model_version_by_alias(MODEL, CHAMPION)
        v2 = mlflow.get_model_version(MODEL, release.challenger)
        assert release.model_deployment(MODEL)["status"]["servingVersion"] == v1.version

        # promotion by hand, the way a person overrides the gate
        start = time.monotonic()
        mlflow.set_registered_model_alias(MODEL, CHAMPION, v2.version)
        md = wait_for(
            f"ModelDeployment {MODEL} to serve v{v2.version}",
            lambda: serving(release, MODEL, v2.version),
            timeout=600,
            interval=1,
        )
        promotion = round(time.monotonic() - start, 1)
    release.figures["promotion_to_ready_seconds"] = promotion
    assert md["status"]["desiredVersion"] == md["status"]["lastGoodVersion"] == v2.version
    pods_now = release.serving_pods(MODEL)
    assert {p.metadata.labels["mlship.io/model-version"] for p in pods_now} == {v2.version}

    with release.serving(MODEL) as url:
        assert metadata(url)["version"] == v2.version
        accuracy = iris_accuracy(url)
    assert accuracy >= 0.9, f"only {accuracy:.0%} of known iris rows predicted right"

    def rollout_events() -> list[tuple[str, str]] | None:
        events = [(e.reason, e.message) for e in release.events_of(md)]
        started = [m for r, m in events if r == "RolloutStarted" and f"version {v2.version} " in m]
        done = [m for r, m in events if r == "RolloutComplete" and f"version {v2.version} " in m]
        return events if started and done else None

    events = wait_for(f"Events of the rollout to v{v2.version}", rollout_events, timeout=60, interval=3)
    assert any(
        r == "RolloutStarted" and f"replacing version {v1.version}" in m for r, m in events
    ), events
    print(f"\nalias {CHAMPION} moved to v{v2.version}: serving and Ready {promotion} s later")


def registry_snapshot(mlflow: MlflowClient) -> dict[str, Any]:
    versions = mlflow.search_model_versions(f"name = '{MODEL}'")
    return {
        "versions": sorted((v.version, v.run_id, v.source, sorted(v.tags.items())) for v in versions),
        "aliases": dict(sorted(mlflow.get_registered_model(MODEL).aliases.items())),
    }


def serving_snapshot(release: Release) -> dict[str, Any]:
    md = release.model_deployment(MODEL)
    status = md["status"]
    return {
        "versions": {k: status.get(k) for k in ("servingVersion", "desiredVersion", "lastGoodVersion")},
        "ready": {k: condition(md, "Ready").get(k) for k in ("status", "reason", "lastTransitionTime")},
        "generation": md["metadata"]["generation"],
        "pods": sorted(
            (
                p.metadata.uid,
                p.metadata.labels["mlship.io/model-version"],
                p.status.container_statuses[0].restart_count,
            )
            for p in release.serving_pods(MODEL)
        ),
    }


def upload_dataset(mlflow: MlflowClient, release: Release, name: str, content: bytes) -> str:
    """Store a file in MLflow (through its artifact proxy); its URL as step pods fetch it."""
    experiment = mlflow.get_experiment_by_name("e2e-fixtures")
    exp_id = experiment.experiment_id if experiment else mlflow.create_experiment("e2e-fixtures")
    run = mlflow.create_run(exp_id, run_name="bad datasets")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(content)
        mlflow.log_artifact(run.info.run_id, str(path), "datasets")
    mlflow.set_terminated(run.info.run_id)
    prefix = "mlflow-artifacts:/"
    assert run.info.artifact_uri.startswith(prefix), run.info.artifact_uri
    location = f"{run.info.artifact_uri.removeprefix(prefix)}/datasets/{name}"
    # the same path through the port-forward answers the same bytes
    stored = requests.get(f"{mlflow.tracking_uri}/api/2.0/mlflow-artifacts/artifacts/{location}", timeout=30)
    assert stored.ok and stored.content == content, (stored.status_code, stored.text[:300])
    return f"{release.mlflow_in_cluster}/api/2.0/mlflow-artifacts/artifacts/{location}"


def test_a_dataset_that_fails_validation_stops_at_validate_and_changes_nothing(release: Release) -> None:
    from mlship.ml.datasets import sklearn_frame  # the ml extra

    assert release.deployment, "needs the ModelDeployment of the earlier tests"
    frame = sklearn_frame("iris")
    frame.loc[[3, 60, 120], "petal width (cm)"] = None
    with release.mlflow_client() as mlflow:
        url = upload_dataset(mlflow, release, "iris-with-nulls.csv", frame.to_csv(index=False).encode())
        registry_before = registry_snapshot(mlflow)
    serving_before = serving_snapshot(release)

    pods = StepPods(release)
    with release.airflow() as airflow:
        run_id = airflow.trigger({"dataset": url})
        start = time.monotonic()
        state = airflow.wait_run(run_id, on_poll=pods.poll)
        release.figures["failed_dag_run_seconds"] = round(time.monotonic() - start, 1)
        tasks = airflow.tasks(run_id)
        states = {t: ti["state"] for t, ti in tasks.items()}
        validate_log = airflow.log(run_id, "validate", tasks["validate"]["try_number"])
    assert state == "failed", states
    assert states == {
        "ingest": "success",
        "validate": "failed",
        **dict.fromkeys(("featurize", "train", "evaluate", "register"), "upstream_failed"),
        # the hyperparameter search's tasks, after featurize
        **dict.fromkeys(("tune_needed", "tune_plan", "tune_trial", "tune_best"), "upstream_failed"),
    }
    release.figures["failed_run_validate_tries"] = tasks["validate"]["try_number"]
    expected = "column 'petal width (cm)': rule max_nulls=0 violated by 3 (3 null value(s))"
    assert "mlship validate failed: validation failed" in validate_log and expected in validate_log, (
        validate_log[-3000:]
    )
    # bad input cannot pass on a retry: the step exits 65 and the task fails on its first try
    assert tasks["validate"]["try_number"] == 1, validate_log[-3000:]
    assert "exit code 65: the input is wrong, so the task fails without retries" in validate_log, (
        validate_log[-3000:]
    )
    # no pod was ever started for the steps after validate
    assert set(pods.images) == {"ingest", "validate"}, f"step pods seen: {pods.images}"

    with release.mlflow_client() as mlflow:
        parent, steps = pipeline_runs(mlflow, run_id)
        assert parent.info.status == "FAILED"
        assert parent.data.tags["mlship.validation"] == "failed"
        assert set(steps) == {"ingest", "validate"}
        assert len(steps["validate"]) == tasks["validate"]["try_number"]  # each try failed alike
        assert all(r.info.status == "FAILED" for r in steps["validate"])
        assert registry_snapshot(mlflow) == registry_before
    assert serving_snapshot(release) == serving_before
    with release.serving(MODEL) as serving_url:
        accuracy = iris_accuracy(serving_url)
    assert accuracy >= 0.9
    print(
        f"\nbad dataset run {run_id}: failed at validate after {tasks['validate']['try_number']} tries "
        f"in {release.figures['failed_dag_run_seconds']} s; registry and serving unchanged"
    )


def test_the_airflow_and_mlflow_uis_render_in_a_headless_browser(release: Release) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        reason = "no `chromium` on PATH (Debian: apt-get install --no-install-recommends chromium)"
        print(f"\nSKIP: {reason}")
        require_or_skip(reason, "e2e")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # the test dependency group is not installed
        reason = "playwright is not installed (uv sync --frozen)"
        print(f"\nSKIP: {reason}")
        require_or_skip(reason, "e2e")
    ARTIFACTS.mkdir(exist_ok=True)
    password = release.secret(release.name("airflow"))["admin-password"]
    with release.airflow() as airflow, release.mlflow() as mlflow_url, sync_playwright() as pw:
        champion = MlflowClient(mlflow_url).get_model_version_by_alias(MODEL, CHAMPION).version
        browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            start = time.monotonic()
            # Airflow: the auth manager's login form, then the DAG's page with its runs
            # "load", not "networkidle": both UIs keep polling their APIs
            page.goto(f"{airflow.url}/")
            page.locator("input[name=username]").fill("admin")
            page.locator("input[name=password]").fill(password)
            page.locator("input[name=password]").press("Enter")
            page.locator("input[name=password]").wait_for(state="detached", timeout=60_000)
            page.goto(f"{airflow.url}/dags/{DAG}/runs")
            page.get_by_text(release.run_id or "", exact=False).first.wait_for(timeout=60_000)
            airflow_text = page.inner_text("body")
            page.screenshot(path=str(ARTIFACTS / "airflow-dag-runs.png"), full_page=True)
            release.figures["airflow_ui_seconds"] = round(time.monotonic() - start, 1)

            start = time.monotonic()
            # MLflow: the registered model's page, listing its versions and aliases
            page.goto(f"{mlflow_url}/#/models/{MODEL}")
            page.get_by_text(f"Version {champion}").first.wait_for(timeout=60_000)
            page.get_by_text(CHAMPION).first.wait_for(timeout=60_000)
            mlflow_text = page.inner_text("body")
            page.screenshot(path=str(ARTIFACTS / "mlflow-model.png"), full_page=True)
            release.figures["mlflow_ui_seconds"] = round(time.monotonic() - start, 1)
        finally:
            browser.close()
    assert DAG in airflow_text and "success" in airflow_text.lower() and "failed" in airflow_text.lower(), (
        airflow_text[:2000]
    )
    assert MODEL in mlflow_text and f"Version {champion}" in mlflow_text, mlflow_text[:2000]
    assert CHAMPION in mlflow_text and CHALLENGER in mlflow_text, mlflow_text[:2000]
    print(f"\nscreenshots: {ARTIFACTS / 'airflow-dag-runs.png'}, {ARTIFACTS / 'mlflow-model.png'}")


def registry_state(url: str) -> dict[str, Any]:
    """Every model version and every run MLflow knows, as comparable values."""
    mlflow = MlflowClient(url)
    experiments = [e.experiment_id for e in mlflow.search_experiments()]
    return {
        "versions": sorted((v.name, v.version, v.source, v.run_id) for v in mlflow.search_model_versions()),
        "aliases": {m.name: m.aliases for m in mlflow.search_registered_models()},
        "runs": sorted(r.info.run_id for r in mlflow.search_runs(experiments, max_results=1000)),
    }


def test_upgrade_keeps_generated_secrets_models_and_serving(release: Release) -> None:
    assert release.run_id, "needs the DAG run of the training test"
    assert release.deployment, "needs the ModelDeployment of the serving test"
    secrets = {name: release.secret(release.name(name)) for name in ("airflow", "postgresql")}
    old_pods = {p.metadata.uid for p in release.pods()}
    serving_before = serving_snapshot(release)
    with release.mlflow() as url:
        before = registry_state(url)
    assert before["versions"], "no registered model version to keep"
    # Not --reuse-values: the generated secrets must survive an upgrade that does not pass them.
    values = [arg for value in BASE_VALUES for arg in ("--set", value)]
    proc = release.helm(
        "upgrade",
        RELEASE,
        str(CHART),
        "--wait",
        "--timeout",
        "15m",
        *values,
        "--set",
        "operator.logLevel=DEBUG",
        "--set",
        "airflow.parallelism=3",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert {name: release.secret(release.name(name)) for name in ("airflow", "postgresql")} == secrets
    release.figures["settle_after_upgrade_seconds"] = release.settle()
    pods = release.own_pods()
    # the changed values reached new pods (so the checks below meet freshly started components)
    renewed = {
        p.metadata.labels["app.kubernetes.io/component"] for p in pods if p.metadata.uid not in old_pods
    }
    assert {"operator", "airflow-api-server", "airflow-scheduler", "airflow-migrate"} <= renewed
    operator = next(p for p in pods if p.metadata.labels["app.kubernetes.io/component"] == "operator")
    assert any(e.name == "MLSHIP_LOG_LEVEL" and e.value == "DEBUG" for e in operator.spec.containers[0].env)
    with release.mlflow() as url:
        assert registry_state(url) == before
    with release.airflow() as airflow:  # the same admin password, the same metadata DB
        assert airflow.get(f"/dags/{DAG}/dagRuns/{release.run_id}")["state"] == "success"
    # the new operator takes over the ModelDeployment without restarting its model server
    time.sleep(10)  # a few of its polls (every 5 s)
    assert serving_snapshot(release) == serving_before


def test_postgresql_restart_loses_no_run_or_model_version(release: Release) -> None:
    with release.mlflow() as url:
        before = registry_state(url)
    pod = f"{release.name('postgresql')}-0"
    old_uid = release.core.read_namespaced_pod(pod, release.namespace).metadata.uid
    release.core.delete_namespaced_pod(pod, release.namespace)

    def back() -> bool:
        p = release.core.read_namespaced_pod(pod, release.namespace)
        return p.metadata.uid != old_uid and all_ready([p])

    wait_for("PostgreSQL to come back", back, timeout=300, interval=3)
    with release.mlflow() as url:
        after = wait_for("MLflow to answer again", lambda: registry_state(url), timeout=120, interval=3)
    assert after == before
    with release.airflow() as airflow:
        assert airflow.get(f"/dags/{DAG}/dagRuns/{release.run_id}")["state"] == "success"
