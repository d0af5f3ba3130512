"""Redis loses its last writes (``appendfsync everysec`` and an OS crash) while Kafka keeps its transactions.

A private ``redis-server`` (append-only file, as the stack runs it) is restarted from its AOF cut
back to an earlier size: exactly what an operating-system crash does to writes not yet synced.
Kafka is the shared stack's. Two models share one internal partition, so a batch that touches
only one of them after the loss would leave the other's lost state behind. The verifier replays
the committed internal topic and compares control messages, state bytes and label joins.
"""
from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import orjson
import pytest
import redis
import yaml
from confluent_kafka import Consumer

from loadtest.eos_verify import verify_run
from stream.config import parse_config
from stream.decoding import build_decoders
from stream.signing import SigningKey
from stream.state import encode_pending, pending_lines
from stream.worker import Worker
from tests.stream.worker_harness import (SIGNING_KEY, committed_offsets, drain, inference_events, make_scenario,
                                         model_spec, produce, start_worker, stop_worker, wait_until)

pytestmark = pytest.mark.integration

MODELS = ["content-filter", "model-0"]  # both on internal partition 3 of 4


class PrivateRedis:
    """A redis-server with an append-only file in ``path``, on a free port of ``ports``."""

    def __init__(self, path: Path, ports: range) -> None:
        self.dir = path
        self.port = next(p for p in ports if _free(p))
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.dir),
             "--appendonly", "yes", "--appendfsync", "everysec", "--save", ""],
            stdout=open(self.dir / "redis.log", "ab"), stderr=subprocess.STDOUT)
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 20
        while True:
            try:
                if client.ping():
                    return
            except redis.ConnectionError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError("private redis did not start:\n" + (self.dir / "redis.log").read_text()[-2000:])
                time.sleep(0.05)

    def aof(self) -> Path:
        manifest = self.dir / "appendonlydir" / "appendonly.aof.manifest"
        incr = [ln.split()[1] for ln in manifest.read_text().splitlines() if ln.split()[-1:] == ["i"]]
        return manifest.parent / incr[-1]

    def crash_back_to(self, size: int) -> int:
        """SIGKILL, cut the AOF back to ``size`` bytes (what an OS crash leaves), restart; bytes lost."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        lost = self.aof().stat().st_size - size
        os.truncate(self.aof(), size)
        self.start()
        return lost

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


def _free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def _labels(events: list[dict]) -> list[dict]:
    return [{"event_id": e["event_id"], "ts": e["ts"] + 5, "label": e["prediction"], "source": "vendor-a"}
            for e in events[::4]]


def test_losing_redis_last_writes_duplicates_nothing_and_keeps_state_and_label_joins(stack, tmp_path, private_ports):
    private = PrivateRedis(tmp_path, range(private_ports + 40, private_ports + 60))
    private.start()
    worker = None
    try:
        scenario = make_scenario(tmp_path, dataclasses.replace(stack, redis_url=private.url),
                                 models=[model_spec(m) for m in MODELS], batch_size=500)
        config = yaml.safe_load(scenario.config_path.read_text())
        config["redis"]["label_wait_seconds"] = 2  # an unmatched label is dead-lettered soon
        config["redis"]["recent_predictions_seconds"] = 120  # the test's lost stretch may last more than 5 s
        scenario.config_path.write_text(yaml.safe_dump(config))
        sent = labelled = 0

        def phase(events: list[dict], labels: list[dict] = ()) -> None:
            nonlocal sent, labelled
            produce(stack, scenario.inference_topic, events)
            if labels:
                produce(stack, scenario.label_topic, list(labels), key_field="event_id")
            sent += len(events)
            labelled += len(labels)
            drain(stack, scenario, sent)
            wait_until(lambda: committed_offsets(stack, f"it-{scenario.tag}", scenario.label_topic, 2) >= labelled,
                       timeout=60, what="every label to be joined or dead-lettered")

        worker = start_worker(scenario)
        a = inference_events(MODELS[0], 1500, seed=31)
        b = inference_events(MODELS[1], 1500, seed=32)
        phase(a + b)
        synced = private.aof().stat().st_size
        # the lost second: only model A moves on (its drift alerts and predictions live in it)
        a2 = inference_events(MODELS[0], 1500, seed=33, start=1500, shift_at=1500)
        phase(a2)
        assert private.crash_back_to(synced) > 0  # the live worker rides over the restart
        b2 = inference_events(MODELS[1], 600, seed=34, start=1500)
        phase(b2, _labels(a2))  # touches only model B; labels need model A's lost predictions
        stop_worker(worker)
        worker = None

        # a crash while no worker runs: the restarted worker finds Redis behind Kafka
        synced = private.aof().stat().st_size
        worker = start_worker(scenario)
        a3 = inference_events(MODELS[0], 1500, seed=35, start=3000, version="v9")  # unlisted: an alert
        phase(a3)
        stop_worker(worker)
        worker = None
        assert private.crash_back_to(synced) > 0
        worker = start_worker(scenario)
        b3 = inference_events(MODELS[1], 300, seed=36, start=2100)
        phase(b3, _labels(a3))
        stop_worker(worker)
        worker = None

        report = verify_run(scenario.config_path, SigningKey("default", SIGNING_KEY.encode()), timeout=60)
    finally:
        if worker is not None:
            stop_worker(worker, kill=True)
        private.stop()
    log = (tmp_path / "worker-0.log").read_text()[-3000:]
    messages = report["messages"]
    assert messages["expected_by_kind"].get("alert", 0) >= 2, report  # the lost stretches raised alerts
    assert messages["duplicated"] == 0 and messages["lost"] == 0 and messages["extra"] == 0, (report, log)
    assert report["states"]["all_equal"], (report, log)
    assert report["labels"]["unmatched_known_event"] == 0, (report, log)
    assert report["ok"], (report, log)


def test_a_rewind_after_a_redis_restart_remembers_recent_predictions_again(tmp_path, monkeypatch, private_ports):
    """A batch that fails on a restarted Redis rewinds; the rewind must not take the new Redis for the
    one state was restored from. It used to record the new run id before anyone compared it, so the
    predictions routed in the lost second were never written again and their labels went unmatched
    (hundreds of ``label_unmatched`` of known events in the long chaos run)."""
    private = PrivateRedis(tmp_path, range(private_ports + 40, private_ports + 60))
    private.start()
    try:
        monkeypatch.setenv("K", "k" * 32)
        cfg = parse_config({"kafka": {"bootstrap_servers": "127.0.0.1:1", "inference_topics": [{"name": "t"}],
                                      "label_topics": [{"name": "l"}]},
                            "redis": {"url": private.url, "key_prefix": "rewind"},
                            "signing": {"key_env": "K"}, "metrics": {"enabled": False},
                            "monitor": {"models": [{"name": "m", "classes": ["a", "b"], "versions": ["v1"]}]}})
        worker = Worker(cfg)
        consumer = Consumer({"bootstrap.servers": "127.0.0.1:1", "group.id": "rewind"})  # no partitions to settle
        try:
            worker._settle(consumer, [], claim=True)  # the Redis state was restored from
            decoder = build_decoders(cfg)["t"]
            events = [decoder.decode_inference(orjson.dumps(e)) for e in inference_events("m", 20, seed=1)]
            ids = [e.event_id for e in events]
            pending = encode_pending(pending_lines([(e.event_id, e) for e in events]))
            worker._store.remember_batch(pending, cfg.redis.pending_ttl_seconds)
            worker._recent.append((time.monotonic(), pending))  # as routing keeps them
            assert private.crash_back_to(0) > 0  # the predictions were in the lost stretch
            assert worker._store.lookup_predictions(ids) == [[]] * len(ids)
            worker._settle(consumer, [], claim=False)  # the failed batch's rewind
            found = worker._store.lookup_predictions(ids)
            assert all(len(p) == 1 and p[0].model == "m" for p in found), found
        finally:
            consumer.close()
    finally:
        private.stop()
