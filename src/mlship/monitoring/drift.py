"""Per-feature drift between a reference sample (a model's training data) and recent inputs.

Numeric features: the two-sample Kolmogorov–Smirnov test. Categorical features (strings,
booleans): the chi-square test of homogeneity on the category counts. Both also get the
population stability index (PSI), the figure people compare with their rules of thumb
(< 0.1 stable, 0.1–0.25 moderate, > 0.25 major shift).

A feature has drifted when its test rejects "same distribution" at a Bonferroni-corrected
level (alpha / number of features, so checking more features does not raise more false alarms)
AND the shift is large enough to matter (KS statistic or PSI at least `min_effect`): with many
rows, a test alone flags differences too small to hurt a model. The inputs have drifted when
the share of drifted features reaches `threshold`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy import stats

from mlship import contract

DEFAULT_ALPHA = 0.05
DEFAULT_THRESHOLD: float = contract.DRIFT_FORM["threshold"].default  # the pipeline's (mlship_drift's form)
DEFAULT_MIN_EFFECT = 0.1
PSI_BINS = 10
_EPS = 1e-4  # PSI of an empty bin would be infinite


@dataclass(frozen=True)
class FeatureDrift:
    feature: str
    kind: str  # "numeric" or "categorical"
    test: str  # "ks" or "chi2"
    statistic: float
    p_value: float
    psi: float
    drifted: bool
    reference_rows: int
    current_rows: int


@dataclass(frozen=True)
class DriftReport:
    features: tuple[FeatureDrift, ...]
    alpha: float
    threshold: float
    min_effect: float

    @property
    def drifted_features(self) -> list[str]:
        return [f.feature for f in self.features if f.drifted]

    @property
    def drifted_share(self) -> float:
        return len(self.drifted_features) / len(self.features)

    @property
    def drifted(self) -> bool:
        return self.drifted_share >= self.threshold

    def summary(self) -> str:
        share = f"{len(self.drifted_features)} of {len(self.features)} features drifted"
        if not self.drifted_features:
            return f"{share} (threshold {self.threshold:.0%})"
        worst = sorted((f for f in self.features if f.drifted), key=lambda f: f.p_value)
        named = ", ".join(f"{f.feature} ({f.test} p={f.p_value:.2g}, PSI {f.psi:.2f})" for f in worst)
        return f"{share} (threshold {self.threshold:.0%}): {named}"

    def table(self) -> pd.DataFrame:
        return pd.DataFrame([asdict(f) for f in self.features])


class DriftError(ValueError):
    """The two samples cannot be compared; the message says why."""


def feature_kind(values: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(values) or not pd.api.types.is_numeric_dtype(values):
        return "categorical"
    return "numeric"


def psi(reference: np.ndarray, current: np.ndarray) -> float:
    """PSI of two frequency vectors over the same bins."""
    ref = np.clip(reference / reference.sum(), _EPS, None)
    cur = np.clip(current / current.sum(), _EPS, None)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def numeric_psi(reference: np.ndarray, current: np.ndarray, bins: int = PSI_BINS) -> float:
    # Bin edges at the reference's quantiles; values outside its range fall in the end bins.
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1]))

    def counts(values: np.ndarray) -> np.ndarray:
        bins = np.searchsorted(edges, values, side="right")
        return np.bincount(bins, minlength=len(edges) + 1).astype(float)

    return psi(counts(reference), counts(current))


def numeric_drift(
    name: str, reference: pd.Series, current: pd.Series, alpha: float, min_effect: float
) -> FeatureDrift:
    ref = reference.dropna().to_numpy(dtype=float)
    cur = current.dropna().to_numpy(dtype=float)
    result = stats.ks_2samp(ref, cur)
    value = numeric_psi(ref, cur)
    return FeatureDrift(
        feature=name,
        kind="numeric",
        test="ks",
        statistic=float(result.statistic),
        p_value=float(result.pvalue),
        psi=value,
        drifted=bool(result.pvalue < alpha and result.statistic >= min_effect),
        reference_rows=len(ref),
        current_rows=len(cur),
    )


def categorical_drift(
    name: str, reference: pd.Series, current: pd.Series, alpha: float, min_effect: float
) -> FeatureDrift:
    ref = reference.astype("string").fillna("<null>")
    cur = current.astype("string").fillna("<null>")
    categories = sorted(set(ref.unique()) | set(cur.unique()))
    ref_counts = ref.value_counts().reindex(categories, fill_value=0).to_numpy(dtype=float)
    cur_counts = cur.value_counts().reindex(categories, fill_value=0).to_numpy(dtype=float)
    if len(categories) < 2:  # one category on both sides: nothing can have moved
        statistic, p_value = 0.0, 1.0
    else:
        result = stats.chi2_contingency(np.vstack([ref_counts, cur_counts]))
        statistic, p_value = float(result.statistic), float(result.pvalue)
    value = psi(ref_counts, cur_counts)
    return FeatureDrift(
        feature=name,
        kind="categorical",
        test="chi2",
        statistic=statistic,
        p_value=p_value,
        psi=value,
        drifted=bool(p_value < alpha and value >= min_effect),
        reference_rows=len(ref),
        current_rows=len(cur),
    )


def compare(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    alpha: float = DEFAULT_ALPHA,
    threshold: float = DEFAULT_THRESHOLD,
    min_effect: float = DEFAULT_MIN_EFFECT,
) -> DriftReport:
    """Compare every column of `current` with the same column of `reference`."""
    if not 0 < alpha < 1:
        raise DriftError(f"alpha={alpha} must be between 0 and 1")
    if not 0 < threshold <= 1:
        raise DriftError(f"threshold={threshold} must be in (0, 1]")
    missing = [c for c in current.columns if c not in reference.columns]
    if missing:
        raise DriftError(f"features not in the reference data: {', '.join(map(str, missing))}")
    if current.columns.empty:
        raise DriftError("no features to compare")
    per_feature_alpha = alpha / len(current.columns)
    results = []
    for name in current.columns:
        ref, cur = reference[name], current[name]
        for side, values in (("training", ref), ("recent", cur)):
            if values.dropna().empty:
                raise DriftError(f"feature {name!r} has no values in the {side} data")
        numeric = feature_kind(ref) == feature_kind(cur) == "numeric"
        check = numeric_drift if numeric else categorical_drift
        results.append(check(str(name), ref, cur, per_feature_alpha, min_effect))
    return DriftReport(tuple(results), alpha=alpha, threshold=threshold, min_effect=min_effect)
