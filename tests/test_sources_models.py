"""SubjectModel: the stop-after-block-L forward, layer checks, unembedding, token strings."""

from __future__ import annotations

import pytest
import torch

from tempolens.errors import SourceError
from tempolens.sources.models import (
    SubjectModel,
    effective_norm_multiplier,
    neuronpedia_model_id,
)
from tempolens.sources.open import load_subject_model

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny(tiny_lm_dir):
    return load_subject_model(str(tiny_lm_dir), layer=1, progress=None)


def _ids(sm: SubjectModel, B: int = 2, L: int = 9, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, sm.vocab_size, (B, L), generator=g)
    ids[:, 0] = sm.bos_id
    return ids


def test_attributes(tiny):
    assert tiny.n_layers == 4 and tiny.hidden_size == 32 and tiny.layer == 1
    assert tiny.hook_name == "blocks.1.hook_resid_post"
    assert tiny.bos_id == 2 and tiny.eos_id == 1 and tiny.pad_id == 0
    assert tiny.special_ids == {0, 1, 2}
    assert tiny.dtype == torch.float32 and tiny.device.type == "cpu"
    assert tiny.model_id.startswith("tiny_lm")


@pytest.mark.parametrize("layer", [0, 1, 2])
def test_hidden_at_equals_full_forward(tiny_lm_dir, layer):
    sm = load_subject_model(str(tiny_lm_dir), layer=layer, progress=None)
    ids = _ids(sm)
    with torch.no_grad():
        full = sm.model(input_ids=ids, output_hidden_states=True).hidden_states
    got = sm.hidden_at(ids)
    assert got.shape == (2, 9, 32)
    torch.testing.assert_close(got, full[layer + 1], rtol=0, atol=0)
    assert not got.is_inference()  # usable as input to autograd (SAE training)


def test_last_layer_is_before_final_norm(tiny_lm_dir):
    sm = load_subject_model(str(tiny_lm_dir), layer=3, progress=None)
    ids = _ids(sm)
    with torch.no_grad():
        out = sm.model(input_ids=ids, output_hidden_states=True)
    got = sm.hidden_at(ids)
    # HF normalises its last hidden_states entry; resid_post of the last block is the un-normalised stream
    torch.testing.assert_close(sm.model.model.norm(got), out.hidden_states[-1])
    assert not torch.allclose(got, out.hidden_states[-1])


def test_later_blocks_norm_and_head_never_run(tiny):
    fired: list[str] = []
    handles = [
        tiny.model.model.layers[i].register_forward_hook(lambda *_a, i=i: fired.append(f"layer{i}"))
        for i in range(2, 4)
    ]
    handles.append(tiny.model.model.norm.register_forward_hook(lambda *_a: fired.append("norm")))
    handles.append(tiny.model.lm_head.register_forward_hook(lambda *_a: fired.append("lm_head")))
    ran: list[int] = []
    handles.append(tiny.model.model.layers[1].register_forward_pre_hook(lambda *_a: ran.append(1)))
    try:
        tiny.hidden_at(_ids(tiny))
    finally:
        for h in handles:
            h.remove()
    assert ran == [1] and fired == []
    # the stopping hook is removed again: a normal forward still runs everything
    with torch.no_grad():
        logits = tiny.model(input_ids=_ids(tiny)).logits
    assert logits.shape[-1] == tiny.vocab_size


def test_hidden_at_attention_mask_right_padding(tiny):
    ids = _ids(tiny, B=2, L=8)
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    ids[1, 5:] = tiny.pad_id
    got = tiny.hidden_at(ids, attention_mask=mask)
    alone = tiny.hidden_at(ids[1:2, :5])
    torch.testing.assert_close(got[1, :5], alone[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layer", [-1, 4, 100])
def test_layer_out_of_range(tiny_lm_dir, layer):
    with pytest.raises(SourceError, match=r"0\.\.3"):
        load_subject_model(str(tiny_lm_dir), layer=layer, progress=None)


def test_bad_inputs(tiny, tiny_lm_dir, tmp_path):
    with pytest.raises(SourceError, match="shape"):
        tiny.hidden_at(torch.zeros(5, dtype=torch.long))
    with pytest.raises(SourceError, match="token ids must be in"):
        tiny.hidden_at(torch.full((1, 3), 10_000))
    with pytest.raises(SourceError, match="dtype"):
        load_subject_model(str(tiny_lm_dir), layer=0, dtype="float8", progress=None)
    with pytest.raises(SourceError):
        load_subject_model(str(tmp_path), layer=0, progress=None)  # folder without config.json
    with pytest.raises(SourceError, match="does not exist"):
        load_subject_model(str(tmp_path / "x.gguf"), layer=0, progress=None)
    if not torch.cuda.is_available():
        with pytest.raises(SourceError, match="CUDA"):
            load_subject_model(str(tiny_lm_dir), layer=0, device="cuda", progress=None)


def test_folder_missing_weights_is_one_error(tiny_lm_dir, tmp_path):
    """The tokenizer loads in a thread beside the weights; missing weights are still one SourceError
    (and the tokenizer thread is joined, not left behind)."""
    import shutil
    import threading

    folder = tmp_path / "no-weights"
    shutil.copytree(tiny_lm_dir, folder)
    for f in folder.iterdir():
        if f.suffix in (".safetensors", ".bin") or f.name.endswith(".index.json"):
            f.unlink()
    with pytest.raises(SourceError, match="cannot load the model folder"):
        load_subject_model(str(folder), layer=0, progress=None)
    assert not [t for t in threading.enumerate() if t.name.startswith("tempolens-tokenizer")]


def test_offline_hub_id_is_a_clear_error():
    with pytest.raises(SourceError, match="hf download"):
        load_subject_model("nobody-here/not-a-model-xyz", layer=0, progress=None)


def test_bfloat16(tiny_lm_dir):
    sm = load_subject_model(str(tiny_lm_dir), layer=1, dtype="bfloat16", progress=None)
    assert sm.dtype == torch.bfloat16
    h = sm.hidden_at(_ids(sm))
    assert h.dtype == torch.bfloat16 and torch.isfinite(h.float()).all()


def test_unembed_gemma_norm_is_one_plus_w(tiny):
    W_U, mult, kind = tiny.unembed()
    assert kind == "rmsnorm"
    assert W_U.shape == (tiny.vocab_size, 32) and W_U.dtype == torch.float32
    torch.testing.assert_close(W_U, tiny.model.lm_head.weight.detach())
    # Gemma RMSNorm multiplies by (1 + w): check against the stored weight and the actual logits
    w = tiny.model.model.norm.weight.detach()
    with torch.no_grad():
        w.copy_(torch.linspace(-0.5, 0.5, 32))
    W_U, mult, kind = tiny.unembed()
    torch.testing.assert_close(mult, 1 + w, rtol=1e-5, atol=1e-5)
    ids = _ids(tiny, B=1, L=5)
    sm3 = SubjectModel(tiny.model, tiny.tokenizer, 3, "tiny")
    resid = sm3.hidden_at(ids)
    with torch.no_grad():
        logits = tiny.model(input_ids=ids).logits
    x = resid / resid.pow(2).mean(-1, keepdim=True).add(tiny.model.config.rms_norm_eps).sqrt()
    torch.testing.assert_close((x * mult) @ W_U.T, logits, rtol=1e-4, atol=1e-4)


def test_effective_multiplier_llama_and_layernorm():
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    n = LlamaRMSNorm(6)
    with torch.no_grad():
        n.weight.copy_(torch.arange(6.0))
    mult, kind = effective_norm_multiplier(n, 6)
    assert kind == "rmsnorm"
    torch.testing.assert_close(mult, torch.arange(6.0))
    ln = torch.nn.LayerNorm(6)
    with torch.no_grad():
        ln.weight.copy_(torch.arange(6.0) + 2)
    mult, kind = effective_norm_multiplier(ln, 6)
    assert kind == "layernorm"
    torch.testing.assert_close(mult, torch.arange(6.0) + 2)


def test_token_strings(tiny):
    ids = tiny.tokenizer("the cat sat", add_special_tokens=False)["input_ids"]
    assert tiny.token_strings(ids) == ["the", "cat", "sat"]
    assert tiny.token_strings(torch.tensor([[tiny.bos_id]])) == ["<bos>"]


class _PieceTokenizer:
    """A sentencepiece-like tokenizer stub (pieces with ▁ and byte fallback) for token_strings."""

    pieces = ["<pad>", "<eos>", "<bos>", "▁the", "cat", "<0x0A>", "<0xE2>", "▁", "Ġdog"]

    def convert_ids_to_tokens(self, i):
        return self.pieces[i] if 0 <= i < len(self.pieces) else None

    def decode(self, ids, **_kw):
        p = self.pieces[ids[0]]
        if p == "<0xE2>":
            return "\ufffd"
        return p.replace("▁", " ").replace("Ġ", " ").lstrip(" ") if p.startswith(("▁", "Ġ")) else p


def test_token_strings_spaces_and_bytes(tiny):
    sm = object.__new__(SubjectModel)
    sm.tokenizer = _PieceTokenizer()
    sm._piece_cache = {}
    assert sm.token_strings([3, 4, 5, 6, 7, 8, 99]) == [" the", "cat", "\n", "<0xE2>", " ", " dog", "<99>"]


def _one_by_one_and_batched(tokenizer, ids):
    from tempolens.sources.models import BATCH_DECODE_MIN

    sm = object.__new__(SubjectModel)
    sm.tokenizer, sm._piece_cache = tokenizer, {}
    one = [sm._token_string(i) for i in ids]
    assert len(ids) >= BATCH_DECODE_MIN
    return one, sm.token_strings(ids)  # the cache is empty: every id goes through the batched decode


def test_batched_token_strings_equal_one_by_one_over_the_whole_vocabulary(tiny):
    from tempolens.sources.models import _decodes_like_its_backend

    assert _decodes_like_its_backend(tiny.tokenizer)
    assert not _decodes_like_its_backend(_PieceTokenizer())  # a tokenizer without a backend: one by one
    V = len(tiny.tokenizer)
    one, batched = _one_by_one_and_batched(tiny.tokenizer, list(range(V)) + [V + 3, 5, 5])
    assert batched == one and batched[V] == f"<{V + 3}>"


def test_neuronpedia_model_id():
    assert neuronpedia_model_id("google/gemma-2-2b") == "gemma-2-2b"
    assert neuronpedia_model_id("gemma-3-270m-q4_k_m.gguf") == "gemma-3-270m"
    assert neuronpedia_model_id("/x/y/Llama-3.1-8B-Instruct-Q8_0.gguf") == "llama-3.1-8b-instruct"
    assert neuronpedia_model_id("gemma-2-2b-it") == "gemma-2-2b-it"


def _tiny_arch(kind: str, vocab: int):
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    if kind == "gpt2":
        return GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_embd=32, n_layer=3, n_head=2, n_positions=64))
    if kind == "llama":
        return LlamaForCausalLM(
            LlamaConfig(
                vocab_size=vocab,
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=3,
                num_attention_heads=2,
                num_key_value_heads=1,
                max_position_embeddings=64,
            )
        )
    return Qwen2ForCausalLM(
        Qwen2Config(
            vocab_size=vocab,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=3,
            num_attention_heads=2,
            num_key_value_heads=1,
            max_position_embeddings=64,
        )
    )


@pytest.mark.parametrize("kind,norm_kind", [("gpt2", "layernorm"), ("llama", "rmsnorm"), ("qwen2", "rmsnorm")])
def test_other_architectures(tiny, tmp_path, kind, norm_kind):
    model = _tiny_arch(kind, tiny.vocab_size)
    model.save_pretrained(tmp_path)
    tiny.tokenizer.save_pretrained(tmp_path)
    sm = load_subject_model(str(tmp_path), layer=1, progress=None)
    assert sm.n_layers == 3 and sm.hidden_size == 32
    ids = _ids(sm, L=7)
    with torch.no_grad():
        full = sm.model(input_ids=ids, output_hidden_states=True).hidden_states
    torch.testing.assert_close(sm.hidden_at(ids), full[2], rtol=0, atol=0)
    W_U, mult, k = sm.unembed()
    assert k == norm_kind and W_U.shape == (tiny.vocab_size, 32) and mult.shape == (32,)
    # Llama-style norms multiply by w itself (1 at init), unlike Gemma's 1 + w
    torch.testing.assert_close(mult, torch.ones(32))


def test_load_tokenizer(tiny_lm_dir, tmp_path):
    from tempolens.sources.open import load_tokenizer

    tok = load_tokenizer(str(tiny_lm_dir))
    assert tok.bos_token_id == 2 and tok("the cat", add_special_tokens=False)["input_ids"]
    with pytest.raises(SourceError, match="hf download"):
        load_tokenizer("nobody-here/not-a-model-xyz")
    with pytest.raises(SourceError, match="does not exist"):
        load_tokenizer(str(tmp_path / "x.gguf"))
