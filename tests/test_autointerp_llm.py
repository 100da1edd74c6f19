import pytest
import torch
from autointerp_support import ChatServer, RuleLLM

from tempolens.autointerp.llm import LLMError, LLMFatalError, LocalBackend, OpenAIBackend, resolve_local_model
from tempolens.errors import ConfigError

torch.set_num_threads(1)
MSG = [
    {"role": "system", "content": "comma-separated"},
    {"role": "user", "content": "this neuron fires on the word cat.\n\n1. a cat\n2. a dog\n"},
]


def _backend(url, **kw):
    return OpenAIBackend(model="m", base_url=url, api_key_env="TEMPOLENS_TEST_NO_SUCH_KEY", **kw)


def test_openai_backend_roundtrip_and_usage():
    with ChatServer(RuleLLM()) as srv:
        r = _backend(srv.url).complete(MSG, max_tokens=20, temperature=0.0, seed=3)
        assert r.text == "1" and r.prompt_tokens > 0 and r.completion_tokens == 1
        req = srv.requests[0]
        assert req["max_tokens"] == 20 and req["seed"] == 3 and req["temperature"] == 0.0 and req["messages"] == MSG
        assert len(srv.requests) == 1


def test_retries_with_exponential_backoff_on_429_5xx_timeouts():
    with ChatServer(RuleLLM(), faults=["429", "500", "sleep:1.5", "503"]) as srv:
        be = _backend(srv.url, timeout_s=0.5, max_retries=5)
        r = be.complete(MSG, 20)
        assert r.text == "1"
        assert len(srv.requests) == 5  # 429, 500, a timeout and 503 were retried (the openai client's own retries)


def test_retries_exhausted_and_fatal_errors():
    with ChatServer(RuleLLM(), faults=["500"] * 3) as srv:
        with pytest.raises(LLMError, match="after 2 retries"):
            _backend(srv.url, max_retries=2).complete(MSG, 20)
        assert len(srv.requests) == 3
    with ChatServer(RuleLLM(), faults=["401"]) as srv:
        with pytest.raises(LLMFatalError, match="refused"):
            _backend(srv.url, max_retries=5).complete(MSG, 20)
        assert len(srv.requests) == 1  # never retried


def test_missing_key_for_openai_is_a_config_error(monkeypatch):
    monkeypatch.delenv("TEMPOLENS_TEST_NO_SUCH_KEY", raising=False)
    with pytest.raises(ConfigError, match="TEMPOLENS_TEST_NO_SUCH_KEY"):
        OpenAIBackend(model="gpt-4o-mini", api_key_env="TEMPOLENS_TEST_NO_SUCH_KEY")


def test_local_backend_greedy_deterministic(tiny_lm_dir):
    be = LocalBackend(str(tiny_lm_dir))
    a = be.complete(MSG, max_tokens=6)
    b = be.complete(MSG, max_tokens=6)
    assert a == b and a.completion_tokens <= 6 and a.prompt_tokens > 5
    with pytest.raises(ConfigError):
        resolve_local_model("/no/such/model")
