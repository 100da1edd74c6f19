"""Score metrics as small pure functions: accuracy, balanced accuracy, AUROC, bootstrap CIs.

Every function takes plain Python sequences (or numpy arrays) and returns floats, so the math
is testable on hand-made cases and shared by every scorer and the report. AUROC and the bootstrap
are the package's one implementation in ``tempolens.stats.estimators``, re-exported here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from tempolens.stats.estimators import auroc, bootstrap_ci

__all__ = ["accuracy", "auroc", "balanced_accuracy", "bootstrap_ci", "mean"]


def accuracy(pred: Sequence[bool], truth: Sequence[bool]) -> float:
    """Fraction of positions where ``pred == truth`` (NaN for empty input)."""
    p = np.asarray(pred, dtype=bool)
    t = np.asarray(truth, dtype=bool)
    if p.shape != t.shape:
        raise ValueError(f"pred and truth differ in length ({p.size} vs {t.size})")
    if p.size == 0:
        return math.nan
    return float((p == t).mean())


def balanced_accuracy(pred: Sequence[bool], truth: Sequence[bool]) -> float:
    """Mean of the true-positive rate and the true-negative rate.

    When one class is absent from ``truth`` only the other class's rate is used (the
    convention of scikit-learn's ``balanced_accuracy_score``: the mean recall over present classes).
    """
    p = np.asarray(pred, dtype=bool)
    t = np.asarray(truth, dtype=bool)
    if p.shape != t.shape:
        raise ValueError(f"pred and truth differ in length ({p.size} vs {t.size})")
    rates = []
    if t.any():
        rates.append(float(p[t].mean()))
    if (~t).any():
        rates.append(float((~p[~t]).mean()))
    return float(np.mean(rates)) if rates else math.nan


def mean(values: Sequence[float]) -> float:
    """Mean ignoring NaNs (NaN when nothing is left)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    return float(v.mean()) if v.size else math.nan
