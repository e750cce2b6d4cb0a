"""Estimator registry, preprocessing and the skops allow-list."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import skops.io as sio

from mlship.ml import estimators
from mlship.ml.estimators import EstimatorError, build_estimator, model_pipeline

pytestmark = pytest.mark.unit


def small(task: str) -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(0)
    X = pd.DataFrame(
        {"n1": rng.normal(size=40), "n2": rng.normal(size=40), "c": ["a", "b"] * 20}
    )
    X.loc[3, "n1"] = np.nan  # the imputer is part of the saved pipeline
    y = (X["n2"] > 0).astype(int) if task == "classification" else X["n2"] * 3.0
    return X, y


ALL = [(t, n) for t, names in estimators.REGISTRY.items() for n in names]


@pytest.mark.parametrize(("task", "name"), ALL)
def test_every_estimator_fits_and_needs_only_the_trusted_types(task, name):
    X, y = small(task)
    hp = {"n_estimators": 5} if "forest" in name or "boosting" in name else {}
    model = model_pipeline(["n1", "n2"], ["c"], build_estimator(task, name, hp, seed=1))
    model.fit(X, y)
    assert len(model.predict(X)) == len(X)
    untrusted = set(sio.get_untrusted_types(data=sio.dumps(model)))
    assert untrusted <= set(estimators.SKOPS_TRUSTED_TYPES), untrusted - set(
        estimators.SKOPS_TRUSTED_TYPES
    )


def test_trusted_types_are_minimal():
    needed: set[str] = set()
    for task, name in ALL:
        X, y = small(task)
        model = model_pipeline(["n1", "n2"], ["c"], build_estimator(task, name, {}, seed=1))
        needed |= set(sio.get_untrusted_types(data=sio.dumps(model.fit(X, y))))
    assert needed == set(estimators.SKOPS_TRUSTED_TYPES)


def test_seed_and_hyperparameters_are_applied():
    est = build_estimator("classification", "random_forest", {"max_depth": 3}, seed=7)
    assert est.get_params()["random_state"] == 7
    assert est.get_params()["max_depth"] == 3
    assert est.get_params()["n_estimators"] == 100
    explicit = build_estimator("classification", "random_forest", {"random_state": 1}, seed=7)
    assert explicit.get_params()["random_state"] == 1


@pytest.mark.parametrize(
    ("task", "name", "hp", "message"),
    [
        ("classification", "xgboost", {}, "unknown estimator 'xgboost' for classification; "
         "choose one of: gradient_boosting, logistic_regression, random_forest"),
        ("regression", "logistic_regression", {}, "unknown estimator 'logistic_regression'"),
        ("clustering", "kmeans", {}, "unknown task 'clustering'"),
        ("classification", "random_forest", {"depth": 3},
         "estimator 'random_forest' has no hyperparameter(s) depth"),
    ],
)
def test_bad_choices_are_named(task, name, hp, message):
    with pytest.raises(EstimatorError) as err:
        build_estimator(task, name, hp, seed=0)
    assert message in str(err.value)


def test_an_unknown_task_has_no_estimators():
    from mlship.ml import estimators

    assert estimators.names("ranking") == []
    assert estimators.names("regression") == sorted(estimators.REGISTRY["regression"])


# ------------------------------------------------------------------ boundaries (mutation testing)


@pytest.mark.parametrize(
    ("task", "name", "hp", "message"),
    [
        ("clustering", "kmeans", {}, "unknown task 'clustering'; choose classification or regression"),
        ("regression", "svm", {}, "unknown estimator 'svm' for regression; choose one of: "
         "gradient_boosting, linear, random_forest, ridge"),
        ("regression", "ridge", {"depth": 3, "alpha": 1.0, "beta": 2},
         "estimator 'ridge' has no hyperparameter(s) beta, depth"),
    ],
)
def test_bad_choices_in_full(task, name, hp, message):
    with pytest.raises(EstimatorError) as err:
        build_estimator(task, name, hp, seed=0)
    assert str(err.value) == message


def test_defaults_yield_to_hyperparameters_and_only_seeded_estimators_get_the_seed():
    forest = build_estimator("regression", "random_forest", {"n_estimators": 5}, seed=3).get_params()
    assert (forest["n_estimators"], forest["random_state"]) == (5, 3)
    logistic = build_estimator("classification", "logistic_regression", None, seed=3).get_params()
    assert logistic["max_iter"] == 1000
    assert build_estimator("regression", "ridge", {}, seed=3).get_params()["random_state"] is None
    boosting = build_estimator("classification", "gradient_boosting", {}, seed=4).get_params()
    assert boosting["random_state"] == 4


def test_preprocessing_imputes_scales_and_ignores_unknown_categories():
    train = pd.DataFrame({"n": [1.0, 2.0, 9.0, np.nan], "c": ["a", "a", "b", None], "extra": [0, 0, 0, 0]})
    pre = estimators.preprocessor(["n"], ["c"]).fit(train)
    out = pre.transform(pd.DataFrame({"n": [np.nan], "c": ["zzz"], "extra": [5]}))
    out = out.toarray() if hasattr(out, "toarray") else np.asarray(out)
    # the median (2.0) scaled with the training column after imputation (1, 2, 9, 2); unseen: zeros
    scaled = (2.0 - np.mean([1, 2, 9, 2])) / np.std([1, 2, 9, 2])
    assert out.tolist() == [[pytest.approx(scaled), 0.0, 0.0]]  # "extra" dropped
    filled = pre.transform(train.iloc[[3]])  # both values missing, as the training frame has them
    filled = filled.toarray() if hasattr(filled, "toarray") else np.asarray(filled)
    assert filled.tolist() == [[pytest.approx(scaled), 1.0, 0.0]]  # a missing category: the most frequent


def test_preprocessing_only_has_the_parts_it_needs():
    assert [name for name, _, _ in estimators.preprocessor(["n"], []).transformers] == ["numeric"]
    assert [name for name, _, _ in estimators.preprocessor([], ["c"]).transformers] == ["categorical"]
    assert estimators.preprocessor([], []).transformers == []
    steps = model_pipeline(["n"], [], build_estimator("regression", "linear", {}, seed=0)).named_steps
    assert list(steps) == ["preprocess", "model"]


def test_the_logged_pipeline_has_the_documented_shape():
    # The logged model is this Pipeline and a user who loads it reads its steps by these names
    # (mlship's compiled form goes by type), so renaming one is an interface change.
    pipe = model_pipeline(["n"], ["c"], build_estimator("regression", "linear", {}, seed=0))
    shape = {name: [(step, type(est).__name__) for step, est in part.steps]
             for name, part, _ in pipe.named_steps["preprocess"].transformers}
    assert shape == {
        "numeric": [("impute", "SimpleImputer"), ("scale", "StandardScaler")],
        "categorical": [("impute", "SimpleImputer"), ("onehot", "OneHotEncoder")],
    }
    assert pipe.named_steps["preprocess"].remainder == "drop"


def test_the_pipeline_preprocesses_both_kinds_of_columns():
    pipe = model_pipeline(["n"], ["c"], build_estimator("regression", "linear", {}, seed=0))
    assert [(name, cols) for name, _, cols in pipe.named_steps["preprocess"].transformers] == [
        ("numeric", ["n"]), ("categorical", ["c"])]


@pytest.mark.parametrize(("task", "name"), ALL)
def test_every_estimator_has_a_default_search_space_of_its_own_parameters(task, name):
    space = estimators.DEFAULT_SPACES[name]
    assert space and all(isinstance(v, list) and v for v in space.values())
    for key, values in space.items():
        for value in values:  # every value builds (the names are checked here; fit checks values)
            build_estimator(task, name, {key: value}, seed=1)
    assert set(estimators.DEFAULT_SPACES) == {n for _, n in ALL}
