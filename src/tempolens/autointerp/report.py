"""The ballpark report, rebuilt from the results DB alone.

Several SAEs side by side through the same explainer, judge, windows and budget: per scorer the
mean over latents with a 95% percentile-bootstrap CI (seeded), the number of scored latents, parse
failures, transport errors, tokens spent; delphi scores also pooled over all answers. The published
SAEBench numbers for Gemma-2-2B are shown as context only — a different model, judge and budget.

Outputs in ``out/``: ``report.md``, ``report.json``, ``data/autointerp.js`` (``tempolensAutointerp({...})``,
read by the dashboard site and by ``report.html``, the report view of the site's viewer with its assets
under ``assets/``: opens from disk, no inline script, strings shown as text) and
``latents-<label>.json`` (``{"<latent>": {"explanation", "explanations", "scores"}}`` per SAE, for
merging into the site's latent records).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from tempolens.autointerp.db import ResultsDB
from tempolens.autointerp.metrics import bootstrap_ci, mean
from tempolens.autointerp.scorers import CHANCE, SCORERS, combine_binary
from tempolens.dashboards.site import REPORT_FILE, install_viewer, js_call
from tempolens.fsutil import atomic_write_bytes, atomic_write_json

PUBLISHED_CONTEXT = {
    "source": "SAEBench autointerp (Karvonen et al. 2025), Gemma-2-2B layer 12, gpt-4o-mini judge, 1000 latents, "
    "mean over SAEs with L0 40–200",
    "caveat": "Different subject model, judge, corpus and budget than this run: context only, not comparable numbers.",
    "scorer": "saebench",
    "scores": {
        "16k BatchTopK": 0.857,
        "16k Matryoshka": 0.853,
        "16k TopK": 0.849,
        "16k ReLU": 0.841,
        "16k JumpReLU": 0.837,
        "16k Gated": 0.829,
        "65k BatchTopK": 0.881,
        "65k TopK": 0.874,
        "65k JumpReLU": 0.866,
        "PCA floor": 0.671,
        "freshly initialised SAE": 0.69,
    },
}


def _clean(x: Any) -> Any:
    """NaN/inf → None so that JSON stays valid."""
    if isinstance(x, float):
        return None if (math.isnan(x) or math.isinf(x)) else x
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x


def collect(db: ResultsDB, seed: int = 0, wall_s: float | None = None) -> dict[str, Any]:
    """The report as a dict (only from DB contents)."""
    runs = db.query("SELECT * FROM runs ORDER BY started")
    last_cfg = json.loads(runs[-1]["config_json"]) if runs else {}
    out_saes = []
    per_latent: dict[str, dict[str, Any]] = {}
    for s in _report_saes(db, last_cfg):
        lat, by_scorer, n_latents = _latent_records(db, s["sae_id"])
        per_latent[s["label"]] = lat
        out_saes.append(_sae_entry(db, s, n_latents, _scorer_summaries(by_scorer, seed)))
    rep = _report_dict(db, last_cfg, len(runs), seed, wall_s, out_saes)
    rep["_per_latent"] = per_latent  # written to latents-<label>.json by build_report, not into the report
    return _clean(rep)


def _report_saes(db: ResultsDB, last_cfg: dict[str, Any]) -> list[dict[str, Any]]:
    """The SAE rows to report: those of the latest run, in its order (older ones stay in the DB); every SAE
    in the DB, in insertion order, when the latest run names none."""
    saes = db.query("SELECT rowid, * FROM saes ORDER BY rowid")
    if last_cfg.get("sae_ids"):
        by_id = {s["sae_id"]: s for s in saes}
        saes = [by_id[i] for i in last_cfg["sae_ids"] if i in by_id]
    return saes


def _empty_latent() -> dict[str, Any]:
    """A latent's record in ``latents-<label>.json`` before anything is known about it."""
    return {"explanation": None, "explanations": {}, "scores": {}, "modes": {}}


def _latent_records(db: ResultsDB, sid: str) -> tuple[dict[str, dict[str, Any]], dict[str, list[float]], int]:
    """Of SAE ``sid``: the per-latent records (finite scores, answer modes, explanations; the saebench
    explanation wins as ``explanation``), every latent's value per scorer (NaN = unscored) and the number of
    latents selected for it."""
    lat_rows = db.query("SELECT latent FROM latents WHERE sae_id=? ORDER BY latent", (sid,))
    scores_rows = db.query("SELECT latent, scorer, value, details_json FROM scores WHERE sae_id=?", (sid,))
    by_scorer: dict[str, list[float]] = {}
    lat: dict[str, Any] = {str(r["latent"]): _empty_latent() for r in lat_rows}
    for r in scores_rows:
        v = r["value"] if r["value"] is not None else math.nan
        by_scorer.setdefault(r["scorer"], []).append(v)
        if not math.isnan(v):  # the site reader accepts finite numbers only; unscored = absent
            d = lat.setdefault(str(r["latent"]), _empty_latent())
            d["scores"][r["scorer"]] = v
            mode = (json.loads(r["details_json"] or "{}") or {}).get("mode")
            if isinstance(mode, str):
                d["modes"][r["scorer"]] = mode
    for r in db.query(
        "SELECT latent, protocol, explanation FROM steps WHERE sae_id=? AND step='explain' AND explanation IS NOT NULL",
        (sid,),
    ):
        d = lat.setdefault(str(r["latent"]), _empty_latent())
        d["explanations"][r["protocol"]] = r["explanation"]
        if r["protocol"] == "saebench" or d["explanation"] is None:
            d["explanation"] = r["explanation"]
    return lat, by_scorer, len(lat_rows)


def _scorer_summaries(by_scorer: dict[str, list[float]], seed: int) -> dict[str, dict[str, Any]]:
    """Per scorer (known scorers in ``SCORERS`` order, then any others sorted): the mean over latents, its
    seeded 95% bootstrap CI, the scored and unscored counts and the chance level."""
    scores = {}
    for sc in [x for x in SCORERS if x in by_scorer] + sorted(set(by_scorer) - set(SCORERS)):
        vals = by_scorer[sc]
        lo, hi = bootstrap_ci(vals, seed=seed)
        scores[sc] = {
            "mean": mean(vals),
            "ci_low": lo,
            "ci_high": hi,
            "n": sum(1 for v in vals if not math.isnan(v)),
            "n_unscored": sum(1 for v in vals if math.isnan(v)),
            "chance": CHANCE.get(sc),
        }
    return scores


def _pooled(db: ResultsDB, sid: str) -> dict[str, dict[str, Any]]:
    """Per delphi scorer with recorded answers: the balanced accuracy over all answers of all latents."""
    pooled = {}
    for sc in ("delphi-detection", "delphi-fuzzing"):
        rows = [
            json.loads(r["parsed_json"])
            for r in db.query(
                "SELECT parsed_json FROM steps WHERE sae_id=? AND protocol=? AND parsed_json IS NOT NULL", (sid, sc)
            )
        ]
        if rows:
            v, pred, _ = combine_binary(rows)
            pooled[sc] = {"balanced_accuracy": v, "n_answers": len(pred)}
    return pooled


def _call_counts(db: ResultsDB, sid: str) -> tuple[dict[str, int], int, int]:
    """Of SAE ``sid``: parse failures per ``protocol/failure``, LLM calls that were answered, and transport
    errors."""
    fails = {
        f"{r['protocol']}/{r['failure']}": r["n"]
        for r in db.query(
            "SELECT protocol, failure, COUNT(*) AS n FROM steps WHERE sae_id=? AND status='parse_failure' "
            "GROUP BY protocol, failure",
            (sid,),
        )
    }
    n_calls = db.query(
        "SELECT COUNT(*) AS n FROM steps WHERE sae_id=? AND status IN ('ok','parse_failure') "
        "AND (prompt_tokens>0 OR completion_tokens>0)",
        (sid,),
    )[0]["n"]
    errors = db.query("SELECT COUNT(*) AS n FROM steps WHERE sae_id=? AND status='error'", (sid,))[0]["n"]
    return fails, n_calls, errors


def _sae_entry(db: ResultsDB, s: dict[str, Any], n_latents: int, scores: dict[str, Any]) -> dict[str, Any]:
    """The report's line of one SAE (row ``s`` of the saes table): what it is, its scores, failures and costs."""
    sid = s["sae_id"]
    meta = json.loads(s["meta_json"] or "{}")
    sae_meta, model_meta = meta.get("sae") or {}, meta.get("model") or {}
    fails, n_calls, errors = _call_counts(db, sid)
    pt, ct = db.tokens_spent(sid)
    return {
        "label": s["label"],
        "sae_id": sid,
        "store": s["store"],
        "width": s["width"],
        "n_alive": s["n_alive"],
        "architecture": sae_meta.get("architecture"),
        "k": sae_meta.get("k"),
        "sae_spec": sae_meta.get("spec"),
        "model_id": model_meta.get("model_id") or model_meta.get("spec"),
        "hook_name": model_meta.get("hook_name"),
        "n_latents": n_latents,
        "scores": scores,
        "pooled": _pooled(db, sid),
        "parse_failures": fails,
        "n_llm_calls": n_calls,
        "transport_errors": errors,
        "tokens": {"prompt": pt, "completion": ct},
        **_costs(db, sid),
    }


def _report_dict(
    db: ResultsDB,
    last_cfg: dict[str, Any],
    n_runs: int,
    seed: int,
    wall_s: float | None,
    out_saes: list[dict[str, Any]],
) -> dict[str, Any]:
    """The report dict around its SAE lines: settings of the latest run, endpoint probes, total tokens of the
    reported SAEs (the DB may hold others), the published context."""
    pt = sum(s["tokens"]["prompt"] for s in out_saes)
    ct = sum(s["tokens"]["completion"] for s in out_saes)
    probes = db.query(
        "SELECT endpoint, schema_ok, reply, prompt_tokens, completion_tokens, error FROM endpoints ORDER BY checked"
    )
    return {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "answer_mode": last_cfg.get("answer_mode"),
        "probes": [{**r, "schema_ok": bool(r["schema_ok"])} for r in probes],
        "judge": last_cfg.get("llm"),
        "backend": last_cfg.get("backend"),
        "scorers": last_cfg.get("resolved_scorers"),
        "embedding_model": last_cfg.get("embedding_model"),
        "seed": seed,
        "window_len": last_cfg.get("window_len"),
        "budget_tokens": last_cfg.get("budget_tokens"),
        "tokens": {"prompt": pt, "completion": ct},
        "n_runs": n_runs,
        "wall_s": wall_s,
        "saes": out_saes,
        "published_context": PUBLISHED_CONTEXT,
    }


def _step_group(protocol: str, step: str) -> str:
    """The cost line a step belongs to: the explainer call(s) or the scorer that made the call."""
    if step == "explain":
        return "explain" if protocol == "saebench" else f"explain ({protocol})"
    return protocol


def _costs(db: ResultsDB, sid: str) -> dict[str, Any]:
    """Tokens per latent per scorer (mean over the latents with at least one LLM call; the explanation
    is its own line because one explanation can serve several scorers) and how the judges answered."""
    rows = db.query(
        "SELECT latent, protocol, step, status, mode, prompt_tokens, completion_tokens FROM steps "
        "WHERE sae_id=? AND status IN ('ok','parse_failure') AND (prompt_tokens>0 OR completion_tokens>0)",
        (sid,),
    )
    n = len({r["latent"] for r in rows})
    per: dict[str, dict[str, float]] = {}
    modes: dict[str, dict[str, int]] = {}
    for r in rows:
        g = _step_group(r["protocol"], r["step"])
        d = per.setdefault(g, {"prompt": 0.0, "completion": 0.0, "calls": 0.0})
        d["prompt"] += r["prompt_tokens"]
        d["completion"] += r["completion_tokens"]
        d["calls"] += 1
        if r["step"] != "explain":
            m = modes.setdefault(r["protocol"], {})
            m[r["mode"] or "text"] = m.get(r["mode"] or "text", 0) + 1
    tpl = {g: {k: v / n for k, v in d.items()} for g, d in per.items()} if n else {}
    if tpl:
        tpl["total"] = {k: sum(d[k] for d in tpl.values()) for k in ("prompt", "completion", "calls")}
    return {"tokens_per_latent": tpl, "n_latents_with_llm_calls": n, "answer_modes": modes}


def _fmt(v: Any, nd: int = 3) -> str:
    return "–" if v is None else f"{v:.{nd}f}"


def _score_cell(d: dict[str, Any] | None) -> str:
    if not d:
        return "–"
    miss = f"; {d['n_unscored']} unscored" if d.get("n_unscored") else ""
    if d.get("mean") is None:
        return f"– (n=0{miss})"
    return f"{_fmt(d['mean'])} [{_fmt(d['ci_low'])}, {_fmt(d['ci_high'])}] (n={d['n']}{miss})"


def to_markdown(rep: dict[str, Any]) -> str:
    scorers = [s for s in SCORERS if any(s in x["scores"] for x in rep["saes"])]
    lines = [
        "# Autointerp ballpark report",
        "",
        f"Judge/explainer: `{rep.get('judge') or 'none (LLM-free scores only)'}`; embedding model: "
        f"`{rep.get('embedding_model')}`; "
        f"windows: {rep.get('window_len')} tokens; seed {rep.get('seed')}; tokens spent: {rep['tokens']['prompt']} "
        "prompt + "
        f"{rep['tokens']['completion']} completion.",
        "",
        "Mean per latent with 95% percentile-bootstrap CI over latents; n = latents scored.",
        "",
        "| SAE | architecture | width | latents (alive) | " + " | ".join(scorers) + " | parse failures | tokens |",
        "|---|---|---|---|" + "---|" * len(scorers) + "---|---|",
    ]
    for s in rep["saes"]:
        pf = sum(s["parse_failures"].values())
        lines.append(
            f"| {s['label']} | {s.get('architecture') or '?'} | {s['width']} | {s['n_latents']} ({s['n_alive']}) | "
            + " | ".join(_score_cell(s["scores"].get(sc)) for sc in scorers)
            + f" | {pf} | {s['tokens']['prompt'] + s['tokens']['completion']} |"
        )
    lines += ["", "Chance levels: " + ", ".join(f"{k} {v:.3f}" for k, v in CHANCE.items() if k in scorers) + "."]
    pooled = [(s["label"], k, v) for s in rep["saes"] for k, v in s["pooled"].items()]
    if pooled:
        lines += [
            "",
            "Pooled balanced accuracy (all answers of all latents): "
            + "; ".join(f"{l} {k} {_fmt(v['balanced_accuracy'])} ({v['n_answers']} answers)" for l, k, v in pooled)
            + ".",
        ]
    lines += _cost_lines(rep)
    pc = rep["published_context"]
    lines += [
        "",
        "## Context (not comparable)",
        "",
        f"{pc['source']}. **{pc['caveat']}**",
        "",
        "| SAE | SAEBench autointerp |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v:.3f} |" for k, v in pc["scores"].items()]
    lines += [
        "",
        "Notes: a small local explainer (SmolLM2-135M) writes weak explanations and is not a usable judge; "
        "the `cluster` score needs no LLM and `embedding` needs no judge. Real ballpark numbers need a ≥7B "
        "instruct judge behind an OpenAI-compatible endpoint (`--backend openai`).",
    ]
    return "\n".join(lines) + "\n"


def _cost_lines(rep: dict[str, Any]) -> list[str]:
    """Markdown: the structured-output probe, and per SAE and scorer the answer modes, parse failures and
    judge tokens per latent."""
    out: list[str] = []
    for pr in rep.get("probes") or []:
        verdict = "honours JSON-schema response_format" if pr["schema_ok"] else "ignores or refuses response_format"
        reply = json.dumps((pr.get("reply") or "")[:80])
        err = f"; error: {str(pr['error'])[:80]}" if pr.get("error") else ""
        out += ["", f"Endpoint probe: `{pr['endpoint']}` {verdict} (probe reply: {reply}{err})."]
    if not any(s.get("tokens_per_latent") for s in rep["saes"]):
        return out
    out += [
        "",
        "## Judge answers and tokens per latent",
        "",
        "Mean over the latents with LLM calls; `explain` is the explainer call (shared by the scorers unless "
        "`--explanation per-protocol`). Answer modes: `schema` (JSON-schema response_format), `logprob` "
        "(label-token probabilities), `constrained` (grammar-constrained index list), `text` (free text, strict "
        "parsing).",
        "",
        "| SAE | step | answer modes (calls) | parse failures | calls / latent | prompt / latent | "
        "completion / latent | tokens / latent |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in rep["saes"]:
        for g, d in (s.get("tokens_per_latent") or {}).items():
            modes = s.get("answer_modes", {}).get(g, {})
            m = ", ".join(f"{k} ({v})" for k, v in sorted(modes.items()))
            m = m or ("text" if g.startswith("explain") else "–")
            proto = "saebench" if g == "explain" else g.removeprefix("explain (").rstrip(")")
            pf = sum(
                v
                for k, v in s["parse_failures"].items()
                if k.split("/")[0] == proto and (g.startswith("explain") == k.endswith("empty_explanation"))
            )
            pf_cell = "–" if g == "total" else str(pf)
            if g == "total":
                pf_cell = str(sum(s["parse_failures"].values()))
            out.append(
                f"| {s['label']} | {g} | {m if g != 'total' else '–'} | {pf_cell} | {d['calls']:.2f} | "
                f"{d['prompt']:.0f} | {d['completion']:.0f} | {d['prompt'] + d['completion']:.0f} |"
            )
    return out


def build_report(db: ResultsDB, out: Path, seed: int = 0, wall_s: float | None = None) -> dict[str, Any]:
    """Write every report file into ``out`` (atomically) and return the report dict."""
    out = Path(out)
    rep = collect(db, seed=seed, wall_s=wall_s)
    per_latent = rep.pop("_per_latent")
    (out / "data").mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "report.json", rep)
    atomic_write_bytes(out / "report.md", to_markdown(rep).encode())
    atomic_write_bytes(out / "data" / "autointerp.js", js_call("tempolensAutointerp", rep))
    install_viewer(out, pages=(REPORT_FILE,))
    for label, lat in per_latent.items():
        atomic_write_json(out / f"latents-{label}.json", lat)
    return rep


def rebuild(out: Path | str, seed: int = 0) -> dict[str, Any]:
    """Rebuild the report files from ``out/results.sqlite`` alone."""
    db = ResultsDB(Path(out) / "results.sqlite")
    try:
        return build_report(db, Path(out), seed=seed)
    finally:
        db.close()
