"""The drift statistics on synthetic data: quiet on samples of the same distribution, loud on
shifted ones, for numeric and categorical features."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlship.monitoring import drift

pytestmark = pytest.mark.unit

CATEGORIES = ["red", "green", "blue", "black"]
SHARES = [0.4, 0.3, 0.2, 0.1]


def sample(
    rng: np.random.Generator, n: int, shift: float = 0.0, shares: list[float] = SHARES
) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "x": rng.normal(0.0 + shift, 1.0, n),
            "y": rng.exponential(2.0, n) + shift,
            "z": rng.uniform(0, 10, n),
            "colour": rng.choice(CATEGORIES, n, p=shares),
            "flag": rng.random(n) < 0.3,
        }
    )


def test_no_false_alarm_on_unshifted_data_at_the_defaults() -> None:
    rng = np.random.default_rng(7)
    reference = sample(rng, 2000)
    alarms = features_flagged = 0
    trials = 200
    for _ in range(trials):
        current = sample(rng, 300)
        alarms += drift.compare(reference, current).drifted
        # the tests alone (no effect floor, which would hide it): Bonferroni keeps the per-feature
        # false-positive rate near alpha / features (0.014 here; 0.081 without the correction)
        features_flagged += len(drift.compare(reference, current, min_effect=0.0).drifted_features)
    assert alarms == 0
    assert features_flagged / (trials * 5) < 2 * drift.DEFAULT_ALPHA / 5


@pytest.mark.parametrize("kind", ["numeric", "categorical"])
def test_each_feature_is_tested_at_alpha_over_the_number_of_features(kind: str) -> None:
    """Bonferroni, exactly: a shift whose p-value lies between alpha/2 and alpha drifts when it is
    the only feature and does not once a second (quiet) feature halves its level."""
    if kind == "numeric":  # KS p = 0.028, statistic 0.27
        ref, cur = pd.Series(np.arange(60.0)), pd.Series(np.arange(60.0) + 15.5)
    else:  # chi-square p = 0.032, PSI 0.106
        ref = pd.Series(["a"] * 50 + ["b"] * 50)
        cur = pd.Series(["a"] * 34 + ["b"] * 66)
    alone = drift.compare(pd.DataFrame({"s": ref}), pd.DataFrame({"s": cur})).features[0]
    assert drift.DEFAULT_ALPHA / 2 < alone.p_value < drift.DEFAULT_ALPHA  # the case this is about
    assert alone.drifted
    quiet = pd.Series(np.arange(float(len(cur))))
    two = drift.compare(pd.DataFrame({"s": ref, "q": quiet}), pd.DataFrame({"s": cur, "q": quiet}))
    assert two.features[0].p_value == alone.p_value
    assert not two.features[0].drifted


def test_a_mean_shift_of_numeric_features_is_drift() -> None:
    rng = np.random.default_rng(1)
    report = drift.compare(sample(rng, 2000), sample(rng, 300, shift=1.0))
    by_name = {f.feature: f for f in report.features}
    assert {"x", "y"} <= set(report.drifted_features)
    assert by_name["x"].test == "ks" and by_name["x"].p_value < 1e-6 and by_name["x"].psi > 0.25
    assert not by_name["z"].drifted  # unshifted features stay quiet next to shifted ones
    assert not by_name["colour"].drifted


def test_changed_category_shares_are_drift_by_chi_square_and_psi() -> None:
    rng = np.random.default_rng(2)
    report = drift.compare(sample(rng, 2000), sample(rng, 400, shares=[0.1, 0.2, 0.3, 0.4]))
    colour = next(f for f in report.features if f.feature == "colour")
    assert colour.kind == "categorical" and colour.test == "chi2"
    assert colour.drifted and colour.p_value < 1e-6 and colour.psi > 0.25
    flag = next(f for f in report.features if f.feature == "flag")
    assert flag.kind == "categorical" and not flag.drifted


def test_a_category_never_seen_in_training_counts() -> None:
    rng = np.random.default_rng(3)
    reference = pd.DataFrame({"colour": rng.choice(CATEGORIES, 1000, p=SHARES)})
    current = pd.DataFrame({"colour": ["purple"] * 150 + list(rng.choice(CATEGORIES, 150, p=SHARES))})
    report = drift.compare(reference, current)
    assert report.drifted and report.drifted_features == ["colour"]


def test_the_threshold_is_a_share_of_features() -> None:
    rng = np.random.default_rng(4)
    reference = sample(rng, 2000)
    current = sample(rng, 300)
    current["x"] += 2.0  # one of five features drifts
    assert drift.compare(reference, current, threshold=0.5).drifted is False
    assert drift.compare(reference, current, threshold=0.2).drifted is True
    report = drift.compare(reference, current, threshold=0.2)
    assert report.drifted_share == pytest.approx(0.2)
    assert report.summary().startswith("1 of 5 features drifted") and "x (ks p=" in report.summary()


def test_a_tiny_but_significant_shift_is_below_the_effect_floor() -> None:
    rng = np.random.default_rng(5)
    big = 200_000
    reference = pd.DataFrame({"x": rng.normal(0, 1, big)})
    current = pd.DataFrame({"x": rng.normal(0.03, 1, big)})
    result = drift.compare(reference, current).features[0]
    assert result.p_value < 1e-6  # the test notices...
    assert not result.drifted  # ...but a 0.03 sd shift does not matter to a model


def test_the_report_table_has_a_row_per_feature() -> None:
    rng = np.random.default_rng(6)
    table = drift.compare(sample(rng, 500), sample(rng, 200)).table()
    assert list(table["feature"]) == ["x", "y", "z", "colour", "flag"]
    assert {"statistic", "p_value", "psi", "drifted", "reference_rows", "current_rows"} <= set(table.columns)
    assert (table["current_rows"] == 200).all()


@pytest.mark.parametrize(
    ("reference", "current", "kwargs", "message"),
    [
        ({"x": [1.0, 2.0]}, {"w": [1.0]}, {}, "features not in the reference data: w"),
        ({"x": [1.0, 2.0]}, {"x": [None, None]}, {}, "feature 'x' has no values in the recent data"),
        ({"x": [1.0, 2.0]}, {"x": [1.0]}, {"threshold": 0}, "threshold=0 must be in (0, 1]"),
        ({"x": [1.0, 2.0]}, {"x": [1.0]}, {"alpha": 1.5}, "alpha=1.5 must be between 0 and 1"),
    ],
)
def test_samples_that_cannot_be_compared_are_named(reference, current, kwargs, message) -> None:
    with pytest.raises(drift.DriftError, match=message.replace("(", r"\(").replace(")", r"\)")):
        drift.compare(pd.DataFrame(reference), pd.DataFrame(current), **kwargs)


def test_psi_is_zero_for_identical_and_grows_with_the_shift() -> None:
    rng = np.random.default_rng(8)
    ref = rng.normal(0, 1, 5000)
    assert drift.numeric_psi(ref, ref) == pytest.approx(0.0, abs=1e-9)
    small, large = drift.numeric_psi(ref, ref + 0.2), drift.numeric_psi(ref, ref + 1.0)
    assert 0 < small < 0.1 < 0.25 < large


def test_the_plot_has_a_panel_per_feature_drifted_ones_in_red(tmp_path) -> None:
    from matplotlib.colors import to_hex

    from mlship.monitoring import drift_plot

    rng = np.random.default_rng(9)
    reference, current = sample(rng, 500), sample(rng, 200)
    current["x"] += 2.0
    report = drift.compare(reference, current)
    fig = drift_plot.figure(report, reference, current)
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert len(panels) == 5
    colours = {ax.get_title().split(" ")[0]: to_hex(ax.title.get_color()) for ax in panels}
    assert colours["x"] == drift_plot.DRIFTED and colours["colour"] == drift_plot.STABLE
    fig.savefig(tmp_path / "drift.png")
    assert (tmp_path / "drift.png").stat().st_size > 10_000


# ------------------------------------------------------------------ boundaries (mutation testing)


def fd(name: str, drifted: bool, p: float = 0.5, psi: float = 0.0, test: str = "ks") -> drift.FeatureDrift:
    return drift.FeatureDrift(name, "numeric", test, 0.2, p, psi, drifted, 10, 10)


def test_a_share_exactly_at_the_threshold_is_drift() -> None:
    report = drift.DriftReport((fd("a", True), fd("b", False)), alpha=0.05, threshold=0.5, min_effect=0.1)
    assert report.drifted_share == 0.5 and report.drifted is True
    higher = drift.DriftReport(report.features, alpha=0.05, threshold=0.51, min_effect=0.1)
    assert higher.drifted is False


def test_the_summary_names_the_drifted_features_most_significant_first() -> None:
    report = drift.DriftReport(
        (fd("a", True, p=0.01, psi=0.3), fd("b", False), fd("c", True, p=0.0012, psi=1.234, test="chi2")),
        alpha=0.05, threshold=0.5, min_effect=0.1)
    assert report.summary() == (
        "2 of 3 features drifted (threshold 50%): c (chi2 p=0.0012, PSI 1.23), a (ks p=0.01, PSI 0.30)")
    quiet = drift.DriftReport((fd("a", False),), alpha=0.05, threshold=0.25, min_effect=0.1)
    assert quiet.summary() == "0 of 1 features drifted (threshold 25%)"


@pytest.mark.parametrize("kind", ["numeric", "categorical"])
def test_an_effect_exactly_at_the_floor_counts(kind: str) -> None:
    if kind == "numeric":
        ref, cur = pd.Series(np.arange(60.0)), pd.Series(np.arange(60.0) + 20)
    else:
        ref, cur = pd.Series(["a"] * 50 + ["b"] * 50), pd.Series(["a"] * 20 + ["b"] * 80)
    found = drift.compare(pd.DataFrame({"s": ref}), pd.DataFrame({"s": cur})).features[0]
    effect = found.statistic if kind == "numeric" else found.psi
    assert found.p_value < 0.01
    at = drift.compare(pd.DataFrame({"s": ref}), pd.DataFrame({"s": cur}), min_effect=effect).features[0]
    assert at.drifted
    above = drift.compare(pd.DataFrame({"s": ref}), pd.DataFrame({"s": cur}), min_effect=effect * 1.000001)
    assert not above.features[0].drifted


def test_psi_of_disjoint_bins_is_large_but_finite() -> None:
    # empty bins count as 1e-4: (1e-4 - 1) ln(1e-4) + (1 - 1e-4) ln(1e4)
    assert drift.psi(np.array([5.0, 0.0]), np.array([0.0, 3.0])) == pytest.approx(2 * 0.9999 * np.log(1e4))
    assert drift.psi(np.array([2.0, 2.0]), np.array([1.0, 1.0])) == 0.0  # shares, not counts


def test_values_beyond_the_reference_range_land_in_the_end_bins() -> None:
    ref = np.arange(100.0)
    assert drift.numeric_psi(ref, ref) == pytest.approx(0.0, abs=1e-12)
    far = drift.numeric_psi(ref, np.full(100, 1e6))  # all in the top bin, which held 10 %
    assert far == pytest.approx((1 - 0.1) * np.log(1 / 0.1) + 9 * (1e-4 - 0.1) * np.log(1e-4 / 0.1), rel=1e-3)


def test_one_category_on_both_sides_has_not_moved() -> None:
    result = drift.compare(pd.DataFrame({"c": ["x"] * 5}), pd.DataFrame({"c": ["x"] * 3})).features[0]
    assert (result.kind, result.test, result.statistic, result.p_value, result.psi) == (
        "categorical", "chi2", 0.0, 1.0, 0.0)
    assert (result.reference_rows, result.current_rows, result.drifted) == (5, 3, False)


def test_kinds_and_row_counts() -> None:
    assert drift.feature_kind(pd.Series([1, 2])) == "numeric"
    assert drift.feature_kind(pd.Series([1.5, None])) == "numeric"
    assert drift.feature_kind(pd.Series([True, False])) == "categorical"
    assert drift.feature_kind(pd.Series(["a", "b"])) == "categorical"
    # numbers in training, strings now: compared as categories, nulls as their own category
    result = drift.compare(pd.DataFrame({"v": [1, 2, None]}), pd.DataFrame({"v": ["1", "x"]})).features[0]
    assert (result.kind, result.reference_rows, result.current_rows) == ("categorical", 3, 2)
    numeric = drift.compare(pd.DataFrame({"v": [1.0, 2.0, None]}), pd.DataFrame({"v": [1.0, np.nan]}))
    assert (numeric.features[0].reference_rows, numeric.features[0].current_rows) == (2, 1)
    assert (numeric.features[0].kind, numeric.features[0].test) == ("numeric", "ks")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"alpha": 0}, "alpha=0 must be between 0 and 1"),
        ({"alpha": 1}, "alpha=1 must be between 0 and 1"),
        ({"threshold": 1.01}, "threshold=1.01 must be in (0, 1]"),
    ],
)
def test_parameter_edges_refused_in_full(kwargs, message) -> None:
    with pytest.raises(drift.DriftError) as info:
        drift.compare(pd.DataFrame({"x": [1.0, 2.0]}), pd.DataFrame({"x": [1.0]}), **kwargs)
    assert str(info.value) == message


def test_parameter_edges_accepted_and_other_refusals_in_full() -> None:
    ref, cur = pd.DataFrame({"x": [1.0, 2.0]}), pd.DataFrame({"x": [1.0, 2.0]})
    report = drift.compare(ref, cur, alpha=0.999, threshold=1)
    assert (report.alpha, report.threshold, report.min_effect) == (0.999, 1, drift.DEFAULT_MIN_EFFECT)
    for reference, current, message in [
        (ref, pd.DataFrame(index=[0]), "no features to compare"),
        (pd.DataFrame({"x": [None]}), cur, "feature 'x' has no values in the training data"),
        (ref, pd.DataFrame({"w": [1.0], "v": [2.0]}), "features not in the reference data: w, v"),
    ]:
        with pytest.raises(drift.DriftError) as info:
            drift.compare(reference, current)
        assert str(info.value) == message


def test_a_column_that_starts_arriving_null_has_drifted() -> None:
    ref = pd.DataFrame({"c": ["a", "b"] * 50})
    cur = pd.DataFrame({"c": ["a", "b"] * 25 + [None] * 50})
    result = drift.compare(ref, cur).features[0]
    assert result.drifted and result.current_rows == 100


def test_category_counts_are_zero_where_a_side_never_saw_it() -> None:
    ref = pd.DataFrame({"c": ["a"] * 10 + ["b"] * 10})
    cur = pd.DataFrame({"c": ["a"] * 10 + ["c"] * 10})
    # shares a .5/.5, b .5/0, c 0/.5 (0 counted as 1e-4): 2 x (.5 - 1e-4) ln(.5 / 1e-4)
    expected = 2 * (0.5 - 1e-4) * np.log(0.5 / 1e-4)
    assert drift.compare(ref, cur).features[0].psi == pytest.approx(expected)


def test_values_below_the_reference_range_land_in_the_first_bin() -> None:
    ref = np.arange(100.0)
    low = drift.numeric_psi(ref, np.full(10, -5.0))
    assert low == pytest.approx((1 - 0.1) * np.log(1 / 0.1) + 9 * (1e-4 - 0.1) * np.log(1e-4 / 0.1), rel=1e-3)
