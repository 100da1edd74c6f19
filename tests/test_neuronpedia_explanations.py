"""Neuronpedia explanations export: `tempolens autointerp` → `dashboards --autointerp` →
`explanations/batch-<k>.jsonl.gz` rows (Neuronpedia `Explanation`), validated and in SHA256SUMS."""

from __future__ import annotations

import gzip
import hashlib
import json

import pytest
import torch
from autointerp_support import ChatServer, RuleLLM, build_dense, write_store
from schema_validation import SchemaError, validate_bulk_explanation, validate_explanations_file
from transformers import AutoTokenizer

from tempolens.autointerp.pipeline import AutointerpConfig, run_autointerp
from tempolens.dashboards import neuronpedia as npx
from tempolens.errors import ConfigError

torch.set_num_threads(1)
IDS = npx.ExportIds(model_id="tiny-model", layer=1, sae_set="topk-res", dataset="d", n_prompts=1, prompt_len=4)


def test_explainer_model_names():
    assert npx.explainer_model_name("openai:gpt-4o-mini@https://api.openai.com/v1") == "gpt-4o-mini"
    assert (
        npx.explainer_model_name("openai:/cache/explainers/SmolLM2-135M-Instruct.Q4_1-46bc@http://127.0.0.1:8/v1")
        == "SmolLM2-135M-Instruct.Q4_1-46bc"
    )
    assert npx.explainer_model_name("local:SmolLM2-135M-Instruct.Q4_1.gguf") == "SmolLM2-135M-Instruct.Q4_1"
    assert npx.explainer_model_name(None) == "unknown"


def test_rows_validate_and_carry_scores_in_notes(tmp_path):
    (tmp_path / "latents-x.json").write_text(
        json.dumps(
            {
                "3": {
                    "explanation": "the word cat",
                    "explanations": {"saebench": "the word cat", "delphi": "cats"},
                    "scores": {"saebench": 0.9, "delphi-detection": 0.75, "cluster": 0.6},
                    "modes": {"saebench": "schema"},
                },
                "4": {"explanation": None, "explanations": {}, "scores": {"cluster": 0.5}},  # no explanation: no row
                "5": {"explanation": "dogs", "scores": {"saebench": float("nan"), "delphi-fuzzing": 0.5}},
            }
        )
    )
    (tmp_path / "report.json").write_text(json.dumps({"judge": "openai:gpt-4o-mini@https://api.openai.com/v1"}))
    ex = npx.load_autointerp_export(tmp_path / "latents-x.json")
    assert ex.model_name == "gpt-4o-mini" and sorted(ex.latents) == [3, 5]
    p = npx.write_bulk_explanations(tmp_path / "bulk", 0, [3, 4, 5, 6], ex, IDS)
    assert p is not None and p.parts[-3:] == ("1-topk-res", "explanations", "batch-0.jsonl.gz")
    assert validate_explanations_file(p, "1-topk-res", "tiny-model", {3, 4, 5, 6}) == 3
    rows = [json.loads(x) for x in gzip.decompress(p.read_bytes()).decode().splitlines()]
    by = {(r["index"], r["typeName"]): r for r in rows}
    assert by["3", "tempolens-saebench"]["notes"] == "tempolens autointerp scores: saebench 0.9 (schema)"
    assert by["3", "tempolens-delphi"]["notes"] == "tempolens autointerp scores: delphi-detection 0.75"
    shared = by["5", "tempolens-saebench"]["notes"]  # no delphi explanation: the shared one was judged
    assert shared == "tempolens autointerp scores: delphi-fuzzing 0.5"
    assert {r["explanationModelName"] for r in rows} == {"gpt-4o-mini"}
    assert {r["authorId"] for r in rows} == {"tempolens"}
    assert npx.write_bulk_explanations(tmp_path / "bulk", 1, [4, 6], ex, IDS) is None  # never an empty batch file
    (tmp_path / "bad.json").write_text(json.dumps({"x": {"explanation": "y"}}))
    with pytest.raises(ConfigError):
        npx.load_autointerp_export(tmp_path / "bad.json")


def test_validator_rejects_bad_rows():
    good = npx.bulk_explanations(IDS, 7, npx.LatentExplanations({"saebench": "the word cat"}), "m")[0]
    validate_bulk_explanation("$", good, "1-topk-res", "tiny-model")
    for bad in (
        {**good, "layer": "2-x"},
        {**good, "description": "  "},
        {**good, "extra": 1},
        {k: v for k, v in good.items() if k != "typeName"},
        {**good, "index": "seven"},
        {**good, "id": "short"},
        {**good, "notes": 3},
        {**good, "description": "two\nlines"},
        {**good, "explanationModelName": ""},
    ):
        with pytest.raises(SchemaError):
            validate_bulk_explanation("$", bad, "1-topk-res", "tiny-model")


def test_dashboards_export_autointerp_explanations(tiny_lm_dir, tmp_path):
    from tempolens.dashboards.pipeline import DashboardConfig, build_dashboards
    from tempolens.sources.open import load_subject_model

    tok = AutoTokenizer.from_pretrained(str(tiny_lm_dir))
    toks, special, dense = build_dense(tok)
    store = write_store(tmp_path / "store", toks, special, dense)
    with ChatServer(RuleLLM()) as srv:
        ai = AutointerpConfig(
            stores=(f"good={store}",),
            out=tmp_path / "ai",
            latents=(0, 1, 5),
            backend="openai",
            model="test-judge",
            base_url=srv.url,
            api_key_env="TEMPOLENS_TEST_NO_SUCH_KEY",
            scorers=("saebench", "delphi-detection"),
            progress=False,
            concurrency=1,
        )
        run_autointerp(ai, tokenizer=lambda i: " " + tok.convert_ids_to_tokens(int(i)))
    lm = load_subject_model(tiny_lm_dir, layer=1, progress=None)
    W_dec = torch.randn(dense.shape[-1], 32, generator=torch.Generator().manual_seed(0))
    cfg = DashboardConfig(
        batches=True,
        bulk=True,
        store=store,
        out=tmp_path / "dash",
        features_per_batch=4,
        model_id="tiny-model",
        autointerp=tmp_path / "ai" / "latents-good.json",
        progress=False,
    )
    res = build_dashboards(cfg, model=lm, W_dec=W_dec)
    files = sorted((res.bulk / "explanations").glob("batch-*.jsonl.gz"))
    assert [f.name for f in files] == ["batch-0.jsonl.gz", "batch-1.jsonl.gz"]  # latents 0, 1 | 5 (4 per batch)

    def lines(path):
        return gzip.decompress(path.read_bytes()).decode().splitlines()

    feats = {
        k: {int(json.loads(x)["index"]) for x in lines(res.bulk / "features" / f"batch-{k}.jsonl.gz")} for k in (0, 1)
    }
    rows = []
    for k, f in enumerate(files):
        assert validate_explanations_file(f, res.bulk.name, "tiny-model", feats[k]) >= 1
        rows += [json.loads(x) for x in lines(f)]
    by = {int(r["index"]): r for r in rows}
    assert by[0]["description"] == "the word cat" and by[1]["description"] == "the word dog"
    assert {r["explanationModelName"] for r in rows} == {"test-judge"}
    assert {r["typeName"] for r in rows} == {"tempolens-saebench"}
    assert by[0]["notes"] == "tempolens autointerp scores: delphi-detection 1 (text); saebench 1 (text)"
    sums = dict(reversed(line.split("  ", 1)) for line in (tmp_path / "dash" / "SHA256SUMS").read_text().splitlines())
    for f in files:
        rel = f.relative_to(tmp_path / "dash").as_posix()
        assert sums[rel] == hashlib.sha256(f.read_bytes()).hexdigest()
    # rerun without --autointerp: stale explanation batches are removed
    cfg2 = DashboardConfig(
        batches=True,
        bulk=True,
        store=store,
        out=tmp_path / "dash",
        features_per_batch=4,
        model_id="tiny-model",
        progress=False,
    )
    build_dashboards(cfg2, model=lm, W_dec=W_dec)
    assert not list((res.bulk / "explanations").glob("batch-*.jsonl.gz"))
    assert "explanations/" not in (tmp_path / "dash" / "SHA256SUMS").read_text()
