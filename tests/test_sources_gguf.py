"""GGUF path: a tiny real GGUF written with the `gguf` package, converted once and cached.

The tiny Gemma-3 fixture model is exported to a float32 GGUF the way llama.cpp lays out Gemma 3
(tensor names from gguf's name map, RMSNorm weights stored as 1 + w); transformers reads it back,
tempolens caches the conversion, and the residual stream must equal the original model's exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tempolens.errors import SourceError
from tempolens.sources.models import CONVERTED_MARKER, convert_gguf, converted_gguf_dir
from tempolens.sources.open import load_subject_model

gguf = pytest.importorskip("gguf")
torch.set_num_threads(1)


def write_tiny_gguf(hf_dir: Path, out: Path) -> Path:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(hf_dir)
    tok = AutoTokenizer.from_pretrained(hf_dir)
    cfg = model.config
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.GEMMA3, cfg.num_hidden_layers)
    w = gguf.GGUFWriter(str(out), "gemma3")
    w.add_context_length(cfg.max_position_embeddings)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_embedding_length(cfg.hidden_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_key_length(cfg.head_dim)
    w.add_value_length(cfg.head_dim)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_freq_base(1_000_000.0)
    w.add_sliding_window(cfg.sliding_window)
    vocab = tok.get_vocab()
    pieces = sorted(vocab, key=vocab.get)
    tokens = [p if (p.startswith("<") and p.endswith(">") and len(p) > 2) else "▁" + p for p in pieces]
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * len(tokens))
    w.add_token_types([3 if i < 4 else 1 for i in range(len(tokens))])
    w.add_bos_token_id(2)
    w.add_eos_token_id(1)
    w.add_pad_token_id(0)
    w.add_unk_token_id(3)
    for name, p in model.state_dict().items():
        if name == "lm_head.weight":  # tied to the embedding: GGUF omits output.weight
            continue
        base, suffix = name.rsplit(".", 1)
        a = p.detach().float().numpy()
        if name.endswith("norm.weight"):
            a = a + 1.0  # llama.cpp stores Gemma norms as 1 + w; transformers subtracts 1 again
        w.add_tensor(f"{names.get_name(base)}.{suffix}", a.astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out


@pytest.fixture(scope="module")
def tiny_gguf(tiny_lm_dir, tmp_path_factory) -> Path:
    return write_tiny_gguf(tiny_lm_dir, tmp_path_factory.mktemp("gguf") / "tiny-gemma3-F32.gguf")


@pytest.fixture()
def tmp_cache(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("TEMPOLENS_CACHE", str(root))
    return root


def test_gguf_loads_and_matches_original(tiny_gguf, tiny_lm_dir, tmp_cache):
    sm = load_subject_model(str(tiny_gguf), layer=2, progress=None)
    ref = load_subject_model(str(tiny_lm_dir), layer=2, progress=None)
    assert sm.model_id == "tiny-gemma3"
    assert (sm.hidden_size, sm.n_layers, sm.vocab_size) == (32, 4, ref.vocab_size)
    assert (sm.bos_id, sm.eos_id, sm.pad_id) == (2, 1, 0)
    ids = torch.randint(4, ref.vocab_size, (2, 10), generator=torch.Generator().manual_seed(0))
    ids[:, 0] = 2
    torch.testing.assert_close(sm.hidden_at(ids), ref.hidden_at(ids), rtol=0, atol=0)
    # tokenizer from the GGUF: sentencepiece pieces read with their leading space
    assert sm.token_strings([2, 5]) == ["<bos>", " " + ref.tokenizer.convert_ids_to_tokens(5)]
    folder = converted_gguf_dir(tiny_gguf)
    assert folder.parent == tmp_cache / "models"
    marker = json.loads((folder / CONVERTED_MARKER).read_text())
    assert marker["model_id"] == "tiny-gemma3" and marker["source"] == str(tiny_gguf.resolve())


def test_conversion_is_cached_and_a_partial_folder_is_never_trusted(tiny_gguf, tmp_cache):
    folder = converted_gguf_dir(tiny_gguf)
    # a conversion killed before publishing leaves only <folder>.partial
    partial = folder.with_name(folder.name + ".partial")
    partial.mkdir(parents=True)
    (partial / "config.json").write_text("{broken")
    messages: list[str] = []
    out = convert_gguf(tiny_gguf, progress=messages.append)
    assert out == folder and (out / CONVERTED_MARKER).is_file() and not partial.exists()
    assert any("converting" in m for m in messages)
    stamp = (out / "model.safetensors").stat().st_mtime_ns
    again: list[str] = []
    assert convert_gguf(tiny_gguf, progress=again.append) == folder
    assert again == [] and (out / "model.safetensors").stat().st_mtime_ns == stamp
    # a folder without the marker (e.g. copied by hand half-way) is reconverted, not trusted
    (out / CONVERTED_MARKER).unlink()
    convert_gguf(tiny_gguf, progress=None)
    assert (out / CONVERTED_MARKER).is_file()


def test_bad_gguf_is_a_clear_error(tmp_path, tmp_cache):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\x00" * 64)
    with pytest.raises(SourceError, match="broken.gguf"):
        load_subject_model(str(bad), layer=0, progress=None)
    assert not [p for p in (tmp_cache / "models").iterdir() if p.is_dir()]  # no folder left behind
