"""The published Temporal SAEs as their authors ship them, through the command line.

Folders carry the authors' full training conf.yaml (``sae_type``, ``gamma_reg``, ``encoder_reg``,
optimizer/eval/log/hydra sections, ``data.dtype: bfloat16``) in the three checkpoint layouts; the store
``tempolens collect`` writes from them must equal the one from a clean conf.yaml. Hub repositories are
served from a hub-layout cache with ``HF_HUB_OFFLINE=1``; what the cache lacks must be reported as not
downloaded, with the command that downloads it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fixtures import hub_snapshot, research_temporal_sae, write_research_folder, write_word_corpus

from tempolens.cli import main
from tempolens.errors import ConfigError, SourceError
from tempolens.saes import TemporalSAE, load_sae, save_temporal_sae
from tempolens.store import CodeStore

LAYOUTS = ("safetensors", "pt", "flat_pt")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_word_corpus(tmp_path_factory.mktemp("corpus") / "docs.txt", seed=1)


@pytest.fixture(scope="module")
def sae() -> TemporalSAE:
    return research_temporal_sae(d_in=32, width=96, k=8, n_heads=2, tied=False, n_attn_layers=2, seed=5)


def _collect_args(tiny_lm_dir: Path, corpus: Path, sae_spec: str, out: Path, *extra: str) -> list[str]:
    return [
        "collect",
        "--model",
        str(tiny_lm_dir),
        "--layer",
        "2",
        "--sae",
        sae_spec,
        "--corpus",
        str(corpus),
        "--n-prompts",
        "6",
        "--prompt-len",
        "12",
        "--shard-prompts",
        "3",
        "--batch-size",
        "3",
        "--no-progress",
        "--out",
        str(out),
        *extra,
    ]


def _shards(store: Path) -> list[bytes]:
    s = CodeStore(store)
    return [s.shard_path(i).read_bytes() for i in range(s.n_shards)]


def _error_line(stderr: str) -> str:
    """The one error line of a failed command (transformers' weight-loading bar may precede it)."""
    errors = [ln for ln in stderr.splitlines() if "error:" in ln]
    assert len(errors) == 1 and errors[0].startswith("tempolens collect: error: ") and "Traceback" not in stderr, stderr
    return errors[0]


def _meta(store: Path) -> dict:
    return json.loads((store / "meta.json").read_text())


@pytest.fixture(scope="module")
def clean_store(tmp_path_factory, tiny_lm_dir, corpus, sae) -> Path:
    """The store from the same weights with a clean conf.yaml (only the forward-pass fields)."""
    root = tmp_path_factory.mktemp("clean")
    folder = save_temporal_sae(sae, root / "sae")
    assert main(_collect_args(tiny_lm_dir, corpus, str(folder), root / "store")) == 0
    return root / "store"


@pytest.mark.parametrize("layout", LAYOUTS)
def test_collect_research_folder_equals_clean_conf(tmp_path, tiny_lm_dir, corpus, sae, clean_store, layout, capsys):
    folder = write_research_folder(tmp_path / layout, sae, layout)
    assert main(_collect_args(tiny_lm_dir, corpus, str(folder), tmp_path / "store")) == 0
    assert "note:" not in capsys.readouterr().err  # every key of the authors' configs is known
    assert _shards(tmp_path / "store") == _shards(clean_store)
    got, ref = _meta(tmp_path / "store"), _meta(clean_store)
    for key in ("model", "prompts", "n_shards", "shard_size"):
        assert got[key] == ref[key], key
    meta_sae, ref_sae = dict(got["sae"]), dict(ref["sae"])
    provenance = meta_sae.pop("metadata")
    for d in (meta_sae, ref_sae):
        d.pop("spec")
        d.pop("metadata", None)
    assert meta_sae == ref_sae
    ignored = provenance["conf_ignored"]
    assert provenance["sae_type"] == "temporal" and provenance["trained_dtype"] == "bfloat16"
    assert ignored["sae.gamma_reg"] == 10 and ignored["sae.encoder_reg"] is True and ignored["sae.block_id"] == 1
    assert ignored["optimizer"]["beta2"] == 0.95 and ignored["hydra"]["job"] == {"chdir": False}
    assert ignored["data.num_total_steps"] == 200000 and ignored["seed"] == 42
    assert provenance["llm"]["model_hf_name"] == "tiny/gemma-3"


def test_wrong_sae_type_is_a_one_line_error(tmp_path, tiny_lm_dir, corpus, sae):
    folder = write_research_folder(tmp_path / "relu_sae", sae, "safetensors", sae_type="relu")
    args = _collect_args(tiny_lm_dir, corpus, str(folder), tmp_path / "s")
    r = subprocess.run([sys.executable, "-m", "tempolens.cli", *args], capture_output=True, text=True)
    assert r.returncode == 2, r.stderr
    line = _error_line(r.stderr)
    assert "sae.sae_type is 'relu', not a Temporal SAE" in line and "conf.yaml" in line


def test_sae_strict_refuses_unknown_keys(tmp_path, tiny_lm_dir, corpus, sae, clean_store, capsys):
    folder = write_research_folder(tmp_path / "odd", sae, "pt", extra_sae={"mystery_knob": 3})
    assert main(_collect_args(tiny_lm_dir, corpus, str(folder), tmp_path / "strict", "--sae-strict")) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "unknown field sae.mystery_knob" in err and "--no-sae-strict" in err
    # the default notes it once and records it, and the codes are those of the clean conf
    assert main(_collect_args(tiny_lm_dir, corpus, str(folder), tmp_path / "lenient", "--no-sae-strict")) == 0
    err = capsys.readouterr().err
    assert err.count("note:") == 1 and "sae.mystery_knob" in err
    assert _meta(tmp_path / "lenient")["sae"]["metadata"]["conf_ignored"]["sae.mystery_knob"] == 3
    assert _shards(tmp_path / "lenient") == _shards(clean_store)
    # kernel/events/serve share the option and pass it to the loader
    assert (
        main(
            [
                "kernel",
                "--model",
                str(tiny_lm_dir),
                "--layer",
                "2",
                "--sae",
                str(folder),
                "--contrast-sae",
                "none",
                "--sae-strict",
                "--out",
                str(tmp_path / "site"),
                "--no-figures",
            ]
        )
        == 2
    )
    assert "unknown field sae.mystery_knob" in capsys.readouterr().err


def test_keys_that_change_inference_are_refused_without_strict(tmp_path, sae):
    folder = write_research_folder(tmp_path / "pos", sae, "safetensors", extra_sae={"use_pos_encoding": True})
    with pytest.raises(ConfigError, match="use_pos_encoding is true"):
        load_sae(folder)
    folder = write_research_folder(
        tmp_path / "nopos", sae, "safetensors", extra_sae={"use_pos_encoding": False, "max_seq_len": 500}
    )
    assert isinstance(load_sae(folder, strict_config=True), TemporalSAE)


# -- the published hub repositories, from a hub-layout cache, offline ------------------------------------------

PUBLISHED = {
    # repo → {folder in the repo: (layout, sub-folder the SAE files sit in under that folder)}
    "canrager/temporalSAEs": {
        "gemma-2-2B/layer_12/temporal": ("safetensors", ""),
        "llama-3.1-8B/layer_15/temporal": ("safetensors", ""),
        "llama-3.1-8B/layer_26/temporal": ("safetensors", ""),
    },
    "ekdeepslubana/temporalSAEs": {"temporal": ("pt", "")},
    "ekdeepslubana/temporalSAEs_llama": {"layer_16": ("pt", ""), "layer_26": ("pt", "w8k2x1qz")},
    "ekdeepslubana/temporalSAEs_gemma": {"": ("pt", "")},
}


@pytest.fixture()
def hub_cache(tmp_path, monkeypatch, sae) -> Path:
    """A hub-layout cache holding every published folder (tiny weights, the authors' configs)."""
    cache = tmp_path / "hf" / "hub"
    for repo, folders in PUBLISHED.items():
        snap = hub_snapshot(cache, repo)
        for folder, (layout, run) in folders.items():
            write_research_folder(snap / folder / run, sae, layout)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    return cache


@pytest.mark.parametrize(
    "spec",
    [f"hf://{repo}" + (f"/{folder}" if folder else "") for repo, folders in PUBLISHED.items() for folder in folders],
)
def test_published_repos_load_offline(hub_cache, sae, spec):
    loaded = load_sae(spec, strict_config=True)
    x = torch.randn(2, 7, 32, generator=torch.Generator().manual_seed(0)) * 10
    assert torch.equal(loaded.encode(x).recon, sae.encode(x).recon)
    assert loaded.cfg.metadata["conf_ignored"]["sae.gamma_reg"] == 10


def test_missing_folder_offline_is_not_in_cache(hub_cache):
    with pytest.raises(SourceError) as e:
        load_sae("hf://canrager/temporalSAEs/llama-3.1-8B/layer_31/temporal")
    msg = str(e.value)
    assert "not in the local Hugging Face cache (HF_HUB_OFFLINE is set)" in msg and "no folder" not in msg
    assert "llama-3.1-8B/layer_31/temporal/conf.yaml of the repo canrager/temporalSAEs" in msg
    assert "huggingface-cli download canrager/temporalSAEs --include 'llama-3.1-8B/layer_31/temporal/*'" in msg
    # a half-downloaded folder names the file it lacks
    snap = next((hub_cache / "models--canrager--temporalSAEs" / "snapshots").iterdir())
    (snap / "llama-3.1-8B/layer_15/temporal/latest_ckpt.safetensors").unlink()
    with pytest.raises(SourceError, match=r"latest_ckpt\.safetensors \(or latest_ckpt\.pt\) of the repo canrager/"):
        load_sae("hf://canrager/temporalSAEs/llama-3.1-8B/layer_15/temporal")


def test_no_folder_only_when_the_hub_says_so(hub_cache, monkeypatch):
    from tempolens.saes import loading
    from tempolens.sources import hub

    monkeypatch.setattr(hub, "hub_offline", lambda: False)  # as if online, but the cache answers (no network here)
    monkeypatch.setattr(loading, "_hub_has_folder", lambda repo, sub, rev: None)  # the hub cannot be reached
    with pytest.raises(SourceError, match="hub cannot be reached from here.*huggingface-cli download"):
        load_sae("hf://canrager/temporalSAEs/nothing/here")
    monkeypatch.setattr(loading, "_hub_has_folder", lambda repo, sub, rev: False)  # the hub answered: no such folder
    with pytest.raises(SourceError, match="the hub says the repository canrager/temporalSAEs has no folder 'nothing/"):
        load_sae("hf://canrager/temporalSAEs/nothing/here")


def test_several_runs_in_one_folder_must_be_named(tmp_path, sae):
    for run in ("a1", "b2"):
        write_research_folder(tmp_path / "layer_16" / run, sae, "flat_pt")
    with pytest.raises(SourceError, match=r"several SAEs in sub-folders \(a1, b2\); name one"):
        load_sae(tmp_path / "layer_16")
    assert isinstance(load_sae(tmp_path / "layer_16" / "b2"), TemporalSAE)


def _offline_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_CACHE", "TRANSFORMERS_CACHE")}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "empty-hf-home"))
    return env


def test_cli_offline_messages_for_sae_and_model(tmp_path, tiny_lm_dir, corpus):
    spec = "hf://canrager/temporalSAEs/llama-3.1-8B/layer_15/temporal"
    cli = [sys.executable, "-m", "tempolens.cli"]
    args = _collect_args(tiny_lm_dir, corpus, spec, tmp_path / "a")
    r = subprocess.run([*cli, *args], capture_output=True, text=True, env=_offline_env(tmp_path))
    assert r.returncode == 2, r.stderr
    err = _error_line(r.stderr)
    assert "the folder llama-3.1-8B/layer_15/temporal is not in the local Hugging Face cache" in err
    assert "of the repo canrager/temporalSAEs" in err and "no folder" not in err
    assert "huggingface-cli download canrager/temporalSAEs --include 'llama-3.1-8B/layer_15/temporal/*'" in err
    args = _collect_args(tiny_lm_dir, corpus, "embedded:temporal", tmp_path / "b")
    args[args.index("--model") + 1] = "google/gemma-2-2b"
    r = subprocess.run([*cli, *args], capture_output=True, text=True, env=_offline_env(tmp_path))
    assert r.returncode == 2, r.stderr
    err = _error_line(r.stderr)
    assert "the model google/gemma-2-2b is not in the local Hugging Face cache (HF_HUB_OFFLINE is set)" in err
    assert "config.json of the repo google/gemma-2-2b" in err
    assert "huggingface-cli download google/gemma-2-2b`" in err and "hf download google/gemma-2-2b" in err


def test_cli_collect_from_cached_llama_repo(tmp_path, tiny_lm_dir, corpus, sae, clean_store):
    """The ekdeepslubana Llama layout (a run folder inside layer_26/) through `collect`, offline."""
    cache = tmp_path / "hf" / "hub"
    write_research_folder(hub_snapshot(cache, "ekdeepslubana/temporalSAEs_llama") / "layer_26" / "w8k2x1qz", sae, "pt")
    env = _offline_env(tmp_path)
    env["HF_HOME"] = str(tmp_path / "hf")
    args = _collect_args(tiny_lm_dir, corpus, "hf://ekdeepslubana/temporalSAEs_llama/layer_26", tmp_path / "store")
    r = subprocess.run([sys.executable, "-m", "tempolens.cli", *args], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert _shards(tmp_path / "store") == _shards(clean_store)
