"""Holdout metrics per task, and which direction is better for each."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from sklearn import metrics as skm

CLASSIFICATION_METRICS = ("accuracy", "f1", "roc_auc")
REGRESSION_METRICS = ("rmse", "mae", "r2")
HIGHER_IS_BETTER: dict[str, bool] = {
    "accuracy": True, "f1": True, "roc_auc": True, "rmse": False, "mae": False, "r2": True,
}
DEFAULT_METRIC = {"classification": "accuracy", "regression": "r2"}


def metric_names(task: str) -> tuple[str, ...]:
    return CLASSIFICATION_METRICS if task == "classification" else REGRESSION_METRICS


def check_metric(task: str, metric: str) -> str:
    if metric not in metric_names(task):
        choices = ", ".join(metric_names(task))
        raise ValueError(f"metric {metric!r} is not a {task} metric; choose one of {choices}")
    return metric


def classification_metrics(model: Any, X: Any, y: Any) -> dict[str, float]:
    pred = model.predict(X)
    out = {
        "accuracy": float(skm.accuracy_score(y, pred)),
        "f1": float(skm.f1_score(y, pred, average="macro")),
    }
    out["roc_auc"] = _roc_auc(model, X, y)
    return out


def _roc_auc(model: Any, X: Any, y: Any) -> float:
    """Macro one-vs-rest ROC-AUC; NaN when undefined (no probabilities, one class in y)."""
    if not hasattr(model, "predict_proba"):
        return math.nan
    classes = list(getattr(model, "classes_", []))
    present = set(np.unique(y))
    if len(present) < 2 or not present <= set(classes):
        return math.nan
    proba = model.predict_proba(X)
    if len(classes) == 2:
        return float(skm.roc_auc_score(y, proba[:, 1]))
    return float(skm.roc_auc_score(y, proba, multi_class="ovr", average="macro", labels=classes))


def regression_metrics(model: Any, X: Any, y: Any) -> dict[str, float]:
    pred = model.predict(X)
    return {
        "rmse": float(np.sqrt(skm.mean_squared_error(y, pred))),
        "mae": float(skm.mean_absolute_error(y, pred)),
        "r2": float(skm.r2_score(y, pred)),
    }


def evaluate(task: str, model: Any, X: Any, y: Any) -> dict[str, float]:
    if task == "classification":
        return classification_metrics(model, X, y)
    return regression_metrics(model, X, y)


def finite(metrics: dict[str, float]) -> dict[str, float]:
    """Only the defined values (MLflow rejects NaN in some stores, JSON has no NaN)."""
    return {k: v for k, v in metrics.items() if v is not None and math.isfinite(v)}
