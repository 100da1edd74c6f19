"""benchmarks/render_results.py: the README's Performance table, bytes per latent per format and the scaling plot
from a results JSON (a small synthetic one here, plus the newest file in benchmarks/results when present)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))

import render_results as rr  # noqa: E402


def _result() -> dict:
    def row(tool, config, n, wall, runs=None, **kw):
        return {
            "tool": tool,
            "config": config,
            "n_prompts": n,
            "repeats": 2,
            "wall_s": wall,
            "cpu_s": 2 * wall,
            "max_rss_gib": 1.5,
            "disk_bytes": 1e6,
            "wall_runs": runs or [wall, wall],
            "load_1min": [1.0],
            **kw,
        }

    disk = {"store": 10, "dashboards": 500_000, "batches_json": 200_000, "bulk": 50_000, "site": 250_000}
    return {
        "finished": "2026-12-02T05:00:00Z",
        "host": {
            "cpus": 2,
            "machine": "x86_64",
            "platform": "Linux",
            "torch": "2.13",
            "torch_threads": 2,
            "cuda": None,
            "commit": "abcdef1234",
        },
        "config": {
            "model": "embedded",
            "layer": 9,
            "prompt_len": 128,
            "batch_size": 8,
            "dtype": "float32",
            "repeats": 2,
            "prompts": 256,
            "widths": [256, 1024],
        },
        "saes": {},
        "runs": [{"tool": "tempolens", "config": "topk-256", "n_prompts": 256, "disk": disk, "disk_bytes": 500_010}],
        "summary": [
            row("floor", "LM forward to block L", 64, 5.0),
            row("tempolens-run", "topk-256", 64, 12.0),
            row("floor", "LM forward to block L", 256, 20.0, runs=[19.0, 21.0]),
            row("tempolens-run", "topk-256", 256, 30.0, runs=[29.0, 31.0], x_floor_wall=1.5, x_floor_cpu=1.5),
            row("tempolens-run", "topk-1024", 256, 40.0, x_floor_wall=2.0, x_floor_cpu=2.0),
        ],
    }


def test_table_has_machine_commit_spread_and_ratios(tmp_path):
    path = tmp_path / "bench-x.json"
    md = rr.table(_result(), path)
    assert "commit abcdef1234" in md and "2 CPUs" in md and "2026-12-02" in md
    assert "| topk-256 | 256 | tempolens-run | 30.0 (29.0–31.0) | 1.50 |" in md
    assert "| — | 256 | floor | 20.0 (19.0–21.0) |  |" in md


def test_bytes_per_latent_per_format():
    md = rr.bytes_per_latent(_result())
    # 250,000 B of site data / 256 latents = 0.98 KB; batch files 0.78 KB; bulk 0.20 KB
    assert "| topk-256 | 256 | 1.0 | 0.8 | 0.2 | 1 |" in md


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "img" / "scaling.png"
    rr.plot([_result()], out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_newest_results_skips_partial_and_quick(tmp_path):
    names = (
        "bench-20260101-000000.json",
        "bench-20260102-000000-quick.json",
        "bench-20260103-000000.partial.json",
        "bench-20260104-000000-before-abc1234.json",  # an earlier commit's run, kept for comparison
    )
    for name in names:
        (tmp_path / name).write_text(json.dumps({}))
    assert rr.newest_results(tmp_path).name == "bench-20260101-000000.json"
    with pytest.raises(SystemExit):
        rr.newest_results(tmp_path / "nothing")
