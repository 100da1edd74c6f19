"""The subject model: any HF causal LM (hub id, local folder or ``.gguf`` file).

Commands open models through :mod:`tempolens.sources.open`, which also resolves the ``embedded`` spec.

``SubjectModel.hidden_at(ids)`` returns the residual stream after decoder block ``L`` (TransformerLens
``blocks.L.hook_resid_post``) from a forward pass that *stops* after block ``L``: a forward hook on
``layers[L]`` stores the block's output and raises a private exception, so later blocks, the final
norm and the unembedding are never computed. That is the cost floor of collecting activations
(on Gemma 3 270M, 8×128 tokens, stopping after block 6 is ≈8× faster than the full
causal-LM forward).

GGUF files are dequantised by transformers once and cached as an ordinary HF folder (model and
tokenizer) under ``<cache>/models``; later loads read the folder (seconds instead of minutes).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from tempolens.devices import resolve_device
from tempolens.errors import SourceError
from tempolens.fsutil import file_lock, fresh_tmp_dir, publish_dir
from tempolens.sources.cache import models_dir
from tempolens.sources.hub import first_uncached, hub_offline, is_connection_error, not_cached_message

DType = Literal["float32", "bfloat16", "float16"]
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
NormKind = Literal["rmsnorm", "layernorm", "none"]

CONVERTED_MARKER = "tempolens-converted.json"
_BYTE_PIECE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_QUANT_SUFFIX = re.compile(r"[-_.](?:i?q\d[\w]*|f16|f32|bf16|fp16|fp32|gguf)$", re.IGNORECASE)


class _StopForward(Exception):
    """Raised from the hook on block L to end the forward pass there (never escapes ``hidden_at``)."""


def neuronpedia_model_id(name: str) -> str:
    """A Neuronpedia-style model id from a hub id, folder or GGUF name.

    ``google/gemma-2-2b`` → ``gemma-2-2b``; ``gemma-3-270m-q4_k_m.gguf`` → ``gemma-3-270m``.
    (Neuronpedia's own ids are not always derivable, e.g. ``llama3.1-8b``: pass ``model_id=``.)
    """
    base = str(name).rstrip("/\\").replace("\\", "/").split("/")[-1]
    base = re.sub(r"\.gguf$", "", base, flags=re.IGNORECASE)
    prev = None
    while prev != base:
        prev, base = base, _QUANT_SUFFIX.sub("", base)
    return base.lower() or "model"


def find_decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The list of decoder blocks of an HF causal LM (``model.model.layers``, ``transformer.h``, ...).

    Looks for the ``nn.ModuleList`` whose length is ``config.num_hidden_layers`` (the shortest
    qualified name wins, so nested lists inside blocks are never chosen).
    """
    n = _num_layers(model)
    candidates = [
        (name, mod) for name, mod in model.named_modules() if isinstance(mod, nn.ModuleList) and len(mod) == n and n > 0
    ]
    if not candidates:
        raise SourceError(
            f"cannot find the {n} decoder blocks of {type(model).__name__}; this architecture is not supported yet"
        )
    candidates.sort(key=lambda nm: (nm[0].count("."), len(nm[0])))
    return candidates[0][1]


def _num_layers(model: nn.Module) -> int:
    cfg = getattr(model, "config", None)
    cfg = getattr(cfg, "text_config", None) or cfg
    for attr in ("num_hidden_layers", "n_layer", "num_layers"):
        n = getattr(cfg, attr, None)
        if isinstance(n, int):
            return n
    raise SourceError(
        f"the config of {type(model).__name__} has no number of layers; this architecture is not supported yet"
    )


def find_final_norm(model: nn.Module) -> nn.Module | None:
    """The final norm applied before the unembedding, or None if the model has none."""
    roots: list[nn.Module] = []
    try:
        roots.append(model.get_decoder())  # type: ignore[operator]
    except Exception:  # noqa: BLE001 - best effort lookup
        pass
    roots += [
        getattr(model, a)
        for a in ("model", "transformer", "gpt_neox")
        if isinstance(getattr(model, a, None), nn.Module)
    ]
    for root in roots:
        for attr in ("norm", "final_layernorm", "ln_f", "final_layer_norm", "final_norm"):
            mod = getattr(root, attr, None)
            if isinstance(mod, nn.Module):
                return mod
        decoder = getattr(root, "decoder", None)
        if isinstance(decoder, nn.Module):
            for attr in ("final_layer_norm", "norm"):
                mod = getattr(decoder, attr, None)
                if isinstance(mod, nn.Module):
                    return mod
    return None


def effective_norm_multiplier(norm: nn.Module, d: int) -> tuple[torch.Tensor, NormKind]:
    """The per-dimension multiplier a final norm applies after normalising, measured by running it.

    RMSNorm: ``norm(c·1)`` equals the multiplier (``c·1`` normalises to ``1``; a large ``c`` makes eps negligible),
    which is ``w`` for Llama-style norms and ``1 + w`` for Gemma-style norms — measuring avoids guessing
    the convention from the class name. LayerNorm (has a ``bias``) returns its ``weight``; the bias
    only shifts the logits and is not part of the multiplier.
    """
    bias = getattr(norm, "bias", None)
    weight = getattr(norm, "weight", None)
    if isinstance(bias, torch.Tensor) or isinstance(norm, nn.LayerNorm):
        w = weight.detach().float().cpu() if isinstance(weight, torch.Tensor) else torch.ones(d)
        return w.clone(), "layernorm"
    p = next(norm.parameters(), None)
    device = p.device if p is not None else torch.device("cpu")
    dtype = p.dtype if p is not None else torch.float32
    c = 1e3 if dtype == torch.float32 else 1.0
    with torch.inference_mode():
        x = torch.full((1, 1, d), c, device=device, dtype=dtype)
        y = norm(x).float().reshape(d).cpu()  # x̂ = x / rms(x) = 1, so the output is the multiplier
    return y.clone(), "rmsnorm"


class SubjectModel:
    """An HF causal LM read up to one decoder block.

    Attributes: ``model`` (the HF module), ``tokenizer``, ``model_id`` (Neuronpedia style, e.g.
    ``gemma-3-270m``), ``source`` (what was loaded), ``hidden_size``, ``n_layers``, ``layer``,
    ``hook_name`` (``blocks.{L}.hook_resid_post``), ``device``, ``dtype``, ``bos_id``, ``eos_id``,
    ``pad_id`` (``None`` where the tokenizer has none), ``vocab_size``.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        layer: int,
        model_id: str,
        source: str = "",
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.source = source
        self._layers = find_decoder_layers(model)
        self.n_layers = len(self._layers)
        if not isinstance(layer, int) or isinstance(layer, bool) or not 0 <= layer < self.n_layers:
            raise SourceError(
                f"layer {layer!r} is out of range for {model_id}: it has {self.n_layers} blocks, so use "
                f"0..{self.n_layers - 1}"
            )
        self.layer = layer
        self.hook_name = f"blocks.{layer}.hook_resid_post"
        cfg = getattr(model.config, "text_config", None) or model.config
        self.hidden_size = int(getattr(cfg, "hidden_size", None) or cfg.n_embd)
        p = next(model.parameters())
        self.device = p.device
        self.dtype = p.dtype
        self.bos_id: int | None = getattr(tokenizer, "bos_token_id", None)
        self.eos_id: int | None = getattr(tokenizer, "eos_token_id", None)
        self.pad_id: int | None = getattr(tokenizer, "pad_token_id", None)
        self.vocab_size = (
            int(model.get_output_embeddings().weight.shape[0])
            if model.get_output_embeddings() is not None
            else len(tokenizer)
        )
        self._piece_cache: dict[int, str] = {}

    def __repr__(self) -> str:
        return (
            f"SubjectModel({self.model_id!r}, hook={self.hook_name!r}, d={self.hidden_size}, "
            f"blocks={self.n_layers}, device={self.device}, dtype={str(self.dtype).removeprefix('torch.')})"
        )

    @property
    def special_ids(self) -> set[int]:
        """BOS, EOS and pad ids: positions holding them are context but never statistics."""
        return {i for i in (self.bos_id, self.eos_id, self.pad_id) if i is not None}

    def hidden_at(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Residual stream after block ``layer``: ``[B, L]`` token ids → ``[B, L, hidden_size]``.

        Equals ``hidden_states[layer + 1]`` of a full forward with ``output_hidden_states=True``
        (except for the last block, where HF applies the final norm to that entry and this does not:
        ``hook_resid_post`` is before the final norm). Later blocks, the final norm and the logits are
        never computed. Padding, if any, must be on the right (position ids start at 0 on every row).
        The result is an ordinary tensor (not an inference tensor) on ``self.device``.
        """
        if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2:
            raise SourceError(
                "hidden_at needs token ids of shape [batch, length]; got "
                f"{getattr(input_ids, 'shape', type(input_ids))}"
            )
        if input_ids.shape[1] == 0:
            raise SourceError("hidden_at got zero-length sequences; give at least one token per row")
        if input_ids.numel() and (int(input_ids.min()) < 0 or int(input_ids.max()) >= self.vocab_size):
            raise SourceError(
                f"token ids must be in 0..{self.vocab_size - 1} for {self.model_id}; got "
                f"{int(input_ids.min())}..{int(input_ids.max())}"
            )
        captured: list[torch.Tensor] = []

        def stop(_module: nn.Module, _args: Any, output: Any) -> None:
            captured.append(output[0] if isinstance(output, (tuple, list)) else output)
            raise _StopForward

        ids = input_ids.to(self.device, torch.long)
        mask = attention_mask.to(self.device) if attention_mask is not None else None
        handle = self._layers[self.layer].register_forward_hook(stop)
        try:
            with torch.inference_mode():
                self.model(input_ids=ids, attention_mask=mask, use_cache=False)
        except _StopForward:
            pass
        finally:
            handle.remove()
        if not captured:
            raise SourceError(
                f"block {self.layer} of {self.model_id} never ran in the forward pass; this architecture is not "
                "supported yet"
            )
        return captured[0].clone()

    def unembed(self) -> tuple[torch.Tensor, torch.Tensor | None, NormKind]:
        """``(W_U [vocab, d], final_norm_multiplier [d] | None, norm_kind)`` for logit-effect statistics.

        ``final_norm_multiplier`` is the *effective* per-dimension multiplier of the final norm,
        measured by running the norm: for Gemma's RMSNorm, which computes ``x̂·(1 + w)``, it is
        ``1 + w`` (not the stored ``w``); for Llama-style RMSNorm it is ``w``; for LayerNorm its weight.
        The logit effect of a direction ``v`` is then ``W_U @ (multiplier * v)``. Logit soft-capping
        (Gemma 2) is not included. Tensors are float32 on the CPU.
        """
        out = self.model.get_output_embeddings()
        if out is None or not isinstance(getattr(out, "weight", None), torch.Tensor):
            raise SourceError(f"{self.model_id} has no output embedding (unembedding) matrix")
        W_U = out.weight.detach().float().cpu()
        norm = find_final_norm(self.model)
        if norm is None:
            return W_U, None, "none"
        mult, kind = effective_norm_multiplier(norm, self.hidden_size)
        return W_U, mult, kind

    def token_strings(self, ids: Sequence[int] | torch.Tensor) -> list[str]:
        """Each token decoded on its own, as it reads inside the text.

        Leading spaces are kept (``▁the``/``Ġthe`` → ``" the"``); byte-fallback tokens of ASCII bytes
        become the character (``<0x0A>`` → ``"\\n"``), bytes of a partial UTF-8 sequence stay as the
        readable piece ``"<0xE2>"``; special tokens read as themselves (``<bos>``). The strings are
        untrusted text: escape them wherever they are shown.
        """
        if isinstance(ids, torch.Tensor):
            ids = ids.reshape(-1).tolist()
        ids = [int(i) for i in ids]
        cache = self._piece_cache
        missing = list(dict.fromkeys(i for i in ids if i not in cache))
        if len(missing) >= BATCH_DECODE_MIN and _decodes_like_its_backend(self.tokenizer):
            try:
                cache.update(zip(missing, self._token_strings_batch(missing)))
            except Exception:  # noqa: BLE001 - e.g. an id the backend refuses: one by one below, as always
                pass
        for i in missing:
            if i not in cache:
                cache[i] = self._token_string(i)
        return [cache[i] for i in ids]

    def _token_strings_batch(self, ids: list[int]) -> list[str]:
        """:meth:`_token_string` of each of ``ids``, with one call into the tokenizer's backend for the pieces and
        one for the texts (≈ 7 µs a token one by one: 50,000 distinct tokens took 0.36 s, against 0.07 s)."""
        tok = self.tokenizer
        pieces = tok.convert_ids_to_tokens(ids)
        plain = [i for i, p in zip(ids, pieces) if p is not None and not _BYTE_PIECE.match(p)]
        texts = dict(zip(plain, tok.backend_tokenizer.decode_batch([[i] for i in plain], skip_special_tokens=False)))
        return [_display_string(i, p, texts.get(i)) for i, p in zip(ids, pieces)]

    def _token_string(self, i: int) -> str:
        tok = self.tokenizer
        try:
            piece = tok.convert_ids_to_tokens(i)
        except Exception:  # noqa: BLE001 - ids beyond the tokenizer's vocabulary
            piece = None
        if piece is None or _BYTE_PIECE.match(piece):
            return _display_string(i, piece, None)
        text = tok.decode([i], skip_special_tokens=False, clean_up_tokenization_spaces=False)
        return _display_string(i, piece, text)


BATCH_DECODE_MIN = 64
"""Uncached tokens from which :meth:`SubjectModel.token_strings` decodes them in one backend call."""


def _decodes_like_its_backend(tok: Any) -> bool:
    """Whether ``tok.decode([i], skip_special_tokens=False, clean_up_tokenization_spaces=False)`` is its Rust backend's
    ``decode`` (a fast tokenizer whose class keeps transformers' own ``_decode``), so a batch decode gives the same."""
    if getattr(tok, "backend_tokenizer", None) is None:
        return False
    owner = next((c for c in type(tok).__mro__ if "_decode" in c.__dict__), None)
    return owner is not None and owner.__module__ in (
        "transformers.tokenization_utils_tokenizers",
        "transformers.tokenization_utils_fast",
    )


def _display_string(i: int, piece: str | None, text: str | None) -> str:
    """A token's display string from its piece and its decoded text (see :meth:`SubjectModel.token_strings`)."""
    if piece is None:
        return f"<{i}>"
    m = _BYTE_PIECE.match(piece)
    if m:
        b = int(m.group(1), 16)
        return chr(b) if b < 0x80 else piece
    assert text is not None
    if "\ufffd" in text and "\ufffd" not in piece:
        return piece
    if piece[:1] in ("▁", "Ġ") and not text.startswith(" "):
        text = " " + text.lstrip(" ") if text.strip(" ") else " " * max(1, len(text))
    return text


def _resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise SourceError(f"dtype must be one of {', '.join(DTYPES)}; got {dtype!r}")
    return DTYPES[dtype]


def _quiet_transformers() -> None:
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
    except Exception:  # noqa: BLE001
        pass


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _load_hf_folder_or_hub(
    name: str, torch_dtype: torch.dtype, device: torch.device, is_hub: bool
) -> tuple[nn.Module, Any]:
    from transformers import AutoModelForCausalLM

    _quiet_transformers()
    if is_hub and hub_offline():
        _raise_if_not_cached(name)
    try:
        # the tokenizer (a large tokenizer.json parsed in Rust) loads in a second thread while the weights load
        # (memory-mapped from safetensors by from_pretrained): on Gemma 3 each takes seconds of CPU
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="tempolens-tokenizer") as pool:
            tok_future = pool.submit(_load_tokenizer, name)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    model = AutoModelForCausalLM.from_pretrained(name, dtype=torch_dtype)
            finally:
                tokenizer = tok_future.result()  # the tokenizer's error first: it names the folder's problem plainly
    except (OSError, ValueError, KeyError) as e:
        if is_hub and (hub_offline() or is_connection_error(e)):
            _raise_if_not_cached(name, fallback="its weights")
        if is_hub:
            raise SourceError(
                f"cannot load {name!r} from the HF hub ({_first_line(e)}); if you are offline, download it once "
                f"with `hf download {name}` where there is network (gated models need `hf auth login`), or pass a "
                "local folder"
            ) from None
        raise SourceError(
            f"cannot load the model folder {name} ({_first_line(e)}); it needs config.json, weights and a tokenizer"
        ) from None
    return model.to(device), tokenizer


_CONVERTED_TOKENIZER_KEYS = ("bos_token", "eos_token", "unk_token", "pad_token", "mask_token", "model_max_length")
"""The ``tokenizer_config.json`` fields of a conversion that :func:`_load_tokenizer` passes on (the rest name the
class and where the folder came from)."""


def _load_tokenizer(name: str) -> Any:
    """The tokenizer of an HF folder or hub id (``AutoTokenizer``); for a folder converted by :func:`convert_gguf`,
    the same tokenizer built straight from its ``tokenizer.json`` by the ``tokenizers`` backend.

    ``AutoTokenizer`` rebuilds Gemma's tokenizer from the vocabulary and merges it reads with Python's ``json``
    (twice, 33 MB, ≈ 3.5 s of CPU that holds the GIL, so it does not overlap the weights and imports of the main
    thread); ``tokenizers`` parses the file in Rust without the GIL (≈ 1.2 s). Only our own conversions take this
    path: their ``tokenizer.json`` is the full pipeline ``save_pretrained`` wrote, and the test suite checks that
    both give the same ids, token strings, offsets and special tokens on the embedded model."""
    from transformers import AutoTokenizer

    folder = Path(name)
    if not (is_converted(folder) and (folder / "tokenizer.json").is_file()):
        return AutoTokenizer.from_pretrained(name)
    import transformers
    from transformers.tokenization_utils_tokenizers import TokenizersBackend

    config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    kwargs = {k: config[k] for k in _CONVERTED_TOKENIZER_KEYS if k in config}
    saved_as = getattr(transformers, str(config.get("tokenizer_class")), None)  # e.g. GemmaTokenizer: pads on the left
    for attr in ("padding_side", "truncation_side", "model_input_names"):
        if saved_as is not None and hasattr(saved_as, attr):
            kwargs[attr] = getattr(saved_as, attr)
    return TokenizersBackend(tokenizer_file=str(folder / "tokenizer.json"), name_or_path=name, **kwargs)


def _raise_if_not_cached(repo_id: str, fallback: str | None = None) -> None:
    """Offline or unreachable hub: say which file of ``repo_id`` is not cached and how to fetch it."""
    missing = first_uncached(repo_id, ["config.json", "tokenizer_config.json"]) or fallback
    if missing:
        raise SourceError(not_cached_message(f"the model {repo_id}", repo_id, missing))


def _gguf_key(path: Path) -> str:
    """A cheap identity of a GGUF file: name, size and hashes of its first and last MiB."""
    st = path.stat()
    h = hashlib.sha256(f"{path.name}:{st.st_size}".encode())
    with path.open("rb") as fh:
        h.update(fh.read(1 << 20))
        if st.st_size > (2 << 20):
            fh.seek(-(1 << 20), os.SEEK_END)
            h.update(fh.read(1 << 20))
    return h.hexdigest()[:16]


def converted_gguf_dir(gguf_path: Path) -> Path:
    """Where ``convert_gguf`` caches the HF folder for ``gguf_path``."""
    gguf_path = Path(gguf_path)
    return models_dir() / f"{neuronpedia_model_id(gguf_path.name)}-{_gguf_key(gguf_path)}"


def is_converted(folder: Path) -> bool:
    """True when ``folder`` is a finished conversion (it has the marker written last)."""
    return (Path(folder) / CONVERTED_MARKER).is_file()


def convert_gguf(
    gguf_path: str | Path,
    out_dir: str | Path | None = None,
    progress: Callable[[str], None] | None = print,
) -> Path:
    """Dequantise a ``.gguf`` causal LM once and cache it as an HF folder (fp32 weights + tokenizer).

    Idempotent and safe to interrupt: the folder is written under ``<out_dir>.partial`` and renamed
    into place only when complete (with a ``tempolens-converted.json`` marker), under a file lock so
    that two processes never convert the same file at once. Returns the folder.
    """
    gguf_path = Path(gguf_path).expanduser().resolve()
    if not gguf_path.is_file():
        raise SourceError(f"GGUF file {gguf_path} does not exist")
    final = Path(out_dir) if out_dir is not None else converted_gguf_dir(gguf_path)
    say = progress or (lambda _m: None)
    if is_converted(final):
        return final
    with file_lock(final):
        if is_converted(final):
            return final
        try:
            import gguf  # noqa: F401  (transformers needs it to read GGUF)
        except ImportError:
            raise SourceError("reading .gguf files needs the `gguf` package: pip install gguf") from None
        _write_converted(gguf_path, final, say)
    return final


def _dequantised(gguf_path: Path, tmp: Path, say: Callable[[str], None]) -> tuple[Any, Any, float, float]:
    """``(model, tokenizer, tokenizer seconds, weights seconds)`` read from a GGUF file by transformers, fp32."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.perf_counter()
    try:
        say("  reading the tokenizer from the GGUF ...")
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        t_tok = time.perf_counter() - t0
        say(f"  tokenizer ready ({t_tok:.0f} s); dequantising the weights ...")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = AutoModelForCausalLM.from_pretrained(
                str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32
            )
    except Exception as e:  # noqa: BLE001 - an untrusted file can fail in many ways inside the reader
        shutil.rmtree(tmp, ignore_errors=True)
        raise SourceError(
            f"transformers cannot load {gguf_path.name} ({_first_line(e)}); check that it is a causal LM of a "
            "supported architecture"
        ) from None
    # save_pretrained refuses a GGUF-loaded model while it still looks quantised.
    model.hf_quantizer = None
    for cfg in (model.config, getattr(model.config, "text_config", None)):
        if cfg is not None and hasattr(cfg, "quantization_config"):
            try:
                delattr(cfg, "quantization_config")
            except AttributeError:
                pass
    return model, tokenizer, t_tok, time.perf_counter() - t0 - t_tok


def _write_converted(gguf_path: Path, final: Path, say: Callable[[str], None]) -> None:
    """Dequantise ``gguf_path`` into a scratch folder, mark it converted, and publish it as ``final``."""
    _quiet_transformers()
    tmp = fresh_tmp_dir(final)
    t0 = time.perf_counter()
    say(f"converting {gguf_path.name} to a cached torch model (once; a few minutes on CPU) ...")
    model, tokenizer, t_tok, t_model = _dequantised(gguf_path, tmp, say)
    say(f"  weights ready ({t_model:.0f} s); saving to {final} ...")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    marker = {
        "source": str(gguf_path),
        "gguf_key": _gguf_key(gguf_path),
        "model_id": neuronpedia_model_id(gguf_path.name),
        "seconds_tokenizer": round(t_tok, 1),
        "seconds_dequantise": round(t_model, 1),
        "seconds_total": round(time.perf_counter() - t0, 1),
    }
    (tmp / CONVERTED_MARKER).write_text(json.dumps(marker, indent=1))
    publish_dir(tmp, final)
    say(f"  converted in {time.perf_counter() - t0:.0f} s")


def load_hf_tokenizer(spec: str | Path) -> Any:
    """The tokenizer of an HF folder, ``.gguf`` file or hub id, without loading the weights (the
    ``embedded`` spec is resolved by :func:`tempolens.sources.open.load_tokenizer`).

    A ``.gguf`` file uses its cached conversion when there is one and otherwise reads the tokenizer
    from the GGUF (slow for large vocabularies).
    """
    from transformers import AutoTokenizer

    _quiet_transformers()
    spec_s = str(spec)
    path = Path(spec_s).expanduser()
    try:
        if spec_s.lower().endswith(".gguf"):
            if not path.is_file():
                raise SourceError(f"GGUF file {spec_s} does not exist")
            folder = converted_gguf_dir(path)
            if is_converted(folder):
                return _load_tokenizer(str(folder))
            return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        if path.is_dir():
            return _load_tokenizer(str(path))
        if path.exists() or not _HUB_ID.match(spec_s):
            raise SourceError(f"no tokenizer for {spec_s!r}: give an HF folder, a .gguf file, a hub id or 'embedded'")
        if hub_offline():
            _raise_if_not_cached(spec_s)
        return AutoTokenizer.from_pretrained(spec_s)
    except SourceError:
        raise
    except Exception as e:  # noqa: BLE001 - transformers raises many types for missing/offline/broken files
        if _HUB_ID.match(spec_s) and not path.exists() and (hub_offline() or is_connection_error(e)):
            _raise_if_not_cached(spec_s, fallback="its tokenizer files")
        raise SourceError(
            f"cannot load the tokenizer of {spec_s!r} ({_first_line(e)}); if it is a hub id and you are offline, "
            f"download it once with `hf download {spec_s}`, or pass a local folder"
        ) from None


def load_hf_model(
    spec: str | Path,
    layer: int,
    device: str | torch.device = "cpu",
    dtype: str = "float32",
    model_id: str | None = None,
    progress: Callable[[str], None] | None = print,
    source: str | None = None,
) -> SubjectModel:
    """Load an HF folder, hub id or ``.gguf`` file as a subject model read up to block ``layer``.

    Commands call :func:`tempolens.sources.open.load_subject_model`, which also resolves the
    ``embedded`` spec and ``auto`` device/dtype. ``spec``: an HF hub id (``google/gemma-2-2b``; offline
    it must already be in the HF cache), a local HF folder, or a ``.gguf`` file (converted once and
    cached). ``layer``: the decoder block whose output is read (``blocks.{layer}.hook_resid_post``).
    ``dtype``: float32, bfloat16 or float16. ``model_id`` overrides the Neuronpedia-style id derived
    from the spec; ``source`` overrides what ``SubjectModel.source`` records (default: the spec).
    """
    torch_dtype = _resolve_dtype(dtype)
    dev = resolve_device(device)
    spec_s = str(spec)
    path = Path(spec_s).expanduser()
    if spec_s.lower().endswith(".gguf"):
        if not path.is_file():
            raise SourceError(f"GGUF file {spec_s} does not exist")
        folder = convert_gguf(path, progress=progress)
        model, tok = _load_hf_folder_or_hub(str(folder), torch_dtype, dev, is_hub=False)
        return SubjectModel(model, tok, layer, model_id or neuronpedia_model_id(path.name), source=source or str(path))
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise SourceError(
                f"{path} is not an HF model folder (no config.json); give a folder written by save_pretrained, a "
                ".gguf file or a hub id"
            )
        model, tok = _load_hf_folder_or_hub(str(path), torch_dtype, dev, is_hub=False)
        name = model_id or neuronpedia_model_id(path.resolve().name)
        return SubjectModel(model, tok, layer, name, source=source or str(path))
    if path.exists():
        raise SourceError(
            f"{spec_s} is a file but not a .gguf; give an HF folder, a .gguf file, a hub id or 'embedded'"
        )
    if not _HUB_ID.match(spec_s):
        raise SourceError(f"no such model file or folder: {spec_s}")
    model, tok = _load_hf_folder_or_hub(spec_s, torch_dtype, dev, is_hub=True)
    return SubjectModel(model, tok, layer, model_id or neuronpedia_model_id(spec_s), source=source or spec_s)
