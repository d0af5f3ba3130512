"""``driftline control act``: apply verified rollback commands from the control topic, once each.

A confluent-kafka consumer of its own group reads ``kafka.control_topic`` with
``isolation.level=read_committed`` (commands of aborted worker transactions are never seen). Each
message is parsed (anything but a JSON object is counted as invalid and skipped), alerts and
resolutions are ignored, and a rollback is verified as a deployment controller must (key id,
RFC 8785 signature, freshness: :mod:`stream.signing`) before any action runs. Unsigned,
tampered, unknown-key, expired and future-dated commands never act.

Each configured action (webhooks, Flagger) applies a command at most once per idempotency key:
applied keys are remembered in Redis, ``{prefix}:@acted:{action}:{idempotency_key}``,
for ``actuation.acted_ttl_seconds`` (longer than the freshness window, so a command cannot come
back fresh once forgotten). Redis because every driftline deployment already runs it: replicas
of ``control act`` share the memory, a restarted container without a volume keeps it, expiry is
native. A local file would need a persistent volume, fsync and its own expiry, and would split
the memory between replicas. An action that fails after its retries is dead-lettered (the
dead-letter topic, reason ``actuation_failed``) and logged; it is not remembered, so a
redelivery tries again. Offsets are committed after the commands of a batch are handled; a
crash in between redelivers them, and the memory of applied keys turns that into nothing.

The one window left: an action that succeeded just before a crash that lost its Redis record
(Redis persists every second) runs again on redelivery; webhooks therefore carry the
``Idempotency-Key`` header, for receivers that deduplicate too.
"""
from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from stream.config import ConfigError
from stream.control import check, parse_message
from stream.metrics import MetricsServer, WorkerMetrics, endpoint_handler
from stream.signing import Freshness, SigningKey

log = logging.getLogger("driftline.actuation")
OUTCOMES = ("acted", "duplicate", "rejected", "invalid", "ignored", "failed")
_REASONS = (("expired", "expired"), ("issued in the future", "future"), ("bad signature", "bad_signature"),
            ("unknown key id", "unknown_key"), ("missing signature", "unsigned"), ("missing key id", "unsigned"),
            ("malformed signature", "malformed_signature"), ("missing issue time", "no_issue_time"),
            ("malformed issue time", "no_issue_time"), ("wrong schema", "wrong_schema"))


def reason_code(reason: str) -> str:
    """A short, bounded label for a refusal reason (metrics)."""
    return next((code for prefix, code in _REASONS if reason.startswith(prefix)), "other")


class ActuationMetrics:
    """Counters of ``control act``, in a registry of their own (served on the act endpoint's /metrics)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.commands = Counter("driftline_actuation_commands", "Control messages handled by control act, by outcome.",
                                ["outcome", "reason"], registry=r)
        self.actions = Counter("driftline_actuation_actions", "Action attempts on verified rollbacks, by outcome.",
                               ["action", "outcome"], registry=r)
        self.ready_gauge = Gauge("driftline_actuation_ready", "1 while control act consumes its control topic.",
                                 registry=r)
        self._ready = threading.Event()

    set_ready = WorkerMetrics.set_ready  # /readyz and the gauge, as the worker's
    ready = WorkerMetrics.ready

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)


class ActedStore:
    """Which (action, idempotency key) pairs were applied, in Redis under the key prefix, with a TTL."""

    def __init__(self, client: redis.Redis, prefix: str, ttl_seconds: int) -> None:
        self._r = client
        self._prefix = prefix
        self._ttl = ttl_seconds

    def _key(self, action: str, idempotency_key: str) -> str:
        # not scoped by consumer group: a new group re-reading the topic must not act again
        return f"{self._prefix}:@acted:{action}:{idempotency_key}"

    def applied(self, action: str, idempotency_key: str) -> dict[str, Any] | None:
        """The record of an earlier application, or None."""
        raw = self._r.get(self._key(action, idempotency_key))
        return orjson.loads(raw) if raw else None

    def remember(self, action: str, idempotency_key: str, record: Mapping[str, Any]) -> None:
        """Remember that ``action`` applied ``idempotency_key`` (kept ``acted_ttl_seconds``)."""
        self._r.set(self._key(action, idempotency_key), orjson.dumps(dict(record)), ex=self._ttl)


@dataclass(slots=True)
class Outcome:
    """What handling one control message did: ``status`` is one of :data:`OUTCOMES`."""

    status: str
    reason: str = ""
    command_id: str | None = None
    actions: dict[str, str] = field(default_factory=dict)  # action name -> acted / duplicate / failed


class Actuator:
    """Verifies one control message and applies it through every action that takes its model."""

    def __init__(self, keys: Mapping[str, SigningKey], freshness: Freshness, actions: Sequence[Any],
                 acted: ActedStore, metrics: ActuationMetrics | None = None,
                 dead_letter: Callable[[bytes, str, str], None] | None = None,
                 now: Callable[[], float] = time.time) -> None:
        self.keys = dict(keys)
        self.freshness = freshness
        self.actions = list(actions)
        self.acted = acted
        self.metrics = metrics or ActuationMetrics()
        self._dead_letter = dead_letter
        self._now = now

    def handle(self, value: bytes | None, where: str = "-", stop: Callable[[], bool] = lambda: False) -> Outcome:
        """Handle one message value; Redis errors propagate (the caller retries without committing)."""
        out = self._handle(value, where, stop)
        self.metrics.commands.labels(outcome=out.status,
                                     reason=reason_code(out.reason) if out.status == "rejected" else "").inc()
        level = logging.WARNING if out.status in ("rejected", "invalid", "failed") else logging.INFO
        if out.status != "ignored":
            log.log(level, "%s %s: %s%s %s", where, out.command_id or "-", out.status,
                    f" ({out.reason})" if out.reason else "",
                    " ".join(f"{k}={v}" for k, v in sorted(out.actions.items())))
        return out

    def _remember(self, action: str, idempotency_key: str, record: Mapping[str, Any],
                  stop: Callable[[], bool]) -> None:
        """Record a success, retrying while Redis is down: redoing the action would apply it twice."""
        wait = 0.5
        while True:
            try:
                return self.acted.remember(action, idempotency_key, record)
            except redis.RedisError as exc:
                if stop():
                    raise
                log.warning("%s applied %s but cannot record it (%s); retrying in %.1f s", action,
                            idempotency_key, exc, wait)
                time.sleep(wait)
                wait = min(wait * 2, 30.0)

    def _handle(self, value: bytes | None, where: str, stop: Callable[[], bool]) -> Outcome:
        item = parse_message(value, where)
        if item.error:
            return Outcome("invalid", item.error)
        doc = item.doc
        if doc.get("kind") != "rollback":
            return Outcome("ignored", f"kind {str(doc.get('kind'))[:32]!r}")
        ident = doc.get("id") if isinstance(doc.get("id"), str) else None
        result = check(doc, self.keys, self.freshness, self._now())
        if not result.ok:
            return Outcome("rejected", result.reason, ident)
        model, idem = doc.get("model"), doc.get("idempotency_key")
        if not isinstance(model, str) or not isinstance(idem, str) or not idem:
            return Outcome("rejected", "malformed command: model and idempotency_key must be strings", ident)
        done: dict[str, str] = {}
        for action in self.actions:
            if not action.applies_to(model):
                continue
            if self.acted.applied(action.name, idem) is not None:
                done[action.name] = "duplicate"
                self.metrics.actions.labels(action=action.name, outcome="duplicate").inc()
                continue
            delivery = action.deliver(value or b"", doc, stop)
            if delivery.ok:
                self._remember(action.name, idem, {"id": ident, "at": int(self._now()),
                                                   "attempts": delivery.attempts, "detail": delivery.detail}, stop)
                done[action.name] = "acted"
            else:
                done[action.name] = "failed"
                if self._dead_letter is not None:
                    self._dead_letter(value or b"", "actuation_failed", f"{action.name}: {delivery.detail}")
            self.metrics.actions.labels(action=action.name, outcome=done[action.name]).inc()
        if not done:
            return Outcome("ignored", f"no action takes model {model[:64]!r}", ident)
        states = set(done.values())
        status = "failed" if "failed" in states else "acted" if "acted" in states else "duplicate"
        return Outcome(status, "", ident, done)


# -- HTTP endpoint: Flagger webhook, /healthz, /readyz, /metrics ---------------------------------------
def serve(host: str, port: int, metrics: ActuationMetrics, flagger: Any | None) -> MetricsServer:
    """Start the act endpoint: the Flagger webhook (when configured) beside /metrics, /healthz, /readyz."""
    from stream.flagger import MAX_BODY

    class Handler(endpoint_handler(metrics)):  # type: ignore[misc]
        def do_POST(self) -> None:  # noqa: N802 (http.server naming)
            path = self.path.split("?", 1)[0]
            if flagger is None or not path.startswith("/rollback/"):
                self._send(404, b'{"error": "no Flagger webhook here"}\n', "application/json")
                return
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if length < 0 or length > MAX_BODY:
                self._send(413 if length > MAX_BODY else 400, b'{"error": "bad Content-Length"}\n', "application/json")
                return
            status, body = flagger.answer(path, self.rfile.read(length))
            self._send(status, orjson.dumps(body) + b"\n", "application/json")

    return MetricsServer(metrics, host, port, handler=Handler).start()  # type: ignore[arg-type]


# -- the consumer loop ----------------------------------------------------------------------------------
def actuation_spec(config: Any) -> Any:
    """The ``actuation`` section; ConfigError when the configuration has none."""
    if config.actuation is None:
        raise ConfigError("actuation: section missing; configure webhooks or flagger for control act")
    return config.actuation


def build(config: Any, environ: Mapping[str, str] | None = None, now: Callable[[], float] = time.time,
          dead_letter: Callable[[bytes, str, str], None] | None = None) -> tuple[Actuator, Any | None]:
    """The actuator and its Flagger action (or None) for ``config``; raises ConfigError."""
    from stream.config import redis_client, resolve_env, verification_keys
    from stream.flagger import FlaggerAction, Stands
    from stream.webhook import WebhookAction

    act = actuation_spec(config)
    keys = verification_keys(config.signing, environ)
    client = redis_client(config.redis, environ)
    actions: list[Any] = []
    for i, w in enumerate(act.webhooks):
        token = (resolve_env(w.bearer_token_env, f"actuation.webhooks[{i}].bearer_token_env", environ)
                 if w.bearer_token_env else None)
        actions.append(WebhookAction(w, token, act.max_attempts, act.backoff_seconds, act.max_backoff_seconds))
    flagger = None
    if act.flagger is not None:
        flagger = FlaggerAction(act.flagger, Stands(client, config.redis.key_prefix), now)
        actions.append(flagger)
    acted = ActedStore(client, config.redis.key_prefix, act.acted_ttl_seconds)
    return Actuator(keys, config.signing.freshness, actions, acted, dead_letter=dead_letter, now=now), flagger


def run(config: Any, stop: threading.Event | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Consume the control topic and act until ``stop`` is set (SIGTERM/SIGINT when run from the CLI)."""
    from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

    from stream.config import consumer_settings, producer_settings

    act = actuation_spec(config)
    group = act.group_id or f"{config.kafka.group_id}-act"
    dead_topic = act.dead_letter_topic or config.kafka.dead_letter_topic
    limit = config.kafka.dead_letter_max_bytes
    settings = consumer_settings(config, environ=environ)
    settings.update({"group.id": group, "enable.auto.commit": False, "isolation.level": "read_committed",
                     "auto.offset.reset": "earliest"})
    producer = Producer(producer_settings(config, environ=environ))

    def dead_letter(value: bytes, reason: str, detail: str) -> None:
        record = {"schema": "driftline.deadletter/v1", "reason": reason, "detail": detail[:500],
                  "topic": config.kafka.control_topic, "payload": value[:limit].decode("utf-8", "replace"),
                  "truncated": len(value) > limit}
        producer.produce(dead_topic, value=orjson.dumps(record), key=b"actuation")
        producer.flush(30)

    actuator, flagger = build(config, environ, dead_letter=dead_letter)
    stop = stop or threading.Event()
    metrics = actuator.metrics
    server = serve(act.host, act.port, metrics, flagger)
    log.info("control act: group %s on %s, serving %s", group, config.kafka.control_topic, server.url)
    print(f"driftline control act: serving {server.url}", flush=True)
    consumer = Consumer(settings)
    consumer.subscribe([config.kafka.control_topic])
    backoff = 0.5
    try:
        while not stop.is_set():
            msgs = consumer.consume(100, 0.5)
            if consumer.assignment() and not metrics.ready:
                metrics.set_ready(True)
            next_offsets: dict[tuple[str, int], int] = {}
            for msg in msgs:
                if msg.error() is not None:
                    log.warning("control topic: %s", msg.error())
                    continue
                where = f"{msg.topic()}:{msg.partition()}:{msg.offset()}"
                while not stop.is_set():
                    try:
                        actuator.handle(msg.value(), where, stop.is_set)
                        backoff = 0.5
                        break
                    except redis.RedisError as exc:
                        log.warning("%s: state store error (%s); retrying in %.1f s", where, exc, backoff)
                        stop.wait(backoff)
                        backoff = min(backoff * 2, 30.0)
                else:
                    break  # stopping: leave the rest (and this one) uncommitted
                next_offsets[(msg.topic(), msg.partition())] = msg.offset() + 1
            if next_offsets:
                try:
                    consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in next_offsets.items()],
                                    asynchronous=False)
                except KafkaException as exc:  # a rebalance took the partition: its new owner redelivers
                    log.warning("commit failed: %s", exc)
    finally:
        metrics.set_ready(False)
        consumer.close()
        producer.flush(10)
        server.shutdown()
    return 0


def main(config: Any) -> int:
    """Run until SIGTERM or SIGINT."""
    actuation_spec(config)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return run(config, stop)
