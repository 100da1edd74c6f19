"""`tempolens dashboards` end to end on a small random store and the tiny real LM: every export
validates against the strict schema, output is deterministic, site data cannot break out of scripts."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import pytest
import torch
from schema_validation import (
    validate_batch,
    validate_bulk_activation,
    validate_bulk_feature,
    validate_feature,
    validate_site_chunk_activation,
)
from test_stats_accumulators import make_codes, write_store

from tempolens.dashboards.pipeline import DashboardConfig, build_dashboards
from tempolens.dashboards.site import INDEX_COLUMNS, js_literal, read_site_records
from tempolens.errors import ConfigError
from tempolens.stats.features import FeatureStats
from tempolens.stats.logits import logit_effects

torch.set_num_threads(1)
WIDTH, D = 24, 32


@pytest.fixture(scope="module")
def lm(tiny_lm_dir):
    from tempolens.sources.open import load_subject_model

    return load_subject_model(tiny_lm_dir, layer=1, progress=None)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    codes = make_codes(n_prompts=12, T=16, width=WIDTH)
    return write_store(tmp_path_factory.mktemp("store") / "s", codes, 5)


@pytest.fixture(scope="module")
def W_dec():
    return torch.randn(WIDTH, D, generator=torch.Generator().manual_seed(3))


@pytest.fixture(scope="module")
def autointerp_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("ai") / "ai.json"
    p.write_text(json.dumps({"3": {"explanation": "the word <script> & friends", "scores": {"detection": 0.8}}}))
    return p


@pytest.fixture(scope="module")
def built(store, lm, W_dec, autointerp_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("dash")
    cfg = DashboardConfig(
        batches=True,
        bulk=True,
        store=store.root,
        out=out,
        features_per_batch=10,
        chunk_size=5,
        latents_per_pass=7,
        autointerp=autointerp_file,
        progress=False,
    )
    return build_dashboards(cfg, model=lm, W_dec=W_dec), out


def _read_js(path: Path, fn: str):
    text = path.read_text()
    m = re.fullmatch(rf"{fn}\((.*)\);\n", text, re.S)
    assert m, path
    return text, m.group(1)


def test_batches_validate(built, store):
    res, out = built
    assert len(res.batches) == 3  # 24 latents, 10 per batch
    seen = []
    for k, p in enumerate(res.batches):
        assert p.name == f"batch-{k}.json"
        obj = json.loads(p.read_text())
        validate_batch(obj)
        assert (
            obj["model_id"] == "tiny-model"
            and obj["layer"] == 1
            and obj["sae_set"] == "temporal-res"
            and obj["sae_id_suffix"] is None
        )
        seen += [f["feature_index"] for f in obj["features"]]
        for f in obj["features"]:
            assert f["n_prompts_total"] == 12 and f["n_tokens_in_prompt"] == 16 and f["dataset"] == "test-corpus"
    assert seen == list(range(WIDTH))
    settings = json.loads((out / "neuronpedia" / "batches" / "run_settings.json").read_text())
    assert settings["fold_norm"] is True and settings["ids"]["source_id"] == "1-temporal-res"


def test_records_match_statistics(built, store, lm, W_dec):
    res, out = built
    stats = FeatureStats.load(out / "stats.safetensors")
    feats = {f["feature_index"]: f for p in res.batches for f in json.loads(p.read_text())["features"]}
    tokens = store.all_tokens()
    T = store.prompt_len
    norm = W_dec.double().norm(dim=1)  # default --act-units norm: activations are code × row norm
    eff = logit_effects(W_dec / norm.float().unsqueeze(1), *lm.unembed()[:2], k=10)  # of the unit directions
    for i, f in feats.items():
        assert f["frac_nonzero"] == float(stats.n_active[i]) / stats.n_tokens
        assert f["freq_hist_data_bar_heights"] == stats.hist_counts[i].tolist()
        assert f["pos_str"] == lm.token_strings(eff.top_ids[i].tolist())
        assert f["neg_str"] == lm.token_strings(eff.bottom_ids[i].tolist())
        tops = [a for a in f["activations"] if a["bin_min"] == -1]
        n_top = int((stats.top_gpos[i] >= 0).sum())
        assert len(tops) == n_top
        for r, a in enumerate(tops):
            g = int(stats.top_gpos[i, r])
            p, t = divmod(g, T)
            assert a["tokens"] == lm.token_strings(tokens[p].tolist())  # whole prompt (16 <= 128)
            assert a["qualifying_token_index"] == t
            assert a["values"][t] == pytest.approx(float(stats.top_value[i, r] * norm[i]), rel=1e-4)
            assert a["bin_max"] == pytest.approx(float(stats.max_act[i] * norm[i]), rel=1e-6)
            assert a["values"][0] == 0  # BOS shown as context with value 0
        ints = [a for a in f["activations"] if a["bin_min"] != -1]
        assert len(ints) == int((stats.int_gpos[i] >= 0).sum())
        for a in ints:
            assert a["bin_contains"] > 0
        if stats.n_active[i] == 0:
            assert f["activations"] == [] and f["correlated_features_indices"] == []


def test_export_cpu_seconds_per_part_are_logged(built):
    """The exports' CPU seconds per part (records, batch files, bulk import, site) are in dashboards_log.json."""
    _, out = built
    log = json.loads((out / "dashboards_log.json").read_text())
    timings = log["timings"]
    data = sum(p.stat().st_size for p in (out / "site" / "data").rglob("*.js") if p.name != "autointerp.js")
    assert log["bytes"]["site_data"] == data and log["bytes"].keys() == {"site_data", "batches", "bulk"}
    assert log["bytes_per_latent"]["bulk"] == round(log["bytes"]["bulk"] / log["n_latents"], 1)
    parts = {k: v for k, v in timings.items() if k.startswith("exports_cpu_")}
    assert set(parts) == {"exports_cpu_records", "exports_cpu_batches", "exports_cpu_bulk", "exports_cpu_site"}
    assert all(v >= 0 for v in parts.values()) and parts["exports_cpu_records"] > 0


def test_bulk_import_parses(built):
    res, _ = built
    d = res.bulk
    assert d.parts[-2:] == ("tiny-model", "1-temporal-res")
    for name in ("release", "model", "sourceset", "source"):
        rows = [json.loads(x) for x in (d / f"{name}.jsonl").read_text().splitlines()]
        assert len(rows) == 1
    src = json.loads((d / "source.jsonl").read_text())
    assert (
        src["id"] == "1-temporal-res"
        and src["modelId"] == "tiny-model"
        and src["num_prompts"] == 12
        and src["num_tokens_in_prompt"] == 16
    )
    n_feat = n_act = 0
    for p in sorted((d / "features").glob("batch-*.jsonl.gz")):
        for line in gzip.decompress(p.read_bytes()).decode().splitlines():
            validate_bulk_feature(p.name, json.loads(line), "1-temporal-res", "tiny-model")
            n_feat += 1
    for p in sorted((d / "activations").glob("batch-*.jsonl.gz")):
        for line in gzip.decompress(p.read_bytes()).decode().splitlines():
            a = json.loads(line)
            validate_bulk_activation(p.name, a, "1-temporal-res", "tiny-model")
            assert a["creatorId"] == "tempolens"
            n_act += 1
    assert n_feat == WIDTH and n_act == res.n_examples


def test_site_data(built):
    res, out = built
    site = res.site
    assert (site / "index.html").exists() and (site / "assets" / "app.js").exists()
    text, body = _read_js(site / "data" / "meta.js", "tempolensMeta")
    meta = json.loads(body)
    assert (
        meta["is_temporal"] is True
        and meta["n_latents"] == WIDTH
        and meta["chunk_size"] == 5
        and meta["prompt_len"] == 16
    )
    assert meta["settings"]["fold_norm"] is True
    text, body = _read_js(site / "data" / "index.js", "tempolensIndex")
    idx = json.loads(body)
    assert idx["columns"] == list(INDEX_COLUMNS) and [r[0] for r in idx["rows"]] == list(range(WIDTH))
    assert idx["rows"][3][5] == "the word <script> & friends" and idx["rows"][3][6] == 0.8
    assert meta["window_len"] == 16 and meta["prompt_chunk_size"] > 0
    decoded = read_site_records(site)  # what the viewer shows: windows decoded from the shared prompts
    n = 0
    for c in range(5):
        text, body = _read_js(site / "data" / "features" / f"chunk-{c}.js", "tempolensFeatures")
        m = re.match(r"(\d+),(.*)", body, re.S)
        assert int(m.group(1)) == c
        recs = json.loads(m.group(2))
        assert sorted(int(k) for k in recs) == [i for i in range(WIDTH) if i // 5 == c]
        for k, r in recs.items():
            for i, a in enumerate(r["activations"]):
                validate_site_chunk_activation(
                    f"chunk-{c}[{k}].activations[{i}]", a, window_len=16, prompt_len=16, temporal=True
                )
            validate_feature(f"chunk-{c}[{k}]", decoded[int(k)], site=True, temporal=True)
            n += 1
        assert "<" not in text and ">" not in text and "&" not in text
    for name in ("tokens.js", *(f"prompts/{p.name}" for p in (site / "data" / "prompts").glob("*.js"))):
        text = (site / "data" / name).read_text()
        assert "<" not in text and ">" not in text and "&" not in text  # token strings include < > &
    assert n == WIDTH
    rec3 = decoded[3]
    assert rec3["tempolens"]["explanation"] == "the word <script> & friends" and rec3["tempolens"]["scores"] == {
        "detection": 0.8
    }
    # the decoded windows are exactly the batch files' (tokens and values) plus the site's extras
    batch = {
        f["feature_index"]: f
        for p in sorted((out / "neuronpedia" / "batches").glob("batch-*.json"))
        for f in json.loads(p.read_text())["features"]
    }
    for i, rec in decoded.items():
        assert [
            {k: a[k] for k in ("bin_min", "bin_max", "bin_contains", "tokens", "values", "qualifying_token_index")}
            for a in rec["activations"]
        ] == batch[i]["activations"]


def test_output_is_deterministic(built, store, lm, W_dec, autointerp_file, tmp_path):
    res, out = built
    cfg = DashboardConfig(
        batches=True,
        bulk=True,
        store=store.root,
        out=tmp_path,
        features_per_batch=10,
        chunk_size=5,
        latents_per_pass=24,
        autointerp=autointerp_file,
        progress=False,
    )
    build_dashboards(cfg, model=lm, W_dec=W_dec)
    files = [
        p.relative_to(out)
        for p in out.rglob("*")
        if p.is_file() and p.suffix not in (".safetensors", ".key") and p.name != "dashboards_log.json"
    ]
    assert len(files) > 20
    for rel in files:
        assert (tmp_path / rel).read_bytes() == (out / rel).read_bytes(), rel


def test_cached_stats_are_reused_and_subset_export(built, store, lm, W_dec, tmp_path):
    import shutil

    res, src = built
    out = tmp_path / "o"
    out.mkdir()
    for name in ("stats.safetensors", "stats.key"):
        shutil.copy2(src / name, out / name)
    before = (out / "stats.safetensors").stat().st_mtime_ns
    cfg = DashboardConfig(store=store.root, out=out, latents=(7, 2), batches=False, bulk=False, progress=False)
    r2 = build_dashboards(cfg, model=lm, W_dec=W_dec)
    assert (out / "stats.safetensors").stat().st_mtime_ns == before
    assert r2.n_latents == 2 and r2.batches == []
    r3 = build_dashboards(
        DashboardConfig(
            store=store.root,
            out=out,
            latents=(1,),
            site=False,
            bulk=True,
            source_id="12-temporal-res",
            model_id="gemma-2-2b",
            progress=False,
        ),
        model=lm,
        W_dec=W_dec,
    )
    assert r3.bulk.parts[-2:] == ("gemma-2-2b", "12-temporal-res")
    row = json.loads(
        gzip.decompress((r3.bulk / "activations" / "batch-0.jsonl.gz").read_bytes()).decode().splitlines()[0]
    )
    assert row["layer"] == "12-temporal-res" and row["modelId"] == "gemma-2-2b" and row["index"] == "1"
    _, body = _read_js(r2.site / "data" / "index.js", "tempolensIndex")
    assert [r[0] for r in json.loads(body)["rows"]] == [2, 7]


def test_long_prompts_get_windows(tmp_path, lm):
    codes = make_codes(n_prompts=4, T=40, width=8, k=3, seed=1, temporal=False)
    st = write_store(tmp_path / "s", codes, 4)
    res = build_dashboards(
        DashboardConfig(
            batches=True,
            bulk=True,
            store=st.root,
            out=tmp_path / "o",
            window=12,
            window_after=3,
            n_correlated=2,
            progress=False,
        ),
        model=lm,
        W_dec=torch.randn(8, D),
    )
    obj = json.loads(res.batches[0].read_text())
    validate_batch(obj)
    stats = FeatureStats.load(tmp_path / "o" / "stats.safetensors")
    strs = [lm.token_strings(row) for row in st.all_tokens().tolist()]
    n = 0
    for f in obj["features"]:
        i = f["feature_index"]
        for a in f["activations"]:
            assert len(a["tokens"]) == 12
        for r, a in enumerate(x for x in f["activations"] if x["bin_min"] == -1):
            p, t = divmod(int(stats.top_gpos[i, r]), 40)
            start = min(max(t - 8, 0), 40 - 12)  # 3 tokens after the example, 8 before, clipped to the prompt
            assert a["qualifying_token_index"] == t - start
            assert a["tokens"] == strs[p][start : start + 12]
            n += 1
    assert n > 20
    _, body = _read_js(res.site / "data" / "meta.js", "tempolensMeta")
    assert json.loads(body)["is_temporal"] is False


def test_bad_options_are_one_line_errors(store, lm, W_dec, tmp_path):
    with pytest.raises(ConfigError, match="--window"):
        DashboardConfig(window=0)
    with pytest.raises(ConfigError, match="--window-after"):
        DashboardConfig(window=8, window_after=8)
    with pytest.raises(ConfigError, match="--model-id"):
        DashboardConfig(model_id="a b/c")
    with pytest.raises(ConfigError, match="out of range"):
        build_dashboards(
            DashboardConfig(batches=True, bulk=True, store=store.root, out=tmp_path, latents=(99,), progress=False),
            model=lm,
            W_dec=W_dec,
        )
    bad = tmp_path / "ai.json"
    bad.write_text('{"1": {"explanation": 3}}')
    with pytest.raises(ConfigError, match="explanation"):
        build_dashboards(
            DashboardConfig(batches=True, bulk=True, store=store.root, out=tmp_path, autointerp=bad, progress=False),
            model=lm,
            W_dec=W_dec,
        )
    from tempolens.errors import SourceError

    with pytest.raises(SourceError, match="latents"):
        build_dashboards(
            DashboardConfig(batches=True, bulk=True, store=store.root, out=tmp_path, progress=False),
            model=lm,
            W_dec=torch.randn(5, D),
        )


def test_cli_help_lists_options(capsys):
    from tempolens.cli import main

    with pytest.raises(SystemExit):
        main(["dashboards", "--help"])
    text = capsys.readouterr().out
    assert "--fold-norm" in text and "--n-per-interval" in text and "--creator-id" in text


@pytest.mark.parametrize(
    "s",
    [
        "</script><script>alert(1)</script>",
        "<img src=x onerror=alert(1)>",
        "&amp; &lt;",
        "a\u2028b\u2029c",
        "<!--",
        "]]>",
    ],
)
def test_js_literal_cannot_break_out(s):
    obj = {"tokens": [s, "ok"], s: 1}
    lit = js_literal(obj)
    assert "<" not in lit and ">" not in lit and "&" not in lit and "\u2028" not in lit and "\u2029" not in lit
    assert json.loads(lit) == obj


def test_js_literal_refuses_nan():
    with pytest.raises(ValueError):
        js_literal({"x": float("nan")})


def test_fast_json_matches_stdlib():
    from tempolens.dashboards.records import dumps_bytes, rounded
    from tempolens.dashboards.site import js_literal, js_literal_fast

    obj = {
        "a": [{"tokens": ["<a>", " é", "\u2028", '"q"'], "values": [0.5, 1.0, 0.0, 1.25], "n": None, "b": True}],
        "x": [],
        "y": {"z": [1, 2]},
        "s": "ü<",
    }
    assert json.loads(dumps_bytes(obj)) == obj
    assert json.loads(js_literal_fast(obj)) == obj and js_literal_fast(obj) == js_literal(obj)
    assert rounded(torch.tensor([1.23456, float("nan")]), 3, nullable=True) == [1.23, None]
    vals = rounded(
        torch.tensor([0.0031196109, 12345.678, 1234567.0, 0.0, -0.000123456, 1e-20, 0.5], dtype=torch.float64), 5
    )
    assert vals == [0.0031196, 12346.0, 1234600.0, 0.0, -0.00012346, 1e-20, 0.5]
    assert [repr(v) for v in vals] == ["0.0031196", "12346.0", "1234600.0", "0.0", "-0.00012346", "1e-20", "0.5"]
    with pytest.raises(ValueError):
        rounded(torch.tensor([float("nan")]))
    with pytest.raises(ValueError):
        rounded(torch.tensor([float("inf")]), nullable=True)


def test_row_fragments_equal_row_by_row_stdlib_encoding():
    """The pre-encoded example rows decode to exactly what encoding each row on its own gives."""
    import orjson

    from tempolens.dashboards import records

    x = torch.tensor([[0.0, 1e-05, 123.45, float("nan")], [5e20, 1.0, 2.5e-7, 0.1]], dtype=torch.float64)
    frags = records.row_fragments(x)
    got = [json.loads(orjson.dumps(f)) for f in frags]
    want = [[None if v != v else v for v in row] for row in x.tolist()]
    assert got == want
    assert records.row_fragments(torch.zeros(0, 4)) == []
    assert json.loads(orjson.dumps(records.row_fragments(torch.zeros(2, 0)))) == [[], []]


def test_sparse_rows_decode_to_the_dense_rows():
    """The site's sparse [position, value] rows, filled with their row's fill, give back every row exactly
    (zeros, NaN as null, an empty row, a row of only the fill)."""
    from tempolens.dashboards import records

    nan = float("nan")
    x = torch.tensor(
        [[0.0, 1e-05, 123.45, nan], [nan, nan, 2.5e-7, nan], [0.0, 0.0, 0.0, 0.0], [nan, 0.0, 0.5, 0.0]],
        dtype=torch.float64,
    )
    fill = torch.tensor([0.0, nan, 0.0, 0.0], dtype=torch.float64)
    rows = records.sparse_rows(x, fill)
    assert [json.loads(r) for r in rows] == [
        [[1, 1e-05], [2, 123.45], [3, None]],
        [[2, 2.5e-7]],
        [],
        [[0, None], [2, 0.5]],
    ]
    for r, f, dense in zip(rows, fill.tolist(), x.tolist()):
        out = [None if f != f else f] * 4
        for pos, v in json.loads(r):
            out[pos] = v
        assert out == [None if v != v else v for v in dense]
    assert records.sparse_rows(torch.zeros(0, 4, dtype=torch.float64), torch.zeros(0, dtype=torch.float64)) == []
    assert records._pred_fill(x).isnan().tolist() == [True, True, False, False]  # a tie takes null


def test_token_table_rows_and_activation_objects():
    import orjson

    from tempolens.dashboards import records

    vocab = ["<bos>", " a", "</script><b>", 'é\u2028"', "\n"]
    calls: list[list[int]] = []

    def decode(ids):
        calls.append(list(ids))
        return [vocab[i] for i in ids]

    table = records.TokenTable(decode)
    ids = torch.tensor([[0, 2, 2, 4], [3, 1, 0, 0]])
    rows = table.row_fragments(ids)
    assert [json.loads(orjson.dumps(r)) for r in rows] == [[vocab[i] for i in row] for row in ids.tolist()]
    table.row_fragments(torch.tensor([[1, 3]]))
    assert calls == [[0, 1, 2, 3, 4]]  # every id decoded once, in one call
    # rows keyed as equal (the same window) are encoded once and shared; the output is unchanged
    many = ids[torch.tensor([1, 0, 1, 1, 0])]
    shared = table.row_fragments(many, same=torch.tensor([7, 3, 7, 7, 3]))
    assert [orjson.dumps(r) for r in shared] == [orjson.dumps(r) for r in table.row_fragments(many)]
    assert shared[0] is shared[2] and shared[1] is shared[4]
    a = records.Activation(tokens=rows[0], values=1.5)
    a.qualifying_token, a.max_value, a.max_index, a.min_value = " a", 1.5, 0, 0.0
    assert json.loads(orjson.dumps({"activations": [a]})) == {
        "activations": [{"tokens": [vocab[i] for i in (0, 2, 2, 4)], "values": 1.5}]
    }


def test_incomplete_store_is_a_one_line_error(store, tmp_path, lm, W_dec):
    import shutil

    from tempolens.store.codestore import StoreError

    broken = tmp_path / "broken"
    shutil.copytree(store.root, broken)
    (broken / "shards" / "shard-00001.json").unlink()
    with pytest.raises(StoreError, match="incomplete"):
        build_dashboards(
            DashboardConfig(batches=True, bulk=True, store=broken, out=tmp_path / "o", progress=False),
            model=lm,
            W_dec=W_dec,
        )
    with pytest.raises(StoreError, match="meta.json"):
        build_dashboards(
            DashboardConfig(batches=True, bulk=True, store=tmp_path / "nothing", out=tmp_path / "o", progress=False),
            model=lm,
            W_dec=W_dec,
        )


def test_jsonl_lines_escape_unicode_line_breaks():
    from tempolens.dashboards.neuronpedia import jsonl_lines

    objs = [{"t": ["a\u2028b", "c\u2029"], "v": 1.5}, {"t": []}, {"s": "é\n"}]
    data = jsonl_lines(objs)
    assert data.endswith(b"\n") and jsonl_lines([]) == b""
    lines = data.decode("utf-8").splitlines()  # splits at U+2028/U+2029 too: there must be none raw
    assert [json.loads(x) for x in lines] == objs


def test_records_wait_for_logits_only_for_their_columns_and_without_the_cyclic_collector(
    store, lm, W_dec, tmp_path, monkeypatch
):
    """Each pass builds its activations before it waits for its rows of logit effects and reads the logit columns
    after; the cyclic collector is paused for the passes and restored after (the output is the same: see
    test_output_is_deterministic, which builds with other pass sizes)."""
    import gc

    from tempolens.dashboards import pipeline, records

    log: list[tuple[str, bool]] = []

    def logged(name, f):
        def g(*a, **k):
            log.append((name, gc.isenabled()))
            return f(*a, **k)

        return g

    monkeypatch.setattr(records, "_activations", logged("activations", records._activations))
    monkeypatch.setattr(records, "_logit_columns", logged("logit_columns", records._logit_columns))
    monkeypatch.setattr(pipeline._Effects, "ready", logged("ready", pipeline._Effects.ready))
    assert gc.isenabled()
    cfg = DashboardConfig(store=store.root, out=tmp_path, latents_per_pass=9, recompute=True, progress=False)
    build_dashboards(cfg, model=lm, W_dec=W_dec)
    assert gc.isenabled()  # restored
    names = [n for n, _ in log]
    passes = -(-WIDTH // 9)
    assert names.count("ready") == names.count("logit_columns") == passes
    for p in range(passes):  # per pass: activations …, then ready, then the logit columns
        r = [i for i, n in enumerate(names) if n == "ready"][p]
        assert names[r - 1] == "activations" and names[r + 1] == "logit_columns"
    assert not any(enabled for _, enabled in log)
