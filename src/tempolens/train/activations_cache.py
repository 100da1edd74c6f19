"""Activations for SAE training: streamed from the subject model or read from an on-disk cache.

Both sources see the *same* prompts (``tempolens.sources.corpora.build_prompts`` with one seed)
and split them the same way: the last ``n_heldout`` prompts are the held-out split, disjoint from
the training prompts. A source answers ``fetch(prompt_ids) → (acts [n, T, d] float32, special
[n, T] bool)``; ``iter_batches`` turns a source into a deterministic, resumable batch sequence
(one seeded permutation of the training prompts per epoch; batch ``j`` of the run is a pure
function of the seed and ``j``), so a TopK SAE and a Temporal SAE trained from one cache see
identical batches, and a resumed run continues exactly where it stopped.

Cache layout (a directory, written atomically and resumable shard by shard)::

    meta.json                       what the activations are (model, layer, corpus, prompts, split)
    shards/acts-00000.safetensors   acts [P, T, d] float16, tokens [P, T] int32,
                                    special [P, T] uint8, prompt_ids [P] int64
    shards/acts-00000.json          {"sha256", "n_prompts", "scale_exp"}: written last; a shard
                                    counts as done only when this file exists

Activations are stored as ``float16(x · 2^-scale_exp)``; ``scale_exp`` (≥ 0, per shard) is chosen
so the largest value fits float16 (Gemma's BOS residual can exceed 65504), and is undone on read.
Reads are memory-mapped per prompt (``safe_open(...).get_slice``), so memory stays bounded by one
batch however large the cache.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor

from tempolens.errors import SourceError
from tempolens.fsutil import atomic_write_bytes, atomic_write_json, sha256_file

CACHE_FORMAT = 1
FP16_SAFE_MAX = 32768.0


class CacheError(SourceError):
    """An activation cache is missing, corrupt, or was built for different data."""


@dataclass(frozen=True)
class ActivationSpec:
    """Everything that determines a set of training activations (and so the cache contents)."""

    model: str
    """Subject model spec (``embedded``, hub id, folder, ``.gguf``)."""
    layer: int
    """Decoder block whose output is captured."""
    corpus: str
    """Corpus spec (see ``tempolens.sources.corpora.iter_documents``)."""
    prompt_len: int
    """Tokens per prompt including BOS."""
    n_prompts: int
    """Prompts in total (training + held-out)."""
    n_heldout: int
    """The last ``n_heldout`` prompts are the held-out split."""
    seed: int
    """Seed of the prompt builder's document shuffle."""
    lm_dtype: str = "float32"
    """Dtype the subject model ran in."""

    def key(self) -> str:
        """A short content hash of the spec (names an automatic cache folder)."""
        blob = json.dumps(asdict(self), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    @property
    def n_train(self) -> int:
        return self.n_prompts - self.n_heldout

    def split_ids(self, split: str) -> Tensor:
        """Global prompt indices of ``split`` (``train`` or ``heldout``)."""
        if split == "train":
            return torch.arange(0, self.n_train)
        if split == "heldout":
            return torch.arange(self.n_train, self.n_prompts)
        raise ValueError(f"unknown split {split!r}")


def plan_prompts(n_tokens: int, prompt_len: int, heldout_fraction: float) -> tuple[int, int]:
    """``(n_prompts, n_heldout)`` so that the training split has at least ``n_tokens`` counted tokens.

    Counted tokens exclude the BOS position (``prompt_len - 1`` per prompt); the held-out split
    adds ``heldout_fraction`` of the total on top (at least one prompt when the fraction is > 0).
    """
    n_train = max(1, math.ceil(n_tokens / max(prompt_len - 1, 1)))
    if heldout_fraction <= 0:
        return n_train, 0
    n_total = math.ceil(n_train / (1.0 - heldout_fraction))
    return n_total, max(1, n_total - n_train)


class ActivationSource(Protocol):
    """Anything that returns activations for global prompt indices."""

    spec: ActivationSpec
    d_in: int

    def fetch(self, prompt_ids: Tensor) -> tuple[Tensor, Tensor]:
        """``(acts [n, T, d] float32 on CPU, special [n, T] bool)`` for ``prompt_ids``, in that order."""
        ...


# ----------------------------------------------------------------------------------------------
# Streaming from the subject model


class LMSource:
    """Activations computed on demand by the subject model (a forward stopped after the hook block)."""

    def __init__(self, spec: ActivationSpec, model: Any, tokens: Tensor, special: Tensor, batch_size: int = 8):
        if tokens.shape != (spec.n_prompts, spec.prompt_len):
            raise SourceError(
                f"the prompt builder returned {tuple(tokens.shape)} tokens for {spec.n_prompts} prompts of "
                f"{spec.prompt_len}; "
                "the corpus is too small for --n-tokens: lower it or pick a larger corpus"
            )
        self.spec = spec
        self.model = model
        self.tokens = tokens
        self.special = special.bool()
        self.batch_size = batch_size
        self.d_in = int(model.hidden_size)

    @torch.inference_mode()
    def fetch(self, prompt_ids: Tensor) -> tuple[Tensor, Tensor]:
        from tempolens.sources.open import check_activations

        ids = prompt_ids.long()
        out = []
        device = _model_device(self.model)
        for i in range(0, len(ids), self.batch_size):
            chunk = ids[i : i + self.batch_size]
            acts = self.model.hidden_at(self.tokens[chunk].to(device))
            check_activations(acts, f"prompts {chunk[:4].tolist()}…")
            out.append(acts.float().cpu())
        acts = torch.cat(out) if out else torch.zeros(0, self.spec.prompt_len, self.d_in)
        return acts, self.special[ids]


def _model_device(model: Any) -> torch.device:
    dev = getattr(model, "device", None)
    if isinstance(dev, torch.device):
        return dev
    if isinstance(dev, str):
        return torch.device(dev)
    try:
        return next(model.model.parameters()).device  # type: ignore[attr-defined]
    except Exception:
        return torch.device("cpu")


def open_lm_source(spec: ActivationSpec, device: str = "auto", batch_size: int = 8) -> LMSource:
    """Load the subject model and build the prompts of ``spec``."""
    from tempolens.devices import resolve_device
    from tempolens.sources.corpora import build_prompts, iter_documents
    from tempolens.sources.open import load_subject_model

    dev = resolve_device(device)
    model = load_subject_model(spec.model, layer=spec.layer, device=str(dev), dtype=spec.lm_dtype)
    prompts = build_prompts(
        model.tokenizer,
        iter_documents(spec.corpus),
        n_prompts=spec.n_prompts,
        prompt_len=spec.prompt_len,
        seed=spec.seed,
    )
    return LMSource(spec, model, prompts.tokens, prompts.special, batch_size=batch_size)


# ----------------------------------------------------------------------------------------------
# The on-disk cache


def _spec_from_meta(meta: dict) -> ActivationSpec:
    return ActivationSpec(**meta["spec"])


class ActivationCache:
    """A finished (or partly written) activation cache directory; see the module docstring."""

    def __init__(self, root: Path | str):
        self.root = Path(root)
        meta_path = self.root / "meta.json"
        if not meta_path.exists():
            raise CacheError(
                f"{self.root} is not an activation cache (no meta.json); build it with `tempolens train --cache-dir "
                f"{self.root}`"
            )
        try:
            self.meta = json.loads(meta_path.read_text())
            self.spec = _spec_from_meta(self.meta)
        except (ValueError, TypeError, KeyError) as e:
            raise CacheError(f"{meta_path} is unreadable ({e}); delete {self.root} and rebuild the cache") from None
        if self.meta.get("format") != CACHE_FORMAT:
            raise CacheError(
                f"{self.root} has cache format {self.meta.get('format')}, this tempolens reads {CACHE_FORMAT}; delete "
                "it and rebuild"
            )
        self.d_in = int(self.meta["d_in"])
        self.shard_prompts = int(self.meta["shard_prompts"])
        self._handles: dict[int, Any] = {}
        self._scales: dict[int, float] = {}

    # layout
    @property
    def n_shards(self) -> int:
        return math.ceil(self.spec.n_prompts / self.shard_prompts)

    def shard_path(self, i: int) -> Path:
        return self.root / "shards" / f"acts-{i:05d}.safetensors"

    def done_path(self, i: int) -> Path:
        return self.root / "shards" / f"acts-{i:05d}.json"

    def done_shards(self) -> list[int]:
        return [i for i in range(self.n_shards) if self.done_path(i).exists() and self.shard_path(i).exists()]

    def complete(self) -> bool:
        return len(self.done_shards()) == self.n_shards

    def verify(self) -> None:
        """Check every shard's sha256 against its done marker (raises ``CacheError``)."""
        for i in range(self.n_shards):
            info = self._done_info(i)
            if sha256_file(self.shard_path(i)) != info["sha256"]:
                raise CacheError(
                    f"{self.shard_path(i)} does not match its checksum; delete it and rerun to rebuild that shard"
                )

    def _done_info(self, i: int) -> dict:
        try:
            return json.loads(self.done_path(i).read_text())
        except (OSError, ValueError):
            raise CacheError(
                f"shard {i} of {self.root} is missing; rerun the same command to finish the cache"
            ) from None

    def _handle(self, i: int) -> Any:
        from safetensors import safe_open

        h = self._handles.get(i)
        if h is None:
            info = self._done_info(i)
            try:
                h = safe_open(str(self.shard_path(i)), framework="pt")
            except Exception as e:  # safetensors raises its own error types
                raise CacheError(
                    f"cannot read {self.shard_path(i)} ({e}); delete it and rerun to rebuild that shard"
                ) from None
            self._handles[i] = h
            self._scales[i] = float(2.0 ** int(info.get("scale_exp", 0)))
        return h

    def fetch(self, prompt_ids: Tensor) -> tuple[Tensor, Tensor]:
        """``(acts [n, T, d] float32, special [n, T] bool)`` of global prompt indices, in that order."""
        ids = prompt_ids.long().tolist()
        T, d = self.spec.prompt_len, self.d_in
        acts = torch.empty(len(ids), T, d, dtype=torch.float32)
        special = torch.empty(len(ids), T, dtype=torch.bool)
        for j, p in enumerate(ids):
            if not 0 <= p < self.spec.n_prompts:
                raise CacheError(f"prompt {p} is outside the cache (0..{self.spec.n_prompts - 1})")
            si, local = divmod(p, self.shard_prompts)
            h = self._handle(si)
            acts[j] = h.get_slice("acts")[local : local + 1].float()[0] * self._scales[si]
            special[j] = h.get_slice("special")[local : local + 1][0].bool()
        return acts, special

    def tokens(self, prompt_ids: Tensor) -> Tensor:
        """``[n, T]`` token ids of global prompt indices."""
        rows = []
        for p in prompt_ids.long().tolist():
            si, local = divmod(p, self.shard_prompts)
            rows.append(self._handle(si).get_slice("tokens")[local : local + 1][0].long())
        return torch.stack(rows) if rows else torch.zeros(0, self.spec.prompt_len, dtype=torch.long)


def _existing_cache(root: Path, spec: ActivationSpec) -> ActivationCache | None:
    """The cache already at ``root`` (None when there is none); a cache of another spec is refused."""
    if not (root / "meta.json").exists():
        return None
    cache = ActivationCache(root)
    if cache.spec != spec:
        raise CacheError(
            f"{root} holds activations of a different run ({cache.spec}); "
            "pass another --cache-dir or delete that folder"
        )
    return cache


def _cache_meta(spec: ActivationSpec, source: LMSource, shard_prompts: int) -> dict[str, Any]:
    """The ``meta.json`` of a new cache of ``spec`` written from ``source``."""
    return {
        "format": CACHE_FORMAT,
        "spec": asdict(spec),
        "d_in": source.d_in,
        "shard_prompts": shard_prompts,
        "dtype": "float16",
        "model_id": getattr(source.model, "model_id", spec.model),
        "hook_name": getattr(source.model, "hook_name", f"blocks.{spec.layer}.hook_resid_post"),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _shard_bounds(spec: ActivationSpec, shard_prompts: int, i: int) -> tuple[int, int]:
    """Global prompt indices ``[lo, hi)`` of shard ``i``."""
    return i * shard_prompts, min((i + 1) * shard_prompts, spec.n_prompts)


def _shards_to_write(
    cache: ActivationCache, spec: ActivationSpec, shard_prompts: int, done: set[int], start_shard: int
) -> list[int]:
    """The unfinished shards in writing order: those holding held-out prompts first (a cache cut short still
    has its evaluation split), then from ``start_shard`` on, then the ones before it."""
    first_heldout = spec.n_train // shard_prompts
    return sorted(
        (i for i in range(cache.n_shards) if i not in done), key=lambda i: (i < first_heldout, i < start_shard, i)
    )


def _write_cache_shard(
    cache: ActivationCache,
    source: LMSource,
    spec: ActivationSpec,
    shard_prompts: int,
    i: int,
    batch_size: int,
    bar: Any,
) -> None:
    """Compute shard ``i``'s activations ``batch_size`` prompts at a time, write it atomically, then its done
    marker (checksum, prompt count, float16 scale)."""
    from safetensors.torch import save

    lo, hi = _shard_bounds(spec, shard_prompts, i)
    ids = torch.arange(lo, hi)
    parts = []
    for b in range(0, len(ids), batch_size):
        a, _ = source.fetch(ids[b : b + batch_size])
        parts.append(a)
        bar.update(a.shape[0] * a.shape[1])
    acts = torch.cat(parts)
    scale_exp = fp16_scale_exp(acts)
    payload = {
        "acts": (acts * 2.0**-scale_exp).to(torch.float16).contiguous(),
        "tokens": source.tokens[lo:hi].to(torch.int32).contiguous(),
        "special": source.special[lo:hi].to(torch.uint8).contiguous(),
        "prompt_ids": ids.to(torch.int64),
    }
    atomic_write_bytes(cache.shard_path(i), save(payload))
    atomic_write_json(
        cache.done_path(i), {"sha256": sha256_file(cache.shard_path(i)), "n_prompts": hi - lo, "scale_exp": scale_exp}
    )


def _fill_cache(
    cache: ActivationCache,
    source: LMSource,
    spec: ActivationSpec,
    shard_prompts: int,
    batch_size: int,
    progress: bool,
    start_shard: int,
) -> None:
    """Write every shard of ``cache`` that is not finished, skipping those another process finishes meanwhile."""
    from tqdm.auto import tqdm

    def n_tokens(i: int) -> int:
        return min(shard_prompts, spec.n_prompts - i * shard_prompts) * spec.prompt_len

    done = set(cache.done_shards())
    todo = _shards_to_write(cache, spec, shard_prompts, done, start_shard)
    bar = tqdm(
        total=sum(n_tokens(i) for i in todo),
        unit="tok",
        unit_scale=True,
        desc="cache activations",
        disable=not progress,
    )
    if done:
        bar.write(f"resuming the activation cache: {len(done)}/{cache.n_shards} shards already in {cache.root}")
    try:
        for i in todo:
            if cache.done_path(i).exists():  # finished meanwhile by another process
                bar.update(n_tokens(i))
                continue
            _write_cache_shard(cache, source, spec, shard_prompts, i, batch_size, bar)
    finally:
        bar.close()


def build_cache(
    root: Path | str,
    spec: ActivationSpec,
    *,
    device: str = "auto",
    batch_size: int = 8,
    shard_prompts: int = 64,
    source: LMSource | None = None,
    progress: bool = True,
    start_shard: int = 0,
) -> ActivationCache:
    """Write (or finish) the activation cache of ``spec`` at ``root`` and return it.

    Finished shards are kept, so rerunning after a kill resumes. A cache of a different spec at
    ``root`` is refused (``CacheError``). ``source`` may pass an already loaded ``LMSource``.
    Several processes may fill one cache at once: each skips shards another has finished, and
    ``start_shard`` lets them begin at different places (shards are written atomically).
    """
    root = Path(root)
    meta_path = root / "meta.json"
    existing = _existing_cache(root, spec)
    if existing is not None:
        shard_prompts = existing.shard_prompts
        if existing.complete():
            return existing
    if source is None:
        source = open_lm_source(spec, device=device, batch_size=batch_size)
    (root / "shards").mkdir(parents=True, exist_ok=True)
    if not meta_path.exists():
        atomic_write_json(meta_path, _cache_meta(spec, source, shard_prompts))
    _fill_cache(ActivationCache(root), source, spec, shard_prompts, batch_size, progress, start_shard)
    return ActivationCache(root)


def fp16_scale_exp(acts: Tensor) -> int:
    """Smallest ``e ≥ 0`` with ``max|acts| · 2^-e`` inside the float16 range (with headroom)."""
    m = float(acts.abs().max()) if acts.numel() else 0.0
    if not math.isfinite(m):
        raise SourceError("activations contain NaN/inf; try a float32 model (--lm-dtype float32)")
    return max(0, math.ceil(math.log2(m / FP16_SAFE_MAX))) if m > FP16_SAFE_MAX else 0


# ----------------------------------------------------------------------------------------------
# Deterministic, resumable batches


@dataclass(frozen=True)
class Batch:
    """One training batch: whole prompts (the Temporal SAE's context is the whole sequence)."""

    step: int
    """Global step index of this batch (0-based)."""
    epoch: int
    prompt_ids: Tensor
    """``[n]`` global prompt indices."""
    acts: Tensor
    """``[n, T, d]`` float32 activations in model units."""
    special: Tensor
    """``[n, T]`` bool; BOS/EOS/pad positions (context only, excluded from the loss)."""


def batches_per_epoch(n_train: int, batch_prompts: int) -> int:
    """Full batches per epoch (the ragged remainder of each epoch's permutation is dropped)."""
    return max(1, n_train // batch_prompts) if n_train >= batch_prompts else 1


def batch_prompt_ids(train_ids: Tensor, batch_prompts: int, seed: int, step: int) -> tuple[int, Tensor]:
    """``(epoch, prompt_ids)`` of global step ``step``: a pure function of its arguments."""
    per_epoch = batches_per_epoch(len(train_ids), batch_prompts)
    epoch, j = divmod(step, per_epoch)
    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + epoch)
    perm = torch.randperm(len(train_ids), generator=g)
    return epoch, train_ids[perm[j * batch_prompts : (j + 1) * batch_prompts]]


def iter_batches(
    source: ActivationSource, batch_prompts: int, seed: int, start_step: int = 0, n_steps: int | None = None
) -> Iterator[Batch]:
    """Training batches ``start_step, start_step + 1, …`` (forever unless ``n_steps`` is given)."""
    train_ids = source.spec.split_ids("train")
    step = start_step
    while n_steps is None or step < start_step + n_steps:
        epoch, ids = batch_prompt_ids(train_ids, batch_prompts, seed, step)
        acts, special = source.fetch(ids)
        yield Batch(step=step, epoch=epoch, prompt_ids=ids, acts=acts, special=special)
        step += 1


def iter_split(source: ActivationSource, split: str, batch_prompts: int) -> Iterator[tuple[Tensor, Tensor]]:
    """``(acts, special)`` of every prompt of ``split`` in order, ``batch_prompts`` at a time."""
    ids = source.spec.split_ids(split)
    for i in range(0, len(ids), batch_prompts):
        yield source.fetch(ids[i : i + batch_prompts])
