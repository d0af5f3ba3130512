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
           timeout: float) -> list[Any]:
    """Messages until ``batch_size`` of them, ``max_bytes`` of payload or ``timeout`` seconds.

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
            return out
        if len(got) < asked and time.monotonic() >= deadline:  # drained: waiting longer is past the timeout
            return out


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
