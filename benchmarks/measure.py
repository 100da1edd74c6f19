"""Measure one child process: wall time, CPU time, peak RSS, timestamped output lines.

The child's resource usage comes from ``os.wait4`` on that child alone (``ru_maxrss`` is the
peak resident set of the child or of its largest waited-for descendant; ``ru_utime``/``ru_stime``
include waited-for descendants), so measurements of consecutive children never mix.
CPU time is reported next to wall time because on a shared machine wall time depends on the
other users' load while CPU time mostly does not.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class Measurement:
    """What one child process cost."""

    cmd: list[str]
    rc: int
    wall_s: float
    user_s: float
    sys_s: float
    max_rss_bytes: int
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]
    lines: list[tuple[float, str]] = field(default_factory=list)
    """``(seconds since start, line)`` of the child's merged stdout/stderr (tqdm redraws excluded)."""
    log: str = ""

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.sys_s

    @property
    def max_rss_gib(self) -> float:
        return self.max_rss_bytes / 2**30

    def tail(self, n: int = 30) -> str:
        return "\n".join(line for _, line in self.lines[-n:])

    def find(self, marker: str) -> list[tuple[float, str]]:
        """Lines containing ``marker`` (timestamp, the rest of the line after it).

        Substring, not prefix: a child's stdout line can follow a progress bar that stderr left
        without a newline."""
        return [(t, line.split(marker, 1)[1].strip()) for t, line in self.lines if marker in line]

    def summary(self) -> dict:
        d = asdict(self)
        d.pop("lines")
        d.update(cpu_s=self.cpu_s, max_rss_gib=self.max_rss_gib)
        return d


def run_measured(
    cmd: list[str],
    env: dict[str, str] | None = None,
    cwd: str | Path | None = None,
    log_path: str | Path | None = None,
    timeout_s: float | None = None,
    keep_lines: int = 4000,
) -> Measurement:
    """Run ``cmd`` to completion and measure it (see the module docstring).

    Output lines are kept with their time offsets (the last ``keep_lines``) and written to
    ``log_path``. A child still running after ``timeout_s`` is killed (its rc is then negative).
    """
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
    )
    lines: list[tuple[float, str]] = []
    log_fh = open(log_path, "w", buffering=1) if log_path else None  # line-buffered: follow a run with tail -f

    def reader() -> None:
        assert proc.stdout is not None
        for raw in iter(proc.stdout.readline, b""):
            t = time.perf_counter() - t0
            text = raw.decode("utf-8", "replace").rstrip("\n")
            last = text.split("\r")[-1]  # a tqdm bar redraws with \r: keep its final state
            if log_fh:
                log_fh.write(f"[{t:8.2f}] {last}\n")
            lines.append((t, last))
            if len(lines) > keep_lines:
                del lines[: len(lines) - keep_lines]

    th = threading.Thread(target=reader, daemon=True)
    th.start()
    timer = None
    if timeout_s:
        timer = threading.Timer(timeout_s, proc.kill)
        timer.start()
    try:
        _, status, ru = os.wait4(proc.pid, 0)
    finally:
        if timer:
            timer.cancel()
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    th.join(timeout=30)
    if log_fh:
        log_fh.close()
    return Measurement(
        cmd=[str(c) for c in cmd],
        rc=proc.returncode,
        wall_s=wall,
        user_s=ru.ru_utime,
        sys_s=ru.ru_stime,
        max_rss_bytes=int(ru.ru_maxrss) * 1024,  # Linux reports KiB
        load_before=load_before,
        load_after=os.getloadavg(),
        lines=lines,
        log=str(log_path or ""),
    )


def dir_bytes(path: str | Path, pattern: str = "**/*") -> int:
    """Total size of the regular files under ``path`` matching ``pattern`` (symlinks not followed)."""
    root = Path(path)
    if not root.exists():
        return 0
    return sum(p.stat().st_size for p in root.glob(pattern) if p.is_file() and not p.is_symlink())


def median(xs: list[float]) -> float:
    s = sorted(xs)
    n = len(s)
    if n == 0:
        return float("nan")
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])
