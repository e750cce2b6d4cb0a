"""Each step CLI as a subprocess against a real `mlflow server` (the `mlflow_server` fixture).

The iris pipeline of the `iris_pipeline` fixture ran every step once; these tests inspect what
it recorded and run single steps again on its artifacts, as a retried Airflow task would.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import uuid
from typing import Any

import pytest
from mlflow.tracking import MlflowClient
from testkit import alert_receiver

pytestmark = pytest.mark.integration


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # released on close: nothing listens there


@pytest.fixture(scope="module")
def chain(iris_pipeline: dict[str, Any]) -> dict[str, Any]:
    return iris_pipeline


def register_args(model: str, ing: dict, trn: dict, eva: dict, fea: dict) -> list[str]:
    return [
        "register", "--model-uri", trn["model_uri"], "--evaluation-uri", eva["evaluation_uri"],
        "--holdout-uri", fea["holdout_uri"], "--model-name", model, "--dataset-digest", ing["dataset_digest"],
        "--dataset-uri", ing["dataset_uri"], "--threshold", "0.8",
    ]


def versions(uri: str, model: str) -> list:
    return list(MlflowClient(uri).search_model_versions(f"name = '{model}'"))


def test_first_model_is_champion_with_lineage_back_to_the_data(chain, mlflow_server):
    client = MlflowClient(mlflow_server)
    reg, ing, trn = chain["register"], chain["ingest"], chain["train"]
    assert reg["decision"] == "champion"
    assert reg["aliases"] == ["challenger", "champion"]
    mv = client.get_model_version(chain["model"], reg["version"])
    assert mv.run_id == trn["run_id"]
    assert mv.tags["mlship.dataset_digest"] == ing["dataset_digest"]
    assert mv.tags["mlship.dataset_uri"] == ing["dataset_uri"]
    assert float(mv.tags["mlship.metric.accuracy"]) == pytest.approx(
        chain["evaluate"]["metrics"]["accuracy"], abs=1e-5)
    assert "no champion yet" in mv.tags["mlship.gate_reason"]

    parent = client.get_run(mv.tags["mlship.parent_run_id"])
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["mlship.pipeline_run_key"] == chain["key"]
    digests = [d.dataset.digest for d in parent.inputs.dataset_inputs]
    assert digests == [ing["dataset_digest"]]
    children = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
    )
    assert sorted(r.data.tags["mlship.step"] for r in children) == sorted(
        ["ingest", "validate", "featurize", "train", "evaluate", "register"])
    train_run = client.get_run(trn["run_id"])
    assert train_run.data.params["estimator"] == "random_forest"
    assert train_run.data.params["hyperparameters"] == "{}"
    # the stored dataset is the one the digest describes
    from mlship.ml import datasets
    assert ing["dataset_digest"] == datasets.load("sklearn:iris").digest


def test_registered_model_loads_with_pyfunc_in_a_fresh_process(chain, mlflow_server, child_env):
    code = (
        "import sys, mlflow.pyfunc\n"
        "from sklearn.datasets import load_iris\n"
        "X = load_iris(as_frame=True).frame.drop(columns='target').head(7)\n"
        "m = mlflow.pyfunc.load_model(sys.argv[1])\n"
        "print(m.metadata.get_input_schema().input_names())\n"
        "print([int(p) for p in m.predict(X)])\n"
    )
    env = child_env(MLFLOW_TRACKING_URI=mlflow_server)
    proc = subprocess.run(
        [sys.executable, "-c", code, f"models:/{chain['model']}@champion"],
        capture_output=True, text=True, env=env, timeout=180, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    names_line, preds_line = proc.stdout.strip().splitlines()[-2:]
    assert "sepal length (cm)" in names_line
    assert preds_line == "[0, 0, 0, 0, 0, 0, 0]"  # the first iris rows are all setosa


def test_rerunning_register_for_the_same_pipeline_run_is_a_noop(chain, steps, mlflow_server):
    before = len(versions(mlflow_server, chain["model"]))
    again, _ = steps.run(
        *register_args(chain["model"], chain["ingest"], chain["train"], chain["evaluate"],
                      chain["featurize"]),
        key=chain["key"],
    )
    assert again["already_registered"] is True
    assert again["version"] == chain["register"]["version"]
    assert len(versions(mlflow_server, chain["model"])) == before


def test_register_finishes_a_version_an_interrupted_attempt_left_behind(
    chain, steps, mlflow_server
):
    """An attempt that registered the version but died before the gate: the retry adopts it."""
    client = MlflowClient(mlflow_server)
    key, model = f"it-resume-{uuid.uuid4().hex[:6]}", f"resume-{uuid.uuid4().hex[:6]}"
    client.create_registered_model(model)
    orphan = client.create_model_version(
        model, source=chain["train"]["model_uri"], run_id=chain["train"]["run_id"],
        tags={"mlship.pipeline_run_key": key},
        model_id=chain["train"]["model_uri"].removeprefix("models:/"),
    )
    reg, _ = steps.run(
        *register_args(model, chain["ingest"], chain["train"], chain["evaluate"],
                       chain["featurize"]),
        key=key,
    )
    assert reg["version"] == str(orphan.version)
    assert reg["already_registered"] is False and reg["decision"] == "champion"
    assert len(versions(mlflow_server, model)) == 1
    assert client.get_model_version(model, orphan.version).tags["mlship.gate"] == "champion"


def test_better_challenger_moves_champion_and_is_compared_on_the_same_holdout(
    chain, steps, mlflow_server
):
    key = f"it-better-{uuid.uuid4().hex[:6]}"
    fea = chain["featurize"]
    trn, _ = steps.run(
        "train", "--train-uri", fea["train_uri"], "--features-uri", fea["features_uri"],
        "--estimator", "logistic_regression", key=key,
    )
    eva, _ = steps.run(
        "evaluate", "--model-uri", trn["model_uri"], "--holdout-uri", fea["holdout_uri"],
        "--features-uri", fea["features_uri"], "--model-name", chain["model"], key=key,
    )
    # the champion is re-scored on this holdout: same numbers as when it was evaluated
    assert eva["champion_version"] == chain["register"]["version"]
    assert eva["champion_metrics"] == pytest.approx(chain["evaluate"]["metrics"])
    assert eva["metrics"]["accuracy"] > eva["champion_metrics"]["accuracy"]
    reg, _ = steps.run(*register_args(chain["model"], chain["ingest"], trn, eva, fea), key=key)
    assert reg["decision"] == "champion"
    client = MlflowClient(mlflow_server)
    assert client.get_model_version_by_alias(chain["model"], "champion").version == reg["version"]
    # the logistic regression compiled too, with parity on the same 30 holdout rows and probes
    tags = client.get_model_version(chain["model"], reg["version"]).tags
    assert (reg["compiled"], tags["mlship.compiled"], tags["mlship.parity_rows"]) == ("held", "held", "60")


def test_the_registered_version_has_its_compiled_form_and_parity_on_the_holdout(
    chain, mlflow_server, tmp_path
):
    """Registration compiled the forest, checked it against scikit-learn on featurize's 30 holdout
    rows (and on them again with missing numbers) and stored it with the version's run; loaded
    from there it scores as the version does."""
    import mlflow
    import pandas as pd

    from mlship.ml import compiled

    client = MlflowClient(mlflow_server)
    reg, trn = chain["register"], chain["train"]
    assert reg["compiled"] == "held"
    tags = client.get_model_version(chain["model"], reg["version"]).tags
    assert tags["mlship.compiled"] == "held"
    assert (tags["mlship.parity_rows"], tags["mlship.parity_mismatches"]) == ("60", "0")  # probes too
    assert tags["mlship.parity_max_abs_error"] == "0"
    assert tags["mlship.compiled_detail"].startswith("held: 0 of 60 rows differ, max abs error 0 (")
    assert "; rows: the 30 holdout rows, and each again with its numbers missing" in tags[
        "mlship.compiled_detail"]
    assert reg["compiled_detail"] == tags["mlship.compiled_detail"]
    assert tags["mlship.compiled_uri"] == f"runs:/{trn['run_id']}/compiled"

    mlflow.set_tracking_uri(mlflow_server)
    try:
        local = mlflow.artifacts.download_artifacts(tags["mlship.compiled_uri"], dst_path=str(tmp_path))
        holdout = pd.read_parquet(mlflow.artifacts.download_artifacts(
            chain["featurize"]["holdout_uri"], dst_path=str(tmp_path / "h")))
        model = mlflow.sklearn.load_model(f"models:/{chain['model']}/{reg['version']}")
    finally:
        mlflow.set_tracking_uri(None)
    parity = json.loads((tmp_path / "compiled" / "parity.json").read_text())
    assert {k: parity[k] for k in ("verdict", "rows", "mismatches", "max_abs_error")} == {
        "verdict": "held", "rows": 60, "mismatches": 0, "max_abs_error": 0.0}
    fast = compiled.CompiledPredictor.load(local)
    X = holdout.drop(columns="target")
    assert fast.predict(X).tolist() == model.predict(X).tolist()


def test_a_version_that_cannot_be_compiled_is_registered_and_says_why(chain, steps, mlflow_server):
    """No parity without a usable holdout: registration still succeeds, the version says why."""
    key, model = f"it-nocompile-{uuid.uuid4().hex[:6]}", f"nocompile-{uuid.uuid4().hex[:6]}"
    fea = {"holdout_uri": chain["featurize"]["features_uri"]}  # JSON, not the holdout's Parquet
    reg, _ = steps.run(
        *register_args(model, chain["ingest"], chain["train"], chain["evaluate"], fea), key=key
    )
    assert reg["decision"] == "champion" and reg["compiled"] == "not compiled"
    tags = MlflowClient(mlflow_server).get_model_version(model, reg["version"]).tags
    assert tags["mlship.compiled"] == "not compiled"
    assert tags["mlship.compiled_detail"].startswith("not compiled: ")
    assert "mlship.compiled_uri" not in tags and tags["mlship.gate"] == "champion"


def test_a_version_that_fails_the_gate_says_so_and_alerts(chain, steps, mlflow_server):
    key, model = f"it-gatefail-{uuid.uuid4().hex[:6]}", f"gatefail-{uuid.uuid4().hex[:6]}"
    args = register_args(model, chain["ingest"], chain["train"], chain["evaluate"], chain["featurize"])
    with alert_receiver() as (url, received):
        reg, _ = steps.run(*args, "--threshold", "0.999", key=key,
                           env={"MLSHIP_ALERT_WEBHOOK_URL": url})  # fmt: skip
    assert reg["decision"] == "rejected" and reg["aliases"] == []
    client = MlflowClient(mlflow_server)
    mv = client.get_model_version(model, reg["version"])
    assert mv.description.endswith("Gate on accuracy: accuracy 0.9000 is below the minimum 0.9990: not "
                                   "promoted."), mv.description  # fmt: skip
    [alert] = received
    assert (alert["kind"], alert["model"], alert["version"]) == ("gate_failed", model, reg["version"])
    assert alert["summary"] == "accuracy 0.9000 is below the minimum 0.9990: not promoted"
    parent = client.get_run(mv.tags["mlship.parent_run_id"])
    assert alert["links"] == {  # no Airflow UI URL set: no Airflow link
        "mlflow": f"{mlflow_server}/#/experiments/{parent.info.experiment_id}/runs/{parent.info.run_id}",
        "version": f"{mlflow_server}/#/models/{model}/versions/{reg['version']}",
    }
    with alert_receiver() as (url, received):  # a gate that passes says nothing
        steps.run(*args, key=f"it-gateok-{uuid.uuid4().hex[:6]}", env={"MLSHIP_ALERT_WEBHOOK_URL": url})
    assert received == []


def test_unknown_estimator_fails_training_and_registers_nothing(chain, steps, mlflow_server):
    before = len(versions(mlflow_server, chain["model"]))
    fea = chain["featurize"]
    _, err = steps.run(
        "train", "--train-uri", fea["train_uri"], "--features-uri", fea["features_uri"],
        "--estimator", "xgboost", key=f"it-bad-{uuid.uuid4().hex[:6]}", expect_ok=False,
        code=65,
    )
    assert err.strip().splitlines()[-1] == (
        "mlship train failed: unknown estimator 'xgboost' for classification; "
        "choose one of: gradient_boosting, logistic_regression, random_forest"
    )
    assert len(versions(mlflow_server, chain["model"])) == before


def test_wrong_columns_fail_validation_naming_column_and_rule(chain, steps, mlflow_server):
    key = f"it-cols-{uuid.uuid4().hex[:6]}"
    rules = json.dumps({"columns": {"petal_len": {"dtype": "numeric"}}})
    _, err = steps.run(
        "validate", "--dataset-uri", chain["ingest"]["dataset_uri"], "--task", "classification",
        "--rules", rules, key=key, expect_ok=False, code=65,
    )
    assert err.strip().splitlines()[-1] == (
        "mlship validate failed: validation failed: column 'petal_len': rule column_present "
        "violated by 1 (expected column is missing)"
    )
    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name("mlship")
    runs = client.search_runs(
        [exp.experiment_id], filter_string=f"tags.`mlship.pipeline_run_key` = '{key}'"
    )
    # the failed step run and its parent, both marked: nothing downstream will pick them up
    assert {r.data.tags["mlship.validation"] for r in runs} == {"failed"}
    assert {r.info.status for r in runs} == {"FAILED"}
    assert sorted("mlflow.parentRunId" in r.data.tags for r in runs) == [False, True]


def test_ingest_names_a_missing_target_column(steps, tmp_path):
    csv = tmp_path / "houses.csv"
    csv.write_text("rooms,area,price\n3,70,100\n4,90,150\n")
    _, err = steps.run("ingest", "--source", str(csv), "--target", "target",
                          key="it-target", expect_ok=False, code=65)
    assert err.strip().splitlines()[-1] == (
        f"mlship ingest failed: target column 'target' not in {csv} (columns: rooms, area, price)"
    )


def test_ingest_rejects_an_empty_file(steps, tmp_path):
    csv = tmp_path / "empty.csv"
    csv.write_text("")
    _, err = steps.run("ingest", "--source", str(csv), key="it-empty", expect_ok=False, code=65)
    assert err.strip().splitlines()[-1] == (
        f"mlship ingest failed: source '{csv}' is empty (0 bytes of data)"
    )


def test_unreachable_mlflow_fails_fast_with_the_address(steps):
    port = closed_port()
    uri = f"http://127.0.0.1:{port}"
    start = time.monotonic()
    _, err = steps.run("ingest", "--source", "sklearn:iris", key="it-down", uri=uri,
                          expect_ok=False)
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"mlship ingest failed: cannot reach MLflow tracking server at {uri}")
    assert "refused" in last.lower()
    assert time.monotonic() - start < 60
