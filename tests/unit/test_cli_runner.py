"""`mlship run` builds the same flags the step CLIs accept."""

from __future__ import annotations

import importlib

import pytest

from mlship import cli

pytestmark = pytest.mark.unit

RESULTS = {
    "ingest": {"dataset_uri": "runs:/i/data/dataset.parquet", "task": "regression",
               "dataset_digest": "ab" * 16, "dataset_name": "houses"},
    "featurize": {"train_uri": "runs:/f/features/train.parquet",
                  "holdout_uri": "runs:/f/features/holdout.parquet",
                  "features_uri": "runs:/f/features/features.json"},
    "train": {"model_uri": "models:/m-1"},
    "evaluate": {"evaluation_uri": "runs:/e/evaluation/evaluation.json"},
}


@pytest.mark.parametrize("step", cli.STEPS)
def test_runner_flags_parse_with_each_step_cli(step):
    args = cli.build_parser().parse_args([
        "run", "--dataset", "data/houses.csv", "--target", "price", "--estimator", "ridge",
        "--hyperparameters", '{"alpha": 0.5}', "--threshold", "0.3", "--no-auto-promote",
    ])
    flags = cli.step_commands(args, RESULTS)[step]
    common = ["--pipeline-run-key", "local-1", "--tracking-uri", "http://x:5000"]
    parsed = importlib.import_module(f"mlship.steps.{step}").build().parse_args(common + flags)
    if step == "ingest":
        assert (parsed.source, parsed.target, parsed.task) == ("data/houses.csv", "price", "auto")
    if step in ("validate", "featurize"):
        assert parsed.task == "regression"  # from ingest's result, not the "auto" flag
    if step == "train":
        assert parsed.hyperparameters == {"alpha": 0.5} and parsed.estimator == "ridge"
    if step == "register":
        assert parsed.model_name == "houses"  # defaults to the dataset's name
        assert parsed.auto_promote is False and parsed.threshold == 0.3
        assert parsed.dataset_digest == "ab" * 16


def test_summary_points_at_the_champion_and_the_ui():
    reg = {"model_name": "iris", "version": "3", "aliases": ["challenger", "champion"],
           "reason": "beats champion v2", "already_registered": False}
    ing = {"dataset_name": "iris", "dataset_digest": "d" * 32}
    text = cli.summary("sqlite:////w/.mlship/mlflow.db", reg, ing)
    assert "model:    iris version 3" in text
    assert "models:/iris@champion" in text
    assert "mlflow ui --backend-store-uri sqlite:////w/.mlship/mlflow.db" in text
    rejected = cli.summary("http://mlflow:5000", {**reg, "aliases": []}, ing)
    assert "aliases:  none" in rejected and "models:/iris/3" in rejected
