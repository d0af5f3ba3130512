"""Hostile load against a live ``driftline run`` worker: cardinality floods and every kind of bad input.

Phases, each on its own input topic so the worker's progress and the dead letters can be told
apart (``--distinct N`` distinct values per phase):

- ``unknown_models``: N events naming N models the configuration lacks (dead-lettered ``unknown_model``);
- ``versions``: N events of the configured model under N unlisted versions;
- ``categories``: N events with N distinct values in every categorical feature;
- ``event_ids``: N events with distinct ids (each remembered in Redis for the label join);
- ``label_sources``: N labels of those events from N distinct labelers;
- ``malformed``: ``--malformed M`` messages of each kind of bad input (malformed JSON, NaN literals,
  wrong types, tombstones, oversized, lone surrogates, integers beyond 64 bits, forged future
  timestamps, non-objects), inference and label topics alike, each kind with its expected reason.

While the phases run, a sampler records the worker's RSS, Redis ``used_memory``, and the
``/metrics`` endpoint (scrape time, size, series count). At the end the dead-letter topic is read
whole (read_committed) and counted per source topic and reason: every bad message must be
dead-lettered exactly once with its reason, and no good one. Prints one JSON object.

Run it against a private stack (it creates its own topics and key prefix)::

    DRIFTLINE_STACK_DIR=/tmp/h-stack DRIFTLINE_KAFKA_PORT=23092 DRIFTLINE_KAFKA_CONTROLLER_PORT=23093 \\
    DRIFTLINE_REDIS_PORT=23379 DRIFTLINE_PROMETHEUS_PORT=23090 scripts/stack start
    python loadtest/hostile.py --bootstrap 127.0.0.1:23092 --redis-url redis://127.0.0.1:23379/0 \\
        --distinct 1000000 --malformed 20000 --out reports/hostile.json
"""
from __future__ import annotations

import argparse
import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402
import redis  # noqa: E402
import yaml  # noqa: E402
from confluent_kafka import Consumer, Producer, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

from loadtest.drills import MODEL, drill_model_spec, make_drill  # noqa: E402

SIGNING_ENV = "DRIFTLINE_HOSTILE_SIGNING_KEY"
PARTITIONS = 2
MAX_MESSAGE_BYTES = 256 * 1024


# -- bad input: each kind, how to make it, and the reason it must be dead-lettered with -----------
def _doc(i: int, now: float) -> dict[str, Any]:
    return {"event_id": f"bad-{i}", "ts": now, "model": MODEL, "model_version": "v1",
            "features": {"brightness": 0.5, "logo": "none"}, "prediction": "safe"}


def _label(i: int, now: float) -> dict[str, Any]:
    return {"event_id": f"bad-{i}", "ts": now, "label": "safe", "source": "vendor-a"}


def _py(doc: dict) -> bytes:
    return json.dumps(doc).encode()


MALFORMED: dict[str, tuple[Callable[[int, float, bool], bytes | None], str]] = {
    # kind: (make(i, now, is_label) -> raw value, expected dead-letter reason)
    "malformed_json": (lambda i, now, lab: b'{"event_id": "bad-%d", "ts": ' % i, "malformed_json"),
    "not_utf8": (lambda i, now, lab: b'{"event_id": "\xff\xfe", "ts": NaN}', "malformed_json"),
    "nan_ts": (lambda i, now, lab: _py({**(_label if lab else _doc)(i, now), "ts": math.nan}), "bad_value:ts"),
    "wrong_type": (lambda i, now, lab: _py({**(_label if lab else _doc)(i, now), "ts": [now]}), "wrong_type:ts"),
    "tombstone": (lambda i, now, lab: None, "null_value"),
    "oversized": (lambda i, now, lab: b'{"pad": "' + b"x" * (MAX_MESSAGE_BYTES + 16) + b'"}', "oversized"),
    "lone_surrogate": (lambda i, now, lab: _py({**(_label if lab else _doc)(i, now), "event_id": f"bad-{i}\ud800",
                                                "pad": math.nan}), "invalid_unicode"),
    "big_int": (lambda i, now, lab: _py({**(_label if lab else _doc)(i, now), "event_id": 2**64 + i,
                                         "pad": math.nan}), "integer_out_of_range"),
    "future_ts": (lambda i, now, lab: _py({**(_label if lab else _doc)(i, now), "ts": now + 10 * 86400}),
                  "ts_in_future"),
    "not_an_object": (lambda i, now, lab: b"[1, 2, 3]", "not_an_object"),
}


# -- the good traffic ------------------------------------------------------------------------------
class Traffic:
    """Realistic content-filter events (drill population) stamped with hostile distinct values."""

    def __init__(self, seed: int = 5, pool: int = 4000) -> None:
        drill = make_drill("stationary", n_events=pool, seed=seed)
        self.pool = [orjson.loads(line) for line in drill.inference]
        self.categorical = [f["name"] for f in drill_model_spec()["features"] if f["type"] == "categorical"]

    def inference(self, i: int, now: float, **changes: Any) -> dict[str, Any]:
        doc = dict(self.pool[i % len(self.pool)])
        doc.update(ts=now, **changes)
        return doc


@dataclass
class Phase:
    """One phase: its topic, its messages and what the worker must do with them."""

    name: str
    topic: str
    count: int
    make: Callable[[int, float], tuple[bytes, bytes | None]]  # i, now -> key, value
    label_topic: bool = False
    expected_reason: str | None = None  # every message dead-lettered with this reason; None: none of them
    kinds: list[str] | None = None  # bad input: message i is of kind i % len(kinds), on partition i % len(kinds)
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def partitions(self) -> int:
        return len(self.kinds) if self.kinds else PARTITIONS

    def partition(self, i: int) -> int | None:
        return i % len(self.kinds) if self.kinds else None

    def expected(self) -> dict[str, dict[str, int]]:
        """Dead letters this phase must cause: per source partition ("*": any), reason -> count."""
        if self.kinds:
            return {str(k): {MALFORMED[kind][1]: len(range(k, self.count, len(self.kinds)))}
                    for k, kind in enumerate(self.kinds)}
        return {"*": {self.expected_reason: self.count}} if self.expected_reason and self.count else {"*": {}}


def plan(tag: str, distinct: int, malformed: int, traffic: Traffic, oversized: int = 0) -> list[Phase]:
    """The phases of a run (topic names carry ``tag``); ``oversized``: a last phase of that many
    oversized, highly compressible messages on an inference topic (none if 0)."""
    t = f"hostile-{tag}"
    cats = traffic.categorical

    def inf(**fixed: Any) -> Callable[[int, float], tuple[bytes, bytes | None]]:
        def make(i: int, now: float) -> tuple[bytes, bytes | None]:
            changes = {k: (v(i) if callable(v) else v) for k, v in fixed.items()}
            doc = traffic.inference(i, now, **changes)
            return doc["model"].encode(), orjson.dumps(doc)
        return make

    def categories(i: int, now: float) -> tuple[bytes, bytes | None]:
        doc = traffic.inference(i, now, event_id=f"c-{i}")
        doc["features"] = {**doc["features"], **{c: f"{c}-{i}" for c in cats}}
        return MODEL.encode(), orjson.dumps(doc)

    def label(i: int, now: float) -> tuple[bytes, bytes | None]:
        pred = traffic.pool[i % len(traffic.pool)]["prediction"]
        return b"l", orjson.dumps({"event_id": f"e-{i}", "ts": now, "label": pred, "source": f"src-{i}"})

    phases = [
        Phase("warmup", f"{t}-warmup", 3000, inf(event_id=lambda i: f"w-{i}")),
        Phase("unknown_models", f"{t}-unknown", distinct, inf(event_id=lambda i: f"u-{i}", model=lambda i: f"ghost-{i}"),
              expected_reason="unknown_model"),
        Phase("versions", f"{t}-versions", distinct, inf(event_id=lambda i: f"v-{i}", model_version=lambda i: f"hv-{i}")),
        Phase("categories", f"{t}-categories", distinct, categories),
        Phase("event_ids", f"{t}-eventids", distinct, inf(event_id=lambda i: f"e-{i}", model_version="v1",
                                                           deployment="stable")),
        Phase("label_sources", f"{t}-labels", distinct, label, label_topic=True),
    ]
    kinds = list(MALFORMED)
    for lab in (False, True):
        def bad(i: int, now: float, lab: bool = lab) -> tuple[bytes, bytes | None]:
            return b"bad", MALFORMED[kinds[i % len(kinds)]][0](i, now, lab)
        phases.append(Phase(f"malformed_{'labels' if lab else 'inference'}", f"{t}-bad-{'l' if lab else 'i'}",
                            malformed * len(kinds), bad, label_topic=lab, kinds=kinds))
    if oversized:
        flood = MALFORMED["oversized"][0]
        phases.append(Phase("oversized_flood", f"{t}-oversized", oversized,
                            lambda i, now: (b"big", flood(i, now, False)), expected_reason="oversized"))
    return phases


def memory_bound_mb(cfg: dict[str, Any]) -> float:
    """The worker's documented bound on message bytes it holds (README, Operating notes), in MiB:
    a micro-batch, the prefetch queue and one fetch in flight, from the worker's configuration."""
    from stream.config import parse_config

    k = parse_config(cfg).kafka
    return (k.batch_max_bytes + k.prefetch_max_bytes + k.fetch_max_bytes) / 2**20


def worker_config(bootstrap: str, redis_url: str, tag: str, phases: list[Phase], metrics_port: int,
                  pending_ttl: int, client_options: dict[str, Any] | None = None,
                  batch_size: int = 5000, kafka: dict[str, Any] | None = None) -> dict[str, Any]:
    t = f"hostile-{tag}"
    return {
        "kafka": {"bootstrap_servers": bootstrap, "group_id": t,
                  "inference_topics": [{"name": p.topic} for p in phases if not p.label_topic],
                  "label_topics": [{"name": p.topic} for p in phases if p.label_topic],
                  "control_topic": f"{t}-control", "dead_letter_topic": f"{t}-dead", "internal_topic": f"{t}-internal",
                  "internal_partitions": 4, "batch_size": batch_size, "batch_timeout_ms": 100,
                  "dead_letter_max_bytes": 1024, "client_options": dict(client_options or {}), **(kafka or {})},
        "redis": {"url": redis_url, "key_prefix": t, "pending_ttl_seconds": pending_ttl, "label_wait_seconds": 5},
        "signing": {"key_env": SIGNING_ENV},
        "metrics": {"host": "127.0.0.1", "port": metrics_port},
        "monitor": {"models": [drill_model_spec()]},
    }


# -- observation -----------------------------------------------------------------------------------
def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def scrape(url: str) -> dict[str, Any]:
    """One /metrics scrape: latency, size, series count, UTF-8 validity."""
    started = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            body = resp.read()
            status = resp.status
    except Exception as exc:  # noqa: BLE001 - a failed scrape is a result
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    try:
        text = body.decode("utf-8")
        utf8 = True
    except UnicodeDecodeError:
        text, utf8 = body.decode("utf-8", "replace"), False
    series = sum(1 for line in text.splitlines() if line and not line.startswith("#"))
    return {"ok": status == 200 and utf8, "ms": round((time.monotonic() - started) * 1000, 1), "bytes": len(body),
            "series": series}


class Sampler(threading.Thread):
    """Samples the worker's RSS, Redis memory and /metrics every ``interval`` seconds."""

    def __init__(self, pid: int, r: redis.Redis, metrics_url: str, interval: float) -> None:
        super().__init__(daemon=True)
        self.pid, self.r, self.url, self.interval = pid, r, metrics_url, interval
        self.samples: list[dict[str, Any]] = []
        self.phase = "start"
        self._halt = threading.Event()
        self.t0 = time.monotonic()

    def sample(self) -> dict[str, Any]:
        m = scrape(self.url)
        s = {"t": round(time.monotonic() - self.t0, 1), "phase": self.phase, "rss_mb": rss_mb(self.pid),
             "redis_used_mb": round(self.r.info("memory")["used_memory"] / 2**20, 1),
             "metrics_ok": m["ok"], "metrics_series": m.get("series"), "metrics_ms": m.get("ms"),
             "metrics_bytes": m.get("bytes")}
        self.samples.append(s)
        return s

    def run(self) -> None:
        while not self._halt.wait(self.interval):
            self.sample()

    def stop(self) -> None:
        self._halt.set()
        self.join(30)


# -- kafka helpers ---------------------------------------------------------------------------------
def create_topics(bootstrap: str, topics: dict[str, int]) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(t, num_partitions=n, replication_factor=1,
                                            config={"max.message.bytes": str(2 * MAX_MESSAGE_BYTES)})
                                   for t, n in topics.items()])
    for fut in futures.values():
        fut.result(timeout=60)


def produce(bootstrap: str, phase: Phase, compression: str = "lz4", start: int = 0, stop: int | None = None) -> float:
    """Produce a phase's messages ``start`` to ``stop`` (default: all) as fast as the broker takes
    them; returns seconds taken."""
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.size": 1_000_000,
                  "compression.type": compression, "message.max.bytes": 2 * MAX_MESSAGE_BYTES,
                  "queue.buffering.max.messages": 500_000, "enable.idempotence": True})
    started = time.monotonic()
    for i in range(start, phase.count if stop is None else stop):
        key, value = phase.make(i, time.time())
        part = phase.partition(i)
        while True:
            try:
                if part is None:
                    p.produce(phase.topic, value=value, key=key)
                else:
                    p.produce(phase.topic, value=value, key=key, partition=part)
                break
            except BufferError:
                p.poll(0.05)
        if i % 10_000 == 0:
            p.poll(0)
    remaining = p.flush(120)
    if remaining:
        raise RuntimeError(f"{remaining} messages of phase {phase.name} were not delivered")
    return time.monotonic() - started


def consumed(consumer: Consumer, topic: str, partitions: int) -> tuple[int, int]:
    """(committed, end) offsets summed over the topic's partitions, for the worker's group."""
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    committed = sum(max(tp.offset, 0) for tp in consumer.committed(tps, timeout=10))
    end = sum(consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in tps)
    return committed, end


def read_dead_letters(bootstrap: str, topic: str, expect: int, idle: float = 10.0,
                      timeout: float = 1800.0) -> tuple[dict[tuple[str, int], Counter], dict[str, int]]:
    """Per source (topic, partition): dead letters by reason; per source topic: how many source
    messages were dead-lettered more than once."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"hostile-reader-{uuid.uuid4().hex}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False, "isolation.level": "read_committed"})
    c.subscribe([topic])
    reasons: dict[tuple[str, int], Counter] = defaultdict(Counter)
    seen: dict[str, set[int]] = defaultdict(set)
    dups: Counter = Counter()
    n, last, deadline = 0, time.monotonic(), time.monotonic() + timeout
    while time.monotonic() < deadline and not (n >= expect and time.monotonic() - last > 2.0):
        msgs = c.consume(10_000, timeout=0.5)
        for m in msgs:
            if m.error():
                continue
            d = orjson.loads(m.value())
            src = d["topic"]
            reasons[(src, d["partition"])][d["reason"]] += 1
            coord = (d["partition"] << 48) | d["offset"]
            if coord in seen[src]:
                dups[src] += 1
            seen[src].add(coord)
            n += 1
            last = time.monotonic()
        if not msgs and time.monotonic() - last > idle and n >= expect:
            break
    c.close()
    return reasons, dict(dups)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the run ---------------------------------------------------------------------------------------
def run(bootstrap: str, redis_url: str, distinct: int, malformed: int, work: Path, metrics_port: int = 0,
        pending_ttl: int = 86_400, interval: float = 2.0, phase_timeout: float = 3600.0,
        tag: str | None = None, compression: str = "lz4",
        client_options: dict[str, Any] | None = None, batch_size: int = 5000,
        oversized: int = 0, kafka: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run every phase against a fresh worker and return the report (see the module doc).

    Topics, consumer group and Redis keys are named ``hostile-{tag}`` (a fresh tag by default).
    """
    tag = tag or uuid.uuid4().hex[:8]
    traffic = Traffic()
    phases = plan(tag, distinct, malformed, traffic, oversized)
    port = metrics_port or _free_port()
    cfg = worker_config(bootstrap, redis_url, tag, phases, port, pending_ttl, client_options, batch_size, kafka)
    work.mkdir(parents=True, exist_ok=True)
    cfg_path = work / f"hostile-{tag}.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    create_topics(bootstrap, {p.topic: p.partitions for p in phases})
    log_path = work / f"worker-{tag}.log"
    env = dict(os.environ, **{SIGNING_ENV: "hostile-load-signing-key-0123456789"})
    with open(log_path, "wb") as log:
        worker = subprocess.Popen([sys.executable, "-m", "stream.cli", "run", "--config", str(cfg_path),
                                   "--worker-id", "0"], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    r = redis.Redis.from_url(redis_url)
    base = f"http://127.0.0.1:{port}"
    group = Consumer({"bootstrap.servers": bootstrap, "group.id": cfg["kafka"]["group_id"]})
    sampler: Sampler | None = None
    report: dict[str, Any] = {"tag": tag, "distinct": distinct, "malformed_per_kind": malformed,
                              "producer_compression": compression,
                              "pending_ttl_seconds": pending_ttl, "worker_log": str(log_path), "phases": [],
                              "memory_bound_mb": round(memory_bound_mb(cfg), 1)}
    try:
        _wait(lambda: _ready(base), 180, "the worker to be ready", worker, log_path)
        sampler = Sampler(worker.pid, r, base + "/metrics", interval)
        start = sampler.sample()
        report["start"] = start
        sampler.start()
        for phase in phases:
            sampler.phase = phase.name
            before = sampler.sample()
            t0 = time.monotonic()
            marks: dict[str, Any] = {}
            phase.stats["produce_seconds"] = 0.0
            # two halves, each sampled once the worker has consumed it and its events went through
            # detection: both marks are taken at rest, so their difference is memory that stays
            # (growing with the distinct values), not the transient batches in flight (bounded by
            # kafka.batch_max_bytes)
            for mark, (lo, hi) in (("50%", (0, phase.count // 2)), ("100%", (phase.count // 2, phase.count))):
                base = consumed(group, phase.topic, phase.partitions)[1]
                phase.stats["produce_seconds"] += round(produce(bootstrap, phase, compression, lo, hi), 1)

                def progressed(target: int = base + hi - lo) -> bool:
                    done, end = consumed(group, phase.topic, phase.partitions)
                    return end >= target and done >= end

                _wait(progressed, phase_timeout, f"the worker to consume phase {phase.name} ({mark})", worker,
                      log_path, interval=0.5)
                _wait(lambda: _internal_drained(group, cfg["kafka"]["internal_topic"]), phase_timeout,
                      f"the worker to detect phase {phase.name} ({mark})", worker, log_path)
                marks[mark] = sampler.sample()
            after = marks["100%"]
            peak = max((x["rss_mb"] for x in sampler.samples if x["phase"] == phase.name and x["rss_mb"]),
                       default=None)
            phase.stats.update(
                name=phase.name, topic=phase.topic, messages=phase.count,
                consume_seconds=round(time.monotonic() - t0, 1),
                rss_mb={"before": before["rss_mb"], **{k: v["rss_mb"] for k, v in marks.items()}, "peak": peak},
                redis_used_mb={"before": before["redis_used_mb"], **{k: v["redis_used_mb"] for k, v in marks.items()}},
                metrics_series={"before": before["metrics_series"], "after": after["metrics_series"]})
            report["phases"].append(phase.stats)
        _wait(lambda: _internal_drained(group, cfg["kafka"]["internal_topic"]), phase_timeout,
              "the internal topic to drain", worker, log_path)
        report["end"] = sampler.sample()
    finally:
        if sampler is not None:
            try:
                sampler.stop()
            except Exception:  # noqa: BLE001 - the worker must be stopped whatever happened
                pass
        alive = worker.poll() is None
        report["worker_alive_at_end"] = alive
        if alive:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(60)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait(10)
        report["worker_exit_code"] = worker.returncode
        group.close()
    expected_dead = sum(n for p in phases for per in p.expected().values() for n in per.values())
    reasons, dups = read_dead_letters(bootstrap, cfg["kafka"]["dead_letter_topic"], expected_dead)
    report["dead_letters"] = {}
    for p in phases:
        got: dict[str, dict[str, int]] = {}
        for (topic, part), counts in reasons.items():
            if topic == p.topic:
                key = str(part) if p.kinds else "*"
                merged = Counter(got.get(key, {}))
                merged.update(counts)
                got[key] = dict(merged)
        expected = p.expected()
        report["dead_letters"][p.name] = {
            "expected": {(p.kinds[int(k)] if p.kinds else k): v for k, v in expected.items()},
            "got": {(p.kinds[int(k)] if p.kinds else k): v for k, v in got.items()},
            "duplicates": dups.get(p.topic, 0),
            "ok": all(got.get(k, {}) == v for k, v in expected.items()) and set(got) <= set(expected)
            and dups.get(p.topic, 0) == 0}
    report["samples"] = _thin(sampler.samples if sampler else [], 200)
    report["control_messages"] = _count_topic(bootstrap, cfg["kafka"]["control_topic"])
    report["redis_keys"] = _key_census(r, cfg["redis"]["key_prefix"])
    log_text = log_path.read_text(errors="replace")
    report["worker_log_tracebacks"] = log_text.count("Traceback")
    report["checks"] = checks(report, phases)
    r.close()
    return report


def checks(report: dict[str, Any], phases: list[Phase]) -> dict[str, bool]:
    """The pass/fail verdicts of a run."""
    dead = report["dead_letters"]
    samples = report["samples"]
    out = {
        "worker_survived": bool(report["worker_alive_at_end"]),
        "dead_lettered_exactly_once_with_reason": all(v["ok"] for v in dead.values()),
        "metrics_always_scrapeable": all(s["metrics_ok"] for s in samples) and bool(samples),
    }
    series = [s["metrics_series"] for s in samples if s["metrics_series"] is not None]
    # the series count is bounded by metrics.max_label_values per label, not by the distinct values sent
    out["metrics_series_bounded"] = bool(series) and max(series) <= 4000
    plateau = {}
    for p in report["phases"]:
        rss = p["rss_mb"]
        if p["messages"] >= 20_000 and "50%" in rss and rss["50%"] and rss["100%"]:
            plateau[p["name"]] = rss["100%"] - rss["50%"] <= max(25.0, 0.1 * rss["50%"])
    out["worker_rss_plateaus_within_phases"] = all(plateau.values()) if plateau else True
    report["rss_plateau_by_phase"] = plateau
    # bad input (oversized messages above all) may lift RSS by the documented bound on the message
    # bytes the worker holds, plus allocator slack, and no more
    growth = {p["name"]: round(p["rss_mb"]["peak"] - p["rss_mb"]["before"], 1) for p in report["phases"]
              if p["name"].startswith(("malformed", "oversized")) and p["rss_mb"].get("peak") and p["rss_mb"]["before"]}
    report["rss_growth_by_bad_phase"] = growth
    out["worker_rss_within_memory_bound"] = all(g <= report["memory_bound_mb"] + 64 for g in growth.values())
    return out


def _internal_drained(group: Consumer, topic: str) -> bool:
    tps = [TopicPartition(topic, p) for p in range(4)]
    committed = group.committed(tps, timeout=10)
    ends = [group.get_watermark_offsets(tp, timeout=10)[1] for tp in tps]
    return all(end == 0 or tp.offset >= end - 1 for tp, end in zip(committed, ends))


def _count_topic(bootstrap: str, topic: str) -> dict[str, int]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"hostile-count-{uuid.uuid4().hex}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False, "isolation.level": "read_committed"})
    c.subscribe([topic])
    kinds: Counter = Counter()
    last = time.monotonic()
    while time.monotonic() - last < 2.0:
        for m in c.consume(10_000, timeout=0.5):
            if m.error() is None:
                kinds[orjson.loads(m.value()).get("kind", "?")] += 1
                last = time.monotonic()
    c.close()
    return dict(kinds)


def _key_census(r: redis.Redis, prefix: str) -> dict[str, int]:
    """Keys under the run's prefix by kind (pending predictions, model state, offsets...), and
    ``@pending_events``: the event ids held in the pending-prediction buckets."""
    kinds: Counter = Counter()
    for key in r.scan_iter(match=f"{prefix}:*", count=10_000):
        rest = key.decode(errors="replace")[len(prefix) + 1:]
        kind = rest.split(":", 1)[0] if rest.startswith("@") else "model:" + rest.rsplit(":", 1)[-1]
        kinds[kind] += 1
        if kind == "@pending":
            kinds["@pending_events"] += r.hlen(key)
    return dict(kinds)


def _ready(base: str) -> bool:
    try:
        with urllib.request.urlopen(base + "/readyz", timeout=2) as resp:
            return resp.status == 200
    except Exception:  # noqa: BLE001 - not yet
        return False


def _wait(pred: Callable[[], bool], timeout: float, what: str, worker: subprocess.Popen, log_path: Path,
          interval: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        if worker.poll() is not None:
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-30:])
            raise RuntimeError(f"the worker exited ({worker.returncode}) while waiting for {what}:\n{tail}")
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def _thin(samples: list[dict], keep: int) -> list[dict]:
    if len(samples) <= keep:
        return samples
    step = len(samples) / keep
    return [samples[int(i * step)] for i in range(keep)] + [samples[-1]]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bootstrap", required=True, help="a private stack's broker (loopback)")
    p.add_argument("--redis-url", required=True)
    p.add_argument("--distinct", type=int, default=1_000_000, help="distinct values per cardinality phase")
    p.add_argument("--malformed", type=int, default=20_000, help="messages per kind of bad input and topic kind")
    p.add_argument("--metrics-port", type=int, default=0, help="the worker's /metrics port (default: a free one)")
    p.add_argument("--pending-ttl", type=int, default=86_400, help="redis.pending_ttl_seconds of the worker")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between samples")
    p.add_argument("--compression", default="lz4", choices=["none", "gzip", "snappy", "lz4", "zstd"],
                   help="the producers' compression (bad input compresses well: it inflates in the worker)")
    p.add_argument("--batch-size", type=int, default=5000, help="kafka.batch_size of the worker")
    p.add_argument("--kafka", action="append", default=[], metavar="KEY=VALUE",
                   help="a kafka.KEY setting of the worker (integers as such), e.g. fetch_max_bytes=262144")
    p.add_argument("--oversized", type=int, default=0,
                   help="a last phase of this many oversized, highly compressible messages (0: none)")
    p.add_argument("--client-option", action="append", default=[], metavar="KEY=VALUE",
                   help="a kafka.client_options entry of the worker (integers as such)")
    p.add_argument("--work", default="reports/hostile", help="where the worker's config and log go")
    p.add_argument("--out", default=None, help="also write the JSON report here")
    args = p.parse_args(argv)
    host = args.bootstrap.rsplit(":", 1)[0].strip("[]")
    if host not in ("127.0.0.1", "localhost", "::1"):
        p.error("hostile load only goes to a loopback broker")
    report = run(args.bootstrap, args.redis_url, args.distinct, args.malformed, Path(args.work), args.metrics_port,
                 args.pending_ttl, args.interval, compression=args.compression,
                 client_options={k: int(v) if v.isdigit() else v
                                 for k, v in (o.split("=", 1) for o in args.client_option)},
                 batch_size=args.batch_size, oversized=args.oversized,
                 kafka={k: int(v) if v.isdigit() else v for k, v in (o.split("=", 1) for o in args.kafka)})
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return 0 if all(report["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
