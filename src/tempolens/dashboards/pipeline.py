"""`tempolens dashboards`: code store → feature statistics → Neuronpedia exports + static site.

Stages (each timed; the first two are cached in the output folder and reused when the store and
settings match, so a rerun after a kill resumes cheaply):

1. statistics of every latent (:func:`tempolens.stats.features.compute_feature_stats`) → ``stats.safetensors``;
2. logit effects of every decoder direction (:func:`tempolens.stats.logits.logit_effects`) → ``logits.safetensors``;
3. per group of latents: example windows (one read of the store), feature records, then
   ``neuronpedia/batches/batch-<k>.json``, ``neuronpedia/bulk/<model>/<source>/…`` and
   ``site/data/features/chunk-<c>.js``; finally ``site/data/index.js``, ``site/data/meta.js``,
   ``run_settings.json`` and the viewer assets.

``neuronpedia/`` and ``site/`` are built in ``neuronpedia.partial/`` and ``site.partial/`` and
each replaces the previous tree by a rename when it is complete, so a failed or killed run never
leaves a partial tree behind (the kernel pages that `tempolens kernel`/`run` added to the old site
are carried over). The store is checked against its ``meta.json`` before anything is written.

The LM is never run: the model is loaded only for its tokenizer and unembedding, the SAE only for
its decoder directions.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from tqdm.auto import tqdm

from tempolens.devices import resolve_device
from tempolens.errors import ConfigError, SourceError
from tempolens.options import check
from tempolens.sources.options import DeviceOptions, SAELoadOptions
from tempolens.store.codestore import (
    CodeStore,
    StoreError,
    atomic_write_bytes,
    ensure_out_dir,
    remove_stale_temporaries,
    write_sha256sums,
)


ACT_UNITS: dict[str, str] = {
    "norm": "contribution norm: code × ‖decoder row‖ (model units)",
    "code": "raw SAE code",
}
"""The activation unit conventions of `--act-units`, each with the sentence the exports state."""

LOGIT_DIRECTION = "unit-norm decoder direction w_dec/‖w_dec‖"
"""What the logit effects are computed from (whatever --act-units is)."""


@dataclass
class DashboardConfig(DeviceOptions, SAELoadOptions):
    """Options of `tempolens dashboards` (`--device`: where the logit-effect matmuls run).

    `--model` and `--sae` here are overrides of the store's own specs (default: its `meta.json`), not the
    collect options of the same name."""

    store: Path = Path("runs/embedded/store")
    """Code store to read (written by `tempolens collect`)."""
    out: Path = Path("runs/embedded/dashboards")
    """Output folder: `site/` (open `site/index.html`), `neuronpedia/batches/`, `neuronpedia/bulk/`, cached statistics."""
    model: str | None = None
    """Subject model for the tokenizer and unembedding (default: the store's `meta.json` model spec)."""
    sae: str | None = None
    """SAE for the decoder directions (default: the store's `meta.json` SAE spec)."""
    fold_norm: bool = True
    """Fold the final norm's per-dimension multiplier (e.g. Gemma's 1+w) into the decoder directions before the unembedding when computing logit effects; the dashboard meta says which was used."""
    latents: tuple[int, ...] = ()
    """Latent ids to export (default: all). Statistics and correlations always cover all latents."""
    n_top: int = 20
    """Top activating examples per latent."""
    n_intervals: int = 5
    """Equal-width activation intervals over (0, max] (nonzero activations only)."""
    n_per_interval: int = 5
    """Random examples per interval (deterministic for --seed, independent of sharding)."""
    n_bins: int = 50
    """Bins of the activation histogram (nonzero activations over (0, max])."""
    n_correlated: int = 3
    """Correlated latents listed per latent (Pearson over all latents; cosine similarity in `correlated_features_l1`)."""
    n_logits: int = 10
    """Top and bottom logit effects listed per latent."""
    window: int = 128
    """Tokens per example window: the whole prompt when the prompt has at most this many tokens (Neuronpedia: 128), otherwise this many tokens around the example token. At most 1024 (Neuronpedia's limit)."""
    window_after: int = 32
    """When a prompt is longer than --window: tokens shown after the example token (the rest of the window comes before it)."""
    features_per_batch: int = 128
    """Features per Neuronpedia batch file (Neuronpedia's upload API takes at most 128 per call)."""
    chunk_size: int = 64
    """Latents per site data chunk (`site/data/features/chunk-<latent // chunk_size>.js`)."""
    latents_per_pass: int = 512
    """Latents whose example windows and records are built per read of the store (bounds memory: about 0.5 GB per 1,000 latents at 45 examples × 128 tokens)."""
    model_id: str | None = None
    """Neuronpedia model id (default: the store's model id, e.g. `gemma-3-270m`)."""
    sae_set: str | None = None
    """Neuronpedia source-set name without the layer (default: `<architecture>-res`, e.g. `temporal-res`); the source id is `<layer>-<sae_set>`."""
    source_id: str | None = None
    """Neuronpedia source id (the `layer` of bulk-import rows; default: `<layer>-<sae_set>`, e.g. `9-temporal-res`)."""
    sae_id_suffix: str | None = None
    """Optional suffix of the source id (`<layer>-<sae_set>__<suffix>`), as SAEDashboard's `sae_id_suffix`."""
    dataset: str | None = None
    """Dataset name written into every feature (default: the store's corpus spec)."""
    creator_id: str = "tempolens"
    """Neuronpedia `creatorId` written into the bulk-import files (set it to your Neuronpedia user id)."""
    creator_name: str = "tempolens"
    """Creator name written into the bulk-import release and source set."""
    release_id: str | None = None
    """Neuronpedia release id for the bulk import (default: the source-set name)."""
    include_vector: bool = False
    """Write each latent's decoder direction as `vector` (Neuronpedia steering); large for wide SAEs."""
    autointerp: Path | None = None
    """Optional JSON file {"<latent>": {"explanation": str, "scores": {scorer: number}}} shown on the site — e.g. `<autointerp out>/latents-temporal.json` from `tempolens autointerp`; its `report.json` beside it becomes the site's report page; with --bulk the explanations are also exported as Neuronpedia `explanations/batch-<k>.jsonl.gz`."""
    title: str | None = None
    """Site title (default: model id, source id)."""
    batches: bool = True
    """Write SAEDashboard/Neuronpedia batch files."""
    bulk: bool = True
    """Write Neuronpedia's bulk-import layout."""
    site: bool = True
    """Write the static site."""
    seed: int = 0
    """Seed of the interval samples."""
    corr_memory_mb: float = 1024
    """Memory for the exact correlation sums (float64 rows × width); wider SAEs are processed in row blocks, one extra store read each."""
    codes: Literal["novel", "pred"] = "novel"
    """Which codes the dashboards show: `novel` (the SAE's codes; a Temporal SAE's novel codes) or `pred`
    (a Temporal SAE's predicted codes z_pred, kept by `collect --pred-k`): the site goes to `site/pred/`
    (linked both ways with `site/`), the Neuronpedia files to `neuronpedia-pred/`. Predicted codes are
    ranked by value: top examples, intervals, density and histogram count z_pred > 0; negative
    predictions show in the example windows and on hover."""
    act_units: Literal["norm", "code"] = "norm"
    """Units of every activation shown and exported: `norm` (default) = the contribution norm, code × the
    latent's decoder row norm in model units (equals the code for unit-norm decoders, so TopK and Temporal
    dashboards compare); `code` = the SAE's raw code. Site records keep the row norm
    (`tempolens.decoder_norm`), so either is recoverable. Logit effects are always those of the unit-norm
    decoder direction."""
    recompute: bool = False
    """Ignore cached statistics and logit effects in --out."""
    progress: bool = True
    """Show progress bars."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.store, self.out = Path(self.store), Path(self.out)
        if self.autointerp is not None:
            self.autointerp = Path(self.autointerp)
        self.latents = tuple(int(x) for x in self.latents)
        check(all(x >= 0 for x in self.latents), "--latents must be latent ids >= 0")
        for name in ("n_top", "n_intervals", "n_per_interval", "n_bins", "n_logits", "features_per_batch", "chunk_size", "latents_per_pass"):
            check(getattr(self, name) >= 1, f"--{name.replace('_', '-')} must be >= 1; got {getattr(self, name)}")
        check(self.n_correlated >= 0, f"--n-correlated must be >= 0; got {self.n_correlated}")
        check(1 <= self.window <= 1024, f"--window must be 1..1024 tokens (Neuronpedia's limit per activation); got {self.window}")
        check(0 <= self.window_after < self.window, f"--window-after must be in 0..{self.window - 1}; got {self.window_after}")
        check(self.features_per_batch <= 128 or not self.bulk, "--features-per-batch must be <= 128 (Neuronpedia's upload limit)")
        check(self.corr_memory_mb > 0, "--corr-memory-mb must be > 0")
        check(self.codes in ("novel", "pred"), f"--codes must be novel or pred; got {self.codes!r}")
        check(self.act_units in ACT_UNITS, f"--act-units must be one of {', '.join(ACT_UNITS)}; got {self.act_units!r}")
        for name in ("model_id", "sae_set", "source_id", "sae_id_suffix", "creator_id", "release_id"):
            v = getattr(self, name)
            check(v is None or re.fullmatch(r"[A-Za-z0-9._-]+", v) is not None, f"--{name.replace('_', '-')} may use letters, digits, '.', '_' and '-' only; got {v!r}")
        check(self.batches or self.bulk or self.site, "nothing to write: enable at least one of --batches, --bulk, --site")


@dataclass
class DashboardResult:
    """What `build_dashboards` wrote."""

    out: Path
    site: Path | None
    batches: list[Path]
    bulk: Path | None
    n_latents: int
    n_examples: int
    timings: dict[str, float] = field(default_factory=dict)

    def __str__(self) -> str:
        lines = [f"dashboards of {self.n_latents} latents ({self.n_examples} examples) in {self.out}"]
        if self.site:
            lines.append(f"  site: open {self.site / 'index.html'}")
        if self.batches:
            lines.append(f"  Neuronpedia batch files: {len(self.batches)} in {self.batches[0].parent}")
        if self.bulk:
            lines.append(f"  Neuronpedia bulk import: {self.bulk}")
        lines.append("  time: " + ", ".join(f"{k} {v:.1f}s" for k, v in self.timings.items()))
        return "\n".join(lines)


def _slug(s: str) -> str:
    s = s.rstrip("/").split("/")[-1]
    return re.sub(r"[^A-Za-z0-9._-]+", "-", s).strip("-").lower() or "model"


def _fingerprint(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _cached(path: Path, key: str, recompute: bool) -> bool:
    keyfile = path.with_suffix(".key")
    return not recompute and path.exists() and keyfile.exists() and keyfile.read_text().strip() == key


def build_dashboards(
    cfg: DashboardConfig,
    *,
    model: Any = None,
    W_dec: torch.Tensor | None = None,
) -> DashboardResult:
    """Run every stage (see the module docstring). ``model`` (a ``SubjectModel`` or anything with
    ``token_strings(ids)`` and ``unembed()``) and ``W_dec [width, d]`` may be passed in to skip loading."""
    from tempolens.dashboards import neuronpedia as npx
    from tempolens.dashboards.schema import RecordContext, examples_of, feature_records, index_row
    from tempolens.dashboards.site import SiteWriter, load_autointerp
    from tempolens.store.background import BackgroundJobs
    from tempolens.stats.features import FeatureStats, compute_feature_stats, gather_windows, neuron_alignment
    from tempolens.stats.logits import LogitEffects, logit_effects

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    store = CodeStore(cfg.store)
    meta = store.meta
    if not store.complete:
        raise StoreError(f"{store.root} is incomplete ({len(store.done_shards())}/{store.n_shards} shards); rerun `tempolens collect` with the same arguments to finish it")
    W = store.width
    out = ensure_out_dir(cfg.out)
    pred = cfg.codes == "pred"
    if pred:
        from tempolens.stats.features import check_pred_codes

        check_pred_codes(store)
    suffix = "-pred" if pred else ""
    remove_stale_temporaries(out)  # left by a run killed between writing a file and renaming it
    (out / "SHA256SUMS").unlink(missing_ok=True)  # written again last, when the exports are complete
    autointerp = load_autointerp(cfg.autointerp) if cfg.autointerp is not None else {}
    latents = list(cfg.latents) if cfg.latents else list(range(W))
    bad = [x for x in latents if x >= W]
    if bad:
        raise ConfigError(f"--latents {bad[:5]} are out of range: the SAE has {W} latents (0..{W - 1})")
    latents = sorted(set(latents))

    # -- 1. statistics ------------------------------------------------------------------------------
    stats_path = out / f"stats{suffix}.safetensors"
    stats_key = _fingerprint((store.root / "meta.json").read_text(), [json.loads(p.read_text()).get("sha256") for p in sorted(store.shard_dir.glob("shard-*.json"))],
                             cfg.n_top, cfg.n_bins, cfg.n_intervals, cfg.n_per_interval, cfg.n_correlated, cfg.seed,
                             cfg.codes)
    from tempolens import distributed

    dist = distributed.current()
    cached = _cached(stats_path, stats_key, cfg.recompute)
    if dist.active:  # every rank must agree on whether the statistics are recomputed together
        cached = all(dist.gather_all(cached))
    if cached:
        stats = FeatureStats.load(stats_path)
    else:
        stats = compute_feature_stats(store, n_top=cfg.n_top, n_bins=cfg.n_bins, n_intervals=cfg.n_intervals, n_per_interval=cfg.n_per_interval,
                                      n_correlated=cfg.n_correlated, seed=cfg.seed, corr_memory_mb=cfg.corr_memory_mb,
                                      progress=cfg.progress and dist.is_main, dist=dist, codes=cfg.codes)
        if dist.is_main:
            stats.save(stats_path)
            atomic_write_bytes(stats_path.with_suffix(".key"), (stats_key + "\n").encode())
    timings["statistics"] = time.perf_counter() - t0
    if not dist.is_main:  # under torchrun: statistics are merged on every rank; rank 0 writes the exports
        dist.barrier()
        return DashboardResult(out=out, site=None, batches=[], bulk=None, n_latents=0, n_examples=0, timings=timings)

    # -- 2. model, SAE, logit effects ----------------------------------------------------------------
    t1 = time.perf_counter()
    model_spec = cfg.model or meta.get("model", {}).get("spec")
    sae_spec = cfg.sae or meta.get("sae", {}).get("spec")
    layer = int(meta.get("model", {}).get("layer", 0))
    if model is None:
        if not model_spec:
            raise ConfigError(f"{store.root}/meta.json names no model; pass --model")
        from tempolens.sources.open import load_subject_model

        model = load_subject_model(model_spec, layer=layer, device="cpu", progress=print if cfg.progress else None)
    if W_dec is None:
        if not sae_spec:
            raise ConfigError(f"{store.root}/meta.json names no SAE; pass --sae")
        from tempolens.saes.fit import load_sae_for_model
        from tempolens.sources.open import prompt_activation_sample

        cpu = torch.device("cpu")
        sae = load_sae_for_model(sae_spec, model, cpu, strict_config=cfg.sae_strict,
                                 activation_sample=lambda: prompt_activation_sample(model, store.all_tokens(), cpu, 8))
        W_dec = sae.W_dec.detach().float().cpu()
    W_dec = W_dec.detach().float().cpu()
    if W_dec.shape[0] != W:
        raise SourceError(f"the SAE has {W_dec.shape[0]} latents but the store {store.root} has {W}; pass the --sae the store was collected with")
    timings["load"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    W_U, mult, norm_kind = model.unembed()
    if W_U.shape[1] != W_dec.shape[1]:
        raise SourceError(f"the SAE's decoder has d={W_dec.shape[1]} but the model's unembedding has d={W_U.shape[1]}; pass the --model the store was collected with")
    use_mult = mult if (cfg.fold_norm and mult is not None) else None
    row_norm = decoder_row_norms(W_dec)
    logits_path = out / "logits.safetensors"
    logits_key = _fingerprint(model_spec, sae_spec, bool(use_mult is not None), cfg.n_logits,
                              float(W_dec.sum(dtype=torch.float64)), float(W_U.sum(dtype=torch.float64)), LOGIT_DIRECTION)
    if _cached(logits_path, logits_key, cfg.recompute):
        from safetensors.torch import load_file

        t = load_file(str(logits_path))
        logits = LogitEffects(top_ids=t["top_ids"], top_values=t["top_values"], bottom_ids=t["bottom_ids"], bottom_values=t["bottom_values"],
                              hist_counts=t["hist_counts"], hist_centres=t["hist_centres"], folded_norm=use_mult is not None)
    else:
        logits = logit_effects(unit_directions(W_dec, row_norm), W_U, use_mult, k=cfg.n_logits,
                               device=resolve_device(cfg.device), progress=cfg.progress)
        from safetensors.torch import save

        atomic_write_bytes(logits_path, save({k: getattr(logits, k).contiguous() for k in ("top_ids", "top_values", "bottom_ids", "bottom_values", "hist_counts", "hist_centres")}))
        atomic_write_bytes(logits_path.with_suffix(".key"), (logits_key + "\n").encode())
    del W_U
    timings["logit_effects"] = time.perf_counter() - t2

    # -- 3. records and exports ----------------------------------------------------------------------
    t3 = time.perf_counter()
    sae_meta = dict(meta.get("sae", {}))
    arch = str(sae_meta.get("architecture", "sae"))
    hook = str(meta.get("model", {}).get("hook_name", ""))
    set_arch = arch + suffix  # e.g. temporal-pred: predicted-code dashboards are a source of their own
    sae_set = cfg.sae_set or _slug(f"{set_arch}-res" if "resid" in hook or not hook else set_arch)
    ids = npx.ExportIds(
        model_id=cfg.model_id or _slug(str(meta.get("model", {}).get("model_id") or model_spec or "model")),
        layer=layer,
        sae_set=sae_set,
        sae_id_suffix=cfg.sae_id_suffix,
        dataset=cfg.dataset or str(meta.get("corpus", {}).get("spec") or meta.get("prompts", {}).get("corpus") or ""),
        n_prompts=store.n_prompts,
        prompt_len=store.prompt_len,
        creator_id=cfg.creator_id,
        creator_name=cfg.creator_name,
        release_id=cfg.release_id or sae_set,
        hook_name=hook,
        created_at=str(meta.get("created") or "1970-01-01T00:00:00Z"),
        d_model=int(W_dec.shape[1]),
        n_layers=int(getattr(model, "n_layers", 0) or 0),
        width=W,
        description=(f"{arch} SAE{' predicted codes z_pred' if pred else ''}, {W} latents, {hook}; "
                     f"prompts of {store.prompt_len} tokens; activations: {ACT_UNITS[cfg.act_units]}; "
                     f"logit effects: {LOGIT_DIRECTION}"),
        source=cfg.source_id,
    )
    act_scale = row_norm if cfg.act_units == "norm" else torch.ones_like(row_norm)
    ctx = RecordContext(
        stats=stats.scaled(act_scale),
        token_strings=model.token_strings,
        logits=logits,
        alignment=neuron_alignment(W_dec, 3),
        dataset=ids.dataset,
        n_prompts_total=store.n_prompts,
        vectors=W_dec if cfg.include_vector else None,
        autointerp=autointerp,
        decoder_norm=row_norm,
        act_units=cfg.act_units,
    )
    from tempolens.sources.cache import fresh_tmp_dir

    np_final = out / f"neuronpedia{suffix}"
    site_final = out / "site" / "pred" if pred else out / "site"
    np_dir = fresh_tmp_dir(np_final) if (cfg.batches or cfg.bulk) else np_final  # published below when complete
    site_dir = fresh_tmp_dir(site_final) if cfg.site else site_final
    batch_dir = np_dir / "batches"
    bulk_root = np_dir / "bulk"
    if cfg.batches:
        batch_dir.mkdir(parents=True, exist_ok=True)
    explanations = npx.load_autointerp_export(cfg.autointerp) if (cfg.bulk and cfg.autointerp is not None) else None
    if cfg.bulk:
        npx.write_bulk_headers(bulk_root, ids)
    site = SiteWriter(site_dir, cfg.chunk_size) if cfg.site else None
    if site is not None:
        report_json = cfg.autointerp.parent / "report.json" if cfg.autointerp is not None else None
        if report_json is not None and report_json.is_file():  # the ballpark report beside `latents-<label>.json`
            try:
                site.write_autointerp(json.loads(report_json.read_text()))
            except json.JSONDecodeError as e:
                raise ConfigError(f"{report_json} is not valid JSON ({e}); rerun `tempolens autointerp` to rebuild it") from e

    batch_paths: list[Path] = []
    pending_batch: list[dict[str, Any]] = []
    pending_chunk: dict[int, dict[str, Any]] = {}
    chunk_id: int | None = None
    index_rows: list[list[Any]] = []
    n_examples = 0

    # encoding, gzip and writes run in a background thread, overlapping the next records' assembly
    writes = BackgroundJobs(max_pending=4)
    # CPU seconds per part of the exports (thread time: the writer thread's jobs, the records in this thread)
    export_cpu = {"records": 0.0, "batches": 0.0, "bulk": 0.0, "site": 0.0}

    def timed(part: str, job: Callable[[], object]) -> Callable[[], None]:
        def run() -> None:
            c0 = time.thread_time()
            job()
            export_cpu[part] += time.thread_time() - c0

        return run

    def flush_batch() -> None:
        nonlocal pending_batch
        if not pending_batch:
            return
        k, recs = len(batch_paths), pending_batch
        if cfg.batches:
            batch_paths.append(np_final / "batches" / f"batch-{k}.json")
            writes.submit(timed("batches", lambda: npx.write_batch(batch_dir, k, recs, ids)))
        else:
            batch_paths.append(Path())
        if cfg.bulk:
            writes.submit(timed("bulk", lambda: npx.write_bulk_batch(bulk_root, k, recs, ids)))
            if explanations is not None:
                idx = [r["feature_index"] for r in recs]
                writes.submit(timed("bulk", lambda: npx.write_bulk_explanations(bulk_root, k, idx, explanations, ids)))
        pending_batch = []

    def flush_chunk() -> None:
        nonlocal pending_chunk
        if site is not None and pending_chunk and chunk_id is not None:
            c, recs = chunk_id, pending_chunk
            writes.submit(timed("site", lambda: site.write_chunk(c, recs)))
        pending_chunk = {}

    groups = [latents[i : i + cfg.latents_per_pass] for i in range(0, len(latents), cfg.latents_per_pass)]
    with writes:  # waits for the queued writes; the first failed write is raised here
        for group in tqdm(groups, desc="dashboards", unit="pass", disable=not cfg.progress or len(groups) < 2):
            c0 = time.thread_time()
            lat, gpos, grp, _ = examples_of(stats, group)
            windows = gather_windows(store, lat, gpos, window=cfg.window, after=cfg.window_after, progress=cfg.progress,
                                     codes=cfg.codes).scaled(act_scale)
            records = feature_records(ctx, group, windows, grp)
            export_cpu["records"] += time.thread_time() - c0
            n_examples += int(lat.numel())
            for rec in records:
                i = rec["feature_index"]
                index_rows.append(index_row(rec))
                pending_batch.append(rec)
                if len(pending_batch) >= cfg.features_per_batch:
                    flush_batch()
                if site is not None:
                    c = site.chunk_of(i)
                    if chunk_id is not None and c != chunk_id:
                        flush_chunk()
                    chunk_id = c
                    pending_chunk[i] = rec
            del records, windows
        flush_batch()
        flush_chunk()
    timings["exports"] = time.perf_counter() - t3
    timings.update({f"exports_cpu_{part}": v for part, v in export_cpu.items()})

    settings = {
        "store": str(store.root),
        "model": model_spec,
        "sae": sae_spec,
        "ids": npx.ids_dict(ids),
        "fold_norm": use_mult is not None,
        "final_norm": norm_kind,
        "logit_effects": ("W_U·(final-norm multiplier ⊙ u), " if use_mult is not None else "W_U·u (final norm not folded), ")
        + f"u = {LOGIT_DIRECTION}",
        "codes": cfg.codes,
        "pred_codes": meta.get("pred_codes"),
        "act_units": cfg.act_units,
        "activations": ("predicted code z_pred (> 0 ranked and counted; negatives shown in windows); " if pred else "")
        + ACT_UNITS[cfg.act_units]
        + ("; the raw code is value / tempolens.decoder_norm" if cfg.act_units == "norm" else ""),
        "n_top": cfg.n_top, "n_intervals": cfg.n_intervals, "n_per_interval": cfg.n_per_interval, "n_bins": cfg.n_bins,
        "n_correlated": cfg.n_correlated, "n_logits": cfg.n_logits, "seed": cfg.seed,
        "window": min(cfg.window, store.prompt_len), "window_after": cfg.window_after if store.prompt_len > cfg.window else None,
        "prompt_len": store.prompt_len, "n_prompts": store.n_prompts, "n_tokens": stats.n_tokens,
        "excluded_from_statistics": "BOS/EOS/pad positions (shown as context with value 0)",
        "intervals": "equal-width over (0, max], nonzero activations only; bin_contains = share of active tokens",
        "correlated_features": "Pearson over all counted tokens and all latents; correlated_features_l1 = cosine similarity",
        "correlated_neurons": "not computed (the code store keeps no LM activations)",
        "features_per_batch": cfg.features_per_batch,
        "tempolens_version": _version(),
    }
    if cfg.batches:
        npx.write_run_settings(batch_dir, settings)
    if site is not None:
        site.copy_assets()
        site.write_index(index_rows)
        site.write_meta({
            "title": cfg.title or f"{ids.model_id} · {ids.source_id}" + (" · predicted codes" if pred else ""),
            "codes": cfg.codes,
            "model_id": ids.model_id,
            "hook_name": hook,
            "layer": layer,
            "source_id": ids.source_id,
            "sae": {**{k: v for k, v in sae_meta.items() if isinstance(v, (str, int, float, bool)) or v is None}, "width": W},
            "is_temporal": bool(stats.is_temporal),
            "act_units": cfg.act_units,
            "act_units_label": ACT_UNITS[cfg.act_units],
            "dataset": ids.dataset,
            "n_prompts": store.n_prompts,
            "prompt_len": store.prompt_len,
            "n_tokens": stats.n_tokens,
            "chunk_size": cfg.chunk_size,
            "n_latents": len(latents),
            "created": ids.created_at,
            "tempolens_version": _version(),
            "settings": settings,
        })
        if not pred:
            _carry_over_foreign(site_final, site_dir)
    from tempolens.sources.cache import publish_dir

    if cfg.batches or cfg.bulk:
        publish_dir(np_dir, np_final)
    if site is not None:
        publish_dir(site_dir, site_final)
        _link_views(out / "site")
    write_sha256sums(out, ("neuronpedia", "neuronpedia-pred", "site"))  # last: `sha256sum -c` verifies the exports
    timings["total"] = time.perf_counter() - t0
    from tempolens.store.codestore import atomic_write_json

    # beside the exports, outside what SHA256SUMS covers: seconds per stage (differ run to run)
    atomic_write_json(out / f"dashboards_log{suffix}.json", {"timings": timings, "n_latents": len(latents), "n_examples": n_examples, "store": str(store.root)})
    result = DashboardResult(
        out=out,
        site=site_final if site is not None else None,
        batches=batch_paths if cfg.batches else [],
        bulk=npx.bulk_dir(np_final / "bulk", ids) if cfg.bulk else None,
        n_latents=len(latents),
        n_examples=n_examples,
        timings=timings,
    )
    if cfg.progress:
        print(result)
    dist.barrier()  # releases the other ranks, which wait for the exports
    return result


FOREIGN_SITE_PATHS = ("kernels", "data/kernels.js", "pred")
"""Parts of a site that other commands write (`tempolens kernel`, `run`, `dashboards --codes pred`): kept when dashboards rebuild the site."""


def _carry_over_foreign(old_site: Path, new_site: Path) -> None:
    """Copy the parts of ``old_site`` that dashboards do not write into ``new_site`` before it replaces it."""
    import shutil

    for rel in FOREIGN_SITE_PATHS:
        src, dest = old_site / rel, new_site / rel
        if src.is_symlink() or dest.exists():
            continue
        if src.is_dir():
            shutil.copytree(src, dest, symlinks=False, ignore=shutil.ignore_patterns(".*.tmp-*"))
        elif src.is_file():
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest)


def _link_views(site_root: Path) -> None:
    """Tell the novel site (``site/``) that the predicted-code site (``site/pred/``) exists, so each
    latent page links to its other view (``data/views.js``; the pred site always links back)."""
    views = site_root / "data" / "views.js"
    if (site_root / "pred" / "data" / "meta.js").is_file() and (site_root / "data").is_dir():
        atomic_write_bytes(views, b'tempolensViews({"novel": "index.html", "pred": "pred/index.html"});\n')


def decoder_row_norms(W_dec: torch.Tensor) -> torch.Tensor:
    """``[width]`` L2 norm of every decoder row, in model units (float32, computed in float64)."""
    return W_dec.detach().to(torch.float64).norm(dim=1).to(torch.float32)


def unit_directions(W_dec: torch.Tensor, row_norm: torch.Tensor) -> torch.Tensor:
    """Decoder rows divided by their norms (all-zero rows stay zero)."""
    rows = W_dec.detach().to(torch.float64)
    return (rows / row_norm.to(torch.float64).clamp(min=1e-30).unsqueeze(1)).to(torch.float32)


def _version() -> str:
    try:
        from tempolens import __version__

        return str(__version__)
    except Exception:  # pragma: no cover
        return "unknown"
