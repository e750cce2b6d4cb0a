"""Feature layout and the seeded split."""

from __future__ import annotations

import pandas as pd
import pytest

from mlship.ml.features import FeatureSpec, feature_spec, split

pytestmark = pytest.mark.unit


def frame(n: int = 50) -> pd.DataFrame:
    return pd.DataFrame(
        {"x": range(n), "flag": [True, False] * (n // 2), "kind": ["a", "b"] * (n // 2),
         "target": [0, 0, 0, 0, 1] * (n // 5)}
    )


def test_numeric_and_categorical_columns():
    spec = feature_spec(frame(), "target", "classification")
    assert spec.numeric == ["x"]
    assert spec.categorical == ["flag", "kind"]
    assert FeatureSpec.from_dict(spec.to_dict()) == spec


def test_split_is_seeded_and_stratified():
    spec = feature_spec(frame(), "target", "classification")
    a_train, a_hold = split(frame(), spec, 0.2, seed=3)
    b_train, b_hold = split(frame(), spec, 0.2, seed=3)
    pd.testing.assert_frame_equal(a_hold, b_hold)
    _, c_hold = split(frame(), spec, 0.2, seed=4)
    assert not a_hold.equals(c_hold)
    assert len(a_hold) == 10 and len(a_train) == 40
    assert a_hold["target"].value_counts().to_dict() == {0: 8, 1: 2}


@pytest.mark.parametrize(("n", "fraction", "message"), [
    (2, 0.2, "too few"), (50, 1.0, "between 0 and 1"), (50, 0.0, "between 0 and 1"),
])
def test_bad_split_requests(n, fraction, message):
    f = frame(50).head(n)
    with pytest.raises(ValueError, match=message):
        split(f, feature_spec(f, "target", "classification"), fraction, seed=0)


# ------------------------------------------------------------------ boundaries (mutation testing)


def test_columns_after_the_target_are_features_too_and_the_task_is_kept():
    f = pd.DataFrame({"target": [0, 1], "x": [1.0, 2.0], "kind": ["a", "b"]})
    spec = feature_spec(f, "target", "classification")
    assert spec == FeatureSpec("target", "classification", ["x"], ["kind"])
    assert spec.columns == ["x", "kind"]


def test_the_smallest_splits_that_work():
    three = pd.DataFrame({"x": [1.0, 2.0, 3.0], "target": [1.0, 2.0, 3.0]})
    spec = feature_spec(three, "target", "regression")
    train, holdout = split(three, spec, 0.34, seed=0)  # 1 holdout row, 2 to train on
    assert (len(train), len(holdout)) == (2, 1)
    with pytest.raises(ValueError, match=r"^2 rows are too few for a 50% holdout split$"):
        split(three.head(2), spec, 0.5, seed=0)  # 1 and 1: too few to train on
    with pytest.raises(ValueError, match=r"^3 rows are too few for a 10% holdout split$"):
        split(three, spec, 0.1, seed=0)  # rounds to 0 holdout rows


def test_the_holdout_fraction_must_be_strictly_between_0_and_1():
    f = frame()
    spec = feature_spec(f, "target", "classification")
    for fraction in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match=f"^holdout fraction must be between 0 and 1, got {fraction}$"):
            split(f, spec, fraction, seed=0)


def test_the_split_frames_are_renumbered_and_keep_only_the_columns():
    f = frame()
    train, holdout = split(f, feature_spec(f, "target", "classification"), 0.2, seed=3)
    for part in (train, holdout):
        assert list(part.columns) == list(f.columns)
        assert list(part.index) == list(range(len(part)))


def six_of_three_classes() -> pd.DataFrame:
    return pd.DataFrame({"x": range(6), "target": ["a", "a", "b", "b", "c", "c"]})


def test_stratified_when_each_class_has_two_rows_and_the_holdout_one_per_class():
    # the edges: classes of exactly 2 rows, a holdout of exactly as many rows as classes
    f = six_of_three_classes()
    spec = feature_spec(f, "target", "classification")
    for seed in range(20):  # unstratified, some of these seeds would hold out a class twice
        _, holdout = split(f, spec, 0.5, seed=seed)
        assert sorted(holdout["target"]) == ["a", "b", "c"], seed


def test_not_stratified_when_a_class_has_one_row_or_the_holdout_is_smaller_than_the_classes():
    single = pd.concat([six_of_three_classes(), pd.DataFrame({"x": [9], "target": ["d"]})])
    spec = feature_spec(single, "target", "classification")
    train, holdout = split(single, spec, 0.5, seed=0)  # stratifying would raise in sklearn
    assert len(train) + len(holdout) == 7
    f = six_of_three_classes()
    train, holdout = split(f, spec, 0.34, seed=0)  # 2 holdout rows for 3 classes
    assert (len(train), len(holdout)) == (4, 2)


def test_a_regression_target_is_never_stratified():
    f = pd.DataFrame({"x": range(20), "target": [float(i % 2) for i in range(20)]})
    spec = feature_spec(f, "target", "regression")
    # two values ten times each would stratify fine: a mix-up of the task check shows here
    holds = [sorted(split(f, spec, 0.2, seed=s)[1]["target"]) for s in range(10)]
    assert any(h != [0.0, 0.0, 1.0, 1.0] for h in holds)
