"""The user cache directory: converted models and fetched corpora live here, never in git.

``$TEMPOLENS_CACHE`` wins; otherwise the platform's user cache dir for ``tempolens``
(``~/.cache/tempolens`` on Linux). Each kind of artefact has its own subfolder, and
``cache_lock`` serialises writers (another process converting the same model waits instead
of writing a second copy next to it).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import time
from collections.abc import Iterator
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
        raise SourceError(f"cannot create the cache dir {root} ({e.strerror}); set ${ENV_VAR} to a writable folder") from None
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


@contextlib.contextmanager
def cache_lock(target: Path, timeout_s: float = 3600.0) -> Iterator[None]:
    """Hold an exclusive lock on ``<target>.lock`` (a POSIX advisory lock) while writing ``target``.

    The lock is released by the kernel if the process dies, so a killed writer never blocks
    the next one. Waits up to ``timeout_s`` for another writer to finish.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    lock_path = target.with_name(target.name + ".lock")
    with open(lock_path, "a+") as fh:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise SourceError(f"another tempolens process has held {lock_path} for over {timeout_s:.0f} s; wait for it or delete the lock file") from None
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def publish_dir(tmp: Path, final: Path) -> Path:
    """Atomically move a fully written folder ``tmp`` to ``final`` (replacing an older copy).

    Readers trust ``final`` only when it exists, so a writer killed before this call leaves
    at most a ``tmp`` folder that is never read and is removed on the next attempt.
    """
    tmp, final = Path(tmp), Path(final)
    if final.exists():
        old = final.with_name(final.name + f".old-{os.getpid()}")
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    return final


def fresh_tmp_dir(final: Path) -> Path:
    """An empty scratch folder next to ``final`` (same filesystem, so ``publish_dir`` is a rename)."""
    final = Path(final)
    tmp = final.with_name(final.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp
