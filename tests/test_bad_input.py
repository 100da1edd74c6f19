"""Bad input: NaN/inf activations, an SAE with NaN weights, mismatched shapes, wrong option types,
odd Unicode and control characters through the whole pipeline, bad corpus files.

Each is a one-line error that says what to do, or a handled case whose handling is asserted.
Cases tested elsewhere are listed in ``docs/reliability.md``.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fixtures import WORDS, mounted_tmpfs, save_tiny_temporal_sae, write_word_corpus

from tempolens.collect import CollectConfig, collect
from tempolens.dashboards.site import read_site_records
from tempolens.errors import ConfigError, SourceError, TempolensError
from tempolens.store import CodeStore

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_word_corpus(tmp_path_factory.mktemp("bad_corpus") / "docs.txt", seed=3)


@pytest.fixture(scope="module")
def temporal_dir(tmp_path_factory) -> Path:
    return save_tiny_temporal_sae(tmp_path_factory.mktemp("bad_sae") / "temporal", seed=5)


def _cfg(tiny_lm_dir, corpus, sae, out, **kw) -> CollectConfig:
    base = dict(
        model=str(tiny_lm_dir),
        layer=2,
        sae=str(sae),
        corpus=str(corpus),
        n_prompts=8,
        prompt_len=16,
        shard_prompts=4,
        batch_size=4,
        device="cpu",
        out=Path(out),
        progress=False,
    )
    base.update(kw)
    return CollectConfig(**base)


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "tempolens.cli", *args], env=env, capture_output=True, text=True, timeout=300
    )


def _one_line_error(r: subprocess.CompletedProcess, command: str) -> str:
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr, r.stderr[-2000:]
    lines = [ln for ln in r.stderr.splitlines() if "error:" in ln]
    assert len(lines) == 1, r.stderr[-2000:]
    return lines[0]


# -- NaN / inf activations ---------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nonfinite_activations_stop_collect_and_keep_finished_shards(
    tiny_lm_dir, corpus, temporal_dir, tmp_path, monkeypatch, bad
):
    from tempolens.sources.models import SubjectModel

    real = SubjectModel.hidden_at
    batches: list[torch.Tensor] = []  # distinct batches seen (collect may run the first batch twice to calibrate)

    def poisoned(self, ids, *a, **k):
        h = real(self, ids, *a, **k)
        if not any(b.shape == ids.shape and bool((b == ids).all()) for b in batches):
            batches.append(ids.clone())
        if len(batches) == 2 and bool((batches[1] == ids).all()):  # the second batch = prompts 4..7, shard 1
            h = h.clone()
            h[1, 5, 3] = bad
        return h

    monkeypatch.setattr(SubjectModel, "hidden_at", poisoned)
    out = tmp_path / "store"
    with pytest.raises(
        TempolensError,
        match=r"NaN/inf activations at prompts 4\.\.7 \(first \[prompt, position\]: \[\[1, 5\]\]\); "
        r"try --dtype float32",
    ) as e:
        collect(_cfg(tiny_lm_dir, corpus, temporal_dir, out))
    assert "\n" not in str(e.value)
    assert CodeStore(out).done_shards(verify=True) == [0]  # the finished shard is kept, no garbage shard written
    assert not (out / "shards" / "shard-00001.safetensors").exists()


def test_sae_with_nan_weights_is_refused_by_collect_and_dashboards(tiny_lm_dir, corpus, temporal_dir, tmp_path):
    from tempolens.saes.loading import load_sae, save_temporal_sae

    sae = load_sae(str(temporal_dir))
    with torch.no_grad():
        sae.D[7, 3] = float("nan")
    nan_dir = save_temporal_sae(sae, tmp_path / "nan_sae")
    with pytest.raises(SourceError, match=r"has NaN/inf weights in D; the checkpoint is damaged"):
        collect(_cfg(tiny_lm_dir, corpus, nan_dir, tmp_path / "s"))
    # a good store, then dashboards told to use the damaged SAE: the same one-line error, not a crash in the statistics
    collect(_cfg(tiny_lm_dir, corpus, temporal_dir, tmp_path / "good"))
    line = _one_line_error(
        _cli(
            "dashboards",
            "--store",
            str(tmp_path / "good"),
            "--out",
            str(tmp_path / "d"),
            "--sae",
            str(nan_dir),
            "--device",
            "cpu",
            "--no-progress",
        ),
        "dashboards",
    )
    assert "NaN/inf weights in D" in line


def test_a_model_with_nan_in_its_unembedding_is_a_clear_error_and_keeps_the_store(small_store, tiny_lm_dir, tmp_path):
    from tempolens.dashboards.pipeline import DashboardConfig, build_dashboards
    from tempolens.sources.open import load_subject_model

    meta = json.loads((small_store / "meta.json").read_text())
    real = load_subject_model(tiny_lm_dir, int(meta["model"]["layer"]), progress=None)

    class Damaged:  # the real model, its unembedding with a NaN (a checkpoint written by a diverged run)
        def __getattr__(self, name):
            return getattr(real, name)

        def unembed(self):
            W_U, mult, kind = real.unembed()
            W_U = W_U.clone()
            W_U[5, 1] = float("nan")
            return W_U, mult, kind

    before = sorted(p.name for p in (small_store / "shards").iterdir())
    cfg = DashboardConfig(store=small_store, out=tmp_path / "dash", device="cpu", progress=False)
    with pytest.raises(SourceError, match=r"unembedding \(W_U\) has 1 NaN or infinite values \(rows 5\)") as e:
        build_dashboards(cfg, model=Damaged())
    assert "\n" not in str(e.value)
    assert sorted(p.name for p in (small_store / "shards").iterdir()) == before  # the store is untouched


# -- mismatched shapes -------------------------------------------------------------------------------------
def test_dashboards_with_an_sae_of_another_width_is_a_clear_error(tiny_lm_dir, corpus, temporal_dir, tmp_path):
    from tempolens.saes.loading import save_temporal_sae
    from tempolens.saes.random_init import random_temporal_sae

    collect(_cfg(tiny_lm_dir, corpus, temporal_dir, tmp_path / "store"))
    other = save_temporal_sae(random_temporal_sae(32, 64, 8, n_heads=2, seed=1, scaling_factor=0.1), tmp_path / "other")
    line = _one_line_error(
        _cli(
            "dashboards",
            "--store",
            str(tmp_path / "store"),
            "--out",
            str(tmp_path / "d"),
            "--sae",
            str(other),
            "--device",
            "cpu",
            "--no-progress",
        ),
        "dashboards",
    )
    assert "the SAE has 64 latents but the store" in line and "has 96" in line and "--sae" in line


def test_an_sae_trained_on_another_block_is_refused_with_the_layer_to_pass(tiny_lm_dir, corpus, tmp_path):
    """An SAE whose metadata names block 3 must not silently encode block 2's activations."""
    from tempolens.saes.loading import save_temporal_sae
    from tempolens.saes.random_init import random_temporal_sae

    sae = random_temporal_sae(32, 96, 8, n_heads=2, seed=1, scaling_factor=0.1)
    folder = save_temporal_sae(sae, tmp_path / "b3", metadata={"hook_name": "blocks.3.hook_resid_post"})
    args = ["--model", str(tiny_lm_dir), "--corpus", str(corpus), "--sae", str(folder), "--n-prompts", "4"]
    args += ["--prompt-len", "16", "--device", "cpu", "--no-progress"]
    line = _one_line_error(_cli("collect", *args, "--layer", "2", "--out", str(tmp_path / "s2")), "collect")
    assert "was trained on blocks.3" in line and "read at block 2" in line and "--layer 3" in line
    assert not (tmp_path / "s2" / "meta.json").exists()
    r = _cli("collect", *args, "--layer", "3", "--out", str(tmp_path / "s3"))
    assert r.returncode == 0, r.stderr[-2000:]


# -- wrong types in a SAELens cfg.json ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "key, value, needle",
    [
        ("d_in", "32", "d_in must be a positive integer; got '32'"),
        ("d_in", True, "d_in must be a positive integer; got True"),
        ("d_sae", 64.5, "d_sae must be a positive integer; got 64.5"),
        ("k", "four", "k must be an integer for a topk SAE; got 'four'"),
        ("k", None, "k must be an integer for a topk SAE; got None"),
    ],
)
def test_cfg_json_with_wrong_types(tmp_path, key, value, needle):
    from tempolens.saes.loading import load_sae, save_standard_sae
    from tempolens.saes.random_init import random_topk_sae

    folder = save_standard_sae(random_topk_sae(32, 64, 4), tmp_path / "sae")
    cfg = json.loads((folder / "cfg.json").read_text())
    cfg[key] = value
    (folder / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError) as e:
        load_sae(str(folder))
    assert needle in str(e.value) and "cfg.json" in str(e.value) and "\n" not in str(e.value)


# -- wrong option types on the command line ----------------------------------------------------------------
@pytest.mark.parametrize(
    "args, needle",
    [
        (["collect", "--n-prompts", "many"], "--n-prompts"),
        (["collect", "--n-prompts", "0"], "--n-prompts must be >= 1"),
        (["collect", "--prompt-len", "1.5"], "--prompt-len"),
        (["collect", "--dtype", "float8"], "--dtype"),
        (["collect", "--layer", "-1"], "--layer must be >= 0"),
        (["dashboards", "--window", "5000"], "--window must be 1..1024"),
        (["dashboards", "--latents", "3", "x"], "--latents"),
        (["dashboards", "--model-id", "a/b<script>"], "--model-id may use letters"),
        (["autointerp", "--stores", "a=nowhere", "--concurrency", "-2"], "--concurrency"),
    ],
)
def test_wrong_option_types_are_one_line_errors(args, needle, tmp_path):
    r = _cli(*args, "--out", str(tmp_path / "o"))
    assert r.returncode == 2, (r.returncode, r.stderr[-1500:])
    assert "Traceback" not in r.stderr
    errs = [ln for ln in r.stderr.splitlines() if "error:" in ln]
    assert len(errs) == 1 and needle in errs[0], r.stderr[-1500:]
    assert not (tmp_path / "o").exists()  # refused before anything was written


# -- odd Unicode and control characters, corpus → tokenizer → store → dashboards → site ---------------------
ODD_TOKENS = [
    "\u202eevil\u202c",  # right-to-left override
    "zw\u200bsp",  # zero-width space
    "\ufeffbom",  # byte-order mark inside text
    "cafe\u0301",  # combining accent (not NFC-normalised)
    "\U0001f469\u200d\U0001f469\u200d\U0001f467",  # ZWJ emoji sequence (astral plane)
    "ls\u2028ps\u2029",  # JavaScript line terminators
    "esc\x1b[31m",  # ANSI escape
    "bell\x07del\x7f",  # C0 control and DEL
    "\ue000\U0010fffd",  # private use, last plane
    "<b>\"q'&amp;</b>\\",  # markup, quotes, backslash
]


def _read_js(path: Path, fn: str) -> list:
    text = path.read_text(encoding="utf-8")
    for ch in ("<", ">", "\u2028", "\u2029"):
        assert ch not in text, (path, ch)  # nothing in a data script can end it or break its parsing
    m = re.fullmatch(rf"{fn}\((.*)\);\n", text, re.S)
    assert m, path
    return json.loads(f"[{m.group(1)}]")


def test_odd_unicode_and_control_characters_survive_the_pipeline_exactly(tiny_lm_dir, temporal_dir, tmp_path):
    from fixtures import tiny_lm_with_tokens

    from tempolens.dashboards.pipeline import DashboardConfig, build_dashboards

    lm = tmp_path / "lm"
    tok = tiny_lm_with_tokens(tiny_lm_dir, lm, ODD_TOKENS)

    rng = random.Random(0)
    words = [w for w in WORDS if w.isalpha()]
    docs = []
    for k in range(60):
        ws = [rng.choice(words) for _ in range(10)]
        ws.insert(rng.randrange(10), ODD_TOKENS[k % len(ODD_TOKENS)])
        ws.insert(rng.randrange(10), ODD_TOKENS[(3 * k + 1) % len(ODD_TOKENS)])
        docs.append(" ".join(ws))
    corpus = tmp_path / "odd.txt"
    corpus.write_text("\n\n".join(docs) + "\n", encoding="utf-8")

    collect(_cfg(lm, corpus, temporal_dir, tmp_path / "store", layer=1, n_prompts=16))
    toks = CodeStore(tmp_path / "store").all_tokens()
    ids = {tok.convert_tokens_to_ids(t): t for t in ODD_TOKENS}
    seen = {ids[int(i)] for i in toks.unique() if int(i) in ids}
    assert len(seen) >= 8, seen  # the odd tokens reached the store as themselves

    build_dashboards(
        DashboardConfig(
            batches=True,
            bulk=True,
            store=tmp_path / "store",
            out=tmp_path / "dash",
            chunk_size=32,
            features_per_batch=48,
            device="cpu",
            progress=False,
        )
    )
    site = tmp_path / "dash" / "site" / "data"
    shown: set[str] = set()
    for chunk in sorted((site / "features").glob("chunk-*.js")):
        _read_js(chunk, "tempolensFeatures")
    for rec in read_site_records(site.parent).values():  # windows decoded from the shared token table
        for act in rec["activations"]:
            shown.update(act["tokens"])
    assert seen <= shown  # every odd token is in the site data, exactly (JSON-decoded string equality)
    _read_js(site / "index.js", "tempolensIndex")
    _read_js(site / "meta.js", "tempolensMeta")
    batch = json.loads((tmp_path / "dash" / "neuronpedia" / "batches" / "batch-0.json").read_text(encoding="utf-8"))
    assert seen <= {t for f in batch["features"] for a in f["activations"] for t in a["tokens"]}
    bulk_tokens = set()
    for gz in (tmp_path / "dash" / "neuronpedia" / "bulk").rglob("activations/batch-*.jsonl.gz"):
        for line in (
            gzip.decompress(gz.read_bytes()).decode("utf-8").split("\n")[:-1]
        ):  # JSONL: records end at \n only (U+2028 may be raw)
            bulk_tokens.update(json.loads(line)["tokens"])
    assert seen <= bulk_tokens
    # the viewer renders token strings with textContent only
    app = (tmp_path / "dash" / "site" / "assets" / "app.js").read_text()
    assert "innerHTML" not in app and "insertAdjacentHTML" not in app and "document.write" not in app


# -- corpus files ------------------------------------------------------------------------------------------
def test_corpus_edge_cases(tmp_path):
    from tempolens.sources.corpora import iter_documents

    p = tmp_path / "bad.txt"
    p.write_bytes(b"hello \xff\xfe world\r\n\r\nmore\x00 text\rend")
    assert list(iter_documents(str(p))) == [
        "hello \ufffd\ufffd world",
        "more text\nend",
    ]  # invalid UTF-8 replaced, NUL dropped, CR → LF
    j = tmp_path / "bad.jsonl"
    j.write_text('{"text": 5}\n')
    with pytest.raises(SourceError, match="line 1: field 'text' is int, not text"):
        list(iter_documents(str(j)))
    j.write_text('{"body": "x"}\n')
    with pytest.raises(SourceError, match="has no field 'text'.*choose the field"):
        list(iter_documents(str(j)))


def test_empty_corpus_through_the_cli(tiny_lm_dir, temporal_dir, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n  \n")
    line = _one_line_error(
        _cli(
            "collect",
            "--model",
            str(tiny_lm_dir),
            "--layer",
            "2",
            "--sae",
            str(temporal_dir),
            "--corpus",
            str(empty),
            "--n-prompts",
            "4",
            "--prompt-len",
            "16",
            "--device",
            "cpu",
            "--no-progress",
            "--out",
            str(tmp_path / "s"),
        ),
        "collect",
    )
    assert "prompts" in line or "empty" in line or "no text" in line, line


def test_kernel_texts_empty_and_enormous(tmp_path):
    from tempolens.temporal.command import KernelConfig, read_texts

    p = tmp_path / "t.txt"
    p.write_text("  \n\n")
    with pytest.raises(ConfigError, match="contains no texts"):
        read_texts(p)
    from tempolens.temporal.command import MAX_KERNEL_TOKENS

    for n in (0, MAX_KERNEL_TOKENS + 1):
        with pytest.raises(ConfigError, match="--max-tokens must be between 3 and"):
            KernelConfig(text=["x"], max_tokens=n)
    # an enormous text is refused by token count before the model runs (test_temporal_command.py);
    # an enormous request body to `tempolens serve` is refused with 413 (test_serve_server.py)


# -- --out that cannot be written, --prompt-len over the context (issue: adversarial pass) -------------------
@pytest.fixture(scope="module")
def small_store(tiny_lm_dir, corpus, temporal_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bad_out") / "store"
    collect(_cfg(tiny_lm_dir, corpus, temporal_dir, out))
    return out


def _collect_args(tiny_lm_dir, corpus, temporal_dir, out, *extra: str) -> list[str]:
    return [
        "collect",
        "--model",
        str(tiny_lm_dir),
        "--layer",
        "2",
        "--sae",
        str(temporal_dir),
        "--corpus",
        str(corpus),
        "--n-prompts",
        "8",
        "--prompt-len",
        "16",
        "--shard-prompts",
        "4",
        "--device",
        "cpu",
        "--no-progress",
        "--out",
        str(out),
        *extra,
    ]


def _main_error(capsys, args: list[str]) -> str:
    """Run the CLI in this process; it must exit 2 with one line on stderr and no traceback."""
    from tempolens.cli import main

    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.fixture
def no_model_load(monkeypatch):
    import tempolens.sources.models as models

    def refuse(*a, **k):
        pytest.fail("checked too late: the model was loaded")

    monkeypatch.setattr(models, "load_hf_model", refuse)


@pytest.fixture
def read_only_dir(tmp_path):
    """A real read-only filesystem (a tmpfs mounted ro; needs root), else skipped."""
    for _ in mounted_tmpfs(tmp_path / "ro", "ro,size=64k"):
        yield tmp_path / "ro"


def test_out_on_a_real_read_only_filesystem(
    read_only_dir, small_store, tiny_lm_dir, corpus, temporal_dir, capsys, no_model_load
):
    for out in (read_only_dir / "store", read_only_dir):  # to create, and existing
        err = _main_error(capsys, _collect_args(tiny_lm_dir, corpus, temporal_dir, out))
        assert f"--out {out} cannot be written (the filesystem is read-only)" in err and "writable disk" in err
        err = _main_error(capsys, ["dashboards", "--store", str(small_store), "--out", str(out), "--no-progress"])
        assert f"--out {out} cannot be written (the filesystem is read-only)" in err


def test_out_on_a_read_only_filesystem_simulated(
    small_store, tiny_lm_dir, corpus, temporal_dir, tmp_path, capsys, monkeypatch, no_model_load
):
    """EROFS raised by the OS (as when running as root makes chmod useless), for a folder to create."""
    import errno

    real_mkdir = Path.mkdir
    ro = tmp_path / "ro"

    def mkdir(self, *a, **k):
        if self == ro or ro in self.parents:
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_mkdir(self, *a, **k)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    err = _main_error(capsys, _collect_args(tiny_lm_dir, corpus, temporal_dir, ro / "store"))
    assert "cannot be written (the filesystem is read-only)" in err
    err = _main_error(capsys, ["dashboards", "--store", str(small_store), "--out", str(ro / "d"), "--no-progress"])
    assert "cannot be written (the filesystem is read-only)" in err


def test_out_naming_an_existing_file(small_store, tiny_lm_dir, corpus, temporal_dir, tmp_path, capsys, no_model_load):
    f = tmp_path / "file.txt"
    f.write_text("not a folder")
    err = _main_error(capsys, _collect_args(tiny_lm_dir, corpus, temporal_dir, f))
    assert f"--out {f} is a file, not a folder" in err
    err = _main_error(capsys, _collect_args(tiny_lm_dir, corpus, temporal_dir, f / "store"))
    assert "a parent of it is a file" in err
    err = _main_error(capsys, ["dashboards", "--store", str(small_store), "--out", str(f), "--no-progress"])
    assert f"--out {f} is a file, not a folder" in err and "tempolens collect" not in err
    # a --store that is a file: named as such, without suggesting `collect --out <that file>`
    err = _main_error(capsys, ["dashboards", "--store", str(f), "--out", str(tmp_path / "d"), "--no-progress"])
    assert "is a file, not a code store folder" in err and "--out " + str(f) not in err
    assert f.read_text() == "not a folder" and not (tmp_path / "d").exists()


def test_prompt_len_beyond_the_model_context_is_refused_before_loading(
    tiny_lm_dir, corpus, temporal_dir, tmp_path, capsys, no_model_load
):
    args = _collect_args(tiny_lm_dir, corpus, temporal_dir, tmp_path / "s")
    args[args.index("--prompt-len") + 1] = "1025"  # the tiny LM's max_position_embeddings is 1024
    err = _main_error(capsys, args)
    assert f"--prompt-len 1025 is longer than the context of {tiny_lm_dir} (1024 tokens" in err
    assert "--prompt-len 1024 or less" in err


def test_prompt_len_is_checked_against_the_loaded_model_too(tiny_lm_dir):
    """Where config.json is not on disk before loading (a hub id not cached, a .gguf), the loaded model's config
    is checked."""
    from types import SimpleNamespace

    from tempolens.sources.open import check_prompt_len, configured_context, model_context

    assert configured_context(str(tiny_lm_dir)) == 1024
    assert configured_context("no-such-owner/no-such-model") is None
    assert model_context({"text_config": {"max_position_embeddings": 8192}, "max_position_embeddings": 5}) == 8192
    assert model_context(SimpleNamespace(max_position_embeddings=512)) == 512 and model_context(None) is None
    with pytest.raises(ConfigError, match="--prompt-len 600 is longer than the context of m.gguf .512 tokens"):
        check_prompt_len(600, 512, "m.gguf")
    check_prompt_len(512, 512, "m.gguf")
    check_prompt_len(10**6, None, "m.gguf")
