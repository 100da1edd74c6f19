"""The benchmark's helpers: agreement statistics against brute force, the offline SAEDashboard
set-up (HF cache layout, config spelling, run folder), the SAEDashboard-compatible SAE copy, and the
per-child measurement."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))

import compare  # noqa: E402
import measure  # noqa: E402
import saedash_offline as sdo  # noqa: E402

from tempolens.saes.base import SparseCodes  # noqa: E402
from tempolens.store import StoreWriter, pack_codes  # noqa: E402


def _store(tmp_path, P=6, T=5, W=12, shard=2, seed=0):
    """A small store with random sparse codes; returns (path, dense [P,T,W], tokens, special)."""
    g = torch.Generator().manual_seed(seed)
    dense = torch.relu(torch.randn(P, T, W, generator=g)) * (torch.rand(P, T, W, generator=g) < 0.4)
    tokens = torch.randint(10, 100, (P, T), generator=g)
    tokens[:, 0] = 2  # BOS
    special = tokens == 2
    special[1, 3] = True  # an EOS inside a prompt
    tokens[1, 3] = 1
    n_shards = (P + shard - 1) // shard
    meta = {
        "model": {"spec": "t"},
        "sae": {"spec": "s", "width": W},
        "prompts": {"n_prompts": P, "prompt_len": T, "seed": 0},
        "n_shards": n_shards,
        "shard_size": shard,
    }
    w = StoreWriter(tmp_path / "store", meta)
    for i in range(n_shards):
        lo, hi = i * shard, min(P, (i + 1) * shard)
        codes = SparseCodes.from_dense(dense[lo:hi])
        ptr, lat, val, _ = pack_codes(codes.indices, codes.values)
        w.write_shard(
            i,
            tokens=tokens[lo:hi],
            prompt_ids=torch.arange(lo, hi),
            special=special[lo:hi],
            code_ptr=ptr,
            code_latent=lat,
            code_value=val,
            extras={},
        )
    return tmp_path / "store", dense, tokens, special


def test_store_reference_matches_dense_brute_force(tmp_path):
    path, dense, tokens, special = _store(tmp_path)
    ref = compare.store_reference(path, n_top=4)
    masked = dense * (~special).unsqueeze(-1)
    flat = masked.reshape(-1, dense.shape[-1])
    assert ref["n_valid"] == int((~special).sum()) and ref["n_total"] == special.numel()
    assert ref["count"].tolist() == (flat > 0).sum(0).tolist()
    torch.testing.assert_close(ref["max"], flat.max(0).values)
    assert torch.equal(ref["tokens"], tokens)
    T = dense.shape[1]
    for l in range(dense.shape[-1]):
        col = flat[:, l]
        order = sorted((-float(col[i]), i) for i in range(col.numel()) if col[i] > 0)[:4]
        want = [(i // T, i % T) for _, i in order]
        got = [(p, t) for p, t, _ in ref["top"].get(l, [])]
        assert got == want


def _features_from_ref(ref, drop_bos: bool, denominator: str, decimals=None):
    """Dashboard-like feature objects built from the reference (whole-prompt windows)."""
    T = ref["prompt_len"]
    feats = []
    for l in range(ref["width"]):
        acts = []
        for p, t, v in ref["top"].get(l, []):
            n_tok = T - 1 if drop_bos else T
            vals = [0.0] * n_tok
            q = t - 1 if drop_bos else t
            vals[q] = round(v, decimals) if decimals is not None else v
            acts.append(
                {
                    "bin_min": -1,
                    "bin_max": v,
                    "bin_contains": -1,
                    "tokens": [f"t{p}_{i}" for i in range(n_tok)],
                    "values": vals,
                    "qualifying_token_index": q,
                    "prompt_index": p,
                }
            )
        denom = ref["n_valid"] if denominator == "valid" else ref["n_total"]
        feats.append({"feature_index": l, "frac_nonzero": int(ref["count"][l]) / denom, "activations": acts})
    return feats


def test_compare_features_perfect_and_perturbed(tmp_path):
    path, *_ = _store(tmp_path)
    ref = compare.store_reference(path)
    feats = _features_from_ref(ref, drop_bos=False, denominator="valid")
    c = compare.compare_features(ref, feats, density_denominator="valid", value_decimals=None, density_resolution=1e-9)
    assert c["n_latents"] == ref["width"] and c["density"]["max_abs_diff"] < 1e-12
    assert c["max_act"]["max_rel_diff"] == 0 and c["top"]["n_identical_sets"] == c["top"]["n_compared"] == c["n_alive"]
    # SAEDashboard-like: BOS dropped, 3 decimals, all-token denominator → still agrees
    feats = _features_from_ref(ref, drop_bos=True, denominator="all", decimals=3)
    c = compare.compare_features(ref, feats, density_denominator="all", value_decimals=3, density_resolution=5e-6)
    assert c["top"]["mean_overlap"] == 1.0 and c["max_act"]["max_rel_diff"] == 0.0
    # a wrong density by one token and a missing example are seen
    feats = _features_from_ref(ref, drop_bos=False, denominator="valid")
    alive = [f for f in feats if f["activations"]]
    alive[0]["frac_nonzero"] += 1 / ref["n_valid"]
    alive[1]["activations"][0]["prompt_index"] = 99
    c = compare.compare_features(ref, feats, density_denominator="valid", value_decimals=None, density_resolution=1e-9)
    assert c["density"]["max_diff_in_tokens"] == pytest.approx(1.0)
    assert c["density"]["n_within_resolution"] == ref["width"] - 1
    assert c["top"]["n_identical_sets"] == c["n_alive"] - 1 and c["top"]["min_overlap"] < 1


def test_prompt_lookup_by_token_prefix():
    pieces = [["<bos>", "\u2581The", "\u2581cat", "\u2014"], ["<bos>", "\u2581A", "\u2581dog", "."]]
    idx = compare.prompt_index_by_prefix(pieces, skip=1, n=3)
    # SAEDashboard renders some pieces differently (non-ASCII): they normalise to the same key
    feat = {
        "activations": [
            {
                "bin_min": "-1",
                "tokens": ["\u2581A", "\u2581dog", "."],
                "values": [0, 2.5, 0],
                "qualifying_token_index": "1",
            },
            {
                "bin_min": -1,
                "tokens": ["\u2581The", "\u2581cat", "\u00e2\u0122\u0136"],
                "values": [1.0, 0, 0],
                "qualifying_token_index": 0,
            },
        ]
    }
    assert compare.top_examples(feat, 4, idx, n=3) == [(1, 2, 2.5), (0, 1, 1.0)]


def test_transformers4_config_spelling():
    cfg = {
        "model_type": "gemma3_text",
        "hidden_size": 640,
        "rope_parameters": {
            "full_attention": {"rope_theta": 1e6, "rope_type": "default"},
            "sliding_attention": {"rope_theta": 1e4, "rope_type": "default"},
        },
    }
    out = sdo.transformers4_config(cfg)
    assert (
        "rope_parameters" not in out
        and out["rope_theta"] == 1e6
        and out["rope_local_base_freq"] == 1e4
        and out["rope_scaling"] is None
    )
    assert out["hidden_size"] == 640 and "rope_parameters" in cfg  # input untouched
    old = {"rope_theta": 5.0, "hidden_size": 8}
    assert sdo.transformers4_config(old) == old


def test_build_hf_cache_layout_resolves_offline(tmp_path, monkeypatch):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(
        json.dumps({"model_type": "gemma3_text", "rope_parameters": {"rope_theta": 7.0, "rope_type": "default"}})
    )
    (model / "tokenizer.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"x" * 10)
    snap = sdo.build_hf_cache(model, tmp_path / "hf", "google/gemma-3-270m")
    assert (snap / "model.safetensors").is_symlink() and (snap / "model.safetensors").resolve() == (
        model / "model.safetensors"
    ).resolve()
    assert json.loads((snap / "config.json").read_text())["rope_theta"] == 7.0
    from huggingface_hub import try_to_load_from_cache

    got = try_to_load_from_cache("google/gemma-3-270m", "tokenizer.json", cache_dir=str(tmp_path / "hf" / "hub"))
    assert got is not None and Path(got).parent == snap
    assert sdo.build_hf_cache(model, tmp_path / "hf", "google/gemma-3-270m") == snap  # idempotent


def test_prepare_run_places_tokens_where_the_runner_reads_them(tmp_path):
    sae = tmp_path / "sae"
    sae.mkdir()
    (sae / "cfg.json").write_text(
        json.dumps(
            {"d_sae": 256, "metadata": {"model_name": "google/gemma-3-270m", "hook_name": "blocks.9.hook_resid_post"}}
        )
    )
    torch.save(torch.arange(40).view(4, 10), tmp_path / "tokens.pt")
    argv, env, sub = sdo.prepare_run(
        tmp_path / "run", tmp_path / "tokens.pt", sae, tmp_path / "ds", tmp_path / "hf", 3, 8, 2, 128, end_batch=0
    )
    assert sub == tmp_path / "run" / "outputs" / "google" / "gemma-3-270m_bench_blocks.9.hook_resid_post_256"
    assert torch.equal(torch.load(sub / "tokens_3.pt"), torch.arange(40).view(4, 10)[:3, :8])
    assert (
        argv[argv.index("--n-prompts") + 1] == "3"
        and argv[argv.index("--end-batch") + 1] == "0"
        and "--from-local-sae" in argv
    )
    assert env["HF_HUB_OFFLINE"] == "1" and env["WANDB_MODE"] == "disabled"


def test_saedash_copy_gives_identical_topk_codes(tmp_path):
    """A trained TopK SAE without decoder-norm rescaling and with non-unit decoder rows: the copy
    for SAEDashboard (rescale flag + normalised rows) encodes to the same codes in SAELens."""
    pytest.importorskip("sae_lens")
    import bench_dashboards as bd
    from sae_lens import SAE, TopKSAE, TopKSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    torch.manual_seed(0)
    md = SAEMetadata(
        model_name="m",
        hook_name="blocks.0.hook_resid_post",
        hook_head_index=None,
        prepend_bos=True,
        context_size=8,
        dataset_path="d",
        model_from_pretrained_kwargs={},
    )
    cfg = TopKSAEConfig(
        d_in=8, d_sae=24, k=3, dtype="float32", device="cpu", rescale_acts_by_decoder_norm=False, metadata=md
    )
    sae = TopKSAE(cfg)
    with torch.no_grad():
        sae.W_dec.mul_(torch.rand(24, 1) * 3 + 0.2)
        sae.W_enc.copy_(torch.randn(8, 24))
        sae.b_enc.copy_(torch.randn(24) * 0.1)
    sae.save_model(str(tmp_path / "orig"))
    info = bd.saedash_copy(tmp_path / "orig", tmp_path / "copy", 8, "blocks.0.hook_resid_post")
    assert "normalised" in info["note"]
    copy = SAE.load_from_disk(str(tmp_path / "copy"))
    copy.fold_W_dec_norm()  # what SAEDashboard does at start-up: must not raise, must not change codes
    x = torch.randn(50, 8)
    with torch.no_grad():
        torch.testing.assert_close(copy.encode(x), sae.encode(x))
    assert json.loads((tmp_path / "copy" / "cfg.json").read_text())["metadata"]["model_name"] == sdo.HUB_NAME


def test_run_measured_reports_child_rss_cpu_and_lines(tmp_path):
    code = textwrap.dedent("""
        import time
        b = bytearray(300 * 2**20)
        for i in range(0, len(b), 4096): b[i] = 1
        print("MARK one", flush=True)
        t = time.process_time()
        while time.process_time() - t < 0.3: pass
        print("MARK two")
    """)
    m = measure.run_measured([sys.executable, "-c", code], log_path=tmp_path / "log.txt")
    assert m.rc == 0
    assert m.max_rss_bytes > 300 * 2**20
    assert m.cpu_s >= 0.25 and m.wall_s >= m.cpu_s * 0.5
    marks = m.find("MARK ")
    assert [s for _, s in marks] == ["one", "two"] and marks[0][0] <= marks[1][0]
    assert "MARK two" in (tmp_path / "log.txt").read_text()
    bad = measure.run_measured([sys.executable, "-c", "import sys; sys.exit(3)"])
    assert bad.rc == 3


def test_dir_bytes_and_median(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.json").write_bytes(b"12345")
    (tmp_path / "y.bin").write_bytes(b"123")
    assert measure.dir_bytes(tmp_path) == 8 and measure.dir_bytes(tmp_path, "**/*.json") == 5
    assert measure.median([3, 1, 2]) == 2 and measure.median([4, 1, 2, 3]) == 2.5
