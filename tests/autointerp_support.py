"""Helpers for the autointerp tests: small real code stores with planted latents, a rule-based
explainer/judge, and an OpenAI-compatible chat-completions server (stdlib http.server) with faults."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tempolens.autointerp.llm import Reply
from tempolens.saes.base import SparseCodes
from tempolens.store.codestore import StoreWriter, pack_codes

PLANTED = {0: "cat", 1: "dog", 2: "river", 3: "king"}
"""latent → the word it fires on (value grows with the position in the prompt, so top/iw differ)."""


def build_dense(tokenizer, n_prompts: int = 24, T: int = 40, width: int = 12, seed: int = 0):
    """Token ids [P,T] (BOS at 0), special [P,T], dense codes [P,T,width] with planted latents.

    latents 0–3 fire on their word; 4 fires on every token after 'the' (context latent);
    5 fires at random (~3% of tokens, exponential values); 6 fires on 10 tokens only (dead
    by SAEBench's >15 rule); 7.. never fire.
    """
    rng = np.random.default_rng(seed)
    vocab = tokenizer.get_vocab()
    words = sorted(w for w in vocab if w.isalpha() and w not in PLANTED.values() and w != "the")[:60] + ["the"] * 6
    planted_ids = {l: vocab[w] for l, w in PLANTED.items()}
    pool = [vocab[w] for w in words] + list(planted_ids.values())
    p = np.full(len(pool), 1.0)
    p[-len(planted_ids) :] = 3.0
    p /= p.sum()
    toks = rng.choice(pool, size=(n_prompts, T), p=p)
    toks[:, 0] = tokenizer.bos_token_id
    special = np.zeros((n_prompts, T), dtype=np.uint8)
    special[:, 0] = 1
    dense = np.zeros((n_prompts, T, width), dtype=np.float32)
    for l, tid in planted_ids.items():
        dense[..., l] = (toks == tid) * (1.0 + np.arange(T)[None, :] / T + rng.random((n_prompts, T)))
    the = vocab.get("the")
    prev_the = np.zeros_like(toks, dtype=bool)
    prev_the[:, 1:] = toks[:, :-1] == the
    dense[..., 4] = prev_the * (0.5 + rng.random((n_prompts, T)))
    dense[..., 5] = (rng.random((n_prompts, T)) < 0.03) * rng.exponential(1.0, (n_prompts, T))
    flat = np.argwhere(np.ones((n_prompts, T - 1), bool))[:10]
    for pp, tt in flat:
        dense[pp * 2 % n_prompts, tt + 1, 6] = 0.7
    dense[:, 0, :6] = 5.0  # BOS fires strongly: must be ignored everywhere
    return toks, special, dense


def write_store(
    root: Path, toks, special, dense, shard_size: int = 8, model_spec: str = "tiny", sae_spec: str = "test"
) -> Path:
    P, T, W = dense.shape
    n_shards = (P + shard_size - 1) // shard_size
    meta = {
        "model": {"spec": model_spec, "model_id": model_spec, "hook_name": "blocks.1.hook_resid_post", "layer": 1},
        "sae": {"spec": sae_spec, "architecture": "topk", "width": W, "k": 6},
        "prompts": {"prompt_len": T, "n_prompts": P},
        "n_shards": n_shards,
        "shard_size": shard_size,
    }
    w = StoreWriter(root, meta)
    d = torch.from_numpy(dense)
    for i in range(n_shards):
        sl = slice(i * shard_size, min(P, (i + 1) * shard_size))
        codes = SparseCodes.from_dense(d[sl])
        ptr, lat, val, _ = pack_codes(codes.indices, codes.values)
        w.write_shard(
            i,
            tokens=torch.from_numpy(toks[sl]),
            prompt_ids=torch.arange(sl.start, sl.stop),
            special=torch.from_numpy(special[sl]),
            code_ptr=ptr,
            code_latent=lat,
            code_value=val,
            extras={},
        )
    return root


# ------------------------------------------------------------------------------- rule-based LLM


class RuleLLM:
    """A deterministic, rule-based explainer and judge (a real algorithm, not canned answers).

    Explainer: the most frequent ``<<marked>>`` token → "the word X". Judges: a window is active
    when it contains X; fuzzing: correct when every marked token is X.
    """

    name = "rule-based"

    def __init__(self) -> None:
        self.calls = 0
        self.lock = threading.Lock()

    def complete(self, messages, max_tokens, temperature=0.0, seed=0) -> Reply:
        with self.lock:
            self.calls += 1
        sys_, user = messages[0]["content"], messages[-1]["content"]
        text = self.answer(sys_, user)
        return Reply(text=text, prompt_tokens=len((sys_ + user).split()), completion_tokens=len(text.split()))

    @staticmethod
    def answer(sys_: str, user: str) -> str:
        if "Explanation:" in user or "activating documents" in user:
            marked = re.findall(r"<<\s*([^<>]+?)\s*>>", user)
            if not marked:
                return "nothing in particular"
            words, counts = np.unique([m.strip().lower() for m in marked], return_counts=True)
            return f"This neuron activates on the word {words[counts.argmax()]}"
        m = re.search(r"(?:this neuron fires on|Latent explanation:) the word (\S+?)\.?\n", user)
        word = m.group(1) if m else None
        lines = [ln for ln in user.split("\n") if re.match(r"^(\d+\. |Example \d+: )", ln)]
        bodies = [re.sub(r"^(\d+\. |Example \d+: )", "", ln) for ln in lines]
        if "comma-separated" in sys_:
            hits = [str(i + 1) for i, b in enumerate(bodies) if word and re.search(rf"\b{re.escape(word)}\b", b, re.I)]
            return ", ".join(hits) if hits else "None"
        if "correctly marked" in sys_:
            out = []
            for b in bodies:
                mk = [x.strip().lower() for x in re.findall(r"<<\s*([^<>]+?)\s*>>", b)]
                out.append(int(bool(mk) and all(x == word for x in mk)))
            return json.dumps(out)
        return json.dumps([int(bool(word and re.search(rf"\b{re.escape(word)}\b", b, re.I))) for b in bodies])


# ------------------------------------------------------------------------- OpenAI-compatible server


class ChatServer:
    """``POST /v1/chat/completions`` on 127.0.0.1 around ``backend.complete``; ``faults`` is a list
    consumed one per request: ``"429"``, ``"500"``, ``"503"``, ``"sleep:S"``, ``"garbage"``, ``"401"``.

    ``schema=True`` makes it a server that enforces ``response_format`` JSON schemas (as vLLM, llama.cpp's
    server and Ollama do): the backend's answer is turned into the schema's object, and where it does not
    fit, a schema-valid object is returned instead (constrained decoding always yields one)."""

    def __init__(self, backend, faults: list[str] | None = None, schema: bool = False):
        self.backend = backend
        self.schema = schema
        self.faults = list(faults or [])
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        outer = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):  # quiet
                pass

            def _send(self, code: int, body: bytes, headers: dict[str, str] | None = None):
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length", 0))
                req = json.loads(self.rfile.read(n))
                with outer.lock:
                    outer.requests.append(req)
                    fault = outer.faults.pop(0) if outer.faults else None
                if fault in ("429", "500", "503", "401"):
                    err = json.dumps({"error": {"message": f"injected {fault}", "type": "test"}}).encode()
                    return self._send(int(fault), err, {"retry-after": "0"} if fault == "429" else None)
                if fault and fault.startswith("sleep:"):
                    time.sleep(float(fault.split(":")[1]))
                if fault == "garbage":
                    text = "Sure!!! ]]]{{ [1, [2, [3" * 3
                    pt = ct = 5
                else:
                    r = outer.backend.complete(
                        req["messages"],
                        req.get("max_tokens") or 32,
                        req.get("temperature") or 0.0,
                        req.get("seed") or 0,
                    )
                    text, pt, ct = r.text, r.prompt_tokens, r.completion_tokens
                    if outer.schema and req.get("response_format"):
                        text = schema_object(text, req["response_format"]["json_schema"]["schema"])
                body = {
                    "id": "x",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": req.get("model", "m"),
                    "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                    ],
                    "usage": {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct},
                }
                self._send(200, json.dumps(body).encode())

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> ChatServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def schema_object(text: str, schema: dict[str, Any]) -> str:
    """The JSON object a schema-enforcing server returns for a judge whose free answer is ``text``
    (an index list / ``None`` or a JSON 0/1 list); a schema-valid default when ``text`` does not fit."""
    ((key, prop),) = schema["properties"].items()
    if key == "indices":
        nums = [int(x) for x in re.findall(r"[0-9]+", text)]
        hi = prop["items"]["maximum"]
        vals = sorted({x for x in nums if 1 <= x <= hi})
    else:
        n = prop["minItems"]
        try:
            vals = [int(x) for x in json.loads(text)]
        except (ValueError, TypeError):
            vals = []
        vals = vals if len(vals) == n and set(vals) <= {0, 1} else [0] * n
    return json.dumps({key: vals})


def hashing_embedder(dim: int = 256) -> Callable:
    """A real (if simple) bag-of-words embedder: hashed lower-cased word counts. Deterministic and fast."""
    import hashlib

    def embed(texts):
        out = np.zeros((len(texts), dim))
        for i, t in enumerate(texts):
            for w in re.findall(r"[a-z]+", t.lower()):
                out[i, int(hashlib.md5(w.encode()).hexdigest()[:8], 16) % dim] += 1.0
        return out

    return embed
