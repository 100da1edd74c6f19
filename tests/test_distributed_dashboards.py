"""`tempolens dashboards` under torchrun: 2 Gloo ranks each read half the shards, their
accumulators merge, rank 0 writes exports equal to a 1-process run's."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_distributed import _collect_args, _env, _torchrun, corpus, temporal_dir  # noqa: F401 (fixtures)


def _exports(root: Path) -> dict[str, object]:
    out: dict[str, object] = {}
    for p in sorted(root.rglob("*")):
        if (
            p.is_file()
            and p.suffix in (".json", ".js", ".gz")
            and "run_settings" not in p.name
            and p.name != "dashboards_log.json"
        ):  # logs hold timings
            data = p.read_bytes()
            out[p.relative_to(root).as_posix()] = gzip.decompress(data) if p.suffix == ".gz" else data
    return out


@pytest.mark.timeout(600)
def test_torchrun_dashboards_equal_one_process(tiny_lm_dir, corpus, temporal_dir, tmp_path):  # noqa: F811
    store = tmp_path / "store"
    r = subprocess.run(
        [sys.executable, "-m", "tempolens.cli", *_collect_args(tiny_lm_dir, corpus, temporal_dir, store)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    dash = [
        "dashboards",
        "--batches",
        "--bulk",
        "--store",
        str(store),
        "--chunk-size",
        "32",
        "--features-per-batch",
        "40",
        "--device",
        "cpu",
        "--no-progress",
    ]
    r1 = subprocess.run(
        [sys.executable, "-m", "tempolens.cli", *dash, "--out", str(tmp_path / "one")],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r1.returncode == 0, r1.stderr[-3000:]
    r2 = subprocess.run(
        [
            *_torchrun(),
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "tempolens.cli",
            *dash,
            "--out",
            str(tmp_path / "two"),
        ],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r2.returncode == 0, r2.stderr[-3000:]
    e1, e2 = _exports(tmp_path / "one"), _exports(tmp_path / "two")
    assert sorted(e1) == sorted(e2) and len(e1) > 5
    differing = [k for k in e1 if e1[k] != e2[k]]
    assert not differing, differing
    s1 = json.loads((tmp_path / "one" / "neuronpedia" / "batches" / "batch-0.json").read_text())
    assert len(s1["features"]) == 40
