"""A store that cannot lie: meta.json carries its own checksum, every reader checks the shards on disk
against it before writing anything, and dashboards publish their trees atomically."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fixtures import save_tiny_temporal_sae, write_word_corpus

from tempolens.collect import CollectConfig, collect
from tempolens.dashboards.pipeline import DashboardConfig, build_dashboards
from tempolens.store.codestore import META_CHECKSUM_KEY, CodeStore, StoreError, meta_checksum

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def store(tiny_lm_dir, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("integrity")
    corpus = write_word_corpus(root / "docs.txt", seed=11)
    sae = save_tiny_temporal_sae(root / "temporal", seed=4)
    out = root / "store"
    collect(
        CollectConfig(
            model=str(tiny_lm_dir),
            layer=2,
            sae=str(sae),
            corpus=str(corpus),
            n_prompts=12,
            prompt_len=16,
            shard_prompts=4,
            batch_size=4,
            device="cpu",
            out=out,
            progress=False,
        )
    )
    return out


def _copy(store: Path, dest: Path) -> Path:
    shutil.copytree(store, dest)
    return dest


def _dash_cfg(store: Path, out: Path, **kw) -> DashboardConfig:
    return DashboardConfig(
        batches=True,
        bulk=True,
        store=store,
        out=out,
        chunk_size=32,
        features_per_batch=40,
        device="cpu",
        progress=False,
        **kw,
    )


def _leaves(obj, prefix=()):
    for k, v in obj.items():
        if isinstance(v, dict):
            yield from _leaves(v, prefix + (k,))
        else:
            yield prefix + (k,)


def _edited(v):
    if isinstance(v, bool):
        return not v
    if isinstance(v, int):
        return v + 1
    if isinstance(v, float):
        return v * 2 + 1
    if isinstance(v, str):
        return v + "x"
    if isinstance(v, list):
        return v + [1]
    return "x"


def _set(meta: dict, path: tuple, value) -> None:
    d = meta
    for k in path[:-1]:
        d = d[k]
    d[path[-1]] = value


def _get(meta: dict, path: tuple):
    for k in path:
        meta = meta[k]
    return meta


def test_meta_carries_its_checksum(store):
    meta = json.loads((store / "meta.json").read_text())
    assert meta[META_CHECKSUM_KEY] == meta_checksum(meta) and len(meta[META_CHECKSUM_KEY]) == 64
    man = json.loads((store / "shards" / "shard-00000.json").read_text())
    assert man["n_prompts"] == 4 and man["prompt_len"] == 16


def test_every_editable_field_of_meta_json_is_caught_before_any_output(store, tmp_path):
    """Editing any field of meta.json (without its checksum) is named as an edit of meta.json — the stale
    side — by every reader, before dashboards write anything."""
    fields = list(_leaves(json.loads((store / "meta.json").read_text())))
    assert len(fields) > 15 and ("prompts", "prompt_len") in fields and ("n_shards",) in fields
    broken = _copy(store, tmp_path / "s")
    original = (broken / "meta.json").read_text()
    for path in fields:
        meta = json.loads(original)
        _set(meta, path, _edited(_get(meta, path)))
        (broken / "meta.json").write_text(json.dumps(meta))
        with pytest.raises(StoreError, match=r"meta\.json was changed after `tempolens collect` wrote it") as e:
            build_dashboards(_dash_cfg(broken, tmp_path / "d"))
        msg = str(e.value)
        assert "\n" not in msg and "another store" not in msg and "restore the original meta.json" in msg, path
        assert not (tmp_path / "d").exists(), path
    (broken / "meta.json").write_text(original)
    assert CodeStore(broken).complete


@pytest.mark.parametrize(
    "edit,needle",
    [
        ({("n_shards",): 2}, "says n_shards=2, but prompts.n_prompts=12 in shards of shard_size=4 make 3"),
        ({("shard_size",): 3, ("n_shards",): 4}, "shard-00000 holds 4 prompts × 16 tokens, but meta.json"),
        (
            {("prompts", "n_prompts"): 8, ("n_shards",): 2},
            "holds shard-00002.json and 1 more files beyond the 2 shards",
        ),
        (
            {("prompts", "prompt_len"): 8},
            "shard-00000 holds 4 prompts × 16 tokens, but meta.json (prompts.n_prompts=12, prompts.prompt_len=8",
        ),
        ({("prompts", "prompt_len"): "16"}, "prompts.prompt_len is '16', not a positive integer"),
        ({("sae", "width"): 0}, "sae.width is 0, not a positive integer"),
    ],
)
def test_a_re_signed_meta_still_cannot_lie_about_the_shards(store, tmp_path, edit, needle):
    """Someone who also recomputes the checksum: the shard set on disk disagrees, and the message names how."""
    broken = _copy(store, tmp_path / "s")
    meta = json.loads((broken / "meta.json").read_text())
    for path, value in edit.items():
        _set(meta, path, value)
    meta[META_CHECKSUM_KEY] = meta_checksum(meta)
    (broken / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(StoreError) as e:
        build_dashboards(_dash_cfg(broken, tmp_path / "d"))
    assert needle in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "d").exists()


def test_shard_tensors_are_checked_against_meta(store, tmp_path):
    """Manifests of older stores carry no prompt_len; the shard's own tensors are checked when read."""
    broken = _copy(store, tmp_path / "s")
    for man_path in (broken / "shards").glob("shard-*.json"):
        man = json.loads(man_path.read_text())
        del man["prompt_len"]
        man_path.write_text(json.dumps(man))
    meta = json.loads((broken / "meta.json").read_text())
    meta["prompts"]["prompt_len"] = 8
    meta[META_CHECKSUM_KEY] = meta_checksum(meta)
    (broken / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(StoreError, match=r"shard-00000 holds 4 prompts × 16 tokens, but meta.json .* says 4 × 8"):
        CodeStore(broken).load_shard(0)
    meta["prompts"]["prompt_len"] = 16
    meta["sae"]["width"] = 10
    meta[META_CHECKSUM_KEY] = meta_checksum(meta)
    (broken / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(StoreError, match=r"shard-00000 holds latent \d+, but meta.json says sae.width=10"):
        CodeStore(broken).load_shard(0)


def test_extra_shard_files_are_named(store, tmp_path):
    broken = _copy(store, tmp_path / "s")
    shutil.copy(broken / "shards" / "shard-00000.safetensors", broken / "shards" / "shard-00007.safetensors")
    with pytest.raises(StoreError, match=r"holds shard-00007.safetensors beyond the 3 shards"):
        CodeStore(broken)


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "tempolens.cli", *args], env=env, capture_output=True, text=True, timeout=300
    )


def _one_line_error(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr, r.stderr[-2000:]
    lines = [ln for ln in r.stderr.splitlines() if "error:" in ln]
    assert len(lines) == 1, r.stderr[-2000:]
    return lines[0]


@pytest.mark.parametrize("field,value", [("n_shards", 1), ("prompt_len", 8)])
def test_issue_repros_edited_meta_through_the_cli(store, tmp_path, field, value):
    """The two repros: n_shards 3 → 1 (was: exit 0 with statistics of a third of the tokens) and
    prompts.prompt_len edited (was: "statistics belong to another store" after partial exports)."""
    broken = _copy(store, tmp_path / "s")
    meta = json.loads((broken / "meta.json").read_text())
    if field == "n_shards":
        meta["n_shards"] = value
    else:
        meta["prompts"]["prompt_len"] = value
    (broken / "meta.json").write_text(json.dumps(meta, indent=2))
    out = tmp_path / "dash"
    r = _cli("dashboards", "--store", str(broken), "--out", str(out), "--device", "cpu", "--no-progress")
    line = _one_line_error(r)
    assert "meta.json was changed after `tempolens collect` wrote it" in line and "another store" not in line
    assert not out.exists()


@pytest.mark.parametrize("content", ["[1, 2, 3]", "not json {", '"a string"'])
def test_meta_that_is_no_json_object_is_one_line_on_dashboards_and_collect_resume(
    store, tmp_path, capsys, monkeypatch, content
):
    from tempolens.cli import main

    broken = _copy(store, tmp_path / "s")
    (broken / "meta.json").write_text(content)
    assert main(["dashboards", "--store", str(broken), "--out", str(tmp_path / "d"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "meta.json" in err and ("not valid JSON" in err or "not an object" in err)
    assert not (tmp_path / "d").exists()
    import tempolens.sources.models as models

    monkeypatch.setattr(models, "load_hf_model", lambda *a, **k: pytest.fail("the model must not load"))
    log = json.loads((store / "collect_log.json").read_text())["config"]
    args = [
        "collect",
        "--out",
        str(broken),
        "--model",
        log["model"],
        "--layer",
        "2",
        "--sae",
        log["sae"],
        "--corpus",
        log["corpus"],
        "--n-prompts",
        "12",
        "--prompt-len",
        "16",
        "--shard-prompts",
        "4",
        "--device",
        "cpu",
        "--no-progress",
    ]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("tempolens collect: error:") and "--overwrite" in err


def test_dashboards_publish_whole_trees_and_keep_kernel_pages(store, tmp_path, monkeypatch):
    from tempolens.dashboards import site as site_mod

    out = tmp_path / "dash"
    # a first run that fails during the exports leaves no neuronpedia/ or site/ at all
    real = site_mod.SiteWriter.write_index

    def broken(self, rows):
        raise StoreError("simulated failure during the exports")

    monkeypatch.setattr(site_mod.SiteWriter, "write_index", broken)
    with pytest.raises(StoreError, match="simulated"):
        build_dashboards(_dash_cfg(store, out))
    assert (out / "stats.safetensors").exists()
    assert not (out / "site").exists() and not (out / "neuronpedia").exists() and not (out / "SHA256SUMS").exists()
    monkeypatch.setattr(site_mod.SiteWriter, "write_index", real)
    build_dashboards(_dash_cfg(store, out))
    assert (out / "site" / "data" / "index.js").exists() and (out / "neuronpedia" / "batches" / "batch-0.json").exists()
    # pages that `tempolens kernel` added to the site survive a rebuild; a failed rebuild keeps the old trees
    (out / "site" / "kernels").mkdir()
    (out / "site" / "kernels" / "story.html").write_text("kernel page")
    (out / "site" / "data" / "kernels.js").write_text("tempolensKernels({});")
    before = {p.relative_to(out).as_posix(): p.read_bytes() for p in (out / "site").rglob("*") if p.is_file()}
    monkeypatch.setattr(site_mod.SiteWriter, "write_index", broken)
    with pytest.raises(StoreError, match="simulated"):
        build_dashboards(_dash_cfg(store, out, n_top=5))
    after = {p.relative_to(out).as_posix(): p.read_bytes() for p in (out / "site").rglob("*") if p.is_file()}
    assert after == before
    monkeypatch.setattr(site_mod.SiteWriter, "write_index", real)
    build_dashboards(_dash_cfg(store, out, n_top=5))
    assert (out / "site" / "kernels" / "story.html").read_text() == "kernel page"
    assert (out / "site" / "data" / "kernels.js").exists()
    assert sorted(p.name for p in out.iterdir() if ".partial" in p.name or ".old-" in p.name) == []
    assert "site/kernels/story.html" in (out / "SHA256SUMS").read_text()


def test_autointerp_checks_the_store_before_writing_or_calling_anything(tiny_lm_dir, tmp_path):
    from autointerp_support import ChatServer, RuleLLM, build_dense, hashing_embedder, write_store
    from transformers import AutoTokenizer

    from tempolens.autointerp.pipeline import AutointerpConfig, run_autointerp

    tok = AutoTokenizer.from_pretrained(str(tiny_lm_dir))
    toks, special, dense = build_dense(tok)
    good = write_store(tmp_path / "good", toks, special, dense)
    meta = json.loads((good / "meta.json").read_text())
    meta["n_shards"] -= 1
    (good / "meta.json").write_text(json.dumps(meta))
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
        with pytest.raises(StoreError, match=r"meta\.json was changed after `tempolens collect` wrote it"):
            run_autointerp(
                cfg, tokenizer=lambda i: " " + tok.convert_ids_to_tokens(int(i)), embedder=hashing_embedder()
            )
        assert srv.requests == [] and not (tmp_path / "ai").exists()
