"""Holdout metrics on hand-checkable predictions (a model is anything with predict/predict_proba)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mlship.ml import metrics

pytestmark = pytest.mark.unit


X = object()  # the holdout features: a model must be asked about exactly these


class Fixed:
    """A "model" answering fixed predictions and, optionally, class probabilities."""

    def __init__(self, pred, proba=None, classes=None) -> None:
        self.pred = np.asarray(pred)
        if proba is not None:
            self.proba = np.asarray(proba, dtype=float)
            if classes is not None:
                self.classes_ = np.asarray(classes)

    def predict(self, features):
        assert features is X
        return self.pred

    def __getattr__(self, name):
        if name == "predict_proba" and "proba" in self.__dict__:
            def predict_proba(features):
                assert features is X
                return self.proba
            return predict_proba
        raise AttributeError(name)


def test_the_names_directions_and_defaults_the_gate_relies_on() -> None:
    assert metrics.metric_names("classification") == ("accuracy", "f1", "roc_auc")
    assert metrics.metric_names("regression") == ("rmse", "mae", "r2")
    assert metrics.HIGHER_IS_BETTER == {
        "accuracy": True, "f1": True, "roc_auc": True, "rmse": False, "mae": False, "r2": True}
    assert metrics.DEFAULT_METRIC == {"classification": "accuracy", "regression": "r2"}


def test_check_metric_names_the_choices() -> None:
    assert metrics.check_metric("regression", "mae") == "mae"
    with pytest.raises(ValueError) as info:
        metrics.check_metric("classification", "rmse")
    assert str(info.value) == (
        "metric 'rmse' is not a classification metric; choose one of accuracy, f1, roc_auc")


def test_classification_metrics_by_hand() -> None:
    y = [0, 0, 1, 1]
    model = Fixed([0, 1, 1, 1], proba=[[0.9, 0.1], [0.6, 0.4], [0.65, 0.35], [0.2, 0.8]], classes=[0, 1])
    got = metrics.evaluate("classification", model, X, y)
    # accuracy 3/4; F1 macro: class 0 (p 1, r 1/2) 2/3, class 1 (p 2/3, r 1) 4/5; ROC-AUC from
    # the class-1 column: 3 of the 4 (positive, negative) pairs ordered right
    assert got == pytest.approx({"accuracy": 0.75, "f1": (2 / 3 + 4 / 5) / 2, "roc_auc": 0.75})


def test_multiclass_roc_auc_is_macro_one_vs_rest() -> None:
    y = [0, 1, 2, 2]
    proba = [[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.05, 0.9, 0.05]]
    model = Fixed([0, 1, 2, 1], proba=proba, classes=[0, 1, 2])
    # one vs rest, pairs (positive, negative) ordered right: class 0 3/3, class 1 2/3 (row 4's
    # 0.9 beats row 2's 0.8), class 2 2/4 (row 4's 0.05 is below both negatives); mean 13/18
    assert metrics.classification_metrics(model, X, y)["roc_auc"] == pytest.approx((1 + 2 / 3 + 1 / 2) / 3)


@pytest.mark.parametrize(
    ("model", "y"),
    [
        (Fixed([0, 1]), [0, 1]),  # no predict_proba
        (Fixed([1, 1], proba=[[0.2, 0.8], [0.3, 0.7]], classes=[0, 1]), [1, 1]),  # one class in y
        (Fixed([0, 1], proba=[[0.2, 0.8], [0.3, 0.7]], classes=[0, 1]), [0, 2]),  # a class it never saw
    ],
)
def test_roc_auc_is_nan_when_undefined(model, y) -> None:
    assert math.isnan(metrics.classification_metrics(model, X, y)["roc_auc"])


def test_a_class_missing_from_the_holdout_or_unknown_classes_give_nan_not_an_error() -> None:
    three = Fixed([0, 1, 1, 0], proba=[[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.2, 0.7, 0.1], [0.6, 0.2, 0.2]],
                  classes=[0, 1, 2])
    with pytest.warns(UserWarning):  # sklearn's: class 2 has no positive sample
        assert math.isnan(metrics.classification_metrics(three, X, [0, 1, 1, 0])["roc_auc"])
    no_classes = Fixed([0, 1], proba=[[0.9, 0.1], [0.2, 0.8]])  # probabilities, but no classes_
    assert math.isnan(metrics.classification_metrics(no_classes, X, [0, 1])["roc_auc"])


def test_regression_metrics_by_hand() -> None:
    got = metrics.evaluate("regression", Fixed([1.0, 2.0, 5.0]), X, [1.0, 2.0, 3.0])
    # errors 0, 0, 2: RMSE sqrt(4/3), MAE 2/3; R2 = 1 - 4 / 2 (the variance sum of 1, 2, 3)
    assert got == pytest.approx({"rmse": math.sqrt(4 / 3), "mae": 2 / 3, "r2": -1.0})


def test_finite_drops_undefined_values_and_keeps_zero() -> None:
    assert metrics.finite({"a": 0.0, "b": math.nan, "c": math.inf, "d": None, "e": -2.5}) == {
        "a": 0.0, "e": -2.5}
