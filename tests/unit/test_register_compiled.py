"""The register step's compiled form (register.compile_version): every estimator of the registry,
logged as the train step logs it, either compiles with parity on the holdout, its compiled form
stored with the version's run, or is recorded as not compiled; either way registration goes on.
An MLflow client on a temporary directory, the model logged with skops as train does."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from sklearn.datasets import load_diabetes, load_wine

from mlship import names
from mlship.ml import compiled, estimators
from mlship.mlflow_io import tracking
from mlship.steps import register, train

pytestmark = pytest.mark.unit

ALL = [(t, n) for t, ns in estimators.REGISTRY.items() for n in ns]
SMALL = {"random_forest": {"n_estimators": 20}, "gradient_boosting": {"n_estimators": 20}}


@pytest.fixture
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MlflowClient]:
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    yield MlflowClient(tracking_uri=uri)
    mlflow.set_tracking_uri(None)


def data(task: str) -> pd.DataFrame:
    frame = (load_wine if task == "classification" else load_diabetes)(as_frame=True).frame
    frame = frame.iloc[:, list(range(5)) + [frame.shape[1] - 1]].copy()  # 5 features + target
    frame["kind"] = np.where(frame.iloc[:, 0] > frame.iloc[:, 0].median(), "a", "b")
    frame.loc[::9, frame.columns[1]] = np.nan
    frame.loc[::11, "kind"] = None
    return frame


def trained(client: MlflowClient, task: str, name: str, tmp_path: Path) -> tuple[SimpleNamespace, str]:
    """A version-like object (the train run's id) and the holdout's runs:/ URI."""
    frame = data(task)
    X, y = frame.drop(columns="target"), frame["target"]
    numeric = [c for c in X.columns if c != "kind"]
    model = estimators.model_pipeline(
        numeric, ["kind"], estimators.build_estimator(task, name, SMALL.get(name, {}), seed=0)
    ).fit(X.iloc[::2], y.iloc[::2])
    holdout = frame.iloc[1::2].reset_index(drop=True)
    path = tmp_path / "holdout.parquet"
    holdout.to_parquet(path, index=False)
    with mlflow.start_run() as run:
        info = train.log_model(model, X.iloc[::2])
        holdout_uri = tracking.log_file(run.info.run_id, path, "features")
    return SimpleNamespace(run_id=run.info.run_id, model_uri=info.model_uri), holdout_uri


@pytest.mark.parametrize(("task", "name"), ALL)
def test_every_estimator_compiles_with_parity_and_its_compiled_form_is_stored(
    client, tmp_path, task, name
):
    version, holdout_uri = trained(client, task, name, tmp_path)
    tags = register.compile_version(client, version, version.model_uri, holdout_uri, task)

    assert tags[names.TAG_COMPILED] == names.PARITY_HELD, tags
    holdout_rows = len(data(task)) // 2
    assert tags[names.TAG_PARITY_ROWS] == str(2 * holdout_rows)  # and the probes
    assert (tags[names.TAG_PARITY_MISMATCHES], tags[names.TAG_PARITY_MAX_ERROR]) == ("0", "0")
    assert tags[names.TAG_COMPILED_DETAIL].startswith(f"held: 0 of {2 * holdout_rows} rows differ")
    assert tags[names.TAG_COMPILED_DETAIL].endswith(
        f"; rows: the {holdout_rows} holdout rows, and each again with its numbers missing and "
        "its categories unseen or missing")
    assert tags[names.TAG_COMPILED_URI] == f"runs:/{version.run_id}/compiled"
    local = Path(mlflow.artifacts.download_artifacts(tags[names.TAG_COMPILED_URI],
                                                     dst_path=str(tmp_path / "dl")))
    assert sorted(p.name for p in local.iterdir()) == ["arrays.npz", "parity.json", "predictor.json"]
    fast = compiled.CompiledPredictor.load(local)
    holdout = pd.read_parquet(tracking.fetch(holdout_uri))
    sk = mlflow.sklearn.load_model(version.model_uri)
    assert (fast.predict(holdout) == sk.predict(holdout.drop(columns="target"))).all()


@pytest.mark.parametrize(("task", "name"), ALL)
def test_every_estimator_that_does_not_compile_is_recorded_as_falling_back(
    client, tmp_path, monkeypatch, task, name
):
    version, holdout_uri = trained(client, task, name, tmp_path)

    def refuse(pipeline, task):
        raise compiled.NotCompilable(f"estimator {type(pipeline.steps[-1][1]).__name__} is not supported")

    monkeypatch.setattr(compiled, "compile_pipeline", refuse)
    tags = register.compile_version(client, version, version.model_uri, holdout_uri, task)
    cls = type(mlflow.sklearn.load_model(version.model_uri).steps[-1][1]).__name__
    assert tags == {
        names.TAG_COMPILED: names.NOT_COMPILED,
        names.TAG_COMPILED_DETAIL: f"not compiled: estimator {cls} is not supported",
    }
    assert client.list_artifacts(version.run_id, "compiled") == []


def test_failed_parity_is_recorded_with_its_figures_and_the_form_still_stored(
    client, tmp_path, monkeypatch
):
    version, holdout_uri = trained(client, "regression", "ridge", tmp_path)
    real = compiled.compile_pipeline

    def off(pipeline, task):
        fast = real(pipeline, task)
        fast.arrays["intercept"] = fast.arrays["intercept"] + 0.5
        return fast

    monkeypatch.setattr(compiled, "compile_pipeline", off)
    tags = register.compile_version(client, version, version.model_uri, holdout_uri, "regression")
    rows = str(2 * (len(data("regression")) // 2))
    assert tags[names.TAG_COMPILED] == names.PARITY_FAILED
    assert (tags[names.TAG_PARITY_ROWS], tags[names.TAG_PARITY_MISMATCHES]) == (rows, rows)
    assert float(tags[names.TAG_PARITY_MAX_ERROR]) == pytest.approx(0.5)
    assert tags[names.TAG_COMPILED_DETAIL].startswith(f"failed: {rows} of {rows} rows differ")
    assert [a.path for a in client.list_artifacts(version.run_id, "compiled")] == [
        "compiled/arrays.npz", "compiled/parity.json", "compiled/predictor.json"]


def test_an_unreadable_holdout_is_recorded_not_raised(client, tmp_path):
    version, _ = trained(client, "classification", "logistic_regression", tmp_path)
    missing = f"runs:/{version.run_id}/features/nothing.parquet"
    tags = register.compile_version(client, version, version.model_uri, missing, "classification")
    assert tags[names.TAG_COMPILED] == names.NOT_COMPILED
    assert tags[names.TAG_COMPILED_DETAIL].startswith(
        f"not compiled: cannot download artifact {missing}")


def test_probes_are_left_out_when_scikit_learn_refuses_them():
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    X = pd.DataFrame({"c": ["a", "b", "a", "b"]})
    model = Pipeline([("p", ColumnTransformer([("cat", OneHotEncoder(handle_unknown="error"), ["c"])])),
                      ("m", Ridge())]).fit(X, [1.0, 2.0, 1.0, 2.0])
    fast = compiled.compile_pipeline(model, "regression")
    rows, checked = register.parity_rows(model, fast, X)
    assert rows is X
    assert checked.startswith("the 4 holdout rows (scikit-learn refuses the probes: ")
    assert "unknown categories" in checked


def test_probes_miss_every_number_and_vary_every_category():
    X = pd.DataFrame({"n": [1.0, 2.0, 3.0], "kind": ["a", "b", "a"], "m": [4.0, 5.0, 6.0]})
    model = estimators.model_pipeline(
        ["n", "m"], ["kind"], estimators.build_estimator("regression", "ridge", {}, seed=0)
    ).fit(X, [1.0, 2.0, 3.0])
    probes = compiled.probe_rows(X, compiled.compile_pipeline(model, "regression"))
    assert probes[["n", "m"]].isna().all().all()
    assert probes["kind"].tolist()[0] == compiled.UNSEEN and probes["kind"].isna().tolist() == [
        False, True, False]
    assert X["n"].tolist() == [1.0, 2.0, 3.0]  # the holdout itself is untouched
