"""The faust-streaming runtime: the worker's core as a Faust app and agent.

For teams that already run Faust workers. :func:`build_app` returns a ``faust.App`` whose one
agent reads the same topics as the default runtime (:mod:`stream.worker`) and runs the same
processing steps on the same state: the batch steps of :class:`stream.worker.Worker` (decoding,
dead letters, the label join, rekeying to the internal topic, ``ModelMonitor`` detection, signed
rollbacks, metrics) are inherited, not copied, and state lives in Redis under the same keys and
format (:class:`stream.state.StateStore`). Stop one runtime and start the other on the same
configuration: each resumes where the other committed.

What Faust does here: group membership (Faust's own partition assignor), fetching with
``isolation_level=read_committed``, rebalances and the worker process (signals, logging). What it
does not do: commit offsets. The topics are subscribed with ``acks=False`` so Faust never commits
on its own, and Faust's ``processing_guarantee="exactly_once"`` is not used: it keeps one
transaction per *source partition number*, puts each output record in the transaction of its
*destination* partition number and commits on a timer, so a control message and the offsets of
the records that caused it are not in one transaction, and Redis state cannot be tied to it.

Instead each batch (a whole fetch, handed over by the consumer) is committed like the default runtime's: model state
and next internal offsets are staged in Redis, then one transaction of this worker's own aiokafka
producer (``transactional_id`` ``{group_id}-{worker_id}``, as the default runtime) carries the
batch's internal, control and dead-letter records and the consumed offsets of every topic, then
the staged state is promoted. On assignment, after Faust seeks to the group's committed offsets,
each internal partition's staged state is settled against them and the partition is sought to the
offset stored in Redis beside its state.

Guarantee, as tested (tests/stream/test_faust_integration.py): state and internal offsets are
exact, and control output is exactly once for ``read_committed`` readers, across SIGKILL at any
point. Weaker than the default runtime in one respect: aiokafka commits transactional offsets by
group id only (TxnOffsetCommit v0), without the consumer generation, so a worker that stalls past
its session timeout and whose partitions went to a worker with a *different* ``--worker-id`` is
not fenced by the group; a restarted worker with the same id fences its predecessor by
transactional id. Run each worker id once.

Not the same group at once: Faust's assignor and librdkafka's do not share a protocol, so the
two runtimes cannot be members of one consumer group together; stop one before starting the
other. Every ``kafka.security`` protocol works (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL with
PLAIN or SCRAM; TLS through an ``ssl.SSLContext`` built from ``ssl_ca_location`` and the client
certificate); ``kafka.client_options`` (librdkafka settings) have no aiokafka equivalent and are
refused. When idle, offsets are not advanced past the last transaction
marker (the group's lag on the internal topic reads 1 per partition; the
``driftline_consumer_lag`` metric reads 0).
"""
from __future__ import annotations

import asyncio
import logging
import os
import random
import shutil
import signal
import tempfile
import time
import zlib
from collections.abc import Iterable
from types import SimpleNamespace
from typing import Any

import faust
from aiokafka import AIOKafkaProducer
from aiokafka.errors import InconsistentGroupProtocolError
from aiokafka.structs import TopicPartition as AioTP
from confluent_kafka import TIMESTAMP_CREATE_TIME, KafkaException, TopicPartition
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.transport.drivers.aiokafka import Consumer as FaustKafkaConsumer
from faust.exceptions import ConsumerNotStarted
from faust.types import TP

from stream import preflight
from stream.collector import fewer_collections
from stream.config import ConfigError, DriftlineConfig, aiokafka_fetch_settings, aiokafka_settings
from stream.metrics import serve_metrics
from stream.records import partition_for
from stream.state import PartitionKey
from stream.worker import BatchOutcome, Worker

log = logging.getLogger("driftline.faust")

_UNKNOWN = -1001  # librdkafka's OFFSET_INVALID, what Worker's clock code expects for "no position"


class _Message:
    """A Faust message seen through the confluent-kafka ``Message`` methods the core calls."""

    __slots__ = ("_m",)

    def __init__(self, message: Any) -> None:
        self._m = message

    def topic(self) -> str:
        return self._m.topic

    def partition(self) -> int:
        return self._m.partition

    def offset(self) -> int:
        return self._m.offset

    def value(self) -> bytes | None:
        return self._m.value

    def timestamp(self) -> tuple[int, int]:
        return TIMESTAMP_CREATE_TIME, int(self._m.timestamp * 1000)

    def error(self) -> None:
        return None

    def headers(self) -> list[tuple[str, bytes]] | None:
        h = self._m.headers
        if not h:
            return None
        return list(h.items()) if isinstance(h, dict) else list(h)


class _Outbox:
    """Collects what the core produces during a batch; the batch's transaction sends it."""

    def __init__(self) -> None:
        self.records: list[tuple[str, bytes, bytes | None, int | None]] = []

    def produce(self, topic: str, value: bytes, key: bytes | None = None, partition: int | None = None) -> None:
        self.records.append((topic, value, key, partition))


class _ConsumerView:
    """The consumer calls the core's label-join clock and lag metric make, answered from Faust."""

    def __init__(self, runtime: "FaustRuntime") -> None:
        self._rt = runtime

    def list_topics(self, timeout: float = 0) -> Any:
        consumer = self._rt.app.consumer
        topics = {}
        for name in self._rt._inference_topics:
            n = consumer.topic_partitions(name)
            if n:
                topics[name] = SimpleNamespace(partitions={p: None for p in range(n)})
        return SimpleNamespace(topics=topics)

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(tp.topic, tp.partition) for tp in self._rt.app.consumer.assignment()]

    def position(self, tps: Iterable[TopicPartition]) -> list[TopicPartition]:
        nxt = self._rt._next
        return [TopicPartition(tp.topic, tp.partition, nxt.get((tp.topic, tp.partition), _UNKNOWN)) for tp in tps]

    def get_watermark_offsets(self, tp: TopicPartition, timeout: float = 0, cached: bool = False) -> tuple[int, int]:
        high = self._rt.app.consumer.highwater(TP(tp.topic, tp.partition))  # last stable offset (read_committed)
        if high is None or high < 0:
            raise KafkaException(f"no end offset known yet for {tp.topic}:{tp.partition}")
        return 0, high


class FaustRuntime(Worker):
    """Worker's batch steps driven by a Faust agent; see the module docstring for the commit protocol."""

    def __init__(self, config: DriftlineConfig, worker_id: str, app: faust.App) -> None:
        super().__init__(config, worker_id=worker_id)
        self.app = app
        self._outbox = _Outbox()
        self._producer = self._outbox  # what the inherited steps produce to
        self._consumer = _ConsumerView(self)
        self._txn: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()
        self._next: dict[tuple[str, int], int] = {}  # next offset to process, per topic partition
        self._resume: dict[tuple[str, int], int] = {}  # label partitions rewound to a waiting label
        self._failed: BaseException | None = None
        # every batch stages its state: this runtime has no catch-up from an older snapshot
        self._snapshot_interval = 0.0
        self._join_warned = float("-inf")

    # -- lifecycle (called by DriftlineApp) --------------------------------------------------------
    async def start(self) -> None:
        await asyncio.to_thread(self.ensure_topics)
        k = self.config.kafka
        self._txn = AIOKafkaProducer(
            **aiokafka_settings(self.config),
            bootstrap_servers=k.bootstrap_servers.split(","),
            transactional_id=f"{k.group_id}-{self.worker_id}", enable_idempotence=True, acks="all",
            linger_ms=5, max_batch_size=512 * 1024, max_request_size=max(k.max_message_bytes, 1024 * 1024) + 64 * 1024,
            transaction_timeout_ms=30_000, partitioner=_librdkafka_partitioner)
        await self._txn.start()  # fences a previous incarnation of this worker id, aborting its open transaction

    async def close(self) -> None:
        self.metrics.set_ready(False)
        if self._txn is not None:
            await self._txn.stop()
            self._txn = None
        self._settle_remembering()

    # -- rebalance ---------------------------------------------------------------------------------
    async def after_seek(self, consumer: FaustKafkaConsumer, committed: dict[TP, int | None]) -> None:
        """Faust sought every partition to the group's committed offset: settle and load state."""
        async with self._lock:
            assignment = consumer.assignment()
            self._monitors.clear()
            self._owned.clear()
            self._resume.clear()
            self._paused.clear()
            self._dirty.clear()
            self._next = {(tp.topic, tp.partition): committed[tp] for tp in assignment if committed.get(tp) is not None}
            for tp in sorted(t for t in assignment if t.topic == self._internal):
                kc = committed.get(tp)
                offset = self._store.restore(PartitionKey(tp.topic, tp.partition), kc if kc is not None and kc > 0 else None)
                offset = offset if offset is not None else 0
                if offset != kc:
                    await consumer.seek(tp, offset)
                self._next[(tp.topic, tp.partition)] = offset
                self._load_partition(tp.partition)
            log.info("worker %s owns internal partitions %s", self.worker_id, sorted(self._owned))
            if assignment:
                self.ready.set()
                self.metrics.set_ready(True)

    async def on_revoked(self, revoked: Iterable[TP]) -> None:
        async with self._lock:
            for tp in revoked:
                self._next.pop((tp.topic, tp.partition), None)
                self._resume.pop((tp.topic, tp.partition), None)
                self._paused.pop((tp.topic, tp.partition), None)
                if tp.topic == self._internal:
                    self._owned.discard(tp.partition)
                    for name in [m for m in self._monitors if self._partition_of(m) == tp.partition]:
                        del self._monitors[name]

    def _resume_waiting_labels(self) -> None:
        """Hand paused label partitions over again once their waiting label may join (see
        :meth:`stream.worker.Worker._resume_waiting_labels`); what Faust buffered for them
        meanwhile starts at the waiting label (the partition was sought there)."""
        ready = self._unpause_ready_labels()
        if ready:
            self.app.consumer.resume_partitions([TP(t, p) for t, p in ready])

    def _partition_of(self, model: str) -> int:
        return partition_for(model, self._partitions)

    # -- processing --------------------------------------------------------------------------------
    def _accept(self, messages: Iterable[Any], assigned: set[TP]) -> list[_Message]:
        """Drop what is not this worker's to process: revoked partitions, records already committed,
        and records fetched ahead of a label partition rewound to a waiting label."""
        out = []
        for m in messages:
            key = (m.topic, m.partition)
            if m.tp not in assigned or m.offset < self._next.get(key, 0):
                continue
            resume = self._resume.get(key)
            if resume is not None:
                if m.offset != resume:
                    continue
                del self._resume[key]
            out.append(_Message(m))
        return out

    async def process(self, messages: list[Any]) -> None:
        """Run one batch of fetched Faust messages through the core and commit it (see the module docstring)."""
        if self._failed is not None:
            raise RuntimeError("an earlier batch failed; restart the worker") from self._failed
        async with self._lock:
            self._resume_waiting_labels()
            msgs = self._accept(messages, self.app.consumer.assignment())
            if msgs:
                await self._process_batch(msgs)

    async def _process_batch(self, msgs: list[_Message]) -> None:
        started = time.perf_counter()
        outcome = BatchOutcome()
        self._outbox.records.clear()
        staged: list[PartitionKey] = []
        rewinds: dict[tuple[str, int], int] = {}
        waits: dict[tuple[str, int], tuple[int, float]] = {}
        txn = self._txn
        assert txn is not None
        began = False
        try:
            raw_inference, raw_labels, internal, positions = self._split(msgs)
            self._route_inference(raw_inference, outcome)  # starts writing the predictions to Redis
            staged = self._detect(internal, positions, outcome)  # records of earlier batches: no wait
            waits = self._route_labels(raw_labels, outcome)  # waits for the write first
            for tp, (offset, _) in waits.items():
                positions[tp] = rewinds[tp] = offset
            await txn.begin_transaction()
            began = True
            for topic, value, key, partition in self._outbox.records:
                await txn.send(topic, value=value, key=key, partition=partition)
            await txn.send_offsets_to_transaction(
                {AioTP(t, p): o for (t, p), o in positions.items()}, self.config.kafka.group_id)
            checkpoint_started = time.perf_counter()
            await txn.commit_transaction()
        except BaseException as exc:
            # Staged state stays: on the next assignment StateStore.restore promotes it if the
            # transaction did commit (its offsets are the group's) and discards it otherwise.
            self._monitors.clear()
            if began:
                await _abort_quietly(txn)
            if isinstance(exc, Exception):
                self._failed = exc
                log.exception("batch failed; its transaction is aborted and the worker stops")
                os.kill(os.getpid(), signal.SIGTERM)  # graceful stop; run() exits 1
            raise
        finally:
            self._outbox.records.clear()
            self._settle_remembering()
        self._next.update(positions)
        for (topic, partition), offset in rewinds.items():
            self._resume[(topic, partition)] = offset
            await self.app.consumer.seek(TP(topic, partition), offset)
        if rewinds:  # not handed over batch after batch while its label waits (see Worker._route_labels)
            self.app.consumer.pause_partitions([TP(t, p) for t, p in rewinds])
            self._paused.update(waits)
        self._committed(staged, outcome, started, checkpoint_started)

    async def housekeeping(self) -> None:
        """Once a second: share the label-join clock when idle, export detector statistics and consumer lag."""
        if self._failed is not None:
            return
        async with self._lock:
            self._export_stats(idle=True)
            self._publish_inference_clock()
            self._resume_waiting_labels()
            self._update_lag()


    async def _read_join_errors(self) -> None:
        """Read the error of a refused group join, so that aiokafka joins again.

        aiokafka keeps such an error for the application and does not retry the join until it is
        read; Faust reads it only once partitions are assigned, so a worker refused while a killed
        default-runtime worker was still a member (another group protocol) waited for good.
        """
        thread = getattr(self.app.consumer, "_thread", None)
        if thread is None:
            return

        async def check() -> None:
            consumer = thread._ensure_consumer()
            if not consumer.assignment():
                consumer._coordinator.check_errors()

        try:
            await thread.call_thread(check)
        except InconsistentGroupProtocolError:
            now = time.monotonic()
            if now - self._join_warned > 10:
                self._join_warned = now
                log.warning("group %s still has a member of the default runtime (a killed worker's session has "
                            "not expired yet); retrying the join", self.config.kafka.group_id)
        except ConsumerNotStarted:
            return
        except Exception as exc:  # noqa: BLE001 - another join error: read, so the join is retried the same way
            log.warning("group %s: joining failed: %r", self.config.kafka.group_id, exc)


async def _abort_quietly(txn: AIOKafkaProducer) -> None:
    try:
        await txn.abort_transaction()
    except Exception:  # noqa: BLE001 - restore() settles the batch either way
        log.warning("aborting the failed batch's transaction failed", exc_info=True)


def _librdkafka_partitioner(key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
    """librdkafka's default (consistent_random): CRC-32 of the key, so both runtimes place a key alike."""
    if not key:
        return random.choice(available or all_partitions)
    return all_partitions[zlib.crc32(key) % len(all_partitions)]


FETCH_WAIT_MS = 20  # aiokafka's fetch_max_wait_ms (see _BoundedFetchThread)


class _BoundedFetchThread(AIOKafkaConsumerThread):
    """Faust's consumer thread; its aiokafka consumer fetches at most ``kafka.fetch_max_bytes`` a request
    and waits at most ``FETCH_WAIT_MS`` for data.

    Faust passes ``max_partition_fetch_bytes`` (``consumer_max_fetch_size``) but not
    ``fetch_max_bytes`` (aiokafka's default is 50 MiB), and a fetch wait of 1.5 s: both are set on
    the client before it starts, where aiokafka reads them when it builds its fetcher. aiokafka has
    one fetch request in flight per broker, for the partitions whose fetched records are all
    consumed; while it waits on partitions without new data (internal partitions whose records this
    worker is about to commit), the partitions just drained cannot be fetched again, so a long
    wait stalls the worker (loadtest/bench_pipeline.py, 20% labelled: 5,446 events/s with Faust's
    1.5 s; 11,932 to 13,085 with 10 to 50 ms).
    """

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        bounds = aiokafka_fetch_settings(self.app.driftline.config)
        consumer._fetch_max_bytes = bounds["fetch_max_bytes"]
        consumer._max_partition_fetch_bytes = bounds["max_partition_fetch_bytes"]
        consumer._fetch_max_wait_ms = FETCH_WAIT_MS
        return consumer


class _DriftlineConsumer(FaustKafkaConsumer):
    """Faust's Kafka consumer, reading ``read_committed`` and reporting its seeks to the runtime."""

    def _new_consumer_thread(self) -> AIOKafkaConsumerThread:
        return _BoundedFetchThread(self, loop=self.loop, beacon=self.beacon)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # read_committed and last-stable-offset end offsets; commits never happen (acks=False topics)
        self.in_transaction = True

    def on_init_dependencies(self) -> list:
        return []  # no Faust transaction manager: the runtime owns its transactional producer

    async def perform_seek(self) -> None:
        await super().perform_seek()
        committed = {tp: self._committed_offset.get(tp) for tp in self.assignment()}
        await self.app.driftline.after_seek(self, committed)

    async def _drain_messages(self, fetcher: Any) -> None:  # the Fetcher service's loop
        """Hand whole fetches (up to ``kafka.batch_size`` within ``kafka.batch_timeout_ms``) to the runtime.

        Faust's own loop dispatches message by message, a task each, through its conductor to
        the agent's stream: that capped this runtime near 1.6k events/s. Group membership,
        rebalances, flow control and seeks stay Faust's (``getmany`` honours them).
        """
        runtime: FaustRuntime = self.app.driftline
        k = runtime.config.kafka
        within = k.batch_timeout_ms / 1000
        consumer_stopped, fetcher_stopped = self._stopped.is_set, fetcher._stopped.is_set
        warned = float("-inf")
        while not (consumer_stopped() or fetcher_stopped()):
            batch: list[Any] = []
            deadline = time.monotonic() + within
            try:
                held = 0  # payload bytes: the batch ends at kafka.batch_max_bytes (one fetch may overshoot it)
                while not self.should_stop:
                    async for _, message in self.getmany(timeout=max(0.0, deadline - time.monotonic())):
                        batch.append(message)
                        held += len(message.key or b"") + len(message.value or b"")
                    if len(batch) >= k.batch_size or held >= k.batch_max_bytes or time.monotonic() >= deadline:
                        break
                    await self.sleep(0)
            except InconsistentGroupProtocolError:
                # a default-runtime worker (another group protocol) is still a member, e.g. one
                # killed before its session expired: keep trying until the broker drops it
                if time.monotonic() - warned > 10:
                    warned = time.monotonic()
                    log.warning("group %s still has a member of the default runtime (a killed worker's "
                                "session has not expired yet); retrying the join", k.group_id)
                await self.sleep(1.0)
                continue
            except self.consumer_stopped_errors:
                if self.transport.app.should_stop:
                    return
                raise
            except asyncio.CancelledError:
                if self.transport.app.should_stop:
                    return
                raise
            if batch and not self.should_stop:
                try:
                    await runtime.process(batch)
                except Exception:  # noqa: BLE001 - process() logged it and stops the worker
                    return


class DriftlineApp(faust.App):
    """A ``faust.App`` carrying a :class:`FaustRuntime` as ``app.driftline``."""

    driftline: FaustRuntime

    def _new_consumer(self) -> FaustKafkaConsumer:
        """Faust's consumer, whose aiokafka client takes ``kafka.fetch_max_bytes`` (see ``_BoundedFetchThread``)."""
        return _DriftlineConsumer(
            self.transport, callback=self.topics.on_message, on_partitions_revoked=self._on_partitions_revoked,
            on_partitions_assigned=self._on_partitions_assigned, beacon=self.beacon, loop=self.transport.loop)

    async def on_start(self) -> None:
        await super().on_start()
        await self.driftline.start()
        self.add_future(self._watch_join())

    async def _watch_join(self) -> None:
        """Until partitions are assigned, read refused-join errors once a second (see ``_read_join_errors``)."""
        while not self.should_stop:
            await self.driftline._read_join_errors()
            await asyncio.sleep(1.0)

    async def on_stop(self) -> None:
        await super().on_stop()
        await self.driftline.close()


def _check_supported(config: DriftlineConfig) -> None:
    if config.kafka.client_options:
        raise ConfigError("kafka.client_options: librdkafka settings have no aiokafka equivalent; "
                          "the faust runtime does not take them")


def _credentials(config: DriftlineConfig) -> Any:
    """Faust's ``broker_credentials`` for ``kafka.security`` (None for PLAINTEXT)."""
    auth = aiokafka_settings(config)
    if "sasl_mechanism" in auth:
        return faust.SASLCredentials(username=auth["sasl_plain_username"], password=auth["sasl_plain_password"],
                                     ssl_context=auth.get("ssl_context"), mechanism=auth["sasl_mechanism"])
    if "ssl_context" in auth:
        return faust.SSLCredentials(auth["ssl_context"])
    return None


def build_app(config: DriftlineConfig, worker_id: str = "0", *, datadir: str | None = None) -> faust.App:
    """A Faust app running driftline's core for ``config``; its consumer group is ``kafka.group_id``."""
    _check_supported(config)
    k = config.kafka
    app = DriftlineApp(
        k.group_id,
        broker=[f"kafka://{server.strip()}" for server in k.bootstrap_servers.split(",")],
        broker_credentials=_credentials(config),
        key_serializer="raw", value_serializer="raw",
        consumer_auto_offset_reset="earliest",
        consumer_max_fetch_size=aiokafka_fetch_settings(config)["max_partition_fetch_bytes"],
        topic_allow_declare=False, topic_disable_leader=True,
        web_enabled=False, store="memory://",
        datadir=datadir or tempfile.gettempdir(),
        stream_buffer_maxsize=max(4096, k.batch_size), broker_max_poll_records=k.batch_size,
        # a killed worker's partitions move after 10 s (Faust's default is 60 s)
        broker_session_timeout=10.0, broker_heartbeat_interval=2.0, broker_rebalance_timeout=30.0,
    )
    runtime = FaustRuntime(config, worker_id, app)
    app.driftline = runtime
    names = sorted(runtime._inference_topics | runtime._label_topics) + [k.internal_topic]
    if k.registry_topic:
        names.append(k.registry_topic)
    topic = app.topic(*names, key_type=bytes, value_type=bytes, acks=False)

    @app.agent(topic, name="driftline", concurrency=1)
    async def driftline(stream: faust.StreamT) -> None:
        # subscribes the topics; the consumer hands fetched batches to the runtime directly
        # (_DriftlineConsumer._drain_messages), so this stream never receives an event
        async for _ in stream:  # pragma: no cover
            pass

    @app.timer(1.0)
    async def housekeeping() -> None:
        await runtime.housekeeping()

    @app.on_partitions_revoked.connect
    async def on_revoked(app: faust.App, revoked: set[TP], **_: Any) -> None:
        await runtime.on_revoked(revoked)

    return app


def run(config: DriftlineConfig, worker_id: str = "0", log_level: str = "INFO") -> int:
    """Run a Faust worker until SIGTERM/SIGINT, serving /metrics, /healthz and /readyz."""
    _check_supported(config)
    preflight.check(config)  # one line and exit 1 on a wrong password, untrusted certificate, missing right
    datadir = tempfile.mkdtemp(prefix="driftline-faust-")
    try:
        app = build_app(config, worker_id, datadir=datadir)
        server = serve_metrics(config.metrics, app.driftline.metrics)
        worker = faust.Worker(app, loglevel=log_level.lower(), redirect_stdouts=False, quiet=True,
                              override_logging=False)
        try:
            with fewer_collections():
                worker.execute_from_commandline()
        except SystemExit as exc:
            return int(exc.code or 0) if not app.driftline._failed else 1
        finally:
            server.shutdown()
        return 1 if app.driftline._failed else 0
    finally:
        shutil.rmtree(datadir, ignore_errors=True)
