"""Data-parallel collect under ``torchrun`` (Gloo on CPU): a 2-process run writes a store whose
shards are byte-identical to a 1-process run's, and dashboards on it equal dashboards on the
1-process store (up to the store's path and creation time, which the exports name)."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from fixtures import safetensors_content, save_tiny_temporal_sae, write_word_corpus

from tempolens.distributed import Dist, current
from tempolens.store import CodeStore

torch.set_num_threads(1)


# -- the split itself ----------------------------------------------------------------------------------
@pytest.mark.parametrize("world", [1, 2, 3, 5])
@pytest.mark.parametrize("n", [0, 1, 4, 7, 12])
def test_split_is_a_disjoint_cover(world, n):
    items = list(range(n))
    parts = [Dist(rank=r, world=world).split(items) for r in range(world)]
    flat = sorted(x for p in parts for x in p)
    assert flat == items  # every shard exactly once
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1  # round-robin: balanced


def test_single_process_needs_no_process_group(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    d = current()
    assert d == Dist() and d.is_main and not d.active
    assert d.gather_objects({"a": 1}) == [{"a": 1}]
    d.barrier()  # a no-op
    assert d.device("cpu") == "cpu" and d.device("auto") == "auto"


@pytest.mark.parametrize(
    "local_world, n_gpus, override, want",
    [
        (2, 0, None, "gloo"),
        (2, 1, None, "gloo"),
        (2, 2, None, "nccl"),
        (8, 8, None, "nccl"),
        (1, 4, None, "nccl"),
        (2, 2, "gloo", "gloo"),
        (1, 0, "gloo", "gloo"),
    ],
)
def test_backend_is_chosen_per_machine_not_per_rank(local_world, n_gpus, override, want):
    from tempolens.distributed import choose_backend

    assert choose_backend(local_world, n_gpus, override) == want


def test_backend_override_errors():
    from tempolens.distributed import choose_backend
    from tempolens.errors import TempolensError

    with pytest.raises(TempolensError, match="nccl or gloo"):
        choose_backend(2, 2, "mpi")
    with pytest.raises(TempolensError, match="one GPU per rank: 4 ranks on this machine, 1 GPUs"):
        choose_backend(4, 1, "nccl")


def test_ranks_share_gpus_round_robin(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert [Dist(rank=r, world=3, local_rank=r).device("auto") for r in range(3)] == ["cuda:0", "cuda:1", "cuda:0"]
    assert Dist(rank=1, world=2, local_rank=1).device("cpu") == "cpu"
    assert Dist().device("cuda") == "cuda"  # a single process keeps what was asked


# -- torchrun end to end ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_word_corpus(tmp_path_factory.mktemp("dist_corpus") / "docs.txt", seed=1)


@pytest.fixture(scope="module")
def temporal_dir(tmp_path_factory) -> Path:
    return save_tiny_temporal_sae(tmp_path_factory.mktemp("dist_sae") / "temporal", seed=3)


def _collect_args(tiny_lm_dir, corpus, sae, out, n_prompts: int = 13, shard_prompts: int = 3) -> list[str]:
    # default: 13 prompts in 5 shards (the last holds one prompt): rank 0 gets 3 shards, rank 1 gets 2
    return [
        "collect",
        "--model",
        str(tiny_lm_dir),
        "--layer",
        "2",
        "--sae",
        str(sae),
        "--corpus",
        str(corpus),
        "--n-prompts",
        str(n_prompts),
        "--prompt-len",
        "16",
        "--shard-prompts",
        str(shard_prompts),
        "--batch-size",
        "2",
        "--device",
        "cpu",
        "--no-progress",
        "--out",
        str(out),
    ]


def _env() -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


def _torchrun() -> list[str]:
    exe = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    return [exe] if exe else [sys.executable, "-m", "torch.distributed.run"]


def _tree(root: Path, replace: dict[str, str]) -> dict[str, bytes]:
    """Every output file's content (gzip members decompressed), with run-specific strings replaced.

    Cached statistics (``*.safetensors``) are compared by their tensors and scalars: their metadata
    also records how long each pass took."""
    out: dict[str, bytes] = {}
    for p in sorted(root.rglob("*")):
        if (
            not p.is_file() or p.suffix == ".key" or p.name == "SHA256SUMS" or p.name.endswith("_log.json")
        ):  # logs hold timings;  # hashes of files that name the store's path and creation time
            continue
        if p.suffix == ".safetensors":
            out[p.relative_to(root).as_posix()] = safetensors_content(p)
            continue
        data = p.read_bytes()
        if p.suffix == ".gz":
            data = gzip.decompress(data)
        if p.suffix in (".json", ".js", ".gz", ".jsonl"):
            text = data.decode("utf-8")
            for a, b in replace.items():
                text = text.replace(a, b)
            data = text.encode()
        out[p.relative_to(root).as_posix()] = data
    return out


@pytest.mark.timeout(600)
def test_torchrun_two_ranks_equal_one_process(tiny_lm_dir, corpus, temporal_dir, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    cmd2 = [
        *_torchrun(),
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "tempolens.cli",
        *_collect_args(tiny_lm_dir, corpus, temporal_dir, two),
    ]
    r = subprocess.run(cmd2, env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    r = subprocess.run(
        [sys.executable, "-m", "tempolens.cli", *_collect_args(tiny_lm_dir, corpus, temporal_dir, one)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]

    s1, s2 = CodeStore(one), CodeStore(two)
    assert s1.n_shards == s2.n_shards == 5 and s1.complete and s2.complete
    for i in range(s1.n_shards):
        assert s1.shard_path(i).read_bytes() == s2.shard_path(i).read_bytes(), f"shard {i} differs"
        man1 = json.loads((s1.shard_dir / f"shard-{i:05d}.json").read_text())
        assert man1 == json.loads((s2.shard_dir / f"shard-{i:05d}.json").read_text())
    s2.done_shards(verify=True)  # checksums hold
    m1, m2 = dict(s1.meta), dict(s2.meta)
    assert m1.pop("created") and m2.pop("created")
    assert m1.pop("meta_sha256") and m2.pop("meta_sha256")  # covers `created`
    assert m1 == m2  # only rank 0 wrote meta.json, and it is the same run
    assert not list(two.rglob(".*tmp*"))  # no temporary file left behind by either rank

    # dashboards (statistics over the shards each rank wrote) equal those of the 1-process store
    from tempolens.dashboards.pipeline import DashboardConfig, build_dashboards

    for store in (one, two):
        build_dashboards(
            DashboardConfig(
                batches=True,
                bulk=True,
                store=store,
                out=tmp_path / f"dash-{store.name}",
                chunk_size=32,
                features_per_batch=40,
                device="cpu",
                progress=False,
            )
        )
    created1, created2 = (
        json.loads((one / "meta.json").read_text())["created"],
        json.loads((two / "meta.json").read_text())["created"],
    )
    t1 = _tree(tmp_path / "dash-one", {})
    t2 = _tree(tmp_path / "dash-two", {str(two): str(one), created2: created1})
    assert sorted(t1) == sorted(t2) and len(t1) > 10
    for rel in t1:
        assert t1[rel] == t2[rel], rel


def _descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (from /proc; Linux)."""
    parent: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            parent[int(d.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    out, frontier = [], [pid]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        out += kids
        frontier += kids
    return out


@pytest.mark.timeout(600)
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the ranks through /proc")
def test_torchrun_job_killed_then_rerun_finishes_identical(tiny_lm_dir, corpus, temporal_dir, tmp_path):
    """The whole job dies (SIGKILL to torchrun and both ranks, as when a node is lost); the same
    torchrun command then finishes the store, identical to an uninterrupted 1-process run."""
    part, ref = tmp_path / "part", tmp_path / "ref"
    args = _collect_args(tiny_lm_dir, corpus, temporal_dir, part, n_prompts=16, shard_prompts=1)
    cmd = [*_torchrun(), "--standalone", "--nproc_per_node", "2", "-m", "tempolens.cli", *args]
    slow_cli = str(Path(__file__).with_name("slow_shards_cli.py"))  # widens the window between shards
    slow = [*_torchrun(), "--standalone", "--nproc_per_node", "2", slow_cli, "0.4", *args]
    proc = subprocess.Popen(
        slow, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None and len(list((part / "shards").glob("shard-*.json"))) < 3:
            time.sleep(0.05)
    finally:
        victims = [
            proc.pid,
            *_descendants(proc.pid),
        ]  # torchrun's agent and every rank (ranks run in their own sessions)
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait()
    assert len(victims) >= 3, victims
    done = CodeStore(part).done_shards()
    assert 3 <= len(done) < 16, done
    r = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert not list(part.rglob(".*.tmp-*"))  # temporaries of the killed ranks were cleaned up
    log = json.loads((part / "collect_log.json").read_text())
    assert log["shards_skipped"] == len(done)  # finished shards were reused, not recomputed
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "tempolens.cli",
            *_collect_args(tiny_lm_dir, corpus, temporal_dir, ref, n_prompts=16, shard_prompts=1),
        ],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    s_part, s_ref = CodeStore(part), CodeStore(ref)
    assert s_part.complete and s_part.n_shards == 16
    for i in range(16):
        assert s_part.shard_path(i).read_bytes() == s_ref.shard_path(i).read_bytes(), i


@pytest.mark.timeout(600)
def test_an_error_on_one_rank_is_one_line_on_every_rank(tiny_lm_dir, corpus, temporal_dir, tmp_path):
    """Rank 0 refuses the store (another run's); rank 1, waiting at the barrier, says in one line that
    it lost the other rank instead of printing a Gloo traceback."""
    out = tmp_path / "store"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "tempolens.cli",
            *_collect_args(tiny_lm_dir, corpus, temporal_dir, out, n_prompts=4, shard_prompts=2),
        ],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    cmd = [
        *_torchrun(),
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "tempolens.cli",
        *_collect_args(tiny_lm_dir, corpus, temporal_dir, out, n_prompts=6, shard_prompts=2),
    ]
    r = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode != 0
    err = r.stderr
    assert "tempolens collect: error: " in err and "holds a store of a different run" in err
    assert "[rank1]: Traceback" not in err, err[-3000:]
    lost = [ln for ln in err.splitlines() if "lost contact with the other ranks" in ln]
    assert all(ln.startswith("tempolens collect: error: rank 1/2") for ln in lost), lost
