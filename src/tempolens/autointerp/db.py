"""SQLite results DB (stdlib ``sqlite3``, WAL): everything the report needs, keyed idempotently.

Tables:

- ``runs(run_id, started, config_json)`` — one row per invocation (the judge/explainer names live here);
- ``saes(sae_id, label, store, meta_json, n_alive, width)`` — one row per code store;
- ``latents(sae_id, latent, n_firings, max_act)`` — the latents chosen for each SAE;
- ``steps(sae_id, latent, protocol, step, status, prompt_json, reply, parsed_json, failure,
  explanation, prompt_tokens, completion_tokens, run_id, created, mode)`` — one row per LLM call or
  LLM-free computation; primary key ``(sae_id, latent, protocol, step)``. ``status`` is ``ok``,
  ``parse_failure`` (a final answer: counted, not retried) or ``error`` (transport failure: retried
  by the next run); ``mode`` is how the judge answered (``text``, ``schema``, ``logprob``,
  ``constrained``; see ``scorers``);
- ``endpoints(endpoint, schema_ok, reply, prompt_tokens, completion_tokens, error, checked)`` — the
  one structured-output probe of each OpenAI-compatible endpoint (a rerun reuses it);
- ``scores(sae_id, latent, scorer, value, details_json, run_id)`` — primary key ``(sae_id, latent, scorer)``.

Each step is written in one transaction (``record``); a finished step is never redone, so a
killed run resumes without explaining or scoring any latent twice.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (run_id TEXT PRIMARY KEY, started REAL, config_json TEXT);
CREATE TABLE IF NOT EXISTS saes (sae_id TEXT PRIMARY KEY, label TEXT, store TEXT, meta_json TEXT, n_alive INTEGER,
    width INTEGER);
CREATE TABLE IF NOT EXISTS latents (sae_id TEXT, latent INTEGER, n_firings INTEGER, max_act REAL,
    PRIMARY KEY (sae_id, latent));
CREATE TABLE IF NOT EXISTS steps (sae_id TEXT, latent INTEGER, protocol TEXT, step TEXT, status TEXT,
    prompt_json TEXT, reply TEXT, parsed_json TEXT, failure TEXT, explanation TEXT,
    prompt_tokens INTEGER DEFAULT 0, completion_tokens INTEGER DEFAULT 0, run_id TEXT, created REAL,
    PRIMARY KEY (sae_id, latent, protocol, step));
CREATE TABLE IF NOT EXISTS scores (sae_id TEXT, latent INTEGER, scorer TEXT, value REAL, details_json TEXT, run_id TEXT,
    PRIMARY KEY (sae_id, latent, scorer));
CREATE TABLE IF NOT EXISTS endpoints (endpoint TEXT PRIMARY KEY, schema_ok INTEGER, reply TEXT,
    prompt_tokens INTEGER DEFAULT 0, completion_tokens INTEGER DEFAULT 0, error TEXT, checked REAL);
"""
STEP_COLUMNS = (
    "sae_id",
    "latent",
    "protocol",
    "step",
    "status",
    "prompt_json",
    "reply",
    "parsed_json",
    "failure",
    "explanation",
    "prompt_tokens",
    "completion_tokens",
    "run_id",
    "created",
    "mode",
)


class ResultsDB:
    """Thread-safe wrapper around one SQLite connection (a lock serialises writes)."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(str(self.path), check_same_thread=False, timeout=30)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.executescript(SCHEMA)
        cols = {r[1] for r in self.conn.execute("PRAGMA table_info(steps)")}
        if "mode" not in cols:  # a DB written before answer modes were recorded
            self.conn.execute("ALTER TABLE steps ADD COLUMN mode TEXT")
        self.conn.commit()
        self.lock = threading.RLock()

    def close(self) -> None:
        with self.lock:
            self.conn.close()

    # ------------------------------------------------------------------------------------ writes
    def add_run(self, run_id: str, config: dict[str, Any]) -> None:
        with self.lock, self.conn:
            self.conn.execute(
                "INSERT OR REPLACE INTO runs VALUES (?,?,?)",
                (run_id, time.time(), json.dumps(config, sort_keys=True, default=str)),
            )

    def add_sae(self, sae_id: str, label: str, store: str, meta: dict[str, Any], n_alive: int, width: int) -> None:
        with self.lock, self.conn:
            self.conn.execute(
                "INSERT OR REPLACE INTO saes VALUES (?,?,?,?,?,?)",
                (sae_id, label, store, json.dumps(meta, sort_keys=True, default=str), n_alive, width),
            )

    def set_latents(self, sae_id: str, rows: list[tuple[int, int, float]]) -> None:
        with self.lock, self.conn:
            self.conn.executemany(
                "INSERT OR IGNORE INTO latents VALUES (?,?,?,?)", [(sae_id, l, n, m) for l, n, m in rows]
            )

    def record(
        self,
        sae_id: str,
        latent: int,
        protocol: str,
        step: str,
        *,
        status: str,
        run_id: str,
        prompt: Any = None,
        reply: str | None = None,
        parsed: Any = None,
        failure: str | None = None,
        explanation: str | None = None,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        score: tuple[str, float, dict[str, Any]] | None = None,
        mode: str | None = None,
    ) -> None:
        """Write one step (and optionally its score) in one transaction. A step already ``ok`` or
        ``parse_failure`` is kept as is; an ``error`` row is replaced by the retry."""
        with self.lock, self.conn:
            cur = self.conn.execute(
                "SELECT status FROM steps WHERE sae_id=? AND latent=? AND protocol=? AND step=?",
                (sae_id, latent, protocol, step),
            ).fetchone()
            if cur is not None and cur[0] != "error":
                return
            self.conn.execute(
                f"INSERT OR REPLACE INTO steps ({','.join(STEP_COLUMNS)}) VALUES ({','.join('?' * len(STEP_COLUMNS))})",
                (
                    sae_id,
                    latent,
                    protocol,
                    step,
                    status,
                    None if prompt is None else json.dumps(prompt),
                    reply,
                    None if parsed is None else json.dumps(parsed),
                    failure,
                    explanation,
                    int(prompt_tokens),
                    int(completion_tokens),
                    run_id,
                    time.time(),
                    mode,
                ),
            )
            if score is not None:
                scorer, value, details = score
                self.conn.execute(
                    "INSERT OR REPLACE INTO scores VALUES (?,?,?,?,?,?)",
                    (sae_id, latent, scorer, value, json.dumps(details, default=str), run_id),
                )

    def set_score(
        self, sae_id: str, latent: int, scorer: str, value: float, details: dict[str, Any], run_id: str
    ) -> None:
        with self.lock, self.conn:
            self.conn.execute(
                "INSERT OR REPLACE INTO scores VALUES (?,?,?,?,?,?)",
                (sae_id, latent, scorer, value, json.dumps(details, default=str), run_id),
            )

    def set_probe(
        self, endpoint: str, schema_ok: bool, reply: str, prompt_tokens: int, completion_tokens: int, error: str | None
    ) -> None:
        """Record the structured-output probe of ``endpoint``."""
        with self.lock, self.conn:
            self.conn.execute(
                "INSERT OR REPLACE INTO endpoints VALUES (?,?,?,?,?,?,?)",
                (endpoint, int(schema_ok), reply, int(prompt_tokens), int(completion_tokens), error, time.time()),
            )

    # ------------------------------------------------------------------------------------- reads
    def probe(self, endpoint: str) -> dict[str, Any] | None:
        """The recorded probe of ``endpoint`` (None: never probed)."""
        rows = self.query("SELECT * FROM endpoints WHERE endpoint=?", (endpoint,))
        return rows[0] if rows else None

    def step(self, sae_id: str, latent: int, protocol: str, step: str) -> dict[str, Any] | None:
        """The finished (``ok``/``parse_failure``) step, or None when it must (still) be done."""
        with self.lock:
            cur = self.conn.execute(
                "SELECT * FROM steps WHERE sae_id=? AND latent=? AND protocol=? AND step=?",
                (sae_id, latent, protocol, step),
            )
            row = cur.fetchone()
            if row is None:
                return None
            d = dict(zip([c[0] for c in cur.description], row))
        return None if d["status"] == "error" else d

    def has_score(self, sae_id: str, latent: int, scorer: str) -> bool:
        with self.lock:
            return (
                self.conn.execute(
                    "SELECT 1 FROM scores WHERE sae_id=? AND latent=? AND scorer=?", (sae_id, latent, scorer)
                ).fetchone()
                is not None
            )

    def query(self, sql: str, args: tuple = ()) -> list[dict[str, Any]]:
        with self.lock:
            cur = self.conn.execute(sql, args)
            cols = [c[0] for c in cur.description]
            return [dict(zip(cols, r)) for r in cur.fetchall()]

    def tokens_spent(self, sae_id: str | None = None) -> tuple[int, int]:
        """``(prompt_tokens, completion_tokens)`` summed over every recorded step (all runs)."""
        q = "SELECT COALESCE(SUM(prompt_tokens),0), COALESCE(SUM(completion_tokens),0) FROM steps"
        with self.lock:
            row = self.conn.execute(q + (" WHERE sae_id=?" if sae_id else ""), (sae_id,) if sae_id else ()).fetchone()
        return int(row[0]), int(row[1])
