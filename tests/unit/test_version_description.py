"""The sentence a model version carries as its MLflow description."""

from __future__ import annotations

import pytest

from mlship.ml import gate
from mlship.steps.register import version_description

pytestmark = pytest.mark.unit


def test_it_says_what_the_version_learned_from_how_it_scored_and_what_the_gate_decided() -> None:
    decision = gate.Decision(("challenger", "champion"), "accuracy 0.9737 meets the threshold")
    evaluation = {"task": "classification", "metrics": {"f1_macro": 0.97361, "accuracy": 0.97368}}
    assert version_description(
        "sklearn:iris", "3f2a9c1b7d4e6f80aa", evaluation, "accuracy", decision
    ) == (
        "Trained on sklearn:iris (digest 3f2a9c1b7d4e) as a classification model. On its holdout: "
        "accuracy 0.9737, f1_macro 0.9736. Gate on accuracy: accuracy 0.9737 meets the threshold."
    )  # the gate's metric first, the others after it by name


def test_metrics_that_could_not_be_computed_are_left_out() -> None:
    decision = gate.Decision((), "rmse could not be computed on the holdout: not promoted")
    evaluation = {"task": "regression", "metrics": {"rmse": None, "mae": 2.5}}
    text = version_description("data.csv", "ab", evaluation, "rmse", decision)
    assert "On its holdout: mae 2.5. Gate on rmse: rmse could not" in text
    nothing = version_description("data.csv", "ab", {"task": "regression", "metrics": {}}, "rmse",
                                  decision)  # fmt: skip
    assert "On its holdout: no metric could be computed." in nothing
