"""End-to-end benchmark: events/s through Kafka and Redis with one worker, and produce-to-alert latency.

Needs the local stack (`scripts/stack start`). Prints one JSON object:

- ``baseline_events_per_s``: a bare consumer loop over the same topic (consume, orjson decode,
  commit per batch), measured in this run on this machine: the ceiling for any Python consumer;
- ``worker_events_per_s``: the driftline worker (20-feature model, all signals) from first
  consume to the last event's state committed, median of ``--repeats`` runs, and the ratio;
- ``alert_latency_s``: wall time from producing a poisoned event burst to the alert it causes
  appearing on the control topic (read_committed), median over repeats.

``--runtime`` picks the worker: ``confluent`` (``driftline run``, the default runtime), ``faust``
(``driftline faust-worker``) or ``both``, measured in the same run, each repeat on fresh topics;
with ``both`` the output has a ``runtimes`` object (per runtime: rate, ratio to the baseline,
latency) and ``faust_to_confluent_ratio``.

    python loadtest/bench_pipeline.py --events 100000 --repeats 3
    python loadtest/bench_pipeline.py --events 50000 --repeats 3 --runtime both
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import orjson
import yaml
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

N_FEATURES = 20
MODEL = "bench-model"


def _events(n: int, seed: int, t0: float, shift_from: int | None = None) -> list[bytes]:
    rng = np.random.default_rng(seed)
    values = rng.normal(0.0, 1.0, size=(n, N_FEATURES))
    if shift_from is not None:
        values[shift_from:, :] += 3.0
    preds = rng.choice(["safe", "nsfw", "violence"], size=n, p=[0.97, 0.01, 0.02])
    conf = 0.6 + 0.39 * rng.random(n)
    out = []
    for i in range(n):
        feats = {f"f{j}": float(values[i, j]) for j in range(N_FEATURES)}
        out.append(orjson.dumps({
            "event_id": f"b{seed}-{i}", "ts": t0 + i * 0.001, "model": MODEL, "model_version": "v1",
            "deployment": "stable", "features": feats, "prediction": str(preds[i]), "confidence": float(conf[i]),
        }))
    return out


def _config(bootstrap: str, redis_url: str, tag: str, topic: str) -> dict:
    return {
        "kafka": {"bootstrap_servers": bootstrap, "group_id": f"bench-{tag}",
                  "inference_topics": [{"name": topic}], "label_topics": [{"name": f"{topic}-labels"}],
                  "control_topic": f"{topic}-control", "dead_letter_topic": f"{topic}-dead",
                  "internal_topic": f"{topic}-internal", "internal_partitions": 4,
                  "batch_size": 5000, "batch_timeout_ms": 50},
        "redis": {"url": redis_url, "key_prefix": f"bench-{tag}", "pending_ttl_seconds": 600},
        "signing": {"key_env": "DRIFTLINE_BENCH_SIGNING_KEY"},
        "metrics": {"host": "127.0.0.1", "port": 0},
        "monitor": {"models": [{
            "name": MODEL, "classes": ["safe", "nsfw", "violence"], "versions": ["v1"], "stable_version": "v1",
            "features": [{"name": f"f{j}", "type": "numeric"} for j in range(N_FEATURES)],
            "reference_size": 2000}]},
    }


def _produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.num.messages": 10000,
                  "queue.buffering.max.messages": 1_000_000, "compression.type": "lz4"})
    for v in values:
        while True:
            try:
                p.produce(topic, value=v, key=MODEL.encode())
                break
            except BufferError:
                p.poll(0.05)
    p.flush(120)


def _create(bootstrap: str, topics: list[str], partitions: int = 4) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.create_topics([NewTopic(t, num_partitions=partitions, replication_factor=1) for t in topics]).values():
        f.result(timeout=30)


def _committed(bootstrap: str, group: str, topic: str) -> int:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    tps = c.committed([TopicPartition(topic, p) for p in range(4)], timeout=10)
    c.close()
    return sum(max(tp.offset, 0) for tp in tps)


def baseline(bootstrap: str, topic: str, n: int) -> float:
    """Bare consumer loop: consume, decode every message, commit asynchronously per batch."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"baseline-{uuid.uuid4().hex}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe([topic])
    seen, started = 0, None
    while seen < n:
        msgs = c.consume(5000, 1.0)
        if msgs and started is None:
            started = time.perf_counter()
        for m in msgs:
            if m.error() is None:
                orjson.loads(m.value())
                seen += 1
        if msgs:
            c.commit(asynchronous=True)
    elapsed = time.perf_counter() - started
    c.close()
    return n / elapsed


RUNTIME_COMMANDS = {"confluent": "run", "faust": "faust-worker"}  # runtime -> driftline subcommand


def worker_run(bootstrap: str, redis_url: str, n: int, seed: int,
               runtime: str = "confluent") -> tuple[float, float | None]:
    """Events/s of one worker over ``n`` pre-produced events, then the produce-to-alert latency."""
    tag = uuid.uuid4().hex[:8]
    topic = f"bench-{tag}"
    _create(bootstrap, [topic, f"{topic}-labels"])
    _produce(bootstrap, topic, _events(n, seed, 1_750_000_000.0))
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "bench.yaml"
        cfg.write_text(yaml.safe_dump(_config(bootstrap, redis_url, tag, topic)))
        env = dict(os.environ, DRIFTLINE_BENCH_SIGNING_KEY="bench-key-0123456789abcdef")
        log = open(Path(tmp) / "worker.log", "wb")
        proc = subprocess.Popen([sys.executable, "-m", "stream.cli", RUNTIME_COMMANDS[runtime], "--config", str(cfg)],
                                stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            group = f"bench-{tag}"
            started = None
            while True:
                raw = _committed(bootstrap, group, topic)
                if started is None and raw > 0:
                    started = time.perf_counter() - 0.05
                internal = _committed(bootstrap, group, f"{topic}-internal")
                if raw >= n and internal >= n:
                    break
                if proc.poll() is not None:
                    raise RuntimeError(f"worker exited: {(Path(tmp) / 'worker.log').read_text()[-12000:]}")
                time.sleep(0.05)
            rate = n / (time.perf_counter() - started)
            latency = _alert_latency(bootstrap, topic, seed)
        finally:
            proc.terminate()
            proc.wait(60)
    return rate, latency


def _alert_latency(bootstrap: str, topic: str, seed: int) -> float | None:
    """Produce a strongly shifted burst and time it until the first alert is readable."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"lat-{uuid.uuid4().hex}",
                  "auto.offset.reset": "latest", "isolation.level": "read_committed"})
    c.subscribe([f"{topic}-control"])
    c.consume(1, 2.0)  # join the group before the burst
    burst = _events(3000, seed + 1000, 1_750_100_000.0, shift_from=0)
    sent = time.perf_counter()
    _produce(bootstrap, topic, burst)
    deadline = sent + 60
    try:
        while time.perf_counter() < deadline:
            for m in c.consume(100, 0.2):
                if m.error() is None and orjson.loads(m.value()).get("kind") == "alert":
                    return time.perf_counter() - sent
    finally:
        c.close()
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--bootstrap", default=f"127.0.0.1:{os.environ.get('DRIFTLINE_KAFKA_PORT', '19092')}")
    ap.add_argument("--redis", default=f"redis://127.0.0.1:{os.environ.get('DRIFTLINE_REDIS_PORT', '16379')}/0")
    ap.add_argument("--runtime", choices=["confluent", "faust", "both"], default="confluent")
    args = ap.parse_args(argv)
    runtimes = ["confluent", "faust"] if args.runtime == "both" else [args.runtime]
    base_rates: list[float] = []
    rates: dict[str, list[float]] = {r: [] for r in runtimes}
    latencies: dict[str, list[float]] = {r: [] for r in runtimes}
    for r in range(args.repeats):
        topic = f"bench-base-{uuid.uuid4().hex[:8]}"
        _create(args.bootstrap, [topic])
        _produce(args.bootstrap, topic, _events(args.events, r, 1_750_000_000.0))
        base_rates.append(baseline(args.bootstrap, topic, args.events))
        for runtime in runtimes:
            rate, latency = worker_run(args.bootstrap, args.redis, args.events, r, runtime)
            rates[runtime].append(rate)
            if latency is not None:
                latencies[runtime].append(latency)
    base = statistics.median(base_rates)
    per_runtime = {runtime: {
        "worker_events_per_s": round(statistics.median(rates[runtime])),
        "worker_to_baseline_ratio": round(statistics.median(rates[runtime]) / base, 4),
        "alert_latency_s_median": round(statistics.median(latencies[runtime]), 3) if latencies[runtime] else None,
        "alert_latency_s_all": [round(x, 3) for x in latencies[runtime]],
        "worker_events_per_s_all": [round(x) for x in rates[runtime]],
    } for runtime in runtimes}
    result = {"benchmark": "pipeline", "events": args.events, "repeats": args.repeats, "features": N_FEATURES,
              "baseline_events_per_s": round(base), "baseline_events_per_s_all": [round(x) for x in base_rates]}
    if len(runtimes) == 1:
        result.update(per_runtime[runtimes[0]], runtime=runtimes[0])
    else:
        result["runtimes"] = per_runtime
        result["faust_to_confluent_ratio"] = round(
            statistics.median(rates["faust"]) / statistics.median(rates["confluent"]), 4)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
