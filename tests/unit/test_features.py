"""Feature layout and the seeded split."""

from __future__ import annotations

import pandas as pd
import pytest

from mlship.features import FeatureSpec, feature_spec, split

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
