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
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )
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
    path.write_text(
        "\n\n".join(" ".join(rng.choice(WORDS[:150]) for _ in range(rng.randint(20, 60))) for _ in range(n_docs))
    )
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
        parts += [
            k.encode(),
            str(t.dtype).encode(),
            str(tuple(t.shape)).encode(),
            t.view(-1).view(torch.uint8).numpy().tobytes(),
        ]
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


# -- published Temporal SAE layouts: the authors' research configs and a hub-layout cache -------------------

HUB_COMMIT = "0123456789abcdef0123456789abcdef01234567"


def hub_snapshot(cache: Path, repo_id: str, commit: str = HUB_COMMIT) -> Path:
    """The snapshot folder of ``repo_id`` in a hub-layout cache (``models--owner--name/refs/main`` →
    ``snapshots/<commit>``), created empty; write files under it to "cache" them."""
    repo = Path(cache) / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True, exist_ok=True)
    return snap


def research_temporal_sae(
    d_in: int = 32,
    width: int = 96,
    k: int = 8,
    n_heads: int = 2,
    tied: bool = True,
    n_attn_layers: int = 1,
    scaling_factor: float = 0.1,
    seed: int = 0,
):
    """A random Temporal SAE whose weights are exactly representable in bfloat16 (so a bf16 copy,
    as the published safetensors are, loads bit-identical to the float32 one)."""
    import math

    import torch

    from tempolens.saes.temporal import TemporalConfig, TemporalSAE

    sae = TemporalSAE(
        TemporalConfig(
            d_in=d_in,
            width=width,
            k=k,
            n_heads=n_heads,
            n_attn_layers=n_attn_layers,
            tied=tied,
            scaling_factor=scaling_factor,
        )
    )
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in sorted(sae.named_parameters()):
            scale = 3.0 / math.sqrt(p.shape[-1]) if p.dim() == 2 else 0.3
            p.copy_((torch.randn(p.shape, generator=g) * scale).bfloat16().float())
    return sae.eval()


RESEARCH_CONF = """\
deploy: True
tag: scratch
seed: 42

device_id: 'cuda:0'

data:
  epochs: 1
  num_total_steps: 200_000
  context_length: 500
  batch_size: 100
  dtype: "bfloat16"
  hf_name: "monology/pile-uncopyrighted"
  num_workers: 2
  cache_dir: "../../activations/precomputed_activations/precomputed_activations_tiny/"

llm:
  model_hf_name: "tiny/gemma-3"
  tokenizer_hf_name: "tiny/gemma-3"
  dimin: {d_in}

sae:
  sae_type: '{sae_type}'
  sae_diff_type: '{diff}' # Options: 'relu', 'topk', 'nullify'
  tied_weights: {tied}
  block_id: 1
  exp_factor: {exp_factor}
  kval_topk: {k}
  n_heads: {n_heads}
  n_attn_layers: {n_layers}
  bottleneck_factor: {bottleneck}
  gamma_reg: 10
  encoder_reg: True
  scaling_factor: {scale!r} # 1 / mean norm on the training data
{extra_sae}
optimizer:
  learning_rate: 1e-3
  weight_decay: 1e-4
  beta1: 0.9
  beta2: 0.95
  grad_clip: 1.0
  decay_lr: True
  warmup_iters: 200
  min_lr: 9e-4

eval:
  save_tables: False

log:
  save_multiple: False
  log_interval: 10
  save_interval: 20000
  wandb_project_name: "TemporalSAE_test"


# Nested configs. Disable hydra logging
defaults:
  - _self_
  - override hydra/job_logging: disabled
  - override hydra/hydra_logging: disabled

# Disable hydra directory structure
hydra:
  output_subdir: Null
  job:
    chdir: False
  run:
    dir: .

  sweep:
    dir: .
    subdir: .
"""
"""A conf.yaml as the authors' training code writes it (their temporal_conf.yaml, tiny dimensions)."""


def research_conf_text(sae, sae_type: str = "temporal", extra_sae: dict | None = None) -> str:
    c = sae.cfg
    extra = "".join(f"  {k}: {v}\n" for k, v in (extra_sae or {}).items())
    return RESEARCH_CONF.format(
        d_in=c.d_in,
        sae_type=sae_type,
        diff=c.sae_diff_type,
        tied=c.tied,
        exp_factor=c.width // c.d_in,
        k=c.k,
        n_heads=c.n_heads,
        n_layers=c.n_attn_layers,
        bottleneck=c.bottleneck_factor,
        scale=c.scaling_factor,
        extra_sae=extra,
    )


def write_research_folder(
    folder: Path, sae, layout: str, sae_type: str = "temporal", extra_sae: dict | None = None
) -> Path:
    """``sae`` in one of the published layouts, with the authors' full training conf.yaml:

    * ``safetensors``: ``latest_ckpt.safetensors`` in bfloat16, ``b`` as ``[d_in]`` (canrager/temporalSAEs);
    * ``pt``: ``latest_ckpt.pt`` = ``{"sae": state_dict, "optimizer": AdamW state, "iter", "config":
      pickled OmegaConf}``, ``b`` as ``[1, d_in]`` (what the authors' ``save_sae`` writes);
    * ``flat_pt``: ``latest_ckpt.pt`` holding the state dict itself, ``b`` as ``[1, d_in]``.
    """
    import copy

    import torch
    import yaml

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    text = research_conf_text(sae, sae_type, extra_sae)
    (folder / "conf.yaml").write_text(text)
    sd = {k: v.detach().clone() for k, v in sae.state_dict().items()}
    if layout == "safetensors":
        from safetensors.torch import save_file

        bf16 = {k: v.bfloat16().contiguous() for k, v in sd.items()}
        bf16["b"] = bf16["b"].reshape(-1)
        save_file(bf16, folder / "latest_ckpt.safetensors")
        return folder
    sd["b"] = sd["b"].reshape(1, -1)
    if layout == "flat_pt":
        torch.save(sd, folder / "latest_ckpt.pt")
        return folder
    assert layout == "pt", layout
    from omegaconf import OmegaConf

    twin = copy.deepcopy(sae).train()
    opt = torch.optim.AdamW(twin.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=1e-4)
    for p in twin.parameters():
        p.grad = torch.ones_like(p) * 1e-3
    opt.step()
    config = OmegaConf.create(yaml.safe_load(text))
    payload = {"sae": sd, "optimizer": opt.state_dict(), "iter": 200000, "config": config}
    torch.save(payload, folder / "latest_ckpt.pt")
    return folder


def mounted_tmpfs(mnt: Path, options: str):
    """Mount a real tmpfs at ``mnt`` with mount ``options`` (e.g. ``ro,size=64k``), yield a ``resize(size)``
    function, and unmount afterwards. Skips the test where mounting needs root or ``mount`` is missing.
    Use inside a pytest fixture: ``yield from mounted_tmpfs(path, "size=24k")``."""
    import os
    import shutil
    import subprocess

    import pytest

    mnt.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")

    def resize(size: str) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", str(mnt)], check=True)

    try:
        yield resize
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
