"""The drift report as a picture: per feature, the training data next to the recent inputs."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from mlship.monitoring.drift import DriftReport, FeatureDrift

DRIFTED, STABLE = "#c62828", "#2e7d32"


def figure(report: DriftReport, reference: pd.DataFrame, current: pd.DataFrame) -> Any:
    """A matplotlib Figure with one panel per feature (drifted ones titled in red)."""
    import matplotlib

    matplotlib.use("Agg")  # no display in a pod
    import matplotlib.pyplot as plt

    n = len(report.features)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
    for ax, result in zip(axes.flat, report.features, strict=False):
        ref, cur = reference[result.feature].dropna(), current[result.feature].dropna()
        if result.kind == "numeric":
            _histograms(ax, ref.to_numpy(dtype=float), cur.to_numpy(dtype=float))
        else:
            _bars(ax, ref.astype("string"), cur.astype("string"))
        ax.set_title(_title(result), color=DRIFTED if result.drifted else STABLE, fontsize=10)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    verdict = "DRIFT" if report.drifted else "no drift"
    counts = f"{len(report.drifted_features)} of {n} features drifted (threshold {report.threshold:.0%})"
    fig.suptitle(f"{verdict}: {counts}", fontsize=12, color=DRIFTED if report.drifted else STABLE)
    fig.tight_layout()
    return fig


def _title(result: FeatureDrift) -> str:
    mark = "drifted" if result.drifted else "stable"
    stat = "D" if result.test == "ks" else "chi2"
    figures = f"{stat}={result.statistic:.3g}  p={result.p_value:.2g}  PSI={result.psi:.2f}"
    return f"{result.feature} ({mark})\n{figures}"


def _histograms(ax: Any, ref: np.ndarray, cur: np.ndarray) -> None:
    both = np.concatenate([ref, cur])
    bins = np.histogram_bin_edges(both, bins=min(30, max(10, len(np.unique(both)))))
    ax.hist(ref, bins=bins, density=True, alpha=0.5, color="#1565c0", label=f"training ({len(ref)})")
    ax.hist(cur, bins=bins, density=True, alpha=0.5, color="#ef6c00", label=f"recent ({len(cur)})")


def _bars(ax: Any, ref: pd.Series, cur: pd.Series) -> None:
    shares = pd.DataFrame(
        {
            f"training ({len(ref)})": ref.value_counts(normalize=True),
            f"recent ({len(cur)})": cur.value_counts(normalize=True),
        }
    ).fillna(0.0)
    x = np.arange(len(shares))
    for offset, label, color in zip((-0.2, 0.2), shares.columns, ("#1565c0", "#ef6c00"), strict=True):
        ax.bar(x + offset, shares[label], width=0.4, color=color, alpha=0.8, label=label)
    ax.set_xticks(x, [str(c) for c in shares.index], rotation=30, fontsize=8)
