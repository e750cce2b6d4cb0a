"""The quality gate's decisions."""

from __future__ import annotations

import math

import pytest

from mlship.gate import CHALLENGER, CHAMPION, GateInput, decide

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
