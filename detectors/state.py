"""Versioned, validated, compact state encoding (no pickle, nothing is ever executed).

Layout of a state blob::

    b"DLSZ"  magic (4 bytes)
    u16      format version (big endian)       -- FORMAT_VERSION
    u32      CRC-32 of the compressed payload  -- detects truncation / bit rot
    u32      length of the document            -- at most MAX_STATE_BYTES, decompressed into exactly that
    ...      zstd-compressed orjson document (one frame)

Blobs with magic ``b"DLST"`` (no length, a zlib payload) are written by earlier releases and
still read: the document is the same, only the codec differs. zstd at level 1 compresses a
model's state about three times faster than zlib at level 1, and a little smaller.

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

import cramjam
import orjson

from detectors.errors import StateFormatError

MAGIC = b"DLSZ"
ZLIB_MAGIC = b"DLST"  # blobs of earlier releases (zlib payload)
FORMAT_VERSION = 5  # 5: per-event CUSUMs of categories, confidence, triggers and the canary's predictions / confidence; 4: numeric normal-score and squared-normal-score CUSUMs, event-level invalid bursts; 3: per-event CUSUMs (numeric ranks, indicators, labels), per-key alerts; 2: integrity reference
MAX_STATE_BYTES = 64 * 1024 * 1024  # decompressed size limit: hostile blobs cannot exhaust memory
_HEADER = struct.Struct(">4sHI")
_LENGTH = struct.Struct(">I")
INT64_MAX = (1 << 63) - 1


def encode_state(doc: dict[str, Any]) -> bytes:
    """Serialize a JSON-able document into a state blob."""
    return pack_document(orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY))


def pack_document(raw: bytes) -> bytes:
    """A state blob around an already serialized JSON document (compressed, with header and checksum)."""
    payload = bytes(cramjam.zstd.compress(raw, 1))  # fast level: saved per batch
    return _HEADER.pack(MAGIC, FORMAT_VERSION, zlib.crc32(payload)) + _LENGTH.pack(len(raw)) + payload


def decode_state(data: bytes) -> dict[str, Any]:
    """Parse a state blob; raises :class:`StateFormatError` on any defect."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise StateFormatError(f"state must be bytes, not {type(data).__name__}")
    data = bytes(data)
    if len(data) < _HEADER.size:
        raise StateFormatError(f"state blob too short ({len(data)} bytes)")
    magic, version, crc = _HEADER.unpack_from(data)
    if magic != MAGIC and magic != ZLIB_MAGIC:
        raise StateFormatError("not a driftline state blob (bad magic)")
    if version != FORMAT_VERSION:
        raise StateFormatError(f"unsupported state format version {version} (this build reads {FORMAT_VERSION})")
    start = _HEADER.size + (_LENGTH.size if magic == MAGIC else 0)
    if len(data) < start:
        raise StateFormatError(f"state blob too short ({len(data)} bytes)")
    payload = data[start:]
    if zlib.crc32(payload) != crc:
        raise StateFormatError("state blob checksum mismatch (truncated or corrupted)")
    raw = _zstd_document(data, payload) if magic == MAGIC else _zlib_document(payload)
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise StateFormatError(f"state payload is not valid compressed JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise StateFormatError("state document must be a JSON object")
    return doc


def _zstd_document(data: bytes, payload: bytes) -> bytearray:
    """The document of a zstd blob, decompressed into a buffer of the length its header gives:
    a payload that would grow past it fails there, so a hostile blob cannot exhaust memory."""
    (length,) = _LENGTH.unpack_from(data, _HEADER.size)
    if length > MAX_STATE_BYTES:
        raise StateFormatError("state payload too large or truncated")
    out = bytearray(length)
    try:
        written = cramjam.zstd.decompress_into(payload, out)
    except cramjam.DecompressionError as exc:
        # a frame growing past the buffer and a damaged frame fail alike here
        raise StateFormatError(f"state payload too large or truncated, or not valid compressed JSON: {exc}") from None
    if written != length:
        raise StateFormatError("state payload too large or truncated")
    return out


def _zlib_document(payload: bytes) -> bytes:
    """The document of a zlib blob (earlier releases), at most MAX_STATE_BYTES of it."""
    try:
        d = zlib.decompressobj()
        raw = d.decompress(payload, MAX_STATE_BYTES)
    except zlib.error as exc:
        raise StateFormatError(f"state payload is not valid compressed JSON: {exc}") from None
    if d.unconsumed_tail or not d.eof:
        raise StateFormatError("state payload too large or truncated")
    return raw


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
