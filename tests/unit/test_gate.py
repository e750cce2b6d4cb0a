"""The quality gate's decisions."""

from __future__ import annotations

import math

import pytest

from mlship.ml.gate import CHALLENGER, CHAMPION, GateInput, decide

pytestmark = pytest.mark.unit


def acc(**kw) -> GateInput:
    base = {"metric": "accuracy", "higher_is_better": True, "score": 0.9}
    return GateInput(**{**base, **kw})


def test_first_model_above_minimum_becomes_champion():
    d = decide(acc(threshold=0.8))
    assert d.aliases == (CHALLENGER, CHAMPION)
    assert "no champion yet" in d.reason
    assert d.verdict == "champion"


def test_below_minimum_gets_no_alias_and_says_why():
    d = decide(acc(score=0.7, threshold=0.8))
    assert d.aliases == ()
    assert d.reason == "accuracy 0.7000 is below the minimum 0.8000: not promoted"
    assert d.verdict == "rejected"


def test_equal_to_champion_stays_challenger():
    d = decide(acc(champion_version="3", champion_score=0.9))
    assert d.aliases == (CHALLENGER,)
    assert "champion v3 has 0.9000, not beaten strictly" in d.reason


def test_better_than_champion_by_margin_promotes():
    assert decide(acc(champion_version="3", champion_score=0.85, margin=0.05)).promoted
    assert not decide(acc(champion_version="3", champion_score=0.86, margin=0.05)).promoted


def test_auto_promotion_off():
    assert decide(acc(auto_promote=False)).aliases == (CHALLENGER,)
    d = decide(acc(champion_version="1", champion_score=0.5, auto_promote=False))
    assert d.aliases == (CHALLENGER,)
    assert "auto-promotion is off" in d.reason


def test_lower_is_better_metric():
    rmse = {"metric": "rmse", "higher_is_better": False}
    assert decide(GateInput(**rmse, score=40.0, threshold=50.0)).promoted
    rejected = decide(GateInput(**rmse, score=60.0, threshold=50.0))
    assert rejected.aliases == () and "above the maximum" in rejected.reason
    beat = GateInput(**rmse, score=40.0, champion_version="2", champion_score=45.0)
    assert decide(beat).promoted
    worse = GateInput(**rmse, score=46.0, champion_version="2", champion_score=45.0)
    assert decide(worse).aliases == (CHALLENGER,)


def test_incomparable_champion_is_not_replaced():
    d = decide(acc(champion_version="4", champion_score=None))
    assert d.aliases == (CHALLENGER,)
    assert "could not be scored" in d.reason


def test_missing_score_is_not_promoted():
    assert decide(acc(score=math.nan)).aliases == ()
    assert decide(acc(score=None)).aliases == ()


def test_negative_margin_is_refused():
    with pytest.raises(ValueError, match="margin must be >= 0"):
        decide(acc(margin=-0.1))


# ------------------------------------------------------------------ boundaries (mutation testing)


def test_a_score_equal_to_the_threshold_meets_it():
    d = decide(acc(score=0.8, threshold=0.8))
    assert d.aliases == (CHALLENGER, CHAMPION)
    assert d.reason == "accuracy 0.8000 meets the threshold; no champion yet: promoted to champion"
    rmse = decide(GateInput(metric="rmse", higher_is_better=False, score=50.0, threshold=50.0))
    assert rmse.aliases == (CHALLENGER, CHAMPION)


def test_just_past_the_threshold_is_rejected_either_way():
    assert decide(acc(score=0.7999, threshold=0.8)).aliases == ()
    above = decide(GateInput(metric="rmse", higher_is_better=False, score=50.01, threshold=50.0))
    assert above.aliases == ()
    assert above.reason == "rmse 50.0100 is above the maximum 50.0000: not promoted"


def test_a_gain_exactly_equal_to_the_margin_promotes():
    # binary-exact figures, so the gain is exactly the margin (0.75 - 0.5 == 0.25)
    d = decide(acc(score=0.75, champion_version="3", champion_score=0.5, margin=0.25))
    assert d.aliases == (CHALLENGER, CHAMPION)
    assert d.reason == (
        "accuracy 0.7500 meets the threshold; beats champion v3 has 0.5000 by 0.2500: champion"
    )
    short = decide(acc(score=0.75, champion_version="3", champion_score=0.5, margin=0.2501))
    assert short.aliases == (CHALLENGER,)
    assert short.reason == (
        "accuracy 0.7500 meets the threshold; champion v3 has 0.5000, not beaten by at least 0.2501: "
        "stays challenger"
    )


def test_a_zero_margin_is_allowed_and_any_strict_gain_promotes():
    d = decide(acc(score=0.9001, champion_version="3", champion_score=0.9, margin=0.0))
    assert d.promoted and d.verdict == CHAMPION


def test_a_worse_lower_is_better_score_is_not_a_gain():
    worse = GateInput(metric="rmse", higher_is_better=False, score=46.0, champion_version="2",
                      champion_score=45.0, margin=0.0)
    d = decide(worse)
    assert d.aliases == (CHALLENGER,) and d.verdict == CHALLENGER
    assert d.reason == (
        "rmse 46.0000 meets the threshold; champion v2 has 45.0000, not beaten strictly: stays challenger"
    )
    better = decide(GateInput(metric="rmse", higher_is_better=False, score=44.0, champion_version="2",
                              champion_score=45.0))
    assert better.reason.endswith("beats champion v2 has 45.0000 by 1.0000: champion")


@pytest.mark.parametrize("score", [math.inf, -math.inf, math.nan, None])
def test_a_score_that_is_not_a_finite_number_is_not_promoted(score):
    d = decide(acc(score=score, threshold=0.5))
    assert d.aliases == () and d.verdict == "rejected"
    assert d.reason == "accuracy could not be computed on the holdout: not promoted"


@pytest.mark.parametrize("champion_score", [None, math.inf, math.nan])
def test_a_champion_without_a_finite_score_is_kept(champion_score):
    d = decide(acc(champion_version="4", champion_score=champion_score))
    assert d.aliases == (CHALLENGER,)
    assert d.reason == (
        "accuracy 0.9000 meets the threshold; champion v4 could not be scored on this holdout, "
        "so it is not replaced automatically"
    )


def test_the_reasons_when_auto_promotion_is_off():
    first = decide(acc(auto_promote=False))
    assert first.reason == "accuracy 0.9000 meets the threshold; no champion yet but auto-promotion is off"
    beats = decide(acc(champion_version="1", champion_score=0.5, auto_promote=False))
    assert beats.reason == (
        "accuracy 0.9000 meets the threshold; beats champion v1 has 0.5000 but auto-promotion is off"
    )
    assert not beats.promoted


def test_a_negative_margin_is_refused_with_its_value_and_zero_is_not():
    with pytest.raises(ValueError, match=r"^promotion margin must be >= 0, got -0.1$"):
        decide(acc(margin=-0.1))
    assert decide(acc(margin=0.0)).promoted


def test_improvement_needs_both_scores():
    from mlship.ml.gate import improvement

    assert improvement(acc(score=0.9, champion_score=0.8)) == pytest.approx(0.1)
    with pytest.raises(AssertionError):
        improvement(acc(score=0.9, champion_score=None))
