"""Load any SAE from a spec string, safely; save SAEs in the published layouts.

``load_sae(spec)`` accepts:

* a local folder (or a file inside it) holding either a **Temporal SAE** — ``conf.yaml`` plus
  ``latest_ckpt.safetensors`` or ``latest_ckpt.pt`` (``tempolens.saes.temporal_format``) — or a
  **SAELens SAE** — ``cfg.json`` plus ``sae_weights.safetensors`` (``tempolens.saes.saelens_format``);
* ``hf://owner/repo[@revision][/sub/folder]``: ``huggingface_hub.snapshot_download`` of only that
  sub-folder (works offline once cached), then the folder loader;
* ``saelens://release/sae_id``: ``sae_lens.SAE.from_pretrained`` (needs ``sae-lens``), converted
  into tempolens classes (``from_saelens``);
* ``random:temporal?...`` / ``random:topk?...``: freshly initialised SAEs (see
  ``tempolens.saes.random_init``; pass ``activation_sample`` when ``needs_activation_stats(spec)``);
* ``embedded``, ``embedded:temporal``, ``embedded:topk``: the SAEs shipped with the package.

Checkpoints are read without executing code (``tempolens.saes.checkpoint``); this module only
dispatches a spec to the layout readers, which it re-exports.

``hf://`` specs answer offline from the local cache; a folder the cache lacks is reported as not
downloaded, with the ``huggingface-cli download`` command that fetches it (``tempolens.sources.hub``).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import Tensor

from tempolens.errors import ConfigError, SourceError
from tempolens.saes.base import SAE
from tempolens.saes.checkpoint import (  # noqa: F401 - re-exported: the safe checkpoint readers live there
    OMEGACONF_GLOBALS,
    InertPickledObject,
    first_line,
    pickle_globals,
    read_checkpoint,
    read_safetensors,
    refused_globals,
)
from tempolens.saes.saelens_format import (  # noqa: F401 - re-exported: the SAELens layout lives there
    SAELENS_CFG,
    SAELENS_FORMAT_VERSION,
    SAELENS_WEIGHTS,
    build_standard_sae,
    from_saelens,
    load_saelens_release,
    load_standard_folder,
    parse_saelens_cfg,
    save_standard_sae,
)
from tempolens.saes.temporal_conf import (  # noqa: F401 - re-exported: the conf.yaml parser lives there
    IGNORED_METADATA_KEY,
    TEMPORAL_CONF,
    parse_temporal_conf,
    read_temporal_conf,
)
from tempolens.saes.temporal_format import (  # noqa: F401 - re-exported: the Temporal SAE layout lives there
    TEMPORAL_CKPT_PT,
    TEMPORAL_CKPT_ST,
    build_temporal_sae,
    load_temporal_folder,
    save_temporal_sae,
    temporal_expected_shapes,
)

# ------------------------------------------------------------------------------------------------
# Specs

_HF_RE = re.compile(r"^hf://(?P<owner>[\w.\-]+)/(?P<repo>[\w.\-]+)(?:@(?P<rev>[^/]+))?(?:/(?P<sub>.+?))?/?$")


def _sae_file_missing(folder: Path) -> str | None:
    """The first file an SAE folder still lacks (None: a complete SAE folder, or one SAE sub-folder)."""
    if _holds_sae(folder) or len(_sae_subfolders(folder)) == 1:
        return None
    if (folder / TEMPORAL_CONF).is_file():
        return f"{TEMPORAL_CKPT_ST} (or {TEMPORAL_CKPT_PT})"
    if (folder / SAELENS_CFG).is_file():
        return SAELENS_WEIGHTS
    return f"{TEMPORAL_CONF} and its checkpoint"


def _download_hf(spec: str) -> Path:
    """The local folder of ``hf://owner/repo[@rev][/sub]``: downloaded, or from the local cache
    offline. A folder the cache lacks is reported as not downloaded (with the command that fetches
    it); "no such folder" is said only when the hub itself answered so."""
    m = _HF_RE.match(spec)
    if not m:
        raise ConfigError(f"bad hub spec {spec!r}; write hf://owner/repo[@revision][/sub/folder]")
    repo_id = f"{m['owner']}/{m['repo']}"
    sub, rev = m["sub"] or "", m["rev"]
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError
    except ImportError:  # pragma: no cover - a core dependency
        raise SourceError("hf:// specs need huggingface_hub: pip install huggingface_hub") from None
    from tempolens.sources.hub import hub_cache_dir, hub_offline, is_connection_error, not_cached_message

    include = f"{sub}/*" if sub else None
    where = f"the folder {sub}" if sub else "the repository"

    def not_cached(missing: str) -> SourceError:
        return SourceError(f"{spec}: " + not_cached_message(where, repo_id, missing, include, rev))

    try:
        local = snapshot_download(
            repo_id, revision=rev, allow_patterns=[include] if include else None, cache_dir=hub_cache_dir()
        )
    except LocalEntryNotFoundError:  # offline or unreachable, and not (completely) cached
        raise not_cached(f"{sub + '/' if sub else ''}{TEMPORAL_CONF}") from None
    except (RepositoryNotFoundError, RevisionNotFoundError) as e:
        raise SourceError(
            f"{spec}: the hub has no repository {repo_id}{'@' + rev if rev else ''} you can read "
            f"({type(e).__name__}); check the name, or run `hf auth login` for a private or gated one"
        ) from None
    except Exception as e:  # noqa: BLE001 - hub errors: gated, HTTP
        if is_connection_error(e):
            raise not_cached(f"{sub + '/' if sub else ''}{TEMPORAL_CONF}") from None
        raise SourceError(
            f"cannot fetch {spec} from the Hugging Face hub ({type(e).__name__}: {first_line(e)[:200]})"
        ) from None
    folder = Path(local) / sub
    missing = _sae_file_missing(folder) if folder.is_dir() else f"{sub}/{TEMPORAL_CONF}"
    if missing is None:
        return folder
    if hub_offline() or not folder.is_dir() and _hub_has_folder(repo_id, sub, rev) is not False:
        raise not_cached(missing if folder.is_dir() else f"{sub}/{TEMPORAL_CONF}")
    if not folder.is_dir():
        raise SourceError(f"{spec}: the hub says the repository {repo_id} has no folder {sub!r}")
    return folder  # downloaded, but no SAE in it: load_folder says what it found


def _hub_has_folder(repo_id: str, sub: str, rev: str | None) -> bool | None:
    """Ask the hub whether ``sub`` exists in the repo: True/False, or None when it cannot be reached."""
    from huggingface_hub import HfApi

    from tempolens.sources.hub import is_connection_error

    try:
        next(iter(HfApi().list_repo_tree(repo_id, path_in_repo=sub, revision=rev)), None)
    except Exception as e:  # noqa: BLE001 - not found, or no connection
        return None if is_connection_error(e) else False
    return True


def _holds_sae(path: Path) -> bool:
    ckpt = (path / TEMPORAL_CKPT_ST).is_file() or (path / TEMPORAL_CKPT_PT).is_file()
    temporal = (path / TEMPORAL_CONF).is_file() and ckpt
    return temporal or ((path / SAELENS_CFG).is_file() and (path / SAELENS_WEIGHTS).is_file())


def _sae_subfolders(path: Path) -> list[Path]:
    """Immediate sub-folders of ``path`` that hold an SAE (a repo folder with one run folder inside)."""
    try:
        return sorted(p for p in path.iterdir() if p.is_dir() and _holds_sae(p))
    except OSError:
        return []


def load_folder(
    folder: str | Path,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    allow_pickled_config: bool = False,
    strict_config: bool = False,
) -> SAE:
    """Load an SAE folder of either layout (a file inside the folder works too).

    A folder without SAE files but with exactly one sub-folder that holds an SAE (the authors'
    training code writes one folder per run) loads that sub-folder; with several, the error lists them.
    """
    path = Path(folder).expanduser()
    if path.is_file():
        path = path.parent
    if not path.is_dir():
        raise SourceError(
            f"no SAE at {folder!s}: not a folder. Give a folder with conf.yaml + latest_ckpt.(safetensors|pt) or "
            "cfg.json + sae_weights.safetensors, or a spec hf://owner/repo/folder, saelens://release/id, "
            "random:temporal, embedded"
        )
    if not _holds_sae(path):
        subs = _sae_subfolders(path)
        if len(subs) == 1:
            path = subs[0]
        elif subs:
            names = ", ".join(p.name for p in subs[:6]) + (" ..." if len(subs) > 6 else "")
            raise SourceError(f"{path} holds several SAEs in sub-folders ({names}); name one of them")
    if (path / TEMPORAL_CONF).is_file() and (
        (path / TEMPORAL_CKPT_ST).is_file() or (path / TEMPORAL_CKPT_PT).is_file()
    ):
        return load_temporal_folder(path, device, dtype, allow_pickled_config, strict_config)
    if (path / SAELENS_CFG).is_file() and (path / SAELENS_WEIGHTS).is_file():
        return load_standard_folder(path, device, dtype)
    present = ", ".join(sorted(p.name for p in path.iterdir())[:8]) or "nothing"
    raise SourceError(
        f"{path} holds no SAE (found: {present}); expected conf.yaml + latest_ckpt.(safetensors|pt) "
        "or cfg.json + sae_weights.safetensors"
    )


def load_sae(
    spec: str | Path,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    allow_pickled_config: bool = False,
    *,
    activation_sample: Tensor | None = None,
    strict_config: bool = False,
) -> SAE:
    """Load the SAE named by ``spec`` (see the module docstring) onto ``device`` in ``dtype``, in eval mode.

    ``activation_sample`` ``[N, d_in]`` (model units, BOS excluded) feeds random-init specs that
    need the mean activation or the scaling factor (``random_init.needs_activation_stats``).
    """
    s = str(spec).strip()
    if s.startswith("random:"):
        from tempolens.saes.random_init import sae_from_spec_with_stats

        sae: SAE = sae_from_spec_with_stats(s, activation_sample)
        return sae.to(device=device, dtype=dtype).eval()
    if s == "embedded" or s.startswith("embedded:"):
        kind = s.partition(":")[2] or "temporal"
        if kind not in ("temporal", "topk"):
            raise ConfigError(f"unknown embedded SAE {kind!r}; use embedded:temporal or embedded:topk")
        try:
            from tempolens.sources.embedded import embedded_sae_path
        except ImportError as e:
            raise SourceError(f"the embedded SAEs are not available in this installation ({first_line(e)})") from None
        folder = embedded_sae_path(kind)
        return load_folder(folder, device, dtype, allow_pickled_config, strict_config)  # type: ignore[arg-type]
    if s.startswith("hf://"):
        return load_folder(_download_hf(s), device, dtype, allow_pickled_config, strict_config)
    if s.startswith("saelens://"):
        return load_saelens_release(s, device, dtype)
    if re.match(r"^[a-z][a-z0-9+]*://", s):
        raise ConfigError(f"unknown SAE spec scheme in {s!r}; use a folder, hf://, saelens://, random: or embedded")
    return load_folder(s, device, dtype, allow_pickled_config, strict_config)
