"""The background writer: jobs run in order, the first error reaches the caller, nothing runs after it."""

from __future__ import annotations

import time

import pytest

from tempolens.fsutil import BackgroundWriter


def test_jobs_run_in_order_and_close_waits():
    done: list[int] = []
    with BackgroundWriter(max_pending=1) as jobs:
        for i in range(20):
            jobs.submit(lambda i=i: (time.sleep(0.001), done.append(i)))
    assert done == list(range(20))


def test_first_error_is_raised_and_later_jobs_are_skipped():
    done: list[int] = []
    jobs = BackgroundWriter(max_pending=4)

    def fail() -> None:
        raise OSError(28, "No space left on device")

    jobs.submit(lambda: done.append(1))
    jobs.submit(fail)
    jobs.submit(lambda: done.append(3))
    with pytest.raises(OSError, match="No space left"):
        jobs.close()
    assert done == [1]
    with pytest.raises(OSError):  # and at the next submit
        jobs.submit(lambda: done.append(4))


def test_an_error_in_the_caller_is_kept_over_a_write_error():
    with pytest.raises(KeyError):
        with BackgroundWriter() as jobs:
            jobs.submit(lambda: 1 / 0)
            time.sleep(0.05)
            raise KeyError("caller")
