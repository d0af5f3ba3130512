"""Redis state store: per-model detector state committed together with consumer offsets.

Key scheme (``{p}`` is the configured key prefix, ``driftline`` by default):

- ``{p}:{model}:state``          committed ModelMonitor bytes (versioned format of ``detectors``)
- ``{p}:{model}:state:staged``   bytes of a batch whose Kafka transaction is not yet known to be committed
- ``{p}:offsets:{group}:{topic}:{partition}``  hash: ``committed`` and ``staged`` next-offsets
- ``{p}:pending:{event_id}``     a prediction awaiting its label (TTL = label-join horizon)

A batch is made durable in two steps so that state, offsets and published control messages
agree after a crash at any moment:

1. ``stage``: one MULTI/EXEC writes every touched model's new state and the partition's next
   offset as *staged*;
2. the Kafka transaction carrying the batch's control messages and consumer offsets commits;
3. ``promote``: one MULTI/EXEC turns the staged values into the committed ones.

On partition assignment ``restore`` settles a leftover staged batch by asking Kafka whether its
transaction committed (the group's committed offset equals the staged offset): promote if so,
discard otherwise. The worker then seeks to the committed offset in Redis.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import orjson
import redis


@dataclass(frozen=True, slots=True)
class PartitionKey:
    """A topic partition of the internal (rekeyed) topic."""

    topic: str
    partition: int


@dataclass(frozen=True, slots=True)
class PendingPrediction:
    """What the label join needs to remember about a prediction until its label arrives."""

    model: str
    model_version: str
    deployment: str
    prediction: str
    ts: float


class StateStore:
    """Reads and writes driftline state in Redis under one key prefix."""

    def __init__(self, client: redis.Redis, prefix: str, group: str) -> None:
        self._r = client
        self._prefix = prefix
        self._group = group

    # -- keys ---------------------------------------------------------------------------
    def state_key(self, model: str) -> str:
        return f"{self._prefix}:{model}:state"

    def staged_state_key(self, model: str) -> str:
        return f"{self._prefix}:{model}:state:staged"

    def offsets_key(self, part: PartitionKey) -> str:
        return f"{self._prefix}:offsets:{self._group}:{part.topic}:{part.partition}"

    def pending_key(self, event_id: str) -> str:
        return f"{self._prefix}:pending:{event_id}"

    # -- batch commit -------------------------------------------------------------------
    def stage(self, part: PartitionKey, next_offset: int, states: Mapping[str, bytes]) -> None:
        """Atomically write a batch's model states and next offset as staged."""
        pipe = self._r.pipeline(transaction=True)
        for model, blob in states.items():
            pipe.set(self.staged_state_key(model), blob)
        pipe.hset(self.offsets_key(part), mapping={"staged": next_offset, "staged_models": _join(states)})
        pipe.execute()

    def promote(self, part: PartitionKey) -> None:
        """Atomically turn the partition's staged batch into the committed state."""
        key = self.offsets_key(part)
        staged = self._r.hmget(key, "staged", "staged_models")
        if staged[0] is None:
            return
        models = _split(staged[1])
        pipe = self._r.pipeline(transaction=True)
        for model in models:
            pipe.rename(self.staged_state_key(model), self.state_key(model))
        pipe.hset(key, "committed", int(staged[0]))
        pipe.hdel(key, "staged", "staged_models")
        pipe.execute()

    def discard_staged(self, part: PartitionKey) -> None:
        """Drop a staged batch whose Kafka transaction never committed."""
        key = self.offsets_key(part)
        models = _split(self._r.hget(key, "staged_models"))
        pipe = self._r.pipeline(transaction=True)
        for model in models:
            pipe.delete(self.staged_state_key(model))
        pipe.hdel(key, "staged", "staged_models")
        pipe.execute()

    def restore(self, part: PartitionKey, kafka_committed: int | None) -> int | None:
        """Settle any staged batch against Kafka's committed offset; return the offset to resume at."""
        staged = self._r.hget(self.offsets_key(part), "staged")
        if staged is not None:
            if kafka_committed is not None and int(staged) == kafka_committed:
                self.promote(part)
            else:
                self.discard_staged(part)
        committed = self._r.hget(self.offsets_key(part), "committed")
        return None if committed is None else int(committed)

    def load_models(self, models: Iterable[str]) -> dict[str, bytes]:
        """Committed state bytes of the given models (absent models are left out)."""
        names = list(models)
        if not names:
            return {}
        blobs = self._r.mget([self.state_key(m) for m in names])
        return {m: b for m, b in zip(names, blobs) if b is not None}

    def load_model(self, model: str) -> bytes | None:
        return self._r.get(self.state_key(model))

    # -- label join ---------------------------------------------------------------------
    def remember_predictions(self, items: Iterable[tuple[str, PendingPrediction]], ttl_seconds: int) -> None:
        """Store predictions awaiting labels; re-writing the same event is harmless (idempotent)."""
        pipe = self._r.pipeline(transaction=False)
        n = 0
        for event_id, p in items:
            value = orjson.dumps([p.model, p.model_version, p.deployment, p.prediction, p.ts])
            pipe.set(self.pending_key(event_id), value, ex=ttl_seconds)
            n += 1
        if n:
            pipe.execute()

    @property
    def inference_clock_key(self) -> str:
        return f"{self._prefix}:inference_clock:{self._group}"

    def advance_inference_clock(self, clocks: Mapping[str, float]) -> None:
        """Record, per inference partition (``topic:partition``), the time up to which its
        predictions have been routed (message timestamp, or now when caught up)."""
        if clocks:
            self._r.hset(self.inference_clock_key, mapping={k: repr(float(v)) for k, v in clocks.items()})

    def inference_clock(self) -> dict[str, float]:
        """What :meth:`advance_inference_clock` recorded, from every worker of the group."""
        out: dict[str, float] = {}
        for k, v in self._r.hgetall(self.inference_clock_key).items():
            try:
                out[k.decode()] = float(v)
            except (UnicodeDecodeError, ValueError):
                continue
        return out

    def lookup_predictions(self, event_ids: list[str]) -> list[PendingPrediction | None]:
        """The pending prediction of each event id, or None when unknown or past the horizon."""
        if not event_ids:
            return []
        out: list[PendingPrediction | None] = []
        for raw in self._r.mget([self.pending_key(e) for e in event_ids]):
            out.append(_decode_pending(raw))
        return out


def _decode_pending(raw: bytes | None) -> PendingPrediction | None:
    if raw is None:
        return None
    try:
        model, version, deployment, prediction, ts = orjson.loads(raw)
        if not all(isinstance(x, str) for x in (model, version, deployment, prediction)):
            return None
        return PendingPrediction(model, version, deployment, prediction, float(ts))
    except (orjson.JSONDecodeError, ValueError, TypeError):
        return None


def _join(models: Mapping[str, bytes]) -> str:
    return orjson.dumps(sorted(models)).decode()


def _split(raw: bytes | None) -> list[str]:
    if not raw:
        return []
    value = orjson.loads(raw)
    return [m for m in value if isinstance(m, str)]
