"""The score step of mlship_batch_score (#14) against a real MLflow server: the pipeline-registered
iris version scores a CSV by its compiled form with scikit-learn's answers, the input's other columns carried
through, lineage to the version and the input's digest; a retry returns the same run; a version
without a parity record is scored by scikit-learn; bad input is one line, exit 65, nothing logged."""

from __future__ import annotations

import uuid

import mlflow.pyfunc
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from sklearn.datasets import load_iris

from mlship import names
from mlship.ml.datasets import content_digest
from mlship.mlflow_io.tracking import fetch

pytestmark = pytest.mark.integration

FEATURES = load_iris(as_frame=True).frame.drop(columns="target")


@pytest.fixture(autouse=True)
def tracking(mlflow_here: str) -> None:
    """For fetching what the step logged."""


@pytest.fixture(scope="module")
def csv(tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("batch") / "to-score.csv"
    FEATURES.assign(customer=[f"c{i}" for i in range(len(FEATURES))]).to_csv(path, index=False)
    return path


def unchecked_version(mlflow_server: str, pipeline) -> str:
    """A new version of the pipeline's model, registered by hand: no record of a compiled form."""
    trn = pipeline["train"]
    return str(MlflowClient(mlflow_server).create_model_version(
        pipeline["model"], source=trn["model_uri"], run_id=trn["run_id"],
        model_id=trn["model_uri"].removeprefix("models:/"),
    ).version)


def key() -> str:
    return f"batch-{uuid.uuid4().hex[:8]}"


def predictions(result) -> pd.DataFrame:
    return pd.read_parquet(fetch(result["predictions_uri"]))


def expected(name: str, version: str) -> list:
    return mlflow.pyfunc.load_model(f"models:/{name}/{version}").predict(FEATURES).tolist()


def test_the_champion_scores_a_csv_by_its_compiled_form(steps, iris_pipeline, mlflow_server, csv):
    name, version = iris_pipeline["model"], iris_pipeline["register"]["version"]
    run_key = key()
    flags = ("--model-name", name, "--input", str(csv), "--predictor", "compiled")
    result, _ = steps.run("score", *flags, key=run_key)
    assert result["version"] == version and result["model_name"] == name
    assert result["predictor"] == "compiled", result["predictor_reason"]
    assert result["rows"] == 150 and result["rows_per_second"] > 0
    assert result["input_digest"] == content_digest(csv.read_bytes())

    out = predictions(result)
    assert list(out.columns) == [*FEATURES.columns, "customer", "prediction"]
    assert out["customer"].tolist() == [f"c{i}" for i in range(150)]
    assert out["prediction"].tolist() == expected(name, version)

    run = MlflowClient(mlflow_server).get_run(result["run_id"])
    assert run.data.tags[names.TAG_MODEL_VERSION] == version
    assert run.data.tags[names.TAG_ALIAS] == names.CHAMPION
    assert run.data.tags[names.TAG_DATASET_SOURCE] == str(csv)

    again, _ = steps.run("score", *flags, key=run_key)
    assert again == result  # a retry returns the finished run, scores nothing twice


def test_auto_scores_with_the_faster_predictor_on_the_first_rows_and_says_so(steps, iris_pipeline, csv):
    name, version = iris_pipeline["model"], iris_pipeline["register"]["version"]
    result, _ = steps.run("score", "--model-name", name, "--input", str(csv), key=key())
    reason = result["predictor_reason"]
    assert reason.startswith("parity held: 0 of 60 rows differ"), reason
    faster = "faster on the first 150 rows" if result["predictor"] == "compiled" else (
        "scikit-learn faster on the first 150 rows")
    assert faster in reason and "rows/s compiled" in reason, reason
    assert predictions(result)["prediction"].tolist() == expected(name, version)


def test_a_version_without_a_parity_record_is_scored_by_scikit_learn(
    steps, iris_pipeline, mlflow_server, csv
):
    client = MlflowClient(mlflow_server)
    name, other = iris_pipeline["model"], unchecked_version(mlflow_server, iris_pipeline)
    result, _ = steps.run("score", "--model-name", name, "--version", other, "--input", str(csv), key=key())
    assert (result["version"], result["predictor"]) == (other, "sklearn")
    assert result["predictor_reason"].startswith("the version has no mlship.compiled tag")
    assert predictions(result)["prediction"].tolist() == expected(name, other)
    assert names.TAG_ALIAS not in client.get_run(result["run_id"]).data.tags


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--alias", "nobody"), "model {name!r} has no version with alias 'nobody'"),
        (("--version", "999"), "model {name!r} has no version 999: "),
        (("--version", "{other}", "--predictor", "compiled"),
         "--predictor compiled: the version has no usable compiled form (the version has no mlship.compiled"),
        (("--version", "latest"),
         "argument --version: 'latest' is not a version number (or none: the alias's)"),
        (("--input", "{short}"), "lacks the model's input column(s) petal width (cm)"),
    ],
    ids=["unknown-alias", "unknown-version", "compiled-without-parity", "not-a-number", "missing-column"],
)
def test_bad_input_is_named_exits_65_and_logs_nothing(
    steps, iris_pipeline, mlflow_server, csv, tmp_path, flags, message
):
    name = iris_pipeline["model"]
    short = tmp_path / "short.csv"
    FEATURES.drop(columns="petal width (cm)").to_csv(short, index=False)
    other = unchecked_version(mlflow_server, iris_pipeline) if "{other}" in flags else "0"
    flags = tuple(f.format(short=short, other=other) for f in flags)
    given = dict(zip(flags[::2], flags[1::2], strict=True))
    args = ["--model-name", name, "--input", given.pop("--input", str(csv))]
    for flag, value in given.items():
        args += [flag, value]
    run_key = key()
    _, stderr = steps.run("score", *args, key=run_key, expect_ok=False, code=65)
    assert message.format(name=name) in stderr.strip().splitlines()[-1]
    exp = MlflowClient(mlflow_server).get_experiment_by_name(names.EXPERIMENT_BATCH)
    if exp is not None:
        logged = MlflowClient(mlflow_server).search_runs(
            [exp.experiment_id], filter_string=f"tags.`{names.TAG_RUN_KEY}` = '{run_key}'"
        )
        assert not logged
