import struct
import zlib

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.errors import StateFormatError
import cramjam

from detectors.state import FORMAT_VERSION, MAGIC, MAX_STATE_BYTES, ZLIB_MAGIC, decode_state, encode_state


def test_round_trip():
    doc = {"a": [1, 2.5, "x"], "b": {"c": None}}
    assert decode_state(encode_state(doc)) == doc


@pytest.mark.parametrize("blob, msg", [
    (b"", "too short"), (b"XXXX" + b"\x00" * 10, "bad magic"),
    (struct.pack(">4sHI", MAGIC, 99, 0), "unsupported state format version 99"),
    (struct.pack(">4sHII", MAGIC, FORMAT_VERSION, 0, 3) + b"abc", "checksum"),
    (struct.pack(">4sHI", ZLIB_MAGIC, FORMAT_VERSION, 0) + b"abc", "checksum"),
    (struct.pack(">4sHI", MAGIC, FORMAT_VERSION, 0) + b"ab", "too short"),
])
def test_bad_headers(blob, msg):
    with pytest.raises(StateFormatError, match=msg):
        decode_state(blob)


def _wrap(payload: bytes) -> bytes:
    """A blob of an earlier release: zlib payload, no length."""
    return struct.pack(">4sHI", ZLIB_MAGIC, FORMAT_VERSION, zlib.crc32(payload)) + payload


def _zstd(raw: bytes, length: int | None = None) -> bytes:
    payload = bytes(cramjam.zstd.compress(raw, 1))
    return struct.pack(">4sHII", MAGIC, FORMAT_VERSION, zlib.crc32(payload),
                       len(raw) if length is None else length) + payload


def test_blobs_are_zstd_and_earlier_zlib_blobs_still_read():
    doc = {"a": [1, 2.5, "x"], "b": {"c": None}}
    blob = encode_state(doc)
    assert blob[:4] == MAGIC and blob == _zstd(orjson.dumps(doc))
    assert decode_state(_wrap(zlib.compress(orjson.dumps(doc), 1))) == doc


def test_zstd_length_must_match_the_document():
    raw = orjson.dumps({"a": list(range(100))})
    assert decode_state(_zstd(raw)) == {"a": list(range(100))}
    for wrong in (len(raw) - 1, len(raw) + 1, 0):
        with pytest.raises(StateFormatError, match="too large or truncated"):
            decode_state(_zstd(raw, wrong))
    with pytest.raises(StateFormatError, match="too large"):
        decode_state(_zstd(raw, MAX_STATE_BYTES + 1))
    with pytest.raises(StateFormatError, match="not valid compressed JSON"):
        decode_state(struct.pack(">4sHII", MAGIC, FORMAT_VERSION, zlib.crc32(b"not zstd"), 8) + b"not zstd")


def test_decompression_bomb_and_non_object():
    bomb = zlib.compress(b"[" + b"0," * (40 * 1024 * 1024) + b"0]", 9)
    with pytest.raises(StateFormatError, match="too large"):
        decode_state(_wrap(bomb))
    with pytest.raises(StateFormatError, match="JSON object"):
        decode_state(_wrap(zlib.compress(orjson.dumps([1, 2]))))
    with pytest.raises(StateFormatError, match="not valid compressed JSON"):
        decode_state(_wrap(b"not zlib"))
    with pytest.raises(StateFormatError, match="must be bytes"):
        decode_state("text")  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_never_escape(blob):
    try:
        decode_state(blob)
    except StateFormatError:
        pass
