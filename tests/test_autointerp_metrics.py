import math

import numpy as np
import pytest

from tempolens.autointerp.metrics import accuracy, auroc, balanced_accuracy, bootstrap_ci, mean


def test_accuracy_none_baseline_saebench():
    # 14 windows, 4 positives: answering "None" is right on the 10 negatives
    truth = [True] * 4 + [False] * 10
    assert accuracy([False] * 14, truth) == pytest.approx(10 / 14)
    assert round(10 / 14, 3) == 0.714
    assert accuracy(truth, truth) == 1.0
    assert math.isnan(accuracy([], []))
    with pytest.raises(ValueError):
        accuracy([True], [True, False])


def test_balanced_accuracy_hand_cases():
    truth = [1, 1, 0, 0, 0, 0]
    assert balanced_accuracy([1, 0, 0, 0, 0, 1], truth) == pytest.approx((0.5 + 0.75) / 2)
    assert balanced_accuracy([0] * 6, truth) == pytest.approx(0.5)  # all-negative = chance
    assert balanced_accuracy([1] * 6, truth) == pytest.approx(0.5)
    assert balanced_accuracy([1, 1], [1, 1]) == 1.0  # one class present: its recall
    assert balanced_accuracy([0, 1], [0, 0]) == 0.5


def test_auroc_hand_cases_and_ties():
    assert auroc([3, 4], [1, 2]) == 1.0
    assert auroc([1, 2], [3, 4]) == 0.0
    assert auroc([1, 1], [1, 1]) == 0.5  # all tied
    # pairs: (2>1)=1, (2 vs 2)=.5, (3>1)=1, (3>2)=1 → 3.5/4
    assert auroc([2, 3], [1, 2]) == pytest.approx(3.5 / 4)
    assert math.isnan(auroc([], [1]))


def test_auroc_matches_bruteforce_pairs():
    rng = np.random.default_rng(0)
    for _ in range(20):
        pos = rng.integers(0, 5, rng.integers(1, 12)).astype(float)
        neg = rng.integers(0, 5, rng.integers(1, 12)).astype(float)
        brute = np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])
        assert auroc(pos, neg) == pytest.approx(brute)


def test_bootstrap_ci_seeded_percentile():
    vals = [0.6, 0.7, 0.8, 0.9, 1.0, 0.5, 0.75]
    lo, hi = bootstrap_ci(vals, n_boot=4000, seed=1)
    assert (lo, hi) == bootstrap_ci(vals, n_boot=4000, seed=1)
    assert lo < np.mean(vals) < hi
    # reference: the same percentile bootstrap by hand
    rng = np.random.default_rng(1)
    idx = rng.integers(0, len(vals), size=(4000, len(vals)))
    means = np.asarray(vals)[idx].mean(1)
    assert (lo, hi) == pytest.approx(tuple(np.quantile(means, [0.025, 0.975])))
    assert bootstrap_ci([0.3]) == (0.3, 0.3)
    assert all(math.isnan(x) for x in bootstrap_ci([]))
    assert bootstrap_ci([1.0, float("nan"), 1.0]) == (1.0, 1.0)
    assert mean([1.0, float("nan"), 3.0]) == 2.0
