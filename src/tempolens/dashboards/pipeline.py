"""`tempolens dashboards`: code store → feature statistics → Neuronpedia exports + static site.

Stages (each timed; the first two are cached in the output folder and reused when the store and
settings match, so a rerun after a kill resumes cheaply):

1. statistics of every latent (:func:`tempolens.stats.features.compute_feature_stats`) → ``stats.safetensors``;
2. logit effects of every decoder direction (:func:`tempolens.stats.logits.logit_effects`) → ``logits.safetensors``;
3. per group of latents: the windows of the examples shown (:func:`tempolens.stats.examples.example_windows`,
   one read of the store), feature records (:func:`tempolens.dashboards.records.feature_records`), then
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

import contextlib
import functools
import gc
import hashlib
import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from tqdm.auto import tqdm

from tempolens.devices import logit_precision, resolve_device
from tempolens.errors import ConfigError, SourceError
from tempolens.fsutil import atomic_write_bytes, ensure_out_dir, remove_stale_temporaries, write_sha256sums
from tempolens.options import check
from tempolens.sources.options import DeviceOptions, SAELoadOptions
from tempolens.store.codestore import CodeStore, StoreError

if TYPE_CHECKING:
    from tempolens.dashboards import neuronpedia as npx
    from tempolens.dashboards.records import RecordContext
    from tempolens.dashboards.site import SiteWriter
    from tempolens.stats.examples import Windows
    from tempolens.stats.features import FeatureStats
    from tempolens.stats.logits import LogitEffects, LogitEffectsJob


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
    """Output folder: `site/` (open `site/index.html`), `neuronpedia/batches/`, `neuronpedia/bulk/`, cached
    statistics."""
    model: str | None = None
    """Subject model for the tokenizer and unembedding (default: the store's `meta.json` model spec)."""
    sae: str | None = None
    """SAE for the decoder directions (default: the store's `meta.json` SAE spec)."""
    fold_norm: bool = True
    """Fold the final norm's per-dimension multiplier (e.g. Gemma's 1+w) into the decoder directions before the
    unembedding when computing logit effects; the dashboard meta says which was used."""
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
    """Correlated latents listed per latent (Pearson over all latents; cosine similarity in
    `correlated_features_l1`)."""
    n_logits: int = 10
    """Top and bottom logit effects listed per latent."""
    window: int = 128
    """Tokens per example window: the whole prompt when the prompt has at most this many tokens (Neuronpedia: 128),
    otherwise this many tokens around the example token. At most 1024 (Neuronpedia's limit)."""
    window_after: int = 32
    """When a prompt is longer than --window: tokens shown after the example token (the rest of the window comes before
    it)."""
    features_per_batch: int = 128
    """Features per Neuronpedia batch file (Neuronpedia's upload API takes at most 128 per call)."""
    chunk_size: int = 64
    """Latents per site data chunk (`site/data/features/chunk-<latent // chunk_size>.js`)."""
    latents_per_pass: int = 0
    """Latents whose example windows and records are built per read of the store. Each pass reads every shard, so
    fewer passes are faster; each holds its examples' windows and records (measured: ≈ 7 KB per example of 128
    tokens). 0 (default): as many as keep that near 512 MB, from the statistics' example counts (16,384 latents ×
    256 prompts: ≈ 2,700 per pass, 4 CPU s less than 512 per pass)."""
    model_id: str | None = None
    """Neuronpedia model id (default: the store's model id, e.g. `gemma-3-270m`)."""
    sae_set: str | None = None
    """Neuronpedia source-set name without the layer (default: `<architecture>-res`, e.g. `temporal-res`); the source
    id is `<layer>-<sae_set>`."""
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
    """Optional JSON file {"<latent>": {"explanation": str, "scores": {scorer: number}}} shown on the site — e.g.
    `<autointerp out>/latents-temporal.json` from `tempolens autointerp`; its `report.json` beside it becomes the
    site's report page; with --bulk the explanations are also exported as Neuronpedia `explanations/batch-<k>.jsonl.gz`.
    """
    title: str | None = None
    """Site title (default: model id, source id)."""
    batches: bool = False
    """Also write SAEDashboard/Neuronpedia batch files (`neuronpedia/batches/`; ≈47 KB per latent at 256 × 128
    tokens, 7× the site's data): pass --batches --bulk to upload the dashboards to Neuronpedia."""
    bulk: bool = False
    """Also write Neuronpedia's bulk-import layout (`neuronpedia/bulk/`, gzipped JSON lines; ≈11 KB per latent)."""
    site: bool = True
    """Write the static site."""
    seed: int = 0
    """Seed of the interval samples."""
    corr_memory_mb: float = 1024
    """Memory for the exact correlation sums, kept only for pairs of latents that fired together (≈ 48 bytes per pair
    occurrence); when all rows' pairs do not fit, rows go in blocks, one extra store read each."""
    codes: Literal["novel", "pred"] = "novel"
    """Which codes the dashboards show: `novel` (the SAE's codes; a Temporal SAE's novel codes) or `pred`
    (a Temporal SAE's predicted codes z_pred, kept by `collect --pred-k`): the site goes to `site/pred/`
    (linked both ways with `site/`), the Neuronpedia files to `neuronpedia-pred/`. Predicted codes are
    read in the store's orientation, sign · z_pred with sign = the sign of the SAE's typical p (meta.json
    `pred_codes.sign`; −1 when the predictor writes −D), and ranked by it: top examples, intervals, density and
    histogram count sign · z_pred > 0, and logit effects are those of sign · D; predictions of the other sign
    show in the example windows and on hover."""
    act_units: Literal["norm", "code"] = "norm"
    """Units of every activation shown and exported: `norm` (default) = the contribution norm, code × the
    latent's decoder row norm in model units (equals the code for unit-norm decoders, so TopK and Temporal
    dashboards compare); `code` = the SAE's raw code. Site records keep the row norm
    (`tempolens.decoder_norm`), so either is recoverable. Logit effects are always those of the unit-norm
    decoder direction."""
    logit_precision: Literal["auto", "fp32", "bf16"] = "auto"
    """Matmul precision of the logit effects: `fp32`; `bf16` (CPUs with native bfloat16 matmuls, AMX or
    AVX512-BF16: ≈4× faster matmuls; the top/bottom logits stay exactly the float32 ones, proven per latent by an
    error bound, and only the vocabulary histogram is counted from bfloat16 logits, moving ≈0.5% of tokens to a
    neighbouring bin); `auto` = bf16 where the CPU has native bfloat16, else fp32 (GPUs: fp32 is already fast)."""
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
        for name in (
            "n_top",
            "n_intervals",
            "n_per_interval",
            "n_bins",
            "n_logits",
            "features_per_batch",
            "chunk_size",
        ):
            check(getattr(self, name) >= 1, f"--{name.replace('_', '-')} must be >= 1; got {getattr(self, name)}")
        check(self.n_correlated >= 0, f"--n-correlated must be >= 0; got {self.n_correlated}")
        check(
            self.latents_per_pass >= 0, f"--latents-per-pass must be >= 0 (0: automatic); got {self.latents_per_pass}"
        )
        check(
            1 <= self.window <= 1024,
            f"--window must be 1..1024 tokens (Neuronpedia's limit per activation); got {self.window}",
        )
        check(
            0 <= self.window_after < self.window,
            f"--window-after must be in 0..{self.window - 1}; got {self.window_after}",
        )
        check(
            self.features_per_batch <= 128 or not self.bulk,
            "--features-per-batch must be <= 128 (Neuronpedia's upload limit)",
        )
        check(self.corr_memory_mb > 0, "--corr-memory-mb must be > 0")
        check(self.codes in ("novel", "pred"), f"--codes must be novel or pred; got {self.codes!r}")
        check(
            self.logit_precision in ("auto", "fp32", "bf16"),
            f"--logit-precision must be auto, fp32 or bf16; got {self.logit_precision!r}",
        )
        check(self.act_units in ACT_UNITS, f"--act-units must be one of {', '.join(ACT_UNITS)}; got {self.act_units!r}")
        for name in ("model_id", "sae_set", "source_id", "sae_id_suffix", "creator_id", "release_id"):
            v = getattr(self, name)
            check(
                v is None or re.fullmatch(r"[A-Za-z0-9._-]+", v) is not None,
                f"--{name.replace('_', '-')} may use letters, digits, '.', '_' and '-' only; got {v!r}",
            )
        check(
            self.batches or self.bulk or self.site, "nothing to write: enable at least one of --batches, --bulk, --site"
        )


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


def _tensor_summary(t: torch.Tensor) -> list[Any]:
    """A cheap fingerprint of a weight for a cache key: shape, sum and L2 norm in the tensor's float32
    reduction (≈ 30 ms for Gemma's 262k × 640 unembedding; a float64 sum took 1.7 s). At worst a reduction
    order that differs between machines or thread counts misses the cache, which recomputes."""
    x = t.detach().float()
    return [list(x.shape), float(x.sum()), float(torch.linalg.vector_norm(x))]


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
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    run = _open_run(cfg)
    if not run.dist.is_main:  # under torchrun: statistics are merged on every rank; rank 0 writes the exports
        _statistics(run)
        timings["statistics"] = time.perf_counter() - t0
        run.dist.barrier()
        return DashboardResult(
            out=run.out, site=None, batches=[], bulk=None, n_latents=0, n_examples=0, timings=timings
        )
    subject = _load_subject(run, model, W_dec)
    timings["load"] = time.perf_counter() - t0
    effects = _logit_effects(run, subject)  # computed in a background thread while statistics and records run
    try:
        t1 = time.perf_counter()
        with _no_cyclic_gc():
            stats = _statistics(run)
        timings["statistics"] = time.perf_counter() - t1
        t2 = time.perf_counter()
        ids = _export_ids(run, subject)
        act_scale = effects.row_norm if cfg.act_units == "norm" else torch.ones_like(effects.row_norm)
        ctx = _record_context(run, stats, subject, effects, ids, act_scale)
        exports = _Exports(run, ids)
        with _no_cyclic_gc():
            n_examples = _records_per_pass(run, stats, ctx, act_scale, exports, effects)
        timings["exports"] = time.perf_counter() - t2
        timings.update(effects.finish())
    except BaseException:
        effects.cancel()  # what it finished is cached; the thread must end before the process does
        raise
    timings.update({f"exports_cpu_{part}": v for part, v in exports.cpu.items()})
    _finish_exports(run, exports, stats, _run_settings(run, stats, subject, effects, ids))
    _publish(run, exports)
    timings["total"] = time.perf_counter() - t0
    result = _log_result(run, exports, n_examples, timings)
    run.dist.barrier()  # releases the other ranks, which wait for the exports
    return result


@contextlib.contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    """Python's cyclic garbage collector paused (as it was before, after), for the statistics and the records. The
    records of a pass are millions of small acyclic objects (dicts, lists, JSON fragments), freed by reference
    counting; while they live, every full collection walks all of them again. At 16,384 latents that was ≈ 3 of
    the ≈ 10 CPU s of the records and the site."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@dataclass(frozen=True)
class _Run:
    """What every stage of one `build_dashboards` run reads: the options, the checked store, the output
    folder, the latents to export, the autointerp results to show and the distributed context."""

    cfg: DashboardConfig
    store: CodeStore
    out: Path
    latents: list[int]
    """Sorted, distinct, in range."""
    autointerp: dict[int, dict[str, Any]]
    dist: Any
    """A :class:`tempolens.distributed.Dist`."""

    @property
    def pred(self) -> bool:
        """Whether the dashboards show the predicted codes (``--codes pred``)."""
        return self.cfg.codes == "pred"

    @property
    def suffix(self) -> str:
        """Suffix of the cached statistics, Neuronpedia folder and log of this run's codes."""
        return "-pred" if self.pred else ""

    @property
    def direction_sign(self) -> float:
        """−1 when the dashboards show predicted codes of a store whose ``p`` is mostly negative
        (:attr:`CodeStore.pred_sign`): each latent's predicted contribution then points along ``−D_i``, so its
        logit effects, neuron alignment and exported vector are those of ``−D_i``; else +1."""
        return self.store.pred_sign if self.pred else 1.0


def _open_run(cfg: DashboardConfig) -> _Run:
    """Open and check the store (complete; predicted codes kept when they are shown), prepare the output
    folder (stale temporaries and ``SHA256SUMS`` removed), load the autointerp results and check the latents."""
    from tempolens import distributed
    from tempolens.dashboards.site import load_autointerp

    store = CodeStore(cfg.store)
    if not store.complete:
        raise StoreError(
            f"{store.root} is incomplete ({len(store.done_shards())}/{store.n_shards} shards); rerun `tempolens "
            "collect` with the same arguments to finish it"
        )
    W = store.width
    out = ensure_out_dir(cfg.out)
    if cfg.codes == "pred":
        from tempolens.stats.features import check_pred_codes

        check_pred_codes(store)
    remove_stale_temporaries(out)  # left by a run killed between writing a file and renaming it
    (out / "SHA256SUMS").unlink(missing_ok=True)  # written again last, when the exports are complete
    autointerp = load_autointerp(cfg.autointerp) if cfg.autointerp is not None else {}
    latents = list(cfg.latents) if cfg.latents else list(range(W))
    bad = [x for x in latents if x >= W]
    if bad:
        raise ConfigError(f"--latents {bad[:5]} are out of range: the SAE has {W} latents (0..{W - 1})")
    return _Run(
        cfg=cfg, store=store, out=out, latents=sorted(set(latents)), autointerp=autointerp, dist=distributed.current()
    )


def _statistics(run: _Run) -> FeatureStats:
    """The statistics of every latent, from ``stats.safetensors`` when it was computed from the
    same store and settings (unless ``--recompute``), else computed (every rank together) and cached."""
    from tempolens.stats.features import FeatureStats, compute_feature_stats

    cfg, store, dist = run.cfg, run.store, run.dist
    stats_path = run.out / f"stats{run.suffix}.safetensors"
    stats_key = _fingerprint(
        (store.root / "meta.json").read_text(),
        [json.loads(p.read_text()).get("sha256") for p in sorted(store.shard_dir.glob("shard-*.json"))],
        cfg.n_top,
        cfg.n_bins,
        cfg.n_intervals,
        cfg.n_per_interval,
        cfg.n_correlated,
        cfg.seed,
        cfg.codes,
    )
    cached = _cached(stats_path, stats_key, cfg.recompute)
    if dist.active:  # every rank must agree on whether the statistics are recomputed together
        cached = all(dist.gather_all(cached))
    if cached:
        return FeatureStats.load(stats_path)
    stats = compute_feature_stats(
        store,
        n_top=cfg.n_top,
        n_bins=cfg.n_bins,
        n_intervals=cfg.n_intervals,
        n_per_interval=cfg.n_per_interval,
        n_correlated=cfg.n_correlated,
        seed=cfg.seed,
        corr_memory_mb=cfg.corr_memory_mb,
        progress=cfg.progress and dist.is_main,
        dist=dist,
        codes=cfg.codes,
    )
    if dist.is_main:
        stats.save(stats_path)
        atomic_write_bytes(stats_path.with_suffix(".key"), (stats_key + "\n").encode())
    return stats


@dataclass(frozen=True)
class _Subject:
    """The subject model (tokenizer and unembedding) and SAE decoder the exports describe."""

    model: Any
    """A ``SubjectModel`` or anything with ``token_strings(ids)`` and ``unembed()``."""
    W_dec: torch.Tensor
    """``[width, d]`` float32 decoder directions on the CPU."""
    model_spec: str | None
    sae_spec: str | None
    layer: int


def _load_subject(run: _Run, model: Any, W_dec: torch.Tensor | None) -> _Subject:
    """The model and the SAE decoder (each loaded from the store's ``meta.json`` spec or --model/--sae
    unless passed in); the decoder must have the store's width."""
    cfg, store, meta = run.cfg, run.store, run.store.meta
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
        sae = load_sae_for_model(
            sae_spec,
            model,
            cpu,
            strict_config=cfg.sae_strict,
            activation_sample=lambda: prompt_activation_sample(model, store.all_tokens(), cpu, 8),
        )
        W_dec = sae.W_dec.detach().float().cpu()
    W_dec = W_dec.detach().float().cpu()
    if W_dec.shape[0] != store.width:
        raise SourceError(
            f"the SAE has {W_dec.shape[0]} latents but the store {store.root} has {store.width}; "
            "pass the --sae the store was collected with"
        )
    return _Subject(model=model, W_dec=W_dec, model_spec=model_spec, sae_spec=sae_spec, layer=layer)


@dataclass
class _Effects:
    """The logit effects of every latent and what they were computed from."""

    logits: LogitEffects
    """Complete, or being filled in row order by ``pending`` (read rows only after :meth:`ready`)."""
    row_norm: torch.Tensor
    """``[width]`` decoder row norms (model units)."""
    folded: bool
    """Whether the final norm's multiplier was folded into the directions."""
    norm_kind: Any
    """The model's final norm, as ``unembed()`` names it."""
    precision: str
    """Matmul precision of the logit effects (``fp32`` or ``bf16``)."""
    pending: LogitEffectsJob | None = None
    """The background computation still filling ``logits`` (``None`` when read from the cache)."""
    waited: list[float] = field(default_factory=list)
    """Seconds the records waited for rows of ``logits``."""
    seconds: float = 0.0
    """Wall time of the computation (0 when read from the cache)."""

    def ready(self, n_rows: int) -> None:
        """Wait until rows ``0 … n_rows − 1`` of ``logits`` are computed (raises the computation's error)."""
        if self.pending is not None:
            t0 = time.perf_counter()
            self.pending.wait(n_rows)
            self.waited.append(time.perf_counter() - t0)

    def cancel(self) -> None:
        """Stop a computation still running (on an error in the stages it overlaps)."""
        if self.pending is not None:
            self.pending.cancel()

    def finish(self) -> dict[str, float]:
        """Wait for the whole computation (cached by its thread); the timings: the computation's wall time (in the
        background) and how long the records waited for it."""
        if self.pending is not None:
            t0 = time.perf_counter()
            self.pending.result()
            self.waited.append(time.perf_counter() - t0)
            self.seconds, self.pending = self.pending.seconds, None
        return {"logit_effects": self.seconds, "logit_effects_wait": sum(self.waited)}


def _logit_effects(run: _Run, subject: _Subject) -> _Effects:
    """The logit effects of every unit decoder direction, from ``logits.safetensors`` when it was
    computed from the same model, SAE and settings (unless ``--recompute``), else computed and cached."""
    from tempolens.stats.logits import LogitEffectsJob

    cfg, W_dec = run.cfg, subject.W_dec
    W_U, mult, norm_kind = subject.model.unembed()
    if W_U.shape[1] != W_dec.shape[1]:
        raise SourceError(
            f"the SAE's decoder has d={W_dec.shape[1]} but the model's unembedding has d={W_U.shape[1]}; pass the "
            "--model the store was collected with"
        )
    use_mult = mult if (cfg.fold_norm and mult is not None) else None
    row_norm = decoder_row_norms(W_dec)
    device = resolve_device(cfg.device)
    precision = logit_precision(cfg.logit_precision, device)
    logits_path = run.out / "logits.safetensors"
    logits_key = _fingerprint(
        subject.model_spec,
        subject.sae_spec,
        bool(use_mult is not None),
        cfg.n_logits,
        _tensor_summary(W_dec),
        _tensor_summary(W_U),
        LOGIT_DIRECTION,
        precision,
    )
    common = dict(row_norm=row_norm, folded=use_mult is not None, norm_kind=norm_kind, precision=precision)
    if _cached(logits_path, logits_key, cfg.recompute):
        effects = _Effects(logits=_read_logits(logits_path, folded=use_mult is not None), **common)
    else:
        directions = unit_directions(W_dec, row_norm)
        try:
            job = LogitEffectsJob(
                directions,
                W_U,
                use_mult,
                on_complete=lambda done: _write_logits(logits_path, done, logits_key),  # cached as soon as computed
                k=cfg.n_logits,
                device=device,
                precision=precision,
                progress=cfg.progress,
            )
        except ValueError as e:  # NaN or infinite weights (the store is kept: rerun with finite ones)
            raise SourceError(f"SAE {subject.sae_spec}, model {subject.model_spec}: {e}") from None
        effects = _Effects(logits=job.effects, pending=job, **common)
    if run.direction_sign < 0:  # computed and cached for D (shared with the novel codes), read for −D
        effects.finish()
        effects.logits = effects.logits.negated()
    return effects


_LOGIT_TENSORS = ("top_ids", "top_values", "bottom_ids", "bottom_values", "hist_counts", "hist_centres")


def _read_logits(path: Path, folded: bool) -> LogitEffects:
    """The cached logit effects of ``logits.safetensors``."""
    from safetensors.torch import load_file

    from tempolens.stats.logits import LogitEffects

    t = load_file(str(path))
    return LogitEffects(**{k: t[k] for k in _LOGIT_TENSORS}, folded_norm=folded)


def _write_logits(path: Path, logits: LogitEffects, key: str) -> None:
    """Cache the logit effects as ``logits.safetensors`` and its key."""
    from safetensors.torch import save

    atomic_write_bytes(path, save({k: getattr(logits, k).contiguous() for k in _LOGIT_TENSORS}))
    atomic_write_bytes(path.with_suffix(".key"), (key + "\n").encode())


def _export_ids(run: _Run, subject: _Subject) -> npx.ExportIds:
    """The names of the export on Neuronpedia (options first, else from the store's ``meta.json``)."""
    from tempolens.dashboards import neuronpedia as npx

    cfg, store, meta = run.cfg, run.store, run.store.meta
    arch = str(meta.get("sae", {}).get("architecture", "sae"))
    hook = str(meta.get("model", {}).get("hook_name", ""))
    set_arch = arch + run.suffix  # e.g. temporal-pred: predicted-code dashboards are a source of their own
    sae_set = cfg.sae_set or _slug(f"{set_arch}-res" if "resid" in hook or not hook else set_arch)
    W = store.width
    return npx.ExportIds(
        model_id=cfg.model_id or _slug(str(meta.get("model", {}).get("model_id") or subject.model_spec or "model")),
        layer=subject.layer,
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
        d_model=int(subject.W_dec.shape[1]),
        n_layers=int(getattr(subject.model, "n_layers", 0) or 0),
        width=W,
        description=(
            f"{arch} SAE{' predicted codes z_pred' if run.pred else ''}, {W} latents, {hook}; "
            f"prompts of {store.prompt_len} tokens; activations: {ACT_UNITS[cfg.act_units]}; "
            f"logit effects: {LOGIT_DIRECTION}"
        ),
        source=cfg.source_id,
    )


def _record_context(
    run: _Run, stats: FeatureStats, subject: _Subject, effects: _Effects, ids: npx.ExportIds, act_scale: torch.Tensor
) -> RecordContext:
    """What every feature record of the run shares; statistics in the units of --act-units (``act_scale``)."""
    from tempolens.dashboards.records import RecordContext
    from tempolens.stats.features import neuron_alignment

    return RecordContext(
        stats=stats.scaled(act_scale),
        token_strings=subject.model.token_strings,
        logits=effects.logits,
        alignment=neuron_alignment(subject.W_dec * run.direction_sign, 3),
        dataset=ids.dataset,
        n_prompts_total=run.store.n_prompts,
        vectors=subject.W_dec * run.direction_sign if run.cfg.include_vector else None,
        autointerp=run.autointerp,
        decoder_norm=effects.row_norm,
        act_units=run.cfg.act_units,
        dense=run.cfg.batches or run.cfg.bulk,
    )


class _Exports:
    """The export trees of one run, built in ``.partial`` folders (published by :func:`_publish`): batch
    files and the bulk import (``neuronpedia/``) and the site (``site/``).

    Records are added in latent order (:meth:`add`); each full batch file and site chunk is encoded,
    compressed and written by a background thread (:attr:`writes`), overlapping the next records' assembly."""

    def __init__(self, run: _Run, ids: npx.ExportIds) -> None:
        from tempolens.dashboards import neuronpedia as npx
        from tempolens.dashboards.site import SiteWriter
        from tempolens.fsutil import BackgroundWriter, fresh_tmp_dir

        cfg = self.cfg = run.cfg
        self.ids = ids
        self.np_final = run.out / f"neuronpedia{run.suffix}"
        self.site_final = run.out / "site" / "pred" if run.pred else run.out / "site"
        self.np_dir = fresh_tmp_dir(self.np_final) if (cfg.batches or cfg.bulk) else self.np_final
        self.site_dir = fresh_tmp_dir(self.site_final) if cfg.site else self.site_final
        self.batch_dir, self.bulk_root = self.np_dir / "batches", self.np_dir / "bulk"
        if cfg.batches:
            self.batch_dir.mkdir(parents=True, exist_ok=True)
        bulk_explanations = cfg.bulk and cfg.autointerp is not None
        self.explanations = npx.load_autointerp_export(cfg.autointerp) if bulk_explanations else None
        if cfg.bulk:
            npx.write_bulk_headers(self.bulk_root, ids)
        self.site = (
            SiteWriter(self.site_dir, cfg.chunk_size, run.store.n_prompts, run.store.prompt_len) if cfg.site else None
        )
        self.site_meta: dict[str, Any] = {}
        """Meta fields of the site's prompt tables (:meth:`SiteWriter.write_prompts`)."""
        if self.site is not None and cfg.autointerp is not None:
            _write_autointerp_report(self.site, cfg.autointerp.parent / "report.json")
        self.batch_paths: list[Path] = []
        """Final path of every batch file (``Path()`` placeholders without --batches)."""
        self.index_rows: list[list[Any]] = []
        self._batch: list[dict[str, Any]] = []
        self._chunk: dict[int, dict[str, Any]] = {}
        self._chunk_id: int | None = None
        self.writes = BackgroundWriter(max_pending=4)
        # CPU seconds per part of the exports (thread time: the writer thread's jobs, the records in this thread)
        self.cpu: dict[str, float] = {"records": 0.0, "batches": 0.0, "bulk": 0.0, "site": 0.0}

    def _timed(self, part: str, job: Callable[[], object]) -> Callable[[], None]:
        """``job`` counting its thread time into :attr:`cpu` ``[part]``."""

        def run() -> None:
            c0 = time.thread_time()
            job()
            self.cpu[part] += time.thread_time() - c0

        return run

    def add(self, rec: dict[str, Any]) -> None:
        """Add the next latent's record: its index row, its place in a batch file and in a site chunk."""
        from tempolens.dashboards.records import index_row

        i = rec["feature_index"]
        self.index_rows.append(index_row(rec))
        self._batch.append(rec)
        if len(self._batch) >= self.cfg.features_per_batch:
            self.flush_batch()
        if self.site is not None:
            c = self.site.chunk_of(i)
            if self._chunk_id is not None and c != self._chunk_id:
                self.flush_chunk()
            self._chunk_id = c
            self._chunk[i] = rec

    def add_windows(self, windows: Windows) -> None:
        """Keep the prompt positions the site's examples show (their token ids and predicted shares)."""
        if self.site is not None:
            c0 = time.thread_time()
            self.site.add_windows(windows.prompt, windows.start, windows.tokens, windows.pred_share)
            self.cpu["site"] += time.thread_time() - c0

    def write_prompts(self, ctx: RecordContext) -> None:
        """Write the site's shared prompt tables and token strings, once every example was added."""
        if self.site is not None:
            c0 = time.thread_time()
            table = ctx.token_table()
            self.site_meta = self.site.write_prompts(lambda ids: table.strings[ids].tolist())
            self.cpu["site"] += time.thread_time() - c0

    def flush_batch(self) -> None:
        """Queue the pending records as batch file ``k`` and bulk-import batch ``k`` (with explanations)."""
        from tempolens.dashboards import neuronpedia as npx

        if not self._batch:
            return
        k, recs, ids = len(self.batch_paths), self._batch, self.ids
        if self.cfg.batches:
            self.batch_paths.append(self.np_final / "batches" / f"batch-{k}.json")
            self.writes.submit(self._timed("batches", lambda: npx.write_batch(self.batch_dir, k, recs, ids)))
        else:
            self.batch_paths.append(Path())
        if self.cfg.bulk:
            self.writes.submit(self._timed("bulk", lambda: npx.write_bulk_batch(self.bulk_root, k, recs, ids)))
            explanations = self.explanations
            if explanations is not None:
                idx = [r["feature_index"] for r in recs]
                self.writes.submit(
                    self._timed("bulk", lambda: npx.write_bulk_explanations(self.bulk_root, k, idx, explanations, ids))
                )
        self._batch = []

    def flush_chunk(self) -> None:
        """Queue the pending records as their site chunk."""
        site = self.site
        if site is not None and self._chunk and self._chunk_id is not None:
            c, recs = self._chunk_id, self._chunk
            self.writes.submit(self._timed("site", lambda: site.write_chunk(c, recs)))
        self._chunk = {}


def _write_autointerp_report(site: SiteWriter, report_json: Path) -> None:
    """Show the autointerp report (``report.json`` beside ``latents-<label>.json``) on the site when there is one."""
    if report_json.is_file():
        try:
            site.write_autointerp(json.loads(report_json.read_text()))
        except json.JSONDecodeError as e:
            msg = f"{report_json} is not valid JSON ({e}); rerun `tempolens autointerp` to rebuild it"
            raise ConfigError(msg) from e


def _records_per_pass(
    run: _Run, stats: FeatureStats, ctx: RecordContext, act_scale: torch.Tensor, exports: _Exports, effects: _Effects
) -> int:
    """Per group of --latents-per-pass latents, the shown examples' windows (one read of the
    store), their records (once the group's logit effects are computed), added to ``exports``; waits for every
    queued write. Returns the number of examples."""
    from tempolens.dashboards.records import feature_records
    from tempolens.stats.examples import example_windows

    cfg, latents = run.cfg, run.latents
    n_examples = 0
    per = cfg.latents_per_pass or latents_per_pass(stats, latents, min(cfg.window, run.store.prompt_len))
    groups = [latents[i : i + per] for i in range(0, len(latents), per)]
    with exports.writes:  # waits for the queued writes; the first failed write is raised here
        for group in tqdm(groups, desc="dashboards", unit="pass", disable=not cfg.progress or len(groups) < 2):
            c0 = time.thread_time()
            windows = example_windows(
                run.store,
                stats,
                group,
                window=cfg.window,
                after=cfg.window_after,
                progress=cfg.progress,
                codes=cfg.codes,
            ).scaled(act_scale)
            # all but the logit columns are built while the group's logit effects may still be computed
            wait = functools.partial(effects.ready, max(group) + 1)
            records = feature_records(ctx, group, windows, before_logits=wait)
            exports.cpu["records"] += time.thread_time() - c0
            n_examples += int(windows.latent.numel())
            exports.add_windows(windows)
            for rec in records:
                exports.add(rec)
            del records, windows
        exports.flush_batch()
        exports.flush_chunk()
    exports.write_prompts(ctx)
    return n_examples


PASS_BYTES = 512 * 2**20
"""What the automatic ``--latents-per-pass`` lets one pass's example windows and records hold."""
BYTES_PER_WINDOW_TOKEN = 56
"""Memory of a pass per example token (windows, records and their encoded rows; measured ≈ 52 at 16,384 latents)."""


def latents_per_pass(stats: FeatureStats, latents: list[int], length: int) -> int:
    """How many latents keep a pass near :data:`PASS_BYTES`: their mean number of examples (top and interval
    samples) × ``length`` tokens × :data:`BYTES_PER_WINDOW_TOKEN`; at least 64."""
    if not latents:
        return 1
    idx = torch.as_tensor(latents, dtype=torch.int64)
    n = int((stats.top_gpos[idx] >= 0).sum()) + int((stats.int_gpos[idx] >= 0).sum())
    per_latent = max(1.0, n / len(latents)) * length * BYTES_PER_WINDOW_TOKEN
    return max(64, int(PASS_BYTES // per_latent))


def _run_settings(
    run: _Run, stats: FeatureStats, subject: _Subject, effects: _Effects, ids: npx.ExportIds
) -> dict[str, Any]:
    """The settings of the exports (``run_settings.json`` and the site's meta)."""
    from tempolens.dashboards import neuronpedia as npx

    cfg, store = run.cfg, run.store
    return {
        "store": str(store.root),
        "model": subject.model_spec,
        "sae": subject.sae_spec,
        "ids": npx.ids_dict(ids),
        "fold_norm": effects.folded,
        "final_norm": effects.norm_kind,
        "logit_effects": ("W_U·(final-norm multiplier ⊙ u), " if effects.folded else "W_U·u (final norm not folded), ")
        + f"u = {LOGIT_DIRECTION}"
        + (
            "; top/bottom exact (float32), histogram counted from bfloat16 matmul logits"
            if effects.precision == "bf16"
            else "; float32"
        ),
        "codes": cfg.codes,
        "pred_codes": store.meta.get("pred_codes"),
        "pred_sign": run.direction_sign if run.pred else None,
        "act_units": cfg.act_units,
        "activations": (
            f"predicted code {'-' if run.direction_sign < 0 else ''}z_pred (> 0 ranked and counted; negatives shown "
            "in windows); "
            if run.pred
            else ""
        )
        + ACT_UNITS[cfg.act_units]
        + ("; the raw code is value / tempolens.decoder_norm" if cfg.act_units == "norm" else ""),
        "n_top": cfg.n_top,
        "n_intervals": cfg.n_intervals,
        "n_per_interval": cfg.n_per_interval,
        "n_bins": cfg.n_bins,
        "n_correlated": cfg.n_correlated,
        "n_logits": cfg.n_logits,
        "seed": cfg.seed,
        "window": min(cfg.window, store.prompt_len),
        "window_after": cfg.window_after if store.prompt_len > cfg.window else None,
        "prompt_len": store.prompt_len,
        "n_prompts": store.n_prompts,
        "n_tokens": stats.n_tokens,
        "excluded_from_statistics": "BOS/EOS/pad positions (shown as context with value 0)",
        "intervals": "equal-width over (0, max], nonzero activations only; bin_contains = share of active tokens",
        "correlated_features": "Pearson over all counted tokens and all latents; "
        "correlated_features_l1 = cosine similarity",
        "correlated_neurons": "not computed (the code store keeps no LM activations)",
        "features_per_batch": cfg.features_per_batch,
        "tempolens_version": _version(),
    }


def _finish_exports(run: _Run, exports: _Exports, stats: FeatureStats, settings: dict[str, Any]) -> None:
    """Write what follows the records: ``run_settings.json``, the site's assets, index and meta (and carry
    over the parts of the old site that other commands wrote)."""
    from tempolens.dashboards import neuronpedia as npx

    cfg, ids, site = run.cfg, exports.ids, exports.site
    if cfg.batches:
        npx.write_run_settings(exports.batch_dir, settings)
    if site is None:
        return
    site.copy_assets()
    site.write_index(exports.index_rows)
    site.write_meta(
        {
            "title": cfg.title or f"{ids.model_id} · {ids.source_id}" + (" · predicted codes" if run.pred else ""),
            "codes": cfg.codes,
            "pred_sign": run.direction_sign if run.pred else None,
            "model_id": ids.model_id,
            "hook_name": ids.hook_name,
            "layer": ids.layer,
            "source_id": ids.source_id,
            "sae": {
                **{
                    k: v
                    for k, v in dict(run.store.meta.get("sae", {})).items()
                    if isinstance(v, (str, int, float, bool)) or v is None
                },
                "width": run.store.width,
            },
            "is_temporal": bool(stats.is_temporal),
            "act_units": cfg.act_units,
            "act_units_label": ACT_UNITS[cfg.act_units],
            "dataset": ids.dataset,
            "n_prompts": run.store.n_prompts,
            "prompt_len": run.store.prompt_len,
            "n_tokens": stats.n_tokens,
            "chunk_size": cfg.chunk_size,
            "window_len": min(cfg.window, run.store.prompt_len),
            **exports.site_meta,
            "n_latents": len(run.latents),
            "created": ids.created_at,
            "tempolens_version": _version(),
            "settings": settings,
        }
    )
    if not run.pred:
        _carry_over_foreign(exports.site_final, exports.site_dir)


def _publish(run: _Run, exports: _Exports) -> None:
    """Replace the previous export trees by the new ones (a rename each), link the novel and predicted-code
    sites, and write ``SHA256SUMS`` last."""
    from tempolens.fsutil import publish_dir

    if run.cfg.batches or run.cfg.bulk:
        publish_dir(exports.np_dir, exports.np_final)
    if exports.site is not None:
        publish_dir(exports.site_dir, exports.site_final)
        _link_views(run.out / "site")
    write_sha256sums(run.out, ("neuronpedia", "neuronpedia-pred", "site"))  # last: `sha256sum -c` verifies the exports


def _log_result(run: _Run, exports: _Exports, n_examples: int, timings: dict[str, float]) -> DashboardResult:
    """Write ``dashboards_log.json`` (the timings) and return (and with --progress print) what was written."""
    from tempolens.dashboards import neuronpedia as npx
    from tempolens.fsutil import atomic_write_json

    cfg, n_latents = run.cfg, len(run.latents)
    # beside the exports, outside what SHA256SUMS covers: seconds per stage (differ run to run)
    sizes = _export_bytes(run, exports)
    atomic_write_json(
        run.out / f"dashboards_log{run.suffix}.json",
        {
            "timings": timings,
            "n_latents": n_latents,
            "n_examples": n_examples,
            "store": str(run.store.root),
            "bytes": sizes,
            "bytes_per_latent": {k: round(v / max(n_latents, 1), 1) for k, v in sizes.items()},
        },
    )
    result = DashboardResult(
        out=run.out,
        site=exports.site_final if exports.site is not None else None,
        batches=exports.batch_paths if cfg.batches else [],
        bulk=npx.bulk_dir(exports.np_final / "bulk", exports.ids) if cfg.bulk else None,
        n_latents=n_latents,
        n_examples=n_examples,
        timings=timings,
    )
    if cfg.progress:
        print(result)
    return result


def _export_bytes(run: _Run, exports: _Exports) -> dict[str, int]:
    """Bytes each written format takes: ``site_data`` (the site's ``data/`` folder this run wrote: feature
    chunks, prompt tables, token strings, index, meta), ``batches`` (batch files and ``run_settings.json``),
    ``bulk`` (the bulk-import tree, gzipped); a format not written is left out."""

    def size(root: Path, skip: tuple[str, ...] = ()) -> int:
        return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and p.name not in skip)

    out: dict[str, int] = {}
    if exports.site is not None:
        out["site_data"] = size(exports.site_final / "data", skip=("kernels.js", "views.js", "autointerp.js"))
    if run.cfg.batches:
        out["batches"] = size(exports.np_final / "batches")
    if run.cfg.bulk:
        out["bulk"] = size(exports.np_final / "bulk")
    return out


FOREIGN_SITE_PATHS = ("kernels", "data/kernels.js", "pred")
"""Parts of a site that other commands write (`tempolens kernel`, `run`, `dashboards --codes pred`): kept when
dashboards rebuild the site."""


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
