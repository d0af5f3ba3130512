"""Workers joining and leaving the group while traffic flows: every raw message is routed once.

A revocation that lands while a batch is being gathered leaves the batch holding messages of
partitions another worker now owns; that worker reads them again from the committed offsets. The
batch used to be processed anyway and its offsets committed with group metadata taken after the
rebalance, which the coordinator accepts, so those messages were routed twice (55 and 58 raw
messages in two chaos runs, all at the first rebalance). Real Kafka and Redis of the stack.
"""
from __future__ import annotations

import json
import re
import threading
import time

import pytest
import yaml
from confluent_kafka import Producer

from loadtest.eos_verify import verify_run
from stream.signing import SigningKey
from tests.stream.worker_harness import (SIGNING_KEY, drain, inference_events, kafka_client, make_scenario, model_spec,
                                         start_worker, stop_worker, wait_until)

pytestmark = pytest.mark.integration

MODELS = [f"model-{i}" for i in range(6)]


def _owned(path, times: int) -> bool:
    """Whether a worker's log says ``times`` times that it owns internal partitions."""
    return path.exists() and len(re.findall(r"owns internal partitions \[\d", path.read_text())) >= times


def _send_steadily(stack, topic: str, events: list[dict], rate: float, failed: list[BaseException]) -> None:
    """Produce ``events`` at about ``rate`` per second, so that every rebalance meets traffic in flight."""
    try:
        producer = Producer(kafka_client(stack, **{"enable.idempotence": True, "linger.ms": 5}))
        started, chunk = time.monotonic(), 50
        for i in range(0, len(events), chunk):
            for e in events[i:i + chunk]:
                producer.produce(topic, value=json.dumps(e).encode(), key=e["model"].encode())
            producer.poll(0)
            pause = started + (i + chunk) / rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
        assert producer.flush(60) == 0
    except BaseException as exc:  # reported by the test's thread
        failed.append(exc)


def test_workers_joining_and_leaving_mid_stream_route_every_message_once(stack, tmp_path):
    scenario = make_scenario(tmp_path, stack, models=[model_spec(m) for m in MODELS], batch_size=500)
    config = yaml.safe_load(scenario.config_path.read_text())
    # long gathers, revocations noticed within half a second: most rebalances land inside a gather
    config["kafka"]["batch_timeout_ms"] = 250
    config["kafka"].setdefault("client_options", {})["heartbeat.interval.ms"] = 500
    scenario.config_path.write_text(yaml.safe_dump(config))
    per_model = 3000
    streams = [inference_events(m, per_model, seed=70 + i, shift_at=1500 if i % 2 else None)
               for i, m in enumerate(MODELS)]
    events = [e for group in zip(*streams) for e in group]  # the models interleaved, as a platform's log is
    first = start_worker(scenario, "a")
    second = None
    failed: list[BaseException] = []
    sender = threading.Thread(target=_send_steadily, args=(stack, scenario.inference_topic, events, 1000.0, failed))
    try:
        wait_until(lambda: _owned(tmp_path / "worker-a.log", 1), timeout=120, what="worker a to own partitions")
        sender.start()
        for cycle in range(1, 5):  # each cycle: a rebalance as the second worker joins, one as it leaves
            time.sleep(1.5)
            second = start_worker(scenario, "b")
            wait_until(lambda: _owned(tmp_path / "worker-b.log", cycle), timeout=120,
                       what=f"worker b to own partitions (cycle {cycle})")
            time.sleep(1.5)
            stop_worker(second)
            second = None
            wait_until(lambda: _owned(tmp_path / "worker-a.log", 1 + 2 * cycle), timeout=120,
                       what=f"worker a to own every partition again (cycle {cycle})")
        sender.join(timeout=120)
        assert not sender.is_alive() and not failed, failed
        drain(stack, scenario, len(events))
    finally:
        for proc in (first, second):
            if proc is not None:
                stop_worker(proc)
    report = verify_run(scenario.config_path, SigningKey("default", SIGNING_KEY.encode()), timeout=60)
    routing = report["routing"]
    logs = "\n".join((tmp_path / f"worker-{w}.log").read_text()[-2000:] for w in ("a", "b"))
    assert routing["raw"] == len(events), routing
    assert routing["duplicated"] == 0 and routing["lost"] == 0 and routing["order_violations"] == 0, (routing, logs)
    assert report["states"]["all_equal"], (report["states"], logs)
    assert report["messages"]["duplicated"] == 0 and report["messages"]["lost"] == 0, (report["messages"], logs)
    first_log = (tmp_path / "worker-a.log").read_text()
    assert "fetched across a rebalance (revoked)" in first_log, "no revocation landed inside a gather: the run " \
        "did not exercise what it tests"
    assert "abort:" not in first_log, "a dropped batch has no transaction to abort"
