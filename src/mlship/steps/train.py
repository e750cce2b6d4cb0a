"""train: fit preprocessing + estimator as one scikit-learn Pipeline; log it with its signature.

Result: model_uri (models:/<model id>, resolvable through the tracking server), run_id.
After a hyperparameter search (mlship.steps.tune) the best trial's hyperparameters come in
--tuned-hyperparameters and replace --hyperparameters (they already hold its values).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import mlflow
import mlflow.sklearn
import pandas as pd
from mlflow.models import infer_signature

from mlship import contract
from mlship.errors import BadInput
from mlship.ml import estimators, features, metrics
from mlship.mlflow_io import tracking
from mlship.steps import common

STEP = "train"


def build() -> argparse.ArgumentParser:
    p = common.parser(STEP, __doc__.splitlines()[0])
    p.add_argument("--train-uri", required=True, help="runs:/ URI of featurize's train.parquet")
    p.add_argument("--features-uri", required=True, help="runs:/ URI of features.json")
    p.add_argument(
        "--estimator", default=contract.default(STEP, "--estimator"),
        help="classification: random_forest|gradient_boosting|logistic_regression; "
        "regression: ridge|linear|random_forest|gradient_boosting; auto: per task default",
    )
    p.add_argument(
        "--hyperparameters", type=common.json_arg, default=contract.default(STEP, "--hyperparameters"),
        help='estimator parameters as JSON or @file.json, e.g. \'{"n_estimators": 200}\'',
    )
    p.add_argument(
        "--seed", type=int, default=contract.default(STEP, "--seed"),
        help="estimator seed (default: %(default)s)",
    )
    p.add_argument(
        "--tuned-hyperparameters", type=common.json_arg, default=None,
        help="the hyperparameter search's best (tune best's result), JSON; null or absent: no "
        "search ran, --hyperparameters are used",
    )
    return p


def log_model(model: Any, X: pd.DataFrame) -> mlflow.models.model.ModelInfo:
    example = X.head(5)
    # Serialization: skops, MLflow's default, with an explicit allow-list instead of (cloud)pickle.
    # Pickle formats run arbitrary code on load, and a serving pod loads whatever the registry
    # alias points at; skops loads only allow-listed types. Tree models hold
    # sklearn.tree._tree.Tree, which skops does not trust by default, and MLflow re-loads the
    # model at save time with the given list, so an incomplete list fails here, in training,
    # rather than in serving. The list is the minimal one our registry needs (a unit test checks
    # it against skops.io.get_untrusted_types); it is stored in MLmodel, where
    # mlflow.pyfunc.load_model reads it in any fresh process.
    info: mlflow.models.model.ModelInfo = mlflow.sklearn.log_model(
        model,
        name="model",
        signature=infer_signature(example, model.predict(example)),
        input_example=example,
        serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_SKOPS,
        skops_trusted_types=estimators.SKOPS_TRUSTED_TYPES,
        # Explicit requirements: inferring them re-imports the model in a subprocess (slow) and
        # the serving image pins its own environment anyway.
        pip_requirements=mlflow.sklearn.get_default_pip_requirements(include_skops=True),
    )
    return info


def body(args: argparse.Namespace) -> dict[str, Any]:
    if not isinstance(args.hyperparameters, dict):
        raise BadInput("--hyperparameters must be a JSON object")
    tuned = args.tuned_hyperparameters
    if tuned is not None and not isinstance(tuned, dict):
        raise BadInput("--tuned-hyperparameters must be a JSON object or null")
    hyperparameters = args.hyperparameters if tuned is None else tuned
    client = tracking.connect(args.tracking_uri)
    with tracking.step_run(client, args.experiment, args.pipeline_run_key, STEP) as (_, run):
        spec = features.FeatureSpec.from_dict(
            json.loads(tracking.fetch(args.features_uri).read_text())
        )
        name = args.estimator
        if name == "auto":
            name = estimators.DEFAULT_ESTIMATOR[spec.task]
        estimator = estimators.build_estimator(spec.task, name, hyperparameters, args.seed)
        train = pd.read_parquet(tracking.fetch(args.train_uri))
        X, y = train[spec.columns], train[spec.target]
        model = estimators.model_pipeline(spec.numeric, spec.categorical, estimator)
        model.fit(X, y)
        mlflow.log_params(
            {
                "estimator": name,
                "task": spec.task,
                "seed": args.seed,
                "hyperparameters": json.dumps(hyperparameters, sort_keys=True),
                "tuned": tuned is not None,
                **{f"hp.{k}": v for k, v in hyperparameters.items()},
            }
        )
        train_scores = metrics.finite(metrics.evaluate(spec.task, model, X, y))
        mlflow.log_metrics({f"train_{k}": v for k, v in train_scores.items()})
        info = log_model(model, X)
    return {
        "model_uri": info.model_uri,
        "estimator": name,
        "run_id": run.info.run_id,
        "train_metrics": train_scores,
    }


def main(argv: list[str] | None = None) -> int:
    return common.run(STEP, build, body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
