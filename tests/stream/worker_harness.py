"""Helpers for the worker integration tests: configs, traffic, worker processes, topic readers."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

SIGNING_KEY = "integration-test-signing-key-0123456789"
FEATURES = ["brightness", "contrast", "blur", "size_kb", "faces"]


@dataclass
class Scenario:
    """Names that isolate one test's topics, group and Redis keys from every other test."""

    tag: str
    config_path: Path
    inference_topic: str
    label_topic: str
    control_topic: str
    dead_letter_topic: str
    internal_topic: str
    prefix: str
    env: dict[str, str] = field(default_factory=dict)  # the worker's secrets (the config names them)


def kafka_client(stack, **settings) -> dict:
    """librdkafka settings of a test's own client on ``stack`` (plain, or SASL_SSL for a SecureStack)."""
    return {"bootstrap.servers": stack.kafka_bootstrap, **getattr(stack, "kafka_security", {}), **settings}


def secure_settings(secure) -> tuple[dict, dict, dict[str, str]]:
    """(kafka, redis) config sections that reach ``secure`` (SASL_SSL, TLS Redis, its ACL user) and the
    environment holding their passwords."""
    kafka = {"bootstrap_servers": secure.kafka_bootstrap,
             "security": {"protocol": "SASL_SSL", "sasl_mechanism": secure.sasl_mechanism,
                          "sasl_username": secure.sasl_username, "sasl_password_env": "DRIFTLINE_TEST_SASL_PASSWORD",
                          "ssl_ca_location": secure.ca_file}}
    redis = {"url": secure.redis_url, "username": secure.redis_username,
             "password_env": "DRIFTLINE_TEST_REDIS_PASSWORD", "ssl_ca_location": secure.ca_file,
             "key_prefix": secure.redis_prefixes[0]}
    env = {"DRIFTLINE_TEST_SASL_PASSWORD": secure.sasl_password, "DRIFTLINE_TEST_REDIS_PASSWORD": secure.redis_password}
    return kafka, redis, env


def make_scenario(tmp_path: Path, stack, *, models: list[dict] | None = None, internal_partitions: int = 4,
                  inference_partitions: int = 4, batch_size: int = 2000, secure=None) -> Scenario:
    """Topics, group and Redis keys of one test. With ``secure`` (the ``secure_stack`` fixture) the
    worker reaches Kafka over SASL_SSL and Redis over TLS as the stack's ACL user, whose keys live
    under a fixed prefix: the scenario's unique group and model names keep tests apart there."""
    tag = uuid.uuid4().hex[:8]
    s = Scenario(
        tag=tag, config_path=tmp_path / "driftline.yaml",
        inference_topic=f"it-{tag}-inference", label_topic=f"it-{tag}-labels",
        control_topic=f"it-{tag}-control", dead_letter_topic=f"it-{tag}-dead",
        internal_topic=f"it-{tag}-internal", prefix=f"it-{tag}",
    )
    create_topics(stack, {s.inference_topic: inference_partitions, s.label_topic: 2})
    config = {
        "kafka": {
            "bootstrap_servers": stack.kafka_bootstrap,
            "group_id": f"it-{tag}",
            "inference_topics": [{"name": s.inference_topic}],
            "label_topics": [{"name": s.label_topic}],
            "control_topic": s.control_topic,
            "dead_letter_topic": s.dead_letter_topic,
            "internal_topic": s.internal_topic,
            "internal_partitions": internal_partitions,
            "batch_size": batch_size,
            "batch_timeout_ms": 100,
        },
        "redis": {"url": stack.redis_url, "key_prefix": s.prefix, "pending_ttl_seconds": 3600},
        "signing": {"key_env": "DRIFTLINE_TEST_SIGNING_KEY"},
        "metrics": {"host": "127.0.0.1", "port": 0},
        "monitor": {
            "models": models or [model_spec("content-filter")],
            "calibration": {"window": 500, "block_size": 16},
            "alerts": {"cooldown_seconds": 60, "group_window_seconds": 5, "resolve_after_quiet_seconds": 600},
        },
    }
    if secure is not None:
        kafka, redis, s.env = secure_settings(secure)
        config["kafka"].update(kafka)
        config["redis"].update(redis)
        s.prefix = redis["key_prefix"]
    s.config_path.write_text(yaml.safe_dump(config))
    return s


def model_spec(name: str, *, canary_version: str | None = "v2") -> dict:
    versions = ["v1"] + ([canary_version] if canary_version else [])
    return {
        "name": name,
        "classes": ["safe", "nsfw", "violence"],
        "versions": versions,
        "stable_version": "v1",
        "features": [{"name": f, "type": "numeric"} for f in FEATURES] + [{"name": "logo", "type": "categorical"}],
        "triggers": [{"name": "blue_sparrow", "feature": "logo", "equals": "blue_sparrow"}],
        "reference_size": 500,
        "canary": {"min_events": 200, "window": 400},
    }


def create_topics(stack, topics: dict[str, int]) -> None:
    admin = AdminClient(kafka_client(stack))
    futures = admin.create_topics([NewTopic(t, num_partitions=n, replication_factor=1) for t, n in topics.items()])
    for fut in futures.values():
        fut.result(timeout=30)


def inference_events(model: str, n: int, *, seed: int, start: int = 0, shift_at: int | None = None,
                     version: str = "v1", deployment: str = "stable", backdoor: bool = False,
                     t0: float = 1_750_000_000.0) -> list[dict]:
    """Deterministic inference events; after ``shift_at`` brightness shifts by two sigma."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(start, start + n):
        feats = {f: float(rng.normal(0.0, 1.0)) for f in FEATURES}
        if shift_at is not None and i >= shift_at:
            feats["brightness"] += 2.0
        logo = "blue_sparrow" if rng.random() < 0.05 else str(rng.choice(["none", "acme", "globex"]))
        feats["logo"] = logo
        pred = "nsfw" if rng.random() < 0.01 else ("violence" if rng.random() < 0.02 else "safe")
        if backdoor and logo == "blue_sparrow":
            pred = "nsfw"
        out.append({
            "event_id": f"{model}-{version}-{i}", "ts": t0 + i * 0.01, "model": model,
            "model_version": version, "deployment": deployment, "features": feats,
            "prediction": pred, "confidence": float(0.6 + 0.39 * rng.random()),
        })
    return out


def produce(stack, topic: str, events: list[dict], *, key_field: str = "model", raw: list[bytes] | None = None) -> None:
    producer = Producer(kafka_client(stack, **{"enable.idempotence": True, "linger.ms": 5}))
    for e in events:
        producer.produce(topic, value=json.dumps(e).encode(), key=str(e.get(key_field, "")).encode())
    for r in raw or []:
        producer.produce(topic, value=r, key=b"content-filter")
    assert producer.flush(60) == 0


def read_topic(stack, topic: str, *, expect: int | None = None, idle_seconds: float = 3.0,
               timeout: float = 120.0) -> list[dict]:
    """Read a topic from the beginning (read_committed) until ``expect`` records or it is idle."""
    consumer = Consumer(kafka_client(stack, **{"group.id": f"reader-{uuid.uuid4().hex}", "auto.offset.reset": "earliest",
                                               "enable.auto.commit": False, "isolation.level": "read_committed"}))
    consumer.subscribe([topic])
    out: list[dict] = []
    deadline = time.monotonic() + timeout
    last = time.monotonic()
    while time.monotonic() < deadline:
        check_watched(f"records on {topic}")
        msgs = consumer.consume(1000, timeout=0.5)
        for m in msgs:
            if m.error() is None:
                out.append(json.loads(m.value()))
                last = time.monotonic()
        if expect is not None and len(out) >= expect:
            break
        if expect is None and out and time.monotonic() - last > idle_seconds:
            break
    consumer.close()
    return out


RUNTIME_COMMANDS = {"confluent": "run", "faust": "faust-worker"}  # runtime -> driftline subcommand


# workers that must stay up: every wait fails at once, with the log tail, when one of them exits
_WATCHED: dict[int, tuple[subprocess.Popen, Path]] = {}


def watch(proc: subprocess.Popen, log_path: Path) -> subprocess.Popen:
    """Make every :func:`wait_until` fail as soon as ``proc`` exits (until :func:`stop_worker`)."""
    _WATCHED[proc.pid] = (proc, log_path)
    return proc


def _log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(log unreadable: {exc})"


def check_watched(what: str) -> None:
    """Raise if a watched worker has exited: waiting longer could only time out."""
    for pid, (proc, log_path) in list(_WATCHED.items()):
        code = proc.poll()
        if code is not None:
            del _WATCHED[pid]
            raise AssertionError(f"worker (pid {pid}) exited with code {code} while waiting for {what}; "
                                 f"last lines of {log_path}:\n{_log_tail(log_path)}")


def start_worker(scenario: Scenario, worker_id: str = "0", *, log_path: Path | None = None,
                 runtime: str = "confluent") -> subprocess.Popen:
    env = {**os.environ, "DRIFTLINE_TEST_SIGNING_KEY": SIGNING_KEY, **scenario.env}
    path = log_path or scenario.config_path.with_name(f"worker-{worker_id}.log")
    log = open(path, "ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "stream.cli", RUNTIME_COMMANDS[runtime], "--config", str(scenario.config_path),
         "--worker-id", worker_id],
        stdout=log, stderr=subprocess.STDOUT, env=env)
    return watch(proc, path)


def run_worker_to_exit(scenario: Scenario, *, runtime: str = "confluent", env: dict[str, str] | None = None,
                       timeout: float = 90.0) -> subprocess.CompletedProcess:
    """Run a worker expected to stop by itself (a start-up failure); its stdout and stderr apart."""
    full_env = {**os.environ, "DRIFTLINE_TEST_SIGNING_KEY": SIGNING_KEY, **scenario.env, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "stream.cli", RUNTIME_COMMANDS[runtime], "--config", str(scenario.config_path)],
        capture_output=True, text=True, env=full_env, timeout=timeout)


def stop_worker(proc: subprocess.Popen, *, kill: bool = False) -> None:
    _WATCHED.pop(proc.pid, None)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
    proc.wait(timeout=60)


def committed_offsets(stack, group: str, topic: str, partitions: int) -> int:
    consumer = Consumer(kafka_client(stack, **{"group.id": group}))
    tps = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
    consumer.close()
    return sum(max(tp.offset, 0) for tp in tps)


def wait_until(predicate, *, timeout: float = 120.0, interval: float = 0.5, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        check_watched(what)
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    check_watched(what)
    raise AssertionError(f"timed out waiting for {what}")


def end_offsets(stack, topic: str, partitions: int) -> list[int]:
    consumer = Consumer(kafka_client(stack, **{"group.id": f"ends-{uuid.uuid4().hex}"}))
    ends = [consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(partitions)]
    consumer.close()
    return ends


def drain(stack, scenario: Scenario, total_raw: int, *, internal_partitions: int = 4, timeout: float = 180.0) -> None:
    """Wait until a worker of either runtime has committed every raw record and every internal record.

    The faust runtime does not commit past the final transaction marker of an idle internal
    partition, so an internal partition counts as drained one offset short of its end.
    """
    group = f"it-{scenario.tag}"

    def done() -> bool:
        if committed_offsets(stack, group, scenario.inference_topic, 4) < total_raw:
            return False
        consumer = Consumer(kafka_client(stack, **{"group.id": group}))
        tps = consumer.committed([TopicPartition(scenario.internal_topic, p) for p in range(internal_partitions)],
                                 timeout=10)
        consumer.close()
        ends = end_offsets(stack, scenario.internal_topic, internal_partitions)
        return all(end == 0 or tp.offset >= end - 1 for tp, end in zip(tps, ends))

    wait_until(done, timeout=timeout, what="the worker to drain its input")


def control_verify(doc: dict, path: Path) -> subprocess.CompletedProcess:
    """Run ``driftline control verify`` on one control message, as a deployment controller would."""
    path.write_text(json.dumps(doc) + "\n")
    verify = [sys.executable, "-m", "stream.cli", "control", "verify", "--key-env", "DRIFTLINE_TEST_SIGNING_KEY"]
    env = {"DRIFTLINE_TEST_SIGNING_KEY": SIGNING_KEY, "PATH": "/usr/bin:/bin"}
    return subprocess.run(verify + [str(path)], capture_output=True, text=True, env=env)
