"""Exactly-once verifier: what the workers committed against an offline replay of the same input.

Independent of the workers' own bookkeeping, it reads every topic from the beginning with
``isolation.level=read_committed`` and checks, once the workers have drained:

- routing: every raw input message ends exactly once, either in an internal record (inference
  events and joined labels, by their source position; a record carries a run of them) or as a dead letter; each model's records
  keep the order of their raw partition;
- control output: the internal topic's committed records, replayed per partition in offset order
  (the order the owning workers saw) through a fresh :class:`~detectors.engine.Engine` built from
  the same configuration, give the expected control messages; the control topic must hold each
  exactly once, nothing extra, with the same content (the transport fields signing adds excluded:
  ``canonicalization``, ``issued_at``, ``key_id``, ``signature``) and verifying rollback signatures;
- state: every model's committed state in Redis is byte-identical to the replay's
  ``ModelMonitor.to_bytes()``.

:func:`compare_control` and :func:`compare_states` are pure, so tests can prove that a duplicate,
a missing message or a diverged state is caught.
"""
from __future__ import annotations

import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from stream.signing import TRANSPORT_FIELDS as _SIGNED_TRANSPORT

TRANSPORT_FIELDS = frozenset(_SIGNED_TRANSPORT)  # what signing adds around the deterministic content


@dataclass
class TopicRecord:
    """One committed record of a topic."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: float = 0.0  # Kafka create time, seconds


# -- pure comparisons ----------------------------------------------------------------------------
def content(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A control message as JSON would carry it, without its transport fields."""
    body = {k: v for k, v in doc.items() if k not in TRANSPORT_FIELDS}
    return orjson.loads(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY, default=str))


def compare_control(expected: Iterable[Mapping[str, Any]], observed: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Exactly-once check of control messages by id and content.

    ``lost``: expected ids never observed; ``duplicated``: surplus copies of an id (observed more
    often than expected); ``extra``: observed ids nobody expected; ``mismatched``: ids whose
    observed content differs from the expected content.
    """
    exp: dict[str, list[dict[str, Any]]] = defaultdict(list)
    obs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for doc in expected:
        exp[str(doc.get("id"))].append(content(doc))
    for doc in observed:
        obs[str(doc.get("id"))].append(content(doc))
    lost = sorted(i for i in exp if i not in obs)
    extra = sorted(i for i in obs if i not in exp)
    duplicated = {i: len(obs[i]) - len(exp[i]) for i in obs if i in exp and len(obs[i]) > len(exp[i])}
    short = {i: len(exp[i]) - len(obs[i]) for i in exp if i in obs and len(obs[i]) < len(exp[i])}
    mismatched = sorted(i for i in exp if i in obs and any(o not in exp[i] for o in obs[i]))
    kinds = Counter(d[0].get("kind", "?") for d in exp.values())
    return {
        "expected": sum(len(v) for v in exp.values()), "observed": sum(len(v) for v in obs.values()),
        "lost": sum(len(exp[i]) for i in lost) + sum(short.values()), "duplicated": sum(duplicated.values()), "extra": len(extra),
        "mismatched": len(mismatched), "expected_by_kind": dict(sorted(kinds.items())),
        "lost_ids": lost[:20], "duplicated_ids": sorted(duplicated)[:20], "extra_ids": extra[:20],
        "mismatched_ids": mismatched[:20],
    }


def compare_states(expected: Mapping[str, bytes], observed: Mapping[str, bytes | None]) -> dict[str, Any]:
    """Byte comparison of each model's final state (a model only one side has is a mismatch)."""
    names = sorted(set(expected) | {m for m, b in observed.items() if b is not None})
    diverged = [m for m in names if expected.get(m) != observed.get(m)]
    return {"models": len(names), "equal": len(names) - len(diverged), "all_equal": not diverged,
            "diverged": diverged, "differences": {m: state_differences(expected.get(m), observed.get(m))
                                                  for m in diverged}}


def _exact(x: Any) -> bytes:
    return orjson.dumps(x, default=repr)  # key order counts: it is part of the state bytes


def state_differences(a: bytes | None, b: bytes | None, limit: int = 6) -> list[str]:
    """Where two state blobs differ, as decoded-document paths (the first ``limit``), for the report."""
    from detectors.errors import StateFormatError
    from detectors.state import decode_state
    if a is None or b is None:
        return ["missing on one side"]
    try:
        docs = decode_state(a), decode_state(b)
    except StateFormatError as exc:
        return [f"undecodable: {exc}"]
    out: list[str] = []

    def walk(x: Any, y: Any, path: str) -> None:
        if len(out) >= limit or _exact(x) == _exact(y):  # 1 == 1.0 and 0.0 == -0.0, but not as bytes
            return
        if isinstance(x, dict) and isinstance(y, dict):
            if set(x) == set(y) and list(x) != list(y) and all(_exact(x[k]) == _exact(y[k]) for k in x):
                out.append(f"{path}: same entries, key order replay {list(x)[:8]} != redis {list(y)[:8]}")
                return
            for k in sorted(set(x) | set(y), key=str):
                walk(x.get(k), y.get(k), f"{path}.{k}")
        elif isinstance(x, list) and isinstance(y, list) and len(x) == len(y):
            for i, (u, v) in enumerate(zip(x, y)):
                walk(u, v, f"{path}[{i}]")
        else:
            out.append(f"{path}: replay {str(x)[:80]} != redis {str(y)[:80]}")

    walk(docs[0], docs[1], "")
    return out


def classify_unmatched(unmatched: Iterable[tuple[str, float]], known: set[str],
                       routed_at: Mapping[str, float], slack: float = 1.0) -> dict[str, int]:
    """Why labels were dead-lettered as ``label_unmatched``: ``(event id, dead-letter time)`` each.

    ``unknown_event``: no inference event of that id was sent (nothing to join); ``overtook``: its
    prediction was routed only after the label had waited ``redis.label_wait_seconds`` (a routing
    stall, not a loss); ``prediction_lost``: routed more than ``slack`` seconds before the label
    gave up, so Redis had it and lost it (the last second an OS crash takes) and recovery did not
    write it again. ``routed_at``: event id -> Kafka time of its first internal record.
    """
    out = {"unknown_event": 0, "overtook": 0, "prediction_lost": 0}
    for event_id, dead_at in unmatched:
        routed = routed_at.get(event_id)
        if event_id not in known or routed is None:
            out["unknown_event"] += 1
        elif routed < dead_at - slack:
            out["prediction_lost"] += 1
        else:
            out["overtook"] += 1
    return out


def check_routing(raw: Mapping[int, str], routed: Iterable[tuple[int, int, str]],
                  dead: Iterable[int]) -> dict[str, Any]:
    """Every raw message (position -> ``"inference"``/``"label"``) ends exactly once.

    ``routed`` holds ``(internal partition, position, model)`` in internal-topic order; ``dead``
    the positions named by dead letters. Also counts order violations: a model's records from one
    raw partition appearing out of raw offset order.
    """
    seen: Counter = Counter()
    last: dict[tuple[int, str, int], int] = {}
    order_violations = 0
    for partition, position, model in routed:
        seen[position] += 1
        source = (partition, model, position >> 40)  # topic index and raw partition
        offset = position & ((1 << 40) - 1)
        if last.get(source, -1) >= offset:
            order_violations += 1
        last[source] = offset
    dead_seen = Counter(dead)
    outcomes = seen + dead_seen
    unknown = [p for p in outcomes if p not in raw]
    return {
        "raw": len(raw), "routed": sum(seen.values()), "dead_lettered": sum(dead_seen.values()),
        "lost": sum(1 for p in raw if outcomes[p] == 0),
        "duplicated": sum(n - 1 for p, n in outcomes.items() if n > 1),
        "unknown_positions": len(unknown), "order_violations": order_violations,
    }


# -- reading -------------------------------------------------------------------------------------
def read_committed(bootstrap: str, topic: str, timeout: float = 120.0) -> list[TopicRecord]:
    """Every committed record of ``topic``, partition by partition in offset order."""
    from confluent_kafka import KafkaError, Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"eos-verify-{uuid.uuid4().hex}",
                         "enable.auto.commit": False, "isolation.level": "read_committed",
                         "enable.partition.eof": True, "auto.offset.reset": "earliest",
                         "fetch.max.bytes": 64 * 1024 * 1024})
    try:
        meta = consumer.list_topics(topic, timeout=30).topics[topic]
        if meta.error is not None:
            raise RuntimeError(f"cannot read topic {topic!r}: {meta.error}")
        parts = sorted(meta.partitions)
        consumer.assign([TopicPartition(topic, p, 0) for p in parts])
        pending = set(parts)
        out: list[TopicRecord] = []
        deadline = time.monotonic() + timeout
        while pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic!r}: partitions {sorted(pending)} did not reach their end")
            for msg in consumer.consume(10_000, 0.5):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        pending.discard(msg.partition())
                        continue
                    raise RuntimeError(f"reading {topic!r}: {err}")
                out.append(TopicRecord(msg.partition(), msg.offset(), msg.key(), msg.value(), msg.timestamp()[1] / 1000))
        out.sort(key=lambda r: (r.partition, r.offset))
        return out
    finally:
        consumer.close()


@dataclass
class Observation:
    """What the cluster holds after a run: topics and Redis state, read independently."""

    raw: dict[str, list[TopicRecord]]          # input topic -> records
    internal: list[TopicRecord]
    control: list[dict[str, Any]]
    dead: list[dict[str, Any]]
    states: dict[str, bytes | None]
    committed: dict[tuple[str, int], int] = field(default_factory=dict)  # group's committed offsets
    dead_times: list[float] = field(default_factory=list)  # Kafka time of each dead letter (as ``dead``)


def observe(config: Any, timeout: float = 120.0) -> Observation:
    """Read every topic of ``config`` (read_committed) and each model's committed Redis state."""
    from confluent_kafka import Consumer, TopicPartition

    from stream.config import redis_client
    from stream.state import StateStore

    k = config.kafka
    bootstrap = k.bootstrap_servers
    topics = [t.name for t in k.inference_topics] + [t.name for t in k.label_topics]
    raw = {t: read_committed(bootstrap, t, timeout) for t in topics}
    internal = read_committed(bootstrap, k.internal_topic, timeout)
    control = [orjson.loads(r.value) for r in read_committed(bootstrap, k.control_topic, timeout) if r.value]
    dead_records = [r for r in read_committed(bootstrap, k.dead_letter_topic, timeout) if r.value]
    dead = [orjson.loads(r.value) for r in dead_records]
    store = StateStore(redis_client(config.redis), config.redis.key_prefix, k.group_id)
    states = {m.name: store.load_model(m.name) for m in config.monitor.models}
    group = Consumer({"bootstrap.servers": bootstrap, "group.id": k.group_id, "enable.auto.commit": False})
    try:
        wanted = [TopicPartition(k.internal_topic, p) for p in range(k.internal_partitions)]
        wanted += [TopicPartition(t, p) for t in topics for p in sorted({r.partition for r in raw[t]} or {0})]
        committed = {(tp.topic, tp.partition): tp.offset for tp in group.committed(wanted, timeout=30)}
    finally:
        group.close()
    return Observation(raw, internal, control, dead, states, committed, [r.timestamp for r in dead_records])


# -- replay and verdict --------------------------------------------------------------------------
def replay_internal(config_path: str | Path, internal: list[TopicRecord]) -> tuple[list[dict[str, Any]], dict[str, bytes], int, int]:
    """Replay the internal topic per partition through a fresh engine of the same configuration.

    Records are grouped into consecutive same-model, same-kind runs, as the worker does; the
    engine's results do not depend on where runs are cut. Returns the control messages, the
    final state of every model that saw a record, and the counts of events and labels.
    """
    from detectors.engine import Engine
    from stream.records import RecordError, decode_batch
    from stream.replay import load_replay_config

    cfg = load_replay_config(config_path)
    engine = Engine(cfg.monitor)
    for name, ref in cfg.references.items():
        engine.monitors[name].set_reference(ref)
    messages: list[dict[str, Any]] = []
    touched: set[str] = set()
    events = labels = 0
    by_partition: dict[int, list[TopicRecord]] = defaultdict(list)
    for rec in internal:
        by_partition[rec.partition].append(rec)
    for partition in sorted(by_partition):
        runs: list[tuple[str, str, list[Any]]] = []
        for rec in by_partition[partition]:
            try:
                batch = decode_batch(rec.value or b"")
            except RecordError:
                continue
            if batch.kind == "r":  # registry documents: not part of this verification
                continue
            if runs and runs[-1][0] == batch.model and runs[-1][1] == batch.kind:
                runs[-1][2].extend(batch.items)
            else:
                runs.append((batch.model, batch.kind, list(batch.items)))
        for model, kind, items in runs:
            if model not in engine.monitors:
                continue
            touched.add(model)
            mon = engine.monitors[model]
            produced = mon.process_inference(items) if kind == "i" else mon.process_labels(items)
            if kind == "i":
                events += len(items)
            else:
                labels += len(items)
            messages.extend(m.to_dict() for m in produced)
    states = {name: engine.monitors[name].to_bytes() for name in sorted(touched)}
    return messages, states, events, labels


def verify_run(config_path: str | Path, signing_keys: Any, timeout: float = 120.0) -> dict[str, Any]:
    """Read the cluster, replay, compare: the verifier's report (``ok`` false on any violation)."""
    from stream.config import load_config
    from stream.decoding import DecodeError, build_decoders
    from stream.records import RecordError, decode_batch, source_position
    from stream.signing import verify

    config = load_config(config_path)
    obs = observe(config, timeout)
    k = config.kafka
    names = [t.name for t in k.inference_topics] + [t.name for t in k.label_topics]
    inference_topics = {t.name for t in k.inference_topics}
    decoders = build_decoders(config)
    raw: dict[int, str] = {}
    known_events: set[str] = set()
    for index, topic in enumerate(names):
        for rec in obs.raw[topic]:
            pos = source_position(index, rec.partition, rec.offset)
            raw[pos] = "inference" if topic in inference_topics else "label"
            if topic in inference_topics:
                try:
                    known_events.add(decoders[topic].decode_inference(rec.value).event_id)
                except (DecodeError, TypeError, ValueError):
                    pass
    unmatched = [(d, t) for d, t in zip(obs.dead, obs.dead_times) if d.get("reason") == "label_unmatched"]
    unmatched_ids: list[tuple[str, float]] = []
    for d, t in unmatched:
        try:
            event_id = orjson.loads(d.get("payload") or "null").get("event_id")
        except (orjson.JSONDecodeError, AttributeError):
            event_id = None
        unmatched_ids.append((str(event_id), t))
    wanted = {e for e, _ in unmatched_ids}
    routed_at: dict[str, float] = {}
    routed: list[tuple[int, int, str]] = []
    bad_internal = 0
    for rec in obs.internal:
        try:
            batch = decode_batch(rec.value or b"")
        except RecordError:
            bad_internal += 1
            continue
        if batch.kind == "r":
            continue
        for item in batch.items:  # one internal record carries a run of events or joined labels
            pos = item.position if batch.kind == "i" else item.label.position
            routed.append((rec.partition, pos, batch.model))
            if batch.kind == "i" and item.event_id in wanted:
                routed_at[item.event_id] = min(routed_at.get(item.event_id, rec.timestamp), rec.timestamp)
    index = {name: i for i, name in enumerate(names)}
    dead_positions = [source_position(index[d["topic"]], d["partition"], d["offset"])
                      for d in obs.dead if d.get("topic") in index]
    routing = check_routing(raw, routed, dead_positions)
    lost_joins = sum(1 for e, _ in unmatched_ids if e in known_events)
    why = classify_unmatched(unmatched_ids, known_events, routed_at)
    expected, replay_states, events, labels = replay_internal(config_path, obs.internal)
    control = compare_control(expected, obs.control)
    states = compare_states(replay_states, obs.states)
    rollbacks = [m for m in obs.control if m.get("kind") == "rollback"]
    bad_signatures = sum(1 for m in rollbacks if not verify(m, signing_keys).ok)
    internal_ends = defaultdict(int)
    for rec in obs.internal:
        internal_ends[rec.partition] = max(internal_ends[rec.partition], rec.offset + 1)
    undrained = sorted(p for p, end in internal_ends.items()
                       if obs.committed.get((k.internal_topic, p), -1) < end)
    violations = []
    for name in ("lost", "duplicated", "extra", "mismatched"):
        if control[name]:
            violations.append(f"control messages {name}: {control[name]}")
    if not states["all_equal"]:
        violations.append(f"state diverged for {states['diverged']}")
    for name in ("lost", "duplicated", "unknown_positions", "order_violations"):
        if routing[name]:
            violations.append(f"routing {name}: {routing[name]}")
    if bad_internal:
        violations.append(f"{bad_internal} undecodable internal records")
    if bad_signatures:
        violations.append(f"{bad_signatures} rollback signatures do not verify")
    if undrained:
        violations.append(f"internal partitions {undrained} not drained")
    return {
        "ok": not violations, "violations": violations, "messages": control, "states": states,
        "routing": routing, "events": events, "labels_joined": labels,
        "labels": {"raw": sum(1 for v in raw.values() if v == "label"), "joined": labels,
                   "unmatched": len(unmatched), "unmatched_known_event": lost_joins, "unmatched_why": why},
        "dead_letters": dict(sorted(Counter(d.get("reason", "?") for d in obs.dead).items())),
        "rollbacks": len(rollbacks), "rollback_signatures_bad": bad_signatures,
    }
