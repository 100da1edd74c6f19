"""tempolens.stats: per-latent statistics of a code store and logit effects of decoder directions.

- :mod:`tempolens.stats.accumulators` — mergeable accumulators (``update(shard)``, ``merge(other)``,
  ``result()``): counts/sums/max, top-k examples, histograms, seeded interval samples, co-activation sums;
- :mod:`tempolens.stats.features` — :func:`compute_feature_stats` (the passes over a store),
  :class:`FeatureStats`, :func:`neuron_alignment`;
- :mod:`tempolens.stats.examples` — which examples dashboards show (:func:`examples_of`) and their token
  windows (:func:`gather_windows`, :func:`example_windows`, :class:`Windows`);
- :mod:`tempolens.stats.logits` — :func:`logit_effects` (streaming top/bottom-k and vocabulary histograms).
- :mod:`tempolens.stats.logit_kernels`, :mod:`tempolens.stats.pair_kernels` — compiled (numba) CPU passes, bit-identical
  to their torch references (vocabulary histograms and top-k candidates; correlated-latent ranking).
"""

from tempolens.stats.examples import Windows, example_windows, examples_of, gather_windows
from tempolens.stats.features import FeatureStats, compute_feature_stats, neuron_alignment
from tempolens.stats.logits import LogitEffects, logit_effects

__all__ = [
    "FeatureStats",
    "Windows",
    "compute_feature_stats",
    "example_windows",
    "examples_of",
    "gather_windows",
    "neuron_alignment",
    "LogitEffects",
    "logit_effects",
]
