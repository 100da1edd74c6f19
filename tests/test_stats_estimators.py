"""The one AUROC and the bootstraps (tempolens.stats.estimators) shared by autointerp, kernels and training."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tempolens.stats.estimators import auroc, bootstrap_ci, bootstrap_units_ci


def test_auroc_hand_computed_with_ties():
    # pos = [1, 2, 2, 4], neg = [0, 2, 3]; pairs (p > n) + ½ (p == n):
    # 1: >0 → 1;  2: >0, =2 → 1.5 (twice);  4: >0, >2, >3 → 3  ⇒  7 / 12
    assert auroc([1, 2, 2, 4], [0, 2, 3]) == 7 / 12
    assert auroc([5.0], [5.0, 5.0]) == 0.5
    assert auroc([3, 4], [1, 2]) == 1.0 and auroc([1, 2], [3, 4]) == 0.0
    assert math.isnan(auroc([], [1.0])) and math.isnan(auroc([1.0], []))


def test_auroc_equals_the_pairwise_count_exactly_for_every_input_type():
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        npos, nneg = (int(x) for x in torch.randint(1, 60, (2,), generator=g))
        pos = (torch.randn(npos, generator=g) * 2).round()  # many ties
        neg = (torch.randn(nneg, generator=g) * 2 + 0.5).round()
        p, n = pos.double(), neg.double()
        pairs = float(
            ((p[:, None] > n[None, :]).double().sum() + 0.5 * (p[:, None] == n[None, :]).double().sum()) / (npos * nneg)
        )
        assert auroc(pos, neg) == pairs  # tensors
        assert auroc(pos.numpy(), neg.numpy()) == pairs  # numpy
        assert auroc(pos.tolist(), neg.tolist()) == pairs  # lists


def test_bootstrap_ci_pinned_for_a_seed():
    vals = [0.6, 0.7, 0.8, 0.9, 1.0, 0.5, 0.75]
    lo, hi = bootstrap_ci(vals, n_boot=4000, seed=1)
    rng = np.random.default_rng(1)
    means = np.asarray(vals)[rng.integers(0, len(vals), size=(4000, len(vals)))].mean(1)
    assert (lo, hi) == tuple(float(q) for q in np.quantile(means, [0.025, 0.975]))
    assert bootstrap_ci([0.3]) == (0.3, 0.3)


def test_bootstrap_units_ci_pinned_for_a_seed():
    v = torch.tensor([0.1, 0.4, 0.35, 0.8, 0.2], dtype=torch.float64)
    lo, hi = bootstrap_units_ci(5, lambda pick: float(v[pick].mean()), n_boot=500, seed=7)
    g = torch.Generator().manual_seed(7)
    means = v[torch.randint(0, 5, (500, 5), generator=g)].mean(1)  # the same draws, all at once
    assert (lo, hi) == (float(torch.quantile(means, 0.025)), float(torch.quantile(means, 0.975)))
    assert lo < float(v.mean()) < hi
    assert all(math.isnan(x) for x in bootstrap_units_ci(1, lambda pick: 0.0))
    assert all(math.isnan(x) for x in bootstrap_units_ci(4, lambda pick: math.nan))
    assert bootstrap_units_ci(3, lambda pick: 0.25, n_boot=10) == pytest.approx((0.25, 0.25))
