"""Feature layout and the seeded train/holdout split (pure)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd
from sklearn.model_selection import train_test_split

from mlship.errors import BadInput


@dataclass(frozen=True)
class FeatureSpec:
    target: str
    task: str
    numeric: list[str]
    categorical: list[str]

    @property
    def columns(self) -> list[str]:
        return [*self.numeric, *self.categorical]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureSpec:
        return cls(d["target"], d["task"], list(d["numeric"]), list(d["categorical"]))


def feature_spec(frame: pd.DataFrame, target: str, task: str) -> FeatureSpec:
    numeric, categorical = [], []
    for name in frame.columns:
        if name == target:
            continue
        s = frame[name]
        if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
            numeric.append(str(name))
        else:
            categorical.append(str(name))
    return FeatureSpec(target, task, numeric, categorical)


def split(
    frame: pd.DataFrame, spec: FeatureSpec, holdout_fraction: float, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    if not 0 < holdout_fraction < 1:
        raise BadInput(f"holdout fraction must be between 0 and 1, got {holdout_fraction}")
    n_holdout = round(len(frame) * holdout_fraction)
    if n_holdout < 1 or len(frame) - n_holdout < 2:
        raise BadInput(
            f"{len(frame)} rows are too few for a {holdout_fraction:.0%} holdout split"
        )
    stratify = None
    if spec.task == "classification":
        counts = frame[spec.target].value_counts()
        # stratify only when every class can appear on both sides
        if counts.min() >= 2 and n_holdout >= len(counts):
            stratify = frame[spec.target]
    # the row count checked above, not the fraction: sklearn would round a fraction up (3 rows at
    # 34 % are 2 holdout rows and 1 to train on, which the check above never saw)
    train, holdout = train_test_split(frame, test_size=n_holdout, random_state=seed, stratify=stratify)
    return train.reset_index(drop=True), holdout.reset_index(drop=True)
