"""Hyperparameter search, the pure part: which trials a search runs, how they are shared out
among pods, and which trial wins. mlship.steps.tune runs them; nothing here touches MLflow.

A search space maps hyperparameter names to the values to try. Two searches:

- grid: every combination of the space, in order. `trials` is a cap, not a target: a grid with
  more combinations than `trials` is refused (BadInput naming its size), never silently cut.
- random: `trials` distinct combinations drawn with the seed (the same seed, the same trials);
  a space with fewer combinations than `trials` gives each of them once.
"""

from __future__ import annotations

import itertools
import json
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mlship.errors import BadInput

SEARCHES: tuple[str, ...] = ("random", "grid")  # mlship.contract.TUNE_SEARCHES
MAX_TRIALS = 1000  # the form's maximum of tune_trials; one trial is one child MLflow run


class TuningError(BadInput):
    """The search cannot be planned as asked: the message says which field and why."""


def check_space(space: Any) -> dict[str, list[Any]]:
    """A search space: a JSON object of hyperparameter name -> non-empty list of values, each
    list's repeats dropped (they would only repeat trials)."""
    if not isinstance(space, Mapping) or not space:
        raise TuningError("tune_space must be a non-empty JSON object of hyperparameter -> list of values")
    out: dict[str, list[Any]] = {}
    for name, values in space.items():
        if not isinstance(values, list) or not values:
            raise TuningError(
                f"tune_space[{name!r}] must be a non-empty list of values, e.g. [0.1, 1, 10]"
            )
        seen: dict[str, Any] = {}
        for v in values:
            seen.setdefault(json.dumps(v, sort_keys=True), v)
        out[str(name)] = list(seen.values())
    return out


def size(space: Mapping[str, Sequence[Any]]) -> int:
    """How many combinations the space has."""
    return math.prod(len(v) for v in space.values())


def _combination(space: Mapping[str, Sequence[Any]], index: int) -> dict[str, Any]:
    """The index-th combination of the grid in itertools.product's order (mixed radix, the
    last name varying fastest), without building the grid."""
    out: dict[str, Any] = {}
    for name in reversed(list(space)):
        values = space[name]
        index, digit = divmod(index, len(values))
        out[name] = values[digit]
    return {name: out[name] for name in space}


def expand(space: Any, search: str, trials: int, seed: int) -> list[dict[str, Any]]:
    """The hyperparameters of each trial (pure, deterministic given the seed)."""
    if search not in SEARCHES:
        raise TuningError(f"tune_search {search!r} is not one of: {', '.join(SEARCHES)}")
    if not 1 <= trials <= MAX_TRIALS:
        raise TuningError(f"tune_trials must be between 1 and {MAX_TRIALS}, not {trials}")
    checked = check_space(space)
    total = size(checked)
    if search == "grid":
        if total > trials:
            raise TuningError(
                f"the grid has {total} combinations, more than tune_trials={trials}: raise "
                "tune_trials, narrow tune_space, or use tune_search=random"
            )
        return [dict(zip(checked, combo, strict=True)) for combo in itertools.product(*checked.values())]
    rng = random.Random(seed)  # noqa: S311 - a seeded draw, not a secret
    if total <= 1_000_000:
        picks = rng.sample(range(total), min(trials, total))
    else:  # too many to sample from a range: draw, and draw again on a repeat (rare here)
        chosen: dict[int, None] = {}
        while len(chosen) < trials:
            chosen.setdefault(rng.randrange(total))
        picks = list(chosen)
    return [_combination(checked, i) for i in picks]


def batches(trials: Sequence[dict[str, Any]], max_parallel: int) -> list[list[dict[str, Any]]]:
    """The trials shared out among at most `max_parallel` pods, round robin, each trial as
    {"index": its number in the search, "params": its hyperparameters}. With no more trials than
    `max_parallel` every trial has a pod of its own; beyond that a pod runs its share in turn,
    which is how the form's max_parallel bounds the pods running at once."""
    if max_parallel < 1:
        raise TuningError(f"max_parallel must be at least 1, not {max_parallel}")
    pods = min(max_parallel, len(trials))
    out: list[list[dict[str, Any]]] = [[] for _ in range(pods)]
    for i, params in enumerate(trials):
        out[i % pods].append({"index": i, "params": dict(params)})
    return out


@dataclass(frozen=True)
class Trial:
    """A finished trial as the search recorded it: score None when it failed."""

    index: int
    params: dict[str, Any]
    score: float | None
    run_id: str = ""
    error: str = ""


def best(trials: Sequence[Trial], higher_is_better: bool) -> Trial | None:
    """The winning trial: the best score among those that succeeded (a NaN score is a failure),
    the lower index on a tie; None when every trial failed."""
    scored = [t for t in trials if t.score is not None and math.isfinite(t.score)]
    if not scored:
        return None
    sign = -1.0 if higher_is_better else 1.0
    return min(scored, key=lambda t: (sign * float(t.score or 0.0), t.index))
