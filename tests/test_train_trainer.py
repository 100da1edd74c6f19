"""SAE training on a tiny real LM: loss goes down, checkpoints load, resume is exact, evaluation is right."""

from __future__ import annotations

import json
import math

import pytest
import torch
from test_train_cache import write_corpus

from tempolens.errors import ConfigError
from tempolens.train import trainer as T
from tempolens.train.activations_cache import ActivationCache

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus") / "docs.txt", n_docs=60)


def cfg_for(arch, tiny_lm_dir, corpus, out, cache, **kw):
    base = dict(
        arch=arch,
        out=out,
        model=str(tiny_lm_dir),
        layer=2,
        corpus=str(corpus),
        n_tokens=330,
        prompt_len=12,
        heldout_fraction=0.15,
        batch_prompts=4,
        width=64,
        k=4,
        n_heads=2,
        bottleneck_factor=2,
        lr=3e-3,
        warmup_steps=2,
        max_steps=16,
        checkpoint_every=4,
        log_every=1,
        cache_dir=str(cache),
        progress=False,
        dead_window_tokens=40,
        seed=1,
    )
    base.update(kw)
    return T.TrainConfig(**base)


def log(out):
    """The per-step lines of a run's log (the held-out learning-curve lines are read with ``curves``)."""
    return T.read_log(out / "train_log.jsonl")[0]


def curves(out):
    return T.read_log(out / "train_log.jsonl")[1]


@pytest.mark.parametrize("arch", ["topk", "temporal"])
def test_training_reduces_loss_and_writes_loadable_checkpoints(arch, tiny_lm_dir, corpus, tmp_path):
    from tempolens.saes.loading import load_sae

    cfg = cfg_for(arch, tiny_lm_dir, corpus, tmp_path / arch, tmp_path / "cache", max_steps=30, lr=1e-2)
    res = T.train(cfg)
    lines = log(cfg.out)
    first = sum(x["mse"] for x in lines[:3]) / 3
    last = sum(x["mse"] for x in lines[-3:]) / 3
    assert last < 0.85 * first, (first, last)
    assert res.steps == 30
    ev = json.loads((cfg.out / "eval.json").read_text())
    assert ev["evaluated"].startswith("saved checkpoint")
    assert 0 < ev["nmse"] < 1.5 and math.isclose(ev["fve"], 1 - ev["nmse"])
    assert ev["l0"] <= 4 + 1e-9
    sae = load_sae(str(cfg.out))
    assert sae.width == 64 and sae.d_in == 32
    if arch == "temporal":
        assert (cfg.out / "conf.yaml").exists() and (cfg.out / "latest_ckpt.safetensors").exists()
        assert sae.is_temporal and 0 <= ev["pred_share"] <= 1
        assert {"nmse_novel_only", "nmse_pred_only"} <= set(ev)
        import yaml

        conf = yaml.safe_load((cfg.out / "conf.yaml").read_text())
        state = torch.load(cfg.out / T.STATE_FILE, weights_only=True)
        assert conf["sae"]["scaling_factor"] == pytest.approx(state["scaling_factor"])
    else:
        assert (cfg.out / "cfg.json").exists() and (cfg.out / "sae_weights.safetensors").exists()
        # decoder rows stay unit-norm in the exported (model-unit) weights
        assert torch.allclose(sae.W_dec.norm(dim=-1), torch.ones(64), atol=1e-5)


def test_topk_checkpoint_matches_training_model_and_saelens(tiny_lm_dir, corpus, tmp_path):
    from sae_lens import SAE as SLSAE

    from tempolens.saes.loading import load_sae, save_standard_sae

    cfg = cfg_for("topk", tiny_lm_dir, corpus, tmp_path / "topk", tmp_path / "cache", max_steps=6)
    T.train(cfg)
    state = torch.load(cfg.out / T.STATE_FILE, weights_only=True)
    model = T.TopKTrainSAE(32, 64, 4, state["scaling_factor"])
    model.load_state_dict(state["sae"])
    acts, _ = ActivationCache(tmp_path / "cache").fetch(torch.arange(3))
    ours = model.encode(acts)
    loaded = load_sae(str(cfg.out))
    enc = loaded.encode(acts)
    assert torch.equal(enc.codes.indices, ours.codes.indices)
    assert torch.allclose(
        enc.codes.values, ours.codes.values, rtol=1e-4, atol=1e-4 * float(ours.codes.values.abs().max())
    )
    assert torch.allclose(enc.recon, ours.recon, rtol=1e-4, atol=1e-3)
    # SAELens reads the same folder and computes the same codes (independent implementation)
    sl = SLSAE.load_from_disk(str(cfg.out), device="cpu")
    sl_codes = sl.encode(acts.reshape(-1, 32))
    dense = enc.codes.to_dense(64).reshape(-1, 64)
    assert torch.allclose(sl_codes, dense, rtol=1e-4, atol=1e-4 * float(dense.abs().max()))
    assert torch.allclose(sl.decode(sl_codes), enc.recon.reshape(-1, 32), rtol=1e-4, atol=1e-3)
    # save → load → save → load is bit-exact (float16 shipping included)
    for dtype in (torch.float32, torch.float16):
        save_standard_sae(loaded, tmp_path / f"again-{dtype}", dtype=dtype)
        again = load_sae(str(tmp_path / f"again-{dtype}"))
        save_standard_sae(again, tmp_path / f"again2-{dtype}", dtype=dtype)
        again2 = load_sae(str(tmp_path / f"again2-{dtype}"))
        for (n, a), (_, b) in zip(again.state_dict().items(), again2.state_dict().items()):
            assert a.dtype == torch.float32 and torch.equal(a, b), n


def test_temporal_checkpoint_round_trips_bit_exactly(tiny_lm_dir, corpus, tmp_path):
    from tempolens.saes.loading import load_sae

    cfg = cfg_for("temporal", tiny_lm_dir, corpus, tmp_path / "t", tmp_path / "cache", max_steps=4)
    T.train(cfg)
    state = torch.load(cfg.out / T.STATE_FILE, weights_only=True)
    loaded = load_sae(str(cfg.out))
    for name, value in loaded.state_dict().items():
        assert torch.equal(value, state["sae"][name].reshape(value.shape)), name
    # float16 shipping: the loader runs fp16 weights in fp32, equal to the rounded weights
    half = cfg_for(
        "temporal", tiny_lm_dir, corpus, tmp_path / "t16", tmp_path / "cache", max_steps=4, weights_dtype="float16"
    )
    T.train(half)
    h = load_sae(str(half.out))
    assert h.D.dtype == torch.float32
    assert torch.equal(h.D, loaded.D.half().float())


def test_resume_continues_exactly(tiny_lm_dir, corpus, tmp_path, monkeypatch):
    for arch in ("topk", "temporal"):
        full = cfg_for(
            arch, tiny_lm_dir, corpus, tmp_path / f"full-{arch}", tmp_path / "cache", max_steps=10, checkpoint_every=3
        )
        T.train(full)
        part = cfg_for(
            arch, tiny_lm_dir, corpus, tmp_path / f"part-{arch}", tmp_path / "cache", max_steps=10, checkpoint_every=3
        )
        real_lr_at = T.lr_at

        def killed_at_7(step, cfg, total, real_lr_at=real_lr_at):
            if step == 7:
                raise KeyboardInterrupt
            return real_lr_at(step, cfg, total)

        monkeypatch.setattr(T, "lr_at", killed_at_7)
        with pytest.raises(KeyboardInterrupt):
            T.train(part)
        monkeypatch.setattr(T, "lr_at", real_lr_at)
        assert torch.load(part.out / T.STATE_FILE, weights_only=True)["step"] == 6
        with pytest.raises(ConfigError, match="--resume"):
            T.train(part)
        T.train(
            cfg_for(
                arch, tiny_lm_dir, corpus, part.out, tmp_path / "cache", max_steps=10, checkpoint_every=3, resume=True
            )
        )
        a = torch.load(full.out / T.STATE_FILE, weights_only=True)
        b = torch.load(part.out / T.STATE_FILE, weights_only=True)
        assert a["step"] == b["step"] == 10
        for name in a["sae"]:
            assert torch.equal(a["sae"][name], b["sae"][name]), (arch, name)
        assert torch.equal(a["since_fired"], b["since_fired"])
        la = [x["loss"] for x in log(full.out)]
        lb = [x["loss"] for x in log(part.out)]
        assert la == lb and len(lb) == 10 and [x["step"] for x in log(part.out)] == list(range(1, 11))
        # the held-out learning curves are resumed exactly too (no duplicate lines after the kill)
        assert curves(full.out) == curves(part.out) and [c["step"] for c in curves(part.out)] == [0, 10]
        if arch == "temporal":
            assert b["v1"] is None or torch.equal(a.get("v1"), b.get("v1"))
            assert a["lr_mult"] == b["lr_mult"] and torch.equal(a["decoder_init"], b["decoder_init"])
        with pytest.raises(ConfigError, match="width"):
            T.train(cfg_for(arch, tiny_lm_dir, corpus, part.out, tmp_path / "cache", width=32, resume=True))


def test_evaluate_sae_matches_brute_force(tiny_lm_dir, corpus, tmp_path):
    cfg = cfg_for("topk", tiny_lm_dir, corpus, tmp_path / "e", tmp_path / "cache", max_steps=3)
    T.train(cfg)
    from tempolens.saes.loading import load_sae

    sae = load_sae(str(cfg.out))
    cache = ActivationCache(tmp_path / "cache")
    ev = T.evaluate_sae(sae, cache, "heldout", batch_prompts=2)
    acts, special = cache.fetch(cache.spec.split_ids("heldout"))
    enc = sae.encode(acts)
    m = ~special
    x, r = acts[m].double(), enc.recon[m].double()
    err = (x - r).pow(2).sum()
    var = (x - x.mean(0)).pow(2).sum()
    assert ev["nmse"] == pytest.approx(float(err / var), rel=1e-6)
    assert ev["nmse_plain"] == pytest.approx(float(err / x.pow(2).sum()), rel=1e-6)
    # trimmed: tokens with norm ≤ the 90% quantile
    ev90 = T.evaluate_sae(sae, cache, "heldout", batch_prompts=2, trim_quantile=0.9)
    thr = torch.quantile(acts[m].norm(dim=-1).double(), 0.9)
    k = x.norm(dim=-1) <= thr
    xk, rk = x[k], r[k]
    assert ev90["trimmed_n_tokens"] == int(k.sum()) < int(m.sum())
    assert ev90["trimmed_nmse"] == pytest.approx(
        float((xk - rk).pow(2).sum() / (xk - xk.mean(0)).pow(2).sum()), rel=1e-6
    )
    assert ev90["nmse"] == pytest.approx(ev["nmse"], rel=1e-12)
    dense = enc.codes.to_dense(64)[m]
    assert ev["l0"] == pytest.approx(float((dense > 0).sum(-1).double().mean()))
    assert ev["dead_fraction"] == pytest.approx(float(((dense > 0).sum(0) == 0).double().mean()))
    assert ev["n_tokens"] == int(m.sum())


def test_temporal_evaluation_splits_match_dense_reference(tiny_lm_dir, corpus, tmp_path):
    from tempolens.saes.loading import load_sae

    cfg = cfg_for("temporal", tiny_lm_dir, corpus, tmp_path / "te", tmp_path / "cache", max_steps=3)
    T.train(cfg)
    sae = load_sae(str(cfg.out))
    cache = ActivationCache(tmp_path / "cache")
    ev = T.evaluate_sae(sae, cache, "heldout", batch_prompts=3)
    acts, special = cache.fetch(cache.spec.split_ids("heldout"))
    m = ~special
    s = sae.cfg.scaling_factor
    det = sae.forward_details(acts)
    D, b = sae.D.double(), sae.b.double().reshape(-1)
    r_nov = det.z_novel.double() @ D
    r_pred = det.z_pred.double() @ D
    x = acts[m].double()
    var = (x - x.mean(0)).pow(2).sum()
    nov_only = (r_nov + b) / s
    pred_only = (r_pred + b) / s
    assert ev["nmse_novel_only"] == pytest.approx(float((x - nov_only[m]).pow(2).sum() / var), rel=1e-4)
    assert ev["nmse_pred_only"] == pytest.approx(float((x - pred_only[m]).pow(2).sum() / var), rel=1e-4)
    share = r_pred[m].pow(2).sum() / (r_pred[m].pow(2).sum() + r_nov[m].pow(2).sum())
    assert ev["pred_share"] == pytest.approx(float(share), rel=1e-4)


def test_auxk_loss_matches_dense_reference():
    torch.manual_seed(0)
    sae = T.TopKTrainSAE(6, 10, 2)
    sae.init_weights(torch.Generator().manual_seed(0), torch.zeros(6))
    pre = torch.randn(5, 10)
    residual = torch.randn(5, 6)
    dead = torch.tensor([True, False, True, True, False, False, True, False, False, False])
    mask = torch.tensor([True, True, False, True, True])
    got = T.auxk_loss(sae, pre, residual, dead, mask, k_aux=3)
    # dense reference: the 3 largest pre-activations among the 4 dead latents, ReLU, decode
    ref_codes = torch.zeros(5, 10)
    for i in range(5):
        cand = [(float(pre[i, j]), j) for j in range(10) if dead[i * 0 + j]]
        for v, j in sorted(cand, reverse=True)[:3]:
            ref_codes[i, j] = max(v, 0.0)
    recon = ref_codes @ sae.W_dec.detach()
    per_tok = (recon - residual).pow(2).sum(-1)
    ref = per_tok[mask].mean() * min(4 / 3, 1.0)
    assert float(got) == pytest.approx(float(ref), rel=1e-5)
    assert float(T.auxk_loss(sae, pre, residual, torch.zeros(10, dtype=torch.bool), mask, 3)) == 0.0


def test_parallel_gradient_is_removed_and_rows_stay_unit():
    W = torch.nn.Parameter(torch.randn(7, 5))
    T.normalize_rows_(W.data)
    W.grad = torch.randn(7, 5)
    T.remove_parallel_grad(W)
    assert torch.allclose((W.grad * W.data).sum(-1), torch.zeros(7), atol=1e-6)


def test_lr_schedule_warmup_then_cosine_to_min():
    cfg = T.TrainConfig(warmup_steps=4, lr=1e-3, min_lr_fraction=0.9, progress=False)
    assert T.lr_at(0, cfg, 100) == pytest.approx(2.5e-4)
    assert T.lr_at(3, cfg, 100) == pytest.approx(1e-3)
    assert T.lr_at(4, cfg, 100) == pytest.approx(1e-3)
    assert T.lr_at(99, cfg, 100) == pytest.approx(9e-4, rel=1e-3)
    const = T.TrainConfig(warmup_steps=4, lr_schedule="constant", progress=False)
    assert T.lr_at(50, const, 100) == pytest.approx(1e-3)


def test_bad_options_are_one_line_config_errors():
    with pytest.raises(ConfigError, match="divisible"):
        T.TrainConfig(width=100, n_heads=3, bottleneck_factor=1)
    with pytest.raises(ConfigError, match="--k"):
        T.TrainConfig(k=0)
    with pytest.raises(ConfigError, match="contradict"):
        T.TrainConfig(resume=True, overwrite=True)


def test_cli_help_lists_the_options(capsys):
    from tempolens.cli import main

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    for flag in ("--arch", "--bottleneck-factor", "--aux-coef", "--resume", "--cache-dir", "--betas"):
        assert flag in text


def test_streaming_without_cache_trains_on_the_same_prompts(tiny_lm_dir, corpus, tmp_path):
    cfg = cfg_for("topk", tiny_lm_dir, corpus, tmp_path / "stream", "none", max_steps=3, heldout_fraction=0.0)
    res = T.train(cfg)
    assert res.steps == 3 and math.isfinite(res.final_loss)
    state = torch.load(cfg.out / T.STATE_FILE, weights_only=True)
    assert state["data_position"] == {"epoch": 0, "batch_in_epoch": 3, "batch_prompts": 4, "seed": 1}
    assert json.loads((cfg.out / "eval.json").read_text())["note"].startswith("no held-out")
