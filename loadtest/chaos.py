"""Exactly-once under chaos: N workers, sustained traffic, random faults, then an independent verdict.

In the style of Kafka's own exactly-once system tests. A PRIVATE stack (``scripts/stack`` with
its own state directory and ports, see :mod:`loadtest.chaos_stack`) is started so Redis and the
broker can be SIGKILLed freely; ``--workers`` ``driftline run`` processes share one group while
drill traffic (several models, each with its own incident: backdoored canary, covariate shift,
label flipping, ... with labels, so alerts, resolutions and signed rollbacks occur) is produced at
``--rate`` messages/s. During the traffic, ``--cycles`` faults are injected at seeded random
moments, one per time slot, every kind at least once when there are five or more cycles:

- ``worker_kill``: SIGKILL a worker and restart it (same worker id);
- ``redis_kill``: SIGKILL Redis and restart it; with ``--redis-loss S`` the append-only file
  first loses its last S seconds, as an operating-system crash loses what ``appendfsync
  everysec`` had not synced;
- ``broker_kill``: SIGKILL the broker and restart it;
- ``worker_add``: start one more worker; ``worker_remove``: SIGTERM one (never the last).

A worker that exits on its own is restarted (as a process supervisor would) and counted. After the
traffic, the workers drain; then :func:`loadtest.eos_verify.verify_run` reads everything back
(read_committed), replays the committed internal records through the same engine and compares.
One JSON report goes to stdout; the exit status is 1 on any violation.

    python loadtest/chaos.py --workers 3 --cycles 6 --rate 1500 --duration 40 --seed 7
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402
import yaml  # noqa: E402

from loadtest.chaos_stack import Ports, PrivateStack  # noqa: E402
from loadtest.drills import T0, drill_model_spec, make_drill  # noqa: E402

KINDS = ("worker_kill", "redis_kill", "broker_kill", "worker_add", "worker_remove")
SCENARIOS = ("backdoor_canary", "sudden_shift", "label_flip", "rogue_version", "concept_drift", "gradual_drift")
KEY_ENV = "DRIFTLINE_CHAOS_SIGNING_KEY"
DRILL_RATE = 100.0          # event-time rate of the drill generator (events/s per model)
LABEL_DELAY_SCALE = 0.1     # labels arrive a tenth as late as in the drills (median ~4.5 s)
GARBAGE_EVERY = 997         # one malformed inference message per this many (dead-lettered)
REFERENCE_SIZE = 1000        # events a stream learns its reference from (drills use 2000)
INJECTION = 2000            # the first incident event of each model, at the earliest
INPUT_PARTITIONS, LABEL_PARTITIONS, INTERNAL_PARTITIONS = 4, 2, 8


# -- traffic -------------------------------------------------------------------------------------
@dataclass
class Traffic:
    """Messages in send order: (is_label, key, value), with event times relative to the start."""

    messages: list[tuple[bool, bytes, bytes]]
    inference: int
    labels: int
    garbage: int
    models: list[str]


def build_traffic(n_models: int, n_inference: int, rate: float, seed: int, base_ts: float) -> Traffic:
    """Drill traffic of ``n_models`` models (one incident each), event time close to wall time.

    Each model's drill is re-timed so that the whole stream runs at ``rate`` messages/s from
    ``base_ts``; label delays shrink by ``LABEL_DELAY_SCALE``; labels later than the last event
    are dropped (a label from the future would only test the clock bound).
    """
    per_model = max(2 * INJECTION, n_inference // n_models)
    models = [f"cf-{i}" for i in range(n_models)]
    rows: list[tuple[float, int, bytes, bytes]] = []
    total_events = per_model * n_models
    label_share = 0.32
    scale = DRILL_RATE * n_models / (rate / (1 + label_share))  # drill seconds -> wall seconds
    for i, model in enumerate(models):
        scenario = SCENARIOS[i % len(SCENARIOS)]
        drill = make_drill(scenario, n_events=per_model, injection=max(INJECTION, per_model // 3), seed=seed * 100 + i)
        ts_of: dict[str, float] = {}
        for line in drill.inference:
            try:
                doc = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if not isinstance(doc, dict) or "ts" not in doc:
                continue
            ts = base_ts + (doc["ts"] - T0) * scale
            doc["ts"], doc["model"] = round(ts, 4), model
            ts_of[doc["event_id"]] = ts
            rows.append((ts, 0, doc["event_id"].encode(), orjson.dumps(doc)))
        last = max(ts_of.values())
        for line in drill.labels:
            doc = orjson.loads(line)
            sent = base_ts + (doc["ts"] - T0) * scale
            pred = ts_of.get(doc["event_id"])
            ts = sent if pred is None else pred + (sent - pred) * LABEL_DELAY_SCALE
            if ts > last:
                continue
            doc["ts"] = round(ts, 4)
            rows.append((ts, 1, doc["event_id"].encode(), orjson.dumps(doc)))
    rows.sort(key=lambda r: (r[0], r[1]))
    messages: list[tuple[bool, bytes, bytes]] = []
    garbage = 0
    for j, (_, kind, key, value) in enumerate(rows):
        messages.append((bool(kind), key, value))
        if j % GARBAGE_EVERY == GARBAGE_EVERY - 1:
            messages.append((False, b"garbage", b'{"event_id": "broken", "ts": '))
            garbage += 1
    labels = sum(1 for r in rows if r[1])
    return Traffic(messages, len(rows) - labels, labels, garbage, models)


def chaos_config(stack: PrivateStack, tag: str, models: list[str], label_wait: float) -> dict[str, Any]:
    """The workers' configuration: private stack, this run's topics and keys, short group timeouts."""
    specs = []
    for name in models:
        spec = drill_model_spec()
        spec.update(name=name, reference_size=REFERENCE_SIZE, label_reference_size=REFERENCE_SIZE // 3,
                    canary={"min_events": 200, "window": 500})
        specs.append(spec)
    return {
        "kafka": {
            "bootstrap_servers": stack.bootstrap, "group_id": f"chaos-{tag}",
            "inference_topics": [{"name": f"chaos-{tag}-inference"}],
            "label_topics": [{"name": f"chaos-{tag}-labels"}],
            "control_topic": f"chaos-{tag}-control", "dead_letter_topic": f"chaos-{tag}-dead",
            "internal_topic": f"chaos-{tag}-internal", "internal_partitions": INTERNAL_PARTITIONS,
            "batch_size": 1000, "batch_timeout_ms": 100, "stall_timeout_seconds": 20,
            # a SIGKILLed member leaves the group in 6 s, not 45 s
            "client_options": {"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000},
        },
        "redis": {"url": stack.redis_url, "key_prefix": f"chaos-{tag}", "pending_ttl_seconds": 3600,
                  "label_wait_seconds": label_wait},
        "signing": {"key_env": KEY_ENV},
        "metrics": {"enabled": False, "port": 0},
        "monitor": {"models": specs,
                    "alerts": {"cooldown_seconds": 10, "group_window_seconds": 2, "resolve_after_quiet_seconds": 5}},
    }


class Producer:
    """Produces the traffic at a steady rate in a thread (it rides out broker restarts)."""

    def __init__(self, bootstrap: str, inference_topic: str, label_topic: str, traffic: Traffic, rate: float) -> None:
        from confluent_kafka import Producer as KafkaProducer

        self._p = KafkaProducer({"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": True,
                                 "message.timeout.ms": 600_000, "queue.buffering.max.messages": 1_000_000})
        self._topics = (inference_topic, label_topic)
        self._traffic = traffic
        self._rate = rate
        self.sent = 0
        self.failed = 0
        self.done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-producer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _on_delivery(self, err: Any, _msg: Any) -> None:
        if err is not None:
            self.failed += 1

    def _run(self) -> None:
        start = time.monotonic()
        for i, (is_label, key, value) in enumerate(self._traffic.messages, 1):
            while True:
                try:
                    self._p.produce(self._topics[is_label], value=value, key=key, on_delivery=self._on_delivery)
                    break
                except BufferError:
                    self._p.poll(0.05)
            self.sent = i
            ahead = i / self._rate - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)
            self._p.poll(0)
        self._p.flush(600)
        self._p = None  # no client left reconnecting to a stopped broker
        self.done.set()


# -- workers -------------------------------------------------------------------------------------
@dataclass
class WorkerPool:
    """``driftline run`` processes of one group; restarts any that exit without being told to."""

    config_path: Path
    log_dir: Path
    env: dict[str, str]
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    next_id: int = 0
    unexpected_exits: list[dict[str, Any]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self, worker_id: str | None = None) -> str:
        with self._lock:
            if worker_id is None:
                worker_id = f"w{self.next_id}"
                self.next_id += 1
            log = open(self.log_dir / f"{worker_id}.log", "ab")
            self.procs[worker_id] = subprocess.Popen(
                [sys.executable, "-m", "stream.cli", "run", "--config", str(self.config_path), "--worker-id", worker_id],
                stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=str(ROOT))
            log.close()
            return worker_id

    def live(self) -> list[str]:
        with self._lock:
            return [w for w, p in self.procs.items() if p.poll() is None]

    def kill(self, worker_id: str) -> None:
        with self._lock:
            proc = self.procs.pop(worker_id)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(30)

    def terminate(self, worker_id: str, timeout: float = 60.0) -> int | None:
        with self._lock:
            proc = self.procs.pop(worker_id)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)
            return None

    def tail(self, worker_id: str, lines: int = 15) -> str:
        try:
            text = (self.log_dir / f"{worker_id}.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def supervise(self) -> None:
        """Restart workers that exited on their own, once a second, until :meth:`stop_supervising`."""
        def loop() -> None:
            while not self._stop.wait(0.5):
                with self._lock:
                    dead = [(w, p.returncode) for w, p in self.procs.items() if p.poll() is not None]
                for worker_id, code in dead:
                    with self._lock:
                        if self.procs.get(worker_id) is None or self.procs[worker_id].poll() is None:
                            continue
                        del self.procs[worker_id]
                    self.unexpected_exits.append({"worker": worker_id, "exit_code": code, "at": time.time(),
                                                  "log_tail": self.tail(worker_id, 8)})
                    time.sleep(0.5)
                    self.start(worker_id)

        threading.Thread(target=loop, name="chaos-supervisor", daemon=True).start()

    def stop_supervising(self) -> None:
        self._stop.set()
        time.sleep(0.6)

    def stop_all(self) -> None:
        for worker_id in list(self.procs):
            self.terminate(worker_id)


# -- progress ------------------------------------------------------------------------------------
class Progress:
    """Samples the group's committed offsets (inputs and internal) twice a second."""

    def __init__(self, bootstrap: str, group: str, topics: dict[str, int]) -> None:
        from confluent_kafka import Consumer, TopicPartition

        self._consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
        # read_uncommitted end offsets count the records of open transactions, which a
        # read_committed end offset (the last stable offset) stops before
        self._log_ends = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{group}-chaos-ends",
                                   "enable.auto.commit": False, "isolation.level": "read_uncommitted"})
        self._tps = [TopicPartition(t, p) for t, n in topics.items() for p in range(n)]
        self._bootstrap = bootstrap
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-progress", daemon=True)

    def committed(self) -> dict[tuple[str, int], int]:
        return {(tp.topic, tp.partition): tp.offset for tp in self._consumer.committed(self._tps, timeout=5)}

    def ends(self) -> dict[tuple[str, int], int]:
        """Each partition's last stable offset: the end a read_committed reader sees."""
        return {(tp.topic, tp.partition): self._consumer.get_watermark_offsets(tp, timeout=5)[1] for tp in self._tps}

    def log_ends(self) -> dict[tuple[str, int], int]:
        """Each partition's log end offset, records of still open transactions included."""
        return {(tp.topic, tp.partition): self._log_ends.get_watermark_offsets(tp, timeout=5)[1] for tp in self._tps}

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            try:
                total = sum(max(o, 0) for o in self.committed().values())
            except Exception:  # noqa: BLE001 - the broker may be down right now
                continue
            self.samples.append((time.monotonic(), total))

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)
        self._consumer.close()
        self._log_ends.close()

    def backlog(self, attempts: int = 20) -> int | None:
        """The sum of every partition's end offset now (what the group has to commit to catch up)."""
        for _ in range(attempts):
            try:
                return sum(max(o, 0) for o in self.ends().values())
            except Exception:  # noqa: BLE001 - the broker may still be settling
                time.sleep(0.5)
        return None

    def recovered_after(self, since: float, target: int | None) -> float | None:
        """Seconds from ``since`` until the group had committed up to ``target`` (its backlog then)."""
        if target is None:
            return None
        for s, n in self.samples:
            if s >= since and n >= target:
                return s - since
        return None

    def drained(self, timeout: float) -> bool:
        """Wait until no transaction is open and every partition's committed offset reached its end,
        twice in a row.

        A transaction left open by a worker that exited for good (removed while a call hung) holds
        the last stable offset back until the broker aborts it; its successors' records wait behind
        it, so the group is not drained until it is gone.
        """
        deadline = time.monotonic() + timeout
        streak = 0
        while time.monotonic() < deadline:
            try:
                ends, log_ends, committed = self.ends(), self.log_ends(), self.committed()
                ok = (all(committed.get(k, -1) >= end for k, end in ends.items() if end > 0)
                      and all(log_ends.get(k, -1) == end for k, end in ends.items()))
            except Exception:  # noqa: BLE001
                ok = False
            streak = streak + 1 if ok else 0
            if streak >= 2:
                return True
            time.sleep(1.0)
        return False


# -- faults --------------------------------------------------------------------------------------
def fault_plan(cycles: int, rng: random.Random, allowed: tuple[str, ...] = KINDS) -> list[str]:
    """``cycles`` fault kinds: every allowed kind once first (shuffled) when there is room, then random."""
    kinds = list(allowed) if cycles >= len(allowed) else []
    rng.shuffle(kinds)
    kinds += [rng.choice(allowed) for _ in range(cycles - len(kinds))]
    return kinds


@dataclass
class Fault:
    kind: str
    at: float                # monotonic start
    seconds: float = 0.0     # how long the injection itself took (restart included)
    target: str = ""
    detail: dict[str, Any] = field(default_factory=dict)
    recovery_seconds: float | None = None


def inject(kind: str, pool: WorkerPool, stack: PrivateStack, rng: random.Random, max_workers: int,
           redis_loss: float) -> Fault:
    """Inject one fault and bring the component back; returns what was done."""
    live = pool.live()
    deadline = time.monotonic() + 30
    while not live and time.monotonic() < deadline:  # the last worker exited; the supervisor restarts it
        time.sleep(0.5)
        live = pool.live()
    if not live:
        kind = "worker_add"
    if kind == "worker_remove" and len(live) <= 1:
        kind = "worker_add"
    if kind == "worker_add" and len(live) >= max_workers:
        kind = "worker_remove"
    fault = Fault(kind, time.monotonic())
    if kind == "worker_kill":
        target = rng.choice(live)
        pool.kill(target)
        time.sleep(rng.uniform(0.0, 1.0))
        pool.start(target)
        fault.target = target
    elif kind == "worker_add":
        fault.target = pool.start()
    elif kind == "worker_remove":
        target = rng.choice(live)
        fault.detail["exit_code"] = pool.terminate(target)
        fault.target = target
    elif kind == "redis_kill":
        down = rng.uniform(0.1, 3.0)
        fault.detail["aof_bytes_lost"] = stack.kill_redis(lose_seconds=redis_loss, down_seconds=down)
        fault.detail["down_seconds"] = round(down, 2)
    elif kind == "broker_kill":
        down = rng.uniform(0.0, 2.0)
        stack.kill_kafka(down_seconds=down)
        fault.detail["down_seconds"] = round(down, 2)
    fault.seconds = time.monotonic() - fault.at
    return fault


# -- the run -------------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> dict[str, Any]:
    """One chaos run on a private stack; returns the report."""
    from loadtest.eos_verify import verify_run
    from stream.config import load_config
    from stream.config import signing_key

    started = time.monotonic()
    rng = random.Random(args.seed)
    workdir = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="driftline-chaos-"))
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "workers").mkdir(exist_ok=True)
    stack = PrivateStack(workdir / "stack", Ports(args.ports))
    busy = [] if (workdir / "stack").exists() else [p for p in stack.ports.all() if not port_free(p)]
    if busy:
        raise SystemExit(f"chaos: ports {busy} of --ports {args.ports} are in use (another stack?); "
                         f"choose another base")
    tag = uuid.uuid4().hex[:8]
    os.environ.setdefault(KEY_ENV, secrets.token_hex(32))
    n_messages = args.events if args.events else int(args.duration * args.rate)
    n_inference = int(n_messages / 1.32)
    pool: WorkerPool | None = None
    progress: Progress | None = None
    report: dict[str, Any] = {"benchmark": "chaos", "seed": args.seed, "workers": args.workers, "cycles": args.cycles,
                              "rate": args.rate, "ports": args.ports, "redis_loss_seconds": args.redis_loss}
    try:
        stack.start()
        stack.start_tracking()
        traffic = build_traffic(args.models, n_inference, args.rate, args.seed, time.time() + 5.0)
        doc = chaos_config(stack, tag, traffic.models, args.label_wait)
        config_path = workdir / "driftline.yaml"
        config_path.write_text(yaml.safe_dump(doc, sort_keys=False))
        k = doc["kafka"]
        _create_topics(stack.bootstrap, {k["inference_topics"][0]["name"]: INPUT_PARTITIONS,
                                         k["label_topics"][0]["name"]: LABEL_PARTITIONS})
        env = dict(os.environ)
        pool = WorkerPool(config_path, workdir / "workers", env)
        for _ in range(args.workers):
            pool.start()
        pool.supervise()
        progress = Progress(stack.bootstrap, k["group_id"], {
            k["inference_topics"][0]["name"]: INPUT_PARTITIONS, k["label_topics"][0]["name"]: LABEL_PARTITIONS,
            k["internal_topic"]: INTERNAL_PARTITIONS})
        _wait_for_topic(stack.bootstrap, k["internal_topic"], 120)
        progress.start()
        producer = Producer(stack.bootstrap, k["inference_topics"][0]["name"], k["label_topics"][0]["name"],
                            traffic, args.rate)
        traffic_started = time.monotonic()
        producer.start()
        span = len(traffic.messages) / args.rate
        faults: list[Fault] = []
        kinds = fault_plan(args.cycles, rng, tuple(args.kinds.split(",")))
        slot = 0.9 * span / max(1, len(kinds))
        for i, kind in enumerate(kinds):
            when = traffic_started + 0.05 * span + (i + rng.uniform(0.1, 0.6)) * slot
            delay = when - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            fault = inject(kind, pool, stack, rng, args.workers + 3, args.redis_loss)
            fault.detail["backlog"] = progress.backlog()
            faults.append(fault)
            print(f"[chaos] {time.monotonic() - traffic_started:7.1f}s {fault.kind} {fault.target} "
                  f"{fault.seconds:.1f}s {fault.detail}", file=sys.stderr)
        producer.done.wait()
        traffic_seconds = time.monotonic() - traffic_started
        drained = progress.drained(args.drain_timeout)
        for fault in faults:
            fault.recovery_seconds = progress.recovered_after(fault.at + fault.seconds, fault.detail.pop("backlog"))
        pool.stop_supervising()
        live = pool.live()
        pool.stop_all()
        progress.stop()
        progress = None
        config = load_config(config_path)
        verdict = verify_run(config_path, signing_key(config.signing), timeout=120)
        if not drained:
            verdict["ok"] = False
            verdict["violations"].append(f"workers did not drain within {args.drain_timeout}s")
        if producer.failed:
            verdict["ok"] = False
            verdict["violations"].append(f"{producer.failed} input messages were not delivered")
        unrecovered = [f.kind for f in faults if f.recovery_seconds is None]
        if unrecovered:
            verdict["ok"] = False
            verdict["violations"].append(f"no progress after {unrecovered}")
        by_kind: dict[str, dict[str, int]] = {}
        for f in faults:
            row = by_kind.setdefault(f.kind, {"injected": 0, "survived": 0})
            row["injected"] += 1
            row["survived"] += int(f.recovery_seconds is not None)
        recoveries = [f.recovery_seconds for f in faults if f.recovery_seconds is not None]
        report.update({
            "ok": verdict["ok"], "violations": verdict["violations"],
            "faults": {"injected": len(faults), "survived": len(faults) - len(unrecovered), "by_kind": by_kind,
                       "recovery_seconds_median": round(statistics.median(recoveries), 2) if recoveries else None,
                       "recovery_seconds_max": round(max(recoveries), 2) if recoveries else None,
                       "redis_aof_bytes_lost": sum(f.detail.get("aof_bytes_lost", 0) for f in faults),
                       "log": [{"kind": f.kind, "t": round(f.at - traffic_started, 2), "target": f.target,
                                "seconds": round(f.seconds, 2), "recovery_seconds":
                                    None if f.recovery_seconds is None else round(f.recovery_seconds, 2), **f.detail}
                               for f in faults]},
            "catch_ups": catch_ups(workdir / "workers"),
            "worker_exits": {"unexpected": len(pool.unexpected_exits),
                             "samples": pool.unexpected_exits[:3], "live_at_end": sorted(live)},
            "messages": {key: verdict["messages"][key] for key in
                         ("expected", "observed", "lost", "duplicated", "extra", "mismatched", "expected_by_kind")},
            "states_equal": verdict["states"]["all_equal"], "states": verdict["states"],
            "routing": verdict["routing"], "labels": verdict["labels"], "dead_letters": verdict["dead_letters"],
            "events": verdict["events"], "labels_joined": verdict["labels_joined"],
            "produced": {"inference": traffic.inference, "labels": traffic.labels, "garbage": traffic.garbage},
            "traffic_seconds": round(traffic_seconds, 1),
            "details": {key: verdict["messages"][key] for key in
                        ("lost_ids", "duplicated_ids", "extra_ids", "mismatched_ids")},
        })
    finally:
        if pool is not None:
            pool.stop_supervising()
            pool.stop_all()
        if progress is not None:
            progress.stop()
        if not args.keep_stack:
            try:
                stack.stop()
            finally:
                if not args.dir and report.get("ok"):
                    shutil.rmtree(workdir, ignore_errors=True)
        report["workdir"] = str(workdir)
        report["wall_seconds"] = round(time.monotonic() - started, 1)
    return report


_CATCH_UP = re.compile(rb"re-ran (\d+) records without output, remembered (\d+) predictions again in ([0-9.]+) s")


def catch_ups(log_dir: Path) -> dict[str, Any]:
    """The workers' catch-ups (from their logs): how many, records re-run, seconds (median, max)."""
    rows = [(int(m[1]), float(m[3])) for path in sorted(log_dir.glob("*.log"))
            for m in _CATCH_UP.finditer(path.read_bytes())]
    secs = sorted(s for _, s in rows)
    return {"count": len(rows), "records_max": max((r for r, _ in rows), default=0),
            "seconds_median": round(statistics.median(secs), 2) if secs else None,
            "seconds_max": round(secs[-1], 2) if secs else None}


def port_free(port: int) -> bool:
    """Whether nothing listens on 127.0.0.1:``port`` (connections of a stopped stack in TIME_WAIT do not count)."""
    import socket
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers themselves bind
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _create_topics(bootstrap: str, topics: dict[str, int]) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    for fut in admin.create_topics([NewTopic(t, num_partitions=n, replication_factor=1)
                                    for t, n in topics.items()]).values():
        fut.result(30)


def _wait_for_topic(bootstrap: str, topic: str, timeout: float) -> None:
    """Wait until the workers created their internal topic (the progress sampler needs it)."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        meta = admin.list_topics(timeout=10).topics.get(topic)
        if meta is not None and len(meta.partitions) == INTERNAL_PARTITIONS:
            return
        time.sleep(0.3)
    raise TimeoutError(f"the workers did not create {topic!r} within {timeout}s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, default=3, help="workers at the start (one group)")
    ap.add_argument("--cycles", type=int, default=6, help="faults to inject (each kind once from 5 on)")
    ap.add_argument("--rate", type=float, default=1500.0, help="input messages per second")
    ap.add_argument("--seed", type=int, default=1)
    size = ap.add_mutually_exclusive_group()
    size.add_argument("--duration", type=float, default=40.0, help="seconds of traffic at --rate")
    size.add_argument("--events", type=int, help="input messages in total (instead of --duration)")
    ap.add_argument("--models", type=int, default=4, help="models, one incident scenario each")
    ap.add_argument("--kinds", default=",".join(KINDS), help="comma-separated fault kinds to draw from")
    ap.add_argument("--ports", type=int, default=24000, help="base of the private stack's ports (base .. base+99)")
    ap.add_argument("--redis-loss", type=float, default=0.0,
                    help="seconds of Redis AOF writes lost at each Redis kill (an OS crash under appendfsync everysec)")
    ap.add_argument("--label-wait", type=float, default=30.0, help="redis.label_wait_seconds of the workers")
    ap.add_argument("--drain-timeout", type=float, default=240.0)
    ap.add_argument("--dir", help="work directory (default: a temporary one, removed after a clean run)")
    ap.add_argument("--keep-stack", action="store_true", help="leave the private stack running")
    args = ap.parse_args(argv)
    if args.workers < 1 or args.cycles < 0 or args.rate <= 0:
        ap.error("--workers must be >= 1, --cycles >= 0, --rate > 0")
    unknown = sorted(set(args.kinds.split(",")) - set(KINDS))
    if unknown:
        ap.error(f"unknown fault kinds {unknown}; known: {list(KINDS)}")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up the private stack on SIGTERM too
    report = run(args)
    if args.dir:  # kept with the worker logs, whatever the verdict
        (Path(args.dir) / "report.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report))
    return 0 if report.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
