#!/usr/bin/env python
"""Performance benchmark: tempolens vs the LM floor vs SAEDashboard's Neuronpedia runner.

One invocation runs, on the same subject model (the embedded Gemma 3 270M), the same hook
(``blocks.9.hook_resid_post``), the same SAEs and the same prompts (token ids):

1. the floor: ``SubjectModel.hidden_at`` — the forward stopped after the hook block — over the prompts;
2. ``tempolens collect`` + ``tempolens dashboards`` (the installed CLI, one process each);
3. SAEDashboard's Neuronpedia runner (``sae-dashboard`` 0.8.0 in its own venv, made to run offline:
   see ``saedash_offline.py``), top-20 examples and 5 intervals × 5, 128 tokens per prompt;

each in its own child process, measuring wall time, CPU time, peak RSS and output size, at two SAE
widths (a 2,560-latent TopK SAE — the embedded TopK twin when shipped, else random-init with the
decoder bias at the mean activation — and a 16,384-latent random TopK SAE), plus tempolens alone on
the embedded Temporal SAE and at several prompt counts. It then checks that the two tools agree
(density, max activation, top-20 examples) and writes ``<out>/bench-<stamp>.json`` and ``.md``.

    python benchmarks/bench_dashboards.py --quick          # smoke run, ~2 minutes on an idle 2-core CPU
    python benchmarks/bench_dashboards.py                  # the full benchmark (tens of minutes on CPU)
    python benchmarks/bench_dashboards.py --help           # every option

On a GPU: ``benchmarks/gpu_bench.sh`` (bf16, larger batches; SAEDashboard skipped unless its venv exists).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import saedash_offline as sdo  # noqa: E402
from compare import agreement_report, summarize_agreement  # noqa: E402
from measure import Measurement, dir_bytes, median, run_measured  # noqa: E402

from tempolens.options import check  # noqa: E402


@dataclass
class BenchConfig:
    """Options of the dashboard benchmark."""

    out: Path = HERE / "results"
    """Folder for the results (`bench-<stamp>.json` and `.md`)."""
    workdir: Path = HERE / "runs"
    """Scratch folder for stores, dashboards, SAEDashboard outputs and logs (replaced per run)."""
    prompts: int = 256
    """Prompts of the side-by-side comparison (floor, tempolens, SAEDashboard at every width)."""
    scaling_prompts: tuple[int, ...] = (64, 256, 1024)
    """Prompt counts for tempolens's growth in time and memory (2,560-latent SAE); empty to skip."""
    widths: tuple[int, ...] = (2560, 16384)
    """TopK SAE widths compared side by side (the first one uses the embedded TopK twin when shipped)."""
    k: int = 32
    """Latents kept per token by the TopK SAEs."""
    topk_sae: str = "auto"
    """The first width's SAE: `auto` (the embedded TopK twin if shipped and of that width, else random-init), `random`,
    or a SAELens folder."""
    temporal_sae: str = "embedded:temporal"
    """Temporal SAE for the tempolens-only run (empty to skip); falls back to `random:temporal?width=2560&k=32` if the
    embedded one is not shipped."""
    saedash_max_features: int = 2560
    """Run SAEDashboard on every latent of SAEs up to this width; wider SAEs run `--saedash-sample-batches` batches of
    128 and the full run is extrapolated from the measured per-batch time (the report says so). 0 = always all."""
    saedash_sample_batches: int = 4
    """Batches of 128 latents SAEDashboard runs on SAEs wider than `--saedash-max-features` (at least 2, to measure the
    per-batch time)."""
    floor: bool = True
    """Measure the floor (turn off only to add configurations to an earlier run's floor; ratios then come from that
    run)."""
    tempolens_run: bool = True
    """Also measure `tempolens run --no-kernels` (collect → dashboards in one process, one model load) at every width,
    and use it for the growth with prompts."""
    skip_saedash: bool = False
    """Do not run SAEDashboard (e.g. where its venv does not exist)."""
    saedash_python: Path = Path("/work/saedash-venv/bin/python")
    """Python of the venv with sae-dashboard 0.8.0 (torch 2.13 CPU, no torchvision/torchaudio, pyarrow<26)."""
    repeats: int = 1
    """Measure every configuration this many times (medians are reported)."""
    two_command: bool = True
    """Also measure the two-command path (`tempolens collect` + `tempolens dashboards`, one model load each); off
    measures `tempolens run` alone, e.g. at 65,536 latents where each pass takes minutes."""
    neuronpedia: bool = False
    """Have tempolens also write the Neuronpedia formats (`--batches --bulk`, off in tempolens by default), as
    SAEDashboard's runner does; the default measures what `tempolens run` writes by default (the site)."""
    temporal_only_run: bool = False
    """Measure the Temporal SAE with `tempolens run` only (skip the two-command collect + dashboards run of it)."""
    quick: bool = False
    """Smoke run: 16 prompts, one 256-latent SAE, no scaling or Temporal run (about two minutes on an idle 2-core
    CPU)."""
    model: str = "embedded"
    """Subject model (`tempolens collect --model`)."""
    layer: int = 9
    """Hook block (`blocks.L.hook_resid_post`)."""
    corpus: str = "embedded"
    """Corpus the prompts are built from (`tempolens collect --corpus`)."""
    prompt_len: int = 128
    """Tokens per prompt including BOS (SAEDashboard's n_tokens_in_prompt)."""
    batch_size: int = 8
    """Prompts per LM forward, for all three tools."""
    seed: int = 0
    """Prompt shuffle seed (and random-init SAE seed)."""
    device: str = "cpu"
    """Device for the floor and tempolens (`cuda` on a GPU machine; SAEDashboard picks CUDA itself when present)."""
    dtype: str = "float32"
    """Model dtype for the floor and tempolens (`bfloat16` on GPU)."""
    timeout_s: float = 7200
    """Kill a child running longer than this."""

    def __post_init__(self) -> None:
        self.out, self.workdir, self.saedash_python = (
            Path(self.out).resolve(),
            Path(self.workdir).resolve(),
            Path(self.saedash_python),
        )
        self.scaling_prompts = tuple(int(x) for x in self.scaling_prompts)
        self.widths = tuple(int(x) for x in self.widths)
        if self.quick:
            self.prompts, self.scaling_prompts, self.widths, self.temporal_sae = 16, (), (256,), ""
            self.saedash_max_features, self.tempolens_run = 0, False
        check(self.prompts >= 1, f"--prompts must be >= 1; got {self.prompts}")
        check(all(n >= 1 for n in self.scaling_prompts), "--scaling-prompts must be positive")
        check(len(self.widths) >= 1 and all(w >= self.k for w in self.widths), f"--widths must be >= k={self.k}")
        check(self.two_command or self.tempolens_run, "--no-two-command needs --tempolens-run")
        check(self.repeats >= 1, f"--repeats must be >= 1; got {self.repeats}")
        check(self.batch_size >= 1 and self.prompt_len >= 2, "--batch-size must be >= 1 and --prompt-len >= 2")
        check(self.saedash_max_features >= 0, "--saedash-max-features must be >= 0")
        check(self.saedash_sample_batches >= 2, "--saedash-sample-batches must be >= 2 (the per-batch time needs two)")
        check(
            self.dtype in ("float32", "bfloat16", "float16"),
            f"--dtype must be float32, bfloat16 or float16; got {self.dtype!r}",
        )
        check(
            self.prompt_len <= 128 or self.skip_saedash,
            "the agreement check assumes whole-prompt example windows: --prompt-len <= 128",
        )


# ------------------------------------------------------------------------------------------ helpers


def stage_timings(store: Path, dash: Path) -> dict[str, float]:
    """Stage seconds a tempolens run logged: ``collect.*`` from the store's ``collect_log.json``,
    ``dashboards.*`` from the dashboards' ``dashboards_log.json``."""
    out: dict[str, float] = {}
    for prefix, path in (("collect", store / "collect_log.json"), ("dashboards", dash / "dashboards_log.json")):
        try:
            t = json.loads(path.read_text()).get("timings", {})
        except (OSError, ValueError):
            continue
        out.update({f"{prefix}.{k}": float(v) for k, v in t.items() if isinstance(v, (int, float))})
    return out


def tempolens_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("tempolens")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "tempolens.cli"]


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {"PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    )
    env.update(extra or {})
    return env


def say(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def fail_msg(m: Measurement) -> str:
    return f"rc {m.rc}; log {m.log}; last lines:\n{m.tail(15)}"


def embedded_sae_at(kind: str, layer: int, width: int | None = None) -> Path | None:
    """The embedded SAE folder of ``kind`` (``topk`` or ``temporal``) when it is shipped, was trained at block
    ``layer`` and (if given) has ``width`` latents; else None (the benchmark then measures a random-init SAE)."""
    try:
        from tempolens.saes.fit import recorded_hook_layer
        from tempolens.saes.loading import load_sae
        from tempolens.sources.embedded import embedded_sae_path

        folder = embedded_sae_path(kind)
        sae = load_sae(f"embedded:{kind}")
    except Exception:  # noqa: BLE001 - not shipped (yet)
        return None
    if recorded_hook_layer(sae) != layer or (width is not None and sae.width != width):
        return None
    return folder


def saedash_copy(src: Path, dst: Path, prompt_len: int, hook_name: str) -> dict[str, Any]:
    """A copy of a SAELens TopK folder that SAEDashboard 0.8.0 loads and that gives the same codes.

    Sets ``rescale_acts_by_decoder_norm: true`` (0.8.0 crashes on start-up otherwise). When the original
    did not rescale and its decoder rows are not unit-norm, the copy's decoder rows are normalised:
    with the flag, SAELens selects TopK on ``pre·‖W_dec‖ = pre`` — the same latents and values as the
    original — so codes are identical (reconstructions and logit scales are not, and are not compared).
    """
    import torch
    from safetensors.torch import load_file, save_file

    dst.mkdir(parents=True, exist_ok=True)
    cfg = json.loads((src / "cfg.json").read_text())
    w = load_file(str(src / "sae_weights.safetensors"))
    note = "flag set; decoder rows unit-norm, nothing changes"
    if not cfg.get("rescale_acts_by_decoder_norm", False):
        norms = w["W_dec"].norm(dim=-1, keepdim=True)
        if not torch.allclose(norms, torch.ones_like(norms), atol=1e-5):
            w["W_dec"] = (w["W_dec"] / norms).contiguous()
            note = "decoder rows normalised and flag set: identical codes"
    cfg["rescale_acts_by_decoder_norm"] = True
    md = cfg.setdefault("metadata", {})
    md.update(
        {
            "model_name": sdo.HUB_NAME,
            "hook_name": hook_name,
            "hook_head_index": None,
            "prepend_bos": True,
            "context_size": prompt_len,
            "dataset_path": md.get("dataset_path") or "tempolens-bench",
            "model_from_pretrained_kwargs": {},
        }
    )
    (dst / "cfg.json").write_text(json.dumps(cfg, indent=2))
    save_file(w, str(dst / "sae_weights.safetensors"))
    return {"note": note}


# ------------------------------------------------------------------------------------------ runners


class Bench:
    def __init__(self, cfg: BenchConfig):
        self.cfg = cfg
        self.runs: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self.work = cfg.workdir
        self.logs = self.work / "logs"
        self.prep: dict[str, Any] = {}
        self.sae_for: dict[str, dict[str, Any]] = {}
        self.stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + ("-quick" if cfg.quick else "")

    # -- setup -------------------------------------------------------------------------------------
    def prepare(self) -> None:
        cfg = self.cfg
        if self.work.exists():
            shutil.rmtree(self.work)
        self.logs.mkdir(parents=True)
        n_max = max([cfg.prompts, *cfg.scaling_prompts])
        say(f"preparing {n_max} prompts and random TopK SAEs {cfg.widths} (mean-activation decoder bias)")
        m = run_measured(
            [
                sys.executable,
                str(HERE / "bench_children.py"),
                "prepare",
                "--workdir",
                str(self.work / "prep"),
                "--model",
                cfg.model,
                "--layer",
                str(cfg.layer),
                "--corpus",
                cfg.corpus,
                "--n-prompts",
                str(n_max),
                "--prompt-len",
                str(cfg.prompt_len),
                "--seed",
                str(cfg.seed),
                "--widths",
                *map(str, cfg.widths),
                "--k",
                str(cfg.k),
                "--sae-seed",
                str(cfg.seed),
            ],
            env=child_env(),
            log_path=self.logs / "prepare.log",
            timeout_s=cfg.timeout_s,
        )
        res = m.find("PREPARE_RESULT ")
        if m.rc != 0 or not res:
            raise SystemExit(f"prepare failed: {fail_msg(m)}")
        self.prep = json.loads(res[-1][1])
        self.tokens_path = self.work / "prep" / "tokens.pt"
        for i, w in enumerate(cfg.widths):
            rand = Path(self.prep["saes"][str(w)]["path"])
            entry = {
                "label": f"topk-{w}",
                "tempolens_spec": str(rand),
                "saedash_dir": rand,
                "kind": "random-init TopK, b_dec = mean activation",
                "alive_in_sample": self.prep["saes"][str(w)]["alive_in_sample"],
            }
            if i == 0 and cfg.topk_sae != "random":
                twin = Path(cfg.topk_sae) if cfg.topk_sae != "auto" else embedded_sae_at("topk", cfg.layer, w)
                if twin is not None and (twin / "cfg.json").is_file():
                    dst = self.work / "prep" / f"saedash-{twin.name}-{w}"
                    note = saedash_copy(twin, dst, cfg.prompt_len, self.prep["hook_name"])
                    entry.update(
                        tempolens_spec=str(twin),
                        saedash_dir=dst,
                        kind=f"trained TopK ({twin}); SAEDashboard copy: {note['note']}",
                    )
            self.sae_for[entry["label"]] = entry
        if not cfg.skip_saedash:
            if not cfg.saedash_python.exists():
                self.errors.append(f"SAEDashboard venv {cfg.saedash_python} missing: SAEDashboard skipped")
                cfg.skip_saedash = True
            else:
                from tempolens.sources.embedded import ensure_embedded_model
                from tempolens.sources.open import load_subject_model  # noqa: F401  (import check only)

                model_dir = ensure_embedded_model(progress=None) if cfg.model == "embedded" else Path(cfg.model)
                self.hf_home = self.work / "hf_home"
                sdo.build_hf_cache(model_dir, self.hf_home)
                texts = json.loads((self.work / "prep" / "texts.json").read_text())
                self.dataset_dir = sdo.write_text_dataset(texts, self.work / "prep" / "text_dataset")
        say(
            f"prepared in {m.wall_s:.0f} s: {self.prep['n_prompts']} prompts, mean ‖x‖ {self.prep['mean_norm']:.0f} "
            f"vs median token norm {self.prep['median_token_norm']:.0f}; "
            + ", ".join(
                f"{k}: {v['alive_in_sample']} latents fire on {v['sample_tokens']} sample tokens"
                for k, v in self.prep["saes"].items()
            )
        )

    # -- one measured child each -------------------------------------------------------------------
    def floor(self, n: int, rep: int) -> dict[str, Any] | None:
        cfg = self.cfg
        m = run_measured(
            [
                sys.executable,
                str(HERE / "bench_children.py"),
                "floor",
                "--tokens",
                str(self.tokens_path),
                "--n",
                str(n),
                "--batch",
                str(cfg.batch_size),
                "--model",
                cfg.model,
                "--layer",
                str(cfg.layer),
                "--dtype",
                cfg.dtype,
                "--device",
                cfg.device,
            ],
            env=child_env(),
            log_path=self.logs / f"floor-{n}-r{rep}.log",
            timeout_s=cfg.timeout_s,
        )
        res = m.find("FLOOR_RESULT ")
        if m.rc != 0 or not res:
            self.errors.append(f"floor n={n}: {fail_msg(m)}")
            return None
        r = json.loads(res[-1][1])
        row = {
            "tool": "floor",
            "config": "LM forward to block L",
            "n_prompts": n,
            "repeat": rep,
            "wall_s": r["forward_wall_s"],
            "cpu_s": r["forward_cpu_s"],
            "process_wall_s": m.wall_s,
            "process_cpu_s": m.cpu_s,
            "max_rss_gib": m.max_rss_gib,
            "disk_bytes": 0,
            "tok_per_s": r["tok_per_s"],
            "load": [m.load_before, m.load_after],
            "phases": {"load_model": r["load_s"]},
        }
        self.runs.append(row)
        say(
            f"floor n={n}: forward {r['forward_wall_s']:.1f} s wall, {r['forward_cpu_s']:.1f} s CPU "
            f"({r['tok_per_s']:.0f} tok/s); peak RSS {m.max_rss_gib:.2f} GiB; load {m.load_before[0]:.1f}"
        )
        return row

    def tempolens(self, label: str, spec: str, n: int, rep: int) -> dict[str, Any] | None:
        cfg = self.cfg
        run = self.work / f"tempolens-{label}-{n}-r{rep}"
        if run.exists():
            shutil.rmtree(run)
        run.mkdir(parents=True)
        store, dash = run / "store", run / "dashboards"
        m1 = run_measured(
            tempolens_cmd()
            + [
                "collect",
                "--model",
                cfg.model,
                "--layer",
                str(cfg.layer),
                "--sae",
                spec,
                "--corpus",
                cfg.corpus,
                "--n-prompts",
                str(n),
                "--prompt-len",
                str(cfg.prompt_len),
                "--seed",
                str(cfg.seed),
                "--batch-size",
                str(cfg.batch_size),
                "--device",
                cfg.device,
                "--dtype",
                cfg.dtype,
                "--out",
                str(store),
            ],
            env=child_env(),
            log_path=self.logs / f"tempolens-collect-{label}-{n}-r{rep}.log",
            timeout_s=cfg.timeout_s,
        )
        if m1.rc != 0:
            self.errors.append(f"tempolens collect {label} n={n}: {fail_msg(m1)}")
            return None
        m2 = run_measured(
            tempolens_cmd()
            + ["dashboards", "--store", str(store), "--out", str(dash), "--device", cfg.device]
            + self.format_args,
            env=child_env(),
            log_path=self.logs / f"tempolens-dashboards-{label}-{n}-r{rep}.log",
            timeout_s=cfg.timeout_s,
        )
        if m2.rc != 0:
            self.errors.append(f"tempolens dashboards {label} n={n}: {fail_msg(m2)}")
            return None
        phases: dict[str, float] = {"collect": m1.wall_s, "dashboards": m2.wall_s, **stage_timings(store, dash)}
        disk = {
            "store": dir_bytes(store),
            "dashboards": dir_bytes(dash),
            "batches_json": dir_bytes(dash / "neuronpedia" / "batches", "*.json"),
            "bulk": dir_bytes(dash / "neuronpedia" / "bulk"),
            "site": dir_bytes(dash / "site"),
        }
        row = {
            "tool": "tempolens",
            "config": label,
            "n_prompts": n,
            "repeat": rep,
            "wall_s": m1.wall_s + m2.wall_s,
            "cpu_s": m1.cpu_s + m2.cpu_s,
            "max_rss_gib": max(m1.max_rss_gib, m2.max_rss_gib),
            "rss_collect_gib": m1.max_rss_gib,
            "rss_dashboards_gib": m2.max_rss_gib,
            "disk_bytes": disk["store"] + disk["dashboards"],
            "disk": disk,
            "phases": phases,
            "load": [m1.load_before, m2.load_after],
            "store": str(store),
            "site": str(dash / "site"),
        }
        self.runs.append(row)
        say(
            f"tempolens {label} n={n}: collect {m1.wall_s:.1f} s + dashboards {m2.wall_s:.1f} s = {row['wall_s']:.1f} "
            f"s wall, {row['cpu_s']:.1f} s CPU; "
            f"peak RSS {row['max_rss_gib']:.2f} GiB; {row['disk_bytes'] / 1e6:.0f} MB"
        )
        return row

    @property
    def format_args(self) -> list[str]:
        """The export flags of every tempolens run: the Neuronpedia formats only with ``--neuronpedia``."""
        return ["--batches", "--bulk"] if self.cfg.neuronpedia else []

    def tempolens_run(self, label: str, spec: str, n: int, rep: int) -> dict[str, Any] | None:
        """``tempolens run`` (one process: collect then dashboards; kernels off)."""
        cfg = self.cfg
        run = self.work / f"tempolens-run-{label}-{n}-r{rep}"
        if run.exists():
            shutil.rmtree(run)
        m = run_measured(
            tempolens_cmd()
            + [
                "run",
                "--out",
                str(run),
                "--no-kernels",
                "--model",
                cfg.model,
                "--layer",
                str(cfg.layer),
                "--sae",
                spec,
                "--corpus",
                cfg.corpus,
                "--n-prompts",
                str(n),
                "--prompt-len",
                str(cfg.prompt_len),
                "--seed",
                str(cfg.seed),
                "--batch-size",
                str(cfg.batch_size),
                "--device",
                cfg.device,
                "--dtype",
                cfg.dtype,
            ]
            + self.format_args,
            env=child_env(),
            log_path=self.logs / f"tempolens-run-{label}-{n}-r{rep}.log",
            timeout_s=cfg.timeout_s,
        )
        if m.rc != 0:
            self.errors.append(f"tempolens run {label} n={n}: {fail_msg(m)}")
            return None
        row = {
            "tool": "tempolens-run",
            "config": label,
            "n_prompts": n,
            "repeat": rep,
            "wall_s": m.wall_s,
            "cpu_s": m.cpu_s,
            "max_rss_gib": m.max_rss_gib,
            "disk_bytes": dir_bytes(run),
            "phases": stage_timings(run / "store", run / "dashboards"),
            "load": [m.load_before, m.load_after],
            "store": str(run / "store"),
            "site": str(run / "dashboards" / "site"),
        }
        self.runs.append(row)
        say(
            f"tempolens run {label} n={n}: {m.wall_s:.1f} s wall, {m.cpu_s:.1f} s CPU; peak RSS {m.max_rss_gib:.2f} GiB"
        )
        return row

    def saedash(self, label: str, sae_dir: Path, width: int, n: int, rep: int) -> dict[str, Any] | None:
        cfg = self.cfg
        n_batches = math.ceil(width / 128)
        full = cfg.saedash_max_features == 0 or width <= cfg.saedash_max_features
        limit = (
            n_batches if full else min(n_batches, max(2, cfg.saedash_sample_batches))
        )  # two at least: the per-batch time
        run = self.work / f"saedash-{label}-{n}-r{rep}"
        argv, env, sub = sdo.prepare_run(
            run,
            self.tokens_path,
            sae_dir,
            self.dataset_dir,
            self.hf_home,
            n,
            cfg.prompt_len,
            cfg.batch_size,
            128,
            end_batch=None if limit >= n_batches else limit - 1,
        )
        m = run_measured(
            [str(cfg.saedash_python), *argv],
            env=sdo.env_with({**env, "PYTHONUNBUFFERED": "1"}),
            cwd=run,
            log_path=self.logs / f"saedash-{label}-{n}-r{rep}.log",
            timeout_s=cfg.timeout_s,
        )
        done = sorted(sub.glob("batch-*.json"))
        if m.rc != 0 or not done:
            self.errors.append(f"SAEDashboard {label} n={n}: {fail_msg(m)}")
            return None
        starts = [t for t, _ in m.find("========== Running Batch #")]
        ends = [t for t, _ in m.find("Output written to")]
        phases: dict[str, float] = {}
        per_batch = float("nan")
        if starts:
            phases["startup"] = starts[0]
        if ends and starts:
            phases["first_batch"] = ends[0] - starts[0]
        if len(ends) >= 2:
            per_batch = median([b - a for a, b in zip(ends, ends[1:])])
            phases["per_later_batch"] = per_batch
        measured_batches = len(done)
        wall, cpu = m.wall_s, m.cpu_s
        extrapolated = measured_batches < n_batches
        if extrapolated:
            missing = n_batches - measured_batches
            wall_full = wall + missing * per_batch
            cpu_full = cpu * wall_full / wall  # CPU share assumed constant over the run
        else:
            wall_full, cpu_full = wall, cpu
        json_bytes = dir_bytes(sub, "batch-*.json")
        row = {
            "tool": "saedash",
            "config": label,
            "n_prompts": n,
            "repeat": rep,
            "wall_s": wall_full,
            "cpu_s": cpu_full,
            "measured_wall_s": wall,
            "measured_cpu_s": cpu,
            "measured_batches": measured_batches,
            "total_batches": n_batches,
            "extrapolated": extrapolated,
            "max_rss_gib": m.max_rss_gib,
            "disk_bytes": int(json_bytes * (n_batches / measured_batches)),
            "disk": {"batches_json_measured": json_bytes, "activation_cache": dir_bytes(run / "cached_activations")},
            "phases": phases,
            "load": [m.load_before, m.load_after],
            "outputs": str(sub),
        }
        self.runs.append(row)
        say(
            f"SAEDashboard {label} n={n}: {measured_batches}/{n_batches} batches in {wall:.1f} s wall, {cpu:.1f} s CPU"
            + (f" → full run ≈ {wall_full:.0f} s (extrapolated, {per_batch:.1f} s per batch)" if extrapolated else "")
            + f"; peak RSS {m.max_rss_gib:.2f} GiB; JSON {json_bytes / 1e6:.0f} MB"
        )
        return row

    def save_partial(self) -> None:
        """Every measurement so far, so that a stopped benchmark leaves its numbers behind."""
        self.cfg.out.mkdir(parents=True, exist_ok=True)
        data = {
            "partial": True,
            "runs": self.runs,
            "summary": summarize(self.runs),
            "errors": self.errors,
            "prepare": self.prep,
        }
        (self.cfg.out / f"bench-{self.stamp}.partial.json").write_text(json.dumps(data, indent=1, default=str))

    # -- the plan ------------------------------------------------------------------------------------
    def temporal_spec(self) -> str:
        spec = self.cfg.temporal_sae
        if spec == "embedded:temporal" and embedded_sae_at("temporal", self.cfg.layer) is None:
            fallback = f"random:temporal?width=2560&k={self.cfg.k}&seed={self.cfg.seed}"
            self.errors.append(
                f"the embedded Temporal SAE is not shipped for block {self.cfg.layer}: measured {fallback} instead"
            )
            return fallback
        return spec

    def run(self) -> dict[str, Any]:
        cfg = self.cfg
        t0 = time.perf_counter()
        self.prepare()
        n = cfg.prompts
        floor_ns = sorted({n, *cfg.scaling_prompts})
        labels = [f"topk-{w}" for w in cfg.widths]
        temporal = self.temporal_spec() if cfg.temporal_sae else ""
        for rep in range(cfg.repeats):
            for fn in floor_ns if cfg.floor else []:
                self.floor(fn, rep)
                self.save_partial()
            for w, label in zip(cfg.widths, labels):
                entry = self.sae_for[label]
                if cfg.two_command:
                    self.tempolens(label, entry["tempolens_spec"], n, rep)
                    self.save_partial()
                if cfg.tempolens_run:
                    self.tempolens_run(label, entry["tempolens_spec"], n, rep)
                    self.save_partial()
                if not cfg.skip_saedash:
                    self.saedash(label, Path(entry["saedash_dir"]), w, n, rep)
                    self.save_partial()
            if temporal:
                if cfg.two_command and not (cfg.temporal_only_run and cfg.tempolens_run):
                    self.tempolens("temporal", temporal, n, rep)
                    self.save_partial()
                if cfg.tempolens_run:
                    self.tempolens_run("temporal", temporal, n, rep)
                    self.save_partial()
            for sn in cfg.scaling_prompts:
                if sn != n:
                    measure = self.tempolens_run if cfg.tempolens_run else self.tempolens
                    measure(labels[0], self.sae_for[labels[0]]["tempolens_spec"], sn, rep)
                    self.save_partial()
        agreement = {}
        for _w, label in zip(cfg.widths, labels):
            tl = next(
                (
                    r
                    for r in reversed(self.runs)
                    if r["tool"] == "tempolens" and r["config"] == label and r["n_prompts"] == n
                ),
                None,
            )
            sd = next(
                (
                    r
                    for r in reversed(self.runs)
                    if r["tool"] == "saedash" and r["config"] == label and r["n_prompts"] == n
                ),
                None,
            )
            if tl is None:
                continue
            import torch

            tokens = torch.load(self.tokens_path, weights_only=True)[:n]
            pieces = json.loads((self.work / "prep" / "pieces.json").read_text())[:n]
            say(f"agreement check {label}")
            agreement[label] = agreement_report(tl["store"], tokens, pieces, sd["outputs"] if sd else None, tl["site"])
        return {
            "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
            "host": host_info(),
            "prepare": self.prep,
            "saes": {k: {kk: str(vv) for kk, vv in v.items()} for k, v in self.sae_for.items()},
            "temporal_spec": temporal,
            "runs": self.runs,
            "summary": summarize(self.runs),
            "agreement": agreement,
            "errors": self.errors,
            "total_s": time.perf_counter() - t0,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }


# ------------------------------------------------------------------------------------------ report


def host_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:  # noqa: BLE001
        pass
    try:
        from importlib.metadata import version

        info["tempolens"] = version("tempolens")
        info["transformers"] = version("transformers")
    except Exception:  # noqa: BLE001
        pass
    try:
        import subprocess

        git = subprocess.run(
            ["git", "rev-parse", "--short=10", "HEAD"],
            cwd=HERE,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        info["commit"] = git.stdout.strip() or None
        info["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    except Exception:  # noqa: BLE001
        pass
    return info


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Median per (tool, config, prompts) and ratios to the floor's median at the same prompt count."""
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault((r["tool"], r["config"], r["n_prompts"]), []).append(r)
    floors = {k[2]: v for k, v in groups.items() if k[0] == "floor"}
    out = []
    for (tool, config, n), rs in groups.items():
        wall, cpu = median([r["wall_s"] for r in rs]), median([r["cpu_s"] for r in rs])
        row = {
            "tool": tool,
            "config": config,
            "n_prompts": n,
            "repeats": len(rs),
            "wall_s": wall,
            "cpu_s": cpu,
            "max_rss_gib": max(r["max_rss_gib"] for r in rs),
            "disk_bytes": median([r["disk_bytes"] for r in rs]),
            "wall_runs": [round(r["wall_s"], 2) for r in rs],
            "extrapolated": any(r.get("extrapolated") for r in rs),
            "phases": {
                k: median([r["phases"][k] for r in rs if k in r.get("phases", {})]) for k in rs[-1].get("phases", {})
            },
            "load_1min": [round(r["load"][0][0], 1) for r in rs],
        }
        f = floors.get(n)
        if f:
            fw, fc = median([r["wall_s"] for r in f]), median([r["cpu_s"] for r in f])
            row["x_floor_wall"] = wall / fw
            row["x_floor_cpu"] = cpu / fc if fc > 0 else float("nan")
        out.append(row)
    order = {"floor": 0, "tempolens": 1, "tempolens-run": 2, "saedash": 3}
    out.sort(key=lambda r: (r["n_prompts"], r["config"] if r["tool"] != "floor" else "", order[r["tool"]]))
    return out


def markdown(result: dict[str, Any]) -> str:
    cfg, host = result["config"], result["host"]
    lines = [
        f"# Dashboard benchmark — {result['finished']}",
        "",
        f"Host: {host.get('cpus')} CPUs ({host.get('machine')}), torch {host.get('torch')} "
        f"({host.get('torch_threads')} threads)"
        + (f", GPU {host['cuda']}" if host.get("cuda") else ", no GPU")
        + f"; model `{cfg['model']}` block {cfg['layer']}, {cfg['prompt_len']} tokens per prompt, "
        f"batch {cfg['batch_size']}, {cfg['dtype']}, "
        f"{cfg['repeats']} repeat(s) (medians); tempolens writes "
        + (
            "the site and the Neuronpedia formats (`--batches --bulk`)."
            if cfg.get("neuronpedia")
            else "the site only (its default; the Neuronpedia formats are `--batches --bulk`)."
        ),
        "",
        "Wall time is what a user waits; CPU time (user + sys of the process) is steadier when other jobs share the "
        "cores. "
        "`× floor` divides by the floor's forward loop (model loading excluded) at the same prompt count; tempolens "
        "and "
        "SAEDashboard include their start-up. Peak RSS: the largest process (tempolens: max of collect, dashboards).",
        "",
        "| SAE | prompts | tool | wall s | × floor | CPU s | × floor (CPU) | peak RSS GiB | output MB | notes |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in result["summary"]:
        notes = []
        ph = r.get("phases", {})
        if r["tool"] == "floor":
            notes.append(f"{(r['n_prompts'] * cfg['prompt_len']) / r['wall_s']:.0f} tok/s")
        if r["tool"].startswith("tempolens"):
            if "collect.lm_forward" in ph:
                notes.append(
                    f"LM {ph['collect.lm_forward']:.1f}, SAE {ph.get('collect.sae_encode', 0):.1f}, model load "
                    f"{ph.get('collect.load_model', 0):.1f}"
                )
            if r["tool"] == "tempolens":
                notes.append(f"collect {ph.get('collect', 0):.1f} s + dashboards {ph.get('dashboards', 0):.1f} s")
            d = {
                k.split(".", 1)[1]: v for k, v in ph.items() if k.startswith("dashboards.") and k != "dashboards.total"
            }
            if d:
                notes.append("dashboards: " + ", ".join(f"{k.replace('_', ' ')} {v:.1f}" for k, v in d.items()))
        if r["tool"] == "saedash":
            if "startup" in ph:
                notes.append(f"start-up {ph['startup']:.0f} s")
            if "first_batch" in ph:
                notes.append(f"batch 0 (with forward) {ph['first_batch']:.0f} s")
            if "per_later_batch" in ph:
                notes.append(f"{ph['per_later_batch']:.1f} s per later batch")
            if r.get("extrapolated"):
                notes.append("**extrapolated** from the measured batches")
        if len(r["load_1min"]) and max(r["load_1min"]) > (host.get("cpus") or 1) * 1.5:
            notes.append(f"load {max(r['load_1min'])}")
        xw = f"{r['x_floor_wall']:.2f}" if "x_floor_wall" in r and r["tool"] != "floor" else ""
        xc = f"{r['x_floor_cpu']:.2f}" if "x_floor_cpu" in r and r["tool"] != "floor" else ""
        lines.append(
            f"| {r['config'] if r['tool'] != 'floor' else '—'} | {r['n_prompts']} | {r['tool']} | {r['wall_s']:.1f} | "
            f"{xw} | {r['cpu_s']:.1f} | {xc} | "
            f"{r['max_rss_gib']:.2f} | {r['disk_bytes'] / 1e6:.0f} | {'; '.join(notes)} |"
        )
    lines += ["", "## SAEs", ""]
    for k, v in result["saes"].items():
        lines.append(f"- `{k}`: {v.get('kind')} — {v.get('alive_in_sample')} latents fire on the sample")
    if result.get("temporal_spec"):
        lines.append(f"- `temporal`: `{result['temporal_spec']}`")
    lines += ["", "## Agreement (same prompts, same SAE)", ""]
    for label, a in result["agreement"].items():
        lines.append(f"### {label}")
        lines += summarize_agreement(a)
        lines.append("")
    lines += ["## Targets", ""]
    for r in result["summary"]:
        if not r["tool"].startswith("tempolens") or "x_floor_wall" not in r or not r["config"].startswith("topk-"):
            continue
        width = int(r["config"].split("-")[1])
        target = 1.6 if width <= 2560 else 2.5  # at 256 prompts (the current targets)
        ok_w, ok_c = r["x_floor_wall"] <= target, r["x_floor_cpu"] <= target
        lines.append(
            f"- {r['tool']} {r['config']}, {r['n_prompts']} prompts: {r['x_floor_wall']:.2f}× floor (wall), "
            f"{r['x_floor_cpu']:.2f}× (CPU) — target ≤ {target}×: "
            f"{'met' if ok_w and ok_c else 'met on CPU time only' if ok_c else 'NOT met'}"
        )
    sd = {(r["config"], r["n_prompts"]): r for r in result["summary"] if r["tool"] == "saedash"}
    for r in result["summary"]:
        o = sd.get((r["config"], r["n_prompts"]))
        if r["tool"].startswith("tempolens") and o:
            lines.append(
                f"- {r['tool']} {r['config']}, {r['n_prompts']} prompts: peak RSS tempolens {r['max_rss_gib']:.2f} "
                f"GiB vs SAEDashboard {o['max_rss_gib']:.2f} GiB; "
                f"time {o['wall_s'] / r['wall_s']:.1f}× faster than SAEDashboard (wall)"
            )
    tool = "tempolens-run" if cfg.get("tempolens_run") else "tempolens"
    scal = sorted(
        (r for r in result["summary"] if r["tool"] == tool and r["config"] == f"topk-{cfg['widths'][0]}"),
        key=lambda r: r["n_prompts"],
    )
    floors = sorted((r for r in result["summary"] if r["tool"] == "floor"), key=lambda r: r["n_prompts"])
    if len(scal) > 1:
        lines.append(
            f"- growth with prompts ({tool}, "
            + scal[0]["config"]
            + "): "
            + ", ".join(f"{r['n_prompts']}: {r['wall_s']:.0f} s / {r['max_rss_gib']:.2f} GiB" for r in scal)
        )
        fl = {r["n_prompts"]: r for r in floors}
        a, b = scal[0], scal[-1]
        if a["n_prompts"] in fl and b["n_prompts"] in fl and b["n_prompts"] > a["n_prompts"]:
            dt = b["wall_s"] - a["wall_s"]
            df = fl[b["n_prompts"]]["wall_s"] - fl[a["n_prompts"]]["wall_s"]
            fixed = a["wall_s"] - a["n_prompts"] * dt / (b["n_prompts"] - a["n_prompts"])
            lines.append(
                f"- marginal cost ({a['n_prompts']} → {b['n_prompts']} prompts): {dt:.0f} s of {tool} per {df:.0f} s "
                "of floor = "
                f"**{dt / df:.2f}× the floor per extra prompt**; fixed cost (start-up, model load, logit effects, "
                f"per-latent work) ≈ {fixed:.0f} s"
            )
    if result["errors"]:
        lines += ["", "## Problems", ""] + [f"- {e.splitlines()[0]}" for e in result["errors"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from tempolens.errors import TempolensError
    from tempolens.options import add_options, options_from_args

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_options(parser, BenchConfig, "options")
    args = parser.parse_args(argv)
    try:
        cfg = options_from_args(BenchConfig, args)
    except TempolensError as e:
        print(f"bench_dashboards: error: {e}", file=sys.stderr)
        return 2
    bench = Bench(cfg)
    result = bench.run()
    cfg.out.mkdir(parents=True, exist_ok=True)
    stamp = bench.stamp
    from tempolens.fsutil import atomic_write_bytes

    atomic_write_bytes(cfg.out / f"bench-{stamp}.json", (json.dumps(result, indent=1, default=str) + "\n").encode())
    md = markdown(result)
    atomic_write_bytes(cfg.out / f"bench-{stamp}.md", md.encode())
    print(md)
    (cfg.out / f"bench-{stamp}.partial.json").unlink(missing_ok=True)
    say(f"wrote {cfg.out / f'bench-{stamp}.json'} and .md")
    return 1 if result["errors"] and not result["runs"] else 0


if __name__ == "__main__":
    sys.exit(main())
