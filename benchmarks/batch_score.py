"""Batch scoring throughput (mlship.steps.score's scoring loop): rows per second and per minute for
the compiled predictor against scikit-learn's pipeline, on the same rows, in one interleaved run.

    nice .venv/bin/python benchmarks/batch_score.py [--rows 1000000] [--rounds 3]

The model is the pipeline's default classifier (a random forest of 100 trees, the registry's
defaults) trained on iris; the rows are iris resampled with noise. Each round scores all rows
with each method in turn (chunks of mlship.steps.score.CHUNK_ROWS, as the step does), so
background load falls on both alike; medians of the rounds are printed. Every round checks that
both methods give the same class for every row. Target (#14): >= 1 million rows a minute.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import pandas as pd
from sklearn.datasets import load_iris

from mlship.ml import compiled, estimators
from mlship.mlflow_io.compiled import Choice
from mlship.steps.score import CHUNK_ROWS, score


class _Pyfunc:
    """What score() calls on a loaded MLflow model: predict(DataFrame)."""

    def __init__(self, model: object) -> None:
        self.model = model

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        return self.model.predict(frame)  # type: ignore[attr-defined, no-any-return]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()

    iris = load_iris(as_frame=True)
    X, y = iris.data, iris.target
    model = estimators.model_pipeline(
        list(X.columns), [], estimators.build_estimator("classification", "random_forest", {}, seed=0)
    ).fit(X, y)
    fast = compiled.compile_pipeline(model, "classification")
    rng = np.random.default_rng(0)
    picks = rng.integers(0, len(X), args.rows)
    rows = X.iloc[picks].reset_index(drop=True) + rng.normal(0, 0.05, (args.rows, X.shape[1]))
    columns = list(X.columns)
    methods = {
        "compiled": Choice(fast, "parity_held", ""),
        "sklearn": Choice(None, "no_record", ""),
    }
    times: dict[str, list[float]] = {m: [] for m in methods}
    print(f"{args.rows:,} rows, {args.rounds} rounds, chunks of {CHUNK_ROWS:,}; "
          f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    for r in range(args.rounds):
        answers = {}
        for name, choice in methods.items():
            start = time.perf_counter()
            answers[name] = score(rows, _Pyfunc(model), choice, columns).to_numpy()
            times[name].append(time.perf_counter() - start)
        differ = int((answers["compiled"] != answers["sklearn"]).sum())
        print(f"round {r + 1}: " + ", ".join(f"{n} {times[n][-1]:.2f}s" for n in methods)
              + f"; rows that differ: {differ}")
    print(f"{'method':10} {'seconds':>8} {'rows/s':>12} {'rows/min':>14}")
    for name in methods:
        t = statistics.median(times[name])
        print(f"{name:10} {t:8.2f} {args.rows / t:12,.0f} {60 * args.rows / t:14,.0f}")
    ratio = statistics.median(times["sklearn"]) / statistics.median(times["compiled"])
    print(f"compiled / sklearn: {ratio:.1f}x; load average after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
