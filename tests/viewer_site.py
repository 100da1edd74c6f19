"""Hand-written dashboard sites in the docs/site-data.md format, for the viewer's browser tests.

Independent of ``tempolens.dashboards.site`` on purpose: the viewer is tested against the
contract itself, with data chosen so that every assertion has a known answer (hostile token
strings, dead latents, long examples, Temporal extras).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tempolens.viewer import install_viewer

HOSTILE = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "&amp;",
    "</script><script>window.__xss=1</script>",
    '<svg onload="window.__xss=2">',
    "\u2028",
    "'\"`${x}",
]
"""Token strings that would run script or change the page if they were parsed as HTML/JS."""

WORDS = "the a of and to in whale ship sea captain night morning king queen river city red blue green story".split()


def js_literal(obj: Any) -> str:
    """JSON that is safe inside a script file: it can never close a <script> or break a JS string."""
    text = json.dumps(obj, ensure_ascii=False, allow_nan=False)
    for a, b in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(a, b)
    return text


@dataclass
class SiteSpec:
    """What a test site contains (the ground truth the tests compare against)."""

    root: Path
    n_latents: int
    chunk_size: int
    temporal: bool
    index_rows: list[list[Any]]
    records: dict[int, dict[str, Any]] = field(default_factory=dict)
    hostile_latent: int = 1
    dead: list[int] = field(default_factory=list)
    long_latent: int = 2


COLUMNS = ["index", "frac_nonzero", "max_act", "mean_act", "top_tokens", "explanation", "score", "pred_share"]


def _activation(
    rng: random.Random,
    tokens: list[str],
    peak: float,
    q: int,
    temporal: bool,
    bin_min: float,
    bin_max: float,
    contains: float,
    prompt: int,
) -> dict:
    values = [0.0] * len(tokens)
    for t in range(len(tokens)):
        if rng.random() < 0.25:
            values[t] = round(rng.uniform(0.05, 0.6) * peak, 5)
    values[q] = peak
    act: dict[str, Any] = {
        "bin_min": bin_min,
        "bin_max": bin_max,
        "bin_contains": contains,
        "tokens": tokens,
        "values": values,
        "qualifying_token_index": q,
        "prompt_index": prompt,
    }
    if temporal:
        act["pred_values"] = [round(rng.uniform(-0.3, 1.0) * peak * 0.5, 5) for _ in tokens]
        act["pred_share"] = [round(rng.uniform(0.0, 1.0), 4) for _ in tokens]
    return act


def _record(
    rng: random.Random,
    i: int,
    frac: float,
    max_act: float,
    mean_act: float,
    temporal: bool,
    n_latents: int,
    hostile: bool,
    long: bool,
    expl: str | None,
    score: float | None,
    pred_share: float | None,
) -> dict:
    def tokens(n: int) -> list[str]:
        return [rng.choice(WORDS) if rng.random() > 0.2 else " " + rng.choice(WORDS) for _ in range(n)]

    acts = []
    for k in range(20):
        n = 100 if (long and k == 0) else 16
        toks = tokens(n)
        q = 70 if (long and k == 0) else rng.randrange(2, n)
        if hostile and k == 0:
            toks[1 : 1 + len(HOSTILE)] = HOSTILE
            toks[-2] = "\n"
            q = 1
        peak = max_act * (1 - 0.03 * k)
        acts.append(_activation(rng, toks, round(peak, 5), q, temporal, -1, max_act, -1, rng.randrange(1000)))
    edges = [max_act * j / 5 for j in range(6)]
    shares = [0.6, 0.2, 0.1, 0.07, 0.03]
    for b in range(5):
        for _ in range(3):
            toks = tokens(16)
            q = rng.randrange(2, 16)
            peak = round(rng.uniform(edges[b] + 1e-3, edges[b + 1]), 5)
            acts.append(
                _activation(rng, toks, peak, q, temporal, edges[b], edges[b + 1], shares[b], rng.randrange(1000))
            )
    centres = [max_act * (j + 0.5) / 50 for j in range(50)]
    heights = [int(1000 * 0.9**j) + rng.randrange(5) for j in range(50)]
    lc = [-2 + 4 * (j + 0.5) / 50 for j in range(50)]
    lh = [int(5000 * 2.718 ** (-((x) ** 2))) for x in lc]
    pos_str = [rng.choice(WORDS) for _ in range(10)]
    if hostile:
        pos_str[:3] = HOSTILE[:3]
    corr = [(i + d) % n_latents for d in (1, 2, 3, 5, 8)]
    rec: dict[str, Any] = {
        "feature_index": i,
        "frac_nonzero": frac,
        "freq_hist_data_bar_values": centres,
        "freq_hist_data_bar_heights": heights,
        "logits_hist_data_bar_values": lc,
        "logits_hist_data_bar_heights": lh,
        "pos_str": pos_str,
        "pos_values": sorted((round(rng.uniform(0.5, 2.0), 4) for _ in range(10)), reverse=True),
        "neg_str": [rng.choice(WORDS) for _ in range(10)],
        "neg_values": sorted(round(rng.uniform(-2.0, -0.5), 4) for _ in range(10)),
        "correlated_features_indices": corr,
        "correlated_features_pearson": [round(0.9 - 0.1 * k, 3) for k in range(5)],
        "correlated_features_l1": [round(0.5 - 0.05 * k, 3) for k in range(5)],
        "correlated_neurons_indices": [],
        "correlated_neurons_pearson": [],
        "correlated_neurons_l1": [],
        "neuron_alignment_indices": [3, 17, 5],
        "neuron_alignment_values": [0.41, -0.33, 0.2],
        "neuron_alignment_l1": [0.12, 0.1, 0.06],
        "n_prompts_total": 64,
        "n_tokens_in_prompt": 16,
        "dataset": "hand-made test corpus",
        "activations": acts,
        "tempolens": {
            "max_act": max_act,
            "mean_act": mean_act,
            "n_active": int(round(frac * 64 * 15)),
            "pred_share_top": pred_share if temporal else None,
            "explanation": expl,
            "scores": {"detection": score, "embedding": round(score * 0.9, 4)} if score is not None else {},
        },
    }
    return rec


PROMPT_CHUNK = 16
"""Prompts per ``data/prompts/prompts-<p>.js`` of the test sites."""


def _window_layout(spec: SiteSpec, data: Path, meta: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """Write ``data/tokens.js`` and ``data/prompts/`` for the records of ``spec`` and return the records with
    each activation as a window reference (docs/site-data.md), written here independently of the pipeline.

    Every example gets a prompt of its own (two tokens before the window, one after, so ``start`` is 2);
    a prompt index two examples share is moved to a free one, in ``spec`` too (the ground truth). Token
    ids are given in reverse order of first use so no id equals its position. Predicted codes use the fill
    0 (nonzero entries listed) for even latents and null (every entry listed) for odd ones."""
    strings: list[str] = []
    ids: dict[str, int] = {}

    def tid(t: str) -> int:
        if t not in ids:
            ids[t] = len(strings)
            strings.append(t)
        return ids[t]

    prompts: dict[int, dict[str, Any]] = {}
    used: set[int] = set()
    free = 1000
    out: dict[int, dict[str, Any]] = {}
    for i, rec in spec.records.items():
        acts = []
        for a in rec["activations"]:
            p = a["prompt_index"]
            if p in used:
                p, free = free, free + 1
                a["prompt_index"] = p
            used.add(p)
            toks = ["before", " before", *a["tokens"], " after"]
            prompt: dict[str, Any] = {"tokens": [tid(t) for t in toks]}
            if "pred_share" in a:
                prompt["pred_share"] = [0.5, 0.5, *a["pred_share"], 0.5]
            prompts[p] = prompt
            ref: dict[str, Any] = {k: a[k] for k in ("bin_min", "bin_max", "bin_contains", "prompt_index")}
            ref["start"] = 2
            if len(a["tokens"]) != 16:
                ref["length"] = len(a["tokens"])
            ref["qualifying_token_index"] = a["qualifying_token_index"]
            ref["values"] = [[t, v] for t, v in enumerate(a["values"]) if v != 0]
            if "pred_values" in a:
                fill = 0.0 if i % 2 == 0 else None
                ref["pred_values"] = {"fill": fill, "at": [[t, v] for t, v in enumerate(a["pred_values"]) if v != fill]}
            acts.append(ref)
        out[i] = {**rec, "activations": acts}
    n = len(strings)
    for p in prompts.values():
        p["tokens"] = [n - 1 - t for t in p["tokens"]]
    (data / "tokens.js").write_text(f"tempolensTokens({js_literal(strings[::-1])});\n", encoding="utf-8")
    (data / "prompts").mkdir(exist_ok=True)
    files: dict[int, dict[str, Any]] = {}
    for p, prompt in prompts.items():
        files.setdefault(p // PROMPT_CHUNK, {})[str(p)] = prompt
    for c, body in files.items():
        text = f"tempolensPrompts({c}, {js_literal(body)});\n"
        (data / "prompts" / f"prompts-{c}.js").write_text(text, encoding="utf-8")
    meta.update(window_len=16, prompt_chunk_size=PROMPT_CHUNK)
    return out


def write_site(
    root: Path,
    n_latents: int = 250,
    chunk_size: int = 64,
    temporal: bool = True,
    seed: int = 0,
    records: bool = True,
    autointerp: bool | str = "ballpark",
    kernels: bool = True,
    records_below: int = 128,
    layout: str = "windows",
) -> SiteSpec:
    """Write a complete site (viewer + data files) to ``root`` and return what it contains.

    ``autointerp``: ``"ballpark"`` (the report shape of ``tempolens.autointerp.report``), ``True`` (a
    generic ``{title, summary, tables, notes}`` report), or ``False`` (none). Feature records are
    written for the alive latents below ``records_below`` only (keeps the test site small).
    ``layout="windows"`` stores the examples as the pipeline does (shared prompts and token table, window
    references, sparse values; :func:`_window_layout`); ``"inline"`` keeps every window in its record."""
    rng = random.Random(seed)
    root = Path(root)
    install_viewer(root)
    data = root / "data"
    (data / "features").mkdir(parents=True, exist_ok=True)
    spec = SiteSpec(root=root, n_latents=n_latents, chunk_size=chunk_size, temporal=temporal, index_rows=[])
    rows = []
    for i in range(n_latents):
        dead = i % 7 == 3
        frac = 0.0 if dead else 10 ** rng.uniform(-5, -1)
        max_act = 0.0 if dead else round(rng.uniform(0.5, 20.0), 4)
        mean_act = 0.0 if dead else round(max_act * rng.uniform(0.1, 0.5), 4)
        top = "" if dead else ", ".join(rng.sample(WORDS, 3))
        expl = None if (dead or i % 3 == 2) else f"mentions of {rng.choice(WORDS)} in a story"
        score = None if expl is None else round(rng.uniform(0.4, 0.95), 4)
        pshare = None if (dead or not temporal) else round(rng.uniform(0, 1), 4)
        if i == spec.hostile_latent:
            top = HOSTILE[0] + ", " + HOSTILE[1] + ", " + HOSTILE[2]
            expl = "the token " + HOSTILE[3] + " and " + HOSTILE[4]
        if dead:
            spec.dead.append(i)
        rows.append([i, frac, max_act, mean_act, top, expl, score, pshare])
        if records and not dead and i < records_below:
            spec.records[i] = _record(
                rng,
                i,
                frac,
                max_act,
                mean_act,
                temporal,
                n_latents,
                i == spec.hostile_latent,
                i == spec.long_latent,
                expl,
                score,
                pshare,
            )
    spec.index_rows = rows
    meta = {
        "title": "Test dashboards <b>not bold</b> & co",
        "model_id": "tiny-gemma-3",
        "hook_name": "blocks.2.hook_resid_post",
        "layer": 2,
        "sae": {"architecture": "temporal" if temporal else "topk", "width": n_latents, "d_in": 32, "k": 8},
        "is_temporal": temporal,
        "dataset": "hand-made test corpus",
        "n_prompts": 64,
        "prompt_len": 16,
        "n_tokens": 64 * 15,
        "chunk_size": chunk_size,
        "n_latents": n_latents,
        "created": "2026-11-29T08:00:00Z",
        "tempolens_version": "0.1.0",
        "settings": {"seed": seed, "top_k": 20},
    }
    (data / "index.js").write_text(
        f"tempolensIndex({js_literal({'columns': COLUMNS, 'rows': rows})});\n", encoding="utf-8"
    )
    if records:
        stored = _window_layout(spec, data, meta) if layout == "windows" else spec.records
        chunks: dict[int, dict[str, Any]] = {}
        for i, rec in stored.items():
            chunks.setdefault(i // chunk_size, {})[str(i)] = rec
        for c, recs in chunks.items():
            (data / "features" / f"chunk-{c}.js").write_text(
                f"tempolensFeatures({c}, {js_literal(recs)});\n", encoding="utf-8"
            )
    (data / "meta.js").write_text(f"tempolensMeta({js_literal(meta)});\n", encoding="utf-8")
    if autointerp == "ballpark":
        # The shape written by tempolens.autointerp.report.build_report (data/autointerp.js).
        def sc(m, lo, hi, n, chance):
            return {"mean": m, "ci_low": lo, "ci_high": hi, "n": n, "n_unscored": 0, "chance": chance}

        report = {
            "created": "2026-11-29T08:00:00Z",
            "judge": "test-judge " + HOSTILE[1],
            "backend": "openai",
            "scorers": ["saebench", "embedding"],
            "embedding_model": "all-MiniLM-L6-v2",
            "seed": 0,
            "window_len": 21,
            "budget_tokens": None,
            "tokens": {"prompt": 120000, "completion": 3000},
            "n_runs": 1,
            "wall_s": 12.5,
            "saes": [
                {
                    "label": "temporal",
                    "architecture": "temporal",
                    "width": n_latents,
                    "n_alive": 200,
                    "n_latents": 30,
                    "scores": {
                        "saebench": sc(0.81, 0.77, 0.85, 30, 10 / 14),
                        "embedding": sc(0.66, 0.6, 0.71, 30, 0.5),
                    },
                    "pooled": {},
                    "parse_failures": {"saebench/format": 2},
                    "n_llm_calls": 60,
                    "transport_errors": 0,
                    "tokens": {"prompt": 60000, "completion": 1500},
                },
                {
                    "label": HOSTILE[0],
                    "architecture": "topk",
                    "width": n_latents,
                    "n_alive": 210,
                    "n_latents": 30,
                    "scores": {
                        "saebench": sc(0.79, 0.75, 0.83, 30, 10 / 14),
                        "embedding": sc(0.64, 0.58, 0.7, 30, 0.5),
                    },
                    "pooled": {},
                    "parse_failures": {},
                    "n_llm_calls": 60,
                    "transport_errors": 1,
                    "tokens": {"prompt": 60000, "completion": 1500},
                },
            ],
            "published_context": {
                "source": "SAEBench autointerp, Gemma-2-2B layer 12",
                "caveat": "Different model and judge: context only.",
                "scorer": "saebench",
                "scores": {"16k TopK": 0.849, "PCA floor": 0.671},
            },
        }
        (data / "autointerp.js").write_text(f"tempolensAutointerp({js_literal(report)});\n", encoding="utf-8")
    elif autointerp:
        report = {
            "title": "Autointerp ballpark " + HOSTILE[1],
            "summary": ["Detection accuracy of the Temporal SAE against its TopK twin and a random floor."],
            "tables": [
                {
                    "title": "Scores",
                    "columns": ["SAE", "detection", "95% CI"],
                    "rows": [["temporal", 0.71, "0.66–0.76"], ["topk", 0.69, "0.64–0.74"], [HOSTILE[0], 0.5, "–"]],
                }
            ],
            "judge": {"model": "test-judge", "n_latents": 30},
            "notes": ["Scores are from a test fixture."],
        }
        (data / "autointerp.js").write_text(f"tempolensAutointerp({js_literal(report)});\n", encoding="utf-8")
    if kernels:
        (root / "kernels").mkdir(exist_ok=True)
        (root / "kernels" / "story-0.html").write_text(
            "<!doctype html><title>kernel</title><p>kernel page</p>\n", encoding="utf-8"
        )
        pages = {
            "pages": [
                {"title": "Story 0", "href": "kernels/story-0.html", "description": "two events"},
                {"title": "bad", "href": "javascript:window.__xss=3"},
            ]
        }
        (data / "kernels.js").write_text(f"tempolensKernels({js_literal(pages)});\n", encoding="utf-8")
    return spec
