"""Child processes of ``bench_dashboards.py`` (run in the tempolens venv, one measured process each).

``prepare``  builds the prompts exactly as ``tempolens collect`` does (same corpus, seed, length),
             saves their token ids, the decoded texts, and random-init TopK SAEs whose decoder bias
             is the mean activation at the hook (SAELens layout, read by both tools).
``floor``    the cost floor: ``SubjectModel.hidden_at`` (the forward stopped after block L) over the
             same prompts in batches, timed around the forward loop only (wall and process CPU).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

HOOK_MODEL_NAME = "google/gemma-3-270m"
"""What SAEDashboard/TransformerLens call the embedded model (written into the SAE's cfg.json)."""


def _load_model(model: str, layer: int, dtype: str, device: str):
    from tempolens.sources.open import load_subject_model

    return load_subject_model(model, layer=layer, device=device, dtype=dtype, progress=None)


def prepare(args: argparse.Namespace) -> dict:
    """Prompts + SAEs for the whole benchmark; prints and returns a JSON summary."""
    from tempolens.saes.loading import save_standard_sae
    from tempolens.saes.random_init import activation_mean, random_topk_sae
    from tempolens.sources.corpora import build_prompts, iter_documents

    out = Path(args.workdir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    model = _load_model(args.model, args.layer, "float32", "cpu")
    prompts = build_prompts(
        model.tokenizer,
        iter_documents(args.corpus),
        n_prompts=args.n_prompts,
        prompt_len=args.prompt_len,
        seed=args.seed,
    )
    torch.save(prompts.tokens.clone(), out / "tokens.pt")
    torch.save(prompts.special.clone(), out / "special.pt")
    texts = model.tokenizer.batch_decode(prompts.tokens[:, 1:].tolist())
    (out / "texts.json").write_text(json.dumps(texts))
    pieces = [model.tokenizer.convert_ids_to_tokens(row) for row in prompts.tokens.tolist()]
    (out / "pieces.json").write_text(json.dumps(pieces))
    # mean activation over the first prompts, BOS/EOS/pad excluded (as collect does for random specs)
    n_stat = min(args.n_stat_prompts, prompts.n_prompts)
    acts = torch.cat([model.hidden_at(prompts.tokens[i : i + 8]) for i in range(0, n_stat, 8)])
    valid = ~prompts.special[:n_stat]
    sample = acts[valid].float()
    mean = activation_mean(sample)
    saes = {}
    for width in args.widths:
        folder = out / f"sae-topk-{width}"
        sae = random_topk_sae(model.hidden_size, width, args.k, seed=args.sae_seed, mean=mean)
        meta = {
            "model_name": HOOK_MODEL_NAME,
            "hook_name": model.hook_name,
            "hook_head_index": None,
            "prepend_bos": True,
            "context_size": args.prompt_len,
            "dataset_path": "tempolens-bench",
            "model_from_pretrained_kwargs": {},
        }
        save_standard_sae(sae, folder, metadata=meta)
        # SAEDashboard 0.8.0 folds decoder norms at start-up, which SAELens refuses for a TopK SAE
        # unless this flag is set; the decoder rows are unit-norm, so it changes nothing.
        cfg = json.loads((folder / "cfg.json").read_text())
        cfg["rescale_acts_by_decoder_norm"] = True
        (folder / "cfg.json").write_text(json.dumps(cfg, indent=2) + "\n")
        with torch.no_grad():
            enc = sae.encode(sample[:4096].view(1, -1, sample.shape[-1]))
        alive = int(torch.unique(enc.codes.indices[enc.codes.indices >= 0]).numel())
        saes[str(width)] = {
            "path": str(folder),
            "alive_in_sample": alive,
            "sample_tokens": int(min(4096, sample.shape[0])),
        }
    info = {
        "n_prompts": prompts.n_prompts,
        "prompt_len": prompts.prompt_len,
        "n_counted_tokens": prompts.n_counted_tokens,
        "policy": prompts.policy,
        "mean_norm": float(mean.norm()),
        "median_token_norm": float(sample.norm(dim=-1).median()),
        "saes": saes,
        "hook_name": model.hook_name,
        "model_id": model.model_id,
        "seconds": time.perf_counter() - t0,
    }
    (out / "prepare.json").write_text(json.dumps(info, indent=2))
    print("PREPARE_RESULT " + json.dumps(info), flush=True)
    return info


def floor(args: argparse.Namespace) -> dict:
    """Time ``hidden_at`` over ``n`` prompts in batches (the forward stops after block L), with the garbage collector's
    thresholds the tempolens CLI sets (its forward loop must not be faster for a setting the floor lacks)."""
    import gc

    from tempolens.cli import GC_THRESHOLDS

    gc.set_threshold(*GC_THRESHOLDS)
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    model = _load_model(args.model, args.layer, args.dtype, args.device)
    tokens = torch.load(args.tokens, weights_only=True)[: args.n]
    if tokens.shape[0] < args.n:
        raise SystemExit(f"only {tokens.shape[0]} prompts in {args.tokens}; run prepare with more")
    t_load = time.perf_counter() - t0
    # one untimed warm-up batch (first-call allocations), as any steady-state pipeline has
    model.hidden_at(tokens[: min(args.batch, args.n)].to(model.device))
    sync = torch.cuda.synchronize if model.device.type == "cuda" else (lambda: None)
    sync()
    w0, c0 = time.perf_counter(), time.process_time()
    checksum = 0.0
    for i in range(0, args.n, args.batch):
        h = model.hidden_at(tokens[i : i + args.batch].to(model.device))
        checksum += float(h[:, -1].float().sum())
    sync()
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    n_tok = int(tokens.numel())
    info = {
        "forward_wall_s": wall,
        "forward_cpu_s": cpu,
        "load_s": t_load,
        "tokens": n_tok,
        "tok_per_s": n_tok / wall,
        "batch": args.batch,
        "threads": torch.get_num_threads(),
        "device": str(model.device),
        "dtype": args.dtype,
        "checksum": checksum,
    }
    print("FLOOR_RESULT " + json.dumps(info), flush=True)
    return info


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("prepare")
    a.add_argument("--workdir", required=True)
    a.add_argument("--model", default="embedded")
    a.add_argument("--layer", type=int, default=9)
    a.add_argument("--corpus", default="embedded")
    a.add_argument("--n-prompts", type=int, required=True)
    a.add_argument("--prompt-len", type=int, default=128)
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--widths", type=int, nargs="+", required=True)
    a.add_argument("--k", type=int, default=32)
    a.add_argument("--sae-seed", type=int, default=0)
    a.add_argument("--n-stat-prompts", type=int, default=32)
    f = sub.add_parser("floor")
    f.add_argument("--tokens", required=True)
    f.add_argument("--n", type=int, required=True)
    f.add_argument("--batch", type=int, default=8)
    f.add_argument("--model", default="embedded")
    f.add_argument("--layer", type=int, default=9)
    f.add_argument("--dtype", default="float32")
    f.add_argument("--device", default="cpu")
    f.add_argument("--threads", type=int, default=0)
    args = p.parse_args(argv)
    {"prepare": prepare, "floor": floor}[args.cmd](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
