"""SAEs: the common interface, the Temporal SAE, standard SAEs, loading/saving and random init.

``load_sae(spec)`` is the entry point: a folder (Temporal ``conf.yaml`` layout or SAELens layout),
``hf://owner/repo/sub/folder``, ``saelens://release/sae_id``, ``random:temporal?...``/``random:topk?...``
or ``embedded[:temporal|:topk]``. ``SAE.encode(x [B, L, d_in]) → EncodeOutput`` everywhere.
"""

from tempolens.saes.base import SAE, EncodeOutput, SparseCodes, token_extras
from tempolens.saes.loading import (
    from_saelens,
    load_folder,
    load_sae,
    read_checkpoint,
    read_temporal_conf,
    save_standard_sae,
    save_temporal_sae,
)
from tempolens.saes.random_init import (
    activation_mean,
    estimate_scaling,
    needs_activation_stats,
    parse_random_spec,
    random_temporal_sae,
    random_topk_sae,
    sae_from_spec_with_stats,
)
from tempolens.saes.standard import StandardConfig, StandardSAE
from tempolens.saes.temporal import TemporalConfig, TemporalDetails, TemporalSAE, predicted_share, sparse_decode

__all__ = [
    "SAE",
    "EncodeOutput",
    "SparseCodes",
    "StandardConfig",
    "StandardSAE",
    "TemporalConfig",
    "TemporalDetails",
    "TemporalSAE",
    "activation_mean",
    "estimate_scaling",
    "from_saelens",
    "load_folder",
    "load_sae",
    "needs_activation_stats",
    "parse_random_spec",
    "predicted_share",
    "random_temporal_sae",
    "random_topk_sae",
    "read_checkpoint",
    "read_temporal_conf",
    "sae_from_spec_with_stats",
    "save_standard_sae",
    "save_temporal_sae",
    "sparse_decode",
    "token_extras",
]
