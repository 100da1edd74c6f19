"""Score metrics as small pure functions: accuracy, balanced accuracy, AUROC, bootstrap CIs.

Every function takes plain Python sequences (or numpy arrays) and returns floats, so the math
is testable on hand-made cases and shared by every scorer and the report.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np


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


def auroc(pos_scores: Sequence[float], neg_scores: Sequence[float]) -> float:
    """Area under the ROC curve = P(score of a random positive > a random negative), ties count 1/2.

    Computed from average ranks (Mann–Whitney U), so it is exact with ties.
    NaN when either group is empty.
    """
    pos = np.asarray(pos_scores, dtype=np.float64).ravel()
    neg = np.asarray(neg_scores, dtype=np.float64).ravel()
    if pos.size == 0 or neg.size == 0:
        return math.nan
    allv = np.concatenate([pos, neg])
    order = np.argsort(allv, kind="mergesort")
    ranks = np.empty(allv.size, dtype=np.float64)
    sorted_v = allv[order]
    # average ranks of tied groups (1-based)
    n = allv.size
    starts = np.flatnonzero(np.r_[True, sorted_v[1:] != sorted_v[:-1]])
    ends = np.r_[starts[1:], n]
    for s, e in zip(starts, ends):
        ranks[order[s:e]] = (s + 1 + e) / 2.0
    r_pos = ranks[: pos.size].sum()
    u = r_pos - pos.size * (pos.size + 1) / 2.0
    return float(u / (pos.size * neg.size))


def mean(values: Sequence[float]) -> float:
    """Mean ignoring NaNs (NaN when nothing is left)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    return float(v.mean()) if v.size else math.nan


def bootstrap_ci(values: Sequence[float], n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean (NaNs dropped; seeded, deterministic).

    Resamples the values with replacement ``n_boot`` times and returns the ``(1-level)/2`` and
    ``(1+level)/2`` quantiles of the resampled means. One value gives ``(v, v)``; none gives NaNs.
    """
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    if v.size == 0:
        return (math.nan, math.nan)
    if v.size == 1:
        return (float(v[0]), float(v[0]))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, v.size, size=(n_boot, v.size))
    means = v[idx].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return (float(lo), float(hi))
