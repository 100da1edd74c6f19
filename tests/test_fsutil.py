"""tempolens.fsutil: atomic writes, manifests, the cross-process lock."""

from __future__ import annotations

import errno
import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tempolens import fsutil
from tempolens.errors import TempolensError, WriteError


def test_atomic_write_leaves_only_the_final_file(tmp_path):
    target = tmp_path / "a.json"
    fsutil.atomic_write_json(target, {"b": 1, "a": [1, 2]})
    assert target.read_text() == '{\n  "a": [\n    1,\n    2\n  ],\n  "b": 1\n}\n'
    fsutil.atomic_write_text(target, "é")
    assert target.read_bytes() == "é".encode()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_disk_full_is_one_line_write_error_and_no_temporary(tmp_path, monkeypatch):
    real = os.replace

    def full(src, dst, *a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(WriteError, match=r"disk full while writing .*x\.bin; free space and rerun") as e:
        fsutil.atomic_write_bytes(tmp_path / "x.bin", b"123")
    monkeypatch.setattr(os, "replace", real)
    assert isinstance(e.value, TempolensError) and "\n" not in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_sha256sums_is_the_sha256sum_format(tmp_path):
    (tmp_path / "d" / "e").mkdir(parents=True)
    (tmp_path / "d" / "e" / "f.txt").write_bytes(b"hello")
    (tmp_path / "d" / ".g.tmp-1").write_bytes(b"partial")  # temporaries are not listed
    path = fsutil.write_sha256sums(tmp_path, ("d",))
    assert path.read_text() == f"{hashlib.sha256(b'hello').hexdigest()}  d/e/f.txt\n"
    r = subprocess.run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_publish_dir_replaces_the_old_folder(tmp_path):
    final = tmp_path / "site"
    for text in ("old", "new"):
        tmp = fsutil.fresh_tmp_dir(final)
        (tmp / "f").write_text(text)
        fsutil.publish_dir(tmp, final)
    assert (final / "f").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site"]


def _holder(target: Path, ready: Path) -> subprocess.Popen:
    code = textwrap.dedent(
        f"""
        import time
        from pathlib import Path
        from tempolens.fsutil import file_lock
        with file_lock(Path({str(target)!r})):
            Path({str(ready)!r}).write_text("held")
            time.sleep(60)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.time() + 60
    while not ready.exists() and time.time() < deadline:
        time.sleep(0.05)
    assert ready.exists(), "the lock holder did not start"
    return proc


def test_file_lock_waits_then_says_what_to_do_and_a_killed_holder_releases_it(tmp_path):
    target = tmp_path / "model"
    proc = _holder(target, tmp_path / "ready")
    try:
        with pytest.raises(WriteError, match=r"another tempolens process has held .*model\.lock for over 0 s"):
            with fsutil.file_lock(target, timeout_s=0.3):
                pass
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with fsutil.file_lock(target, timeout_s=5):  # the kernel released the dead holder's lock
        pass


def test_background_writer_runs_jobs_in_order_and_reraises_the_first_error():
    done: list[int] = []
    with fsutil.BackgroundWriter(max_pending=1) as w:
        for i in range(5):
            w.submit(lambda i=i: done.append(i))
    assert done == [0, 1, 2, 3, 4]
    w = fsutil.BackgroundWriter()
    w.submit(lambda: (_ for _ in ()).throw(ValueError("first")))
    w.submit(lambda: done.append(99))  # skipped after the failure
    with pytest.raises(ValueError, match="first"):
        w.close()
    assert 99 not in done
