"""Redis state store: per-model detector state committed together with consumer offsets.

Key scheme (``{p}`` is the configured key prefix, ``driftline`` by default). Keys that do not
belong to one model start with ``@``, which model names may not, so no model can collide with them:

- ``{p}:{model}:state``          committed ModelMonitor bytes (versioned format of ``detectors``)
- ``{p}:{model}:state:staged``   bytes of a batch whose Kafka transaction is not yet known to be committed
- ``{p}:@offsets:{group}:{topic}:{partition}``  hash: ``committed`` and ``staged`` next-offsets, and
  the ``owner`` token of the worker that holds the partition
- ``{p}:@pending:{bucket}``      hash: event id -> the predictions awaiting its label, one line per model
  (``orjson [model, version, deployment, prediction, ts]``); one hash per wall-clock bucket of
  :func:`pending_bucket_seconds` (a sixteenth of the label-join horizon), written with one script
  call per batch and expiring as a whole; a lookup reads every bucket that can still exist, so a
  prediction joins for at least the horizon and at most the horizon plus three buckets
- ``{p}:@clock:{group}``         hash: inference partition -> time its predictions are routed up to

A batch is made durable in two steps so that state, offsets and published control messages
agree after a crash at any moment:

1. ``stage``: one MULTI/EXEC writes every touched model's new state and the partition's next
   offset as *staged*;
2. the Kafka transaction carrying the batch's control messages and consumer offsets commits;
3. ``promote``: one MULTI/EXEC turns the staged values into the committed ones.

On partition assignment ``restore`` claims the partition (writes this worker's owner token) and
settles a leftover staged batch by asking Kafka whether its transaction committed (the group's
committed offset equals the staged offset): promote if so, discard otherwise. The worker then
seeks to the committed offset in Redis. Stage, promote and discard are Lua scripts that act only
while the partition's owner token is this worker's: a worker that stalled past its session and
lost the partition can neither overwrite nor discard the new owner's staged batch
(:class:`OwnershipLost`).

Redis may lose its last writes (``appendfsync everysec`` and an operating-system crash) while
Kafka keeps the transactions they belonged to. What survives is a prefix of the write history,
so a partition's committed offset and its models' states still agree with each other, only
older. ``stage`` therefore checks that the committed offset is the one the worker last promoted
(:class:`StateLostError` otherwise), and the worker rebuilds lost state from the internal topic
(see ``Worker._catch_up``) or rewrites it from memory when it notices a restarted Redis.
"""
from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, Protocol

import msgspec
import orjson
import redis

from detectors.errors import StateFormatError

# KEYS: offsets hash, then staged keys; ARGV: owner, staged offset, staged models, expected committed
# offset ('*': any, '': none yet), then the blobs
_STAGE = """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
if ARGV[4] ~= '*' and (redis.call('HGET', KEYS[1], 'committed') or '') ~= ARGV[4] then return 2 end
for i = 2, #KEYS do redis.call('SET', KEYS[i], ARGV[i + 3]) end
redis.call('HSET', KEYS[1], 'staged', ARGV[2], 'staged_models', ARGV[3])
return 1
"""
# KEYS: offsets hash, n state keys, staged keys to drop; ARGV: owner, committed offset, n, the n blobs.
# A missing owner token (lost with Redis's last writes) is taken back.
_WRITE = """
local owner = redis.call('HGET', KEYS[1], 'owner')
if owner and owner ~= ARGV[1] then return 0 end
local n = tonumber(ARGV[3])
for i = 1, n do redis.call('SET', KEYS[i + 1], ARGV[i + 3]) end
for i = n + 2, #KEYS do redis.call('DEL', KEYS[i]) end
redis.call('HSET', KEYS[1], 'committed', ARGV[2], 'owner', ARGV[1])
redis.call('HDEL', KEYS[1], 'staged', 'staged_models')
return 1
"""
# KEYS: offsets hash, then pairs (staged key, state key); ARGV: owner, staged offset expected
_PROMOTE = """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
if redis.call('HGET', KEYS[1], 'staged') ~= ARGV[2] then return 2 end
for i = 2, #KEYS, 2 do
  if redis.call('EXISTS', KEYS[i]) == 1 then redis.call('RENAME', KEYS[i], KEYS[i + 1]) end
end
redis.call('HSET', KEYS[1], 'committed', ARGV[2])
redis.call('HDEL', KEYS[1], 'staged', 'staged_models')
return 1
"""
# KEYS: pending bucket, then the other buckets of the horizon; ARGV: expire seconds, the most
# pending event ids (0: no bound), then one MessagePack array of pairs (event id, record line): one
# argument, not two per event (redis-py packs every argument in Python). A record already present
# moves to the end (a retried batch stays idempotent; per model the last line wins). A new event id
# past the bound is not remembered; returns how many were not. Ids are read with one HMGET and
# written with one HSET per slice of ``step`` ids (an id seen twice in a slice sees its first record).
_REMEMBER = """
local key = KEYS[1]
local bound = tonumber(ARGV[2])
local held = 0
if bound > 0 then
  for i = 1, #KEYS do held = held + redis.call('HLEN', KEYS[i]) end
end
local items = cmsgpack.unpack(ARGV[3])
local dropped = 0
local step = 2000
for s = 1, #items, 2 * step do
  local ids = {}
  for i = s, math.min(s + 2 * step - 1, #items), 2 do ids[#ids + 1] = items[i] end
  local stored = redis.call('HMGET', key, unpack(ids))
  local now, order = {}, {}
  for k = 1, #ids do
    local field, rec = ids[k], items[s + 2 * k - 1]
    local old = now[field]
    if old == nil then old = stored[k] end
    if not old then
      if bound > 0 and held >= bound then
        dropped = dropped + 1
      else
        now[field] = rec
        order[#order + 1] = field
        held = held + 1
      end
    else
      local a, e = string.find(old, rec, 1, true)
      if a then old = string.sub(old, 1, a - 1) .. string.sub(old, e + 1) end
      if #old > 65536 then old = '' end
      if now[field] == nil then order[#order + 1] = field end
      now[field] = old .. rec
    end
  end
  if #order > 0 then
    local args = {}
    for k = 1, #order do
      args[#args + 1] = order[k]
      args[#args + 1] = now[order[k]]
    end
    redis.call('HSET', key, unpack(args))
  end
end
if redis.call('EXISTS', key) == 1 then redis.call('EXPIRE', key, ARGV[1]) end
return dropped
"""
# KEYS: pending buckets, oldest first; ARGV: event ids. Per existing bucket, its values of the ids
# (the ids cross the wire once, absent buckets cost nothing).
_LOOKUP = """
local out = {}
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    local vals = {}
    for j = 1, #ARGV, 4000 do
      local part = redis.call('HMGET', KEYS[i], unpack(ARGV, j, math.min(j + 3999, #ARGV)))
      for k = 1, #part do vals[#vals + 1] = part[k] end
    end
    out[#out + 1] = vals
  end
end
return out
"""
_PENDING_BUCKETS = 16  # buckets per label-join horizon
# KEYS: offsets hash, then staged keys; ARGV: owner
_DISCARD = """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
for i = 2, #KEYS do redis.call('DEL', KEYS[i]) end
redis.call('HDEL', KEYS[1], 'staged', 'staged_models')
return 1
"""


class OwnershipLost(RuntimeError):
    """Another worker claimed the partition: this worker must not touch its state any more."""


class StateLostError(RuntimeError):
    """Redis no longer holds the committed offset this worker last promoted (it lost writes)."""


ANY_OFFSET = -2  # ``stage`` without checking the committed offset


@dataclass(frozen=True, slots=True)
class PartitionKey:
    """A topic partition of the internal (rekeyed) topic."""

    topic: str
    partition: int


@dataclass(slots=True)
class PendingPrediction:
    """What the label join needs to remember about a prediction until its label arrives."""

    model: str
    model_version: str
    deployment: str
    prediction: str
    ts: float


class Prediction(Protocol):
    """What the label join remembers of a prediction (a :class:`PendingPrediction` or an ``InferenceEvent``)."""

    model: str
    model_version: str
    deployment: str
    prediction: str
    ts: float


class StateStore:
    """Reads and writes driftline state in Redis under one key prefix."""

    def __init__(self, client: redis.Redis, prefix: str, group: str, owner: str | None = None,
                 pending_ttl_seconds: int = 86_400, clock: Callable[[], float] = time.time,
                 max_pending: int | None = None) -> None:
        self._r = client
        self._pending_ttl = pending_ttl_seconds
        self._max_pending = max_pending
        self._clock = clock
        self._prefix = prefix
        self._group = group
        self.owner = owner or uuid.uuid4().hex
        self._stage_script = client.register_script(_STAGE)
        self._promote_script = client.register_script(_PROMOTE)
        self._discard_script = client.register_script(_DISCARD)
        self._write_script = client.register_script(_WRITE)
        self._remember_script = client.register_script(_REMEMBER)
        self._lookup_script = client.register_script(_LOOKUP)

    # -- keys ---------------------------------------------------------------------------
    def state_key(self, model: str) -> str:
        return f"{self._prefix}:{model}:state"

    def staged_state_key(self, model: str) -> str:
        return f"{self._prefix}:{model}:state:staged"

    def offsets_key(self, part: PartitionKey) -> str:
        return f"{self._prefix}:@offsets:{self._group}:{part.topic}:{part.partition}"

    def legacy_offsets_key(self, part: PartitionKey) -> str:
        """Where releases before the ``@`` key space kept a partition's offsets (read once, then renamed)."""
        return f"{self._prefix}:offsets:{self._group}:{part.topic}:{part.partition}"

    def pending_key(self, bucket: int) -> str:
        return f"{self._prefix}:@pending:{bucket}"

    # -- batch commit -------------------------------------------------------------------
    def stage(self, part: PartitionKey, next_offset: int, states: Mapping[str, bytes],
              expect_committed: int | None = ANY_OFFSET) -> None:
        """Atomically write a batch's model states and next offset as staged (owner only).

        With ``expect_committed`` (None: no committed offset yet), raise :class:`StateLostError`
        instead when Redis's committed offset differs: the models this batch does not touch may
        then be older than the worker believes.
        """
        names = list(states)
        keys = [self.offsets_key(part)] + [self.staged_state_key(m) for m in names]
        expected = "*" if expect_committed == ANY_OFFSET else ("" if expect_committed is None else str(expect_committed))
        args = [self.owner, next_offset, _join(states), expected] + [states[m] for m in names]
        done = self._stage_script(keys=keys, args=args)
        if done == 2:
            raise StateLostError(f"{keys[0]}: committed offset is not {expect_committed} (Redis lost writes)")
        if not done:
            raise OwnershipLost(f"partition {part.topic}[{part.partition}] is owned by another worker")

    def write_committed(self, part: PartitionKey, next_offset: int, states: Mapping[str, bytes]) -> None:
        """Atomically set committed states and offset (state rebuilt after Redis lost writes; owner only)."""
        key = self.offsets_key(part)
        names = list(states)
        staged = [self.staged_state_key(m) for m in _split(self._r.hget(key, "staged_models"), key)]
        keys = [key] + [self.state_key(m) for m in names] + staged
        args = [self.owner, next_offset, len(names)] + [states[m] for m in names]
        if not self._write_script(keys=keys, args=args):
            raise OwnershipLost(f"partition {part.topic}[{part.partition}] is owned by another worker")

    def committed_offset(self, part: PartitionKey) -> int | None:
        key = self.offsets_key(part)
        return parse_offset(self._r.hget(key, "committed"), key)

    def server_id(self) -> str:
        """Redis's ``run_id``: it changes when the server restarts (and may have lost writes)."""
        return str(self._r.info("server").get("run_id", ""))

    def promote(self, part: PartitionKey) -> None:
        """Atomically turn the partition's staged batch into the committed state (owner only)."""
        key = self.offsets_key(part)
        staged = self._r.hmget(key, "staged", "staged_models")
        if staged[0] is None:
            return
        parse_offset(staged[0], key)
        keys = [key]
        for model in _split(staged[1], key):
            keys += [self.staged_state_key(model), self.state_key(model)]
        if self._promote_script(keys=keys, args=[self.owner, staged[0]]) == 0:
            raise OwnershipLost(f"partition {part.topic}[{part.partition}] is owned by another worker")

    def discard_staged(self, part: PartitionKey) -> None:
        """Drop a staged batch whose Kafka transaction never committed (owner only)."""
        key = self.offsets_key(part)
        models = _split(self._r.hget(key, "staged_models"), key)
        if self._discard_script(keys=[key] + [self.staged_state_key(m) for m in models], args=[self.owner]) == 0:
            raise OwnershipLost(f"partition {part.topic}[{part.partition}] is owned by another worker")

    def claim(self, part: PartitionKey) -> None:
        """Make this worker the partition's owner (on assignment: the group decided)."""
        key = self.offsets_key(part)
        if not self._r.exists(key):
            legacy = self.legacy_offsets_key(part)
            if self._r.exists(legacy):
                self._r.renamenx(legacy, key)
        self._r.hset(key, "owner", self.owner)

    def owns(self, part: PartitionKey) -> bool:
        owner = self._r.hget(self.offsets_key(part), "owner")
        return owner is not None and owner.decode("utf-8", "replace") == self.owner

    def restore(self, part: PartitionKey, kafka_committed: int | None, claim: bool = True) -> int | None:
        """Settle any staged batch against Kafka's committed offset; return the offset to resume at.

        ``claim=False`` (a rewind after a failed batch, not a new assignment) raises
        :class:`OwnershipLost` instead of taking the partition back from its new owner. A stored
        offset that is not a non-negative integer raises :class:`StateFormatError`.
        """
        if claim:
            self.claim(part)
        elif not self.owns(part):
            if self._r.hget(self.offsets_key(part), "owner") is not None:
                raise OwnershipLost(f"partition {part.topic}[{part.partition}] is owned by another worker")
            self.claim(part)  # the token was lost with Redis's last writes; the group still assigns it here
        key = self.offsets_key(part)
        staged = parse_offset(self._r.hget(key, "staged"), key)
        if staged is not None:
            if kafka_committed is not None and staged == kafka_committed:
                self.promote(part)
            else:
                self.discard_staged(part)
        return parse_offset(self._r.hget(key, "committed"), key)

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
    def remember_predictions(self, items: Iterable[tuple[str, Prediction]], ttl_seconds: int | None = None) -> int:
        """Store predictions awaiting labels in the current bucket with one script call (idempotent).

        ``ttl_seconds`` defaults to the store's label-join horizon (lookups search that horizon's buckets).
        Returns how many new event ids were not remembered because ``max_pending`` ids are pending.
        """
        return self.remember_lines(pending_lines(items), ttl_seconds)

    def remember_lines(self, lines: list[tuple[str, bytes]], ttl_seconds: int | None = None) -> int:
        """:meth:`remember_predictions` for predictions already encoded by :func:`pending_lines`."""
        return self.remember_batch(encode_pending(lines), ttl_seconds)

    def remember_batch(self, batch: PendingBatch, ttl_seconds: int | None = None) -> int:
        """:meth:`remember_predictions` for predictions already encoded by :func:`encode_pending`
        (a batch may be remembered again: the script is idempotent)."""
        if not batch.count:
            return 0
        ttl_seconds = self._pending_ttl if ttl_seconds is None else ttl_seconds
        width = pending_bucket_seconds(ttl_seconds)
        current = int(self._clock() // width)
        # the bound counts every bucket a lookup would search (see pending_for)
        others = [self.pending_key(b) for b in range(int((self._clock() - ttl_seconds) // width) - 3, current + 2)
                  if b != current] if self._max_pending else []
        keys = [self.pending_key(current)] + others
        return sum(int(self._remember_script(keys=keys, args=[ttl_seconds + 3 * width, self._max_pending or 0, chunk]))
                   for chunk in batch.chunks)

    @property
    def inference_clock_key(self) -> str:
        return f"{self._prefix}:@clock:{self._group}"

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
                clock = float(v)
                if math.isfinite(clock):
                    out[k.decode()] = clock
            except (UnicodeDecodeError, ValueError):
                continue
        return out

    def lookup_predictions(self, event_ids: list[str],
                           models: frozenset[str] | None = None) -> list[list[PendingPrediction]]:
        """Every pending prediction of each event id (one per model, sorted by model name; empty when
        unknown or past the horizon); ``models`` limits the join to a label topic's scope."""
        if not event_ids:
            return []
        width = pending_bucket_seconds(self._pending_ttl)
        now = self._clock()
        keys = [self.pending_key(b) for b in range(int((now - self._pending_ttl) // width) - 3, int(now // width) + 2)]
        merged: list[dict[str, PendingPrediction] | None] = [None] * len(event_ids)
        for start in range(0, len(event_ids), 10_000):
            ids = event_ids[start:start + 10_000]
            for values in self._lookup_script(keys=keys, args=ids):  # oldest bucket first: later lines win
                if not isinstance(values, list) or len(values) != len(ids):
                    continue
                self._merge(merged, start, values, models)
        return [[] if found is None else [found[m] for m in sorted(found)] for found in merged]

    @staticmethod
    def _merge(merged: list, start: int, values: list, models: frozenset[str] | None) -> None:
        """Fold one bucket's values into ``merged`` (a later line of a model replaces an earlier one)."""
        for i, raw in enumerate(values, start):
            if not isinstance(raw, bytes):
                continue
            found = merged[i]
            if found is None:
                found = merged[i] = {}
            for line in raw.split(b"\n"):
                p = _decode_pending(line) if line else None
                if p is not None and (models is None or p.model in models):
                    found[p.model] = p


def pending_lines(items: Iterable[tuple[str, Prediction]]) -> list[tuple[str, bytes]]:
    """(event id, stored line) per prediction: compact enough to keep the last seconds in memory."""
    dumps, fields = orjson.dumps, _LINE_FIELDS
    return [(event_id, dumps(fields(p)) + b"\n") for event_id, p in items]


@dataclass(frozen=True, slots=True)
class PendingBatch:
    """Predictions awaiting labels, encoded once as the remember script's arguments.

    A routed batch is kept this way for a few seconds (to remember it again after a Redis restart):
    one bytes object per :data:`_REMEMBER_CHUNK` predictions instead of three Python objects each.
    """

    chunks: tuple[bytes, ...]
    count: int


_REMEMBER_CHUNK = 10_000  # predictions per script call (bounded script arguments)


def encode_pending(lines: list[tuple[str, bytes]]) -> PendingBatch:
    """The script arguments of :func:`pending_lines`: per chunk one MessagePack array of pairs
    (event id, line), lines as str (Redis' cmsgpack reads no bin type)."""
    chunks = []
    for i in range(0, len(lines), _REMEMBER_CHUNK):
        pairs: list[str] = []
        for event_id, line in lines[i:i + _REMEMBER_CHUNK]:
            pairs.append(event_id)
            pairs.append(line.decode())
        chunks.append(msgspec.msgpack.encode(pairs))
    return PendingBatch(tuple(chunks), len(lines))


def event_lines(events: Iterable[Any]) -> list[tuple[str, bytes]]:
    """:func:`pending_lines` of events that carry their own ``event_id`` (the routing hot path: no
    (id, prediction) pairs built first)."""
    dumps, fields = orjson.dumps, _LINE_FIELDS
    return [(e.event_id, dumps(fields(e)) + b"\n") for e in events]


#: What a stored line holds of a prediction, in order (read back by ``_decode_pending``).
_LINE_FIELDS = attrgetter("model", "model_version", "deployment", "prediction", "ts")


def pending_bucket_seconds(ttl_seconds: int) -> int:
    """Width of one pending-prediction bucket for a label-join horizon of ``ttl_seconds``."""
    return max(1, int(ttl_seconds) // _PENDING_BUCKETS)


def _decode_pending(raw: bytes) -> PendingPrediction | None:
    """A stored prediction line, or None unless it is ``[model, version, deployment, prediction, finite ts]``."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if type(value) is not list or len(value) != 5:
        return None
    name, version, deployment, prediction, ts = value
    if not all(type(x) is str for x in (name, version, deployment, prediction)):
        return None
    if type(ts) not in (int, float) or not math.isfinite(ts):
        return None
    return PendingPrediction(name, version, deployment, prediction, float(ts))


def parse_offset(raw: bytes | str | None, key: str) -> int | None:
    """A next-offset stored in Redis (None when absent); anything but a non-negative integer is refused.

    A negative value would be read by Kafka as a logical offset (end, beginning) and silently skip
    or replay input.
    """
    if raw is None:
        return None
    text = raw.decode("ascii", "replace") if isinstance(raw, bytes) else str(raw)
    if not (text.isascii() and text.isdigit() and len(text) <= 19 and int(text) < 1 << 63):
        raise StateFormatError(f"{key}: stored offset {text[:40]!r} is not a non-negative 64-bit integer")
    return int(text)


def _join(models: Mapping[str, bytes]) -> str:
    return orjson.dumps(sorted(models)).decode()


def _split(raw: bytes | None, key: str = "") -> list[str]:
    """The model names of a staged batch (a JSON list of strings)."""
    if not raw:
        return []
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        value = None
    if type(value) is not list:
        raise StateFormatError(f"{key}: staged_models is not a JSON list")
    return [m for m in value if isinstance(m, str)]
