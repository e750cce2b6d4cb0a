"""The quality gate: a pure decision from holdout scores to the aliases a new version gets.

- no score, or below the threshold           -> no alias
- meets the threshold                        -> `challenger`
- also beats the champion by the margin      -> `champion` as well (when auto-promotion is on)
  (no champion yet counts as beaten; "beats" is strict, so an equal score does not promote)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mlship import names

CHAMPION = names.CHAMPION
CHALLENGER = names.CHALLENGER
REJECTED = "rejected"  # the verdict of a version the gate gave no alias


@dataclass(frozen=True)
class GateInput:
    metric: str
    higher_is_better: bool
    score: float | None
    threshold: float | None = None  # minimum (or maximum, for lower-is-better metrics)
    champion_version: str | None = None
    champion_score: float | None = None  # None with a version: champion not comparable
    margin: float = 0.0
    auto_promote: bool = True


@dataclass(frozen=True)
class Decision:
    aliases: tuple[str, ...]
    reason: str

    @property
    def promoted(self) -> bool:
        return CHAMPION in self.aliases

    @property
    def verdict(self) -> str:
        if self.promoted:
            return CHAMPION
        return CHALLENGER if self.aliases else REJECTED


def _fmt(x: float) -> str:
    return f"{x:.4f}"


def improvement(inp: GateInput) -> float:
    assert inp.score is not None and inp.champion_score is not None  # noqa: S101 - caller checks
    diff = inp.score - inp.champion_score
    return diff if inp.higher_is_better else -diff


def decide(inp: GateInput) -> Decision:
    if inp.margin < 0:
        raise ValueError(f"promotion margin must be >= 0, got {inp.margin}")
    m = inp.metric
    if inp.score is None or not math.isfinite(inp.score):
        return Decision((), f"{m} could not be computed on the holdout: not promoted")
    if inp.threshold is not None:
        ok = inp.score >= inp.threshold if inp.higher_is_better else inp.score <= inp.threshold
        if not ok:
            word = "below the minimum" if inp.higher_is_better else "above the maximum"
            return Decision(
                (),
                f"{m} {_fmt(inp.score)} is {word} {_fmt(inp.threshold)}: not promoted",
            )
    passed = f"{m} {_fmt(inp.score)} meets the threshold"
    if inp.champion_version is None:
        if not inp.auto_promote:
            return Decision((CHALLENGER,), f"{passed}; no champion yet but auto-promotion is off")
        return Decision((CHALLENGER, CHAMPION), f"{passed}; no champion yet: promoted to champion")
    champ = f"champion v{inp.champion_version}"
    if inp.champion_score is None or not math.isfinite(inp.champion_score):
        return Decision(
            (CHALLENGER,),
            f"{passed}; {champ} could not be scored on this holdout, so it is not replaced "
            "automatically",
        )
    gain = improvement(inp)
    vs = f"{champ} has {_fmt(inp.champion_score)}"
    if gain <= 0 or gain < inp.margin:
        need = f"by at least {_fmt(inp.margin)}" if inp.margin else "strictly"
        return Decision((CHALLENGER,), f"{passed}; {vs}, not beaten {need}: stays challenger")
    if not inp.auto_promote:
        return Decision((CHALLENGER,), f"{passed}; beats {vs} but auto-promotion is off")
    return Decision((CHALLENGER, CHAMPION), f"{passed}; beats {vs} by {_fmt(gain)}: champion")
