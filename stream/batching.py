"""Micro-batches bounded by count *and* payload bytes, gathered from a Kafka consumer.

``consume(n, timeout)`` of librdkafka copies every message's payload into Python at once: a batch
of 5,000 oversized messages held 1.3 GB. :func:`gather` asks for at most as many messages as the
byte budget still has room for at the largest accepted size (``unit``), so a batch holds at most
``max_bytes`` plus one chunk's overshoot by messages beyond ``unit`` (those are dead-lettered
unparsed; the topic's ``max.message.bytes`` caps them).
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol


class _Message(Protocol):
    def key(self) -> bytes | None: ...

    def value(self) -> bytes | None: ...


def payload_bytes(msg: Any) -> int:
    """Key plus value bytes of one fetched message (0 for error events)."""
    return len(msg.key() or b"") + len(msg.value() or b"")


def gather(consume: Callable[[int, float], Sequence[_Message]], batch_size: int, max_bytes: int, unit: int,
           timeout: float) -> tuple[list[Any], bool]:
    """Messages until ``batch_size`` of them, ``max_bytes`` of payload or ``timeout`` seconds, and
    whether the batch ended full (at the count or the byte budget: more input is waiting).

    Like one ``consume(batch_size, timeout)``, it returns at once when messages are waiting.
    ``consume`` is ``Consumer.consume``; each call asks for at most ``(max_bytes - held) // unit``
    messages (at least one), so that messages at ``unit`` bytes never overshoot the budget.
    """
    deadline = time.monotonic() + timeout
    out: list[Any] = []
    held = 0
    while True:
        room = max(1, (max_bytes - held) // max(1, unit))
        asked = min(batch_size - len(out), room)
        got = consume(asked, max(0.0, deadline - time.monotonic()))
        out.extend(got)
        held += sum(payload_bytes(m) for m in got)
        if len(out) >= batch_size or held >= max_bytes:
            return out, True
        if len(got) < asked and time.monotonic() >= deadline:  # drained: waiting longer is past the timeout
            return out, False


def model_runs(records: Iterable[tuple[str, str, list, list]]) -> list[tuple[str, str, list, list]]:
    """Decoded records ``(model, kind, items, sources)`` grouped per model into maximal runs of one
    kind: each model's items in their order, models in order of first appearance.

    Models' states are independent and a monitor's results do not depend on how its stream is
    cut into batches, so a model's records need not wait behind other models' records: many
    models sharing a partition get one engine call per run of their own records, not per record.
    """
    by_model: dict[str, list[tuple[str, str, list, list]]] = {}
    for model, kind, items, sources in records:
        runs = by_model.setdefault(model, [])
        if runs and runs[-1][1] == kind:
            runs[-1][2].extend(items)
            runs[-1][3].extend(sources)
        else:
            runs.append((model, kind, list(items), list(sources)))
    return [run for runs in by_model.values() for run in runs]


#: records of at least this many payload bytes on average (a few hundred events of ten features
#: each) are detected without being held: their runs are long already
LONG_RECORD_BYTES = 32 * 1024


class DetectionHold:
    """Internal records held back, so that each model's records reach the engine in fewer, longer runs.

    With many models, every micro-batch carries a short run of each model (a 5,000-event batch over
    200 models: 25 events each; a 50 ms batch of a steady 20,000 events/s: 5 each), and each engine
    call has a fixed cost. While batches come back full (input is waiting), a partition's records
    wait until the oldest of them has waited ``seconds``; while they come back short (the worker is
    caught up), ``caught_up_seconds`` (0: not at all), which bounds what the hold adds to alert
    latency at a steady rate. Everything is released once the held records reach ``max_bytes`` of
    payload. A partition whose records average ``long_record_bytes`` or more (a few hundred events
    each: their runs are long already) is not held: holding it would gain nothing and would take
    away the detection work that the label join's Redis write overlaps with. Held records stay
    uncommitted: their offsets are not in the transaction until they are detected, so a crash or a
    rewind reads them again from Kafka (:meth:`clear` forgets them).

    >>> hold = DetectionHold(0.25, 1 << 20, size=len, caught_up_seconds=0.1)
    >>> hold.take({0: [b"r1"]}, backlog=True, now=10.0)
    {}
    >>> hold.take({0: [b"r2"], 1: [b"s1"]}, backlog=True, now=10.3)
    {0: [b'r1', b'r2']}
    >>> hold.take({}, backlog=False, now=10.35)  # caught up: held records wait 0.1 s at most
    {}
    >>> hold.take({}, backlog=False, now=10.41)
    {1: [b's1']}
    >>> list(hold.take({2: [b"x" * 40_000]}, backlog=True, now=10.5))  # a long record: at once
    [2]
    """

    def __init__(self, seconds: float, max_bytes: int, size: Callable[[Any], int] = payload_bytes,
                 long_record_bytes: int = LONG_RECORD_BYTES, caught_up_seconds: float = 0.0) -> None:
        self.seconds = seconds
        self.caught_up_seconds = caught_up_seconds
        self.max_bytes = max_bytes
        self.long_record_bytes = long_record_bytes
        self._size = size
        self._held: dict[int, list[Any]] = {}
        self._since: dict[int, float] = {}
        self._part_bytes: dict[int, int] = {}

    @property
    def partitions(self) -> frozenset[int]:
        """Partitions with records held back."""
        return frozenset(self._held)

    def __bool__(self) -> bool:
        return bool(self._held)

    @property
    def records(self) -> int:
        """Records held back."""
        return sum(map(len, self._held.values()))

    def take(self, records: dict[int, list[Any]], backlog: bool, now: float) -> dict[int, list[Any]]:
        """Hold this batch's records (by partition, in offset order); return those due for detection
        now, with each partition's earlier held records ahead of its new ones."""
        held, since, part_bytes = self._held, self._since, self._part_bytes
        for partition, msgs in records.items():
            if not msgs:
                continue
            size = sum(map(self._size, msgs))
            if partition in held:
                held[partition].extend(msgs)
                part_bytes[partition] += size
            else:
                held[partition] = list(msgs)
                since[partition] = now
                part_bytes[partition] = size
        wait = self.seconds if backlog else self.caught_up_seconds
        release_all = wait <= 0 or sum(part_bytes.values()) >= self.max_bytes
        due = {p: held[p] for p in list(held)
               if release_all or now - since[p] >= wait
               or part_bytes[p] >= self.long_record_bytes * len(held[p])}
        for partition in due:
            del held[partition], since[partition], part_bytes[partition]
        return due

    def clear(self) -> None:
        """Forget every held record (the consumer rewinds to the committed offsets, or the partitions
        went to another worker)."""
        self._held.clear()
        self._since.clear()
        self._part_bytes.clear()
