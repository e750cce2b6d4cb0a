"""The issue's done-when checks through `mlship run`, which runs the same step CLIs the DAG
runs, as local processes: a first iris run registers `champion`; a second run on the same data
records the same digest and does not promote unless better; a validation failure registers
nothing (checked with the embedded default store: SQLite + artifacts under ./.mlship/)."""

from __future__ import annotations

import re

import pytest
from mlflow.tracking import MlflowClient
from testkit import CSV_WITH_NULLS, assert_stopped_at_validate

pytestmark = pytest.mark.integration


def field(stdout: str, name: str) -> str:
    match = re.search(rf"^{name}:\s+(.*)$", stdout, re.MULTILINE)
    assert match, stdout
    return match.group(1).strip()


@pytest.fixture(scope="module")
def second(iris_pipeline, run_mlship):
    return run_mlship(*iris_pipeline["args"], cwd=iris_pipeline["home"])


def test_first_iris_run_registers_champion(iris_pipeline, mlflow_server):
    out = iris_pipeline["proc"].stdout
    model = iris_pipeline["model"]
    assert field(out, "model") == f"{model} version 1"
    assert field(out, "aliases") == "challenger, champion"
    assert "no champion yet: promoted to champion" in field(out, "gate")
    assert field(out, "compiled").startswith("held: 0 of 60 rows differ, max abs error 0 (")
    assert field(out, "look") == mlflow_server
    assert f"models:/{model}@champion" in field(out, "load it")
    mv = MlflowClient(mlflow_server).get_model_version_by_alias(model, "champion")
    assert str(mv.version) == "1"
    # What the version's page in the MLflow UI shows first, in a sentence each.
    digest = field(out, "dataset").split("digest ")[1][:12]
    assert mv.description.startswith(f"Trained on sklearn:iris (digest {digest}) "), mv.description
    assert " as a classification model. On its holdout: accuracy 0.9" in mv.description
    assert mv.description.endswith(
        "Gate on accuracy: accuracy 0.9000 meets the threshold; no champion yet: promoted to champion."
    ), mv.description


def test_second_run_same_digest_and_no_promotion_unless_better(
    iris_pipeline, second, mlflow_server
):
    assert second.returncode == 0, second.stdout + second.stderr[-3000:]
    first = iris_pipeline["proc"].stdout
    model = iris_pipeline["model"]
    assert field(second.stdout, "dataset") == field(first, "dataset")
    assert field(second.stdout, "model") == f"{model} version 2"
    assert field(second.stdout, "aliases") == "challenger"
    assert "champion v1 has 0.9000, not beaten strictly: stays challenger" in field(
        second.stdout, "gate")
    c = MlflowClient(mlflow_server)
    v1, v2 = (c.get_model_version(model, v) for v in ("1", "2"))
    assert v1.tags["mlship.dataset_digest"] == v2.tags["mlship.dataset_digest"]
    assert v1.tags["mlship.parent_run_id"] != v2.tags["mlship.parent_run_id"]
    assert str(c.get_model_version_by_alias(model, "champion").version) == "1"
    assert str(c.get_model_version_by_alias(model, "challenger").version) == "2"


def test_validation_failure_registers_nothing_in_the_default_local_store(
    run_mlship, tmp_path
):
    csv = tmp_path / "sensors.csv"
    csv.write_text(CSV_WITH_NULLS)
    proc = run_mlship("run", "--dataset", str(csv), cwd=tmp_path)
    assert_stopped_at_validate(proc)
    db = tmp_path / ".mlship" / "mlflow.db"
    assert f"-> sqlite:///{db}" in proc.stdout
    # the ingested data went to the local artifact store, not ./mlruns
    assert list((tmp_path / ".mlship" / "artifacts").rglob("dataset.parquet"))
    assert not (tmp_path / "mlruns").exists()
    client = MlflowClient(f"sqlite:///{db}")
    assert client.search_registered_models() == []
    [exp] = [e for e in client.search_experiments() if e.name == "mlship"]
    runs = client.search_runs([exp.experiment_id])
    assert {r.data.tags.get("mlship.step") for r in runs} == {None, "ingest", "validate"}
    assert {r.info.status for r in runs} == {"FAILED", "FINISHED"}
