"""Run SAEDashboard 0.8.0's Neuronpedia runner offline on the embedded Gemma 3 270M.

SAEDashboard loads everything by hub name (TransformerLens fetches ``google/gemma-3-270m``'s
config, weights and tokenizer; SAELens streams a dataset), so an offline run needs:

- a local HF hub cache (``$HF_HOME/hub/models--google--gemma-3-270m/snapshots/<rev>/``) built
  from tempolens's converted model folder: the weights are symlinked, the tokenizer files copied
  and ``config.json`` rewritten in the transformers 4.x spelling that SAEDashboard's pinned
  transformers reads (``rope_theta`` / ``rope_local_base_freq`` instead of ``rope_parameters``);
  ``HF_HUB_OFFLINE=1`` then resolves the name from that cache;
- the prompts as token ids in the runner's own token file
  ``<outputs>/<model>_<set>_<hook>_<width>/tokens_<N>.pt``, which it loads instead of sampling
  and shuffling prompts itself — so both tools see the same prompts in the same order. SAELens
  still opens a dataset at start-up (it reads one row): a local JSON-lines folder with a ``text``
  column (the decoded prompts) serves. A *pre-tokenized* local folder does not work offline:
  SAELens then calls ``hf_hub_download(<path>, "sae_lens.json")``, which rejects a path;
- a TopK SAE whose ``cfg.json`` says ``rescale_acts_by_decoder_norm: true`` (0.8.0 calls
  ``fold_W_dec_norm()`` at start-up, which SAELens refuses for TopK SAEs otherwise; with
  unit-norm decoder rows the flag changes nothing);
- a fresh working directory per run (its activation cache ``./cached_activations/...`` is keyed
  by names only and would be silently reused).

Only the standard library and torch are imported here, so this module works in both venvs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

HUB_NAME = "google/gemma-3-270m"
"""The hub name TransformerLens knows Gemma 3 270M by (its config is hard-coded there)."""
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "generation_config.json",
)


def transformers4_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """A Gemma 3 ``config.json`` written by transformers 5 in the spelling transformers 4.5x reads.

    transformers 5 nests the RoPE bases under ``rope_parameters`` per attention type; 4.5x reads
    ``rope_theta`` (global layers), ``rope_local_base_freq`` (sliding layers) and ``rope_scaling``.
    A config already in the 4.x spelling is returned unchanged (copied).
    """
    out = dict(cfg)
    rp = out.pop("rope_parameters", None)
    if isinstance(rp, dict):
        full = rp.get("full_attention", rp)
        local = rp.get("sliding_attention", {})
        out.setdefault("rope_theta", float(full.get("rope_theta", 1_000_000.0)))
        if local:
            out.setdefault("rope_local_base_freq", float(local.get("rope_theta", 10_000.0)))
        rtype = full.get("rope_type", "default")
        out.setdefault(
            "rope_scaling", None if rtype == "default" else {k: v for k, v in full.items() if k != "rope_theta"}
        )
    return out


def build_hf_cache(model_dir: Path, hf_home: Path, hub_name: str = HUB_NAME) -> Path:
    """Make ``hf_home`` an HF cache that resolves ``hub_name`` offline to ``model_dir``'s weights.

    Returns the snapshot folder. Idempotent; weights are symlinked, never copied.
    """
    model_dir = Path(model_dir).resolve()
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"{model_dir} is not an HF model folder (no config.json); run `tempolens setup` first")
    repo = Path(hf_home) / "hub" / ("models--" + hub_name.replace("/", "--"))
    rev = hashlib.sha1(str(model_dir).encode()).hexdigest()
    snap = repo / "snapshots" / rev
    snap.mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(rev)
    cfg = json.loads((model_dir / "config.json").read_text())
    (snap / "config.json").write_text(json.dumps(transformers4_config(cfg), indent=2))
    for name in TOKENIZER_FILES:
        src = model_dir / name
        if src.is_file():
            shutil.copyfile(src, snap / name)
    for src in model_dir.glob("*.safetensors*"):
        dst = snap / src.name
        if dst.is_symlink() or dst.exists():
            dst.unlink()
        dst.symlink_to(src)
    return snap


def write_text_dataset(texts: list[str], folder: Path) -> Path:
    """Write texts as a local JSON-lines dataset with a ``text`` column (SAELens opens it at start-up)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "train.jsonl").open("w") as fh:
        for text in texts:
            fh.write(json.dumps({"text": text}) + "\n")
    return folder


def runner_output_subdir(outputs_dir: Path, model_name: str, sae_set: str, hook_name: str, width: int) -> Path:
    """The folder the runner writes into (``NeuronpediaRunner.create_output_directory``, no id suffix)."""
    return Path(outputs_dir) / f"{model_name}_{sae_set}_{hook_name}_{width}"


def prepare_run(
    run_dir: Path,
    tokens_path: Path,
    sae_dir: Path,
    dataset_dir: Path,
    hf_home: Path,
    n_prompts: int,
    prompt_len: int,
    batch_prompts: int,
    features_per_batch: int = 128,
    sae_set: str = "bench",
    end_batch: int | None = None,
) -> tuple[list[str], dict[str, str], Path]:
    """Fresh run folder + pre-placed token file; returns ``(argv after python, env, outputs subdir)``.

    The argv runs the installed runner module (``python -m sae_dashboard.neuronpedia.neuronpedia_runner``,
    the code behind its ``neuronpedia-runner`` entry point) with top-20 examples and 5 intervals of 5
    (the runner config's defaults), one prompt length, and the same prompts as tempolens.
    """
    import torch

    run_dir = Path(run_dir)
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    cfg = json.loads((Path(sae_dir) / "cfg.json").read_text())
    md = cfg.get("metadata", cfg)
    model_name, hook_name, width = md["model_name"], md["hook_name"], int(cfg["d_sae"])
    outputs = run_dir / "outputs"
    sub = runner_output_subdir(outputs, model_name, sae_set, hook_name, width)
    sub.mkdir(parents=True)
    tokens = torch.load(tokens_path, weights_only=True)[:n_prompts, :prompt_len].contiguous()
    torch.save(tokens, sub / f"tokens_{n_prompts}.pt")
    argv = [
        "-m",
        "sae_dashboard.neuronpedia.neuronpedia_runner",
        "--sae-set",
        sae_set,
        "--sae-path",
        str(Path(sae_dir).resolve()),
        "--from-local-sae",
        "--np-set-name",
        sae_set,
        "--dataset-path",
        str(Path(dataset_dir).resolve()),
        "--sae_dtype",
        "float32",
        "--model_dtype",
        "float32",
        "--output-dir",
        str(outputs.resolve()),
        "--sparsity-threshold",
        "1",
        "--n-prompts",
        str(n_prompts),
        "--n-tokens-in-prompt",
        str(prompt_len),
        "--n-prompts-in-forward-pass",
        str(batch_prompts),
        "--n-features-per-batch",
        str(features_per_batch),
    ]
    if end_batch is not None:
        argv += ["--end-batch", str(end_batch)]
    env = {
        "HF_HOME": str(Path(hf_home).resolve()),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_DATASETS_CACHE": str((run_dir / "hf_datasets").resolve()),
        "WANDB_MODE": "disabled",
        "TOKENIZERS_PARALLELISM": "false",
    }
    return argv, env, sub


def read_batches(sub: Path) -> list[dict]:
    """The feature objects of every ``batch-*.json`` the runner wrote, ordered by feature index."""
    feats: list[dict] = []
    for path in sorted(Path(sub).glob("batch-*.json")):
        feats.extend(json.loads(path.read_text()).get("features", []))
    feats.sort(key=lambda f: int(f["feature_index"]))
    return feats


def env_with(extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("VIRTUAL_ENV", None)
    env.update(extra)
    return env
