"""AUROC and percentile-bootstrap confidence intervals, as small pure functions.

The one implementation shared by the autointerp scores (``tempolens.autointerp.metrics``), the
event statistics of similarity kernels (``tempolens.temporal.events``) and the training-time event
check (``tempolens.train.event_check``).

Two bootstraps, one per random stream, because the published numbers of each caller depend on it:
``bootstrap_ci`` (numpy ``default_rng``; the mean of values, vectorised) and ``bootstrap_units_ci``
(``torch.Generator``; any statistic of units resampled with replacement, e.g. texts).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor


def _float64(scores: Any) -> np.ndarray:
    """``scores`` (a sequence, numpy array or tensor) as a flat float64 numpy array."""
    if isinstance(scores, Tensor):
        return scores.detach().double().cpu().numpy().ravel()
    return np.asarray(scores, dtype=np.float64).ravel()


def auroc(
    pos_scores: Sequence[float] | np.ndarray | Tensor, neg_scores: Sequence[float] | np.ndarray | Tensor
) -> float:
    """Area under the ROC curve = P(score of a random positive > a random negative), ties count 1/2.

    Computed from average ranks (Mann–Whitney U), so it is exact with ties: the numerator
    ``#(pos > neg) + ½·#(pos == neg)`` is a sum of half-integers, the same number the pairwise count gives.
    NaN when either group is empty.
    """
    pos = _float64(pos_scores)
    neg = _float64(neg_scores)
    if pos.size == 0 or neg.size == 0:
        return math.nan
    allv = np.concatenate([pos, neg])
    n = allv.size
    order = np.argsort(allv, kind="mergesort")
    sorted_v = allv[order]
    # average ranks of tied groups (1-based): a group at sorted positions [s, e) has rank (s + 1 + e) / 2
    new_group = np.r_[True, sorted_v[1:] != sorted_v[:-1]]
    starts = np.flatnonzero(new_group)
    ends = np.r_[starts[1:], n]
    ranks = np.empty(n, dtype=np.float64)
    ranks[order] = ((starts + 1 + ends) / 2.0)[np.cumsum(new_group) - 1]
    r_pos = ranks[: pos.size].sum()
    u = r_pos - pos.size * (pos.size + 1) / 2.0
    return float(u / (pos.size * neg.size))


def bootstrap_ci(
    values: Sequence[float], n_boot: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean (NaNs dropped; seeded, deterministic).

    Resamples the values with replacement ``n_boot`` times (numpy ``default_rng(seed)``) and returns
    the ``(1-level)/2`` and ``(1+level)/2`` quantiles of the resampled means. One value gives
    ``(v, v)``; none gives NaNs.
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


def bootstrap_units_ci(
    n_units: int, statistic: Callable[[Tensor], float], n_boot: int = 1000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile confidence interval of ``statistic`` over ``n_boot`` resamples of ``n_units`` units.

    Each resample draws ``n_units`` unit indices with replacement (``torch.randint`` on a
    ``torch.Generator`` seeded with ``seed``) and passes them, as an int64 tensor, to ``statistic``;
    NaN statistics are left out. NaNs with fewer than two units or no finite statistic.
    """
    if n_units < 2:
        return math.nan, math.nan
    g = torch.Generator().manual_seed(seed)
    vals = []
    for _ in range(n_boot):
        v = statistic(torch.randint(0, n_units, (n_units,), generator=g))
        if not math.isnan(v):
            vals.append(v)
    if not vals:
        return math.nan, math.nan
    t = torch.tensor(vals, dtype=torch.float64)
    a = (1 - level) / 2
    return float(torch.quantile(t, a)), float(torch.quantile(t, 1 - a))
