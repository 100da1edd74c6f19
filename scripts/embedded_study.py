"""Measure an embedded Temporal SAE / TopK pair on multi-event stories and on a held-out split.

Stories are built from the held-out prompts of an activation cache (prompts training never saw):
BOS followed by ``--segment`` tokens (at a random offset) from each of ``--events`` different held-out
prompts, so the event boundaries (the switches between source passages) are known exactly. With few
held-out prompts, stories may share passages with other stories (never within one story). The subject model is
run on each story; the SAEs' predicted, novel and twin codes and the raw activations are scored with
``tempolens.train.event_check.event_check`` (block contrast with a bootstrap CI over stories,
within/across AUROC, pooled boundary AUROC with a bootstrap CI, z_pred top-1 variance share).

    python scripts/embedded_study.py --cache DIR --layer L --sae PATH --twin PATH --out result.json
    python scripts/embedded_study.py --layer 12 --sae embedded:temporal --twin embedded:topk --out shipped.json
        # (no cache: rebuild the held-out prompts of a run with --n-tokens/--prompt-len/--seed)
    python scripts/embedded_study.py --cache DIR --layers 3,6,9,12 --out layers.json   # raw only, per layer
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def heldout_tokens(
    cache_dir: str | None, tokenizer, n_tokens: int, prompt_len: int, heldout_fraction: float, seed: int
) -> torch.Tensor:
    """``[n_heldout, T]`` token ids of a training run's held-out prompts: read from its activation cache,
    or rebuilt with the same deterministic prompt builder (``plan_prompts`` + ``build_prompts``)."""
    if cache_dir:
        from tempolens.train.activations_cache import ActivationCache

        cache = ActivationCache(cache_dir)
        return cache.tokens(cache.spec.split_ids("heldout"))
    from tempolens.sources.corpora import build_prompts, iter_documents
    from tempolens.train.activations_cache import plan_prompts

    n_prompts, n_heldout = plan_prompts(n_tokens, prompt_len, heldout_fraction)
    prompts = build_prompts(
        tokenizer, iter_documents("embedded"), n_prompts=n_prompts, prompt_len=prompt_len, seed=seed
    )
    return prompts.tokens[n_prompts - n_heldout :]


def stories(toks: torch.Tensor, n: int, events: int, segment: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(tokens [n, 1 + events·segment], labels)``: BOS, then ``segment`` tokens at a random offset
    from each of ``events`` distinct held-out prompts (label −1 at BOS, then 0, 1, …)."""
    g = torch.Generator().manual_seed(seed)
    T = toks.shape[1]
    if len(toks) < events or T - 1 < segment:
        raise SystemExit(f"{len(toks)} held-out prompts of {T} tokens; need {events} prompts of ≥ {segment + 1}")
    rows, labs = [], []
    for _ in range(n):
        pick = torch.randperm(len(toks), generator=g)[:events].tolist()  # distinct passages within a story
        parts = []
        for p in pick:
            off = 1 + int(torch.randint(0, T - segment, (1,), generator=g))
            parts.append(toks[p, off : off + segment])
        rows.append(torch.cat([toks[0, :1]] + parts))
        labs.append(torch.cat([torch.tensor([-1])] + [torch.full((segment,), e) for e in range(events)]))
    return torch.stack(rows), torch.stack(labs)


def d_cos_to_init(spec: str) -> float | None:
    """Median cosine of a ``tempolens train`` Temporal SAE's D rows to their initialisation, rebuilt
    from its ``train_config.json`` (D is the first draw of the seeded generator: randn · init std)."""
    import tempolens
    from tempolens.saes.loading import load_sae

    folder = (
        Path(tempolens.__file__).parent / "embedded_saes" / spec.split(":", 1)[1]
        if spec.startswith("embedded:")
        else Path(spec)
    )
    cfg_path = folder / "train_config.json"
    if not cfg_path.exists():
        return None
    cfg = json.loads(cfg_path.read_text())
    sae = load_sae(spec)
    g = torch.Generator().manual_seed(int(cfg["seed"]))
    D0 = torch.randn(sae.D.shape, generator=g) * float(cfg["temporal_init_std"])
    return float(torch.nn.functional.cosine_similarity(sae.D.detach(), D0, dim=-1).median())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", default=None, help="activation cache folder (its held-out prompts give the stories)")
    ap.add_argument("--n-tokens", type=int, default=1_000_000, help="without --cache: the training run's --n-tokens")
    ap.add_argument("--prompt-len", type=int, default=500, help="without --cache: the training run's --prompt-len")
    ap.add_argument("--heldout-fraction", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--layer", type=int, default=None)
    ap.add_argument("--layers", default="", help="comma-separated blocks: raw-activation kernels only")
    ap.add_argument("--sae", default=None)
    ap.add_argument("--twin", default=None)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--events", type=int, default=3)
    ap.add_argument("--segment", type=int, default=80)
    ap.add_argument("--out", required=True)
    ap.add_argument("--figure", default=None, help="PNG of the kernels of the first story")
    a = ap.parse_args()
    torch.set_num_threads(1)
    from tempolens.saes.loading import load_sae
    from tempolens.sources.open import load_subject_model
    from tempolens.train.event_check import EventSequence, event_check, kernel_images

    t0 = time.time()
    layers = [int(x) for x in a.layers.split(",") if x] or [a.layer]
    model = load_subject_model("embedded", layer=max(layers), device="cpu", dtype="bfloat16")
    held = heldout_tokens(a.cache, model.tokenizer, a.n_tokens, a.prompt_len, a.heldout_fraction, a.seed)
    tokens, labels = stories(held, a.n, a.events, a.segment)
    result: dict = {
        "n_stories": a.n,
        "events": a.events,
        "segment": a.segment,
        "cache": a.cache,
        "n_heldout_prompts": len(held),
        "prompt_spec": None if a.cache else {"n_tokens": a.n_tokens, "prompt_len": a.prompt_len, "seed": a.seed},
    }
    for L in layers:
        model.layer = L
        acts = torch.cat([model.hidden_at(tokens[i : i + 4]).float() for i in range(0, len(tokens), 4)])
        seqs = [EventSequence(acts[i], labels[i]) for i in range(len(tokens))]
        if a.sae:
            sae = load_sae(a.sae)
            twin = load_sae(a.twin) if a.twin else None
            result[f"layer{L}"] = event_check(sae, twin, seqs)
            result["d_cos_init_median"] = d_cos_to_init(a.sae)
            if a.figure:
                kernel_images(sae, twin, seqs[0], a.figure, title=f"{Path(a.sae).name}: held-out story 0 (block {L})")
        else:
            result[f"layer{L}"] = raw_only(seqs)
    result["seconds"] = round(time.time() - t0, 1)
    Path(a.out).write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


def raw_only(seqs) -> dict:
    from tempolens.temporal.events import block_contrast, bootstrap_auroc_ci, novelty_samples, pooled_auroc
    from tempolens.temporal.kernels import similarity_kernel
    from tempolens.train.event_check import bootstrap_mean_ci

    cs, nov = [], []
    for s in seqs:
        S = similarity_kernel(s.acts)
        cs.append(block_contrast(S, s.labels[1:]))
        nov.append(novelty_samples(S, s.labels[1:], 8))
    return {
        "raw": {
            "block_contrast": sum(cs) / len(cs),
            "block_contrast_ci95": list(bootstrap_mean_ci(cs)),
            "boundary_auroc": pooled_auroc(nov)[0],
            "boundary_auroc_ci95": list(bootstrap_auroc_ci(nov)),
        }
    }


if __name__ == "__main__":
    main()
