"""The integration harness itself: a wait must not outlive the worker it waits on."""
from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests.stream.worker_harness import stop_worker, wait_until, watch


def test_a_wait_fails_at_once_with_the_log_tail_when_the_worker_exits(tmp_path):
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", "import sys; print('kafka.internal_partitions mismatch'); "
                                 "sys.exit(3)"], stdout=out, stderr=subprocess.STDOUT)
    watch(proc, log)
    started = time.monotonic()
    with pytest.raises(AssertionError, match=r"(?s)exited with code 3 while waiting for a rollback.*mismatch"):
        wait_until(lambda: False, timeout=120, what="a rollback")
    assert time.monotonic() - started < 30


def test_a_stopped_worker_is_no_longer_watched(tmp_path):
    proc = watch(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]), tmp_path / "w.log")
    stop_worker(proc)
    assert wait_until(lambda: 42, timeout=5, what="anything") == 42
