"""Ground truth for the trainer: on synthetic event sequences a Temporal SAE trained by `tempolens train`
must show the paper's split — its predicted codes carry the events, its novel codes and a TopK twin do not."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from tempolens.errors import ConfigError
from tempolens.saes.loading import load_sae
from tempolens.train import trainer as T
from tempolens.train.event_check import EventSequence, event_check, kernel_images
from tempolens.train.synthetic import SyntheticConfig, SyntheticSource, parse_synthetic

torch.set_num_threads(1)
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "synthetic"


def test_generator_has_the_promised_structure():
    src = SyntheticSource(
        T.ActivationSpec(
            model="synthetic:dominant", layer=0, corpus="-", prompt_len=128, n_prompts=40, n_heldout=4, seed=0
        )
    )
    acts, special = src.fetch(torch.arange(32))
    labels = src.labels(torch.arange(32))
    assert acts.shape == (32, 128, 64) and special[:, 0].all() and not special[:, 1:].any()
    # pure function of (seed, prompt id)
    again, _ = src.fetch(torch.tensor([3]))
    assert torch.equal(again[0], acts[3])
    n_events = [int(lab[1:].max()) + 1 for lab in labels]
    assert min(n_events) >= 3 and max(n_events) <= 5 and (labels[:, 0] == -1).all()
    # the dominant direction u = e0 holds ≈39% of the centred variance of the non-massive regular tokens
    x = acts[:, 1:].reshape(-1, 64)
    norms = x.norm(dim=-1)
    massive = norms > 4 * norms.median()
    assert 0.005 < float(massive.float().mean()) < 0.03
    xc = x[~massive] - x[~massive].mean(0)
    share = float(xc[:, 0].pow(2).sum() / xc.pow(2).sum())
    assert 0.33 < share < 0.45, share
    # BOS is massive along u
    assert float(acts[:, 0, 0].abs().min()) > 10 * float(norms.median())
    assert parse_synthetic("embedded") is None
    with pytest.raises(ConfigError):
        SyntheticConfig(variant="nope")


def _cfg(arch: str, out: Path, **kw) -> T.TrainConfig:
    base = dict(
        arch=arch,
        out=out,
        model="synthetic:dominant",
        n_tokens=127 * 96,
        prompt_len=128,
        heldout_fraction=0.1,
        batch_prompts=4,
        width=128,
        k=4,
        n_heads=4,
        bottleneck_factor=1,
        lr=2e-3,
        warmup_steps=20,
        max_steps=300,
        lr_schedule="constant",
        checkpoint_every=100,
        log_every=10,
        curve_every=50,
        progress=False,
        seed=0,
        loss_norm_cap=3.0,
        direction_penalty=1.0,
        init_batches=2,
        dead_window_tokens=20_000,
    )
    base.update(kw)
    return T.TrainConfig(**base)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    tem = T.train(_cfg("temporal", root / "temporal"))
    twin = T.train(_cfg("topk", root / "topk"))
    return root, tem, twin


def test_temporal_sae_on_synthetic_events_shows_the_papers_split(trained):
    root, tem, twin = trained
    sae, topk = load_sae(str(root / "temporal")), load_sae(str(root / "topk"))
    src = SyntheticSource(T.activation_spec(_cfg("temporal", root / "temporal"), "float32"))
    ids = src.spec.split_ids("heldout")
    acts, _ = src.fetch(ids)
    labels = src.labels(ids)
    seqs = [EventSequence(acts[i], labels[i]) for i in range(len(ids))]
    res = event_check(sae, topk, seqs)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    evals = {
        a: {k: r.eval[k] for k in ("nmse", "trimmed_nmse", "train_seconds")}
        for a, r in (("temporal", tem), ("topk", twin))
    }
    (ARTIFACTS / "event_check.json").write_text(json.dumps(res | {"eval": evals}, indent=1))
    kernel_images(sae, topk, seqs[0], ARTIFACTS / "kernels.png", title="synthetic:dominant, held-out sequence")
    for arch in ("temporal", "topk"):
        png = root / arch / "learning_curves.png"
        assert png.stat().st_size > 5000
        (ARTIFACTS / f"learning_curves_{arch}.png").write_bytes(png.read_bytes())
    pred, novel, tw = res["pred"], res["novel"], res["twin"]
    # the predicted codes carry the events ...
    assert pred["boundary_auroc"] >= 0.9 and pred["within_across_auroc"] >= 0.9, res
    # ... well above the novel codes and the twin (CIs disjoint)
    assert pred["block_contrast_ci95"][0] > novel["block_contrast_ci95"][1] + 0.2, res
    assert pred["block_contrast_ci95"][0] > tw["block_contrast_ci95"][1] + 0.2, res
    # inside events (from an event's third token on) the context predicts clearly more of each token than at
    # event starts, where the context belongs to the previous event; and the predictor did not collapse
    assert res["pred_share_inside_events"] > 0.2, res
    assert res["pred_share_inside_events"] > 1.25 * res["pred_share_event_starts"], res
    assert res["zpred_top1_share"] < 0.5, res
    # reconstruction: no worse than the twin on the trimmed tokens, and D moved off its init
    assert tem.eval["trimmed_nmse"] <= twin.eval["trimmed_nmse"] * 1.1, (
        tem.eval["trimmed_nmse"],
        twin.eval["trimmed_nmse"],
    )
    steps, curves = T.read_log(root / "temporal" / "train_log.jsonl")
    assert [c["step"] for c in curves][:2] == [0, 50] and curves[-1]["step"] == 300
    last = curves[-1]["curve"]
    assert last["d_cos_init_median"] < 0.9 and last["zpred_top1_share"] < 0.5
    assert last["attn_entropy"] < 0.9 * last["attn_entropy_uniform"]  # sharper than uniform causal attention


def test_checkpoint_records_the_loss_mask_and_the_recipe(trained):
    import yaml

    root, _, _ = trained
    conf = yaml.safe_load((root / "temporal" / "conf.yaml").read_text())
    meta = conf["tempolens"]
    assert meta["loss_norm_cap"] == 3.0
    assert meta["loss_norm_threshold"] == pytest.approx(3.0 * meta["median_token_norm"])
    assert meta["lr_rule"] == "rms" and meta["attn_init"] == "data" and meta["direction_penalty"] == 1.0
    cfg = json.loads((root / "temporal" / "train_config.json").read_text())
    mults = cfg["lr_multipliers"]
    # D (entries ≈2) gets ≈100× the rate of the floor-limited biases
    assert mults["D"] == pytest.approx(10 * 2.0, rel=0.05) and mults["attn_layers.0.q_target.bias"] == pytest.approx(
        0.1
    )
    assert math.isfinite(cfg["median_token_norm"])
