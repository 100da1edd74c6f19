"""``tempolens kernel`` and ``tempolens events``: temporal views of texts, and the event-boundary check.

``run_kernel``: for each text (``--text``, ``--file`` or the built-in demo stories) compute the
similarity kernels of the Temporal SAE's predicted and novel codes, a standard SAE's codes and
the raw activations, the attention maps and the per-token predicted share; write PNG figures
and an interactive page per text under ``<out>/kernels/`` plus an index, and register the pages
with the dashboard viewer (``<out>/data/kernels.js``).

``run_events``: the same analysis over texts with marked event boundaries (the demo stories by
default); per kernel the block contrast and the boundary AUROC (see :mod:`tempolens.temporal.events`),
summarised over texts, written as ``events.json``, ``events.md`` and ``events.html`` under
``<out>/kernels/`` and printed as a table.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from tempolens.errors import ConfigError
from tempolens.fsutil import atomic_write_bytes, atomic_write_json
from tempolens.options import check
from tempolens.sources.options import SourceOptions
from tempolens.temporal.analysis import KERNEL_LABELS, TextAnalysis, analyze_text
from tempolens.temporal.events import (
    MARKER,
    EventText,
    bootstrap_auroc_ci,
    load_demo_texts,
    novelty_samples,
    parse_marked,
    pooled_auroc,
    score_kernel,
    summarize,
)
from tempolens.temporal.kernels import MAX_KERNEL_TOKENS

NO_SAE = ("", "none", "off")


@dataclass
class TemporalSourceOptions(SourceOptions):
    """Model and SAEs shared by ``kernel``, ``events`` and ``serve``: the
    :class:`~tempolens.sources.options.SourceOptions` (``--sae`` must be a Temporal SAE) plus a contrast SAE."""

    contrast_sae: str = "embedded:topk"
    """Standard SAE whose codes give the contrast kernel ('none' to skip)."""
    max_tokens: int = 1024
    """Longest text accepted, in tokens including BOS (kernels and pages grow as tokens²; hard cap 8192)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check(
            isinstance(self.max_tokens, int) and 3 <= self.max_tokens <= MAX_KERNEL_TOKENS,
            f"--max-tokens must be between 3 and {MAX_KERNEL_TOKENS}; got {self.max_tokens!r}",
        )

    @property
    def contrast(self) -> str | None:
        return None if str(self.contrast_sae).strip().lower() in NO_SAE else self.contrast_sae


@dataclass
class KernelConfig(TemporalSourceOptions):
    """Options of ``tempolens kernel``."""

    text: list[str] | None = None
    """Text(s) to analyse; '||' inside a text marks an event boundary (it is removed before tokenizing)."""
    file: Path | None = None
    """A .txt file (texts separated by blank lines) or .jsonl file ({"text": ..., "name": ...} per line); '||' marks
    events."""
    demo: list[str] | None = None
    """Names of built-in demo stories to analyse ('all' for every one); the default when no --text/--file is given is
    all."""
    out: Path = Path("tempolens-site")
    """Site directory; pages and figures go to <out>/kernels/ (use your dashboard site to link them from its viewer)."""
    figures: bool = True
    """Also write PNG figures (kernels, attention per head, predicted/novel share)."""
    half_width: int = 8
    """Half-width in tokens of the Foote novelty window used for the boundary AUROC."""
    top_k: int = 5
    """Top novel latents listed per token on the pages."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.out = Path(self.out)
        if self.file is not None:
            self.file = Path(self.file)
            check(self.file.is_file(), f"--file {self.file} does not exist")
        check(isinstance(self.half_width, int) and self.half_width >= 2, "--half-width must be an integer ≥ 2")
        check(isinstance(self.top_k, int) and 1 <= self.top_k <= 64, "--top-k must be between 1 and 64")
        if self.text is not None:
            check(all(isinstance(t, str) and t.strip() for t in self.text), "--text values must be non-empty strings")


@dataclass
class EventsConfig(TemporalSourceOptions):
    """Options of ``tempolens events``."""

    file: Path | None = None
    """Texts with '||' event markers (.txt separated by blank lines, or .jsonl); default: the built-in demo stories."""
    out: Path = Path("tempolens-site")
    """Site directory; events.json/.md/.html go to <out>/kernels/."""
    half_width: int = 8
    """Half-width in tokens of the Foote novelty window used for the boundary AUROC."""
    pages: bool = True
    """Also write an interactive kernel page (and figures) for each text."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.out = Path(self.out)
        if self.file is not None:
            self.file = Path(self.file)
            check(self.file.is_file(), f"--file {self.file} does not exist")
        check(isinstance(self.half_width, int) and self.half_width >= 2, "--half-width must be an integer ≥ 2")


# ---------------------------------------------------------------------------------------------
# texts


def read_texts(path: Path, marker: str = MARKER) -> list[EventText]:
    """Texts from a .txt (blank-line separated) or .jsonl file, with event markers parsed."""
    path = Path(path)
    raw: list[tuple[str, str]] = []
    try:
        content = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text") from None
    if path.suffix.lower() == ".jsonl":
        for n, line in enumerate(content.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                raise ConfigError(
                    f"{path} line {n} is not valid JSON; each line must be an object with a 'text' field"
                ) from None
            if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
                raise ConfigError(f"{path} line {n} has no string 'text' field")
            raw.append((str(obj.get("name") or f"{path.stem}-{n}"), obj["text"]))
    else:
        blocks = [b.strip() for b in content.replace("\r\n", "\n").split("\n\n")]
        raw = [(f"{path.stem}-{i + 1}", b) for i, b in enumerate(b for b in blocks if b)]
    if not raw:
        raise ConfigError(f"{path} contains no texts")
    out = []
    for name, text in raw:
        clean, bounds = parse_marked(text, marker)
        out.append(EventText(name=name, text=clean, boundaries=bounds, title=name))
    return out


def texts_from_config(cfg: KernelConfig) -> list[EventText]:
    """``--text`` values, then ``--file`` texts; the demo stories when neither is given."""
    out: list[EventText] = []
    for i, t in enumerate(cfg.text or []):
        clean, bounds = parse_marked(t)
        out.append(EventText(name=f"text-{i + 1}", text=clean, boundaries=bounds, title=f"text {i + 1}"))
    if cfg.file is not None:
        out.extend(read_texts(cfg.file))
    if cfg.demo or not out:
        demos = load_demo_texts()
        wanted = [d for d in (cfg.demo or ["all"])]
        if "all" in wanted:
            out.extend(demos)
        else:
            by_name = {d.name: d for d in demos}
            unknown = [w for w in wanted if w not in by_name]
            if unknown:
                raise ConfigError(
                    f"unknown demo stor{'y' if len(unknown) == 1 else 'ies'} {', '.join(unknown)}; choose from all, "
                    f"{', '.join(by_name)}"
                )
            out.extend(by_name[w] for w in wanted)
    names: dict[str, int] = {}
    for t in out:  # unique names → unique page files
        k = names.get(t.name, 0)
        names[t.name] = k + 1
        if k:
            t.name = f"{t.name}-{k + 1}"
    return out


# ---------------------------------------------------------------------------------------------
# loading


def load_sources(opts: TemporalSourceOptions, progress: Any = print) -> tuple[Any, Any, Any]:
    """``(subject model, Temporal SAE, contrast SAE or None)`` on ``opts.device``, opened and checked by
    :mod:`tempolens.sources.open` and :mod:`tempolens.saes.fit`.

    Random-init specs (``random:temporal?...``) that need activation statistics get them from the
    built-in demo stories run through the model (BOS excluded): the mean activation becomes the
    decoder bias and ``1/mean‖x‖`` the scaling factor (see :mod:`tempolens.saes.random_init`).
    """
    from functools import cache

    from tempolens.saes.fit import load_sae_for_model
    from tempolens.sources.open import load_subject_model

    model = load_subject_model(opts.model, opts.layer, device=opts.device, dtype=opts.dtype, progress=progress)
    sample = cache(lambda: demo_activation_sample(model))  # computed once, only for random-init specs that need it
    sae = load_sae_for_model(opts.sae, model, opts.device, activation_sample=sample, strict_config=opts.sae_strict)
    if not getattr(sae, "is_temporal", False):
        raise ConfigError(
            f"--sae {opts.sae} is a {getattr(sae, 'architecture', '?')} SAE, not a Temporal SAE; pass it as "
            "--contrast-sae"
        )
    contrast = (
        load_sae_for_model(opts.contrast, model, opts.device, activation_sample=sample, strict_config=opts.sae_strict)
        if opts.contrast
        else None
    )
    return model, sae, contrast


def demo_activation_sample(model: Any) -> Any:
    """Activations ``[N, d]`` (float32, CPU) of the demo stories at the model's hook, BOS excluded."""
    import torch

    from tempolens.temporal.analysis import tokenize

    rows = []
    for t in load_demo_texts():
        ids, _ = tokenize(model.tokenizer, t.text, getattr(model, "bos_id", None))
        h = model.hidden_at(torch.tensor([ids]))[0].float().cpu()
        rows.append(h[1:] if getattr(model, "bos_id", None) is not None else h)
    return torch.cat(rows)


# ---------------------------------------------------------------------------------------------
# kernel


def kernel_scores(a: TextAnalysis, half_width: int) -> dict[str, dict]:
    """Per kernel of ``a``, the event scores of :func:`~tempolens.temporal.events.score_kernel` (block
    contrast, boundary AUROCs with a Foote window of ``half_width`` tokens); empty when ``a`` has no events."""
    if a.labels is None or not a.boundaries:
        return {}
    return {k: score_kernel(S, a.labels, half_width, a.sentence_tokens).as_dict() for k, S in a.kernels.items()}


def _write_text_outputs(cfg: Any, a: TextAnalysis, t: EventText, scores: dict, figures: bool) -> dict:
    from tempolens.temporal import figures as fig
    from tempolens.temporal.page import analysis_payload, slugify, write_kernel_page

    kdir = cfg.out / "kernels"
    figs: dict[str, str] = {}
    if figures:
        slug = slugify(t.name)
        fig.kernel_figure(a, kdir / "figures" / f"{slug}-kernels.png")
        figs["Kernels (PNG)"] = f"figures/{slug}-kernels.png"
        if a.attention:
            fig.attention_figure(a, kdir / "figures" / f"{slug}-attention.png")
            figs["Attention per head (PNG)"] = f"figures/{slug}-attention.png"
        fig.share_figure(a, kdir / "figures" / f"{slug}-share.png")
        figs["Predicted vs novel share (PNG)"] = f"figures/{slug}-share.png"
    payload = analysis_payload(a, scores=scores, figures=figs, title=t.title or t.name)
    page = write_kernel_page(cfg.out, payload)
    return {
        "name": t.name,
        "title": t.title or t.name,
        "n_tokens": len(a.tokens),
        "page": str(page),
        "figures": [str(kdir / p) for p in figs.values()],
        "scores": scores,
    }


def _write_index(out: Path, entries: list[dict]) -> Path:
    from tempolens.dashboards.site import js_call
    from tempolens.temporal.page import slugify, write_kernel_index

    index = write_kernel_index(out, entries)
    pages = [
        {"href": f"kernels/{slugify(e['name'])}.html", "title": e["title"], "description": f"{e['n_tokens']} tokens"}
        for e in entries
    ]
    pages.insert(
        0, {"href": "kernels/index.html", "title": "All kernel pages", "description": "index with event scores"}
    )
    (out / "data").mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "data" / "kernels.js", js_call("tempolensKernels", {"pages": pages}))
    return index


def _merge_entries(out: Path, new: list[dict]) -> list[dict]:
    """Keep index entries of earlier runs whose pages still exist; newer entries replace same-name ones."""
    path = out / "kernels" / "pages.json"
    old: list[dict] = []
    if path.is_file():
        try:
            old = [
                e
                for e in json.loads(path.read_text())
                if isinstance(e, dict) and Path(str(e.get("page", ""))).is_file()
            ]
        except (json.JSONDecodeError, OSError):
            old = []
    names = {e["name"] for e in new}
    merged = [e for e in old if e.get("name") not in names] + new
    atomic_write_json(path, merged)
    return merged


def run_kernel(cfg: KernelConfig, sources: tuple[Any, Any, Any] | None = None) -> dict:
    """Analyse each text and write figures + pages under ``<out>/kernels/``; print where they are.

    ``sources``: an already loaded ``(model, Temporal SAE, contrast SAE | None)`` (Python API).
    Returns ``{"index": path, "texts": [entry, ...]}``.
    """
    texts = texts_from_config(cfg)
    model, sae, contrast = sources or load_sources(cfg)
    entries = []
    for t in tqdm(texts, desc="kernels", unit="text", disable=len(texts) < 2):
        a = analyze_text(
            model,
            sae,
            t.text,
            contrast=contrast,
            name=t.name,
            boundaries=t.boundaries,
            max_tokens=cfg.max_tokens,
            top_k=cfg.top_k,
        )
        entries.append(_write_text_outputs(cfg, a, t, kernel_scores(a, cfg.half_width), cfg.figures))
    index = _write_index(cfg.out, _merge_entries(cfg.out, entries))
    print(f"kernel pages: {index}")
    for e in entries:
        print(f"  {e['name']}: {e['page']}")
        for f in e["figures"]:
            print(f"    {f}")
    return {"index": str(index), "texts": entries}


# ---------------------------------------------------------------------------------------------
# events


def _fmt(x: float | None, nd: int = 3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{nd}f}"


def _ci(ci: list | None) -> str:
    if not ci or any(x is None or (isinstance(x, float) and math.isnan(x)) for x in ci):
        return ""
    return f" [{ci[0]:.2f}, {ci[1]:.2f}]"


def events_table(summary: dict) -> str:
    """Markdown table of the per-kernel summaries (mean ± sd over texts)."""
    lines = [
        "| codes | block contrast (mean ± sd) | within | across | boundary AUROC vs all tokens (mean ± sd; pooled) "
        "| vs other sentence starts (mean ± sd; pooled) | texts |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind, s in summary.items():
        bc, au, aus = s["block_contrast"], s["boundary_auroc"], s["boundary_auroc_sentences"]
        po = s.get("pooled", {})
        lines.append(
            f"| {KERNEL_LABELS.get(kind, kind)} | {_fmt(bc['mean'])} ± {_fmt(bc['std'])} | "
            f"{_fmt(s['within_mean']['mean'])} | "
            f"{_fmt(s['across_mean']['mean'])} | {_fmt(au['mean'])} ± {_fmt(au['std'])}; "
            f"{_fmt(po.get('boundary_auroc'))}{_ci(po.get('boundary_auroc_ci95'))} "
            f"| {_fmt(aus['mean'])} ± {_fmt(aus['std'])}; "
            f"{_fmt(po.get('boundary_auroc_sentences'))}{_ci(po.get('boundary_auroc_sentences_ci95'))} | {bc['n']} |"
        )
    return "\n".join(lines)


EVENT_DEFINITIONS = {
    "block_contrast": "mean S_ij over i≠j in the same event minus mean over i, j in different events (BOS dropped)",
    "boundary_auroc": "AUROC of Foote novelty (checkerboard half-width {half_width}) at the first token of each event "
    "vs other tokens; 0.5 = chance",
    "boundary_auroc_sentences": "the same AUROC against the other sentence-start tokens only (every event boundary "
    "is also a sentence start); 0.5 = chance",
    "pooled": "AUROCs over all texts' tokens pooled, novelty z-scored within each text; ci95 = percentile bootstrap "
    "over texts (1000 resamples)",
}
"""What each number of ``events.json`` means (``{half_width}`` is filled in)."""


def _marked_texts(cfg: EventsConfig) -> list[Any]:
    """The texts of the check (``--file`` or the demo stories) that have event markers."""
    texts = read_texts(cfg.file) if cfg.file is not None else load_demo_texts()
    texts = [t for t in texts if t.boundaries]
    if not texts:
        raise ConfigError("no text has event markers ('||'); the event check needs at least one boundary per text")
    return texts


def _score_texts(
    cfg: EventsConfig, model: Any, sae: Any, contrast: Any, texts: list[Any]
) -> tuple[list[dict], list[Any], dict[str, dict[str, list]]]:
    """Analyse every text: per-text scores, kernel-page index entries (with ``--pages``), and the novelty
    samples of each kernel pooled over texts (all tokens, and sentence starts only)."""
    per_text: list[dict] = []
    entries = []
    pooled: dict[str, dict[str, list]] = {}
    for t in tqdm(texts, desc="events", unit="text"):
        a = analyze_text(
            model, sae, t.text, contrast=contrast, name=t.name, boundaries=t.boundaries, max_tokens=cfg.max_tokens
        )
        scores = kernel_scores(a, cfg.half_width)
        for k, S in a.kernels.items():
            acc = pooled.setdefault(k, {"all": [], "sentences": []})
            acc["all"].append(novelty_samples(S, a.labels, cfg.half_width))
            if a.sentence_tokens:
                acc["sentences"].append(novelty_samples(S, a.labels, cfg.half_width, a.sentence_tokens))
        per_text.append(
            {
                "name": t.name,
                "n_tokens": len(a.tokens),
                "n_events": t.n_events,
                "boundaries": a.boundaries,
                "scores": scores,
                "pred_top_direction_share": a.meta.get("pred_top_direction_share"),
                "novel_top_direction_share": a.meta.get("novel_top_direction_share"),
            }
        )
        if cfg.pages:
            entries.append(_write_text_outputs(cfg, a, t, scores, figures=True))
    return per_text, entries, pooled


def _events_summary(per_text: list[dict], pooled: dict[str, dict[str, list]]) -> dict[str, dict]:
    """Per kernel: the summary of each per-text score, and the pooled boundary AUROCs with bootstrap CIs."""
    kinds = [k for k in KERNEL_LABELS if any(k in p["scores"] for p in per_text)]
    metrics = ("block_contrast", "boundary_auroc", "boundary_auroc_sentences", "within_mean", "across_mean")
    summary = {
        k: {
            m: summarize(
                [p["scores"][k][m] if p["scores"][k][m] is not None else math.nan for p in per_text if k in p["scores"]]
            )
            for m in metrics
        }
        for k in kinds
    }
    for k in kinds:
        au, n_pos, n_neg = pooled_auroc(pooled[k]["all"])
        aus, _, n_neg_s = pooled_auroc(pooled[k]["sentences"])
        summary[k]["pooled"] = {
            "boundary_auroc": au,
            "boundary_auroc_sentences": aus,
            "n_boundaries": n_pos,
            "n_negatives": n_neg,
            "n_sentence_negatives": n_neg_s,
            "boundary_auroc_ci95": list(bootstrap_auroc_ci(pooled[k]["all"])),
            "boundary_auroc_sentences_ci95": list(bootstrap_auroc_ci(pooled[k]["sentences"])),
        }
    return summary


def _write_events(cfg: EventsConfig, result: dict, labels: tuple[str, str], entries: list[Any]) -> None:
    """``kernels/events.{json,md,html}`` (and the kernel index with ``--pages``), and the table on stdout."""
    kdir = cfg.out / "kernels"
    kdir.mkdir(parents=True, exist_ok=True)
    table = events_table(result["summary"])
    diag = result["diagnostics"]
    d1, d2 = diag["pred_top_direction_share"]["mean"], diag["novel_top_direction_share"]["mean"]
    diag_line = (
        f"Variance of the centred codes along their first principal direction (mean over texts): "
        f"predicted {_fmt(d1)}, novel {_fmt(d2)} "
        "(near 1 = the predicted codes are one vector times a per-token scalar, so their kernel is mostly ±1)."
    )
    header = (
        f"Event-boundary check: {result['model']} {result['hook_name']}, Temporal SAE `{labels[0]}`, "
        f"contrast `{labels[1]}`, {result['n_texts']} texts, novelty half-width {cfg.half_width}."
    )
    atomic_write_json(kdir / "events.json", result)
    atomic_write_bytes(kdir / "events.md", (f"{header}\n\n{table}\n\n{diag_line}\n").encode())
    _write_events_html(cfg.out, header + " " + diag_line, result["summary"], result["texts"])
    if entries:
        _write_index(cfg.out, _merge_entries(cfg.out, entries))
    print(header)
    print(table)
    print(diag_line)
    print(f"written: {kdir / 'events.json'}, {kdir / 'events.md'}, {kdir / 'events.html'}")


def run_events(cfg: EventsConfig, sources: tuple[Any, Any, Any] | None = None) -> dict:
    """The event-boundary check: per-kernel block contrast and boundary AUROC over marked texts."""
    texts = _marked_texts(cfg)
    t0 = time.perf_counter()
    model, sae, contrast = sources or load_sources(cfg)
    per_text, entries, pooled = _score_texts(cfg, model, sae, contrast, texts)
    summary = _events_summary(per_text, pooled)
    shares = ("pred_top_direction_share", "novel_top_direction_share")
    diag = {k: summarize([p[k] for p in per_text if p.get(k) is not None]) for k in shares}
    result = {
        "diagnostics": diag,
        "model": getattr(model, "model_id", cfg.model),
        "hook_name": getattr(model, "hook_name", ""),
        "sae_spec": cfg.sae,
        "sae": sae.describe(),
        "contrast_sae_spec": cfg.contrast,
        "contrast_sae": contrast.describe() if contrast is not None else None,
        "half_width": cfg.half_width,
        "n_texts": len(per_text),
        "seconds": round(time.perf_counter() - t0, 1),
        "summary": summary,
        "texts": per_text,
        "definitions": {k: v.format(half_width=cfg.half_width) for k, v in EVENT_DEFINITIONS.items()},
    }
    if sources is None:
        labels = (cfg.sae, cfg.contrast or "none")
        result["sae_spec"], result["contrast_sae_spec"] = cfg.sae, cfg.contrast
    else:
        labels = (_describe(sae), _describe(contrast))
        result["sae_spec"], result["contrast_sae_spec"] = None, None
    _write_events(cfg, result, labels, entries)
    return result


def _describe(sae: Any) -> str:
    if sae is None:
        return "none"
    d = sae.describe()
    return f"{d.get('architecture', '?')} width {d.get('width', '?')} k {d.get('k', '?')}"


def _write_events_html(out: Path, header: str, summary: dict, per_text: list[dict]) -> None:
    """``<out>/kernels/events.html``: the summary per kernel and the scores per text, as text tables."""
    from tempolens.temporal.page import slugify, write_events_page

    def pooled(s: dict, key: str) -> str:
        return f"{_fmt(s.get('pooled', {}).get(key))}{_ci(s.get('pooled', {}).get(key + '_ci95'))}"

    rows = [
        [
            KERNEL_LABELS.get(k, k),
            f"{_fmt(s['block_contrast']['mean'])} ± {_fmt(s['block_contrast']['std'])}",
            _fmt(s["within_mean"]["mean"]),
            _fmt(s["across_mean"]["mean"]),
            f"{_fmt(s['boundary_auroc']['mean'])} ± {_fmt(s['boundary_auroc']['std'])}; "
            f"pooled {pooled(s, 'boundary_auroc')}",
            f"{_fmt(s['boundary_auroc_sentences']['mean'])} ± {_fmt(s['boundary_auroc_sentences']['std'])}; pooled "
            f"{pooled(s, 'boundary_auroc_sentences')}",
            str(s["block_contrast"]["n"]),
        ]
        for k, s in summary.items()
    ]
    kinds = list(summary)
    trows = [
        [{"text": p["name"], "href": f"{slugify(p['name'])}.html"}, str(p["n_tokens"])]
        + [
            f"{_fmt(p['scores'][k]['block_contrast'])} / {_fmt(p['scores'][k]['boundary_auroc'])} / "
            f"{_fmt(p['scores'][k]['boundary_auroc_sentences'])}"
            for k in kinds
        ]
        for p in per_text
    ]
    write_events_page(
        out,
        {
            "header": header.replace("`", ""),
            "summary": {
                "columns": [
                    "codes",
                    "block contrast",
                    "within",
                    "across",
                    "boundary AUROC",
                    "vs sentence starts",
                    "texts",
                ],
                "rows": rows,
            },
            "texts": {"columns": ["text", "tokens", *(KERNEL_LABELS.get(k, k) for k in kinds)], "rows": trows},
        },
    )
