"""Validation rules: each violation names the column, the rule and the count."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlship.ml.validation import RulesError, validate

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


# ------------------------------------------------------------------ boundaries (mutation testing)


def test_exactly_min_rows_passes_one_fewer_fails():
    f = frame()  # 4 rows
    assert validate(f, "target", "classification", {"min_rows": 4}) == []
    [v] = validate(f, "target", "classification", {"min_rows": 5})
    assert v.to_dict() == {"column": "*", "rule": "min_rows", "count": 4, "detail": "4 rows, need 5"}
    assert v.message() == "dataset: rule min_rows violated by 4 (4 rows, need 5)"


def test_the_default_min_rows_is_one():
    one = frame().iloc[:1]
    assert validate(one, "target", "regression") == []
    [v] = validate(frame().iloc[:0], "target", "regression")
    assert (v.rule, v.count, v.detail) == ("min_rows", 0, "0 rows, need 1")


def test_range_bounds_are_inclusive():
    rules = {"columns": {"a": {"min": 1.0, "max": 4.0}}}  # a is 1, 2, 3, 4
    assert validate(frame(), "target", "classification", rules) == []
    below = validate(frame(), "target", "classification", {"columns": {"a": {"min": 1.0001}}})
    assert [v.to_dict() for v in below] == [
        {"column": "a", "rule": "min=1.0001", "count": 1, "detail": "1 value(s) below 1.0001"}]
    above = validate(frame(), "target", "classification", {"columns": {"a": {"max": 3.9999}}})
    assert [v.to_dict() for v in above] == [
        {"column": "a", "rule": "max=3.9999", "count": 1, "detail": "1 value(s) above 3.9999"}]


def test_range_rules_skip_nulls_and_count_every_value_out_of_range():
    f = frame()
    f.loc[0, "a"] = np.nan
    rules = {"max_nulls": 1, "columns": {"a": {"min": 3.5}}}
    [v] = validate(f, "target", "classification", rules)
    assert (v.rule, v.count) == ("min=3.5", 2)  # 2 and 3; the null is not a value below


def test_a_null_budget_is_inclusive_and_a_column_budget_overrides_the_default():
    f = frame()
    f.loc[[0, 1], "a"] = np.nan
    assert validate(f, "target", "classification", {"max_nulls": 2}) == []
    [v] = validate(f, "target", "classification", {"max_nulls": 1})
    assert (v.rule, v.count, v.detail) == ("max_nulls=1", 2, "2 null value(s)")
    strict = {"max_nulls": 5, "columns": {"a": {"max_nulls": 0}}}
    [v] = validate(f, "target", "classification", strict)
    assert (v.column, v.rule, v.count) == ("a", "max_nulls=0", 2)
    lenient = {"max_nulls": 0, "columns": {"a": {"max_nulls": 2}}}
    assert validate(f, "target", "classification", lenient) == []


def test_a_range_rule_on_a_non_numeric_column_is_a_violation():
    f = frame()
    f["flag"] = [True, False, True, True]
    rules = {"columns": {"b": {"max": 1}, "flag": {"min": 0}}}
    got = [v.to_dict() for v in validate(f, "target", "classification", rules)]
    assert got == [
        {"column": "b", "rule": "max", "count": 4, "detail": "range rule on a non-numeric column"},
        {"column": "flag", "rule": "min", "count": 4, "detail": "range rule on a non-numeric column"},
    ]


def test_a_wrong_dtype_reports_only_the_dtype():
    rules = {"columns": {"b": {"dtype": "float", "min": 0, "allowed": ["z"]}}}
    [v] = validate(frame(), "target", "classification", rules)
    detail = f"actual dtype is {frame()['b'].dtype}"  # object, or str on pandas 3
    assert v.to_dict() == {"column": "b", "rule": "dtype=float", "count": 4, "detail": detail}


@pytest.mark.parametrize(
    ("values", "matches"),
    [
        ([1, 2], {"numeric", "integer"}),
        ([1.5, 2.0], {"numeric", "float"}),
        (["x", "y"], {"string"}),
        ([True, False], {"bool"}),
        (pd.Categorical([1, 2]), {"category"}),
    ],
)
def test_each_dtype_rule_matches_its_own_kind_only(values, matches):
    from mlship.ml.validation import DTYPES, dtype_matches

    series = pd.Series(values)
    assert {d for d in DTYPES if dtype_matches(series, d)} == matches


def test_an_unsupported_feature_dtype_is_named():
    f = frame()
    f["when"] = pd.to_datetime(["2024-01-01"] * 4)
    [v] = validate(f, "target", "classification")
    assert v.to_dict() == {"column": "when", "rule": "dtype", "count": 4,
                           "detail": f"unsupported dtype {f['when'].dtype}"}
    assert str(f["when"].dtype).startswith("datetime64")


def test_allowed_values_counts_and_ignores_nulls():
    f = frame()
    f.loc[0, "b"] = None
    rules = {"max_nulls": 1, "columns": {"b": {"allowed": ["y"]}}}
    [v] = validate(f, "target", "classification", rules)
    assert v.to_dict() == {"column": "b", "rule": "allowed", "count": 1,
                           "detail": "1 value(s) outside the allowed set"}
    both = {"max_nulls": 1, "columns": {"b": {"allowed": ["x", "y"]}}}
    assert validate(f, "target", "classification", both) == []


def test_the_targets_own_rules():
    f = frame()
    f["target"] = [1.0, np.nan, np.nan, 1.0]
    got = [v.to_dict() for v in validate(f, "target", "classification")]
    assert got == [
        {"column": "target", "rule": "target_not_null", "count": 2, "detail": "2 null target(s)"},
        {"column": "target", "rule": "min_classes", "count": 1, "detail": "classification needs 2+ classes"},
    ]
    f["target"] = ["p", "q", "p", "q"]
    [v] = validate(f, "target", "regression")
    assert v.to_dict() == {"column": "target", "rule": "dtype", "count": 4,
                           "detail": "a regression target must be numeric"}
    assert validate(frame().iloc[:0], "target", "classification")[0].rule == "min_rows"  # no min_classes
    assert [v.rule for v in validate(frame().iloc[:0], "target", "classification")] == ["min_rows"]


def test_missing_target_column_and_schema_columns_are_named():
    rules = {"columns": {"c": {}}}
    got = [v.to_dict() for v in validate(frame(), "label", "classification", rules)]
    assert got == [
        {"column": "label", "rule": "target_present", "count": 1, "detail": "target column is missing"},
        {"column": "c", "rule": "column_present", "count": 1, "detail": "expected column is missing"},
    ]


def test_a_closed_schema_never_calls_the_target_extra():
    rules = {"allow_extra_columns": False, "columns": {"a": {}, "b": {}}}
    assert validate(frame(), "target", "classification", rules) == []
    [v] = validate(frame(), "target", "classification", {"allow_extra_columns": False, "columns": {"a": {}}})
    assert v.to_dict() == {"column": "b", "rule": "no_extra_columns", "count": 1,
                           "detail": "column not in the schema"}


def test_a_frame_with_only_the_target_has_no_features():
    only = frame()[["target"]]
    [v] = validate(only, "target", "classification")
    assert v.to_dict() == {"column": "*", "rule": "has_features", "count": 0,
                           "detail": "no feature columns besides the target"}


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ([], "validation rules must be a JSON object"),
        ({"max_null": 0, "min_row": 1}, "unknown validation rule key(s): max_null, min_row"),
        ({"columns": {"a": 1}}, "validation rules: column 'a' must map to an object"),
        ({"columns": {"a": {"minimum": 0, "maximum": 1}}},
         "validation rules: column 'a' has unknown rule(s): maximum, minimum"),
        ({"columns": {"a": {"dtype": "decimal"}}},
         "validation rules: column 'a' dtype 'decimal' is not one of numeric, integer, float, string, bool, "
         "category"),
        ({"columns": ["a"]}, "validation rules: 'columns' must map column names to rule objects"),
    ],
)
def test_malformed_rules_messages_in_full(rules, message):
    from mlship.ml.validation import check_rules

    with pytest.raises(RulesError) as info:
        check_rules(rules)
    assert str(info.value) == message


def test_a_matching_dtype_rule_is_no_violation_and_mixed_or_categorical_columns_are_supported():
    f = frame()
    f["mixed"] = pd.Series([1, "a", 2.5, None], dtype=object)
    f["cat"] = pd.Categorical([1, 2, 1, 2])
    rules = {"max_nulls": 1, "columns": {"a": {"dtype": "float"}, "mixed": {"dtype": "string"},
                                         "cat": {"dtype": "category"}}}
    assert validate(f, "target", "classification", rules) == []


def test_both_range_rules_on_a_non_numeric_column_are_named():
    rules = {"columns": {"b": {"min": 0, "max": 1}}}
    got = [v.rule for v in validate(frame(), "target", "classification", rules)]
    assert got == ["min", "max"]
