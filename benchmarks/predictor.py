"""In-process prediction cost: scikit-learn's pipeline.predict against the compiled predictor
(mlship.ml.compiled), per estimator, for 1 row and 1,000 rows; and parity on a holdout.

    nice .venv/bin/python benchmarks/predictor.py [--rounds 3] [--seconds 0.2]

Every estimator of the registry with its registered defaults (forests of 100 trees), trained on
75 % of iris (classification) or diabetes (regression); parity on the other 25 %. Methods,
measured in turn within each round so that background load falls on all alike (medians of the
rounds are printed):

- sklearn: pipeline.predict(DataFrame)
- compiled df: CompiledPredictor.predict(DataFrame)
- compiled cols: CompiledPredictor.predict({column: numpy array}), what serving holds
- onnx: ONNX Runtime on skl2onnx's conversion (float32 inputs; its feeds built from the same
  columns), only when onnxruntime and skl2onnx import (they are not in the locked environment:
  e.g. `uv pip install onnxruntime skl2onnx` into a scratch venv, PYTHONPATH=src)
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from sklearn.datasets import load_diabetes, load_iris

from mlship.ml import compiled, estimators


def per_call(fn: Callable[[], Any], seconds: float) -> float:
    """Seconds per call: calls repeated for about `seconds`, after one warm-up call."""
    fn()
    n, start = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and n >= 3:
            return elapsed / n


def onnx_runner(model: Any, X: pd.DataFrame, task: str) -> Callable[[dict[str, Any]], Any] | None:
    try:
        import onnxruntime as ort
        from skl2onnx import to_onnx
        from skl2onnx.common.data_types import FloatTensorType
    except ImportError:
        return None
    # ONNX's Imputer takes float32 only, so every input is a float32 column
    types = [(c, FloatTensorType([None, 1])) for c in X.columns]
    options = {id(model.steps[-1][1]): {"zipmap": False}} if task == "classification" else None
    onx = to_onnx(model, initial_types=types, options=options, target_opset=18)
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    sess = ort.InferenceSession(onx.SerializeToString(), so, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]

    def run(cols: dict[str, Any]) -> Any:
        feeds = {n: np.asarray(cols[c], dtype=np.float32).reshape(-1, 1)
                 for n, c in zip(names, X.columns, strict=True)}
        return sess.run(None, feeds)[0].ravel()

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=0.2, help="per method, size and round")
    args = ap.parse_args()

    cases = []
    for loader, task in ((load_iris, "classification"), (load_diabetes, "regression")):
        frame = loader(as_frame=True).frame
        X, y = frame.drop(columns="target"), frame["target"]
        train = np.arange(len(X)) % 4 != 0
        for name in estimators.names(task):
            est = estimators.build_estimator(task, name, {}, seed=42)
            model = estimators.model_pipeline(list(X.columns), [], est).fit(X[train], y[train])
            fast = compiled.compile_pipeline(model, task)
            holdout = X[~train].reset_index(drop=True)
            parity = compiled.check_parity(model, fast, holdout, task)
            onnx = onnx_runner(model, X, task)
            onnx_parity = "-"
            if onnx is not None:
                got, want = onnx({c: holdout[c].to_numpy() for c in X.columns}), model.predict(holdout)
                onnx_parity = (f"{int((got != want).sum())} classes differ" if task == "classification"
                               else f"max abs err {float(np.max(np.abs(got - want))):.2g}")
            sizes = {}
            for rows in (1, 1000):
                df = X.iloc[np.arange(rows) % len(X)].reset_index(drop=True)
                sizes[rows] = (df, {c: df[c].to_numpy() for c in df.columns})
            cases.append((task, name, model, fast, onnx, parity, onnx_parity, sizes))

    methods = ["sklearn", "compiled df", "compiled cols", "onnx"]
    times: dict[tuple[str, str, int], list[float]] = {}
    load = os.getloadavg()[0]
    for _ in range(args.rounds):
        for task, name, model, fast, onnx, *_rest, sizes in cases:
            for rows, (df, cols) in sizes.items():
                calls: dict[str, Callable[[], Any]] = {
                    "sklearn": lambda m=model, d=df: m.predict(d),
                    "compiled df": lambda f=fast, d=df: f.predict(d),
                    "compiled cols": lambda f=fast, c=cols: f.predict(c),
                }
                if onnx is not None:
                    calls["onnx"] = lambda o=onnx, c=cols: o(c)
                for method, fn in calls.items():
                    times.setdefault((f"{task[:5]} {name}", method, rows), []).append(
                        per_call(fn, args.seconds))

    print(f"load average {load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end; "
          f"{args.rounds} rounds, medians; µs per call (rows/s)")
    header = "| estimator | rows | " + " | ".join(m for m in methods) + " | parity (compiled) | onnx |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for task, name, _m, _f, _o, parity, onnx_parity, sizes in cases:
        label = f"{task[:5]} {name}"
        for rows in sizes:
            cells = []
            for method in methods:
                got = times.get((label, method, rows))
                if not got:
                    cells.append("-")
                    continue
                s = statistics.median(got)
                cells.append(f"{s * 1e6:,.0f} ({rows / s:,.0f})")
            print(f"| {label} | {rows:,} | " + " | ".join(cells)
                  + f" | {parity.verdict}, {parity.mismatches}/{parity.rows}, "
                  f"max err {parity.max_abs_error:.2g} | {onnx_parity} |")


if __name__ == "__main__":
    main()
