"""End-to-end benchmarks of the worker through Kafka and Redis, each against a same-run baseline.

Needs the local stack (`scripts/stack start`). Prints one JSON object per run. ``--mode``:

- ``throughput`` (default): ``baseline_events_per_s`` is a bare consumer loop over the same topic
  (consume, orjson decode, commit per batch), the ceiling for any Python consumer;
  ``worker_events_per_s`` the driftline worker (20-feature model, every signal, a share of the
  events labelled when ``--label-fraction`` > 0) from first consume to the last record's state
  committed, with the ratio; ``alert_latency_s`` the wall time from producing a poisoned burst to
  its alert on the control topic (read_committed). ``--runtime`` picks ``confluent`` (the default
  runtime), ``faust`` or ``both`` (then ``runtimes`` and ``faust_to_confluent_ratio``).
- ``scaling``: one worker, then two workers of one group, over the same events of four models
  (one per internal partition); ``scaling_ratio`` = two workers' rate / one worker's. Events are
  produced once every worker holds partitions (the group formed), so the ratio compares processing,
  and spread over the input topic's partitions (keyed per event), so both workers read raw input.
- ``models``: the same events (10 features) for one model, then spread over ``--models`` models;
  ``models_ratio`` = many / one. Produced as in ``scaling``, over the input partitions.
  Both modes also report the workers' CPU time per event (all worker processes, from producing
  the events to their last record processed) and ``cpu_ratio`` = baseline's / the other's: on a
  shared machine the rates move with other processes' load, the CPU per event much less.
- ``sustained``: a fixed input rate (``--rate``) for ``--duration`` seconds; probe models receive
  1,000 reference events at the start and a shifted burst of 300 at intervals: produce-to-alert latency p50/p99 over the probes, consumer lag
  (raw inference, summed over partitions) sampled every second, and the achieved input rate
  against the target (the baseline). ``--spread-models N`` spreads the steady traffic round robin
  over N models besides the main one (a platform's log). ``worker_cpu_percent`` is the worker
  process's CPU time over the run (100: one core), what the steady rate costs.
- ``rss``: one worker over ``--rss-events`` (e.g. ``1000000,10000000``): its resident set size at
  each mark (median of the readings, taken ten times a second, over the last tenth of events before
  it); ``rss_growth`` = last / first (the first mark is the baseline).

``--integer-features K`` and ``--categorical-features K`` turn the last features of every model
into categorical ones (strings from eight categories) and the K before them into integer-valued
numeric ones (the rest stay floats), as a platform's models mix them; every mode but
``sustained`` takes them. A shift moves all three kinds.

Every mode repeats ``--repeats`` times (fresh topics each time) and reports medians.
``--snapshot-interval``, ``--prefetch-max-bytes``, ``--batch-size``, ``--batch-timeout-ms``,
``--detect-hold-ms``, ``--detect-hold-caught-up-ms`` and ``--malloc-arenas`` set the workers'
``redis.snapshot_interval_seconds``, ``kafka.prefetch_max_bytes`` (the Kafka client's queue of
messages fetched ahead, which a worker's RSS includes), ``kafka.batch_size``,
``kafka.batch_timeout_ms``, ``kafka.detect_hold_ms``, ``kafka.detect_hold_caught_up_ms`` and
``process.malloc_arenas``; without them the workers run at the configuration's defaults.
``--scrape-seconds`` (default 5, the shipped Prometheus configuration's interval; 0: none) scrapes
every worker's /metrics that often, as a deployment's Prometheus would: a scrape has the worker
export its detector statistics.

    python loadtest/bench_pipeline.py --events 100000 --repeats 3 --label-fraction 0.2
    python loadtest/bench_pipeline.py --events 50000 --repeats 3 --runtime both
    python loadtest/bench_pipeline.py --mode scaling --events 200000 --repeats 3
    python loadtest/bench_pipeline.py --mode models --events 200000 --models 200 --repeats 3
    python loadtest/bench_pipeline.py --mode sustained --rate 20000 --duration 300 --repeats 1
    python loadtest/bench_pipeline.py --mode rss --rss-events 1000000,10000000 --repeats 1
    python loadtest/bench_pipeline.py --events 60000 --label-fraction 0.2 --integer-features 3 --categorical-features 4
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
import zlib
from collections.abc import Callable, Iterable
from itertools import repeat
from pathlib import Path

import numpy as np
import orjson
import redis
import yaml
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

N_FEATURES = 20
MODEL = "bench-model"
PARTITIONS = 4  # raw and internal topics
RUNTIME_COMMANDS = {"confluent": "run", "faust": "faust-worker"}  # runtime -> driftline subcommand


#: How many of a model's features carry integers and strings; set by ``main``
MIX = {"integer": 0, "categorical": 0}
CATEGORIES = [f"k{j}" for j in range(8)]


# -- traffic ---------------------------------------------------------------------------------
def _kinds(features: int) -> list[str]:
    """Per feature: ``float``, ``integer`` or ``categorical`` (the categorical ones last)."""
    c = min(MIX["categorical"], features)
    i = min(MIX["integer"], features - c)
    return ["float"] * (features - c - i) + ["integer"] * i + ["categorical"] * c


def _typed(row: list[float], kinds: list[str]) -> list[object]:
    """One event's values as its features' kinds carry them (a shift moves every kind)."""
    return [v if k == "float" else round(v * 100) if k == "integer" else CATEGORIES[min(7, int(abs(v) * 2))]
            for v, k in zip(row, kinds)]


def _events(n: int, seed: int, t0: float, shift_from: int | None = None, models: list[str] | None = None,
            features: int = N_FEATURES, prefix: str = "") -> list[bytes]:
    """``n`` inference events, round robin over ``models``; shifted by +3 sd from ``shift_from``."""
    models = models or [MODEL]
    rng = np.random.default_rng(seed)
    values = rng.normal(0.0, 1.0, size=(n, features))
    if shift_from is not None:
        values[shift_from:, :] += 3.0
    preds = rng.choice(["safe", "nsfw", "violence"], size=n, p=[0.97, 0.01, 0.02])
    conf = 0.6 + 0.39 * rng.random(n)
    names = [f"f{j}" for j in range(features)]
    out = []
    rows = values.tolist()
    kinds = _kinds(features)
    if kinds.count("float") < features:
        rows = [_typed(row, kinds) for row in rows]
    for i in range(n):
        out.append(orjson.dumps({
            "event_id": f"{prefix}b{seed}-{i}", "ts": t0 + i * 0.001, "model": models[i % len(models)],
            "model_version": "v1", "deployment": "stable", "features": dict(zip(names, rows[i])),
            "prediction": str(preds[i]), "confidence": float(conf[i]),
        }))
    return out


def _labels(n: int, fraction: float, seed: int, t0: float, prefix: str = "") -> list[bytes]:
    """Labels for every ``1/fraction``-th event of :func:`_events` (mostly agreeing with the prediction)."""
    if fraction <= 0:
        return []
    step = max(1, round(1 / fraction))
    rng = np.random.default_rng(seed + 7)
    return [orjson.dumps({"event_id": f"{prefix}b{seed}-{i}", "ts": t0 + i * 0.001 + 1.0,
                          "label": str(rng.choice(["safe", "nsfw", "violence"], p=[0.97, 0.01, 0.02])),
                          "source": "bench"}) for i in range(0, n, step)]


def _model_doc(name: str, features: int = N_FEATURES, reference_size: int = 2000) -> dict:
    return {"name": name, "classes": ["safe", "nsfw", "violence"], "versions": ["v1"], "stable_version": "v1",
            "features": [{"name": f"f{j}", "type": "categorical" if kind == "categorical" else "numeric"}
                         for j, kind in enumerate(_kinds(features))],
            "reference_size": reference_size}


#: Worker settings given on the command line: option -> (config section, key); set by ``main``
SETTING_OPTIONS = {"snapshot_interval": ("redis", "snapshot_interval_seconds", float),
                   "prefetch_max_bytes": ("kafka", "prefetch_max_bytes", int),
                   "batch_size": ("kafka", "batch_size", int),
                   "batch_timeout_ms": ("kafka", "batch_timeout_ms", int),
                   "detect_hold_ms": ("kafka", "detect_hold_ms", int),
                   "detect_hold_caught_up_ms": ("kafka", "detect_hold_caught_up_ms", int),
                   "malloc_arenas": ("process", "malloc_arenas", int)}
SETTINGS: dict[str, dict[str, float | int]] = {"kafka": {}, "redis": {}, "process": {}}
SCRAPE = {"seconds": 5.0}  # every worker's /metrics is scraped this often (0: never); set by ``main``


def _config(bootstrap: str, redis_url: str, tag: str, topic: str, models: list[dict] | None = None) -> dict:
    return {
        "kafka": {"bootstrap_servers": bootstrap, "group_id": f"bench-{tag}",
                  "inference_topics": [{"name": topic}], "label_topics": [{"name": f"{topic}-labels"}],
                  "control_topic": f"{topic}-control", "dead_letter_topic": f"{topic}-dead",
                  "internal_topic": f"{topic}-internal", "internal_partitions": PARTITIONS,
                  **SETTINGS["kafka"]},
        "redis": {"url": redis_url, "key_prefix": f"bench-{tag}", "pending_ttl_seconds": 600, **SETTINGS["redis"]},
        "signing": {"key_env": "DRIFTLINE_BENCH_SIGNING_KEY"},
        "metrics": {"host": "127.0.0.1", "port": 0},
        "process": dict(SETTINGS["process"]),
        "monitor": {"models": models or [_model_doc(MODEL)]},
    }


def _producer(bootstrap: str) -> Producer:
    return Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.num.messages": 10000,
                     "queue.buffering.max.messages": 1_000_000, "compression.type": "lz4"})


def _send(p: Producer, topic: str, values: Iterable[bytes], key: bytes | None = None,
          keys: Iterable[bytes] | None = None) -> None:
    """Produce ``values`` under ``key``, or each under its own of ``keys``."""
    for v, k in zip(values, repeat(key) if keys is None else keys):
        while True:
            try:
                p.produce(topic, value=v, key=k)
                break
            except BufferError:
                p.poll(0.05)
    p.poll(0)


def _produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    p = _producer(bootstrap)
    _send(p, topic, values, MODEL.encode())
    p.flush(120)


def _produce_spread(bootstrap: str, topic: str, values: list[bytes]) -> None:
    """Each value keyed by its index, so the key hash spreads them evenly over the topic's partitions
    (a platform's log, keyed by request): a consumer group can share the raw input only then."""
    p = _producer(bootstrap)
    _send(p, topic, values, keys=(b"%d" % i for i in range(len(values))))
    p.flush(120)


def _create(bootstrap: str, topics: list[str], partitions: int = PARTITIONS) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.create_topics([NewTopic(t, num_partitions=partitions, replication_factor=1) for t in topics]).values():
        f.result(timeout=30)


def _drop(bootstrap: str, topics: list[str]) -> None:
    """Delete a run's topics: a run of ten million events leaves gigabytes on the broker's disk."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.delete_topics(topics, operation_timeout=30).values():
        try:
            f.result(timeout=60)
        except KafkaException:
            pass  # never created (the worker had not started) or already gone


def _committed_map(bootstrap: str, group: str, topic: str, partitions: int = PARTITIONS) -> dict[int, int]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        return {tp.partition: max(tp.offset, 0)
                for tp in c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)}
    finally:
        c.close()


def _committed(bootstrap: str, group: str, topic: str) -> int:
    return sum(_committed_map(bootstrap, group, topic).values())


def _high_watermarks(bootstrap: str, topic: str, partitions: int = PARTITIONS) -> dict[int, int]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"wm-{uuid.uuid4().hex}"})
    try:
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(partitions)}
    finally:
        c.close()


def _cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


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


# -- worker processes ------------------------------------------------------------------------
def _free_port() -> int:
    """A loopback port free at the time of asking (for a worker's /metrics)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _scrape_every(urls: list[str], seconds: float, stop: threading.Event) -> None:
    """GET every URL each ``seconds`` until ``stop``, as Prometheus scrapes (a worker still starting fails quietly)."""
    while not stop.wait(seconds):
        for url in urls:
            try:
                with urllib.request.urlopen(url, timeout=10) as resp:
                    resp.read()
            except OSError:
                pass


class Workers:
    """Worker processes of one group on fresh topics (context manager; terminated on exit)."""

    def __init__(self, bootstrap: str, redis_url: str, models: list[dict] | None = None, count: int = 1,
                 runtime: str = "confluent") -> None:
        self.bootstrap, self.redis_url, self.tag = bootstrap, redis_url, uuid.uuid4().hex[:8]
        self.topic = f"bench-{self.tag}"
        self.group = f"bench-{self.tag}"
        self.internal = f"{self.topic}-internal"
        self.config = _config(bootstrap, redis_url, self.tag, self.topic, models)
        self.count, self.runtime = count, runtime
        self.procs: list[subprocess.Popen] = []
        _create(bootstrap, [self.topic, f"{self.topic}-labels"])

    def __enter__(self) -> "Workers":
        self._tmp = tempfile.TemporaryDirectory()
        env = dict(os.environ, DRIFTLINE_BENCH_SIGNING_KEY="bench-key-0123456789abcdef")
        ports = []
        for i in range(self.count):
            ports.append(_free_port())
            cfg = Path(self._tmp.name) / f"bench{i}.yaml"
            cfg.write_text(yaml.safe_dump({**self.config, "metrics": {**self.config["metrics"], "port": ports[-1]}}))
            log = open(Path(self._tmp.name) / f"worker{i}.log", "wb")
            self.procs.append(subprocess.Popen(
                [sys.executable, "-m", "stream.cli", RUNTIME_COMMANDS[self.runtime], "--config", str(cfg),
                 "--worker-id", str(i)], stdout=log, stderr=subprocess.STDOUT, env=env))
        self._stop_scraping = threading.Event()
        self._scraper = None
        if SCRAPE["seconds"] > 0:
            urls = [f"http://127.0.0.1:{port}/metrics" for port in ports]
            self._scraper = threading.Thread(target=_scrape_every, args=(urls, SCRAPE["seconds"], self._stop_scraping),
                                             daemon=True)
            self._scraper.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop_scraping.set()
        if self._scraper is not None:
            self._scraper.join(15)
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
        self._tmp.cleanup()
        _drop(self.bootstrap, [self.topic] + [f"{self.topic}-{s}" for s in ("labels", "internal", "control", "dead")])
        r = redis.Redis.from_url(self.redis_url)
        keys = list(r.scan_iter(f"bench-{self.tag}:*", count=1000))
        for i in range(0, len(keys), 1000):
            r.delete(*keys[i:i + 1000])

    def wait_stable(self, timeout: float = 120.0) -> None:
        """Block until every worker is a member of the group with partitions assigned: a run then
        measures processing, not the group forming (joins and the rebalances they cause)."""
        from confluent_kafka import ConsumerGroupState
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                desc = admin.describe_consumer_groups([self.group])[self.group].result(10)
            except Exception:  # noqa: BLE001 - the group may not exist yet
                desc = None
            if (desc is not None and desc.state == ConsumerGroupState.STABLE and len(desc.members) == self.count
                    and all(m.assignment and m.assignment.topic_partitions for m in desc.members)):
                return
            time.sleep(0.2)
        raise RuntimeError(f"the group of {self.count} workers did not become stable in {timeout:.0f}s")

    def check_alive(self) -> None:
        for i, p in enumerate(self.procs):
            if p.poll() is not None:
                text = (Path(self._tmp.name) / f"worker{i}.log").read_text(errors="replace")
                raise RuntimeError(f"worker {i} exited: {text[-12000:]}")

    def watch_start(self) -> Callable[[], float | None]:
        """Start watching for the first committed batch in the background (call before producing:
        the workers may commit while the events are still being sent); returns a function giving
        the time it was seen (``perf_counter``, 50 ms before the poll that saw it), or None."""
        seen: list[float] = []
        stop = threading.Event()

        def poll() -> None:
            while not stop.is_set():
                t = time.perf_counter()
                if _committed(self.bootstrap, self.group, self.topic) > 0:
                    seen.append(t - 0.05)
                    return
                stop.wait(0.05)

        thread = threading.Thread(target=poll, daemon=True)
        thread.start()

        def started() -> float | None:
            stop.set()
            thread.join(30)
            return seen[0] if seen else None
        return started

    def wait_done(self, n: int, n_labels: int = 0, on_progress: Callable[[int], None] | None = None,
                  timeout: float = 3600, started: Callable[[], float | None] | None = None) -> float:
        """Block until ``n`` raw events and ``n_labels`` labels are routed and every internal record is
        processed; return the wall time since the first committed batch (started 50 ms before).

        The first committed batch is the one ``started`` (from :meth:`watch_start`) saw, else the
        first one this call sees: only right when the events were all produced before the workers
        started (their first batch commits after this call begins)."""
        first = started() if started is not None else None
        started_at = first
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            raw = _committed(self.bootstrap, self.group, self.topic)
            if started_at is None and raw > 0:
                started_at = time.perf_counter() - 0.05
            if on_progress is not None:
                on_progress(raw)
            if raw >= n and (n_labels == 0 or _committed(self.bootstrap, self.group, f"{self.topic}-labels") >= n_labels):
                high = _high_watermarks(self.bootstrap, self.internal)
                done = _committed_map(self.bootstrap, self.group, self.internal)
                # each committed transaction leaves one marker after its records
                if all(done.get(p, 0) >= h - 1 for p, h in high.items() if h > 0):
                    assert started_at is not None
                    return time.perf_counter() - started_at
            self.check_alive()
            time.sleep(0.05)
        raise RuntimeError("timed out")


def worker_run(bootstrap: str, redis_url: str, n: int, seed: int, runtime: str = "confluent",
               label_fraction: float = 0.0) -> tuple[float, float | None]:
    """Events/s of one worker over ``n`` pre-produced events (and labels), then the produce-to-alert latency.

    Everything is produced before the worker starts: the run times the worker from its first
    committed batch, not the benchmark's producer (which would share the cores with it).
    """
    workers = Workers(bootstrap, redis_url, runtime=runtime)
    labels = _labels(n, label_fraction, seed, 1_750_000_000.0)
    try:
        _produce(bootstrap, workers.topic, _events(n, seed, 1_750_000_000.0))
        if labels:
            _produce(bootstrap, f"{workers.topic}-labels", labels)
    except BaseException:
        _drop(bootstrap, [workers.topic, f"{workers.topic}-labels"])
        raise
    with workers as w:
        elapsed = w.wait_done(n, len(labels))
        rate = n / elapsed
        latency = _alert_latency(bootstrap, w.topic, seed)
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


def _model_on(partition: int, stem: str) -> str:
    """A model name that the internal topic's partitioner puts on ``partition``."""
    i = 0
    while zlib.crc32(f"{stem}-{i}".encode()) % PARTITIONS != partition:
        i += 1
    return f"{stem}-{i}"


def _rate_of(bootstrap: str, redis_url: str, events: list[bytes], models: list[dict], workers: int
             ) -> tuple[float, float]:
    """Events per second through ``workers`` workers, and their CPU time per event in microseconds
    (every worker process, from just before the events are produced until they are all processed)."""
    with Workers(bootstrap, redis_url, models=models, count=workers) as w:
        w.wait_stable()  # every worker holds partitions before the events arrive (no rebalance in the run)
        cpu = sum(_cpu_seconds(p.pid) for p in w.procs)
        started = w.watch_start()
        _produce_spread(bootstrap, w.topic, events)
        rate = len(events) / w.wait_done(len(events), started=started)
        cpu = sum(_cpu_seconds(p.pid) for p in w.procs) - cpu
        return rate, cpu / len(events) * 1e6


# -- modes -----------------------------------------------------------------------------------
def mode_throughput(args: argparse.Namespace) -> dict:
    runtimes = ["confluent", "faust"] if args.runtime == "both" else [args.runtime]
    base_rates: list[float] = []
    rates: dict[str, list[float]] = {r: [] for r in runtimes}
    latencies: dict[str, list[float]] = {r: [] for r in runtimes}
    for r in range(args.repeats):
        topic = f"bench-base-{uuid.uuid4().hex[:8]}"
        _create(args.bootstrap, [topic])
        _produce(args.bootstrap, topic, _events(args.events, r, 1_750_000_000.0))
        base_rates.append(baseline(args.bootstrap, topic, args.events))
        _drop(args.bootstrap, [topic])
        for runtime in runtimes:
            rate, latency = worker_run(args.bootstrap, args.redis, args.events, r, runtime, args.label_fraction)
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
    result = {"benchmark": "pipeline", "mode": "throughput", "events": args.events, "repeats": args.repeats,
              "features": N_FEATURES, "label_fraction": args.label_fraction,
              "baseline_events_per_s": round(base), "baseline_events_per_s_all": [round(x) for x in base_rates]}
    if len(runtimes) == 1:
        result.update(per_runtime[runtimes[0]], runtime=runtimes[0])
    else:
        result["runtimes"] = per_runtime
        result["faust_to_confluent_ratio"] = round(
            statistics.median(rates["faust"]) / statistics.median(rates["confluent"]), 4)
    return result


def mode_scaling(args: argparse.Namespace) -> dict:
    names = [_model_on(p, "scale") for p in range(PARTITIONS)]
    models = [_model_doc(m) for m in names]
    one, two, cpu1, cpu2 = [], [], [], []
    for r in range(args.repeats):
        events = _events(args.events, r, 1_750_000_000.0, models=names)
        for rates, cpus, count in ((one, cpu1, 1), (two, cpu2, 2)):
            rate, cpu = _rate_of(args.bootstrap, args.redis, events, models, count)
            rates.append(rate)
            cpus.append(cpu)
    m1, m2 = statistics.median(one), statistics.median(two)
    return {"benchmark": "pipeline", "mode": "scaling", "events": args.events, "repeats": args.repeats,
            "models": names, "baseline": "one worker", "one_worker_events_per_s": round(m1),
            "two_workers_events_per_s": round(m2), "scaling_ratio": round(m2 / m1, 4),
            "one_worker_all": [round(x) for x in one], "two_workers_all": [round(x) for x in two],
            **_cpu_figures(("one_worker", cpu1), ("two_workers", cpu2))}


def _cpu_figures(base: tuple[str, list[float]], other: tuple[str, list[float]]) -> dict:
    """Median worker CPU per event of two setups and their ratio (base / other: 1 means the other
    setup costs no more CPU per event; unlike the rates, hardly moved by other processes' load)."""
    (bn, b), (on, o) = base, other
    return {f"{bn}_cpu_us_per_event": round(statistics.median(b), 2),
            f"{on}_cpu_us_per_event": round(statistics.median(o), 2),
            "cpu_ratio": round(statistics.median(b) / statistics.median(o), 4),
            f"{bn}_cpu_all": [round(x, 2) for x in b], f"{on}_cpu_all": [round(x, 2) for x in o]}


def mode_models(args: argparse.Namespace) -> dict:
    many = [f"m{i:03d}" for i in range(args.models)]
    one_rates, many_rates, one_cpu, many_cpu = [], [], [], []
    for r in range(args.repeats):
        for rates, cpus, names in ((one_rates, one_cpu, None), (many_rates, many_cpu, many)):
            events = _events(args.events, r, 1_750_000_000.0, features=10, models=names)
            rate, cpu = _rate_of(args.bootstrap, args.redis, events,
                                 [_model_doc(m, 10, 100) for m in names or [MODEL]], 1)
            rates.append(rate)
            cpus.append(cpu)
    m1, mn = statistics.median(one_rates), statistics.median(many_rates)
    return {"benchmark": "pipeline", "mode": "models", "events": args.events, "repeats": args.repeats,
            "features": 10, "baseline": "one model, same events", "one_model_events_per_s": round(m1),
            "many_models": args.models, "many_models_events_per_s": round(mn), "models_ratio": round(mn / m1, 4),
            "one_model_all": [round(x) for x in one_rates], "many_models_all": [round(x) for x in many_rates],
            **_cpu_figures(("one_model", one_cpu), ("many_models", many_cpu))}


def mode_sustained(args: argparse.Namespace) -> dict:
    probes = [f"probe-{i}" for i in range(args.probes)]
    steady = [MODEL] + [f"steady-{i}" for i in range(args.spread_models)]
    models = ([_model_doc(MODEL)] + [_model_doc(m, reference_size=100) for m in steady[1:]]
              + [_model_doc(p, reference_size=100) for p in probes])
    runs = []
    for r in range(args.repeats):
        with Workers(args.bootstrap, args.redis, models=models) as w:
            runs.append(_sustain(args, w, probes, r, steady))
    lat = [x for run in runs for x in run["latencies"]]
    return {"benchmark": "pipeline", "mode": "sustained", "target_events_per_s": args.rate,
            "duration_s": args.duration, "repeats": args.repeats, "probes": len(probes),
            "steady_models": len(steady), "baseline": "target input rate",
            "achieved_input_events_per_s": round(statistics.median(run["input_rate"] for run in runs)),
            "worker_cpu_percent": round(statistics.median(run["worker_cpu_percent"] for run in runs), 1),
            "worker_cpu_percent_all": [round(run["worker_cpu_percent"], 1) for run in runs],
            "alert_latency_p50_s": round(float(np.percentile(lat, 50)), 3) if lat else None,
            "alert_latency_p99_s": round(float(np.percentile(lat, 99)), 3) if lat else None,
            "alerts_missing": sum(run["missing"] for run in runs),
            "lag_max": max(run["lag_max"] for run in runs),
            "lag_last_third_mean": round(statistics.median(run["lag_last_third_mean"] for run in runs)),
            "lag_middle_third_mean": round(statistics.median(run["lag_middle_third_mean"] for run in runs)),
            "lag_series": runs[0]["lag_series"]}


def _sustain(args: argparse.Namespace, w: Workers, probes: list[str], seed: int, steady: list[str]) -> dict:
    """Produce at the target rate (round robin over ``steady``); probes get a reference at the start
    and a shifted burst later."""
    alerts: dict[str, float] = {}
    stop = threading.Event()

    def read_alerts() -> None:
        c = Consumer({"bootstrap.servers": args.bootstrap, "group.id": f"lat-{uuid.uuid4().hex}",
                      "auto.offset.reset": "earliest", "isolation.level": "read_committed"})
        c.subscribe([f"{w.topic}-control"])
        while not stop.is_set():
            for m in c.consume(100, 0.2):
                if m.error() is None:
                    doc = orjson.loads(m.value())
                    if doc.get("kind") == "alert" and doc.get("model") not in alerts:
                        alerts[doc.get("model")] = time.perf_counter()
        c.close()

    reader = threading.Thread(target=read_alerts, daemon=True)
    reader.start()
    p = _producer(args.bootstrap)
    rng = np.random.default_rng(seed)
    names = [f"f{j}" for j in range(N_FEATURES)]
    burst_at = {pr: 10.0 + (i + 0.5) * (args.duration - 15.0) / len(probes) for i, pr in enumerate(probes)}
    sent_at: dict[str, float] = {}
    lag_series: list[tuple[float, int]] = []
    hw = Consumer({"bootstrap.servers": args.bootstrap, "group.id": f"wm-{uuid.uuid4().hex}"})
    tick, produced, i = 0.01, 0, 0
    start = time.perf_counter()
    cpu_start = _cpu_seconds(w.procs[0].pid)
    next_lag = 1.0
    while (now := time.perf_counter() - start) < args.duration:
        due = int(now * args.rate) - produced
        if due > 0:
            vals = rng.normal(0.0, 1.0, size=(due, N_FEATURES)).tolist()
            ts = time.time()
            _send(p, w.topic, (orjson.dumps({
                "event_id": f"s{seed}-{i + k}", "ts": ts, "model": steady[(i + k) % len(steady)], "model_version": "v1",
                "features": dict(zip(names, vals[k])), "prediction": "safe", "confidence": 0.9})
                for k in range(due)))
            produced += due
            i += due
        if now < 5.0 and not sent_at.get("@warm"):
            for pr in probes:
                _send(p, w.topic, _events(1000, seed + 1, time.time() - 2.0, models=[pr], prefix=pr))
            sent_at["@warm"] = now
        for pr, at in burst_at.items():
            if pr not in sent_at and now >= at:
                burst = _events(300, seed + 2, time.time(), shift_from=0, models=[pr], prefix=f"x{pr}")
                p.flush(5)
                sent_at[pr] = time.perf_counter()
                _send(p, w.topic, burst)
                p.flush(5)
        if now >= next_lag:
            next_lag += 1.0
            high = sum(hw.get_watermark_offsets(TopicPartition(w.topic, q), timeout=5)[1] for q in range(PARTITIONS))
            lag_series.append((round(now, 1), max(0, high - _committed(args.bootstrap, w.group, w.topic))))
            w.check_alive()
        time.sleep(tick)
    p.flush(60)
    elapsed = time.perf_counter() - start
    cpu_percent = 100.0 * (_cpu_seconds(w.procs[0].pid) - cpu_start) / elapsed
    deadline = time.perf_counter() + 30
    while time.perf_counter() < deadline and any(pr not in alerts for pr in probes if pr in sent_at):
        time.sleep(0.2)
    stop.set()
    reader.join(5)
    hw.close()
    lats = [alerts[pr] - sent_at[pr] for pr in probes if pr in sent_at and pr in alerts]
    lags = [x for _, x in lag_series]
    third = max(1, len(lags) // 3)
    return {"latencies": lats, "missing": sum(1 for pr in probes if pr in sent_at and pr not in alerts),
            "input_rate": produced / elapsed, "worker_cpu_percent": cpu_percent, "lag_max": max(lags, default=0),
            "lag_middle_third_mean": statistics.mean(lags[third:2 * third]) if lags[third:2 * third] else 0,
            "lag_last_third_mean": statistics.mean(lags[-third:]) if lags else 0,
            "lag_series": lag_series[::5]}


def mode_rss(args: argparse.Namespace) -> dict:
    marks = sorted(int(x) for x in args.rss_events.split(","))
    pool = _events(100_000, 0, 1_750_000_000.0)
    results = []
    for r in range(args.repeats):
        with Workers(args.bootstrap, args.redis) as w:
            samples: list[tuple[int, int]] = []  # (raw events committed, RSS kB), about ten times a second
            last = [0.0]

            def produce() -> None:
                p = _producer(args.bootstrap)
                for k in range(0, marks[-1], len(pool)):
                    _send(p, w.topic, pool[:min(len(pool), marks[-1] - k)], MODEL.encode())
                p.flush(300)

            started = w.watch_start()
            t = threading.Thread(target=produce, daemon=True)
            t.start()

            def progress(raw: int) -> None:
                if time.monotonic() - last[0] >= 0.1:
                    last[0] = time.monotonic()
                    samples.append((raw, _rss_kb(w.procs[0].pid)))

            elapsed = w.wait_done(marks[-1], on_progress=progress, started=started)
            t.join()
            # the RSS around a mark: median of the samples over the last tenth of events before it
            # (one reading moves with the consumer's prefetch queue and the batch in flight)
            near = {m: [kb for raw, kb in samples if 0.9 * m <= raw <= m] for m in marks}
            readings = {m: round(statistics.median(near[m] or [kb for raw, kb in samples if raw <= m][-1:]))
                        for m in marks}
            results.append({"rss_kb": readings, "rss_samples": {m: len(near[m]) for m in marks},
                            "rss_kb_max": max(kb for _, kb in samples), "events_per_s": round(marks[-1] / elapsed)})
    growth = [res["rss_kb"][marks[-1]] / res["rss_kb"][marks[0]] for res in results]
    return {"benchmark": "pipeline", "mode": "rss", "marks": marks, "repeats": args.repeats,
            "baseline": f"RSS at {marks[0]} events", "rss_growth": round(statistics.median(growth), 4),
            "runs": results}


MODES = {"throughput": mode_throughput, "scaling": mode_scaling, "models": mode_models,
         "sustained": mode_sustained, "rss": mode_rss}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mode", choices=sorted(MODES), default="throughput")
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--bootstrap", default=f"127.0.0.1:{os.environ.get('DRIFTLINE_KAFKA_PORT', '19092')}")
    ap.add_argument("--redis", default=f"redis://127.0.0.1:{os.environ.get('DRIFTLINE_REDIS_PORT', '16379')}/0")
    ap.add_argument("--runtime", choices=["confluent", "faust", "both"], default="confluent")
    ap.add_argument("--label-fraction", type=float, default=0.0, help="share of events that get a label")
    ap.add_argument("--models", type=int, default=200, help="models of the many-model run (--mode models)")
    ap.add_argument("--rate", type=int, default=20_000, help="input events/s (--mode sustained)")
    ap.add_argument("--duration", type=float, default=300.0, help="seconds (--mode sustained)")
    ap.add_argument("--probes", type=int, default=20, help="latency probe models (--mode sustained)")
    ap.add_argument("--spread-models", type=int, default=0,
                    help="models besides the main one sharing the steady traffic (--mode sustained)")
    ap.add_argument("--rss-events", default="1000000,10000000", help="RSS marks in events (--mode rss)")
    for option, (section, key, kind) in SETTING_OPTIONS.items():
        ap.add_argument("--" + option.replace("_", "-"), type=kind, default=None,
                        help=f"{section}.{key} of the workers (default: the configuration's)")
    ap.add_argument("--scrape-seconds", type=float, default=5.0,
                    help="scrape every worker's /metrics this often, as Prometheus would (0: never)")
    ap.add_argument("--integer-features", type=int, default=0, help="integer-valued numeric features per model")
    ap.add_argument("--categorical-features", type=int, default=0, help="categorical features per model")
    args = ap.parse_args(argv)
    if args.mode == "sustained" and (args.integer_features or args.categorical_features):
        ap.error("--mode sustained sends float features only")
    MIX.update(integer=args.integer_features, categorical=args.categorical_features)
    SCRAPE["seconds"] = args.scrape_seconds
    for option, (section, key, _) in SETTING_OPTIONS.items():
        if getattr(args, option) is not None:
            SETTINGS[section][key] = getattr(args, option)
    result = MODES[args.mode](args)
    result.update({key: getattr(args, option) for option, (_, key, _) in SETTING_OPTIONS.items()})
    result.update(integer_features=args.integer_features, categorical_features=args.categorical_features,
                  scrape_seconds=args.scrape_seconds)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
