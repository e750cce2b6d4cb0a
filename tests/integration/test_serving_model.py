"""ServedModel on a real MLflow-saved pipeline: batching, failure isolation, self-test input."""

from __future__ import annotations

from pathlib import Path

import mlflow.sklearn
import numpy as np
import orjson
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from mlship.serving.config import load_config
from mlship.serving.model import PredictionFailed, load_model, self_test_input
from mlship.serving.protocol import BadRequest, Table, parse_invocation

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Colour (categorical, unknown categories are an error) and size -> label."""
    X = pd.DataFrame({"colour": ["red", "blue", "red", "blue"], "size": [1.0, 2.0, 3.0, 4.0]})
    y = [0, 1, 0, 1]
    encode = ColumnTransformer(
        [("colour", OneHotEncoder(handle_unknown="error"), ["colour"])], remainder="passthrough"
    )
    pipeline = Pipeline([("encode", encode), ("clf", LogisticRegression())]).fit(X, y)
    path = tmp_path_factory.mktemp("model") / "colours"
    mlflow.sklearn.save_model(pipeline, path, input_example=X.head(2))
    return path


def split_body(frame: pd.DataFrame) -> bytes:
    return orjson.dumps({"dataframe_split": frame.to_dict(orient="split", index=False)})


def table(model, records: list[dict]) -> Table:
    parsed = parse_invocation(split_body(pd.DataFrame(records)), "application/json", model.columns)
    assert isinstance(parsed, Table)
    return parsed


def test_loads_a_local_model_with_its_signature_and_example(model_dir: Path) -> None:
    model = load_model(load_config({"MLSHIP_MODEL_URI": str(model_dir)}))
    assert [(c.name, c.kind) for c in model.columns] == [("colour", "string"), ("size", "double")]
    body, content_type = self_test_input(model)
    assert content_type == "application/json"
    assert b'"dataframe_split"' in body  # MLflow's serving_input_example.json
    assert model.info.name == "colours" and model.info.version == ""


def test_one_model_call_for_a_batch_split_back_per_request(model_dir: Path) -> None:
    model = load_model(load_config({"MLSHIP_MODEL_URI": str(model_dir)}))
    calls = []
    predict = model.pyfunc.predict
    model.pyfunc.predict = lambda df: calls.append(len(df)) or predict(df)  # count, then predict
    a = table(model, [{"colour": "red", "size": 1.0}])
    b = table(model, [{"colour": "blue", "size": 4.0}, {"colour": "red", "size": 1.5}])
    results = model.predict_many([a, b])
    assert calls == [3]
    assert [np.asarray(r).tolist() for r in results] == [[0], [1, 0]]


def test_a_request_the_model_rejects_fails_alone(model_dir: Path) -> None:
    model = load_model(load_config({"MLSHIP_MODEL_URI": str(model_dir)}))
    good = table(model, [{"colour": "blue", "size": 4.0}])
    unknown = table(model, [{"colour": "green", "size": 2.0}])
    results = model.predict_many([good, unknown, good])
    assert np.asarray(results[0]).tolist() == [1] and np.asarray(results[2]).tolist() == [1]
    assert isinstance(results[1], PredictionFailed)
    assert "the model could not score this input" in str(results[1])
    assert "green" in str(results[1])


def test_without_a_signature_mlflows_parser_is_used(model_dir: Path, tmp_path: Path) -> None:
    X = pd.DataFrame({"colour": ["red", "blue"], "size": [1.0, 2.0]})
    pipeline = mlflow.sklearn.load_model(str(model_dir))
    path = tmp_path / "unsigned"
    mlflow.sklearn.save_model(pipeline, path, signature=False)
    model = load_model(load_config({"MLSHIP_MODEL_URI": str(path)}))
    assert model.columns is None
    with pytest.raises(Exception, match="neither an input example nor a column signature"):
        self_test_input(model)
    parsed = parse_invocation(split_body(X), "application/json", None)
    (result,) = model.predict_many([parsed])
    assert np.asarray(result).tolist() == [0, 1]
    bad = parse_invocation(b'{"dataframe_split": {"data": 3}}', "application/json", None)
    (error,) = model.predict_many([bad])
    assert isinstance(error, BadRequest | PredictionFailed)
