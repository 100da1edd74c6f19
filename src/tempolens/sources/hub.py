"""Messages for things that should come from the Hugging Face hub but are not in the local cache.

Offline (``HF_HUB_OFFLINE=1``) or without a connection, ``huggingface_hub`` can only answer from the
local cache. A missing file then means "not downloaded yet", never "does not exist": these helpers
say so, name the file and the repository, and give the download command to run on a connected
machine. Only an answer from the hub itself may say that something does not exist.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

_TRUE = {"1", "on", "yes", "true"}


def hub_offline() -> bool:
    """Whether hub access is switched off (``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE``)."""
    if any(os.environ.get(v, "").strip().lower() in _TRUE for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")):
        return True
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except ImportError:  # pragma: no cover - a core dependency
        return False


def hub_cache_dir() -> str | None:
    """The hub cache to use: ``HF_HUB_CACHE``, else ``HF_HOME/hub``, else None (the library default).

    Read from the environment at call time, so a cache named after ``huggingface_hub`` was imported
    still counts."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return str(Path(os.environ["HF_HOME"]) / "hub")
    return None


def is_connection_error(e: BaseException) -> bool:
    """True when ``e`` (or an exception it was raised from) says the hub could not be reached."""
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        name = type(cur).__name__
        if isinstance(cur, (ConnectionError, TimeoutError)) or name in (
            "LocalEntryNotFoundError",
            "IncompleteSnapshotError",
            "OfflineModeIsEnabled",
            "ConnectError",
            "ConnectTimeout",
            "TimeoutException",
            "ProxyError",
        ):
            return True
        text = str(cur).lower()
        if "offline" in text or "couldn't connect" in text or "cannot reach" in text:
            return True
        cur = cur.__cause__ or cur.__context__
    return False


def download_command(repo_id: str, include: str | None = None, revision: str | None = None) -> str:
    """``huggingface-cli download REPO [--revision R] [--include 'FOLDER/*']``, shell-quoted."""
    parts = ["huggingface-cli", "download", repo_id]
    if revision:
        parts += ["--revision", revision]
    if include:
        parts += ["--include", include]
    return " ".join(shlex.quote(p) for p in parts)


def not_cached_message(
    what: str, repo_id: str, missing: str, include: str | None = None, revision: str | None = None
) -> str:
    """One line: ``what`` is not in the local cache (offline or unreachable), which file of which
    repo is missing, and the command that downloads it on a connected machine."""
    why = "HF_HUB_OFFLINE is set" if hub_offline() else "the hub cannot be reached from here"
    cmd = download_command(repo_id, include, revision)
    alt = cmd.replace("huggingface-cli download", "hf download", 1)
    return (
        f"{what} is not in the local Hugging Face cache ({why}): {missing} of the repo {repo_id} is missing. "
        f"On a machine with network run `{cmd}` (or `{alt}`), then copy its cache "
        "(HF_HOME, default ~/.cache/huggingface) here or point HF_HOME at it"
    )


def cached_file(repo_id: str, filename: str, revision: str | None = None) -> Path | None:
    """``filename`` of ``repo_id`` in the local hub cache (:func:`hub_cache_dir`), or None when it is not there."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover
        return None
    try:
        hit = try_to_load_from_cache(repo_id, filename, cache_dir=hub_cache_dir(), revision=revision)
    except Exception:  # noqa: BLE001 - a malformed cache or an odd id counts as missing
        return None
    return Path(hit) if isinstance(hit, str) else None


def first_uncached(repo_id: str, filenames: list[str], revision: str | None = None) -> str | None:
    """The first of ``filenames`` that is not in the local cache for ``repo_id`` (None: all are)."""
    return next((name for name in filenames if cached_file(repo_id, name, revision) is None), None)
