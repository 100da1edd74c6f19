"""Training Temporal and TopK SAEs on a subject model's activations (`tempolens train`).

Python API::

    from tempolens.train import TrainConfig, train, evaluate_sae
    result = train(TrainConfig(arch="temporal", out="runs/t", n_tokens=1_000_000))
    result.eval["nmse"], result.eval["trimmed_nmse"]

``tempolens.train.activations_cache`` streams activations from the model or from an on-disk
fp16 cache (``build_cache`` / ``ActivationCache``) with a disjoint held-out split.
"""

from tempolens.train.activations_cache import ActivationCache, ActivationSpec, build_cache
from tempolens.train.evaluation import evaluate_sae
from tempolens.train.trainer import TrainConfig, TrainResult, train

__all__ = ["ActivationCache", "ActivationSpec", "TrainConfig", "TrainResult", "build_cache", "evaluate_sae", "train"]
