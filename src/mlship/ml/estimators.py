"""The estimators a pipeline may train, and the preprocessing saved with them.

The model that is logged is one scikit-learn Pipeline: preprocessing + estimator, so serving
feeds it raw feature columns and needs no feature code of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sklearn.base import BaseEstimator
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from mlship.errors import BadInput


@dataclass(frozen=True)
class EstimatorSpec:
    cls: Callable[..., BaseEstimator]
    seeded: bool  # takes random_state
    defaults: dict[str, Any]


REGISTRY: dict[str, dict[str, EstimatorSpec]] = {
    "classification": {
        "random_forest": EstimatorSpec(RandomForestClassifier, True, {"n_estimators": 100}),
        "gradient_boosting": EstimatorSpec(GradientBoostingClassifier, True, {}),
        "logistic_regression": EstimatorSpec(LogisticRegression, True, {"max_iter": 1000}),
    },
    "regression": {
        "random_forest": EstimatorSpec(RandomForestRegressor, True, {"n_estimators": 100}),
        "gradient_boosting": EstimatorSpec(GradientBoostingRegressor, True, {}),
        "ridge": EstimatorSpec(Ridge, False, {}),
        "linear": EstimatorSpec(LinearRegression, False, {}),
    },
}
DEFAULT_ESTIMATOR = {"classification": "random_forest", "regression": "ridge"}

# What a hyperparameter search tries when the trigger form's `tune_space` is empty: a few values
# of each estimator's most telling hyperparameters, by estimator name (the same parameters for
# both tasks). Small on purpose: a grid of each is at most 27 trials.
# tests/unit/test_estimators.py holds every name here to the estimator's parameters.
DEFAULT_SPACES: dict[str, dict[str, list[Any]]] = {
    "random_forest": {
        "n_estimators": [50, 100, 200], "max_depth": [None, 5, 10], "min_samples_leaf": [1, 2, 4],
    },
    "gradient_boosting": {
        "n_estimators": [50, 100, 200], "learning_rate": [0.03, 0.1, 0.3], "max_depth": [2, 3, 4],
    },
    "logistic_regression": {"C": [0.01, 0.1, 1.0, 10.0, 100.0]},
    "ridge": {"alpha": [0.01, 0.1, 1.0, 10.0, 100.0]},
    "linear": {"fit_intercept": [True, False]},
}

# Types outside skops' built-in safe list that the models built here contain, found with
# skops.io.get_untrusted_types on every registry entry (tests/unit/test_estimators.py keeps this
# honest). This is the explicit allow-list handed to MLflow's skops serializer: see
# steps/train.py for why skops and not (cloud)pickle.
SKOPS_TRUSTED_TYPES: list[str] = ["numpy.dtype", "sklearn.tree._tree.Tree"]


class EstimatorError(BadInput):
    """Unknown estimator or hyperparameter, named in the message."""


def names(task: str) -> list[str]:
    return sorted(REGISTRY.get(task, {}))


def build_estimator(
    task: str, name: str, hyperparameters: dict[str, Any] | None, seed: int
) -> BaseEstimator:
    if task not in REGISTRY:
        raise EstimatorError(f"unknown task {task!r}; choose classification or regression")
    spec = REGISTRY[task].get(name)
    if spec is None:
        raise EstimatorError(
            f"unknown estimator {name!r} for {task}; choose one of: {', '.join(names(task))}"
        )
    params = {**spec.defaults, **(hyperparameters or {})}
    estimator = spec.cls()
    valid = estimator.get_params()
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise EstimatorError(
            f"estimator {name!r} has no hyperparameter(s) {', '.join(unknown)}"
        )
    if spec.seeded and "random_state" not in params:
        params["random_state"] = seed
    estimator.set_params(**params)
    return estimator


def preprocessor(numeric: list[str], categorical: list[str]) -> ColumnTransformer:
    parts = []
    if numeric:
        parts.append(
            (
                "numeric",
                Pipeline(
                    [("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]
                ),
                numeric,
            )
        )
    if categorical:
        parts.append(
            (
                "categorical",
                Pipeline(
                    [
                        ("impute", SimpleImputer(strategy="most_frequent")),
                        ("onehot", OneHotEncoder(handle_unknown="ignore")),
                    ]
                ),
                categorical,
            )
        )
    return ColumnTransformer(parts, remainder="drop")


def model_pipeline(
    numeric: list[str], categorical: list[str], estimator: BaseEstimator
) -> Pipeline:
    return Pipeline([("preprocess", preprocessor(numeric, categorical)), ("model", estimator)])
