"""The code store: sparse SAE codes of every prompt token, sharded on disk.

Layout of a store directory::

    meta.json                    run metadata (model, hook, SAE, corpus, seed, versions, shard plan),
                                 with ``meta_sha256``: the SHA-256 of the rest of the object (canonical JSON)
    shards/shard-00000.safetensors
    shards/shard-00000.json      {"sha256", "n_prompts", "prompt_len", "nnz", "prompt_start"} — written last;
                                 a shard counts as done only when this file exists and matches

Tensors of one shard (``P`` prompts of ``T`` tokens, ``N = P*T``):

- ``tokens``     ``[P, T]`` int32 token ids;
- ``prompt_ids`` ``[P]`` int64 global prompt indices;
- ``special``    ``[P, T]`` uint8, 1 at BOS/EOS/pad positions (kept as context, excluded from statistics);
- ``code_ptr``   ``[N + 1]`` int64 CSR offsets into the code arrays, token-major;
- ``code_latent`` ``[nnz]`` int32 latent ids; ``code_value`` ``[nnz]`` float32 activations (> 0);
- ``extra.<name>`` ``[P, T]`` float32 per-token extras (``sq_err``, ``sq_norm``, ``pred_share`` ...);
- ``code_extra.<name>`` ``[nnz]`` float32 per-code extras aligned with ``code_latent``
  (Temporal SAE: ``pred`` = the predicted code of the same latent at the same token);
- optional (Temporal SAE, ``collect --pred-k K``): the predicted codes as a second CSR,
  ``pred_ptr [N + 1]`` int64, ``pred_latent [npnz]`` int32, ``pred_value [npnz]`` float32 (signed,
  nonzero): each token's ``K`` largest ``|z_pred − center| / scale`` (per-latent calibration);
  ``meta.json`` ``pred_codes`` states the rule and holds the calibration, and its ``sign`` (±1) the
  orientation of the predicted codes (:attr:`CodeStore.pred_sign`).

Every file is written atomically (temporary file, fsync, rename), so a killed run leaves
only complete shards, and a resumed run skips them.

A store cannot lie about itself: every reader (:class:`CodeStore`) checks ``meta.json`` against its
own checksum and the shard files on disk against ``meta.json`` (shard count and names, prompts and
tokens per shard) before it returns, and names the first disagreement.
"""

from __future__ import annotations

import errno
import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from tempolens.errors import TempolensError
from tempolens.fsutil import (  # noqa: F401  (re-exported: older import paths)
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_with,
    ensure_out_dir,
    remove_stale_temporaries,
    sha256_file,
    write_sha256sums,
)

FORMAT_VERSION = 1


class StoreError(TempolensError):
    """A code store is missing, corrupt or does not match the requested run."""


META_CHECKSUM_KEY = "meta_sha256"
_SHARD_FILE = re.compile(r"shard-(\d{5,})\.(safetensors|json)")


def meta_checksum(meta: dict[str, Any]) -> str:
    """SHA-256 of ``meta`` without its own checksum field, as canonical JSON (sorted keys, no spaces)."""
    body = {k: v for k, v in meta.items() if k != META_CHECKSUM_KEY}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


REDO_META = "restore it, or collect the store again with --overwrite"


def pred_orientation(center: Iterable[float]) -> int:
    """The orientation of a store's predicted codes from their calibration centre (each latent's mean z_pred):
    −1 when the centres sum below 0 (the SAE's scale p is mostly negative, its prediction points along −D), else
    +1. ``collect`` records it as ``pred_codes.sign``; :attr:`CodeStore.pred_sign` reads it."""
    return -1 if sum(float(c) for c in center) < 0 else 1


def read_meta(root: Path | str) -> dict[str, Any]:
    """The verified ``meta.json`` of the store at ``root``: a JSON object whose checksum matches.

    Raises ``StoreError`` (one line) when the folder is no store, the file is not JSON, not an
    object, was edited after `tempolens collect` wrote it, or lacks a field that readers need."""
    root = Path(root)
    meta_path = root / "meta.json"
    if root.exists() and not root.is_dir():
        raise StoreError(f"{root} is a file, not a code store folder; pass the folder `tempolens collect --out` wrote")
    if not meta_path.is_file():
        raise StoreError(
            f"{root} is not a tempolens code store (no meta.json); create one with `tempolens collect --out {root}`"
        )
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise StoreError(f"{meta_path} is not valid JSON ({e}); {REDO_META}") from None
    if not isinstance(meta, dict):
        raise StoreError(f"{meta_path} holds a JSON {type(meta).__name__}, not an object; {REDO_META}")
    want = meta.get(META_CHECKSUM_KEY)  # first: an edited format_version is an edit, not another format
    if want is not None and want != meta_checksum(meta):
        raise StoreError(
            f"{meta_path} was changed after `tempolens collect` wrote it (its {META_CHECKSUM_KEY} does not match "
            "its content); the shards are what collect wrote: restore the original meta.json, or collect the "
            "store again with --overwrite"
        )
    if meta.get("format_version") != FORMAT_VERSION:
        raise StoreError(
            f"{root} has store format {meta.get('format_version')!r}; this tempolens reads format {FORMAT_VERSION}"
        )
    for path in ("n_shards", "shard_size", "prompts.n_prompts", "prompts.prompt_len", "sae.width"):
        v: Any = meta
        for part in path.split("."):
            v = v.get(part) if isinstance(v, dict) else None
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise StoreError(f"{meta_path}: {path} is {v!r}, not a positive integer; {REDO_META}")
    return meta


@dataclass
class Shard:
    """One shard of a code store, as torch tensors on the CPU."""

    index: int
    tokens: Tensor
    prompt_ids: Tensor
    special: Tensor
    code_ptr: Tensor
    code_latent: Tensor
    code_value: Tensor
    extras: dict[str, Tensor]
    code_extras: dict[str, Tensor]
    pred_ptr: Tensor | None = None
    """CSR offsets of the stored predicted codes (``None``: the store has none)."""
    pred_latent: Tensor | None = None
    pred_value: Tensor | None = None

    @property
    def has_pred_codes(self) -> bool:
        return self.pred_ptr is not None

    def pred_token(self) -> Tensor:
        """``[npnz]`` flat token position (shard-local) of every stored predicted code."""
        if self.pred_ptr is None:
            raise StoreError("this store keeps no predicted codes; collect again with a Temporal SAE and --pred-k > 0")
        counts = self.pred_ptr[1:] - self.pred_ptr[:-1]
        return torch.repeat_interleave(torch.arange(counts.numel(), dtype=torch.int64), counts)

    @property
    def n_prompts(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def prompt_len(self) -> int:
        return int(self.tokens.shape[1])

    @property
    def nnz(self) -> int:
        return int(self.code_latent.numel())

    def code_token(self) -> Tensor:
        """``[nnz]`` flat token position (``prompt * T + t``, shard-local) of every code."""
        counts = self.code_ptr[1:] - self.code_ptr[:-1]
        return torch.repeat_interleave(torch.arange(counts.numel(), dtype=torch.int64), counts)

    def valid_mask(self) -> Tensor:
        """``[P, T]`` bool: positions that count for statistics (not BOS/EOS/pad)."""
        return self.special == 0

    def dense(self, width: int) -> Tensor:
        """Dense ``[P, T, width]`` codes — only for tests and small shards."""
        out = torch.zeros(self.n_prompts * self.prompt_len, width, dtype=torch.float32)
        out[self.code_token(), self.code_latent.long()] = self.code_value.float()
        return out.view(self.n_prompts, self.prompt_len, width)


def pack_codes(
    indices: Tensor, values: Tensor, slot_extras: dict[str, Tensor] | None = None, signed: bool = False
) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor]]:
    """Turn padded codes ``[..., K]`` (index -1 / value 0 = empty) into CSR arrays.

    Entries with a non-positive value are dropped, so a TopK SAE that found fewer than
    ``k`` positive codes stores only the positive ones (``signed``: only zeros are dropped, for the
    predicted codes). Returns ``(ptr, latent, value, code_extras)``.
    """
    k = indices.shape[-1]
    indices = indices.reshape(-1, k)
    values = values.reshape(-1, k)
    keep = (indices >= 0) & ((values != 0) if signed else (values > 0))
    counts = keep.sum(-1)
    ptr = torch.zeros(counts.numel() + 1, dtype=torch.int64)
    ptr[1:] = torch.cumsum(counts.cpu(), 0)
    extras = {name: v.reshape(-1, k)[keep].to(torch.float32).cpu() for name, v in (slot_extras or {}).items()}
    return ptr, indices[keep].to(torch.int32).cpu(), values[keep].to(torch.float32).cpu(), extras


class CodeStore:
    """Read access to a finished (or partly finished) code store."""

    def __init__(self, root: Path | str):
        self.root = Path(root)
        self.meta: dict[str, Any] = read_meta(self.root)
        self.verify_shard_set()

    # -- metadata ---------------------------------------------------------------------------------
    @property
    def width(self) -> int:
        return int(self.meta["sae"]["width"])

    @property
    def prompt_len(self) -> int:
        return int(self.meta["prompts"]["prompt_len"])

    @property
    def n_prompts(self) -> int:
        return int(self.meta["prompts"]["n_prompts"])

    @property
    def n_shards(self) -> int:
        return int(self.meta["n_shards"])

    @property
    def pred_sign(self) -> float:
        """Orientation of the predicted codes, +1 or −1: ``z_pred = p·z`` with ``z ≥ 0`` and one scalar ``p``
        per token, so every predicted code of a token has the sign of its ``p``. An SAE whose ``p`` is mostly
        negative predicts ``−D``: its predicted codes are read as ``sign · z_pred`` (and its directions as
        ``sign · D``). ``meta.json``'s ``pred_codes.sign``, else the sign of the calibration's summed
        centre (stores collected before the sign was recorded), +1 when there is neither."""
        pc = self.meta.get("pred_codes") or {}
        if pc.get("sign") in (1, -1):
            return float(pc["sign"])
        return float(pred_orientation(pc.get("center", [])))

    @property
    def shard_dir(self) -> Path:
        return self.root / "shards"

    def shard_path(self, i: int) -> Path:
        return self.shard_dir / f"shard-{i:05d}.safetensors"

    def shard_prompts(self, i: int) -> int:
        """Prompts that shard ``i`` must hold according to ``meta.json``."""
        size = int(self.meta["shard_size"])
        return max(0, min(size, self.n_prompts - i * size))

    def _manifest(self, i: int) -> dict[str, Any]:
        man_path = self.shard_dir / f"shard-{i:05d}.json"
        redo = "delete it and its .safetensors and rerun `tempolens collect` with the same arguments to redo that shard"
        try:
            man = json.loads(man_path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise StoreError(f"shard manifest {man_path} is unreadable ({e}); {redo}") from e
        if not isinstance(man, dict) or not isinstance(man.get("sha256"), str):
            raise StoreError(f"shard manifest {man_path} is not a shard manifest; {redo}")
        return man

    def verify_shard_set(self) -> None:
        """Check the shard files on disk against ``meta.json`` (names, count, prompts and tokens per shard).

        Cheap (reads the small manifests, not the shards); missing shards are allowed here (an
        unfinished store), extra or inconsistent ones are not. Raises ``StoreError`` naming the first
        disagreement."""
        n, size, P, T = self.n_shards, int(self.meta["shard_size"]), self.n_prompts, self.prompt_len
        fix = "meta.json or shards/ was changed after collect; restore them, or collect the store again (--overwrite)"
        if n != -(-P // size):
            raise StoreError(
                f"{self.root}/meta.json says n_shards={n}, but prompts.n_prompts={P} in shards of shard_size={size} "
                f"make {-(-P // size)}; {fix}"
            )
        if not self.shard_dir.is_dir():
            return
        names = (_SHARD_FILE.fullmatch(p.name) for p in self.shard_dir.iterdir())
        extra = sorted({m.group(0) for m in names if m and int(m.group(1)) >= n})
        if extra:
            more = f" and {len(extra) - 1} more files" if len(extra) > 1 else ""
            raise StoreError(
                f"{self.shard_dir} holds {extra[0]}{more} beyond the {n} shards (shard-00000..shard-{n - 1:05d}) "
                f"that meta.json lists; {fix}"
            )
        for i in range(n):
            if not (self.shard_dir / f"shard-{i:05d}.json").exists():
                continue
            man = self._manifest(i)
            want_p = self.shard_prompts(i)
            got_p, got_t, start = man.get("n_prompts"), man.get("prompt_len", T), man.get("prompt_start", i * size)
            if got_p != want_p or got_t != T:
                raise StoreError(
                    f"shard-{i:05d} holds {got_p} prompts × {got_t} tokens, but meta.json (prompts.n_prompts={P}, "
                    f"prompts.prompt_len={T}, shard_size={size}) says {want_p} × {T}; {fix}"
                )
            if start != i * size:
                raise StoreError(
                    f"shard-{i:05d} starts at prompt {start}, but meta.json (shard_size={size}) says {i * size}; {fix}"
                )

    def done_shards(self, verify: bool = False) -> list[int]:
        """Indices of complete shards (their manifest exists; with ``verify`` the checksum matches)."""
        done = []
        for i in range(self.n_shards):
            man = self.shard_dir / f"shard-{i:05d}.json"
            if man.exists() and self.shard_path(i).exists():
                if verify:
                    self._check(i)
                done.append(i)
        return done

    @property
    def complete(self) -> bool:
        return len(self.done_shards()) == self.n_shards

    def _check(self, i: int) -> dict:
        man_path = self.shard_dir / f"shard-{i:05d}.json"
        man = self._manifest(i)
        got = sha256_file(self.shard_path(i))
        if got != man["sha256"]:
            raise StoreError(
                f"shard {self.shard_path(i)} is corrupt (sha256 {got[:12]}… ≠ {man['sha256'][:12]}…); "
                f"delete it and {man_path.name} and rerun `tempolens collect` with the same arguments to redo that "
                "shard"
            )
        return man

    # -- data ---------------------------------------------------------------------------------------
    def load_shard(self, i: int, verify: bool = True) -> Shard:
        path = self.shard_path(i)
        if not path.exists():
            raise StoreError(
                f"shard {i} of {self.root} is missing; rerun `tempolens collect` with the same arguments to finish "
                "the store"
            )
        if verify:
            self._check(i)
        try:
            t = load_file(str(path))
        except Exception as e:  # safetensors raises its own error types
            raise StoreError(
                f"shard {path} cannot be read ({e}); delete it and its .json and rerun `tempolens collect`"
            ) from e
        self._check_shape(i, t)
        extras = {k.split(".", 1)[1]: v for k, v in t.items() if k.startswith("extra.")}
        code_extras = {k.split(".", 1)[1]: v for k, v in t.items() if k.startswith("code_extra.")}
        return Shard(
            pred_ptr=t.get("pred_ptr"),
            pred_latent=t.get("pred_latent"),
            pred_value=t.get("pred_value"),
            index=i,
            tokens=t["tokens"],
            prompt_ids=t["prompt_ids"],
            special=t["special"],
            code_ptr=t["code_ptr"],
            code_latent=t["code_latent"],
            code_value=t["code_value"],
            extras=extras,
            code_extras=code_extras,
        )

    def _check_shape(self, i: int, t: dict[str, Tensor]) -> None:
        """The tensors of shard ``i`` must have the shape ``meta.json`` promises."""
        fix = "meta.json or the shard was changed after collect; restore them, or collect the store again (--overwrite)"
        redo = "delete it and its .json and rerun `tempolens collect`"
        need = ("tokens", "prompt_ids", "special", "code_ptr", "code_latent", "code_value")
        if any(k not in t for k in need):
            raise StoreError(f"shard {self.shard_path(i)} lacks {[k for k in need if k not in t]}; {redo}")
        want = (self.shard_prompts(i), self.prompt_len)
        got = tuple(t["tokens"].shape) + ("?", "?")
        if got[:2] != want:
            raise StoreError(
                f"shard-{i:05d} holds {got[0]} prompts × {got[1]} tokens, but meta.json (prompts.n_prompts="
                f"{self.n_prompts}, prompts.prompt_len={self.prompt_len}) says {want[0]} × {want[1]}; {fix}"
            )
        ids, size = t["prompt_ids"], int(self.meta["shard_size"])
        if ids.numel() and int(ids[0]) != i * size:
            raise StoreError(
                f"shard-{i:05d} starts at prompt {int(ids[0])}, but meta.json (shard_size={size}) says "
                f"{i * size}; {fix}"
            )
        if t["code_ptr"].numel() != want[0] * want[1] + 1:
            raise StoreError(
                f"shard {self.shard_path(i)} has {t['code_ptr'].numel() - 1} token offsets for "
                f"{want[0] * want[1]} tokens; {redo}"
            )
        lat = t["code_latent"]
        if lat.numel() and (int(lat.max()) >= self.width or int(lat.min()) < 0):
            raise StoreError(
                f"shard-{i:05d} holds latent {int(lat.max())}, but meta.json says sae.width={self.width}; {fix}"
            )

    def iter_shards(self, verify: bool = True) -> Iterator[Shard]:
        if not self.complete:
            done = len(self.done_shards())
            raise StoreError(
                f"{self.root} is incomplete ({done}/{self.n_shards} shards); rerun `tempolens collect` with the same "
                "arguments to finish it"
            )
        for i in range(self.n_shards):
            yield self.load_shard(i, verify=verify)

    def all_tokens(self) -> Tensor:
        """``[n_prompts, T]`` token ids of every prompt (small: ids only)."""
        return torch.cat([self.load_shard(i, verify=False).tokens for i in range(self.n_shards)])


class StoreWriter:
    """Writes shards of a store; knows which shards a previous run already finished."""

    def __init__(self, root: Path | str, meta: dict[str, Any], overwrite: bool = False, write_meta: bool = True):
        self.root = Path(root)
        if write_meta:
            ensure_out_dir(self.root)
        (self.root / "shards").mkdir(exist_ok=True)
        meta = {**meta, "format_version": FORMAT_VERSION}
        meta.pop(META_CHECKSUM_KEY, None)
        meta[META_CHECKSUM_KEY] = meta_checksum(meta)
        meta_path = self.root / "meta.json"
        if meta_path.exists() and not overwrite:
            old = CodeStore(self.root).meta  # verified: checksum, and the shards on disk against it
            mismatched = [
                k
                for k in ("model", "sae", "prompts", "n_shards", "shard_size", "pred_codes")
                if old.get(k) != meta.get(k)
            ]
            if mismatched:
                raise StoreError(
                    f"{self.root} holds a store of a different run (differs in: {', '.join(mismatched)}); "
                    "use another --out, or pass --overwrite to replace it"
                )
        elif meta_path.exists() and overwrite:
            for p in (self.root / "shards").iterdir():
                if p.is_file():
                    p.unlink()
        if write_meta:
            remove_stale_temporaries(self.root)  # rank 0 only, before any rank writes a shard
            atomic_write_json(meta_path, meta)
        self.store = CodeStore(self.root)

    def done_shards(self) -> set[int]:
        return set(self.store.done_shards())

    def write_shard(
        self,
        i: int,
        *,
        tokens: Tensor,
        prompt_ids: Tensor,
        special: Tensor,
        code_ptr: Tensor,
        code_latent: Tensor,
        code_value: Tensor,
        extras: dict[str, Tensor],
        code_extras: dict[str, Tensor] | None = None,
        pred_codes: tuple[Tensor, Tensor, Tensor] | None = None,
    ) -> None:
        """Write shard ``i`` atomically, then its manifest. ``pred_codes``: optional ``(ptr, latent,
        value)`` CSR of the predicted codes (see the module docstring)."""
        tensors = _shard_tensors(
            tokens=tokens,
            prompt_ids=prompt_ids,
            special=special,
            code_ptr=code_ptr,
            code_latent=code_latent,
            code_value=code_value,
            extras=extras,
            code_extras=code_extras,
            pred_codes=pred_codes,
        )
        path = self.store.shard_path(i)
        self._save_atomically(tensors, path)
        atomic_write_json(
            self.store.shard_dir / f"shard-{i:05d}.json",
            {
                "sha256": sha256_file(path),
                "n_prompts": int(tokens.shape[0]),
                "prompt_len": int(tokens.shape[1]),
                "nnz": int(code_latent.numel()),
                "prompt_start": int(prompt_ids[0]) if len(prompt_ids) else 0,
            },
        )

    def _save_atomically(self, tensors: dict[str, Tensor], path: Path) -> None:
        """Save ``tensors`` to a temporary file beside ``path``, fsync it and rename it over ``path``; on failure
        the temporary file is removed and a full disk or an unwritable folder is a ``StoreError``."""
        try:
            atomic_write_with(path, lambda tmp: save_file(tensors, str(tmp)))
        except OSError as e:
            if e.errno == errno.ENOSPC:
                raise self._disk_full(path) from e
            raise
        except (
            RuntimeError,
            SafetensorError,
        ) as e:  # safetensors wraps I/O errors (SafetensorError is no RuntimeError)
            if "os error 28" in str(e) or "No space left" in str(e):
                raise self._disk_full(path) from e
            raise StoreError(
                f"could not write {path}: {e}; free space or fix permissions and rerun — finished shards are kept"
            ) from e

    def _disk_full(self, path: Path) -> StoreError:
        """The error of a disk that filled up while ``path`` was written (the finished shards are kept)."""
        return StoreError(
            f"disk full while writing {path}; free space and rerun the same command — "
            f"{len(self.done_shards())} finished shards are kept"
        )


def _shard_tensors(
    *,
    tokens: Tensor,
    prompt_ids: Tensor,
    special: Tensor,
    code_ptr: Tensor,
    code_latent: Tensor,
    code_value: Tensor,
    extras: dict[str, Tensor],
    code_extras: dict[str, Tensor] | None = None,
    pred_codes: tuple[Tensor, Tensor, Tensor] | None = None,
) -> dict[str, Tensor]:
    """The named tensors of one shard file, each in its stored dtype and contiguous: tokens, prompt ids,
    special flags, the codes' CSR, ``extra.<name>`` per token, ``code_extra.<name>`` per code and, when
    given, the predicted codes' CSR (``pred_ptr``/``pred_latent``/``pred_value``)."""
    tensors = {
        "tokens": tokens.to(torch.int32).contiguous(),
        "prompt_ids": prompt_ids.to(torch.int64).contiguous(),
        "special": special.to(torch.uint8).contiguous(),
        "code_ptr": code_ptr.to(torch.int64).contiguous(),
        "code_latent": code_latent.to(torch.int32).contiguous(),
        "code_value": code_value.to(torch.float32).contiguous(),
    }
    for k, v in extras.items():
        tensors[f"extra.{k}"] = v.to(torch.float32).contiguous()
    for k, v in (code_extras or {}).items():
        tensors[f"code_extra.{k}"] = v.to(torch.float32).contiguous()
    if pred_codes is not None:
        tensors["pred_ptr"] = pred_codes[0].to(torch.int64).contiguous()
        tensors["pred_latent"] = pred_codes[1].to(torch.int32).contiguous()
        tensors["pred_value"] = pred_codes[2].to(torch.float32).contiguous()
    return tensors
