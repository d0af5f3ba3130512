"""The Kafka worker: routes raw traffic to the internal topic and runs detection from it.

One consumer in one group reads the team's inference and label topics *and* driftline's internal
topic; one transactional producer writes the internal topic, the control topic and the
dead-letter topic. Each micro-batch is one Kafka transaction:

- raw inference events are validated (bad ones dead-lettered), remembered for the label join (one
  Redis call per batch, and only for models some label topic joins) and re-published to the
  internal partition that owns their model, packed per model into batch records;
- raw labels are joined with their prediction and re-published beside the model's events;
- registry events (``kafka.registry_topic``) are verified (Ed25519, :mod:`stream.registry`) and
  re-published beside the model's events too, ahead of the batch's inference events; there the
  model's manifest takes them (replay protection, staleness) as part of its state;
- internal records run through the model's ``ModelMonitor``; its control messages (alerts,
  signed rollback commands) are produced to the control topic;
- model state and internal offsets are staged in Redis, the transaction commits (control output
  and consumed offsets together), then the staged state is promoted.

Consumers of the control topic read with ``isolation.level=read_committed`` and so see each
message once, even across crashes; ids are deterministic in any case.

No message stops the worker: whatever its bytes, a raw or internal record ends as a processed
event or a dead letter with a reason. A record that makes the detection core raise is isolated
(the model's state is rebuilt from Redis, the batch replayed record by record) and dead-lettered.
Transient Kafka and Redis errors abort the batch, rewind and retry with exponential backoff.
"""
from __future__ import annotations

import faulthandler
import logging
import os
import signal
import threading
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import redis
from confluent_kafka import (OFFSET_BEGINNING, TIMESTAMP_NOT_AVAILABLE, Consumer, KafkaError, KafkaException, Message,
                             Producer, TopicPartition)
from confluent_kafka.admin import AdminClient, NewTopic

from detectors.engine import ModelMonitor
from detectors.errors import ProfileFormatError, StateFormatError
from detectors.events import InferenceEvent, JoinedLabel, LabelEvent
from detectors.manifest import RegistryEntry
from detectors.profile import ReferenceProfile
from stream.batching import DetectionHold, gather, model_runs
from stream.collector import fewer_collections
from stream.config import (ConfigError, DriftlineConfig, consumer_settings, fetch_settings, producer_settings,
                           redis_client, signing_key)
from stream.decoding import DecodeError, Decoder, artifact_digest, build_decoders, without_frames
from stream.membership import GroupMembership
from stream.metrics import ScrapeRequests, WorkerMetrics, serve_metrics
from stream.records import (MAX_RECORD_BYTES, RecordError, decode_batch, encode_inference, encode_inference_batch,
                            encode_label, encode_label_batch, encode_registry, partition_for, source_position)
from stream.registry import RegistryError, load_public_keys, parse_event, verify_event
from stream.signing import sign
from stream.state import (ANY_OFFSET, OwnershipLost, PartitionKey, PendingBatch, StateLostError, StateStore,
                          encode_pending, event_lines)

log = logging.getLogger("driftline.worker")


@dataclass
class BatchOutcome:
    """What one micro-batch did, for metrics and tests."""

    events: int = 0
    labels: int = 0
    dead_letters: int = 0
    registry: int = 0  # registry events routed to their model's partition
    control_messages: list[dict] = field(default_factory=list)


class Worker:
    """One driftline worker process; run several with the same group to scale out."""

    def __init__(self, config: DriftlineConfig, worker_id: str = "0",
                 on_batch: Callable[[BatchOutcome], None] | None = None) -> None:
        self.config = config
        self.worker_id = worker_id
        self._on_batch = on_batch
        k = config.kafka
        self._inference_topics = {t.name for t in k.inference_topics}
        self._label_topics = {t.name for t in k.label_topics}
        self._registry_topic = k.registry_topic
        self._topic_index = {name: i for i, name in enumerate(
            [t.name for t in k.inference_topics] + [t.name for t in k.label_topics]
            + ([k.registry_topic] if k.registry_topic else []))}
        self._internal = k.internal_topic
        self._partitions = k.internal_partitions
        self._models = {m.name: m for m in config.monitor.models}
        self._decoders = build_decoders(config)
        self._registry_max_age = config.registry.max_age_seconds if config.registry else None
        self._digest_headers = {name: dec.digest_header for name, dec in self._decoders.items()
                                if getattr(dec, "digest_header", None)}
        try:
            self._registry_keys = load_public_keys(config.registry.public_keys) if config.registry else {}
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        self._store = StateStore(redis_client(config.redis), config.redis.key_prefix, k.group_id,
                                 owner=f"{k.group_id}-{worker_id}-{uuid.uuid4().hex[:12]}",
                                 pending_ttl_seconds=config.redis.pending_ttl_seconds,
                                 max_pending=config.redis.max_pending_predictions)
        self._label_scope = {t.name: frozenset(t.models) if t.models else None for t in k.label_topics}
        scopes = list(self._label_scope.values())
        # models whose predictions some label topic joins (None: every model)
        self._joined: frozenset[str] | None = (None if any(s is None for s in scopes)
                                               else frozenset().union(*scopes))
        self._max_future = {t.name: t.max_future_seconds for t in list(k.inference_topics) + list(k.label_topics)}
        self._monitors: dict[str, ModelMonitor] = {}
        self._owned: set[int] = set()
        self._signing_key = signing_key(config.signing)
        self.metrics = WorkerMetrics(config.metrics)
        self._scrapes = self.metrics.scrapes = ScrapeRequests()  # answered by _export_stats
        self._stop = threading.Event()
        self.ready = threading.Event()
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self._last_lag = 0.0
        self._last_idle_commit = 0.0
        self._label_wait = config.redis.label_wait_seconds
        self._waiting_since: dict[tuple[str, int], float] = {}  # label partition -> monotonic start of its wait
        # label partition stopped at a label waiting for its prediction -> (offset, the label's time);
        # the partition is paused until the inference frontier passes that time or the wait ends
        self._paused: dict[tuple[str, int], tuple[int, float]] = {}
        self._routed_until: dict[str, float] = {}  # "topic:partition" -> newest routed inference timestamp
        self._last_clock = 0.0
        self._inference_partitions: list[str] = []
        self._last_metadata = float("-inf")
        self._needs_rewind = False
        self._unsettled: list[TopicPartition] | None = None
        self._beat = time.monotonic()  # start of the main loop's current iteration
        self._offsets: dict[int, int | None] = {}  # owned internal partition -> committed offset in Redis
        self._staging: dict[int, int] = {}  # internal partition -> offset staged by the open batch
        # state snapshots (see _detect): models changed since their partition's last snapshot, the
        # next offset the in-memory state has processed (committed in Kafka), the last snapshot's time
        self._snapshot_interval = config.redis.snapshot_interval_seconds
        self._stats_interval = config.metrics.stats_interval_seconds
        self._stats_pending: set[str] = set()  # models touched since their statistics were last exported
        self._stats_exported = float("-inf")
        self._dirty: dict[int, set[str]] = {}
        self._processed: dict[int, int] = {}
        self._batch_positions: dict[int, int] = {}
        self._last_snapshot: dict[int, float] = {}
        self._redis_id = ""  # Redis run_id when state was last known complete there
        self._last_redis_check = float("-inf")
        self._recent: deque[tuple[float, PendingBatch]] = deque()  # (time, a routed batch's predictions)
        # the label join's write of a batch's predictions runs while the batch's records are detected
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="driftline-remember")
        self._remembering: Future[int] | None = None
        # blocking client calls return (and are repeated, see _complete) well before the watchdog
        # judges the batch stalled: a broker restart is waited out, not taken for a hang
        self._call_timeout = min(30.0, k.stall_timeout_seconds / 3)
        # short internal records held back to be detected in longer runs (uncommitted until detected)
        self._hold = DetectionHold(k.detect_hold_ms / 1000, k.batch_max_bytes,
                                   caught_up_seconds=k.detect_hold_caught_up_ms / 1000)
        self._revocations = 0  # partitions revoked or lost so far: a batch fetched across one is stale
        self._unknown_metadata = False  # said once: group metadata in a format GroupMembership does not know

    # -- lifecycle ----------------------------------------------------------------------
    def ensure_topics(self) -> None:
        """Create driftline's own topics if missing (the team's input topics are theirs)."""
        k = self.config.kafka
        admin = AdminClient(consumer_settings(self.config, group=False))
        wanted = [NewTopic(self._internal, num_partitions=self._partitions, replication_factor=k.replication_factor),
                  NewTopic(k.control_topic, num_partitions=k.control_partitions, replication_factor=k.replication_factor),
                  NewTopic(k.dead_letter_topic, num_partitions=1, replication_factor=k.replication_factor)]
        if k.registry_topic:  # one partition: one order of releases
            wanted.append(NewTopic(k.registry_topic, num_partitions=1, replication_factor=k.replication_factor))
        existing = set(admin.list_topics(timeout=30).topics)
        missing = [t for t in wanted if t.topic not in existing]
        for topic, fut in admin.create_topics(missing).items() if missing else []:
            try:
                fut.result(timeout=30)
            except KafkaException as exc:
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise
        deadline = time.monotonic() + 30
        while True:  # a topic created a moment ago may have no partitions in the metadata yet
            meta = admin.list_topics(self._internal, timeout=30).topics[self._internal]
            if (meta.partitions and meta.error is None) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        if len(meta.partitions) != self._partitions:
            raise RuntimeError(
                f"kafka.internal_partitions is {self._partitions} but topic {self._internal!r} has "
                f"{len(meta.partitions)} partitions; they must match (model ownership depends on it)")

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        """Consume until stopped; every batch is committed exactly once."""
        self.ensure_topics()
        settings = producer_settings(self.config, transactional_id=f"{self.config.kafka.group_id}-{self.worker_id}")
        settings.setdefault("transaction.timeout.ms", 30_000)
        producer = Producer(settings)
        producer.init_transactions(30)
        settings = consumer_settings(self.config)
        settings.setdefault("topic.metadata.refresh.interval.ms", 10_000)  # notice input topics created later
        consumer = Consumer(settings)
        self._consumer, self._producer = consumer, producer
        topics = sorted(self._inference_topics | self._label_topics) + [self._internal]
        if self._registry_topic:
            topics.append(self._registry_topic)
        consumer.subscribe(topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_revoke)
        k = self.config.kafka
        timeout = k.batch_timeout_ms / 1000
        # the largest message a batch may hold short of the oversized ones: an input topic's limit or
        # an internal batch record
        unit = max(k.largest_message_bytes, MAX_RECORD_BYTES)
        failures = 0
        threading.Thread(target=self._watchdog, args=(k.stall_timeout_seconds,), name="driftline-watchdog",
                         daemon=True).start()
        try:
            while not self._stop.is_set():
                self._beat = time.monotonic()
                try:
                    if self._needs_rewind:
                        self._abort_and_rewind()
                    self._resume_waiting_labels()
                    revocations = self._revocations
                    msgs, full = gather(consumer.consume, k.batch_size, k.batch_max_bytes, unit, timeout)
                    if msgs or self._hold:
                        metadata = consumer.consumer_group_metadata()
                        stale = self._stale(revocations, metadata)
                        if stale:
                            self._refetch(len(msgs), stale)
                        else:
                            self._process(msgs, metadata, backlog=full)
                    else:
                        self._export_stats(idle=True)
                        self._snapshot_safely([p for p, dirty in self._dirty.items() if dirty])
                        self._commit_idle_positions()
                        self._publish_inference_clock()
                        if time.monotonic() - self._last_redis_check >= 1.0:
                            self._check_redis()
                    self._update_lag()
                    failures = 0
                except (KafkaException, redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError,
                        redis.ReadOnlyError) as exc:
                    if isinstance(exc, KafkaException) and exc.args and getattr(exc.args[0], "fatal", bool)():
                        raise
                    failures += 1
                    delay = min(30.0, 0.25 * 2 ** min(failures, 8))
                    kind = "kafka" if isinstance(exc, KafkaException) else "redis"
                    self.metrics.retry(kind)
                    log.warning("transient %s error (attempt %d), rewinding and retrying in %.1f s: %s",
                                kind, failures, delay, exc)
                    self._needs_rewind = True
                    self._beat = time.monotonic() + delay  # the backoff is not a stall
                    self._stop.wait(delay)
                    continue
                if not self.ready.is_set() and consumer.assignment():
                    self.ready.set()
                    self.metrics.set_ready(True)
        finally:
            self.metrics.set_ready(False)
            if not self._needs_rewind:
                self._snapshot_safely(list(self._owned))
            consumer.close()
            producer.flush(10)
            self._settle_remembering()  # the writer thread itself idles until the interpreter exits

    def _watchdog(self, limit: float) -> None:
        """Exit the process when one loop iteration has blocked for ``limit`` seconds.

        A client call can hang past its own timeout (librdkafka's ``send_offsets_to_transaction``
        after a broker restart); the open transaction is then fenced by the restarted worker, so
        exiting loses nothing, while hanging would stall the worker's partitions for good.
        """
        while not self._stop.wait(1.0):
            stalled = time.monotonic() - self._beat
            if stalled > limit:
                log.critical("worker %s: one batch has blocked for %.0fs (a hung Kafka or Redis call); exiting "
                             "so that it is restarted", self.worker_id, stalled)
                faulthandler.dump_traceback(all_threads=True)
                logging.shutdown()
                os._exit(75)

    # -- rebalance ----------------------------------------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Rebalance callback: claim, settle and load the newly assigned internal partitions.

        When Redis or Kafka fails half-way, the assignment is kept and finished by the retry loop.
        """
        self._unsettled = list(partitions)
        self._settle(consumer, partitions, claim=True)
        self._unsettled = None

    def _settle(self, consumer: Consumer, partitions: list[TopicPartition], claim: bool) -> None:
        """Restore and load internal partitions' state and assign them (``claim=False``: a rewind).

        After a Redis restart noticed here (a batch failed on it and rewinds), the predictions Redis
        may have lost are remembered again, as :meth:`_check_redis` does: the recently routed ones,
        and those of every internal record after each partition's snapshot.
        """
        internal = [tp for tp in partitions if tp.topic == self._internal]
        current = self._store.server_id()
        restarted = bool(self._redis_id) and current != self._redis_id
        self._beat = time.monotonic()  # each blocking call below is bounded by the call timeout
        committed = ({tp.partition: tp.offset for tp in consumer.committed(internal, timeout=self._call_timeout)}
                     if internal else {})
        lost = []
        for tp in internal:
            kc = committed.get(tp.partition)
            kc = kc if kc is not None and kc >= 0 else None
            part = PartitionKey(tp.topic, tp.partition)
            try:
                offset = self._store.restore(part, kc, claim=claim)
            except OwnershipLost:
                lost.append(tp)  # another worker took it while this one stalled: wait for the revocation
                continue
            self._load_partition(tp.partition)
            if kc is not None and (offset is None or offset < kc):
                offset = self._catch_up(part, offset, kc)
            elif restarted and offset is not None:
                self._catch_up(part, offset, offset)  # nothing to re-run; predictions to remember again
            self._offsets[tp.partition] = offset
            self._mark_saved(tp.partition, offset)
            tp.offset = offset if offset is not None else OFFSET_BEGINNING
        if restarted:
            recent = self._remember_recent()
            log.warning("worker %s: Redis restarted (run_id %s -> %s); remembered %d recent predictions again",
                        self.worker_id, self._redis_id, current, recent)
        self._redis_id = current
        keep = [tp for tp in partitions if tp not in lost]
        self._release_paused(consumer)
        consumer.assign(keep)
        if lost:
            log.warning("worker %s lost internal partitions %s to another worker", self.worker_id,
                        sorted(tp.partition for tp in lost))
        log.info("worker %s owns internal partitions %s", self.worker_id, sorted(self._owned))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._revocations += 1
        self._unsettled = None
        self._release_paused(consumer)
        if not self._needs_rewind:  # hand the partitions over with current state: a shorter catch-up
            self._snapshot_safely([tp.partition for tp in partitions if tp.topic == self._internal])
        for tp in partitions:
            if tp.topic == self._internal:
                self._owned.discard(tp.partition)
                self._offsets.pop(tp.partition, None)
                self._dirty.pop(tp.partition, None)
                self._processed.pop(tp.partition, None)
                for name in [m for m in self._monitors if partition_for(m, self._partitions) == tp.partition]:
                    del self._monitors[name]
        consumer.unassign()

    def _load_partition(self, partition: int) -> None:
        names = [m for m in self._models if partition_for(m, self._partitions) == partition]
        blobs = self._store.load_models(names)
        for name in names:
            self._monitors[name] = self._new_monitor(name, blobs.get(name))
        self._owned.add(partition)

    def _catch_up(self, part: PartitionKey, start: int | None, until: int) -> int:
        """Rebuild state Redis lost: Kafka committed the internal records up to ``until``, Redis's
        state stops at ``start``. Re-run those records from the older state publishing nothing
        (their output was committed with them), store the result as committed at ``until``, and
        remember again the predictions of every record from ``start`` on (lost with the state).
        """
        started = time.monotonic()
        settings = consumer_settings(self.config, group=False)
        settings.update(fetch_settings(self.config))
        settings.update({"group.id": f"{self.config.kafka.group_id}-catch-up", "enable.auto.commit": False,
                         "isolation.level": "read_committed", "enable.partition.eof": True,
                         "auto.offset.reset": "earliest"})
        consumer = Consumer(settings)
        records: list[tuple[str, str, list, list]] = []
        pending: list[tuple[str, InferenceEvent]] = []
        try:
            consumer.assign([TopicPartition(part.topic, part.partition,
                                            start if start is not None else OFFSET_BEGINNING)])
            # a long catch-up is fine while records arrive; none for a call timeout (the broker is
            # restarting) is a transient error: the batch loop rewinds and retries with backoff
            patience = self._call_timeout
            deadline = time.monotonic() + patience
            at_end = False
            while not at_end:
                if time.monotonic() > deadline:
                    raise KafkaException(KafkaError(KafkaError._TIMED_OUT, f"catching up {part.topic}"
                                                    f"[{part.partition}] to {until}: no record for {patience:.0f} s",
                                                    retriable=True))
                self._beat = time.monotonic()
                msgs = consumer.consume(5000, 0.1)  # returns at 5000 records or the timeout: keep it short
                if msgs:
                    deadline = time.monotonic() + patience
                for msg in msgs:
                    err = msg.error()
                    if err is not None:
                        if err.code() != KafkaError._PARTITION_EOF:
                            raise KafkaException(err)
                        at_end = True
                        continue
                    try:
                        batch = decode_batch(msg.value())
                    except RecordError:
                        continue
                    if batch.kind == "i" and self._remembers(batch.model):
                        pending.extend((e.event_id, e) for e in batch.items)
                    if msg.offset() < until:
                        records.append((batch.model, batch.kind, batch.items, []))
        finally:
            consumer.close()
        touched: dict[str, ModelMonitor] = {}
        done: dict[str, list[tuple[str, list]]] = defaultdict(list)
        for model, kind, batch, _ in model_runs(records):
            monitor = self._monitors.get(model)
            if monitor is None:
                continue
            if kind == "r":
                entries = self._verified(model, batch)
                monitor.apply_registry(entries, self._registry_max_age)
                done[model].append((kind, entries))
                touched[model] = monitor
                continue
            try:  # output committed before: discarded
                monitor.process_inference(batch) if kind == "i" else monitor.process_labels(batch)
            except Exception:  # noqa: BLE001 - a record isolated when first processed: leave it out again
                monitor, _, batch = self._isolate(model, done[model], kind, batch, None, None)
            done[model].append((kind, batch))
            touched[model] = monitor
        self.metrics.pending_dropped(self._store.remember_predictions(pending, self.config.redis.pending_ttl_seconds))
        self._store.write_committed(part, until, {name: mon.to_bytes() for name, mon in touched.items()})
        log.warning("worker %s: Redis held %s[%d] up to offset %s, Kafka up to %d: re-ran %d records without "
                    "output, remembered %d predictions again in %.2f s", self.worker_id, part.topic, part.partition,
                    start, until, sum(len(r[2]) for r in records), len(pending), time.monotonic() - started)
        return until

    def _check_redis(self) -> None:
        """Notice a restarted Redis (it may have lost its last writes) and rewrite what this worker holds.

        After a committed batch the owned monitors are exactly the committed state, so writing them
        (with each partition's committed offset) restores whatever the restart lost; predictions
        routed in the last seconds are remembered again for the label join.
        """
        self._last_redis_check = time.monotonic()
        current = self._store.server_id()
        if current == self._redis_id:
            return
        for partition in sorted(self._owned):
            offset = self._processed.get(partition, self._offsets.get(partition))
            if offset is None:
                continue
            states = {name: mon.to_bytes() for name, mon in self._monitors.items()
                      if partition_for(name, self._partitions) == partition and (mon.events or mon.labels)}
            try:
                self._store.write_committed(PartitionKey(self._internal, partition), offset, states)
            except OwnershipLost:
                continue  # another worker claimed it; the revocation follows
            self._offsets[partition] = offset
            self._mark_saved(partition, offset)
        recent = self._remember_recent()
        log.warning("worker %s: Redis restarted (run_id %s -> %s); rewrote the state of partitions %s and %d "
                    "recent predictions", self.worker_id, self._redis_id or "?", current, sorted(self._owned), recent)
        self._redis_id = current

    def _remember_recent(self) -> int:
        """Write the predictions routed in the last seconds again (Redis may have lost them)."""
        ttl = self.config.redis.pending_ttl_seconds
        self.metrics.pending_dropped(sum(self._store.remember_batch(batch, ttl) for _, batch in self._recent))
        return sum(batch.count for _, batch in self._recent)

    def _remembers(self, model: str) -> bool:
        """Whether the label join needs this model's predictions (some label topic joins it)."""
        return bool(self._label_topics) and (self._joined is None or model in self._joined)

    def _new_monitor(self, name: str, blob: bytes | None) -> ModelMonitor:
        """The model's monitor from its committed state, or fresh (no state, or state this
        configuration cannot use: a changed feature list or calibration, or a damaged blob)."""
        mon = self.config.monitor
        spec = self._models[name]
        registry = self.config.registry is not None
        if blob is not None:
            try:
                monitor = ModelMonitor.from_bytes(spec, mon.calibration, mon.alerts, blob, mon.max_tracked_versions,
                                                  registry)
            except StateFormatError as exc:
                reason = "spec_changed" if "different model spec" in str(exc) else "unreadable"
                log.warning("model %s: committed state not usable (%s); starting from a fresh reference", name, exc)
                self.metrics.state_rebuilt(name, reason)
            else:
                limit = time.time() + max((v for v in self._max_future.values() if v is not None), default=300.0)
                if monitor.clamp_clock(limit):
                    log.warning("model %s: event clock was ahead of the wall clock; clamped", name)
                    self.metrics.state_rebuilt(name, "clock_clamped")
                return monitor
        monitor = ModelMonitor(spec, mon.calibration, mon.alerts, mon.max_tracked_versions, registry)
        if spec.reference_file:
            try:
                doc = orjson.loads(Path(spec.reference_file).read_bytes())
                monitor.set_reference(ReferenceProfile.from_dict(spec, doc))
            except (OSError, orjson.JSONDecodeError, ProfileFormatError) as exc:
                # the file changed since start-up: learn the reference from traffic rather than stop
                log.error("model %s: reference file %s unusable (%s); learning a reference from traffic",
                          name, spec.reference_file, exc)
                self.metrics.state_rebuilt(name, "reference_unreadable")
        return monitor

    # -- processing ---------------------------------------------------------------------
    def _stale(self, revocations: int, metadata: bytes) -> str | None:
        """Why a batch just gathered must not be processed (``None``: it may be).

        ``revoked``: partitions were revoked or lost while it was gathered, so some of its messages
        may belong to another worker now (librdkafka returns what it fetched before the revocation
        together with what came after). ``no_member``: the consumer had no membership when the batch
        ended, so its offsets would commit unfenced (:mod:`stream.membership`).
        """
        if self._revocations != revocations:
            return "revoked"
        return None if self._member(metadata) else "no_member"

    def _member(self, metadata: bytes) -> bool:
        """Whether offsets committed with ``metadata`` are fenced by the group (it names a member)."""
        membership = GroupMembership.from_metadata(metadata)
        if membership is None:
            if not self._unknown_metadata:
                self._unknown_metadata = True
                log.warning("worker %s: the consumer's group metadata has a format this version does not read; "
                            "batches are committed without checking the membership they were fetched under",
                            self.worker_id)
            return True
        return membership.active

    def _refetch(self, count: int, reason: str) -> None:
        """Drop a stale batch unprocessed; what is still assigned is read again from its committed offsets."""
        consumer = self._consumer
        assert consumer is not None
        self.metrics.refetched(reason)
        log.info("worker %s: dropped a batch of %d messages fetched across a rebalance (%s); reading the "
                 "assigned partitions again from their committed offsets", self.worker_id, count, reason)
        if consumer.assignment():
            self._rewind()  # no transaction is open: nothing to abort; settling forgets held records

    def _process(self, msgs: list[Message], metadata: bytes, backlog: bool = False) -> None:
        """Run one micro-batch as one Kafka transaction, its offsets committed with ``metadata`` (the
        group membership it was fetched under); ``backlog``: the batch came back full (more input is
        waiting), so internal records may be held back (:class:`DetectionHold`)."""
        started = time.perf_counter()
        producer = self._producer
        assert producer is not None and self._consumer is not None
        outcome = BatchOutcome()
        self._needs_rewind = True  # until the transaction commits
        producer.begin_transaction()
        try:
            raw_inference, raw_labels, internal, positions = self._split(msgs)
            internal = self._due(internal, positions, backlog)
            self._route_inference(raw_inference, outcome)  # starts writing the predictions to Redis
            # the internal records were routed by earlier batches: detecting them does not wait for the write
            staged = self._detect(internal, positions, outcome)
            stopped = self._route_labels(raw_labels, outcome)  # waits for the write first
            for (topic, partition), (offset, _) in stopped.items():
                positions[(topic, partition)] = offset
                self._consumer.seek(TopicPartition(topic, partition, offset))
            offsets = [TopicPartition(t, p, o) for (t, p), o in positions.items()]
            self._complete(lambda: producer.send_offsets_to_transaction(offsets, metadata, self._call_timeout))
            checkpoint_started = time.perf_counter()
            self._complete(lambda: producer.commit_transaction(self._call_timeout))
        except OwnershipLost as exc:
            log.warning("batch dropped: %s", exc)  # the revocation follows; the new owner redoes it
            return
        except StateLostError as err:
            log.warning("worker %s: %s; rebuilding state from the internal topic", self.worker_id, err)
            self._settle_remembering()
            self._abort_and_rewind()
            self._remember_recent()
            return
        except _SnapshotBehind as err:
            log.warning("worker %s: %s; bringing its snapshot up to date and redoing the batch", self.worker_id, err)
            self._settle_remembering()
            self._abort_and_rewind()  # the catch-up on settling writes the partition's state as committed
            return
        finally:
            self._settle_remembering()
        self._needs_rewind = False
        if stopped:  # no refetching of a waiting label partition batch after batch
            self._consumer.pause([TopicPartition(t, p) for t, p in stopped])
            self._paused.update(stopped)
        try:
            self._committed(staged, outcome, started, checkpoint_started)
        except OwnershipLost as exc:
            log.warning("state not promoted: %s", exc)

    def _due(self, internal: dict[int, list[Message]], positions: dict[tuple[str, int], int],
             backlog: bool) -> dict[int, list[Message]]:
        """The internal records to detect in this batch (the hold's due partitions); a held
        partition's position stays out of the transaction, a released one's follows its last record."""
        due = self._hold.take(internal, backlog, time.monotonic())
        self.metrics.held_records.set(self._hold.records)
        for partition in self._hold.partitions:
            positions.pop((self._internal, partition), None)
        for partition, msgs in due.items():
            positions[(self._internal, partition)] = msgs[-1].offset() + 1
        return due

    def _split(self, msgs: list[Message]):
        """Sort a batch by source: (raw inference, raw labels, internal by partition, next offsets).

        Registry messages lead the raw inference list: a release announced in a batch is routed
        ahead of that batch's traffic.
        """
        raw_inference: list[Message] = []
        raw_registry: list[Message] = []
        raw_labels: list[Message] = []
        internal: dict[int, list[Message]] = defaultdict(list)
        positions: dict[tuple[str, int], int] = {}
        for msg in msgs:
            if msg.error():
                log.warning("consumer error: %s", msg.error())
                continue
            topic = msg.topic()
            positions[(topic, msg.partition())] = msg.offset() + 1
            if topic == self._internal:
                internal[msg.partition()].append(msg)
            elif topic in self._inference_topics:
                raw_inference.append(msg)
            elif topic == self._registry_topic:
                raw_registry.append(msg)
            else:
                raw_labels.append(msg)
        return raw_registry + raw_inference if raw_registry else raw_inference, raw_labels, internal, positions

    def _committed(self, staged: list[PartitionKey], outcome: BatchOutcome, started: float,
                   checkpoint_started: float) -> None:
        """After a batch's Kafka transaction committed: promote its state, share the clock, count it."""
        for partition, offset in self._batch_positions.items():
            self._processed[partition] = offset
        for part in staged:
            self._store.promote(part)
            self._offsets[part.partition] = self._staging.pop(part.partition)
            self._mark_saved(part.partition, self._offsets[part.partition])
        self._check_redis()
        self._publish_inference_clock()
        self.metrics.observe_checkpoint(time.perf_counter() - checkpoint_started)
        self.metrics.observe_batch(time.perf_counter() - started, outcome)
        if self._on_batch is not None:
            self._on_batch(outcome)

    def _commit_idle_positions(self) -> None:
        """When idle, commit positions that moved past transaction markers, so lag reads zero."""
        now = time.monotonic()
        if now - self._last_idle_commit < 1.0:
            return
        self._last_idle_commit = now
        consumer, producer = self._consumer, self._producer
        assignment = consumer.assignment()
        if not assignment:
            return
        positions = {(tp.topic, tp.partition): tp.offset for tp in consumer.position(assignment) if tp.offset >= 0}
        committed = {(tp.topic, tp.partition): tp.offset for tp in consumer.committed(assignment, timeout=10)}
        moved = [TopicPartition(t, p, o) for (t, p), o in positions.items() if committed.get((t, p)) != o]
        metadata = consumer.consumer_group_metadata()
        if not moved or not self._member(metadata):
            return
        self._needs_rewind = True  # until the transaction commits
        producer.begin_transaction()
        self._complete(lambda: producer.send_offsets_to_transaction(moved, metadata, self._call_timeout))
        self._complete(lambda: producer.commit_transaction(self._call_timeout))
        self._needs_rewind = False

    def _complete(self, call: Callable[[], None]) -> None:
        """Run a transactional producer call, repeating it while it fails with a retriable error.

        A commit that timed out may have gone through: only repeating it tells. Aborting and
        rewinding instead would route the batch's records a second time. Errors that require an
        abort (or are fatal) are raised: the batch is then known not to have committed.
        """
        delay = 0.25
        while True:
            try:
                call()
                return
            except KafkaException as exc:
                err = exc.args[0] if exc.args else None
                if (err is None or not err.retriable() or err.fatal() or err.txn_requires_abort()
                        or self._stop.is_set()):
                    raise
                self.metrics.retry("kafka")
                log.warning("transaction call failed with a retriable error, repeating it in %.1f s: %s", delay, err)
                self._beat = time.monotonic() + delay  # failing calls that return are not a hang
                self._stop.wait(delay)
                delay = min(delay * 2, 10.0)

    def _route_inference(self, msgs: list[Message], outcome: BatchOutcome) -> None:
        """Validate raw events, remember predictions for the label join, re-publish them packed per model."""
        if self._registry_topic is not None and msgs and msgs[0].topic() == self._registry_topic:
            n = next((i for i, m in enumerate(msgs) if m.topic() != self._registry_topic), len(msgs))
            self._route_registry(msgs[:n], outcome)  # releases reach the partitions before this batch's events
            msgs = msgs[n:]
        headers = self._digest_headers
        by_model: dict[str, list[tuple[InferenceEvent, Message]]] = defaultdict(list)
        decoders, index, models = self._decoders, self._topic_index, self._models
        routed = self._routed_until
        for msg, event in zip(msgs, _decode_runs(msgs, decoders)):
            topic = msg.topic()
            if isinstance(event, Exception):
                self._refuse(msg, event, "inference", outcome)
                continue
            try:
                if headers and topic in headers:
                    event.artifact_digest = _header_digest(msg, headers[topic])
                if event.model not in models:
                    self.metrics.unknown_model(event.model)
                    self._dead_letter(msg, "unknown_model", f"model {event.model!r} is not configured", outcome)
                    continue
                event.position = source_position(index[topic], msg.partition(), msg.offset())
            except Exception as exc:  # noqa: BLE001 - whatever the bytes, the message ends as a dead letter
                self._refuse(msg, exc, "inference", outcome)
                continue
            clock_key = f"{topic}:{msg.partition()}"
            sent = _message_time(msg)
            if sent > routed.get(clock_key, float("-inf")):
                routed[clock_key] = sent
            by_model[event.model].append((event, msg))
        lines: list[tuple[str, bytes]] = []
        for model, pairs in by_model.items():
            events = self._publish(model, pairs, encode_inference_batch, outcome)
            outcome.events += len(events)
            if self._remembers(model):
                lines.extend(event_lines(events))
        pending = encode_pending(lines)
        now = time.monotonic()
        if pending.count:  # the batch's caller settles the write (_process, faust's _process_batch)
            self._remembering = self._writer.submit(self._store.remember_batch, pending,
                                                    self.config.redis.pending_ttl_seconds)
            self._recent.append((now, pending))
        while self._recent and self._recent[0][0] < now - self.config.redis.recent_predictions_seconds:
            self._recent.popleft()

    def _remembered(self) -> None:
        """Wait for the label join's write that :meth:`_route_inference` started (its error, if any, is raised)."""
        pending, self._remembering = self._remembering, None
        if pending is not None:
            self.metrics.pending_dropped(pending.result())

    def _settle_remembering(self) -> None:
        """Let a write still in flight after a failed batch finish (the batch is redone, and writing
        predictions again changes nothing); its error, if any, is the failed batch's."""
        pending, self._remembering = self._remembering, None
        if pending is not None:
            try:
                pending.result()
            except Exception:  # noqa: BLE001 - the batch that started it has failed already
                log.debug("the label join's write of a failed batch failed too", exc_info=True)

    def _route_registry(self, msgs: list[Message], outcome: BatchOutcome) -> None:
        """Verify registry events and re-publish them to their model's partition; dead-letter the rest."""
        max_future = self.config.registry.max_future_seconds
        for msg in msgs:
            doc = None
            try:
                doc = parse_event(msg.value())
                entry = verify_event(doc, self._registry_keys, max_future=max_future)
                if entry.model not in self._models:
                    raise RegistryError("registry_unknown_model", f"model {entry.model[:80]!r} is not configured")
            except RegistryError as err:
                model = doc.get("model") if isinstance(doc, dict) and isinstance(doc.get("model"), str) else "-"
                self.metrics.registry_event(model, err.reason)
                self._dead_letter(msg, err.reason, str(err), outcome)
                continue
            except Exception as exc:  # noqa: BLE001 - whatever the bytes, the message ends as a dead letter
                log.exception("registry message %s[%d]@%d could not be read", msg.topic(), msg.partition(),
                              msg.offset())
                self._dead_letter(msg, "undecodable", f"{type(exc).__name__}: {exc}", outcome)
                continue
            position = source_position(self._topic_index[msg.topic()], msg.partition(), msg.offset())
            self._producer.produce(self._internal, value=encode_registry(entry.model, position, doc),
                                   key=entry.model.encode(), partition=partition_for(entry.model, self._partitions))
            outcome.registry += 1

    def _verified(self, model: str, docs: list[dict]) -> list[RegistryEntry]:
        """The routed registry documents of ``model`` that verify (as :meth:`_registry_run` keeps them)."""
        out = []
        for doc in docs:
            try:
                entry = verify_event(doc, self._registry_keys, max_future=float("inf"))
            except RegistryError:
                continue
            if entry.model == model:
                out.append(entry)
        return out

    def _registry_run(self, model: str, monitor: ModelMonitor, docs: list[dict], sources: list[Message],
                      outcome: BatchOutcome) -> list[RegistryEntry]:
        """Verify routed registry documents again and apply them to the model's manifest, in order.

        Returns the verified entries (what a rebuild of this batch re-applies); refusals (replayed,
        stale, ...) and records that do not verify are dead-lettered with their reason.
        """
        entries: list[RegistryEntry] = []
        kept: list[Message] = []
        for doc, msg in zip(docs, sources):
            try:
                entry = verify_event(doc, self._registry_keys, max_future=float("inf"))  # bounded when routed
                if entry.model != model:
                    raise RegistryError("registry_wrong_model", f"record for {model!r} announces {entry.model!r}")
            except RegistryError as err:
                self._dead_letter(msg, "bad_internal_record", f"registry record: {err}", outcome)
                continue
            entries.append(entry)
            kept.append(msg)
        results = monitor.apply_registry(entries, self._registry_max_age)
        for entry, msg, reason in zip(entries, kept, results):
            self.metrics.registry_event(model, reason or "accepted")
            if reason is None:
                log.info("model %s: registry %s %s %s (sequence %d, key %s)", model, entry.version, entry.stage,
                         entry.digest, entry.sequence, entry.key_id)
            else:
                self._dead_letter(msg, reason, f"{model} {entry.version} {entry.stage} sequence {entry.sequence} "
                                               f"refused: {reason}", outcome)
        return entries

    def _publish(self, model: str, pairs: list[tuple], encode: Callable[[list], list[bytes]],
                 outcome: BatchOutcome) -> list:
        """Produce one model's items as batch records on its internal partition; return the items sent.

        Items the framing cannot carry (none pass the decoders today) are dead-lettered one by one.
        """
        items = [item for item, _ in pairs]
        try:
            values = encode(items)
        except Exception:  # noqa: BLE001 - find the item that cannot be encoded
            values, items = [], []
            for item, msg in pairs:
                try:
                    values.extend(encode([item]))
                    items.append(item)
                except Exception as exc:  # noqa: BLE001
                    self._dead_letter(msg, "unencodable", f"{type(exc).__name__}: {exc}", outcome)
        key, partition = model.encode(), partition_for(model, self._partitions)
        for value in values:
            self._producer.produce(self._internal, value=value, key=key, partition=partition)
        return items

    def _route_labels(self, msgs: list[Message], outcome: BatchOutcome) -> dict[tuple[str, int], tuple[int, float]]:
        """Join labels with their predictions and re-publish them beside the model's events.

        A label whose prediction is not in Redis yet may simply have overtaken it (the label
        partition was fetched ahead of the inference partitions). While some inference partition
        has not been routed up to the label's timestamp, the label partition stops at that label
        (returned: partition -> (offset to resume from, the label's time)) for at most ``redis.label_wait_seconds``;
        otherwise the label is dead-lettered as unmatched. Nothing is stored on the side, so the
        wait costs no exactly-once bookkeeping.
        """
        self._remembered()  # this batch's predictions are in Redis before its labels look for them
        labels: list[tuple[Message, LabelEvent | None]] = []
        for msg, lab in zip(msgs, _decode_runs(msgs, self._decoders, labels=True)):
            if isinstance(lab, Exception):
                labels.append((msg, None))
                self._refuse(msg, lab, "label", outcome)
                continue
            try:
                lab.position = source_position(self._topic_index[msg.topic()], msg.partition(), msg.offset())
                labels.append((msg, lab))
            except Exception as exc:  # noqa: BLE001 - whatever the bytes, the message ends as a dead letter
                labels.append((msg, None))
                self._refuse(msg, exc, "label", outcome)
        found = self._store.lookup_predictions([lab.event_id for _, lab in labels if lab is not None])
        found_iter = iter(found)
        frontier: float | None = None
        by_model: dict[str, list[tuple[JoinedLabel, Message]]] = defaultdict(list)
        stopped: dict[tuple[str, int], tuple[int, float]] = {}
        seen: set[tuple[str, int]] = set()
        for msg, lab in labels:
            tp = (msg.topic(), msg.partition())
            if tp in stopped:
                if lab is not None:
                    next(found_iter)
                continue
            seen.add(tp)
            if lab is None:
                continue
            preds = next(found_iter)
            scope = self._label_scope.get(msg.topic())
            if scope is not None:
                preds = [p for p in preds if p.model in scope]
            if not preds:
                if frontier is None:
                    frontier = self._inference_frontier()
                started = self._waiting_since.setdefault(tp, time.monotonic())
                if frontier < _message_time(msg) and time.monotonic() - started < self._label_wait:
                    stopped[tp] = (msg.offset(), _message_time(msg))
                    continue
                self.metrics.late_label("unknown_or_expired")
                self._dead_letter(msg, "label_unmatched",
                                  f"no prediction for event {lab.event_id!r} within the join horizon", outcome)
                continue
            for pred in preds:  # every model that predicted this event gets its label
                joined = JoinedLabel(label=lab, model=pred.model, model_version=pred.model_version,
                                     deployment=pred.deployment, prediction=pred.prediction, predicted_ts=pred.ts)
                by_model[pred.model].append((joined, msg))
        for model, pairs in by_model.items():
            outcome.labels += len(self._publish(model, pairs, encode_label_batch, outcome))
        for tp in seen - stopped.keys():
            self._waiting_since.pop(tp, None)
        return stopped

    def _unpause_ready_labels(self) -> dict[tuple[str, int], int]:
        """Take out of the paused set the label partitions whose waiting label may now join (the
        inference frontier passed its time, or its wait is over: it is then dead-lettered as
        unmatched); returns each one's waiting offset."""
        if not self._paused:
            return {}
        frontier = self._inference_frontier()
        now = time.monotonic()
        ready = [tp for tp, (_, ts) in self._paused.items()
                 if frontier >= ts or now - self._waiting_since.get(tp, now) >= self._label_wait]
        return {tp: self._paused.pop(tp)[0] for tp in ready}

    def _resume_waiting_labels(self) -> None:
        """Resume the paused label partitions that :meth:`_unpause_ready_labels` releases, at their waiting label."""
        if self._consumer is None:
            return
        for (topic, partition), offset in self._unpause_ready_labels().items():
            tp = TopicPartition(topic, partition, offset)
            self._consumer.resume([tp])
            self._consumer.seek(tp)

    def _release_paused(self, consumer: Consumer) -> None:
        """Forget label waits across a rebalance or rewind (partitions restart from committed offsets)."""
        if self._paused:
            assigned = {(tp.topic, tp.partition) for tp in consumer.assignment()}
            held = [TopicPartition(t, p) for (t, p) in self._paused if (t, p) in assigned]
            if held:
                consumer.resume(held)
        self._paused.clear()
        self._hold.clear()  # held internal records are read again from the committed offsets

    def _inference_frontier(self) -> float:
        """Time up to which every inference partition has been routed, by any worker of the group."""
        now = time.monotonic()
        if now - self._last_metadata > 10.0:
            self._last_metadata = now
            meta = self._consumer.list_topics(timeout=10).topics
            self._inference_partitions = [f"{t}:{p}" for t in sorted(self._inference_topics) if t in meta
                                          for p in sorted(meta[t].partitions)]
        clocks = self._store.inference_clock()
        return min((clocks.get(k, float("-inf")) for k in self._inference_partitions), default=float("inf"))

    def _publish_inference_clock(self) -> None:
        """Share how far this worker's inference partitions are routed (see :meth:`_route_labels`).

        Committed batches report their newest message time; a partition read up to its end
        reports the current time, at most once a second, or at every call while a label partition
        waits (so that its label resumes as soon as the inference partitions are caught up).
        """
        clocks, self._routed_until = self._routed_until, {}
        now = time.monotonic()
        if (self._paused or now - self._last_clock >= 1.0) and self._consumer is not None:
            self._last_clock = now
            mine = [tp for tp in self._consumer.assignment() if tp.topic in self._inference_topics]
            for tp in self._consumer.position(mine) if mine else []:
                try:
                    # the watermarks of the last fetch response: a broker query here stalls the batch loop
                    low, high = self._consumer.get_watermark_offsets(tp, timeout=1, cached=True)
                except KafkaException:
                    continue
                if high < 0:
                    continue
                if tp.offset >= high or (tp.offset < 0 and high == low):
                    clocks[f"{tp.topic}:{tp.partition}"] = time.time()
        self._store.advance_inference_clock(clocks)

    def _detect(self, internal: dict[int, list[Message]], positions: dict[tuple[str, int], int],
                outcome: BatchOutcome) -> list[PartitionKey]:
        """Run the batch's internal records through their monitors; stage snapshots that are due.

        A partition's changed models are staged (and promoted once the transaction commits) when
        its last snapshot is ``redis.snapshot_interval_seconds`` old (0: every batch, as the faust
        runtime, which has no catch-up, sets it), when a record had to be isolated, or when a
        registry document was applied (``driftline registry show`` reads the committed manifest); otherwise
        Redis keeps the older snapshot, and whoever next loads the partition replays the internal
        records after it without output (``_catch_up``), so a snapshot per micro-batch is not needed
        for exactly-once output or identical state. The batch loop also saves changed models when
        the input pauses (idle), at shutdown and on revocation. A worker that keeps up with its
        input is not saved per batch either: with many models, every batch touches most of them.
        """
        staged: list[PartitionKey] = []
        control_topic = self.config.kafka.control_topic
        now = time.monotonic()
        self._batch_positions = {}
        for partition, msgs in internal.items():
            touched: dict[str, ModelMonitor] = {}
            done: dict[str, list[tuple[str, list]]] = defaultdict(list)
            dirty = self._dirty.setdefault(partition, set())
            isolated = released = False
            runs = self._ordered_runs(msgs, outcome)
            for model, kind, items, sources in runs:
                monitor = self._monitors.get(model)
                if monitor is None:
                    continue
                if kind == "r":
                    done[model].append((kind, self._registry_run(model, monitor, items, sources, outcome)))
                    touched[model] = monitor
                    released = True
                    continue
                try:
                    produced = monitor.process_inference(items) if kind == "i" else monitor.process_labels(items)
                except Exception:  # noqa: BLE001 - a record the core cannot take must not stop the worker
                    if model in dirty:  # Redis does not hold this model's state before the batch
                        raise _SnapshotBehind(f"model {model}: a record failed and its snapshot is older than "
                                              f"the batch") from None
                    log.exception("model %s: detection failed on a run of %d records; isolating", model, len(items))
                    monitor, produced, items = self._isolate(model, done[model], kind, items, sources, outcome)
                    isolated = True
                done[model].append((kind, items))
                touched[model] = monitor
                self.metrics.processed(model, kind, len(items))
                for message in produced:
                    doc = message.to_dict()
                    if doc.get("kind") == "rollback":
                        doc = sign(doc, self._signing_key)
                    self._producer.produce(control_topic, value=orjson.dumps(doc), key=model.encode())
                    self.metrics.control_message(doc)
                    outcome.control_messages.append(doc)
            offset = positions[(self._internal, partition)]
            self._batch_positions[partition] = offset
            dirty.update(touched)
            if (isolated or released or self._snapshot_interval <= 0
                    or now - self._last_snapshot.get(partition, float("-inf")) >= self._snapshot_interval):
                part = PartitionKey(self._internal, partition)
                self._store.stage(part, offset, {name: self._monitors[name].to_bytes() for name in sorted(dirty)
                                                 if name in self._monitors},
                                  expect_committed=self._offsets.get(partition, ANY_OFFSET))
                self._staging[partition] = offset
                staged.append(part)
            self._stats_pending.update(touched)
        self._export_stats()
        return staged

    def _export_stats(self, idle: bool = False) -> None:
        """Mirror the statistics of the models touched since the last export when a scrape waits
        for them (:class:`~stream.metrics.ScrapeRequests`), at once when ``idle``, and otherwise at
        most every ``metrics.stats_interval_seconds``: one ``ModelMonitor.stats`` and its gauges
        cost about what detecting a dozen events does, per model and export."""
        now = time.monotonic()
        ticket = self._scrapes.waiting()  # taken before the export: later scrapes wait for the next one
        if self._stats_pending and (idle or ticket or now - self._stats_exported >= self._stats_interval):
            for name in sorted(self._stats_pending):
                monitor = self._monitors.get(name)
                if monitor is not None:
                    self.metrics.export_model_stats(name, monitor.stats)
            self._stats_pending.clear()
            self._stats_exported = now
        if ticket:  # exported now, or nothing touched since the last export
            self._scrapes.answer(ticket)

    def _mark_saved(self, partition: int, offset: int | None) -> None:
        """Redis now holds the partition's state as of ``offset`` (the in-memory state)."""
        self._dirty[partition] = set()
        if offset is not None:
            self._processed[partition] = offset
        self._last_snapshot[partition] = time.monotonic()

    def _snapshot(self, partitions: list[int]) -> None:
        """Write the changed models of committed batches as the partitions' committed state (owner only)."""
        for partition in partitions:
            dirty, offset = self._dirty.get(partition), self._processed.get(partition)
            if not dirty or offset is None or partition not in self._owned:
                continue
            self._store.write_committed(PartitionKey(self._internal, partition), offset,
                                        {name: self._monitors[name].to_bytes() for name in sorted(dirty)
                                         if name in self._monitors})
            self._offsets[partition] = offset
            self._mark_saved(partition, offset)

    def _snapshot_safely(self, partitions: list[int]) -> None:
        """:meth:`_snapshot` where failing only means a longer catch-up later (stop, revocation)."""
        try:
            self._snapshot(partitions)
        except (OwnershipLost, redis.RedisError) as exc:
            log.warning("worker %s: state snapshot skipped (%s); the next owner replays from the last one",
                        self.worker_id, exc)

    def _isolate(self, model: str, done: list[tuple[str, list]], kind: str, items: list,
                 sources: list[Message] | None, outcome: BatchOutcome | None) -> tuple[ModelMonitor, list, list]:
        """Redo a failed run record by record from the model's committed state; dead-letter what fails.

        The monitor is rebuilt from Redis (the state before this batch) and this batch's earlier
        runs of the model are replayed without output (their messages are already in the
        transaction); results do not depend on batch cuts, so the outcome is what an unbroken
        run would have given without the bad records. Without ``sources`` (a catch-up re-running
        records whose dead letters were published when they first failed) nothing is published.
        """
        monitor = self._new_monitor(model, self._store.load_model(model))
        for k, its in done:
            if k == "r":
                monitor.apply_registry(its, self._registry_max_age)
            else:
                monitor.process_inference(its) if k == "i" else monitor.process_labels(its)
        produced: list = []
        kept: list = []
        process = monitor.process_inference if kind == "i" else monitor.process_labels
        for i, item in enumerate(items):
            before = monitor.to_bytes()
            try:
                produced.extend(process([item]))
                kept.append(item)
            except Exception as exc:  # noqa: BLE001
                monitor = self._new_monitor(model, before)
                process = monitor.process_inference if kind == "i" else monitor.process_labels
                if sources is None or outcome is None:
                    continue
                try:  # the one event of the batch record, in the single-event format
                    payload = encode_inference(item) if kind == "i" else encode_label(item)
                except Exception:  # noqa: BLE001
                    payload = None
                self._dead_letter(sources[i], "processing_error", f"{type(exc).__name__}: {exc}", outcome, payload)
        self._monitors[model] = monitor
        return monitor, produced, kept

    def _ordered_runs(self, msgs: list[Message], outcome: BatchOutcome):
        """A partition's records decoded and grouped into per-model runs (:func:`model_runs`)."""
        records: list[tuple[str, str, list, list[Message]]] = []
        for msg in msgs:
            try:
                batch = decode_batch(msg.value())
            except RecordError as err:
                self._dead_letter(msg, "bad_internal_record", str(err), outcome)
                continue
            except Exception as exc:  # noqa: BLE001 - whatever the bytes, the record ends as a dead letter
                self._dead_letter(msg, "bad_internal_record", f"{type(exc).__name__}: {exc}", outcome)
                continue
            records.append((batch.model, batch.kind, batch.items, [msg] * len(batch.items)))
        return model_runs(records)

    def _refuse(self, msg: Message, exc: Exception, what: str, outcome: BatchOutcome) -> None:
        """Dead-letter a message that could not become an event: a :class:`DecodeError` under its
        reason, anything else (logged with its traceback) as ``undecodable``."""
        if isinstance(exc, DecodeError):
            self._dead_letter(msg, exc.reason, str(exc), outcome)
            return
        log.error("%s message %s[%d]@%d could not be decoded", what, msg.topic(), msg.partition(), msg.offset(),
                  exc_info=exc)
        self._dead_letter(msg, "undecodable", f"{type(exc).__name__}: {exc}", outcome)

    def _dead_letter(self, msg: Message, reason: str, detail: str, outcome: BatchOutcome,
                     payload: bytes | None = None) -> None:
        """Publish a rejected message (or ``payload``, one event of a batch record) with its reason."""
        value = payload if payload is not None else (msg.value() or b"")
        limit = self.config.kafka.dead_letter_max_bytes
        record = {
            "schema": "driftline.deadletter/v1", "reason": reason, "detail": detail[:500],
            "topic": msg.topic(), "partition": msg.partition(), "offset": msg.offset(),
            "payload": value[:limit].decode("utf-8", "replace"), "truncated": len(value) > limit,
        }
        self._producer.produce(self.config.kafka.dead_letter_topic, value=orjson.dumps(record),
                               key=f"{msg.topic()}:{msg.partition()}:{msg.offset()}".encode())
        self.metrics.dead_letter(reason)
        outcome.dead_letters += 1

    def _abort_and_rewind(self) -> None:
        """Abort the open transaction, drop staged state and rewind every partition to its committed point.

        Partitions another worker has claimed meanwhile are left alone (their revocation follows).
        """
        try:
            self._producer.abort_transaction(self._call_timeout)
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if err is not None and (err.fatal() or err.retriable()):
                raise  # fatal ends the worker; a timed-out abort is retried by the batch loop
            log.warning("abort: %s", exc)  # no open transaction, or it is aborted already
        self._rewind()

    def _rewind(self) -> None:
        """Drop in-memory and staged state and restart every assigned partition from its committed point."""
        consumer = self._consumer
        self._needs_rewind = True  # until settled: a transient error here is retried by the batch loop
        self._monitors.clear()
        self._owned.clear()
        self._staging.clear()
        if self._unsettled is not None:  # a rebalance callback that failed half-way
            self._on_assign(consumer, self._unsettled)
        else:
            self._settle(consumer, consumer.assignment(), claim=False)
        self._needs_rewind = False

    def _update_lag(self) -> None:
        now = time.monotonic()
        if now - self._last_lag < 5.0 or self._consumer is None:
            return
        self._last_lag = now
        consumer = self._consumer
        for tp in consumer.position(consumer.assignment()):
            if tp.offset < 0:
                continue
            try:
                _, high = consumer.get_watermark_offsets(tp, timeout=1, cached=True)
            except KafkaException:
                continue
            self.metrics.consumer_lag(tp.topic, tp.partition, max(0, high - tp.offset))


def _decode_runs(msgs: list[Message], decoders: dict[str, Decoder], labels: bool = False) -> list[Any]:
    """Every message's event or label (or the exception decoding it raised), one batch call per run of a topic."""
    out: list[Any] = []
    i, n = 0, len(msgs)
    while i < n:
        topic = msgs[i].topic()
        j = i + 1
        while j < n and msgs[j].topic() == topic:
            j += 1
        try:
            dec = decoders[topic]
            out.extend((dec.decode_label_many if labels else dec.decode_inference_many)([m.value() for m in msgs[i:j]]))
        except Exception as exc:  # noqa: BLE001 - each message of the run ends as a dead letter, as one call would
            out.extend([without_frames(exc)] * (j - i))
        i = j
    return out


def _header_digest(msg: Message, name: str) -> str | None:
    """The artifact digest a Kafka header carries (None when the header is absent)."""
    for key, value in msg.headers() or ():
        if key == name:
            return None if value is None else artifact_digest(value)
    return None


class _SnapshotBehind(RuntimeError):
    """A record failed in a model whose Redis snapshot is older than the batch: isolation needs the
    state before the batch, so the batch is redone after the partition's catch-up."""


def _message_time(msg: Message) -> float:
    """Kafka timestamp of a message in seconds (now when the broker gave none)."""
    kind, ms = msg.timestamp()
    return ms / 1000.0 if kind != TIMESTAMP_NOT_AVAILABLE and ms >= 0 else time.time()


def run(config: DriftlineConfig, worker_id: str = "0") -> int:
    """Run a worker until SIGTERM/SIGINT, serving /metrics, /healthz and /readyz."""
    from stream import preflight

    worker = Worker(config, worker_id=worker_id)  # reads keys and secrets: a ConfigError names the setting
    preflight.check(config)  # one line and exit 1 on a wrong password, untrusted certificate, missing right
    server = serve_metrics(config.metrics, worker.metrics)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: worker.stop())
    try:
        with fewer_collections():
            worker.run()
    finally:
        server.shutdown()
    return 0
