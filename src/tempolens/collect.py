"""One pass over the subject model: corpus → prompts → LM (stopped after block L) → SAE → code store.

This is the only step that runs the language model. Everything downstream (statistics,
dashboards, autointerp windows, re-exports) reads the sparse code store it writes.

Python API::

    from tempolens.collect import CollectConfig, collect
    result = collect(CollectConfig(out="runs/demo/store", n_prompts=256))
"""

from __future__ import annotations

import platform
import time
from dataclasses import asdict, dataclass, field, fields
from functools import partial
from pathlib import Path
from typing import Any, Literal

import torch

from tempolens.devices import matmul_precision, resolve_device
from tempolens.errors import TempolensError
from tempolens.fsutil import BackgroundWriter, ensure_out_dir
from tempolens.options import check
from tempolens.saes.fit import load_sae_for_model
from tempolens.sources.open import (
    check_activations,
    check_prompt_len,
    configured_context,
    load_subject_model,
    model_context,
    prompt_activation_sample,
    resolve_dtype,
)
from tempolens.sources.options import SourceOptions
from tempolens.store.codestore import CodeStore, StoreWriter, pack_codes


@dataclass
class CollectConfig(SourceOptions):
    """Options of `tempolens collect` (and of the collect stage of `tempolens run`); the model, layer,
    SAE, device and dtype options come from :class:`~tempolens.sources.options.SourceOptions`."""

    out: Path = Path("runs/embedded/store")
    """Directory of the code store to write (created; rerun the same command to resume)."""
    corpus: str = "embedded"
    """Text source: `embedded` (Brown + State of the Union), `embedded:brown`, `embedded:sotu`, a .txt/.jsonl/.parquet
    file or folder, or `hf:NAME[:CONFIG]:SPLIT[:COLUMN]` (streamed with `datasets`)."""
    n_prompts: int = 256
    """Number of prompts to encode."""
    prompt_len: int = 128
    """Tokens per prompt including BOS (Neuronpedia uses 128; the published Temporal SAE was trained with context
    500)."""
    seed: int = 0
    """Seed of the document shuffle; the same seed gives the same prompts and the same store."""
    batch_size: int = 8
    """Prompts per LM forward."""
    shard_prompts: int = 64
    """Prompts per store shard (the unit of resumption)."""
    pred_k: int = 32
    """Temporal SAEs: also keep `pred_k` predicted codes z_pred per token (signed), for `tempolens
    dashboards --codes pred`: the largest |z_pred − mean| / std, each latent's mean and std of z_pred
    taken from the first batch; 0 keeps none."""
    encode_precision: Literal["auto", "fp32", "bf16"] = "auto"
    """Matmul precision of the SAE encode: `fp32`; `bf16` (CPUs with native bfloat16 matmuls, AMX or AVX512-BF16;
    TopK SAEs of at least 8,192 latents, other SAEs encode in fp32): each token's top k is screened from a bfloat16
    matmul with a proven error bound and recomputed exactly, so the codes are the exact top k with correctly rounded
    values (a float32 matmul differs from them in its last bits, and so at near-ties); ≈1.5× faster encode at 16k
    latents, ≈2× at 65k; `auto` = bf16 where the CPU has native bfloat16, else fp32."""
    overwrite: bool = False
    """Replace an existing store of a different run instead of refusing."""
    progress: bool = True
    """Show a progress bar."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.out = Path(self.out)
        check(self.n_prompts >= 1, f"--n-prompts must be >= 1; got {self.n_prompts}")
        check(self.prompt_len >= 2, f"--prompt-len must be >= 2 (BOS plus at least one token); got {self.prompt_len}")
        check(self.batch_size >= 1, f"--batch-size must be >= 1; got {self.batch_size}")
        check(self.shard_prompts >= 1, f"--shard-prompts must be >= 1; got {self.shard_prompts}")
        check(self.pred_k >= 0, f"--pred-k must be >= 0; got {self.pred_k}")
        check(
            self.encode_precision in ("auto", "fp32", "bf16"),
            f"--encode-precision must be auto, fp32 or bf16; got {self.encode_precision!r}",
        )


@dataclass
class CollectResult:
    """What `collect` did."""

    store: Path
    n_prompts: int
    n_tokens: int
    shards_written: int
    shards_skipped: int
    seconds: float
    lm_seconds: float
    tokens_per_second: float
    timings: dict[str, float] = field(default_factory=dict)
    model: Any = field(default=None, repr=False, compare=False)
    """The subject model used (not written to the log)."""
    sae: Any = field(default=None, repr=False, compare=False)
    """The SAE used, on the collect device (not written to the log)."""


def _versions() -> dict[str, str]:
    from tempolens import __version__

    out = {"tempolens": __version__, "torch": torch.__version__, "python": platform.python_version()}
    try:
        import transformers

        out["transformers"] = transformers.__version__
    except ImportError:  # pragma: no cover
        pass
    return out


def collect(cfg: CollectConfig, *, model: Any = None) -> CollectResult:
    """Run the one pass and write (or finish) the code store at ``cfg.out``.

    ``model``: an already loaded :class:`~tempolens.sources.models.SubjectModel` for ``cfg.model``
    at ``cfg.layer`` (skips loading it again, e.g. in ``tempolens run``). The result carries the
    model and SAE it used (``result.model``, ``result.sae``) for later stages of the same process.
    """
    from tempolens import distributed

    dist = distributed.current()
    t0 = time.perf_counter()
    device = resolve_device(dist.device(cfg.device))
    dtype = resolve_dtype(cfg.dtype, device)
    _check_out(cfg, dist)
    model = _open_model(cfg, model, device, dtype)
    t_model = time.perf_counter()
    prompts = _build_prompts(cfg, model)
    t_prompts = time.perf_counter()
    sae = load_sae_for_model(
        cfg.sae,
        model,
        device,
        strict_config=cfg.sae_strict,
        activation_sample=lambda: prompt_activation_sample(model, prompts.tokens, device, cfg.batch_size),
    )
    sae.encode_precision = matmul_precision(cfg.encode_precision, device, "--encode-precision")
    t_sae = time.perf_counter()
    meta = _store_meta(cfg, model, sae, prompts, device, dtype)
    writer = _open_writer(cfg, meta, dist)
    done = writer.done_shards()
    todo = dist.split([i for i in range(meta["n_shards"]) if i not in done])
    bar = _progress_bar(cfg, todo, done, meta["n_shards"], dist)
    timer = _encode_shards(cfg, model, sae, prompts, device, writer, todo, bar)
    dist.barrier()  # every rank's shards are on disk
    elapsed = time.perf_counter() - t0
    n_new = len(todo) * cfg.shard_prompts * cfg.prompt_len
    result = CollectResult(
        store=cfg.out,
        n_prompts=cfg.n_prompts,
        n_tokens=int((~prompts.special).sum()),
        shards_written=len(todo),
        shards_skipped=len(done),
        seconds=elapsed,
        lm_seconds=timer.lm,
        tokens_per_second=n_new / max(elapsed - (t_sae - t0), 1e-9) if todo else 0.0,
        timings={
            "load_model": t_model - t0,
            "prompts": t_prompts - t_model,
            "load_sae": t_sae - t_prompts,
            "lm_forward": timer.lm,
            "sae_encode": timer.sae,
        },
        model=model,
        sae=sae,
    )
    _finish(cfg, result, timer, dist)
    return result


def _check_out(cfg: CollectConfig, dist: Any) -> None:
    """Before the model loads: the output folder must be writable and an existing store intact."""
    if dist.is_main:
        ensure_out_dir(cfg.out)
        if (cfg.out / "meta.json").exists() and not cfg.overwrite:
            CodeStore(cfg.out)


def _open_model(cfg: CollectConfig, model: Any, device: torch.device, dtype: str) -> Any:
    """The subject model (``model`` if preloaded, checked to read ``cfg.layer``), with the prompts
    checked to fit its context before loading (from its config.json when on disk) and after."""
    if model is None:
        check_prompt_len(cfg.prompt_len, configured_context(cfg.model), cfg.model)
        model = load_subject_model(cfg.model, layer=cfg.layer, device=str(device), dtype=dtype)
    elif model.layer != cfg.layer:
        raise TempolensError(f"the preloaded model reads block {model.layer} but --layer is {cfg.layer}")
    check_prompt_len(cfg.prompt_len, model_context(getattr(getattr(model, "model", None), "config", None)), cfg.model)
    return model


def _build_prompts(cfg: CollectConfig, model: Any) -> Any:
    """The store's prompts: ``cfg.n_prompts`` seeded prompts of ``cfg.prompt_len`` tokens from the corpus."""
    from tempolens.sources.corpora import build_prompts, iter_documents

    return build_prompts(
        model.tokenizer, iter_documents(cfg.corpus), n_prompts=cfg.n_prompts, prompt_len=cfg.prompt_len, seed=cfg.seed
    )


def _store_meta(
    cfg: CollectConfig, model: Any, sae: Any, prompts: Any, device: torch.device, dtype: str
) -> dict[str, Any]:
    """The store's ``meta.json``; a Temporal SAE first gets its predicted-code rule (``_pred_calibration``)."""
    pred_k = min(cfg.pred_k, int(sae.width)) if getattr(sae, "is_temporal", False) else 0
    pred_meta = (
        _pred_calibration(cfg, sae, model, prompts.tokens, prompts.special, device, pred_k) if pred_k > 0 else None
    )
    meta = {
        "model": {
            "spec": _portable_spec(cfg.model),
            "model_id": model.model_id,
            "hook_name": model.hook_name,
            "layer": cfg.layer,
            "hidden_size": model.hidden_size,
            "dtype": dtype,
        },
        "sae": {"spec": _portable_spec(cfg.sae), **sae.describe()},
        "prompts": {
            "n_prompts": cfg.n_prompts,
            "prompt_len": cfg.prompt_len,
            "seed": cfg.seed,
            "policy": prompts.policy,
            "corpus": cfg.corpus,
        },
        "corpus": {"spec": _portable_spec(cfg.corpus)},
        "encode_precision": sae.encode_precision,
        "n_shards": (cfg.n_prompts + cfg.shard_prompts - 1) // cfg.shard_prompts,
        "shard_size": cfg.shard_prompts,
        "versions": _versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if pred_meta is not None:
        meta["pred_codes"] = pred_meta
    return meta


def _open_writer(cfg: CollectConfig, meta: dict[str, Any], dist: Any) -> StoreWriter:
    """The store writer: rank 0 writes ``meta.json`` (and clears an overwritten store) first."""
    if dist.is_main:
        writer = StoreWriter(cfg.out, meta, overwrite=cfg.overwrite)
    dist.barrier()  # rank 0 has written meta.json (and cleared an overwritten store)
    if not dist.is_main:
        writer = StoreWriter(cfg.out, meta, overwrite=False, write_meta=False)
    return writer


@dataclass
class _Timer:
    """Seconds spent in the LM forward and in the SAE encode (plus packing) over the shards."""

    lm: float = 0.0
    sae: float = 0.0


def _progress_bar(cfg: CollectConfig, todo: list[int], done: list[int], n_shards: int, dist: Any) -> Any:
    """The token progress bar of the shards to encode; says so when finished shards are reused."""
    from tqdm.auto import tqdm

    desc = f"collect [rank {dist.rank}/{dist.world}]" if dist.active else "collect"
    bar = tqdm(
        total=len(todo) * cfg.shard_prompts * cfg.prompt_len,
        unit="tok",
        unit_scale=True,
        desc=desc,
        disable=not cfg.progress or not (dist.is_main or dist.active),
    )
    if done:
        bar.write(f"resuming: {len(done)}/{n_shards} shards already in {cfg.out}")
    return bar


def _encode_shards(
    cfg: CollectConfig,
    model: Any,
    sae: Any,
    prompts: Any,
    device: torch.device,
    writer: StoreWriter,
    todo: list[int],
    bar: Any,
) -> _Timer:
    """Encode the shards ``todo`` and hand each to a background writer (disk I/O overlaps the next
    forward); returns the time spent in the LM and the SAE."""
    timer = _Timer()
    io = BackgroundWriter(max_pending=2, name="tempolens-shards")
    try:
        with torch.inference_mode():
            for si in todo:
                payload = _encode_shard(cfg, model, sae, prompts, device, si, timer, bar)
                io.submit(partial(writer.write_shard, si, **payload))
    finally:
        bar.close()
        io.close()
    return timer


def _encode_shard(
    cfg: CollectConfig, model: Any, sae: Any, prompts: Any, device: torch.device, si: int, timer: _Timer, bar: Any
) -> dict[str, Any]:
    """Shard ``si``'s prompts through the LM and the SAE, batch by batch, merged into one shard payload."""
    tokens, special = prompts.tokens, prompts.special
    lo, hi = si * cfg.shard_prompts, min((si + 1) * cfg.shard_prompts, cfg.n_prompts)
    ptrs: list[torch.Tensor] = []
    lats: list[torch.Tensor] = []
    vals: list[torch.Tensor] = []
    extras: dict[str, list[torch.Tensor]] = {}
    slot_extras: dict[str, list[torch.Tensor]] = {}
    pred_parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    for b in range(lo, hi, cfg.batch_size):
        ids = tokens[b : min(b + cfg.batch_size, hi)].to(device)
        ta = time.perf_counter()
        acts = model.hidden_at(ids)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        tb = time.perf_counter()
        timer.lm += tb - ta
        check_activations(acts, f"prompts {b}..{b + len(ids) - 1}")
        enc = sae.encode(acts.float())
        ptr, lat, val, cx = pack_codes(enc.codes.indices, enc.codes.values, enc.slot_extras)
        ptrs.append(ptr)
        lats.append(lat)
        vals.append(val)
        for k, v in cx.items():
            slot_extras.setdefault(k, []).append(v)
        if enc.pred_codes is not None:
            pp, pl, pv, _ = pack_codes(enc.pred_codes.indices, enc.pred_codes.values, signed=True)
            pred_parts.append((pp, pl, pv))
        for k, v in enc.extras.items():
            extras.setdefault(k, []).append(v.float().cpu())
        timer.sae += time.perf_counter() - tb
        bar.update(ids.numel())
    pred_csr = None
    if pred_parts:
        pred_csr = (
            _concat_ptrs([p[0] for p in pred_parts]),
            torch.cat([p[1] for p in pred_parts]),
            torch.cat([p[2] for p in pred_parts]),
        )
    return dict(
        tokens=tokens[lo:hi],
        prompt_ids=torch.arange(lo, hi),
        special=special[lo:hi],
        code_ptr=_concat_ptrs(ptrs),
        code_latent=torch.cat(lats),
        code_value=torch.cat(vals),
        extras={k: torch.cat(v) for k, v in extras.items()},
        code_extras={k: torch.cat(v) for k, v in slot_extras.items()},
        pred_codes=pred_csr,
    )


def _finish(cfg: CollectConfig, result: CollectResult, timer: _Timer, dist: Any) -> None:
    """Rank 0 writes ``collect_log.json`` and prints the summary line."""
    if dist.is_main:
        _write_log(cfg, result)
    if cfg.progress and dist.is_main:
        print(
            f"store {cfg.out}: {cfg.n_prompts} prompts × {cfg.prompt_len} tokens, {result.shards_written} shards "
            f"written, {result.shards_skipped} reused; LM {timer.lm:.1f}s, SAE {timer.sae:.1f}s, "
            f"total {result.seconds:.1f}s"
        )


PRED_RULE = (
    "per token, the k latents of largest |z_pred - center| / scale, per-latent center and scale = mean and "
    "std of z_pred over the first batch of prompts (counted tokens); stored values are the raw signed z_pred; "
    "sign = the sign of the summed centre (the orientation the dashboards read the codes in: sign * z_pred)"
)


def _pred_calibration(
    cfg: CollectConfig, sae: Any, model: Any, tokens: torch.Tensor, special: torch.Tensor, device: torch.device, k: int
) -> dict[str, Any]:
    """Set the SAE's predicted-code rule (``pred_slots``, ``pred_center``, ``pred_scale``) and return its
    ``meta.json`` entry. The calibration comes from the first batch of prompts, or from the store's
    ``meta.json`` when resuming (so every shard of a store uses the same rule)."""
    from tempolens.store.codestore import pred_orientation, read_meta

    prev = None
    if (Path(cfg.out) / "meta.json").exists() and not cfg.overwrite:
        prev = read_meta(cfg.out).get("pred_codes")  # the verified meta (a broken one is a one-line StoreError)
    if prev and prev.get("k") == k and len(prev.get("center", [])) == sae.width:
        center, scale = torch.tensor(prev["center"]), torch.tensor(prev["scale"])
    else:
        ids = tokens[: cfg.batch_size].to(device)
        with torch.inference_mode():
            acts = model.hidden_at(ids).float()
            center, scale = sae.pred_calibration(acts, (special[: cfg.batch_size] == 0).to(acts.device))
    sae.pred_slots, sae.pred_center, sae.pred_scale = k, center.to(device), scale.to(device)
    return {
        "k": k,
        "rule": PRED_RULE,
        "calibration_prompts": int(min(cfg.batch_size, len(tokens))),
        "sign": pred_orientation(center.double().tolist()),
        "center": [float(x) for x in center.tolist()],
        "scale": [float(x) for x in scale.tolist()],
    }


def _concat_ptrs(ptrs: list[torch.Tensor]) -> torch.Tensor:
    """One CSR offset array from the offset arrays of consecutive batches."""
    offsets = torch.tensor([0] + [int(p[-1]) for p in ptrs]).cumsum(0)
    return torch.cat([ptrs[0][:1]] + [p[1:] + off for p, off in zip(ptrs, offsets[:-1])])


def _portable_spec(spec: str) -> str:
    """A spec that names a local file or folder becomes its absolute path, so later stages that read
    it from ``meta.json`` (dashboards, autointerp) work from any directory; other specs are kept."""
    path = Path(spec).expanduser()
    return str(path.resolve()) if path.exists() else spec


def _write_log(cfg: CollectConfig, result: CollectResult) -> None:
    from tempolens.fsutil import atomic_write_json

    log = {
        f.name: (str(v) if isinstance(v, Path) else v)
        for f in fields(result)
        if f.name not in ("model", "sae")
        for v in [getattr(result, f.name)]
    }
    log["config"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()}
    atomic_write_json(Path(cfg.out) / "collect_log.json", log)
