"""Compiled predictions: the fitted model pipeline as plain arrays, evaluated with numpy.

A model mlship trains is one scikit-learn Pipeline: a ColumnTransformer (numeric columns:
SimpleImputer + StandardScaler; categorical columns: SimpleImputer + OneHotEncoder) and one
estimator (a random forest or gradient boosting of trees, logistic regression, ridge or linear
regression). `compile_pipeline` reads the fitted parameters out of it into arrays; `predict`
repeats the same arithmetic in a few vectorised numpy operations, without scikit-learn's
per-call validation, which is nearly all of what one row costs.

Why our own evaluator and not ONNX Runtime (skl2onnx 1.20, onnxruntime 1.32): measured in one
interleaved in-process run on this 2-core machine (benchmarks/predictor.py; all figures in
benchmarks/README.md, "Compiled predictions"). For the 100-tree iris forest, one row:
scikit-learn 9.2 ms, this evaluator 55 us, ONNX Runtime 18 us; 1,000 rows: 8.2 ms, 3.8 ms,
1.4 ms. ONNX Runtime is faster on trees, but it fails parity: its Imputer takes float32 only,
so the whole graph runs in float32, and on diabetes' holdout the forest was off by up to 3.7,
gradient boosting by 2.1 and ridge/linear by 1.9e-5, where this evaluator is bit-identical to
scikit-learn on every estimator of the registry (classes, probabilities and values; max error 0).
Both are 50-500x faster than scikit-learn for one row, which is what serving mostly sees, and
ONNX Runtime would add ~100 MB (onnxruntime + onnx) to the serving image. So: our own. It
repeats scikit-learn's arithmetic in scikit-learn's order (trees compare the float32 feature with
the float64 threshold, as sklearn's Cython does; forests and boosting stages are added in
sklearn's order from the same start), so the results are identical, not merely close.

The compiled form is data, never code: `save` writes `predictor.json` (a manifest: columns,
categories, classes, the model's kind) and `arrays.npz` (numbers only; loaded with
allow_pickle=False), so serving can load a version's compiled form without trusting it.

Input: a pandas DataFrame or any mapping of column name to a 1-D sequence (serving's parsed
columns). In a categorical column None and NaN are missing and imputed, as in the DataFrame
pandas builds from such columns (its str dtype holds None as NaN); only a column forced to
pandas' object dtype would show scikit-learn a None, which it treats as an unknown category.

Anything it does not know how to compile raises NotCompilable, naming the step and the option.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from mlship import names
from mlship.errors import Explained

FORMAT = "mlship-compiled/1"
MANIFEST = "predictor.json"
ARRAYS = "arrays.npz"

RTOL = 1e-9
ATOL = 1e-9
"""Parity tolerance for regression values and class probabilities: |compiled - sklearn| <=
ATOL + RTOL * |sklearn| on every row (numpy.isclose). Classes must be identical."""

_ALL_NODES_LIMIT = 20_000
"""Below this many (rows x nodes), every node's test is computed at once before walking."""

_CHUNK_ELEMENTS = 32_768
"""Trees x rows walked at once: more rows are scored in chunks, so that the walk's index arrays
stay small enough to be reused from the allocator and the caches (measured: 1,000 rows through
300 trees at once spent most of their time faulting in fresh pages)."""

_COMPACT_DEPTH = 4
"""Trees deeper than this drop finished (tree, row) pairs while walking many rows."""

Columns = Mapping[str, Any]
"""What `predict` takes: a pandas DataFrame, or any mapping of column name to a 1-D sequence."""


class NotCompilable(Explained):
    """The pipeline holds a step or an option the compiler does not know; the message names it."""


# --- compiling ---------------------------------------------------------------------------------


def _name(obj: Any) -> str:
    return type(obj).__name__


def _steps(transformer: Any) -> list[Any]:
    from sklearn.pipeline import Pipeline

    if isinstance(transformer, Pipeline):
        return [step for _, step in transformer.steps if step not in (None, "passthrough")]
    return [transformer]


def _imputer(step: Any, where: str, categorical: bool) -> list[Any]:
    if step.add_indicator:
        raise NotCompilable(f"{where}: SimpleImputer(add_indicator=True) is not supported")
    missing = step.missing_values
    if not (isinstance(missing, float) and math.isnan(missing)):
        raise NotCompilable(f"{where}: SimpleImputer(missing_values={missing!r}): only NaN is supported")
    stats = list(step.statistics_)
    for value in stats:
        if not categorical and not np.isfinite(value):
            raise NotCompilable(f"{where}: SimpleImputer has a non-finite statistic ({value!r}): "
                                "a column was empty when fitted")
        if categorical and value is None or (isinstance(value, float) and math.isnan(value)):
            raise NotCompilable(f"{where}: SimpleImputer has no fill value for a column")
    return stats


def _plain(value: Any, where: str) -> Any:
    """A category or class as a JSON value (str, int, float, bool), or NotCompilable."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool | int | str) or (isinstance(value, float) and math.isfinite(value)):
        return value
    raise NotCompilable(f"{where}: the value {value!r} ({_name(value)}) cannot be stored")


def _block(name: str, transformer: Any, columns: Any, arrays: dict[str, NDArray[Any]]) -> dict[str, Any]:
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    where = f"ColumnTransformer part {name!r}"
    if transformer == "passthrough" or isinstance(transformer, str):
        raise NotCompilable(f"{where}: {transformer!r} columns are not supported")
    if not (isinstance(columns, list | tuple) and all(isinstance(c, str) for c in columns)):
        raise NotCompilable(f"{where}: columns must be a list of names, got {columns!r}")
    steps = _steps(transformer)
    key = f"block{len(arrays)}"
    if steps and isinstance(steps[-1], OneHotEncoder):
        *before, enc = steps
        fill: list[Any] | None = None
        for step in before:
            if not isinstance(step, SimpleImputer):
                raise NotCompilable(f"{where}: {_name(step)} before OneHotEncoder is not supported")
            fill = _imputer(step, where, categorical=True)
        if enc.drop_idx_ is not None:
            raise NotCompilable(f"{where}: OneHotEncoder(drop={enc.drop!r}) is not supported")
        if getattr(enc, "_infrequent_enabled", False):
            raise NotCompilable(f"{where}: OneHotEncoder with infrequent categories is not supported")
        if enc.handle_unknown not in ("ignore", "error", "infrequent_if_exist"):
            raise NotCompilable(f"{where}: OneHotEncoder(handle_unknown={enc.handle_unknown!r})")
        cats = [[_plain(v, where) for v in c] for c in enc.categories_]
        return {
            "kind": "onehot", "columns": list(columns),
            "fill": None if fill is None else [_plain(v, where) for v in fill],
            "categories": cats, "unknown": "error" if enc.handle_unknown == "error" else "ignore",
            "width": sum(len(c) for c in cats),
        }
    out: dict[str, Any] = {"kind": "numeric", "columns": list(columns), "ops": []}
    for i, step in enumerate(steps):
        if isinstance(step, SimpleImputer):
            arrays[f"{key}_{i}_fill"] = np.asarray(_imputer(step, where, False), dtype=np.float64)
            out["ops"].append(["fill", f"{key}_{i}_fill"])
        elif isinstance(step, StandardScaler):
            if step.with_mean:
                arrays[f"{key}_{i}_mean"] = np.asarray(step.mean_, dtype=np.float64)
                out["ops"].append(["sub", f"{key}_{i}_mean"])
            if step.with_std:
                arrays[f"{key}_{i}_scale"] = np.asarray(step.scale_, dtype=np.float64)
                out["ops"].append(["div", f"{key}_{i}_scale"])
        else:
            raise NotCompilable(f"{where}: step {_name(step)} is not supported")
    out["width"] = len(columns)
    arrays[f"{key}_marker"] = np.zeros(0)  # keeps block keys distinct however many ops
    return out


def _preprocess(ct: Any, arrays: dict[str, NDArray[Any]]) -> list[dict[str, Any]]:
    from sklearn.compose import ColumnTransformer

    if not isinstance(ct, ColumnTransformer):
        raise NotCompilable(f"the first step must be a ColumnTransformer, got {_name(ct)}")
    blocks = []
    for name, transformer, columns in ct.transformers_:
        if transformer == "drop" or (isinstance(columns, list | tuple) and not columns):
            continue
        if name == "remainder":
            raise NotCompilable(f"ColumnTransformer(remainder={ct.remainder!r}) is not supported")
        blocks.append(_block(name, transformer, columns, arrays))
    if not blocks:
        raise NotCompilable("the ColumnTransformer selects no columns")
    return blocks


def _trees(trees: list[Any], arrays: dict[str, NDArray[Any]], where: str) -> int:
    """Every tree's nodes, concatenated: feature, threshold, children (left, right interleaved,
    as doubled node indices), missing-goes-left, values; leaves point at themselves. Returns the
    deepest tree's depth."""
    feats, thrs, kids, mgl, vals, roots = [], [], [], [], [], []
    offset, depth = 0, 0
    for est in trees:
        t = est.tree_
        if t.n_outputs != 1:
            raise NotCompilable(f"{where}: multi-output trees are not supported")
        n = t.node_count
        leaf = t.children_left < 0
        idx = np.arange(n)
        left = 2 * (np.where(leaf, idx, t.children_left) + offset)
        right = 2 * (np.where(leaf, idx, t.children_right) + offset)
        feats.append(np.where(leaf, 0, t.feature).astype(np.intp))
        thrs.append(np.where(leaf, np.inf, t.threshold))
        kids.append(np.stack([left, right], axis=1).ravel())
        m = getattr(t, "missing_go_to_left", None)
        mgl.append(np.zeros(n, bool) if m is None else np.asarray(m, bool) & ~leaf)
        vals.append(t.value[:, 0, :])
        roots.append(offset)
        offset += n
        depth = max(depth, int(t.max_depth))
    arrays["feature"] = np.concatenate(feats)
    arrays["threshold"] = np.concatenate(thrs).astype(np.float64)
    arrays["children"] = np.concatenate(kids).astype(np.intp)
    arrays["missing_left"] = np.concatenate(mgl)
    arrays["roots"] = np.asarray(roots, dtype=np.intp)
    arrays["value"] = np.concatenate(vals).astype(np.float64)
    return depth


def _classes(est: Any, manifest: dict[str, Any], where: str) -> None:
    classes = est.classes_
    manifest["classes"] = [_plain(c, where) for c in classes]
    manifest["classes_dtype"] = "object" if classes.dtype == object else classes.dtype.str


def _model(est: Any, task: str, arrays: dict[str, NDArray[Any]]) -> dict[str, Any]:
    from sklearn.dummy import DummyClassifier, DummyRegressor
    from sklearn.ensemble import (
        GradientBoostingClassifier,
        GradientBoostingRegressor,
        RandomForestClassifier,
        RandomForestRegressor,
    )
    from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge

    where = f"estimator {_name(est)}"
    classifier = isinstance(est, RandomForestClassifier | GradientBoostingClassifier | LogisticRegression)
    regressor = isinstance(est, RandomForestRegressor | GradientBoostingRegressor | Ridge | LinearRegression)
    if not (classifier or regressor):
        raise NotCompilable(f"{where} is not supported")
    if (task == "classification") != classifier:
        raise NotCompilable(f"{where} does not do {task}")
    if getattr(est, "n_outputs_", 1) != 1 or np.ndim(getattr(est, "classes_", [])) != 1:
        raise NotCompilable(f"{where}: multi-output models are not supported")
    m: dict[str, Any] = {}
    if classifier:
        _classes(est, m, where)
    if isinstance(est, RandomForestClassifier | RandomForestRegressor):
        m["kind"] = "forest"
        m["depth"] = _trees(list(est.estimators_), arrays, where)
        if classifier:
            # a tree's predict_proba: the leaf's class weights over their sum (0 counts as 1)
            v = arrays["value"][:, : len(est.classes_)]
            norm = v.sum(axis=1)
            norm[norm == 0.0] = 1.0
            arrays["value"] = v / norm[:, None]
        else:
            arrays["value"] = arrays["value"][:, :1]
    elif isinstance(est, GradientBoostingClassifier | GradientBoostingRegressor):
        if not (isinstance(est.init_, DummyClassifier | DummyRegressor) or est.init_ == "zero"):
            raise NotCompilable(f"{where}: init={_name(est.init_)} is not supported")
        m["kind"] = "boosting"
        stages, k = est.estimators_.shape
        m["per_stage"] = int(k)
        m["depth"] = _trees(list(est.estimators_.ravel()), arrays, where)
        # sklearn adds learning_rate * value, computed in float64 as here
        arrays["value"] = est.learning_rate * arrays["value"][:, :1]
        # the init estimator predicts a constant; its raw prediction, for one all-zero row
        zero = np.zeros((1, est.n_features_in_), dtype=np.float32)
        arrays["init"] = np.asarray(est._raw_predict_init(zero)[0], dtype=np.float64)
        if classifier:
            loss = _name(est._loss)
            if loss not in ("HalfBinomialLoss", "HalfMultinomialLoss"):
                raise NotCompilable(f"{where}: loss {est.loss!r} is not supported")
    else:
        m["kind"] = "linear"
        coef = np.asarray(est.coef_, dtype=np.float64)
        arrays["coef"] = coef
        arrays["intercept"] = np.asarray(est.intercept_, dtype=np.float64)
    m["n_features"] = int(est.n_features_in_)
    return m


def compile_pipeline(pipeline: Any, task: str) -> CompiledPredictor:
    """The fitted pipeline (ColumnTransformer + one estimator) as a CompiledPredictor."""
    from sklearn.pipeline import Pipeline

    if task not in ("classification", "regression"):
        raise NotCompilable(f"unknown task {task!r}")
    if not isinstance(pipeline, Pipeline):
        raise NotCompilable(f"the model is a {_name(pipeline)}, not a scikit-learn Pipeline")
    steps = [s for _, s in pipeline.steps if s not in (None, "passthrough")]
    if len(steps) != 2:
        raise NotCompilable(
            f"the pipeline has {len(steps)} steps ({', '.join(_name(s) for s in steps)}); "
            "expected a ColumnTransformer and one estimator"
        )
    arrays: dict[str, NDArray[Any]] = {}
    blocks = _preprocess(steps[0], arrays)
    model = _model(steps[1], task, arrays)
    width = sum(b["width"] for b in blocks)
    if width != model["n_features"]:
        raise NotCompilable(f"the preprocessing makes {width} features, the estimator takes "
                            f"{model['n_features']}")
    manifest = {"format": FORMAT, "task": task, "blocks": blocks, "model": model,
                "estimator": _name(steps[1])}
    return CompiledPredictor(manifest, arrays)


# --- predicting --------------------------------------------------------------------------------


def _column(columns: Columns, name: str) -> Any:
    try:
        return columns[name]
    except KeyError:
        raise ValueError(f"column {name!r} is missing") from None


def _is_missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and v != v)


@dataclass
class CompiledPredictor:
    """A compiled pipeline: a JSON manifest and named numpy arrays (see the module docstring)."""

    manifest: dict[str, Any]
    arrays: dict[str, NDArray[Any]]
    _lookups: list[list[dict[Any, int]]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.manifest.get("format") != FORMAT:
            raise ValueError(f"not a compiled predictor of format {FORMAT}: "
                             f"{self.manifest.get('format')!r}")
        self._lookups = [
            [{c: i for i, c in enumerate(cats)} for cats in b["categories"]]
            if b["kind"] == "onehot" else []
            for b in self.manifest["blocks"]
        ]
        model = self.manifest["model"]
        self._classes: NDArray[Any] | None = None
        if "classes" in model:
            self._classes = np.array(model["classes"], dtype=np.dtype(model["classes_dtype"]))

    @property
    def task(self) -> str:
        return str(self.manifest["task"])

    @property
    def columns(self) -> list[str]:
        return [c for b in self.manifest["blocks"] for c in b["columns"]]

    # --- features ---

    def features(self, columns: Columns) -> NDArray[np.float64]:
        """The preprocessing's output: what the ColumnTransformer gives the estimator."""
        parts = []
        for block, lookups in zip(self.manifest["blocks"], self._lookups, strict=True):
            if block["kind"] == "numeric":
                parts.append(self._numeric(block, columns))
            else:
                parts.append(self._onehot(block, lookups, columns))
        return parts[0] if len(parts) == 1 else np.hstack(parts)

    def _numeric(self, block: dict[str, Any], columns: Columns) -> NDArray[np.float64]:
        x = np.column_stack(
            [np.asarray(_column(columns, c), dtype=np.float64) for c in block["columns"]]
        )
        if np.isinf(x).any():
            raise ValueError("Input contains infinity")  # as scikit-learn's imputer refuses it
        for op, key in block["ops"]:
            a = self.arrays[key]
            if op == "fill":
                x = np.where(np.isnan(x), a, x)
            elif op == "sub":
                x = x - a
            else:
                x = x / a
        return x

    def _onehot(
        self, block: dict[str, Any], lookups: list[dict[Any, int]], columns: Columns
    ) -> NDArray[np.float64]:
        names = block["columns"]
        values = [np.asarray(_column(columns, c), dtype=object) for c in names]
        n = len(values[0]) if values else 0
        out = np.zeros((n, block["width"]), dtype=np.float64)
        fill = block["fill"]
        start = 0
        for j, (vals, lookup) in enumerate(zip(values, lookups, strict=True)):
            idx = np.fromiter(
                (
                    lookup.get(fill[j] if fill is not None and _is_missing(v) else v, -1)
                    for v in vals
                ),
                dtype=np.intp, count=n,
            )
            known = idx >= 0
            if block["unknown"] == "error" and not known.all():
                bad = vals[~known][0]
                raise ValueError(f"Found unknown categories [{bad!r}] in column {names[j]!r}")
            rows = np.flatnonzero(known)
            out[rows, start + idx[known]] = 1.0
            start += len(lookup)
        return out

    # --- the model ---

    def _leaves(self, x: NDArray[np.float64]) -> NDArray[np.intp]:
        """The leaf each row reaches in each tree: shape (trees, rows).

        sklearn's rule at a node: a NaN feature goes left when the node says so (learnt where
        the training data had missing values), else right; otherwise left when
        float32(feature) <= threshold. Nodes are walked as doubled indices (2 * node), so that
        a node's right child is one past its left in `children`."""
        a = self.arrays
        x32 = np.ascontiguousarray(x, dtype=np.float32)  # as sklearn's trees see X
        n_rows, n_feat = x32.shape
        feature, threshold, children = a["feature"], a["threshold"], a["children"]
        depth = int(self.manifest["model"]["depth"])
        node2 = np.repeat(2 * a["roots"][:, None], n_rows, axis=1)
        missing = bool(np.isnan(x32).any())
        if n_rows * len(feature) <= _ALL_NODES_LIMIT and not missing:
            # few rows: every node's test at once, then only lookups while walking
            if n_rows == 1:
                right = x32[0].take(feature) > threshold
                for _ in range(depth):
                    node2 = children.take(node2 + right.take(node2 >> 1))
            else:
                right = (x32[:, feature] > threshold).T.ravel()  # node-major
                cols = np.arange(n_rows, dtype=np.intp)[None, :]
                for _ in range(depth):
                    node2 = children.take(node2 + right.take((node2 >> 1) * n_rows + cols))
            return node2 >> 1
        # many rows: level by level over the (tree, row) pairs; in deep trees, every other level
        # the pairs that reached a leaf are written back and dropped (measured: 10-30 % faster
        # on the 100-tree forests, slower on boosting's depth-3 trees)
        flat = x32.ravel()
        missing_left = a["missing_left"]
        compact = depth > _COMPACT_DEPTH
        out = node2.ravel()  # a copy: np.repeat made node2
        cur = out
        where = np.arange(out.size, dtype=np.intp)
        rowbase = np.tile(np.arange(n_rows, dtype=np.intp) * n_feat, len(a["roots"]))
        for level in range(depth):
            node = cur >> 1
            v = flat.take(rowbase + feature.take(node))
            if missing:
                go_right = ~((v <= threshold.take(node)) | (np.isnan(v) & missing_left.take(node)))
            else:
                go_right = v > threshold.take(node)
            cur = children.take(cur + go_right)
            if compact and level % 2 == 1:
                out[where] = cur
                inside = children.take(cur) != cur
                where, cur, rowbase = where[inside], cur[inside], rowbase[inside]
                if not len(where):
                    break
        if compact:
            out[where] = cur
            cur = out
        return cur.reshape(node2.shape) >> 1

    def _raw(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        """Forests: the mean of the trees' values; boosting: the raw scores; linear: X·coef + b.
        Shape (rows, outputs)."""
        model, a = self.manifest["model"], self.arrays
        kind = model["kind"]
        if kind == "linear":
            coef = a["coef"]
            raw: NDArray[np.float64] = x @ coef.T + a["intercept"]
            return raw.reshape(len(x), -1)
        n_trees = len(a["roots"])
        chunk = max(1, _CHUNK_ELEMENTS // n_trees)
        if len(x) > chunk:
            return np.concatenate([self._raw(x[i: i + chunk]) for i in range(0, len(x), chunk)])
        values = a["value"][self._leaves(x)]  # (trees, rows, outputs)
        if kind == "forest":
            # added tree by tree from zero, as sklearn accumulates them, then divided
            mean: NDArray[np.float64] = np.add.reduce(values, axis=0) / values.shape[0]
            return mean
        k = int(model["per_stage"])
        n_rows = values.shape[1]
        per_stage = values[:, :, 0].reshape(n_trees // k, k, n_rows).transpose(0, 2, 1)
        total = np.concatenate([np.broadcast_to(a["init"], (1, n_rows, k)), per_stage])
        scores: NDArray[np.float64] = np.add.reduce(total, axis=0)  # init, then stage by stage
        return scores

    def predict(self, columns: Columns) -> NDArray[Any]:
        """Classes (classification) or values (regression), one per row."""
        raw = self._raw(self.features(columns))
        if self._classes is None:
            return raw[:, 0]
        kind = self.manifest["model"]["kind"]
        if raw.shape[1] == 1:  # binary linear or boosting: the sign of the score
            pick = (raw[:, 0] >= 0) if kind == "boosting" else (raw[:, 0] > 0)
            binary: NDArray[Any] = self._classes[pick.astype(np.intp)]
            return binary
        out: NDArray[Any] = self._classes[np.argmax(raw, axis=1)]
        return out

    def predict_proba(self, columns: Columns) -> NDArray[np.float64]:
        """Class probabilities, columns in the order of `classes` (classification only)."""
        if self._classes is None:
            raise ValueError("a regression model has no class probabilities")
        raw = self._raw(self.features(columns))
        if self.manifest["model"]["kind"] == "forest":
            return raw
        if raw.shape[1] == 1:
            from scipy.special import expit

            p = expit(raw[:, 0])
            return np.column_stack([1 - p, p])
        from scipy.special import softmax

        return np.asarray(softmax(raw, axis=1), dtype=np.float64)

    @property
    def classes(self) -> list[Any] | None:
        return None if self._classes is None else list(self.manifest["model"]["classes"])

    # --- storage ---

    def save(self, directory: str | Path) -> Path:
        """Writes predictor.json and arrays.npz into `directory` (created); returns it."""
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        (path / MANIFEST).write_text(json.dumps(self.manifest, indent=1, allow_nan=False))
        np.savez(path / ARRAYS, allow_pickle=False, **self.arrays)
        return path

    @classmethod
    def load(cls, directory: str | Path) -> CompiledPredictor:
        path = Path(directory)
        manifest = json.loads((path / MANIFEST).read_text())
        with np.load(path / ARRAYS, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        return cls(manifest, arrays)


# --- parity ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Parity:
    """The compiled predictor against the pipeline on the same rows."""

    rows: int
    mismatches: int
    """Rows whose class or class probabilities (classification) or value (regression) differ
    beyond the tolerance."""
    max_abs_error: float
    """Regression: the largest |compiled - sklearn|; classification: of the probabilities."""
    tolerance: str

    @property
    def held(self) -> bool:
        return self.rows > 0 and self.mismatches == 0

    @property
    def verdict(self) -> str:
        return names.PARITY_HELD if self.held else names.PARITY_FAILED

    def summary(self) -> str:
        return (f"{self.verdict}: {self.mismatches} of {self.rows} rows differ, "
                f"max abs error {self.max_abs_error:.3g} ({self.tolerance})")


TOLERANCE_TEXT = f"classes identical; values and probabilities within rtol {RTOL:g}, atol {ATOL:g}"


def input_columns(pipeline: Any, compiled: CompiledPredictor) -> list[str]:
    """The columns the pipeline was fitted on, in their order (what its predict must be given)."""
    fitted = getattr(pipeline, "feature_names_in_", None)
    return [str(c) for c in fitted] if fitted is not None else compiled.columns


UNSEEN = "<never seen in training>"


def probe_rows(X: Any, compiled: CompiledPredictor) -> Any:
    """X's rows again with every numeric input missing and every categorical one unseen or
    missing (alternately): the imputers' and the encoder's paths, which a clean holdout never
    takes but requests can."""
    probes = X.copy()
    for block in compiled.manifest["blocks"]:
        for col in block["columns"]:
            if block["kind"] == "numeric":
                probes[col] = np.nan
            else:
                probes[col] = [UNSEEN if i % 2 == 0 else None for i in range(len(X))]
    return probes


def check_parity(pipeline: Any, compiled: CompiledPredictor, X: Any, task: str) -> Parity:
    """Scores X (a DataFrame of the feature columns) with both; see RTOL/ATOL."""
    rows = len(X)
    if rows == 0:
        return Parity(0, 0, 0.0, TOLERANCE_TEXT)
    expected = np.asarray(pipeline.predict(X))
    got = compiled.predict(X)
    if task == "classification":
        mismatches = np.asarray(expected != got)
        max_err = 0.0
        if hasattr(pipeline, "predict_proba"):
            pe = np.asarray(pipeline.predict_proba(X), dtype=np.float64)
            pg = compiled.predict_proba(X)
            if pe.shape != pg.shape:
                return Parity(rows, rows, math.inf, TOLERANCE_TEXT)
            max_err = float(np.max(np.abs(pe - pg)))
            mismatches = mismatches | ~np.isclose(pg, pe, rtol=RTOL, atol=ATOL).all(axis=1)
    else:
        e = expected.astype(np.float64)
        g = got.astype(np.float64)
        max_err = float(np.max(np.abs(e - g)))
        mismatches = ~np.isclose(g, e, rtol=RTOL, atol=ATOL)
    return Parity(rows, int(np.count_nonzero(mismatches)), max_err, TOLERANCE_TEXT)
