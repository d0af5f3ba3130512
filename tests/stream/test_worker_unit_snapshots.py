"""When the worker saves its models' state: once per snapshot interval while batches flow, whether it
keeps up with its input or not; every batch with an interval of 0 (the faust runtime's)."""
from __future__ import annotations

import time

from detectors.simulate import demo_model, make_events
from stream.config import parse_config
from stream.records import encode_inference_batch, encode_registry, partition_for
from stream.registry import generate_key, sign_event, write_keypair
from stream.worker import BatchOutcome, Worker

MODELS = ["m0", "m1", "m2"]


class _Record:
    """An internal-topic message as the batch loop hands it to ``_detect``."""

    def __init__(self, topic: str, partition: int, offset: int, value: bytes) -> None:
        self._topic, self._partition, self._offset, self._value = topic, partition, offset, value

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes:
        return self._value

    def key(self) -> None:
        return None

    def error(self) -> None:
        return None


class _Stages:
    """What ``_detect`` asks the state store to stage: (partition, offset, models)."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int, list[str]]] = []

    def stage(self, part, offset, blobs, expect_committed) -> None:
        self.calls.append((part.partition, offset, sorted(blobs)))


def _worker(monkeypatch, interval: float, registry_key: str | None = None, caught_up_ms: int = 0) -> Worker:
    monkeypatch.setenv("K", "k" * 32)
    specs = [demo_model(name=m, n_numeric=3, n_categorical=0, triggers=False, reference_size=100) for m in MODELS]
    doc = {"kafka": {"bootstrap_servers": "127.0.0.1:1", "inference_topics": [{"name": "t"}],
                     "internal_partitions": 1, "detect_hold_caught_up_ms": caught_up_ms},
           "signing": {"key_env": "K"}, "metrics": {"enabled": False},
           "redis": {"snapshot_interval_seconds": interval},
           "monitor": {"models": [s.model_dump(mode="json") for s in specs]}}
    if registry_key is not None:
        doc["kafka"]["registry_topic"] = "r"
        doc["registry"] = {"public_keys": {"deploy": registry_key}}
    cfg = parse_config(doc)
    worker = Worker(cfg)
    for m in MODELS:
        worker._monitors[m] = worker._new_monitor(m, None)
    worker._store = _Stages()
    return worker


def _batches(worker: Worker, count: int) -> list[dict[int, list[_Record]]]:
    """``count`` batches of internal records, each holding 40 events of every model."""
    streams = {m: make_events(worker._monitors[m].spec, 40 * count, seed=i) for i, m in enumerate(MODELS)}
    for i, events in enumerate(streams.values()):
        for k, e in enumerate(events):
            e.position = i * 10_000 + k
    out, offset = [], 0
    for b in range(count):
        records = []
        for m in MODELS:
            for value in encode_inference_batch(streams[m][40 * b:40 * (b + 1)]):
                records.append(_Record(worker._internal, partition_for(m, 1), offset, value))
                offset += 1
        out.append({0: records})
    return out


def _run(worker: Worker, batches: list[dict[int, list[_Record]]]) -> None:
    """Each batch through ``_detect``, then what a committed transaction does with what it staged."""
    for internal in batches:
        last = internal[0][-1].offset() + 1
        staged = worker._detect(internal, {(worker._internal, 0): last}, BatchOutcome())
        for part in staged:
            worker._mark_saved(part.partition, worker._staging.pop(part.partition))


def test_batches_within_the_interval_are_not_saved_one_by_one(monkeypatch):
    worker = _worker(monkeypatch, 3600.0)
    _run(worker, _batches(worker, 4))
    # the first batch finds no snapshot at all; the next three fall within the interval
    assert worker._store.calls == [(0, len(MODELS), MODELS)]
    assert worker._dirty[0] == set(MODELS), "the later batches' changes wait for the next snapshot"


def test_a_snapshot_is_due_again_once_the_interval_has_passed(monkeypatch):
    worker = _worker(monkeypatch, 3600.0)
    batches = _batches(worker, 3)
    _run(worker, batches[:2])
    worker._last_snapshot[0] -= 3600.0
    _run(worker, batches[2:])
    assert [offset for _, offset, _ in worker._store.calls] == [3, 9]
    assert not worker._dirty[0]


def test_an_interval_of_zero_saves_every_batch(monkeypatch):
    worker = _worker(monkeypatch, 0.0)
    _run(worker, _batches(worker, 3))
    assert [offset for _, offset, _ in worker._store.calls] == [3, 6, 9]


def test_a_batch_that_applies_a_registry_event_is_saved_at_once(monkeypatch, tmp_path):
    """``driftline registry show`` reads the committed manifest: a release shows without waiting
    for the interval, while the batches around it still wait."""
    key = generate_key()
    write_keypair(key, tmp_path / "deploy.key", tmp_path / "deploy.pub")
    worker = _worker(monkeypatch, 3600.0, str(tmp_path / "deploy.pub"))
    batches = _batches(worker, 3)
    _run(worker, batches[:2])
    release = sign_event(key, "deploy", "m1", "v2", "ab" * 32, "canary")
    offset = batches[1][0][-1].offset() + 1
    record = _Record(worker._internal, 0, offset, encode_registry("m1", 1 << 50, release))
    _run(worker, [{0: [record]}])
    _run(worker, batches[2:])
    assert [offset for _, offset, _ in worker._store.calls] == [3, 7]
    assert worker._store.calls[1][2] == MODELS, "every model changed since the last snapshot goes with it"
    assert "v2" in worker._monitors["m1"].listed


def test_held_records_stay_out_of_the_transaction_and_detect_as_one_run(monkeypatch):
    """Under a backlog the internal partition's records wait, its offset is left out of the
    transaction (a crash reads them again), and once released they are detected in one run per
    model with the same result as batch by batch."""
    held, each = _worker(monkeypatch, 3600.0), _worker(monkeypatch, 3600.0)
    batches = _batches(held, 3)
    _run(each, batches)
    for k, internal in enumerate(batches, 1):
        positions = {(held._internal, 0): internal[0][-1].offset() + 1, ("t", 0): 5}
        assert held._due(internal, positions, backlog=True) == {}
        assert positions == {("t", 0): 5}
        assert held.metrics.registry.get_sample_value("driftline_held_records") == k * len(MODELS)
    positions = {}
    due = held._due({}, positions, backlog=False)  # the input caught up: everything is released
    assert held.metrics.registry.get_sample_value("driftline_held_records") == 0
    assert [r.offset() for r in due[0]] == list(range(3 * len(MODELS)))
    assert positions == {(held._internal, 0): 3 * len(MODELS)}
    runs = []
    monkeypatch.setattr(type(held._monitors["m0"]), "process_inference",
                        _counting(type(held._monitors["m0"]).process_inference, runs))
    _run(held, [due])
    assert len(runs) == len(MODELS), "one engine call per model for the three batches"
    assert {m: held._monitors[m].to_bytes() for m in MODELS} == {m: each._monitors[m].to_bytes() for m in MODELS}


def test_a_worker_without_a_backlog_holds_nothing_without_a_caught_up_wait(monkeypatch):
    worker = _worker(monkeypatch, 3600.0)
    internal = _batches(worker, 1)[0]
    positions = {(worker._internal, 0): internal[0][-1].offset() + 1}
    assert worker._due(internal, positions, backlog=False) == internal
    assert positions == {(worker._internal, 0): len(MODELS)} and not worker._hold


def test_a_worker_that_keeps_up_holds_short_records_for_the_caught_up_wait(monkeypatch):
    """``kafka.detect_hold_caught_up_ms``: without a backlog, short records wait that long, out of
    the transaction, then come out together."""
    worker = _worker(monkeypatch, 3600.0, caught_up_ms=200)
    assert worker._hold.caught_up_seconds == 0.2
    first, second = _batches(worker, 2)
    started = time.monotonic()
    positions = {(worker._internal, 0): first[0][-1].offset() + 1}
    assert worker._due(first, positions, backlog=False) == {} and positions == {}
    positions = {(worker._internal, 0): second[0][-1].offset() + 1}
    due = worker._due(second, positions, backlog=False)
    if time.monotonic() - started < 0.2:  # a slow machine may have taken the whole wait already
        assert due == {} and positions == {}
        assert worker.metrics.registry.get_sample_value("driftline_held_records") == 2 * len(MODELS)
        time.sleep(0.2)
        due = worker._due({}, positions, backlog=False)
    assert [r.offset() for r in due[0]] == list(range(2 * len(MODELS)))
    assert positions == {(worker._internal, 0): 2 * len(MODELS)} and not worker._hold


def _counting(method, calls: list):
    def counted(self, items):
        calls.append(len(items))
        return method(self, items)
    return counted
