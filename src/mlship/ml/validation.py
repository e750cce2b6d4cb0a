"""Data validation rules: pure functions from (frame, rules) to a list of violations.

Rules document (JSON), every key optional:

    {
      "min_rows": 1,                  # fewer rows is a violation of rule "min_rows"
      "max_nulls": 0,                 # default null budget for every column
      "allow_extra_columns": true,    # false: columns not listed under "columns" are violations
      "columns": {
        "age": {"dtype": "numeric", "min": 0, "max": 130, "max_nulls": 5},
        "kind": {"dtype": "string", "allowed": ["a", "b"]}
      }
    }

Columns listed under "columns" are the expected schema: a missing one is a violation.
The target must be present with no nulls; a classification target needs two classes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd

from mlship.errors import BadInput

DTYPES = ("numeric", "integer", "float", "string", "bool", "category")
_TOP_KEYS = {"min_rows", "max_nulls", "allow_extra_columns", "columns"}
_COLUMN_KEYS = {"dtype", "min", "max", "max_nulls", "allowed"}


class RulesError(BadInput):
    """The rules document itself is malformed."""


@dataclass(frozen=True)
class Violation:
    column: str  # "*" for dataset-wide rules
    rule: str
    count: int
    detail: str

    def message(self) -> str:
        where = "dataset" if self.column == "*" else f"column {self.column!r}"
        return f"{where}: rule {self.rule} violated by {self.count} ({self.detail})"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_rules(rules: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(rules, dict):
        raise RulesError("validation rules must be a JSON object")
    unknown = set(rules) - _TOP_KEYS
    if unknown:
        raise RulesError(f"unknown validation rule key(s): {', '.join(sorted(unknown))}")
    columns = rules.get("columns", {})
    if not isinstance(columns, dict):
        raise RulesError("validation rules: 'columns' must map column names to rule objects")
    for name, spec in columns.items():
        if not isinstance(spec, dict):
            raise RulesError(f"validation rules: column {name!r} must map to an object")
        bad = set(spec) - _COLUMN_KEYS
        if bad:
            raise RulesError(
                f"validation rules: column {name!r} has unknown rule(s): {', '.join(sorted(bad))}"
            )
        if "dtype" in spec and spec["dtype"] not in DTYPES:
            raise RulesError(
                f"validation rules: column {name!r} dtype {spec['dtype']!r} is not one of "
                f"{', '.join(DTYPES)}"
            )
    return rules


def dtype_matches(series: pd.Series, expected: str) -> bool:
    t = pd.api.types
    if expected == "numeric":
        return t.is_numeric_dtype(series) and not t.is_bool_dtype(series)
    if expected == "integer":
        return t.is_integer_dtype(series)
    if expected == "float":
        return t.is_float_dtype(series)
    if expected == "string":
        return t.is_string_dtype(series) or t.is_object_dtype(series)
    if expected == "bool":
        return t.is_bool_dtype(series)
    return isinstance(series.dtype, pd.CategoricalDtype)


def supported_feature(series: pd.Series) -> bool:
    t = pd.api.types
    return (
        t.is_numeric_dtype(series)
        or t.is_bool_dtype(series)
        or t.is_string_dtype(series)
        or t.is_object_dtype(series)
        or isinstance(series.dtype, pd.CategoricalDtype)
    )


def validate(
    frame: pd.DataFrame, target: str, task: str, rules: dict[str, Any] | None = None
) -> list[Violation]:
    rules = check_rules(rules or {})
    out: list[Violation] = []
    min_rows = int(rules.get("min_rows", 1))
    if len(frame) < min_rows:
        out.append(Violation("*", "min_rows", len(frame), f"{len(frame)} rows, need {min_rows}"))
    if target not in frame.columns:
        out.append(Violation(target, "target_present", 1, "target column is missing"))
    expected = rules.get("columns", {})
    for name in expected:
        if name not in frame.columns:
            out.append(Violation(name, "column_present", 1, "expected column is missing"))
    if rules.get("allow_extra_columns", True) is False:
        for name in frame.columns:
            if name not in expected and name != target:
                out.append(Violation(name, "no_extra_columns", 1, "column not in the schema"))
    default_nulls = int(rules.get("max_nulls", 0))
    for name in frame.columns:
        # the target's nulls are never allowed, whatever the budget: checked below
        budget = None if name == target else default_nulls
        out.extend(_column_violations(frame[name], name, expected.get(name, {}), budget))
    if target in frame.columns:
        y = frame[target]
        nulls = int(y.isna().sum())
        if nulls:
            out.append(Violation(target, "target_not_null", nulls, f"{nulls} null target(s)"))
        if task == "classification" and len(frame) and y.nunique(dropna=True) < 2:
            n = int(y.nunique())
            out.append(Violation(target, "min_classes", n, "classification needs 2+ classes"))
        if task == "regression" and not pd.api.types.is_numeric_dtype(y):
            out.append(Violation(target, "dtype", len(y), "a regression target must be numeric"))
    if len(frame.columns.drop(target, errors="ignore")) == 0:
        out.append(Violation("*", "has_features", 0, "no feature columns besides the target"))
    return out


def _column_violations(
    s: pd.Series, name: str, spec: dict[str, Any], default_nulls: int | None
) -> list[Violation]:
    out: list[Violation] = []
    nulls = int(s.isna().sum())
    budget = int(spec.get("max_nulls", default_nulls or 0))
    if default_nulls is not None and nulls > budget:
        out.append(Violation(name, f"max_nulls={budget}", nulls, f"{nulls} null value(s)"))
    if not supported_feature(s):
        out.append(Violation(name, "dtype", len(s), f"unsupported dtype {s.dtype}"))
    if "dtype" in spec and not dtype_matches(s, spec["dtype"]):
        out.append(
            Violation(name, f"dtype={spec['dtype']}", len(s), f"actual dtype is {s.dtype}")
        )
        return out  # range checks on the wrong type would only add noise
    values = s.dropna()
    numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
    for rule in ("min", "max"):
        if rule not in spec:
            continue
        if not numeric:
            out.append(Violation(name, rule, len(values), "range rule on a non-numeric column"))
            continue
        bound = spec[rule]
        bad = int((values < bound).sum() if rule == "min" else (values > bound).sum())
        if bad:
            side = "below" if rule == "min" else "above"
            out.append(Violation(name, f"{rule}={bound}", bad, f"{bad} value(s) {side} {bound}"))
    if "allowed" in spec:
        bad = int((~values.isin(spec["allowed"])).sum())
        if bad:
            out.append(Violation(name, "allowed", bad, f"{bad} value(s) outside the allowed set"))
    return out
