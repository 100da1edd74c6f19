"""One background thread that runs write jobs in order, so compression and disk I/O overlap compute.

zlib and file writes release the GIL, so on two cores a job (gzip, write, rename) runs beside the main
thread's work. The first error a job raises is raised again in the caller at the next :meth:`submit`
or at :meth:`close`; later jobs are skipped, so nothing half-written follows a failure.
"""

from __future__ import annotations

import queue
import threading
from typing import Callable


class BackgroundJobs:
    """Run ``submit``-ted callables one at a time, in order, in a daemon thread.

    Use as a context manager (``close`` on exit waits for every job and re-raises the first error);
    ``max_pending`` bounds the queue, so memory held by waiting jobs stays bounded.
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

    def __enter__(self) -> "BackgroundJobs":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:  # already failing: let queued jobs finish, keep the original exception
            try:
                self.close()
            except BaseException:
                pass
