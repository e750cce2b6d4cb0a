"""The hyperparameter search's pure part: which trials run, how pods share them, which wins."""

from __future__ import annotations

import json
import math

import pytest

from mlship.errors import BadInput
from mlship.ml import tuning
from mlship.ml.tuning import Trial

pytestmark = pytest.mark.unit

SPACE = {"max_depth": [3, 5, None], "n_estimators": [50, 100]}


def test_a_grid_is_every_combination_in_order() -> None:
    assert tuning.expand(SPACE, "grid", 6, seed=1) == [
        {"max_depth": 3, "n_estimators": 50}, {"max_depth": 3, "n_estimators": 100},
        {"max_depth": 5, "n_estimators": 50}, {"max_depth": 5, "n_estimators": 100},
        {"max_depth": None, "n_estimators": 50}, {"max_depth": None, "n_estimators": 100},
    ]
    assert len(tuning.expand(SPACE, "grid", 1000, seed=1)) == 6  # trials is a cap, not a target


def test_a_grid_larger_than_the_trials_is_refused_with_its_size() -> None:
    with pytest.raises(BadInput, match="the grid has 6 combinations, more than tune_trials=5"):
        tuning.expand(SPACE, "grid", 5, seed=1)


def test_random_draws_distinct_combinations_the_same_for_the_same_seed() -> None:
    space = {"a": list(range(10)), "b": list(range(10)), "c": [True, False]}
    first = tuning.expand(space, "random", 25, seed=7)
    assert len(first) == 25
    assert len({json.dumps(t, sort_keys=True) for t in first}) == 25  # no trial twice
    assert all(set(t) == {"a", "b", "c"} and t["a"] in range(10) for t in first)
    assert tuning.expand(space, "random", 25, seed=7) == first
    assert tuning.expand(space, "random", 25, seed=8) != first


def test_random_over_a_small_space_gives_each_combination_once() -> None:
    out = tuning.expand(SPACE, "random", 50, seed=3)
    assert sorted(json.dumps(t, sort_keys=True) for t in out) == sorted(
        json.dumps(t, sort_keys=True) for t in tuning.expand(SPACE, "grid", 6, seed=0))


def test_a_huge_space_is_sampled_without_building_it() -> None:
    space = {f"p{i}": list(range(100)) for i in range(10)}  # 10**20 combinations
    assert len(tuning.expand(space, "random", 3, seed=0)) == 3


def test_repeated_values_are_tried_once() -> None:
    assert tuning.check_space({"C": [1, 1, 2, 1]}) == {"C": [1, 2]}
    assert tuning.expand({"C": [1, 1]}, "grid", 5, seed=0) == [{"C": 1}]


@pytest.mark.parametrize(("space", "search", "trials", "message"), [
    ({}, "random", 3, "tune_space must be a non-empty JSON object"),
    ([1], "random", 3, "tune_space must be a non-empty JSON object"),
    ({"C": []}, "random", 3, r"tune_space\['C'\] must be a non-empty list"),
    ({"C": 1}, "random", 3, r"tune_space\['C'\] must be a non-empty list"),
    (SPACE, "bayes", 3, "tune_search 'bayes' is not one of: random, grid"),
    (SPACE, "random", 0, "tune_trials must be between 1 and 1000, not 0"),
    (SPACE, "random", 1001, "tune_trials must be between 1 and 1000, not 1001"),
])
def test_a_search_that_cannot_be_planned_is_bad_input(space, search, trials, message) -> None:
    with pytest.raises(BadInput, match=message):
        tuning.expand(space, search, trials, seed=0)


def test_trials_share_at_most_max_parallel_pods_round_robin() -> None:
    trials = [{"C": c} for c in range(5)]
    shares = tuning.batches(trials, 2)
    assert shares == [
        [{"index": 0, "params": {"C": 0}}, {"index": 2, "params": {"C": 2}},
         {"index": 4, "params": {"C": 4}}],
        [{"index": 1, "params": {"C": 1}}, {"index": 3, "params": {"C": 3}}],
    ]
    assert [len(s) for s in tuning.batches(trials, 8)] == [1] * 5  # a pod per trial
    assert tuning.batches([], 4) == []
    with pytest.raises(BadInput, match="max_parallel must be at least 1"):
        tuning.batches(trials, 0)


def trial(index: int, score: float | None) -> Trial:
    return Trial(index=index, params={"C": index}, score=score, run_id=f"r{index}")


def test_the_best_trial_skips_failed_ones_and_follows_the_metrics_direction() -> None:
    trials = [trial(0, 0.8), trial(1, None), trial(2, 0.9), trial(3, math.nan), trial(4, 0.7)]
    assert tuning.best(trials, higher_is_better=True).index == 2
    assert tuning.best(trials, higher_is_better=False).index == 4  # rmse, mae: lower wins


def test_a_tie_goes_to_the_earlier_trial_and_all_failed_is_none() -> None:
    assert tuning.best([trial(3, 0.5), trial(1, 0.5)], higher_is_better=True).index == 1
    assert tuning.best([trial(0, None), trial(1, math.nan)], higher_is_better=True) is None
    assert tuning.best([], higher_is_better=True) is None
