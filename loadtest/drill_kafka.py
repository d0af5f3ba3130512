"""Run a drill through the live path: a worker on a loopback Kafka and Redis, on fresh topics.

The scenario is produced to its own inference and label topics and a :class:`~stream.worker.Worker`
runs in this process; the control messages of every committed batch are collected until the
worker has routed everything and no new control message has appeared for a while. Returns what the replay
runner returns, so both modes are scored the same way. With ``metrics_port`` the worker serves
/metrics there (a port the local stack's Prometheus scrapes) and ``hold`` keeps it running until a
condition outside (an alert reaching Alertmanager's receiver) is met.
"""
from __future__ import annotations

import os
import secrets
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any


import orjson

from loadtest.drill_traffic import MODEL
from loadtest.drills import Drill, drill_config, produce

KEY_ENV = "DRIFTLINE_DRILL_SIGNING_KEY"


def _loopback(address: str) -> None:
    host = address.split("//")[-1].rsplit(":", 1)[0].split("@")[-1].strip("[]")
    if host not in ("localhost", "127.0.0.1", "::1"):
        raise ValueError(f"drills only talk to loopback services, not {host!r}")


def run_kafka(drill: Drill, bootstrap: str, redis_url: str, rate: float = 20_000.0, timeout: float = 300.0,
              idle: float = 8.0, counts: dict[str, int] | None = None, metrics_port: int | None = None,
              model: str | None = None, hold: Callable[[], bool] | None = None,
              false_alarms_per_million: float | None = None) -> list[dict[str, Any]]:
    """Produce ``drill`` to fresh topics, run a worker, return the control messages it committed.

    ``counts``, if given, receives the committed events, joined labels, dead letters and registry events.
    ``metrics_port`` serves the worker's /metrics on loopback; ``model`` renames the drill's model
    (series of this run only); ``hold`` keeps the worker running, once idle, until it returns True
    (bounded by ``timeout``); ``false_alarms_per_million`` replaces the default calibration budget.
    """
    from confluent_kafka.admin import AdminClient, NewTopic

    from stream.config import parse_config
    from stream.metrics import serve_metrics
    from stream.worker import BatchOutcome, Worker

    _loopback(bootstrap)
    _loopback(redis_url)
    os.environ.setdefault(KEY_ENV, secrets.token_hex(32))  # an ephemeral key for this process only
    keydir = tempfile.TemporaryDirectory(prefix="drill-registry-")
    key_file = None
    if drill.registry:  # the workers' copy of the deploy step's public key
        key_file = os.path.join(keydir.name, "registry.pub")
        with open(key_file, "wb") as fh:
            fh.write(drill.registry_public_key)
    doc = drill_config(bootstrap, redis_url, prefix=f"drill-{uuid.uuid4().hex[:10]}", registry_key_file=key_file,
                       false_alarms_per_million=false_alarms_per_million)
    doc["signing"] = {"key_env": KEY_ENV}
    doc["metrics"] = {"enabled": metrics_port is not None, "port": metrics_port or 0}
    if model is not None:
        drill = rename_model(drill, model)
        doc["monitor"]["models"][0]["name"] = model
    doc["kafka"].update({"batch_size": 5000, "batch_timeout_ms": 100, "internal_partitions": 2})
    config = parse_config(doc)
    k = config.kafka
    inf_topic, lab_topic = k.inference_topics[0].name, k.label_topics[0].name
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for fut in admin.create_topics([NewTopic(t, num_partitions=2, replication_factor=1)
                                    for t in (inf_topic, lab_topic)]).values():
        fut.result(30)

    routed = [0]
    totals = counts if counts is not None else {}
    totals.update(events=0, labels=0, dead_letters=0, registry=0)
    messages: list[dict[str, Any]] = []
    lock = threading.Lock()

    def on_batch(outcome: BatchOutcome) -> None:  # called once the batch's transaction has committed
        with lock:
            routed[0] += outcome.events + outcome.labels + outcome.dead_letters + outcome.registry
            totals["events"] += outcome.events
            totals["labels"] += outcome.labels
            totals["dead_letters"] += outcome.dead_letters
            totals["registry"] += outcome.registry
            messages.extend(outcome.control_messages)

    worker = Worker(config, worker_id="drill", on_batch=on_batch)
    server = serve_metrics(config.metrics, worker.metrics)
    thread = threading.Thread(target=worker.run, name="driftline-drill-worker", daemon=True)
    thread.start()
    try:
        if not worker.ready.wait(60):
            raise RuntimeError("the worker did not get its partitions within 60s")
        sent = produce(bootstrap, drill, inf_topic, lab_topic, rate, registry_topic=k.registry_topic)
        deadline = time.monotonic() + timeout
        seen, last = 0, time.monotonic()
        while time.monotonic() < deadline and thread.is_alive():
            time.sleep(0.5)
            with lock:
                n, done = len(messages), routed[0] >= sent
            now = time.monotonic()
            if n != seen:
                seen, last = n, now
            elif done and now - last >= idle:
                break
        while hold is not None and time.monotonic() < deadline and thread.is_alive() and not hold():
            time.sleep(0.25)
    finally:
        worker.stop()
        thread.join(30)
        server.shutdown()
        _cleanup(admin, config)
        keydir.cleanup()
    return list(messages)


def rename_model(drill: Drill, name: str) -> Drill:
    """The same drill with its model renamed in every inference line (to tell its series apart)."""
    if drill.registry:
        raise ValueError("a registry drill's events are signed for its model; it cannot be renamed")
    old = b'"model":' + orjson.dumps(MODEL)
    new = b'"model":' + orjson.dumps(name)
    return Drill([line.replace(old, new, 1) for line in drill.inference], drill.labels, dict(drill.meta, model=name),
                 drill.inference_ts, drill.label_ts)


def _cleanup(admin: Any, config: Any) -> None:
    """Delete this run's topics and Redis keys (best effort: a drill leaves nothing behind)."""
    import redis

    k = config.kafka
    topics = [t.name for t in k.inference_topics + k.label_topics] + [k.control_topic, k.internal_topic,
                                                                      k.dead_letter_topic]
    if k.registry_topic:
        topics.append(k.registry_topic)
    for fut in admin.delete_topics(topics).values():
        try:
            fut.result(30)
        except Exception:  # noqa: BLE001 - a topic that was never created
            pass
    client = redis.Redis.from_url(config.redis.url)
    keys = list(client.scan_iter(match=f"{config.redis.key_prefix}:*", count=1000))
    for i in range(0, len(keys), 1000):
        client.delete(*keys[i:i + 1000])
