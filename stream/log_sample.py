"""A bounded sample of raw log lines: the start of a JSONL file (plain or gzip) or of a Kafka topic.

``driftline init`` learns a starter configuration from such a sample. Input is untrusted: the
sample is bounded in lines, in bytes per line (a longer line is counted and skipped without
being held in memory) and in total bytes, and a truncated gzip keeps what was read.

>>> import io
>>> s = sample_stream(io.BytesIO(b'{"a": 1}\\n\\n' + b'x' * 300 + b'\\n{"b": 2}\\n'), "demo", limit=10, max_line_bytes=100)
>>> (len(s.lines), s.skipped["oversized"], s.skipped["blank_line"], s.exhausted)
(2, 1, 1, True)
"""
from __future__ import annotations

import time
import uuid
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

DEFAULT_LINES = 20_000
MAX_LINE_BYTES = 256 * 1024          # decoding.Limits.max_bytes: a longer message is dead-lettered anyway
MAX_TOTAL_BYTES = 64 * 1024 * 1024   # the whole sample held in memory


@dataclass
class Sample:
    """Raw lines of one source, with what was skipped while reading them."""

    source: str                     # human description: "inference.jsonl", "topic ml.inference"
    lines: list[bytes] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)
    exhausted: bool = False         # the whole source was read (not stopped by a bound)

    bytes: int = 0

    @property
    def read(self) -> int:
        """Lines read, kept or skipped."""
        return len(self.lines) + sum(self.skipped.values())

    def take(self, line: bytes | None, oversized: bool, max_total_bytes: int, empty: str = "blank_line") -> bool:
        """Keep or count one line; False once the sample's byte budget is spent."""
        if oversized:
            self.skipped["oversized"] += 1
        elif line is None or not line.strip():
            self.skipped[empty] += 1
        else:
            self.bytes += len(line)
            if self.bytes > max_total_bytes:
                self.skipped["sample_bytes_exceeded"] += 1
                return False
            self.lines.append(line.rstrip(b"\r\n"))
        return True


def _bounded_line(fh: IO[bytes], max_bytes: int) -> tuple[bytes | None, bool]:
    """The next line (None at the end) and whether it exceeded ``max_bytes`` (then its content is dropped)."""
    line = fh.readline(max_bytes + 1)
    if not line:
        return None, False
    if len(line) <= max_bytes or line.endswith(b"\n"):
        return line, False
    while True:  # skip the rest of an oversized line without holding it
        rest = fh.readline(1 << 16)
        if not rest or rest.endswith(b"\n"):
            return b"", True


def sample_stream(fh: IO[bytes], source: str, limit: int = DEFAULT_LINES, max_line_bytes: int = MAX_LINE_BYTES,
                  max_total_bytes: int = MAX_TOTAL_BYTES) -> Sample:
    """Read at most ``limit`` lines of ``fh`` (0: no line limit) into a :class:`Sample`."""
    out = Sample(source)
    while limit <= 0 or out.read < limit:
        try:
            line, oversized = _bounded_line(fh, max_line_bytes)
        except (OSError, EOFError, zlib.error):  # a truncated or corrupt gzip member: keep what was read
            out.skipped["unreadable_input"] += 1
            out.exhausted = True
            return out
        if line is None:
            out.exhausted = True
            return out
        if not out.take(line, oversized, max_total_bytes):
            return out
    return out


def sample_file(path: str | Path, limit: int = DEFAULT_LINES, max_line_bytes: int = MAX_LINE_BYTES) -> Sample:
    """The first ``limit`` lines of a JSONL file (``-`` is stdin; gzip recognized by its magic bytes)."""
    from stream.replay import open_lines

    fh = open_lines(path)
    try:
        return sample_stream(fh, "stdin" if str(path) == "-" else Path(path).name, limit, max_line_bytes)
    finally:
        if str(path) != "-":
            fh.close()


def sample_topic(bootstrap: str, topic: str, limit: int = DEFAULT_LINES, timeout: float = 10.0,
                 max_line_bytes: int = MAX_LINE_BYTES, settings: dict | None = None) -> Sample:
    """Up to ``limit`` committed messages of ``topic``, read from the beginning of every partition.

    Stops at ``limit`` messages, when every partition is read to its end, or after ``timeout``
    seconds. No offsets are committed (a throw-away group id). Raises ``ValueError`` when the topic
    does not exist or the broker cannot be reached within the timeout.
    """
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

    conf = {"bootstrap.servers": bootstrap, "group.id": f"driftline-init-{uuid.uuid4().hex[:12]}",
            "enable.auto.commit": False, "isolation.level": "read_committed", "auto.offset.reset": "earliest",
            "enable.partition.eof": True, "fetch.max.bytes": 8 * 1024 * 1024}
    conf.update(settings or {})
    consumer = Consumer(conf)
    out = Sample(f"topic {topic}")
    deadline = time.monotonic() + timeout
    try:
        try:
            meta = consumer.list_topics(topic, timeout=max(timeout, 1.0)).topics.get(topic)
        except KafkaException as exc:
            raise ValueError(f"cannot read the metadata of topic {topic!r} from {bootstrap}: {exc}") from None
        if meta is None or meta.error is not None or not meta.partitions:
            raise ValueError(f"topic {topic!r} does not exist on {bootstrap}")
        parts = sorted(meta.partitions)
        pending = set()
        for p in parts:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=max(timeout, 1.0))
            if high > low:
                pending.add(p)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        while pending and (limit <= 0 or out.read < limit) and time.monotonic() < deadline:
            want = 500 if limit <= 0 else min(500, limit - out.read)
            for msg in consumer.consume(want, 0.5):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        pending.discard(msg.partition())
                    continue
                value = msg.value()
                if not out.take(value, value is not None and len(value) > max_line_bytes, MAX_TOTAL_BYTES,
                                "empty_message"):
                    return out
        out.exhausted = not pending
    finally:
        consumer.close()
    return out
