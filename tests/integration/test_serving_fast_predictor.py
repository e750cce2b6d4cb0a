"""Serving the compiled form (#14): a version whose parity held at registration is scored by its
compiled predictor, with scikit-learn's answers; any other version by scikit-learn, saying why.
The iris pipeline's version (registered through the real register step) and versions of the same
model with other parity records, from a real MLflow server."""

from __future__ import annotations

import uuid

import numpy as np
import orjson
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from sklearn.datasets import load_iris

from mlship import names
from mlship.mlflow_io.compiled import COMPILED, SKLEARN
from mlship.serving.config import load_config
from mlship.serving.model import load_model
from mlship.serving.protocol import Table, parse_invocation

pytestmark = pytest.mark.integration

ROWS = load_iris(as_frame=True).frame.drop(columns="target")


@pytest.fixture(autouse=True)
def tracking(mlflow_here: str) -> None:
    """As serving's pod has it."""


def served(mlflow_server: str, name: str, version: str):
    return load_model(load_config({"MLFLOW_TRACKING_URI": mlflow_server,
                                   "MLSHIP_MODEL_NAME": name, "MLSHIP_MODEL_VERSION": version}))


def tables(model, frame: pd.DataFrame, size: int) -> list[Table]:
    out = []
    for start in range(0, len(frame), size):
        part = frame.iloc[start:start + size]
        body = orjson.dumps({"dataframe_split": part.to_dict(orient="split", index=False)})
        parsed = parse_invocation(body, "application/json", model.columns)
        assert isinstance(parsed, Table)
        out.append(parsed)
    return out


def test_a_version_whose_parity_held_is_scored_by_its_compiled_form(iris_pipeline, mlflow_server):
    name, version = iris_pipeline["model"], iris_pipeline["register"]["version"]
    model = served(mlflow_server, name, version)
    assert model.info.predictor == COMPILED and model.fast is not None
    assert model.info.predictor_reason_code == "parity_held"
    assert model.info.predictor_reason.startswith("parity held: 0 of 60 rows differ")
    meta = model.info.as_dict()
    assert (meta["predictor"], meta["predictor_reason_code"]) == ("compiled", "parity_held")

    batch = tables(model, ROWS, 7)  # 150 rows in requests of 7, scored as one batch
    got = np.concatenate([np.asarray(r) for r in model.predict_many(batch)])
    assert got.tolist() == model.pyfunc.predict(ROWS).tolist()
    one = model.predict_many(tables(model, ROWS.iloc[[100]], 1))
    assert np.asarray(one[0]).tolist() == model.pyfunc.predict(ROWS.iloc[[100]]).tolist()


@pytest.mark.parametrize(
    ("tags", "code", "reason"),
    [
        ({}, "no_record", f"the version has no {names.TAG_COMPILED} tag"),
        ({names.TAG_COMPILED: names.NOT_COMPILED,
          names.TAG_COMPILED_DETAIL: "not compiled: estimator X is not supported"},
         "not_compiled", "not compiled: estimator X is not supported"),
        ({names.TAG_COMPILED: names.PARITY_FAILED,
          names.TAG_COMPILED_DETAIL: "failed: 2 of 30 rows differ"},
         "parity_failed", "parity failed: 2 of 30 rows differ"),
        ({names.TAG_COMPILED: names.PARITY_HELD, names.TAG_COMPILED_DETAIL: "held: 0 of 30",
          names.TAG_COMPILED_URI: "runs:/0123456789abcdef0123456789abcdef/compiled"},
         "load_failed", "the compiled form could not be loaded: "),
    ],
    ids=["untagged", "not-compiled", "parity-failed", "unloadable"],
)
def test_any_other_version_is_scored_by_scikit_learn_saying_why(
    iris_pipeline, mlflow_server, tags, code, reason
):
    client = MlflowClient(mlflow_server)
    name, trn = iris_pipeline["model"], iris_pipeline["train"]
    other = client.create_model_version(
        name, source=trn["model_uri"], run_id=trn["run_id"],
        tags={**tags, names.TAG_RUN_KEY: f"it-{uuid.uuid4().hex[:6]}"},
        model_id=trn["model_uri"].removeprefix("models:/"),
    )
    model = served(mlflow_server, name, str(other.version))
    assert (model.info.predictor, model.fast) == (SKLEARN, None)
    assert model.info.predictor_reason_code == code
    assert model.info.predictor_reason.startswith(reason)
    got = np.asarray(model.predict_many(tables(model, ROWS.iloc[:5], 5))[0])
    assert got.tolist() == model.pyfunc.predict(ROWS.iloc[:5]).tolist()
