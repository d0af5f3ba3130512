"""The worker's export of detector statistics: for every scrape, at once when idle, else at most once per interval."""
from __future__ import annotations

import threading
import time

import pytest

from detectors.simulate import demo_model, make_events
from stream.config import parse_config
from stream.worker import Worker


def _worker(monkeypatch, interval: float) -> Worker:
    monkeypatch.setenv("K", "k" * 32)
    spec = demo_model(name="m", n_numeric=3, n_categorical=0, triggers=False, reference_size=100)
    cfg = parse_config({"kafka": {"bootstrap_servers": "127.0.0.1:1", "inference_topics": [{"name": "t"}]},
                        "signing": {"key_env": "K"},
                        "metrics": {"enabled": False, "stats_interval_seconds": interval},
                        "monitor": {"models": [spec.model_dump(mode="json")]}})
    worker = Worker(cfg)
    worker._monitors["m"] = worker._new_monitor("m", None)
    return worker


def _ready(worker: Worker) -> float | None:
    return worker.metrics.value("driftline_reference_ready", model="m", version="v1", deployment="stable")


def _batch(worker: Worker, events: list) -> None:
    """What ``_detect`` does for a batch touching model ``m``."""
    worker._monitors["m"].process_inference(events)
    worker._stats_pending.add("m")
    worker._export_stats()


def test_statistics_wait_for_the_interval_while_batches_flow_and_not_when_idle(monkeypatch):
    worker = _worker(monkeypatch, 60.0)
    events = make_events(worker._monitors["m"].spec, 160, seed=1)
    _batch(worker, events[:50])
    assert _ready(worker) == 0.0, "the first batch is exported at once"
    _batch(worker, events[50:150])  # the reference fills: the model arms
    assert worker._monitors["m"].stats["streams"]["v1/stable"]["armed"]
    assert _ready(worker) == 0.0, "a second batch within the interval is not exported"
    worker._export_stats(idle=True)
    assert _ready(worker) == 1.0 and not worker._stats_pending
    worker._export_stats(idle=True)  # nothing touched since: nothing to do
    assert _ready(worker) == 1.0


def test_an_interval_of_zero_exports_every_batch(monkeypatch):
    worker = _worker(monkeypatch, 0.0)
    events = make_events(worker._monitors["m"].spec, 160, seed=1)
    _batch(worker, events[:50])
    assert _ready(worker) == 0.0
    _batch(worker, events[50:150])
    assert _ready(worker) == 1.0


def test_a_monitor_dropped_before_the_export_is_skipped(monkeypatch):
    worker = _worker(monkeypatch, 0.0)
    worker._stats_pending.add("m")
    del worker._monitors["m"]  # its partition was revoked
    worker._export_stats()
    assert _ready(worker) is None and not worker._stats_pending


@pytest.mark.parametrize("bad", [-1.0, 61.0, float("nan")])
def test_the_interval_is_validated_at_start_up(monkeypatch, bad):
    with pytest.raises(Exception, match="stats_interval_seconds"):
        _worker(monkeypatch, bad)


def _scrape_in_background(worker: Worker) -> tuple[threading.Thread, list[bytes]]:
    """A scrape of the worker's registry, waiting in its own thread as the HTTP server's would."""
    bodies: list[bytes] = []
    thread = threading.Thread(target=lambda: bodies.append(worker.metrics.render()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 5
    while not worker.metrics.scrapes.waiting() and time.monotonic() < deadline:
        time.sleep(0.001)
    assert worker.metrics.scrapes.waiting(), "the scrape waits for the batch loop"
    return thread, bodies


def test_a_scrape_gets_the_statistics_of_the_batch_in_progress_within_the_interval(monkeypatch):
    worker = _worker(monkeypatch, 60.0)
    events = make_events(worker._monitors["m"].spec, 160, seed=1)
    _batch(worker, events[:50])
    _batch(worker, events[50:150])  # armed, not exported: within the interval
    assert _ready(worker) == 0.0
    thread, bodies = _scrape_in_background(worker)
    assert thread.is_alive()
    _batch(worker, events[150:])  # the next batch's export answers the scrape
    thread.join(5)
    assert not thread.is_alive() and _ready(worker) == 1.0
    assert b'driftline_reference_ready{deployment="stable",model="m",version="v1"} 1.0' in bodies[0]
    assert not worker.metrics.scrapes.waiting() and not worker._stats_pending


def test_a_scrape_with_nothing_touched_is_answered_without_an_export(monkeypatch):
    worker = _worker(monkeypatch, 60.0)
    calls = []
    monkeypatch.setattr(worker.metrics, "export_model_stats", lambda *a: calls.append(a))
    thread, _ = _scrape_in_background(worker)
    worker._export_stats()
    thread.join(5)
    assert not thread.is_alive() and calls == [] and not worker.metrics.scrapes.waiting()
