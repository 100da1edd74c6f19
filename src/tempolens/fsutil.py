"""File-system utilities every stage shares: atomic writes, SHA-256 manifests, atomic folder publish,
an inter-process lock, and the one ordered background writer.

Everything tempolens writes goes through here, so a killed run never leaves a half-written file
under its final name:

- :func:`atomic_write_bytes` writes a temporary ``.<name>.tmp-<pid>`` next to the target, fsyncs it and
  renames it over the target; :func:`remove_stale_temporaries` deletes the temporaries of dead writers.
- :func:`fresh_tmp_dir` + :func:`publish_dir` do the same for a whole folder.
- :func:`write_sha256sums` writes a ``sha256sum -c`` manifest, last, so its presence says the outputs
  it lists are complete.
- :func:`file_lock` serialises writers of one target across processes (``filelock``; released by the
  kernel if the holder dies).
- :class:`BackgroundWriter` runs write jobs in order in one thread, so compression and disk I/O overlap
  compute.

Errors are :class:`~tempolens.errors.WriteError` with one line that says what to do.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import queue
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tempolens.errors import WriteError

__all__ = [
    "BackgroundWriter",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "atomic_write_with",
    "ensure_out_dir",
    "file_lock",
    "fresh_tmp_dir",
    "publish_dir",
    "remove_stale_temporaries",
    "sha256_file",
    "write_sha256sums",
]


def sha256_file(path: Path | str, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes, read in ``chunk``-sized blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def fsync_dir(path: Path) -> None:
    """Flush a folder's entries (a rename in it) to disk; a no-op where the platform cannot."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def temporary_path(path: Path) -> Path:
    """The temporary name a writer uses for ``path`` (``.<name>.tmp-<pid>``, next to it)."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def atomic_write_with(path: Path | str, write: Callable[[Path], object]) -> None:
    """Write ``path`` atomically: ``write(tmp)`` fills the temporary file beside it, which is then fsynced and
    renamed over ``path``. On any failure the temporary file is removed and the error raised as it is (callers
    map it to their own message)."""
    path = Path(path)
    tmp = temporary_path(path)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file, fsync, rename).

    Raises :class:`WriteError` (one line) when the disk is full; the temporary file is removed."""
    try:
        atomic_write_with(path, lambda tmp: tmp.write_bytes(data))
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise WriteError(
                f"disk full while writing {path}; free space and rerun the same command — finished shards are kept"
            ) from e
        raise


def atomic_write_text(path: Path | str, text: str) -> None:
    """:func:`atomic_write_bytes` of UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path | str, obj: Any) -> None:
    """:func:`atomic_write_bytes` of ``obj`` as indented JSON with sorted keys and a final newline."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def ensure_out_dir(path: Path | str, option: str = "--out") -> Path:
    """Create the output folder ``path`` (and parents) and check that files can be written in it.

    Raises :class:`WriteError` (one line) when ``path`` is a file, is on a read-only filesystem, or is
    not writable — before any work is done."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise WriteError(f"{option} {path} is a file, not a folder; pass a folder path (it is created if missing)")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-probe.tmp-{os.getpid()}"
        with open(probe, "wb") as f:
            f.write(b"")
        probe.unlink()
    except OSError as e:
        if isinstance(e, FileExistsError) or e.errno == errno.ENOTDIR:
            raise WriteError(f"{option} {path}: a parent of it is a file, not a folder; pass a folder path") from None
        why = "the filesystem is read-only" if e.errno == errno.EROFS else (e.strerror or str(e))
        raise WriteError(f"{option} {path} cannot be written ({why}); pass a folder on a writable disk") from None
    return path


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # exists (another user's) or unknowable: keep its file
    return True


def remove_stale_temporaries(root: Path | str) -> list[Path]:
    """Delete temporary files (``.<name>.tmp-<pid>``) that a killed writer left under ``root``.

    A process killed between writing a temporary file and renaming it leaves the temporary behind.
    Files whose writer process is still alive on this machine are kept. Returns the removed paths."""
    removed: list[Path] = []
    root = Path(root)
    if not root.is_dir():
        return removed
    for p in root.rglob(".*.tmp-*"):
        pid = p.name.rsplit(".tmp-", 1)[1]
        if p.is_file() and pid.isdigit() and not _pid_alive(int(pid)):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def write_sha256sums(root: Path | str, folders: tuple[str, ...]) -> Path:
    """Write ``root/SHA256SUMS`` (the ``sha256sum -c`` format) for every file under ``folders``.

    Written last and atomically, so its presence also says the outputs it lists are complete."""
    root = Path(root)
    lines = []
    for folder in folders:
        for p in sorted((root / folder).rglob("*")):
            if p.is_file() and ".tmp-" not in p.name:
                lines.append(f"{sha256_file(p)}  {p.relative_to(root).as_posix()}\n")
    path = root / "SHA256SUMS"
    atomic_write_bytes(path, "".join(lines).encode())
    return path


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
    """An empty scratch folder next to ``final`` (same filesystem, so :func:`publish_dir` is a rename)."""
    final = Path(final)
    tmp = final.with_name(final.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


@contextlib.contextmanager
def file_lock(target: Path | str, timeout_s: float = 3600.0) -> Iterator[None]:
    """Hold an exclusive lock on ``<target>.lock`` while writing ``target``.

    Uses ``filelock`` (an OS advisory lock, released by the kernel if the process dies, so a killed
    writer never blocks the next one). Waits up to ``timeout_s`` for another writer to finish, then
    raises :class:`WriteError`."""
    import filelock

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    lock_path = target.with_name(target.name + ".lock")
    try:
        with filelock.FileLock(str(lock_path), timeout=timeout_s):
            yield
    except filelock.Timeout:
        raise WriteError(
            f"another tempolens process has held {lock_path} for over {timeout_s:.0f} s; "
            "wait for it or delete the lock file"
        ) from None


class BackgroundWriter:
    """Run ``submit``-ted write jobs one at a time, in order, in a daemon thread.

    zlib, safetensors and file writes release the GIL, so on two cores a job (gzip, write, rename) runs
    beside the main thread's work. The first error a job raises is raised again in the caller at the
    next :meth:`submit` or at :meth:`close`; later jobs are skipped, so nothing half-written follows a
    failure. Use as a context manager (``close`` on exit waits for every job); ``max_pending`` bounds the
    queue, so memory held by waiting jobs stays bounded.
    """

    def __init__(self, max_pending: int = 2, name: str = "tempolens-writer"):
        self._q: queue.Queue[Callable[[], object] | None] = queue.Queue(maxsize=max(1, int(max_pending)))
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            job = self._q.get()
            if job is None:
                return
            if self._error is None:
                try:
                    job()
                except BaseException as e:  # re-raised in the caller's thread
                    self._error = e

    def submit(self, job: Callable[[], object]) -> None:
        """Queue ``job`` (blocks while ``max_pending`` jobs wait); raises an earlier job's error."""
        if self._error is not None:
            raise self._error
        self._q.put(job)

    def close(self) -> None:
        """Wait for every queued job; raise the first error one of them raised."""
        if self._thread.is_alive():
            self._q.put(None)
            self._thread.join()
        if self._error is not None:
            raise self._error

    def __enter__(self) -> BackgroundWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:  # already failing: let queued jobs finish, keep the original exception
            try:
                self.close()
            except BaseException:
                pass
