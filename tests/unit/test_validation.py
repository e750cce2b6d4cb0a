"""Validation rules: each violation names the column, the rule and the count."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlship.validation import RulesError, validate

pytestmark = pytest.mark.unit


def frame() -> pd.DataFrame:
    return pd.DataFrame(
        {"a": [1.0, 2.0, 3.0, 4.0], "b": ["x", "y", "x", "y"], "target": [0, 1, 0, 1]}
    )


def test_clean_frame_passes():
    assert validate(frame(), "target", "classification") == []


def test_nulls_name_column_rule_and_count():
    f = frame()
    f.loc[[0, 2], "a"] = np.nan
    [v] = validate(f, "target", "classification")
    assert (v.column, v.rule, v.count) == ("a", "max_nulls=0", 2)
    assert v.message() == "column 'a': rule max_nulls=0 violated by 2 (2 null value(s))"


def test_null_budget_per_column_and_default():
    f = frame()
    f.loc[0, "a"] = np.nan
    assert validate(f, "target", "classification", {"columns": {"a": {"max_nulls": 1}}}) == []
    assert validate(f, "target", "classification", {"max_nulls": 1}) == []


def test_target_nulls_never_allowed():
    f = frame()
    f["target"] = f["target"].astype("float")
    f.loc[1, "target"] = np.nan
    [v] = validate(f, "target", "classification", {"max_nulls": 10})
    assert (v.column, v.rule, v.count) == ("target", "target_not_null", 1)


def test_out_of_range_values():
    rules = {"columns": {"a": {"min": 1.5, "max": 3.5}}}
    found = validate(frame(), "target", "classification", rules)
    got = {(v.column, v.rule, v.count) for v in found}
    assert got == {("a", "min=1.5", 1), ("a", "max=3.5", 1)}


def test_schema_missing_columns_and_wrong_dtype():
    rules = {"columns": {"c": {"dtype": "numeric"}, "b": {"dtype": "numeric"}}}
    got = {(v.column, v.rule) for v in validate(frame(), "target", "classification", rules)}
    assert got == {("c", "column_present"), ("b", "dtype=numeric")}


def test_missing_target_and_empty_dataset():
    empty = frame().iloc[0:0]
    got = {(v.column, v.rule, v.count) for v in validate(empty, "label", "classification")}
    assert ("*", "min_rows", 0) in got
    assert ("label", "target_present", 1) in got


def test_extra_columns_when_closed_schema():
    rules = {"allow_extra_columns": False, "columns": {"a": {}}}
    [v] = validate(frame(), "target", "classification", rules)
    assert (v.column, v.rule) == ("b", "no_extra_columns")


def test_allowed_values_and_single_class():
    f = frame()
    f["target"] = 1
    rules = {"columns": {"b": {"allowed": ["x"]}}}
    got = {(v.column, v.rule, v.count) for v in validate(f, "target", "classification", rules)}
    assert got == {("b", "allowed", 2), ("target", "min_classes", 1)}


def test_regression_target_must_be_numeric():
    f = frame()
    f["target"] = ["p", "q", "p", "q"]
    [v] = validate(f, "target", "regression")
    assert (v.column, v.rule) == ("target", "dtype")


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ({"max_null": 0}, "unknown validation rule key(s): max_null"),
        ({"columns": {"a": {"minimum": 0}}}, "column 'a' has unknown rule(s): minimum"),
        ({"columns": {"a": {"dtype": "decimal"}}}, "dtype 'decimal' is not one of"),
        ({"columns": ["a"]}, "'columns' must map"),
    ],
)
def test_malformed_rules_are_named(rules, message):
    with pytest.raises(RulesError, match=message.replace("(", r"\(").replace(")", r"\)")):
        validate(frame(), "target", "classification", rules)
