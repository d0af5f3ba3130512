"""The label join's write of a batch's predictions: it runs while the batch's internal records are
detected, and the batch's labels are routed only once it has landed."""
from __future__ import annotations

import threading
import time

import pytest
import redis

from detectors.simulate import demo_model
from stream.config import parse_config
from stream.worker import BatchOutcome, Worker


def _worker(monkeypatch) -> Worker:
    monkeypatch.setenv("K", "k" * 32)
    spec = demo_model(name="m", n_numeric=3, n_categorical=0, triggers=False, reference_size=100)
    cfg = parse_config({"kafka": {"bootstrap_servers": "127.0.0.1:1", "inference_topics": [{"name": "t"}],
                                  "label_topics": [{"name": "l"}]},
                        "signing": {"key_env": "K"}, "metrics": {"enabled": False},
                        "monitor": {"models": [spec.model_dump(mode="json")]}})
    return Worker(cfg)


def _dropped(worker: Worker) -> float:
    return worker.metrics.value("driftline_pending_dropped_total") or 0.0


def _start(worker: Worker, write) -> None:
    """What the end of ``_route_inference`` does with a batch's predictions."""
    worker._remembering = worker._writer.submit(write)


def test_labels_are_routed_only_after_the_write_has_landed(monkeypatch):
    worker = _worker(monkeypatch)
    landed = []
    release = threading.Event()

    def write() -> int:
        release.wait(5)
        landed.append(time.monotonic())
        return 2  # predictions the bound kept out

    _start(worker, write)
    assert not landed, "the write runs beside the caller"
    threading.Timer(0.2, release.set).start()
    assert worker._route_labels([], BatchOutcome()) == {}
    assert landed and worker._remembering is None
    assert _dropped(worker) == 2.0
    worker._writer.shutdown()


def test_a_failed_write_fails_the_batch(monkeypatch):
    worker = _worker(monkeypatch)

    def write() -> int:
        raise redis.ConnectionError("gone")

    _start(worker, write)
    with pytest.raises(redis.ConnectionError):
        worker._route_labels([], BatchOutcome())  # the batch loop rewinds and retries on this error
    assert worker._remembering is None
    worker._writer.shutdown()


def test_after_a_failed_batch_a_write_in_flight_is_waited_for_quietly(monkeypatch):
    worker = _worker(monkeypatch)
    done = []

    def write() -> int:
        time.sleep(0.1)
        done.append(True)
        raise redis.ConnectionError("gone")

    _start(worker, write)
    worker._settle_remembering()  # what _process does on its way out of a failed batch
    assert done and worker._remembering is None
    worker._settle_remembering()  # nothing in flight: nothing to do
    assert _dropped(worker) == 0.0
    worker._writer.shutdown()
