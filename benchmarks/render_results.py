"""Render the newest benchmark results (``benchmarks/results/bench-*.json``) as the README's Performance table
and draw the scaling plot (time vs width, time vs prompts).

    python benchmarks/render_results.py                       # newest complete results → markdown on stdout
    python benchmarks/render_results.py --plot docs/img/scaling.png
    python benchmarks/render_results.py --results benchmarks/results/bench-20261129-113447.json

The header names the machine, the date the benchmark finished and the commit of the results file (the commit
that added it to git, or ``host.commit`` when the benchmark recorded one). Rows are the medians of
``summary``; the spread is the range of the repeats' wall times. The bytes-per-latent table splits the
output of the collect + dashboards rows into the three formats (site data, SAEDashboard batch files,
Neuronpedia bulk import).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def newest_results(folder: Path = RESULTS) -> Path:
    """The newest complete ``bench-*.json`` of the current code (partial and quick runs, and ``-before-`` runs of an
    earlier commit kept for comparison, are skipped)."""
    files = sorted(
        p
        for p in folder.glob("bench-*.json")
        if not p.name.endswith(".partial.json") and "quick" not in p.name and "-before-" not in p.name
    )
    if not files:
        raise SystemExit(f"render_results: no bench-*.json in {folder}")
    return files[-1]


def results_commit(path: Path, result: dict[str, Any]) -> str:
    """The commit recorded by the benchmark, else the commit that added ``path`` to git, else ``unknown``."""
    if result.get("host", {}).get("commit"):
        return str(result["host"]["commit"])[:10]
    try:
        out = subprocess.run(
            ["git", "log", "--diff-filter=A", "--format=%h", "-1", "--", path.name],
            cwd=path.parent,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        out = ""
    return f"{out} (commit that added the results file)" if out else "unknown"


def width_of(config: str) -> int | None:
    """``topk-16384`` → 16384; other configurations → None."""
    head, _, tail = config.partition("-")
    return int(tail) if head == "topk" and tail.isdigit() else None


def table(result: dict[str, Any], path: Path) -> str:
    """The Performance table (markdown) of one results file."""
    host, cfg = result["host"], result["config"]
    shown = path.relative_to(HERE.parent) if path.is_relative_to(HERE.parent) else path
    gpu = f", GPU {host['cuda']}" if host.get("cuda") else ", no GPU"
    lines = [
        f"Results: `{shown}`, finished {result.get('finished', '?')}; machine: {host.get('cpus')} CPUs "
        f"({host.get('machine')}, {host.get('platform', '?')}), torch {host.get('torch')} "
        f"({host.get('torch_threads')} threads){gpu}; commit {results_commit(path, result)}. "
        f"Model `{cfg['model']}` block {cfg['layer']}, "
        f"{cfg['prompt_len']} tokens per prompt, batch {cfg['batch_size']}, {cfg['dtype']}; "
        f"medians of {cfg['repeats']} repeat(s), spread = min–max wall time.",
        "",
        "| SAE | prompts | tool | wall s (spread) | × floor | CPU s | × floor (CPU) | peak RSS GiB | output MB |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["summary"]:
        runs = r.get("wall_runs") or [r["wall_s"]]
        spread = f" ({min(runs):.1f}–{max(runs):.1f})" if len(runs) > 1 else ""
        floor = r["tool"] == "floor"
        xw = "" if floor or "x_floor_wall" not in r else f"{r['x_floor_wall']:.2f}"
        xc = "" if floor or "x_floor_cpu" not in r else f"{r['x_floor_cpu']:.2f}"
        est = " ≈" if r.get("extrapolated") else ""
        lines.append(
            f"| {'—' if floor else r['config']} | {r['n_prompts']:,} | {r['tool']} |"
            f"{est} {r['wall_s']:.1f}{spread} | {xw} | "
            f"{r['cpu_s']:.1f} | {xc} | {r['max_rss_gib']:.2f} | {r['disk_bytes'] / 1e6:,.0f} |"
        )
    return "\n".join(lines) + "\n"


def bytes_per_latent(result: dict[str, Any]) -> str:
    """Bytes per latent per output format, from the runs that record the split (``tempolens``: collect +
    dashboards)."""
    widths = {"temporal": None}
    for label, sae in result.get("saes", {}).items():
        widths[label] = sae.get("width")
    lines = [
        "| SAE | prompts | site data KB/latent | batch files KB/latent | bulk import KB/latent | total MB |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    seen = set()
    for r in result["runs"]:
        if r["tool"] != "tempolens" or "disk" not in r or (r["config"], r["n_prompts"]) in seen:
            continue
        seen.add((r["config"], r["n_prompts"]))
        w = width_of(r["config"]) or widths.get(r["config"]) or r.get("width")
        if not w:
            continue
        d = r["disk"]
        lines.append(
            f"| {r['config']} | {r['n_prompts']:,} | {d['site'] / w / 1e3:.1f} | "
            f"{d['batches_json'] / w / 1e3:.1f} | "
            f"{d['bulk'] / w / 1e3:.1f} | {r['disk_bytes'] / 1e6:,.0f} |"
        )
    return "\n".join(lines) + "\n" if len(lines) > 2 else ""


def plot(results: list[dict[str, Any]], out: Path) -> None:
    """Time vs width (tempolens run and the floor at the side-by-side prompt count) and time vs prompts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4), dpi=90)
    for res in results:
        s, n0 = res["summary"], res["config"]["prompts"]
        tag = res.get("finished", "")[:10]
        runs = sorted(
            (width_of(r["config"]), r["wall_s"])
            for r in s
            if r["tool"] == "tempolens-run" and r["n_prompts"] == n0 and width_of(r["config"])
        )
        floor = [r["wall_s"] for r in s if r["tool"] == "floor" and r["n_prompts"] == n0]
        if runs:
            a.plot([w for w, _ in runs], [t for _, t in runs], "o-", label=f"tempolens run ({tag})")
            if floor:
                a.axhline(floor[0], ls="--", color="grey", lw=1, label="floor (LM forward)")
        w0 = width_of(f"topk-{res['config']['widths'][0]}")
        sc = sorted(
            (r["n_prompts"], r["wall_s"]) for r in s if r["tool"] == "tempolens-run" and width_of(r["config"]) == w0
        )
        fl = sorted((r["n_prompts"], r["wall_s"]) for r in s if r["tool"] == "floor")
        if sc:
            b.plot([n for n, _ in sc], [t for _, t in sc], "o-", label=f"tempolens run, TopK {w0:,}")
        if fl:
            b.plot([n for n, _ in fl], [t for _, t in fl], "s--", color="grey", label="floor")
    a.set(xscale="log", xlabel="latents (TopK, random init)", ylabel="wall s", title="time vs width (256 prompts)")
    b.set(xscale="log", yscale="log", xlabel="prompts (128 tokens)", ylabel="wall s", title="time vs prompts")
    for ax in (a, b):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--results",
        type=Path,
        default=None,
        help="results JSON (default: the newest complete one in benchmarks/results)",
    )
    ap.add_argument("--plot", type=Path, default=None, help="also write the scaling plot PNG here")
    args = ap.parse_args(argv)
    path = (args.results or newest_results()).resolve()
    result = json.loads(path.read_text())
    print(table(result, path))
    bpl = bytes_per_latent(result)
    if bpl:
        print("Output bytes per latent and format (collect + dashboards rows):\n")
        print(bpl)
    if args.plot:
        plot([result], args.plot)
        print(f"(plot: {args.plot})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
