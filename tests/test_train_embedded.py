"""The shipped embedded SAEs: loadable by the public loaders (and SAELens for TopK), fp16 on disk, within budget."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import tempolens

SHIPPED = Path(tempolens.__file__).parent / "embedded_saes"


def shipped(kind: str) -> Path:
    folder = SHIPPED / kind
    if not folder.is_dir() or not any(folder.iterdir()):
        pytest.skip(f"embedded {kind} SAE not shipped in this checkout")
    return folder


def test_shipped_weights_fit_the_size_budget():
    files = [p for p in SHIPPED.rglob("*.safetensors")]
    if not files:
        pytest.skip("no shipped SAEs")
    assert sum(p.stat().st_size for p in files) <= 25_000_000


@pytest.mark.parametrize("kind", ["temporal", "topk"])
def test_embedded_sae_loads_in_fp32_and_has_its_evaluation(kind):
    from safetensors import safe_open

    from tempolens.saes.loading import load_sae

    folder = shipped(kind)
    sae = load_sae(f"embedded:{kind}")
    assert sae.d_in == 640 and sae.width == 1920
    assert all(p.dtype == torch.float32 for p in sae.parameters())
    weights = folder / ("latest_ckpt.safetensors" if kind == "temporal" else "sae_weights.safetensors")
    with safe_open(str(weights), framework="pt") as f:
        assert all(f.get_slice(k).get_dtype() == "F16" for k in f.keys())
    ev = json.loads((folder / "eval.json").read_text())
    assert ev["split"] == "heldout" and ev["tokens_seen"] >= 1_000_000
    for key in ("nmse", "fve", "trimmed_nmse", "dead_fraction", "l0"):
        assert key in ev
    if kind == "temporal":
        assert sae.is_temporal and {"pred_share", "nmse_novel_only", "nmse_pred_only"} <= set(ev)
    x = torch.randn(1, 6, 640) * 300 + sae.b_dec.detach()
    enc = sae.encode(x)
    assert enc.codes.indices.shape == (1, 6, 32)


def test_embedded_topk_reads_the_same_in_saelens():
    from sae_lens import SAE as SLSAE

    from tempolens.saes.loading import load_sae

    folder = shipped("topk")
    ours = load_sae(str(folder))
    sl = SLSAE.load_from_disk(str(folder), device="cpu", dtype="float32")
    x = torch.randn(5, 640) * 300 + ours.b_dec.detach()
    dense = ours.encode(x[None]).codes.to_dense(1920)[0]
    ref = sl.encode(x)
    assert torch.allclose(ref, dense, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("kind", ["temporal", "topk"])
def test_shipped_sae_was_trained_at_the_default_block(kind):
    """`tempolens run` with no options reads the default block; the shipped pair must have been trained there
    (the loader refuses an SAE whose metadata names another block)."""
    from tempolens.saes.fit import recorded_hook_layer
    from tempolens.saes.loading import load_sae
    from tempolens.sources.options import ModelOptions

    shipped(kind)
    assert recorded_hook_layer(load_sae(f"embedded:{kind}")) == ModelOptions().layer
