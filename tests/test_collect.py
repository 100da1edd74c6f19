"""The one-pass collect: store equals a direct forward; kill + resume equals an uninterrupted run; clear errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from fixtures import assert_close_scaled, save_tiny_temporal_sae, write_word_corpus

from tempolens.collect import CollectConfig, collect
from tempolens.errors import ConfigError, SourceError
from tempolens.store import CodeStore, StoreError


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_word_corpus(tmp_path_factory.mktemp("corpus") / "docs.txt", seed=0)


@pytest.fixture(scope="module")
def temporal_dir(tmp_path_factory) -> Path:
    return save_tiny_temporal_sae(tmp_path_factory.mktemp("sae") / "temporal", seed=3)


def _cfg(tiny_lm_dir, corpus, sae, out, **kw):
    base = dict(
        model=str(tiny_lm_dir),
        layer=2,
        sae=str(sae),
        corpus=str(corpus),
        n_prompts=12,
        prompt_len=16,
        shard_prompts=4,
        batch_size=3,
        out=out,
        progress=False,
    )
    base.update(kw)
    return CollectConfig(**base)


def _shard_bytes(store: Path) -> list[bytes]:
    s = CodeStore(store)
    return [s.shard_path(i).read_bytes() for i in range(s.n_shards)]


def test_store_equals_direct_forward(tiny_lm_dir, corpus, temporal_dir, tmp_path):
    from tempolens.saes.loading import load_sae
    from tempolens.sources.corpora import build_prompts, iter_documents
    from tempolens.sources.open import load_subject_model

    res = collect(_cfg(tiny_lm_dir, corpus, temporal_dir, tmp_path / "store"))
    assert res.shards_written == 3 and res.n_tokens > 0
    store = CodeStore(tmp_path / "store")
    assert (
        store.meta["sae"]["architecture"] == "temporal"
        and store.meta["model"]["hook_name"] == "blocks.2.hook_resid_post"
    )

    model = load_subject_model(str(tiny_lm_dir), layer=2, progress=None)
    prompts = build_prompts(model.tokenizer, iter_documents(str(corpus)), n_prompts=12, prompt_len=16, seed=0)
    sae = load_sae(str(temporal_dir))
    with torch.inference_mode():
        details = sae.forward_details(model.hidden_at(prompts.tokens).float())
        enc = sae.encode(model.hidden_at(prompts.tokens).float())
    dense = torch.cat([sh.dense(sae.width) for sh in store.iter_shards()])
    assert_close_scaled(dense, details.z_novel, what="z_novel")
    tokens = torch.cat([sh.tokens for sh in store.iter_shards()])
    assert torch.equal(tokens.long(), prompts.tokens)
    special = torch.cat([sh.special for sh in store.iter_shards()]).bool()
    assert torch.equal(special, prompts.special)
    pred_share = torch.cat([sh.extras["pred_share"] for sh in store.iter_shards()])
    assert_close_scaled(pred_share, enc.extras["pred_share"].float(), what="pred_share")
    # per-code predicted values equal z_pred at the same (token, latent)
    sh = store.load_shard(0)
    tok = sh.code_token()
    zp = details.z_pred[:4].reshape(-1, sae.width)
    assert_close_scaled(sh.code_extras["pred"], zp[tok, sh.code_latent.long()], what="pred")


def test_killed_collect_resumes_to_identical_store(tiny_lm_dir, corpus, temporal_dir, tmp_path, monkeypatch):
    full = tmp_path / "full"
    collect(_cfg(tiny_lm_dir, corpus, temporal_dir, full))

    from tempolens.store import codestore

    real = codestore.StoreWriter.write_shard
    calls = {"n": 0}

    def dying(self, i, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("simulated kill")
        return real(self, i, **kw)

    monkeypatch.setattr(codestore.StoreWriter, "write_shard", dying)
    part = tmp_path / "part"
    with pytest.raises(KeyboardInterrupt):
        collect(_cfg(tiny_lm_dir, corpus, temporal_dir, part))
    monkeypatch.setattr(codestore.StoreWriter, "write_shard", real)
    assert CodeStore(part).done_shards() == [0]
    res = collect(_cfg(tiny_lm_dir, corpus, temporal_dir, part))
    assert res.shards_skipped == 1 and res.shards_written == 2
    assert _shard_bytes(part) == _shard_bytes(full)


def test_sigkill_then_resume(tiny_lm_dir, corpus, temporal_dir, tmp_path):
    """A real SIGKILL of the CLI mid-run, then the same command finishes an identical store."""
    full, part = tmp_path / "full", tmp_path / "part"
    args = [
        "--model",
        str(tiny_lm_dir),
        "--layer",
        "2",
        "--sae",
        str(temporal_dir),
        "--corpus",
        str(corpus),
        "--n-prompts",
        "24",
        "--prompt-len",
        "16",
        "--shard-prompts",
        "2",
        "--batch-size",
        "1",
        "--no-progress",
    ]
    cmd = [sys.executable, "-m", "tempolens.cli", "collect", *args]
    slow = [sys.executable, str(Path(__file__).with_name("slow_shards_cli.py")), "0.3", "collect", *args]
    proc = subprocess.Popen(
        [*slow, "--out", str(part)], env=os.environ, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.time() + 120
    while time.time() < deadline and not (part / "shards" / "shard-00001.json").exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = CodeStore(part).done_shards()
    assert 2 <= len(done_before) < 12, done_before
    subprocess.run([*cmd, "--out", str(part)], check=True, env=os.environ, stdout=subprocess.DEVNULL)
    subprocess.run([*cmd, "--out", str(full)], check=True, env=os.environ, stdout=subprocess.DEVNULL)
    assert _shard_bytes(part) == _shard_bytes(full)


def test_clear_errors(tiny_lm_dir, corpus, temporal_dir, tmp_path):
    from tempolens.saes.loading import save_standard_sae
    from tempolens.saes.random_init import random_topk_sae

    wrong = save_standard_sae(random_topk_sae(48, 64, 4), tmp_path / "wrong")
    with pytest.raises(SourceError, match="d_in=48.*hidden size 32"):
        collect(_cfg(tiny_lm_dir, corpus, wrong, tmp_path / "a"))
    with pytest.raises(SourceError, match="layer"):
        collect(_cfg(tiny_lm_dir, corpus, temporal_dir, tmp_path / "b", layer=9))
    with pytest.raises(SourceError, match="only \\d+ prompts"):
        collect(_cfg(tiny_lm_dir, corpus, temporal_dir, tmp_path / "c", n_prompts=5000))
    with pytest.raises(ConfigError, match="--n-prompts"):
        CollectConfig(n_prompts=0)
    collect(_cfg(tiny_lm_dir, corpus, temporal_dir, tmp_path / "d"))
    with pytest.raises(StoreError, match="different run"):
        collect(_cfg(tiny_lm_dir, corpus, temporal_dir, tmp_path / "d", seed=1))


def test_cli_reports_errors_without_traceback(tiny_lm_dir, corpus, tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "tempolens.cli",
            "collect",
            "--model",
            str(tiny_lm_dir),
            "--layer",
            "2",
            "--sae",
            str(tmp_path / "nope"),
            "--corpus",
            str(corpus),
            "--out",
            str(tmp_path / "s"),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2
    assert "error:" in r.stderr and "Traceback" not in r.stderr
