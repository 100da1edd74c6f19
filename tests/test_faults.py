"""Faults: a corrupt or truncated shard, a SIGKILL at each stage of `tempolens dashboards`, a full
disk under the store writer and under the dashboards output, and a judge endpoint that is down.

Each case ends the same way: a one-line error that says what to do (exit code 2, no traceback),
nothing finished is lost, and rerunning the same command gives results identical to a run that
was never interrupted. (Collect's own kill/resume tests are in ``test_collect.py``; autointerp's in
``test_autointerp_e2e.py``.)
"""

from __future__ import annotations

import errno
import gzip
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from fixtures import mounted_tmpfs, safetensors_content, save_tiny_temporal_sae, write_word_corpus

from tempolens.collect import CollectConfig, collect
from tempolens.errors import WriteError
from tempolens.store import CodeStore, StoreError

torch.set_num_threads(1)


# -- shared artefacts ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_word_corpus(tmp_path_factory.mktemp("faults_corpus") / "docs.txt", seed=2)


@pytest.fixture(scope="module")
def temporal_dir(tmp_path_factory) -> Path:
    return save_tiny_temporal_sae(tmp_path_factory.mktemp("faults_sae") / "temporal", seed=4)


def _collect_cfg(tiny_lm_dir, corpus, sae, out, **kw) -> CollectConfig:
    base = dict(
        model=str(tiny_lm_dir),
        layer=2,
        sae=str(sae),
        corpus=str(corpus),
        n_prompts=12,
        prompt_len=16,
        shard_prompts=4,
        batch_size=4,
        device="cpu",
        out=Path(out),
        progress=False,
    )
    base.update(kw)
    return CollectConfig(**base)


def _collect_args(cfg: CollectConfig) -> list[str]:
    return [
        "collect",
        "--model",
        cfg.model,
        "--layer",
        str(cfg.layer),
        "--sae",
        cfg.sae,
        "--corpus",
        cfg.corpus,
        "--n-prompts",
        str(cfg.n_prompts),
        "--prompt-len",
        str(cfg.prompt_len),
        "--shard-prompts",
        str(cfg.shard_prompts),
        "--batch-size",
        str(cfg.batch_size),
        "--device",
        "cpu",
        "--no-progress",
        "--out",
        str(cfg.out),
    ]


@pytest.fixture(scope="module")
def store(tiny_lm_dir, corpus, temporal_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("faults_store") / "store"
    collect(_collect_cfg(tiny_lm_dir, corpus, temporal_dir, out))
    return out


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tempolens.cli", *args], env=_env(), capture_output=True, text=True, timeout=timeout
    )


def _one_line_error(r: subprocess.CompletedProcess, command: str) -> str:
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr, r.stderr[-2000:]
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith(f"tempolens {command}: error:")]
    assert len(lines) == 1, r.stderr[-2000:]
    return lines[0]


def _dash_args(store: Path, out: Path) -> list[str]:
    return [
        "dashboards",
        "--batches",
        "--bulk",
        "--store",
        str(store),
        "--out",
        str(out),
        "--chunk-size",
        "32",
        "--features-per-batch",
        "40",
        "--latents-per-pass",
        "48",
        "--device",
        "cpu",
        "--no-progress",
    ]


def _dash_cfg(store: Path, out: Path):
    from tempolens.dashboards.pipeline import DashboardConfig

    return DashboardConfig(
        batches=True,
        bulk=True,
        store=store,
        out=out,
        chunk_size=32,
        features_per_batch=40,
        latents_per_pass=48,
        device="cpu",
        progress=False,
    )


def _tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` by relative path (``.gz`` decompressed, ``.safetensors`` as content)."""
    out: dict[str, bytes] = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.name.endswith("_log.json"):  # logs hold timings
            rel = p.relative_to(root).as_posix()
            if p.suffix == ".safetensors":
                out[rel] = safetensors_content(p)
            else:
                out[rel] = gzip.decompress(p.read_bytes()) if p.suffix == ".gz" else p.read_bytes()
    return out


def _assert_same_tree(got: Path, want: Path) -> None:
    a, b = _tree(got), _tree(want)
    assert sorted(a) == sorted(b), sorted(set(a) ^ set(b))
    assert len(a) > 10
    for rel in a:
        assert a[rel] == b[rel], rel


@pytest.fixture(scope="module")
def reference_dashboards(store, tmp_path_factory) -> Path:
    """Dashboards of ``store`` from an uninterrupted run."""
    from tempolens.dashboards.pipeline import build_dashboards

    out = tmp_path_factory.mktemp("faults_ref") / "dash"
    build_dashboards(_dash_cfg(store, out))
    return out


def _shard_bytes(root: Path) -> list[bytes]:
    s = CodeStore(root)
    return [s.shard_path(i).read_bytes() for i in range(s.n_shards)]


# -- integrity: a corrupt or truncated shard --------------------------------------------------------------
@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_corrupt_shard_is_named_by_the_cli_and_collect_repairs_it(
    store, reference_dashboards, tiny_lm_dir, corpus, temporal_dir, tmp_path, damage
):
    broken = tmp_path / "store"
    shutil.copytree(store, broken)
    victim = CodeStore(broken).shard_path(1)
    data = bytearray(victim.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x40
    else:
        data = data[: len(data) // 3]
    victim.write_bytes(bytes(data))

    line = _one_line_error(_cli(*_dash_args(broken, tmp_path / "dash")), "dashboards")
    assert "shard-00001.safetensors" in line and "corrupt" in line
    assert "delete it" in line and "rerun `tempolens collect`" in line

    # what the message says to do: delete the shard and its manifest, rerun the same collect
    victim.unlink()
    (victim.parent / "shard-00001.json").unlink()
    r = _cli(*_collect_args(_collect_cfg(tiny_lm_dir, corpus, temporal_dir, broken)))
    assert r.returncode == 0, r.stderr[-2000:]
    assert _shard_bytes(broken) == _shard_bytes(store)  # only shard 1 was redone, identically
    CodeStore(broken).done_shards(verify=True)

    from tempolens.dashboards.pipeline import build_dashboards

    build_dashboards(_dash_cfg(broken, tmp_path / "dash"))
    for rel in ("site/data/index.js", "neuronpedia/batches/batch-0.json"):
        got = (tmp_path / "dash" / rel).read_text().replace(str(broken), str(store))
        assert got == (reference_dashboards / rel).read_text(), rel


def test_missing_meta_and_incomplete_store_are_one_line_cli_errors(store, tmp_path):
    line = _one_line_error(_cli(*_dash_args(tmp_path / "nowhere", tmp_path / "d")), "dashboards")
    assert "no meta.json" in line and "tempolens collect" in line
    partial = tmp_path / "partial"
    shutil.copytree(store, partial)
    (partial / "shards" / "shard-00002.json").unlink()
    line = _one_line_error(_cli(*_dash_args(partial, tmp_path / "d")), "dashboards")
    assert "incomplete (2/3 shards)" in line and "rerun `tempolens collect`" in line
    (partial / "meta.json").write_text('{"format_version": 1, "sae": ')
    line = _one_line_error(_cli(*_dash_args(partial, tmp_path / "d")), "dashboards")
    assert "not valid JSON" in line


# -- SIGKILL at each stage of `tempolens dashboards` -----------------------------------------------------
# The child is the real CLI (`tempolens.cli.main`) with one hook that SIGKILLs the process at a precise
# point: the n-th shard read (statistics), or just before the atomic rename of a named output file
# (its temporary file complete on disk, the destination not yet replaced).
KILLER = textwrap.dedent(
    """
    import os, signal, sys
    where, arg = sys.argv[1], sys.argv[2]
    if where == "shard-read":
        import tempolens.store.codestore as cs
        real, calls = cs.CodeStore.load_shard, [0]
        def load_shard(self, *a, **k):
            calls[0] += 1
            if calls[0] == int(arg):
                os.kill(os.getpid(), signal.SIGKILL)
            return real(self, *a, **k)
        cs.CodeStore.load_shard = load_shard
    elif where == "rename":
        real_replace = os.replace
        def replace(src, dst, *a, **k):
            if os.path.basename(str(dst)) == arg:
                os.kill(os.getpid(), signal.SIGKILL)
            return real_replace(src, dst, *a, **k)
        os.replace = replace
    from tempolens.cli import main
    sys.exit(main(sys.argv[3:]))
    """
)


def _killed(where: str, arg: str, args: list[str]) -> None:
    r = subprocess.run(
        [sys.executable, "-c", KILLER, where, arg, *args], env=_env(), capture_output=True, text=True, timeout=300
    )
    assert r.returncode == -9, (r.returncode, r.stderr[-2000:])  # it really died by SIGKILL


def test_dashboards_killed_at_each_stage_then_rerun_is_identical(store, reference_dashboards, tmp_path):
    out = tmp_path / "dash"
    args = _dash_args(store, out)
    # 1. during the statistics pass (5th shard read: the 2nd pass over the 3 shards)
    _killed("shard-read", "5", args)
    assert not (out / "stats.safetensors").exists()
    # 2. statistics written, but killed before their cache key: the rerun must not trust them
    _killed("rename", "stats.key", args)
    assert (out / "stats.safetensors").exists() and not (out / "stats.key").exists()
    # 3. during the exports: the second site chunk is complete in its temporary file, not yet renamed
    _killed("rename", "chunk-1.js", args)
    assert (out / "stats.key").exists() and (out / "logits.key").exists()
    # the site is built in site.partial/ and published whole: no partial site/ tree
    assert (out / "site.partial" / "data" / "features" / "chunk-0.js").exists() and not (out / "site").exists()
    # 4. the last file of the run
    _killed("rename", "meta.js", args)
    assert not (out / "SHA256SUMS").exists()  # written last: its absence says the exports are incomplete
    r = _cli(*args)
    assert r.returncode == 0, r.stderr[-2000:]
    _assert_same_tree(out, reference_dashboards)


def test_exports_carry_checksums(reference_dashboards, tmp_path):
    sums = (reference_dashboards / "SHA256SUMS").read_text().splitlines()
    listed = {ln.split("  ", 1)[1] for ln in sums}
    files = {
        p.relative_to(reference_dashboards).as_posix()
        for d in ("neuronpedia", "site")
        for p in (reference_dashboards / d).rglob("*")
        if p.is_file()
    }
    assert listed == files and len(files) > 10
    copy = tmp_path / "copy"
    shutil.copytree(reference_dashboards, copy)
    if shutil.which("sha256sum"):
        assert (
            subprocess.run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=copy, capture_output=True).returncode == 0
        )
        victim = copy / "site" / "data" / "index.js"
        victim.write_bytes(victim.read_bytes().replace(b"[", b"(", 1))
        r = subprocess.run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=copy, capture_output=True, text=True)
        assert r.returncode != 0 and "site/data/index.js: FAILED" in r.stdout


# -- disk full --------------------------------------------------------------------------------------------
def _enospc(path: str) -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)


def test_disk_full_in_store_writer_keeps_finished_shards(
    tiny_lm_dir, corpus, temporal_dir, store, tmp_path, monkeypatch
):
    from tempolens.store import codestore

    real, calls = codestore.save_file, [0]

    def full_disk(tensors, filename, *a, **k):
        calls[0] += 1
        if calls[0] == 2:
            Path(filename).write_bytes(b"partial")  # a partly written temporary file
            raise _enospc(filename)
        return real(tensors, filename, *a, **k)

    monkeypatch.setattr(codestore, "save_file", full_disk)
    out = tmp_path / "store"
    with pytest.raises(
        StoreError, match=r"disk full while writing .*shard-00001.safetensors; free space and rerun"
    ) as e:
        collect(_collect_cfg(tiny_lm_dir, corpus, temporal_dir, out))
    assert "\n" not in str(e.value)
    assert CodeStore(out).done_shards(verify=True) == [0]
    assert sorted(p.name for p in (out / "shards").iterdir()) == [
        "shard-00000.json",
        "shard-00000.safetensors",
    ]  # no temporary left
    monkeypatch.setattr(codestore, "save_file", real)
    res = collect(_collect_cfg(tiny_lm_dir, corpus, temporal_dir, out))
    assert res.shards_skipped == 1 and res.shards_written == 2
    assert _shard_bytes(out) == _shard_bytes(store)


def test_disk_full_in_dashboards_output_keeps_statistics(store, reference_dashboards, tmp_path, monkeypatch):
    from tempolens.dashboards.pipeline import build_dashboards
    from tempolens.stats import features

    out = tmp_path / "dash"
    real_replace = os.replace

    def full_disk(src, dst, *a, **k):
        if os.path.basename(str(dst)) == "chunk-1.js":
            raise _enospc(str(dst))
        return real_replace(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(WriteError, match=r"disk full while writing .*chunk-1\.js; free space and rerun") as e:
        build_dashboards(_dash_cfg(store, out))
    assert "\n" not in str(e.value)
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]  # the failed write left no temporary
    monkeypatch.setattr(os, "replace", real_replace)

    def must_not_recompute(*a, **k):
        raise AssertionError("statistics finished before the disk filled up must be reused")

    monkeypatch.setattr(features, "compute_feature_stats", must_not_recompute)
    build_dashboards(_dash_cfg(store, out))
    _assert_same_tree(out, reference_dashboards)


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A real tmpfs of a few pages (needs root and mount; skipped otherwise). Yields (path, resize)."""
    for resize in mounted_tmpfs(tmp_path / "tmpfs", "size=24k"):
        yield tmp_path / "tmpfs", resize


def test_real_full_disk_collect_then_dashboards(
    tiny_tmpfs, tiny_lm_dir, corpus, temporal_dir, store, reference_dashboards
):
    mnt, resize = tiny_tmpfs
    cfg = _collect_cfg(tiny_lm_dir, corpus, temporal_dir, mnt / "store")
    line = _one_line_error(_cli(*_collect_args(cfg)), "collect")
    assert "disk full" in line or "No space left" in line, line
    assert "rerun" in line
    kept = CodeStore(mnt / "store").done_shards(verify=True)  # whatever finished is intact
    assert len(kept) < 3
    assert not list((mnt / "store").rglob(".*.tmp-*"))
    resize("4m")
    r = _cli(*_collect_args(cfg))
    assert r.returncode == 0, r.stderr[-2000:]
    assert _shard_bytes(mnt / "store") == _shard_bytes(store)

    # the dashboards output on a disk that fills up
    used = sum(p.stat().st_size for p in mnt.rglob("*") if p.is_file())
    resize(f"{(used // 4096 + 12) * 4}k")  # ~48 KB of room: the statistics fit, the exports do not
    out = mnt / "dash"
    line = _one_line_error(_cli(*_dash_args(mnt / "store", out)), "dashboards")
    assert "disk full" in line or "No space left" in line, line
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]
    CodeStore(mnt / "store").done_shards(verify=True)  # the store it read is untouched
    resize("16m")
    r = _cli(*_dash_args(mnt / "store", out))
    assert r.returncode == 0, r.stderr[-2000:]
    # the same exports as the reference, up to the store's path and creation time (this store was collected later)
    created_here, created_ref = (
        json.loads((s / "meta.json").read_text())["created"].encode() for s in (mnt / "store", store)
    )
    replace = {str(mnt / "store").encode(): str(store).encode(), created_here: created_ref}
    a, b = _tree(out), _tree(reference_dashboards)
    assert sorted(a) == sorted(b)
    for rel in a:
        if rel.endswith(".key") or rel == "SHA256SUMS":
            continue  # hashes of files that name the store (cache keys: its meta.json)
        got = a[rel]
        for x, y in replace.items():
            got = got.replace(x, y)
        assert got == b[rel], rel


# -- a judge endpoint that is down, then comes back -------------------------------------------------------
def test_endpoint_down_records_failures_then_resume_matches(tiny_lm_dir, tmp_path):
    import socket

    from autointerp_support import ChatServer, RuleLLM, build_dense, hashing_embedder, write_store
    from transformers import AutoTokenizer

    from tempolens.autointerp.pipeline import AutointerpConfig, run_autointerp

    tok = AutoTokenizer.from_pretrained(str(tiny_lm_dir))
    toks, special, dense = build_dense(tok)
    good = write_store(tmp_path / "good", toks, special, dense)
    spaced = lambda i: " " + tok.convert_ids_to_tokens(int(i))  # noqa: E731

    def cfg(out, url):
        return AutointerpConfig(
            stores=(f"good={good}",),
            out=out,
            n_latents=3,
            backend="openai",
            model="test-judge",
            base_url=url,
            api_key_env="TEMPOLENS_TEST_NO_SUCH_KEY",
            concurrency=2,
            progress=False,
            backoff_s=0.0,
            max_retries=1,
            timeout_s=5.0,
            scorers=("saebench", "delphi-detection"),
        )

    with ChatServer(RuleLLM()) as srv:
        ref = run_autointerp(cfg(tmp_path / "ref", srv.url), tokenizer=spaced, embedder=hashing_embedder())
        n_ref = len(srv.requests)

    with socket.socket() as s:  # a port where nothing listens: connection refused
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    down = run_autointerp(cfg(tmp_path / "run", dead), tokenizer=spaced, embedder=hashing_embedder())
    s0 = down["saes"][0]
    assert s0["transport_errors"] >= 1  # recorded, not raised, not scored as a wrong answer
    assert all(v.get("n", 0) == 0 for v in s0["scores"].values() if isinstance(v, dict))

    with ChatServer(RuleLLM()) as srv:
        res = run_autointerp(cfg(tmp_path / "run", srv.url), tokenizer=spaced, embedder=hashing_embedder())
        prompts = [json.dumps(r["messages"], sort_keys=True) for r in srv.requests]
    assert len(prompts) == n_ref and len(set(prompts)) == len(prompts)  # nothing lost, nothing done twice
    strip = lambda r: [{k: v for k, v in s.items() if k != "store"} for s in r["saes"]]  # noqa: E731
    assert strip(res) == strip(ref)


# -- temporaries left by a kill between write and rename ------------------------------------------------
def test_stale_temporaries_of_dead_writers_are_removed(tiny_lm_dir, corpus, temporal_dir, store, tmp_path):
    from tempolens.fsutil import remove_stale_temporaries

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    root = tmp_path / "store"
    shutil.copytree(store, root)
    stale = root / "shards" / f".shard-00001.safetensors.tmp-{dead.pid}"
    live = root / "shards" / f".shard-00002.safetensors.tmp-{os.getpid()}"  # a writer still running
    other = root / "shards" / ".notes.tmp-abc"
    for p in (stale, live, other):
        p.write_bytes(b"partial")
    assert remove_stale_temporaries(root) == [stale]
    assert live.exists() and other.exists()
    live.unlink()
    stale.write_bytes(b"partial")
    collect(_collect_cfg(tiny_lm_dir, corpus, temporal_dir, root))  # resuming a store cleans it
    assert not stale.exists() and other.exists()


def test_autointerp_names_a_corrupt_shard_before_any_llm_call(tiny_lm_dir, tmp_path):
    from autointerp_support import ChatServer, RuleLLM, build_dense, hashing_embedder, write_store
    from transformers import AutoTokenizer

    from tempolens.autointerp.pipeline import AutointerpConfig, run_autointerp

    tok = AutoTokenizer.from_pretrained(str(tiny_lm_dir))
    toks, special, dense = build_dense(tok)
    good = write_store(tmp_path / "good", toks, special, dense)
    victim = CodeStore(good).shard_path(1)
    data = bytearray(victim.read_bytes())
    data[-5] ^= 0x01  # one bit of one code value: the file still parses
    victim.write_bytes(bytes(data))
    with ChatServer(RuleLLM()) as srv:
        cfg = AutointerpConfig(
            stores=(f"good={good}",),
            out=tmp_path / "ai",
            n_latents=2,
            backend="openai",
            model="test-judge",
            base_url=srv.url,
            api_key_env="TEMPOLENS_TEST_NO_SUCH_KEY",
            progress=False,
            backoff_s=0.0,
            scorers=("saebench",),
        )
        with pytest.raises(StoreError, match=r"shard-00001\.safetensors is corrupt .*rerun `tempolens collect`"):
            run_autointerp(
                cfg, tokenizer=lambda i: " " + tok.convert_ids_to_tokens(int(i)), embedder=hashing_embedder()
            )
        assert srv.requests == []
