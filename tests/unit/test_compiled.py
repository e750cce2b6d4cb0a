"""Compiled predictions (mlship.ml.compiled): parity with the scikit-learn pipeline for every
estimator of the registry, on held-out rows with missing numbers and unseen categories; what
cannot be compiled; the stored form."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris, load_wine
from sklearn.decomposition import PCA
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, StandardScaler

from mlship.ml import compiled, estimators
from mlship.ml.compiled import NotCompilable, check_parity, compile_pipeline

pytestmark = pytest.mark.unit

SMALL = {"random_forest": {"n_estimators": 25}, "gradient_boosting": {"n_estimators": 30}}


def with_gaps(frame: pd.DataFrame, seed: int) -> pd.DataFrame:
    """A categorical column (with missing values) derived from the first feature, and missing
    numbers in every numeric column."""
    rng = np.random.default_rng(seed)
    out = frame.copy()
    first = out.columns[0]
    out["grade"] = np.where(out[first] > out[first].median(), "high", "low")
    out.loc[rng.random(len(out)) < 0.3, "grade"] = "mid"
    out.loc[rng.random(len(out)) < 0.1, "grade"] = None
    for col in frame.columns:
        out.loc[rng.random(len(out)) < 0.08, col] = np.nan
    return out


def dataset(name: str) -> tuple[pd.DataFrame, pd.Series, str]:
    loaders = {"iris": load_iris, "wine": load_wine, "cancer": load_breast_cancer,
               "diabetes": load_diabetes}
    frame = loaders[name](as_frame=True).frame
    task = "regression" if name == "diabetes" else "classification"
    X, y = frame.drop(columns="target"), frame["target"]
    if name == "cancer":
        X = X.iloc[:, :6]  # binary: the sign-of-the-score paths
    return with_gaps(X, seed=len(name)), y, task


def holdout_with_surprises(X: pd.DataFrame) -> pd.DataFrame:
    """Held-out rows, then the same rows with every numeric value missing and unseen categories."""
    surprise = X.copy()
    numeric = [c for c in X.columns if c != "grade"]
    surprise[numeric] = np.nan
    surprise["grade"] = ["never-seen", None] * (len(X) // 2) + ["never-seen"] * (len(X) % 2)
    return pd.concat([X, surprise], ignore_index=True)


def fitted(name: str, task: str, X: pd.DataFrame, y: pd.Series, hp: dict | None = None) -> Pipeline:
    numeric = [c for c in X.columns if c != "grade"]
    params = SMALL.get(name, {}) if hp is None else hp
    model = estimators.model_pipeline(
        numeric, ["grade"], estimators.build_estimator(task, name, params, seed=3)
    )
    return model.fit(X, y)


def split(X: pd.DataFrame, y: pd.Series) -> tuple[pd.DataFrame, pd.Series, pd.DataFrame]:
    train = np.arange(len(X)) % 4 != 0
    return X[train], y[train], X[~train].reset_index(drop=True)


CASES = [
    (ds, name)
    for ds in ("iris", "wine", "cancer", "diabetes")
    for name in estimators.names("regression" if ds == "diabetes" else "classification")
]


@pytest.mark.parametrize(("ds", "name"), CASES)
def test_parity_on_held_out_rows_with_missing_numbers_and_unseen_categories(ds, name):
    X, y, task = dataset(ds)
    Xt, yt, holdout = split(X, y)
    model = fitted(name, task, Xt, yt)
    fast = compile_pipeline(model, task)
    rows = holdout_with_surprises(holdout)

    parity = check_parity(model, fast, rows, task)

    assert parity.held, parity.summary()
    assert (parity.rows, parity.mismatches, parity.verdict) == (len(rows), 0, "held")
    if task == "classification":
        assert (fast.predict(rows) == model.predict(rows)).all()
        np.testing.assert_allclose(
            fast.predict_proba(rows), model.predict_proba(rows), rtol=0, atol=1e-12
        )
    else:
        np.testing.assert_allclose(fast.predict(rows), model.predict(rows), rtol=1e-12, atol=0)


def test_the_default_forest_gives_the_same_probabilities_bit_for_bit():
    """Trees compare float32 features with float64 thresholds and are added in sklearn's order."""
    X, y, task = dataset("iris")
    model = fitted("random_forest", task, X, y, hp={})  # 100 trees, as registered
    fast = compile_pipeline(model, task)
    rows = holdout_with_surprises(X)
    assert np.array_equal(fast.predict_proba(rows), model.predict_proba(rows))
    assert np.array_equal(fast.predict(rows), model.predict(rows))


def test_one_row_and_a_mapping_of_columns_score_as_a_data_frame_does():
    X, y, task = dataset("wine")
    model = fitted("gradient_boosting", task, X, y)
    fast = compile_pipeline(model, task)
    for i in range(5):
        row = X.iloc[[i]]
        columns = {c: row[c].tolist() for c in X.columns}  # plain lists, as serving holds them
        assert fast.predict(columns).tolist() == model.predict(row).tolist()
    with pytest.raises(ValueError, match="column 'grade' is missing"):
        fast.predict({c: [1.0] for c in X.columns if c != "grade"})


def test_string_classes_and_numeric_categories():
    rng = np.random.default_rng(1)
    X = pd.DataFrame({"x": rng.normal(size=80), "code": rng.integers(0, 3, size=80)})
    y = np.where(X["x"] + (X["code"] == 2) > 0.3, "yes", "no")
    model = Pipeline([
        ("preprocess", ColumnTransformer([
            ("numeric", StandardScaler(), ["x"]),
            ("categorical", OneHotEncoder(handle_unknown="ignore"), ["code"]),
        ])),
        ("model", LogisticRegression()),
    ]).fit(X, y)
    fast = compile_pipeline(model, "classification")
    rows = pd.DataFrame({"x": [0.1, -2.0, 3.0], "code": [2, 7, 0]})
    assert fast.predict(rows).tolist() == model.predict(rows).tolist()
    assert fast.classes == ["no", "yes"]


def test_an_unknown_category_is_refused_when_the_encoder_refuses_it():
    X = pd.DataFrame({"c": ["a", "b", "a", "b"], "x": [1.0, 2.0, 3.0, 4.0]})
    model = Pipeline([
        ("preprocess", ColumnTransformer([("categorical", OneHotEncoder(handle_unknown="error"), ["c"])])),
        ("model", Ridge()),
    ]).fit(X, [1.0, 2.0, 3.0, 4.0])
    fast = compile_pipeline(model, "regression")
    known = pd.DataFrame({"c": ["b"]})
    assert fast.predict(known).tolist() == model.predict(known).tolist()
    with pytest.raises(ValueError, match="unknown categories"):
        model.predict(pd.DataFrame({"c": ["z"]}))
    with pytest.raises(ValueError, match=r"unknown categories \['z'\] in column 'c'"):
        fast.predict(pd.DataFrame({"c": ["z"]}))


def test_infinity_is_refused_as_scikit_learn_refuses_it():
    X, y, task = dataset("diabetes")
    model = fitted("ridge", task, X, y)
    rows = X.iloc[:2].copy()
    rows.iloc[0, 0] = np.inf
    with pytest.raises(ValueError, match="infinity"):
        model.predict(rows)
    with pytest.raises(ValueError, match="infinity"):
        compile_pipeline(model, task).predict(rows)


# --- what is not compiled ----------------------------------------------------------------------


def numeric_pipeline(numeric_steps: list, estimator, **ct) -> Pipeline:
    X = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0, 4.0, 5.0], "b": [1.0, 0.0, 1.0, 0.0, 1.0, 0.0]})
    y = [0, 0, 1, 1, 1, 0]
    transformers = [("numeric", Pipeline(numeric_steps), ["a"])]
    return Pipeline([("preprocess", ColumnTransformer(transformers, **ct)), ("model", estimator)]).fit(X, y)


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (numeric_pipeline([("s", StandardScaler())], KNeighborsClassifier(n_neighbors=1)),
         "estimator KNeighborsClassifier is not supported"),
        (numeric_pipeline([("s", MinMaxScaler())], LogisticRegression()),
         "ColumnTransformer part 'numeric': step MinMaxScaler is not supported"),
        (numeric_pipeline([("i", SimpleImputer(add_indicator=True))], LogisticRegression()),
         r"SimpleImputer\(add_indicator=True\) is not supported"),
        (numeric_pipeline([("i", SimpleImputer(missing_values=-1.0))], LogisticRegression()),
         r"SimpleImputer\(missing_values=-1.0\): only NaN is supported"),
        (numeric_pipeline([("s", StandardScaler())], LogisticRegression(), remainder="passthrough"),
         r"ColumnTransformer\(remainder='passthrough'\) is not supported"),
        (Pipeline([("s", StandardScaler()), ("pca", PCA(1)), ("m", Ridge())])
         .fit([[0.0, 1], [1, 0], [2, 2]], [1, 2, 3]),
         "the pipeline has 3 steps \\(StandardScaler, PCA, Ridge\\)"),
        (Ridge().fit([[0.0], [1.0]], [0.0, 1.0]), "the model is a Ridge, not a scikit-learn Pipeline"),
    ],
    ids=["estimator", "scaler", "indicator", "missing-marker", "remainder", "extra-step", "bare"],
)
def test_what_cannot_be_compiled_is_named(model, message):
    task = "regression" if "Ridge" in message else "classification"
    with pytest.raises(NotCompilable, match=message):
        compile_pipeline(model, task)


def test_an_encoder_option_it_cannot_repeat_is_named():
    X = pd.DataFrame({"c": ["u", "v", "u", "w", "v", "u"]})
    for encoder, message in [
        (OneHotEncoder(drop="first"), r"OneHotEncoder\(drop='first'\) is not supported"),
        (OneHotEncoder(min_frequency=2, handle_unknown="infrequent_if_exist"), "infrequent categories"),
    ]:
        model = Pipeline([("preprocess", ColumnTransformer([("cat", encoder, ["c"])])),
                          ("model", Ridge())]).fit(X, [1.0, 2, 3, 4, 5, 6])
        with pytest.raises(NotCompilable, match=message):
            compile_pipeline(model, "regression")


def test_a_classifier_is_not_compiled_for_regression():
    X, y, _ = dataset("iris")
    with pytest.raises(NotCompilable, match="estimator RandomForestClassifier does not do regression"):
        compile_pipeline(fitted("random_forest", "classification", X, y), "regression")


# --- storage and the parity figures ------------------------------------------------------------


@pytest.mark.parametrize(("ds", "name"), [("iris", "random_forest"), ("cancer", "gradient_boosting"),
                                          ("wine", "logistic_regression"), ("diabetes", "linear")])
def test_saved_and_loaded_it_predicts_the_same_and_holds_only_json_and_numbers(tmp_path, ds, name):
    X, y, task = dataset(ds)
    model = fitted(name, task, X, y)
    fast = compile_pipeline(model, task)
    fast.save(tmp_path / "compiled")

    manifest = json.loads((tmp_path / "compiled" / compiled.MANIFEST).read_text())
    assert manifest["format"] == compiled.FORMAT and manifest["task"] == task
    with np.load(tmp_path / "compiled" / compiled.ARRAYS, allow_pickle=False) as npz:
        assert all(npz[k].dtype != object for k in npz.files)
    again = compiled.CompiledPredictor.load(tmp_path / "compiled")
    rows = holdout_with_surprises(X)
    assert np.array_equal(again.predict(rows), fast.predict(rows))
    assert check_parity(model, again, rows, task).held


def test_a_predictor_of_another_format_is_refused():
    with pytest.raises(ValueError, match="not a compiled predictor"):
        compiled.CompiledPredictor({"format": "something/2"}, {})


def test_parity_counts_the_rows_that_differ():
    X, y, task = dataset("diabetes")
    model = fitted("ridge", task, X, y)
    fast = compile_pipeline(model, task)
    fast.arrays["intercept"] = fast.arrays["intercept"] + 1e-6  # off by more than the tolerance
    parity = check_parity(model, fast, X, task)
    assert (parity.rows, parity.mismatches, parity.verdict) == (len(X), len(X), "failed")
    assert parity.max_abs_error == pytest.approx(1e-6, rel=1e-3)
    assert parity.summary().startswith(f"failed: {len(X)} of {len(X)} rows differ, max abs error 1e-06")

    fast.arrays["intercept"] = fast.arrays["intercept"] - 1e-6 + 1e-10  # inside it
    assert check_parity(model, fast, X, task).held


def test_parity_of_classes_counts_a_changed_class():
    X, y, task = dataset("iris")
    model = fitted("logistic_regression", task, X, y)
    fast = compile_pipeline(model, task)
    fast.arrays["intercept"] = fast.arrays["intercept"] + np.array([50.0, 0.0, 0.0])
    parity = check_parity(model, fast, X, task)
    assert parity.verdict == "failed"
    # a row differs when its class does or its probabilities do: here every row's probabilities
    assert (parity.mismatches, parity.rows) == (150, 150)
    assert int((fast.predict(X) != model.predict(X)).sum()) == int((model.predict(X) != 0).sum())
    assert check_parity(model, fast, X.iloc[:0], task).verdict == "failed"  # no rows: nothing held


@pytest.mark.parametrize("rows", [1, 7, 400])
def test_trees_that_learnt_where_missing_values_go_send_them_there(rows):
    """Without an imputer, sklearn's trees route NaN by the side learnt in training; each walk
    (one row, few rows, many rows with finished pairs dropped) does the same."""
    from sklearn.ensemble import RandomForestRegressor

    rng = np.random.default_rng(7)
    X = pd.DataFrame(rng.normal(size=(300, 3)), columns=["a", "b", "c"])
    X.loc[rng.random(300) < 0.2, "b"] = np.nan
    y = X["a"] * 2 + X["b"].fillna(5.0)
    model = Pipeline([
        ("preprocess", ColumnTransformer([("numeric", StandardScaler(), ["a", "b", "c"])])),
        ("model", RandomForestRegressor(n_estimators=10, random_state=0)),
    ]).fit(X, y)
    fast = compile_pipeline(model, "regression")
    test = pd.DataFrame(rng.normal(size=(rows, 3)), columns=["a", "b", "c"])
    test.loc[::2, "b"] = np.nan
    assert np.array_equal(fast.predict(test), model.predict(test))


def test_none_in_a_categorical_column_is_missing_as_in_a_frame_pandas_builds_from_columns():
    """Serving holds columns and builds its DataFrame from them: pandas makes such a string
    column its str dtype, where None is NaN, which the imputer fills. The compiled form does
    the same with the columns themselves."""
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"x": rng.normal(size=60), "grade": rng.choice(["a", "b", "c"], size=60)})
    X.loc[::5, "grade"] = None
    y = (X["x"] > 0).astype(int) + (X["grade"] == "a")
    model = fitted("logistic_regression", "classification", X, y)
    fast = compile_pipeline(model, "classification")
    cols = {"x": np.array([0.1, 0.2, -0.3, 1.0, 0.0]),
            "grade": np.array(["a", None, "zz", "b", np.nan], dtype=object)}
    frame = pd.DataFrame(cols)
    assert pd.api.types.is_string_dtype(frame["grade"]) and frame["grade"].isna().sum() == 2
    assert fast.predict(cols).tolist() == model.predict(frame).tolist()
    assert np.array_equal(fast.predict_proba(cols), model.predict_proba(frame))
