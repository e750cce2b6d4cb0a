"""How the score step (mlship.steps.score) scores a frame with `--predictor auto`: both predictors
score the first PROBE_ROWS rows once; the chosen one's probe answers stand for those rows and it
scores only the rest, on the same chunk grid as scoring all rows at once, so the answers are those
of scoring every row at once; when the answers differ, scikit-learn scores every row (as before).
Stand-in predictors count the rows each is asked for."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mlship.mlflow_io.compiled import COMPILED, SKLEARN, Choice
from mlship.steps import score

pytestmark = pytest.mark.unit

PROBE, CHUNK = 10, 25
SLOW = 0.05  # seconds a call of the slower stand-in takes: the probe's winner is never in doubt


@pytest.fixture(autouse=True)
def small(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(score, "PROBE_ROWS", PROBE)
    monkeypatch.setattr(score, "CHUNK_ROWS", CHUNK)


class Compiled:
    """The compiled form's stand-in: predict({column: array}); answers 2*row (+ `off`)."""

    columns = ("x",)

    def __init__(self, delay: float = 0.0, off: int = 0) -> None:
        self.delay, self.off = delay, off
        self.calls: list[tuple[int, int]] = []

    def predict(self, features: dict[str, np.ndarray]) -> np.ndarray:
        x = features["x"]
        self.calls.append((int(x[0]), int(x[-1]) + 1))
        time.sleep(self.delay)
        return (2 * x + self.off).astype(np.int64)


class Pyfunc:
    """The loaded MLflow model's stand-in (scikit-learn): predict(DataFrame); answers 2*row."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.calls: list[tuple[int, int]] = []

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        assert list(frame.columns) == ["x"]
        self.calls.append((int(frame["x"].iloc[0]), int(frame["x"].iloc[-1]) + 1))
        time.sleep(self.delay)
        return (2 * frame["x"].to_numpy()).astype(np.int64)


def rows(n: int) -> pd.DataFrame:
    return pd.DataFrame({"x": np.arange(n, dtype=np.int64), "customer": [f"c{i}" for i in range(n)]})


def run(requested: str, n: int, fast: Compiled, sk: Pyfunc) -> tuple[Choice, pd.Series, Any]:
    frame = rows(n)
    choice, rates, probe = score.pick(requested, Choice(fast, "parity_held", "parity held"), frame, sk, ["x"])
    answers, seconds = score.predictions(frame, sk, choice, ["x"], probe)
    assert seconds > 0
    return choice, answers, rates


def all_at_once(n: int) -> pd.Series:
    """What scoring every row in one call answers."""
    return pd.Series(2 * np.arange(n, dtype=np.int64), name=score.PREDICTION)


def grid(start: int, n: int) -> list[tuple[int, int]]:
    """The chunks scoring rows start..n asks for: those of the whole frame, the first cut at start."""
    edges = [start, *range((start // CHUNK + 1) * CHUNK, n, CHUNK), n]
    return list(zip(edges, edges[1:], strict=False))


@pytest.mark.parametrize("n", [1, 7, PROBE], ids=["one-row", "under-probe", "exactly-probe"])
@pytest.mark.parametrize("winner", [COMPILED, SKLEARN])
def test_an_input_within_the_probe_is_scored_once_by_each_predictor(n: int, winner: str) -> None:
    fast, sk = Compiled(SLOW if winner == SKLEARN else 0), Pyfunc(SLOW if winner == COMPILED else 0)
    choice, answers, rates = run("auto", n, fast, sk)
    assert choice.kind == winner, choice.reason
    assert fast.calls == [(0, n)] and sk.calls == [(0, n)]  # the probe, nothing more
    assert set(rates) == {COMPILED, SKLEARN}
    assert f"on the first {n} rows" in choice.reason
    pd.testing.assert_series_equal(answers, all_at_once(n))


@pytest.mark.parametrize("n", [PROBE + 1, CHUNK, CHUNK + 1, 3 * CHUNK + 7])
@pytest.mark.parametrize("winner", [COMPILED, SKLEARN])
def test_the_chosen_predictor_scores_only_the_rows_after_the_probe(n: int, winner: str) -> None:
    fast, sk = Compiled(SLOW if winner == SKLEARN else 0), Pyfunc(SLOW if winner == COMPILED else 0)
    choice, answers, _ = run("auto", n, fast, sk)
    assert choice.kind == winner, choice.reason
    chosen, other = (fast, sk) if winner == COMPILED else (sk, fast)
    assert other.calls == [(0, PROBE)]
    assert chosen.calls == [(0, PROBE), *grid(PROBE, n)]
    assert sum(b - a for a, b in chosen.calls) == n  # no row twice
    pd.testing.assert_series_equal(answers, all_at_once(n))
    pd.testing.assert_series_equal(answers, score.score(rows(n), sk, Choice(None, "", ""), ["x"]))


def test_when_the_answers_differ_scikit_learn_scores_every_row_as_before() -> None:
    n = 2 * CHUNK + 3
    fast, sk = Compiled(off=1), Pyfunc()
    choice, answers, rates = run("auto", n, fast, sk)
    assert (choice.kind, choice.code) == (SKLEARN, "parity_failed")
    assert choice.reason.startswith(f"the compiled form answered {PROBE} of the first {PROBE} rows")
    assert set(rates) == {COMPILED, SKLEARN}
    assert fast.calls == [(0, PROBE)]
    assert sk.calls == [(0, PROBE), *grid(0, n)]
    pd.testing.assert_series_equal(answers, all_at_once(n))


@pytest.mark.parametrize("requested", [COMPILED, SKLEARN])
@pytest.mark.parametrize("n", [7, 2 * CHUNK + 3])
def test_an_insisted_predictor_scores_every_row_once_without_a_probe(requested: str, n: int) -> None:
    fast, sk = Compiled(), Pyfunc()
    choice, answers, rates = run(requested, n, fast, sk)
    assert choice.kind == requested and rates == {}
    chosen, other = (fast, sk) if requested == COMPILED else (sk, fast)
    assert chosen.calls == grid(0, n) and other.calls == []
    pd.testing.assert_series_equal(answers, all_at_once(n))


def test_an_empty_input_is_not_probed() -> None:
    fast, sk = Compiled(), Pyfunc()
    choice, answers, rates = run("auto", 0, fast, sk)
    assert choice.kind == COMPILED and rates == {} and fast.calls == sk.calls == []
    pd.testing.assert_series_equal(answers, pd.Series([], dtype=float, name=score.PREDICTION))


def test_scoring_from_a_row_keeps_the_whole_frames_chunks() -> None:
    sk = Pyfunc()
    part = score.score(rows(60), sk, Choice(None, "", ""), ["x"], start=PROBE)
    assert sk.calls == [(10, 25), (25, 50), (50, 60)]
    pd.testing.assert_series_equal(part, all_at_once(60).iloc[PROBE:].reset_index(drop=True))
    assert score.score(rows(60), sk, Choice(None, "", ""), ["x"], start=60).empty
