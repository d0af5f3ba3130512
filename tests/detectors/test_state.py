import struct
import zlib

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.errors import StateFormatError
from detectors.state import FORMAT_VERSION, MAGIC, decode_state, encode_state


def test_round_trip():
    doc = {"a": [1, 2.5, "x"], "b": {"c": None}}
    assert decode_state(encode_state(doc)) == doc


@pytest.mark.parametrize("blob, msg", [
    (b"", "too short"), (b"XXXX" + b"\x00" * 10, "bad magic"),
    (struct.pack(">4sHI", MAGIC, 99, 0), "unsupported state format version 99"),
    (struct.pack(">4sHI", MAGIC, FORMAT_VERSION, 0) + b"abc", "checksum"),
])
def test_bad_headers(blob, msg):
    with pytest.raises(StateFormatError, match=msg):
        decode_state(blob)


def _wrap(payload: bytes) -> bytes:
    return struct.pack(">4sHI", MAGIC, FORMAT_VERSION, zlib.crc32(payload)) + payload


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
