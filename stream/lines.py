"""JSON-lines input of a replay: files opened (gzip or not, stdin) and decoded line by line or in batches.

Positions encode the stream and the line number (:func:`stream.records.source_position`), so
alerts raised from a replay name the line that set them off.
"""
from __future__ import annotations

import gzip
import sys
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from detectors.events import InferenceEvent, LabelEvent
from stream.decoding import DecodeError, Decoder
from stream.records import source_position

INFERENCE, LABELS, REGISTRY = 0, 1, 2  # topic indices used in positions (as the worker numbers its topics)
STREAM_NAMES = ("inference", "labels", "registry")
#: What reading a line raises when the input breaks off (a truncated or corrupt gzip member).
INPUT_BROKEN = (OSError, EOFError, zlib.error)


def open_lines(path: str | Path) -> IO[bytes]:
    """A binary line source: ``-`` is stdin; gzip is recognized by its magic bytes."""
    if str(path) == "-":
        raw: Any = sys.stdin.buffer
    else:
        raw = open(path, "rb")
    head = raw.peek(2)[:2] if hasattr(raw, "peek") else b""
    if head != b"\x1f\x8b":
        return raw
    unzipped = gzip.open(raw, "rb")
    if raw.seekable():  # a plain text file that merely starts with the magic bytes is read as lines
        try:
            unzipped.peek(1)
        except (OSError, EOFError, zlib.error):
            raw.seek(0)
            return raw
    return unzipped  # type: ignore[return-value]


def decoded_items(fh: IO[bytes], stream: int, decoder: Decoder, rejected: Counter
                  ) -> Iterator[tuple[float, int, int, InferenceEvent | LabelEvent]]:
    """(ts, stream, line, event) for every decodable line; rejects are counted by reason."""
    decode = decoder.decode_inference if stream == INFERENCE else decoder.decode_label
    base = source_position(stream, 0, 0)
    lines = enumerate(fh, 1)
    while True:
        try:
            line_no, line = next(lines)
        except StopIteration:
            return
        except INPUT_BROKEN:  # keep what was read
            rejected["unreadable_input"] += 1
            return
        if not line or line.isspace():
            rejected["blank_line"] += 1
            continue
        try:
            item = decode(line)  # orjson ignores the trailing newline
        except DecodeError as err:
            rejected[err.reason] += 1
            continue
        item.position = base | line_no
        yield item.ts, stream, line_no, item


def decoded_batches(fh: IO[bytes], stream: int, decoder: Decoder, rejected: Counter,
                    batch_size: int) -> Iterator[list[Any]]:
    """Lists of up to ``batch_size`` decoded lines of one stream, positions set; rejects counted by reason.

    What :func:`decoded_items` yields, without a tuple per line: the batched paths of
    :func:`~stream.replay.run_replay` read whole lists and merge them by index. Lines are decoded
    a chunk at a time (:func:`decode_lines`), each chunk as many lines as the list still has room for.
    """
    decode_many = decoder.decode_inference_many if stream == INFERENCE else decoder.decode_label_many
    base = source_position(stream, 0, 0)
    line_no = 0
    lines = iter(fh)
    items: list[Any] = []
    while True:
        want = batch_size - len(items)
        chunk, broken = read_chunk(lines, want)
        items.extend(decode_lines(decode_many, base, line_no, chunk, rejected))
        line_no += len(chunk)
        if broken:
            rejected["unreadable_input"] += 1
        if broken or len(chunk) < want:  # the end of the input
            if items:
                yield items
            return
        if len(items) >= batch_size:
            yield items
            items = []


def read_chunk(lines: Iterator[bytes], size: int) -> tuple[list[bytes], bool]:
    """Up to ``size`` lines, and whether the input broke off (a truncated or corrupt gzip member)
    after them; fewer than ``size`` lines without a break means the input ended."""
    chunk: list[bytes] = []
    try:
        for line in lines:
            chunk.append(line)
            if len(chunk) >= size:
                break
    except INPUT_BROKEN:  # keep what was read
        return chunk, True
    return chunk, False


def decode_lines(decode_many: Callable[[list[bytes]], list[Any]], base: int, before: int, chunk: list[bytes],
                 rejected: Counter) -> list[Any]:
    """The decodable lines of ``chunk`` (the lines after line number ``before``), positions set from
    ``base``; blank and rejected lines counted by reason."""
    numbers: list[int] = []
    raws: list[bytes] = []
    line_no = before
    for line in chunk:
        line_no += 1
        if not line or line.isspace():
            rejected["blank_line"] += 1
            continue
        numbers.append(line_no)
        raws.append(line)  # orjson and msgspec ignore the trailing newline
    items: list[Any] = []
    for no, item in zip(numbers, decode_many(raws)):
        if isinstance(item, Exception):
            if not isinstance(item, DecodeError):
                raise item
            rejected[item.reason] += 1
            continue
        item.position = base | no
        items.append(item)
    return items
