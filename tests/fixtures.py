"""Small, real artefacts that tests build locally: a tiny HF causal LM with its tokenizer.

The tiny model is a genuine ``Gemma3ForCausalLM`` (random weights, 4 layers, hidden 32)
with a word-level tokenizer, saved in the ordinary HF folder layout, so every code path that
loads a hub model by folder is exercised without the network.
"""

from __future__ import annotations

from pathlib import Path

WORDS = (
    "the a an of and to in is was it that he she they we you i on for with as at by this from "
    "be had not are but his her their one all were there been have has when who which will more "
    "no if out so said what up its about into than them can only other new some could time these "
    "two may then do first any my now such like our over man me even most made after also did many "
    "before must through back years where much your way well down should because each just those "
    "people how too little state good very make world still own see men work long get here between "
    "both life being under never day same another know while last might us great old year off come "
    "since against go came right used take three cat dog sat mat ran fast slow red blue green house "
    "tree river city king queen war peace story night morning ship sea whale captain ahab ishmael "
    ". , ! ? ; : ' \" ( ) - < > & script alert img src onerror amp"
).split()


def build_tiny_lm(path: Path, n_layers: int = 4, hidden: int = 32, seed: int = 0) -> Path:
    """Write a tiny Gemma-3 causal LM and word-level tokenizer to ``path`` and return it."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, PreTrainedTokenizerFast

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    specials = ["<pad>", "<eos>", "<bos>", "<unk>"]
    vocab = {tok: i for i, tok in enumerate(specials + sorted(set(WORDS)))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>")
    fast.add_bos_token = True
    fast.save_pretrained(path)
    cfg = Gemma3TextConfig(
        vocab_size=len(vocab),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=n_layers,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        max_position_embeddings=1024,
        sliding_window=16,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
    )
    torch.manual_seed(seed)
    model = Gemma3ForCausalLM(cfg)
    model.save_pretrained(path)
    return path


def write_word_corpus(path: Path, seed: int, n_docs: int = 40) -> Path:
    """A .txt corpus of ``n_docs`` blank-line-separated documents of 20–60 words the tiny tokenizer knows."""
    import random

    rng = random.Random(seed)
    path = Path(path)
    path.write_text("\n\n".join(" ".join(rng.choice(WORDS[:150]) for _ in range(rng.randint(20, 60))) for _ in range(n_docs)))
    return path


def save_tiny_temporal_sae(folder: Path, seed: int) -> Path:
    """A random Temporal SAE for the tiny LM (d_in 32, width 96, k 8, 2 heads), saved in the published layout."""
    from tempolens.saes.loading import save_temporal_sae
    from tempolens.saes.random_init import random_temporal_sae

    return save_temporal_sae(random_temporal_sae(32, 96, 8, n_heads=2, seed=seed, scaling_factor=0.1), Path(folder))


def safetensors_content(path: Path) -> bytes:
    """Tensors and scalars of a cached statistics file as comparable bytes (its metadata also
    records pass timings, which differ run to run and are left out)."""
    import json

    import torch
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata() or {})
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if "scalars" in meta:
        scalars = json.loads(meta["scalars"])
        scalars.pop("timings", None)
        meta["scalars"] = json.dumps(scalars, sort_keys=True)
    parts = [json.dumps(meta, sort_keys=True).encode()]
    for k in sorted(tensors):
        t = tensors[k].contiguous()
        parts += [k.encode(), str(t.dtype).encode(), str(tuple(t.shape)).encode(), t.view(-1).view(torch.uint8).numpy().tobytes()]
    return b"\0".join(parts)


def tiny_lm_with_tokens(src: Path, dest: Path, tokens: list[str] | tuple[str, ...]):
    """Copy the tiny LM at ``src`` to ``dest`` with ``tokens`` added to its vocabulary as whole tokens
    (embeddings resized, new rows left random); returns the new tokenizer."""
    from transformers import AutoTokenizer, Gemma3ForCausalLM

    tok = AutoTokenizer.from_pretrained(src)
    assert tok.add_tokens(list(tokens)) == len(tokens)
    model = Gemma3ForCausalLM.from_pretrained(src)
    model.resize_token_embeddings(len(tok), mean_resizing=False)
    tok.save_pretrained(dest)
    model.save_pretrained(dest)
    return tok


def assert_close_scaled(actual, expected, rel: float = 1e-5, what: str = "") -> None:
    """``max|a − b| ≤ rel · max|b|``: agreement of two float32 computations at the tensor's own scale.

    Two float32 paths that sum in different orders (another BLAS, thread count or batching) differ by a few ulps of
    the largest terms, so an absolute tolerance is right on one machine and wrong on the next. Measuring the error
    against the tensor's largest magnitude makes the bound hold whatever the scale; ``rel = 1e-5`` is ≈ 80 float32
    ulps. Shapes must match exactly.
    """
    import torch

    a = torch.as_tensor(actual).detach().double()
    b = torch.as_tensor(expected).detach().double()
    assert a.shape == b.shape, f"{what}: shape {tuple(a.shape)} != {tuple(b.shape)}"
    scale = float(b.abs().max()) if b.numel() else 0.0
    err = float((a - b).abs().max()) if b.numel() else 0.0
    assert err <= rel * max(scale, 1e-30), f"{what}: max|a-b| = {err:.3g} > {rel:g} x max|b| = {rel * scale:.3g}"
