"""The user cache directory: converted models and fetched corpora live here, never in git.

``$TEMPOLENS_CACHE`` wins; otherwise the platform's user cache dir for ``tempolens``
(``~/.cache/tempolens`` on Linux). Each kind of artefact has its own subfolder, and
``tempolens.fsutil.file_lock`` serialises writers (another process converting the same model waits instead
of writing a second copy next to it).
"""

from __future__ import annotations

import os
from pathlib import Path

from tempolens.errors import SourceError

ENV_VAR = "TEMPOLENS_CACHE"


def cache_dir() -> Path:
    """The tempolens cache root (created if missing): ``$TEMPOLENS_CACHE`` or the platformdirs user cache."""
    env = os.environ.get(ENV_VAR)
    if env:
        root = Path(env).expanduser()
    else:
        import platformdirs

        root = Path(platformdirs.user_cache_dir("tempolens", appauthor=False))
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SourceError(
            f"cannot create the cache dir {root} ({e.strerror}); set ${ENV_VAR} to a writable folder"
        ) from None
    return root


def _sub(name: str) -> Path:
    path = cache_dir() / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def models_dir() -> Path:
    """``<cache>/models``: converted subject models (HF folders) and assembled GGUF files."""
    return _sub("models")


def corpora_dir() -> Path:
    """``<cache>/corpora``: corpora fetched from npm (tarballs and parsed text)."""
    return _sub("corpora")
