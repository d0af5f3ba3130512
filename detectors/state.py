"""Versioned, validated, compact state encoding (no pickle, nothing is ever executed).

Layout of a state blob::

    b"DLST"  magic (4 bytes)
    u16      format version (big endian)       -- FORMAT_VERSION
    u32      CRC-32 of the compressed payload  -- detects truncation / bit rot
    ...      zlib-compressed orjson document

The document is plain JSON (numbers, strings, lists, dicts); binary parts (river's ADWIN
helper state) are base64 strings. Loading validates every field it reads with the
``check_*`` helpers below and raises :class:`StateFormatError` on anything unexpected.

>>> blob = encode_state({"a": 1})
>>> decode_state(blob)
{'a': 1}
>>> decode_state(b"junk")
Traceback (most recent call last):
...
detectors.errors.StateFormatError: state blob too short (4 bytes)
"""
from __future__ import annotations

import math
import struct
import zlib
from typing import Any

import orjson

from detectors.errors import StateFormatError

MAGIC = b"DLST"
FORMAT_VERSION = 5  # 5: per-event CUSUMs of categories, confidence, triggers and the canary's predictions / confidence; 4: numeric normal-score and squared-normal-score CUSUMs, event-level invalid bursts; 3: per-event CUSUMs (numeric ranks, indicators, labels), per-key alerts; 2: integrity reference
MAX_STATE_BYTES = 64 * 1024 * 1024  # decompressed size limit: hostile blobs cannot exhaust memory
_HEADER = struct.Struct(">4sHI")
INT64_MAX = (1 << 63) - 1


def encode_state(doc: dict[str, Any]) -> bytes:
    """Serialize a JSON-able document into a state blob."""
    payload = zlib.compress(orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY), 1)  # fast level: saved per batch
    return _HEADER.pack(MAGIC, FORMAT_VERSION, zlib.crc32(payload)) + payload


def decode_state(data: bytes) -> dict[str, Any]:
    """Parse a state blob; raises :class:`StateFormatError` on any defect."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise StateFormatError(f"state must be bytes, not {type(data).__name__}")
    data = bytes(data)
    if len(data) < _HEADER.size:
        raise StateFormatError(f"state blob too short ({len(data)} bytes)")
    magic, version, crc = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise StateFormatError("not a driftline state blob (bad magic)")
    if version != FORMAT_VERSION:
        raise StateFormatError(f"unsupported state format version {version} (this build reads {FORMAT_VERSION})")
    payload = data[_HEADER.size:]
    if zlib.crc32(payload) != crc:
        raise StateFormatError("state blob checksum mismatch (truncated or corrupted)")
    try:
        d = zlib.decompressobj()
        raw = d.decompress(payload, MAX_STATE_BYTES)
        if d.unconsumed_tail or not d.eof:
            raise StateFormatError("state payload too large or truncated")
        doc = orjson.loads(raw)
    except StateFormatError:
        raise
    except (zlib.error, orjson.JSONDecodeError, ValueError) as exc:
        raise StateFormatError(f"state payload is not valid compressed JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise StateFormatError("state document must be a JSON object")
    return doc


# -- validation helpers ----------------------------------------------------------------------
def check_dict(v: Any, what: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise StateFormatError(f"{what}: expected an object")
    return v


def check_list(v: Any, what: str, length: int | None = None) -> list[Any]:
    if not isinstance(v, list):
        raise StateFormatError(f"{what}: expected a list")
    if length is not None and len(v) != length:
        raise StateFormatError(f"{what}: expected {length} items, got {len(v)}")
    return v


def check_str(v: Any, what: str) -> str:
    """A string that can be written back (Python's json reads lone surrogates, which no encoder writes)."""
    if not isinstance(v, str):
        raise StateFormatError(f"{what}: expected a string")
    if not v.isascii():
        try:
            v.encode("utf-8")
        except UnicodeEncodeError:
            raise StateFormatError(f"{what}: not valid Unicode text (lone surrogate)") from None
    return v


def check_int(v: Any, what: str, lo: int | None = 0, hi: int | None = None) -> int:
    """An integer within [lo, hi]; never beyond 64 bits (counts end up in numpy int64 arrays)."""
    if not isinstance(v, int) or isinstance(v, bool):
        raise StateFormatError(f"{what}: expected an integer")
    top = INT64_MAX if hi is None else min(hi, INT64_MAX)
    if (lo is not None and v < lo) or v > top or v < -INT64_MAX - 1:
        shown = v if -INT64_MAX <= v <= INT64_MAX else "a number beyond 64 bits"
        raise StateFormatError(f"{what}: {shown} out of range [{lo}, {top}]")
    return v


def check_float(v: Any, what: str, finite: bool = False) -> float:
    """Floats are stored as numbers, or the strings "inf", "-inf", "nan" (JSON has none)."""
    if isinstance(v, str) and v in ("inf", "-inf", "nan"):
        f = float(v)
    elif isinstance(v, (int, float)) and not isinstance(v, bool):
        try:
            f = float(v)
        except OverflowError:  # an integer beyond the range of a double
            raise StateFormatError(f"{what}: number out of range") from None
    else:
        raise StateFormatError(f"{what}: expected a number")
    if finite and not math.isfinite(f):
        raise StateFormatError(f"{what}: expected a finite number")
    return f


def enc_float(x: float) -> float | str:
    """Encode a float for JSON (non-finite values as strings)."""
    x = float(x)
    return x if math.isfinite(x) else str(x)


def check_counts(v: Any, what: str, length: int) -> list[int]:
    """A list of ``length`` non-negative integers."""
    v = check_list(v, what, length)
    for c in v:
        check_int(c, what)
    return v
