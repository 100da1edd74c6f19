"""`tempolens run`: the main job — collect → dashboards (→ kernels) — in one command.

With no arguments it runs on the embedded default (Gemma 3 270M, the shipped Temporal SAE, the
embedded English corpus) and prints where to open the site. Every stage is resumable: rerun the
same command after a kill and finished work is reused.

Python API::

    from tempolens.pipeline import RunConfig, run
    result = run(RunConfig(out="runs/demo"))
    print(result.site_index)
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from tempolens.collect import CollectConfig, CollectResult, collect
from tempolens.dashboards.pipeline import DashboardConfig, DashboardResult, build_dashboards
from tempolens.errors import TempolensError


@dataclass
class RunConfig:
    """Options of `tempolens run`: its own, plus every collect and dashboards option."""

    NESTED_DERIVED = {"collect": ["out"], "dashboards": ["store", "out"]}

    out: Path = Path("runs/embedded")
    """Run folder: `store/` (sparse codes), `dashboards/site/index.html` (open this), `dashboards/neuronpedia/`
    (exports)."""
    kernels: bool = True
    """Also draw the similarity kernels of the built-in demo texts into the site (Temporal SAEs only)."""
    pred_dashboards: bool = True
    """Also build the dashboards of the predicted codes (`dashboards/site/pred/`, linked from every latent
    page) when the store keeps them (Temporal SAEs, `--collect.pred-k` > 0)."""
    collect: CollectConfig = field(default_factory=CollectConfig)
    dashboards: DashboardConfig = field(default_factory=DashboardConfig)

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        self.collect.out = self.out / "store"
        self.dashboards.store = self.collect.out
        self.dashboards.out = self.out / "dashboards"


@dataclass
class RunResult:
    """Where everything went, and how long each stage took."""

    out: Path
    site_index: Path | None
    collect: CollectResult
    dashboards: DashboardResult
    kernels: Path | None
    seconds: dict[str, float]


def run(cfg: RunConfig) -> RunResult:
    """Run collect → dashboards (→ kernels) and print where to open the result."""
    t0 = time.perf_counter()
    c = collect(cfg.collect)
    t1 = time.perf_counter()
    same_sources = cfg.dashboards.model in (None, cfg.collect.model) and cfg.dashboards.sae in (None, cfg.collect.sae)
    preloaded = {"model": c.model, "W_dec": c.sae.W_dec.detach().float().cpu()} if same_sources else {}
    # same_sources: reuse the loaded model (tokenizer, unembedding) and the SAE's decoder: no second load
    d = build_dashboards(cfg.dashboards, **preloaded)
    has_pred = bool(json.loads((cfg.collect.out / "meta.json").read_text()).get("pred_codes"))
    if cfg.pred_dashboards and has_pred and cfg.dashboards.codes == "novel" and d.site is not None:
        build_dashboards(dataclasses.replace(cfg.dashboards, codes="pred"), **preloaded)
    t2 = time.perf_counter()
    kernels_dir = None
    if cfg.kernels and d.site is not None and c is not None:
        kernels_dir = _kernels(cfg, d.site, c)
    t3 = time.perf_counter()
    site_index = d.site / "index.html" if d.site else None
    seconds = {"collect": t1 - t0, "dashboards": t2 - t1, "kernels": t3 - t2, "total": t3 - t0}
    print()
    print(
        f"tempolens run finished in {seconds['total']:.0f} s (collect {seconds['collect']:.0f} s, dashboards "
        f"{seconds['dashboards']:.0f} s, kernels {seconds['kernels']:.0f} s)"
    )
    if site_index:
        print(f"  dashboards: open file://{site_index.resolve()}")
    if d.batches:
        print(f"  Neuronpedia batch files: {d.batches[0].parent}")
    if d.bulk:
        print(f"  Neuronpedia bulk import: {d.bulk}")
    if kernels_dir:
        print(f"  kernels: {kernels_dir}")
    return RunResult(out=cfg.out, site_index=site_index, collect=c, dashboards=d, kernels=kernels_dir, seconds=seconds)


def _kernels(cfg: RunConfig, site: Path, c: CollectResult) -> Path | None:
    """Kernels of the demo texts with the run's model and SAE (the very objects collect used),
    written into the site; skipped for standard SAEs (no predicted codes) with a note."""
    from tempolens.temporal.command import KernelConfig, run_kernel

    meta = json.loads((cfg.collect.out / "meta.json").read_text())
    if meta["sae"].get("architecture") != "temporal":
        print("kernels skipped: the SAE is not a Temporal SAE (no predicted codes)")
        return None
    contrast = "embedded:topk" if cfg.collect.sae.startswith("embedded") else "none"
    try:
        kcfg = KernelConfig(
            model=cfg.collect.model,
            layer=cfg.collect.layer,
            sae=cfg.collect.sae,
            contrast_sae=contrast,
            device=cfg.collect.device,
            dtype=cfg.collect.dtype,
            out=site,
            sae_strict=cfg.collect.sae_strict,
        )
        contrast_sae = None
        if contrast != "none":
            from tempolens.saes.fit import load_sae_for_model

            contrast_sae = load_sae_for_model(contrast, c.model, c.sae.device, strict_config=cfg.collect.sae_strict)
        run_kernel(kcfg, sources=(c.model, c.sae, contrast_sae))
    except TempolensError as e:
        print(f"kernels skipped: {e}")
        return None
    return site / "kernels"
