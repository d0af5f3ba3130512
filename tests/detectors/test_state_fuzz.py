"""Fuzzing Redis state blobs: ``decode_state`` and ``ModelMonitor.from_bytes`` on hostile documents.

A real monitor's state (reference learned, detectors armed, labels joined, alerts open) is
decoded, broken at one to three positions (wrong types, NaN, huge integers, lone surrogates,
deep nesting, huge arrays, removed or renamed keys) and re-wrapped with a valid header and CRC,
so the loader's validation, not the checksum, meets the damage. Only :class:`StateFormatError`
may escape; a state that loads must keep working (process events, save, load again).
"""
from __future__ import annotations

import struct
import zlib
from functools import lru_cache
from typing import Any

import cramjam
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detectors.engine import ModelMonitor
from detectors.errors import StateFormatError
from detectors.events import JoinedLabel, LabelEvent
from detectors.simulate import demo_model, make_events
from detectors.spec import AlertPolicySpec, CalibrationSpec
from detectors.state import FORMAT_VERSION, MAGIC, MAX_STATE_BYTES, ZLIB_MAGIC, decode_state, pack_document
from tests.json_strategies import SERIALIZERS, mutated, serialize

SPEC = demo_model(name="m", n_numeric=2, n_categorical=2, reference_size=100, label_reference_size=50)
CALIBRATION = CalibrationSpec(window=100, label_window=50)
ALERTS = AlertPolicySpec()
FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))


@lru_cache(maxsize=1)
def live_state() -> bytes:
    """State of a monitor with armed detectors on two versions, joined labels and a shift."""
    m = ModelMonitor(SPEC, CALIBRATION, ALERTS)
    events = make_events(SPEC, 400, seed=1) + make_events(SPEC, 200, seed=2, version="v2", deployment="canary",
                                                          start=400, mean_shift={"x0": 3.0})
    events += make_events(SPEC, 20, seed=3, version="rogue", start=600)
    m.process_inference(events)
    m.process_labels([JoinedLabel(LabelEvent(e.event_id, e.ts + 1, e.prediction, f"src{i % 3}", i), "m",
                                  e.model_version, e.deployment, e.prediction, e.ts)
                      for i, e in enumerate(events[:300])])
    return m.to_bytes()


def wrap(doc: Any, style: str = "orjson") -> bytes:
    """A blob with a valid header and CRC around any JSON-like document (json writes what orjson cannot)."""
    return pack_document(serialize(doc, style))


def load(blob: bytes) -> ModelMonitor | None:
    try:
        return ModelMonitor.from_bytes(SPEC, CALIBRATION, ALERTS, blob)
    except StateFormatError as err:
        assert str(err)
        return None


def assert_keeps_working(m: ModelMonitor) -> None:
    m.process_inference(make_events(SPEC, 50, seed=9, start=10_000, t0=10_000.0))
    again = load(m.to_bytes())
    assert again is not None, "a state that loaded and ran must save and load again"


STATE_DOCS = st.builds(lambda: decode_state(live_state()))


def test_live_state_loads() -> None:
    m = load(live_state())
    assert m is not None and m.events == 620
    assert_keeps_working(m)


@FUZZ
@given(blob=st.builds(wrap, mutated(STATE_DOCS), st.sampled_from(SERIALIZERS)))
def test_mutated_documents(blob: bytes) -> None:
    m = load(blob)
    if m is not None:
        assert_keeps_working(m)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_flipped_payload_bytes_with_valid_crc(data: st.DataObject) -> None:
    """Damage below the checksum: byte edits in the decompressed JSON, then a correct CRC."""
    raw = bytearray(orjson.dumps(decode_state(live_state())))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.sampled_from(b'0123456789-+.eE"[]{},:ntfaluNI\\ \xff'))
    m = load(pack_document(bytes(raw)))
    if m is not None:
        assert_keeps_working(m)


def adwin_state() -> dict:
    """State of a river-backed ADWIN that has seen a shift (detectors.sequential.Adwin)."""
    from detectors.sequential import Adwin
    a = Adwin(delta=0.002)
    for x in [0.0] * 1500 + [1.0] * 500:
        a.update(x)
    return a.to_state()


def load_adwin(st: dict):
    from detectors.sequential import Adwin
    try:
        return Adwin.from_state(st)
    except StateFormatError as err:
        assert str(err)
        return None


def assert_adwin_works(a) -> None:
    for x in [0.0, 1.0] * 300:
        a.update(x)
    assert load_adwin(a.to_state()) is not None


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_adwin_blobs(data: st.DataObject) -> None:
    """river's compiled ADWIN decoder meets edited, truncated and extended blobs."""
    import base64

    target = adwin_state()
    raw = bytearray(base64.b64decode(target["blob"]))
    op = data.draw(st.sampled_from(["edit", "truncate", "extend"]))
    if op == "edit" and raw:
        for _ in range(data.draw(st.integers(1, 6))):
            raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    elif op == "truncate":
        del raw[data.draw(st.integers(0, len(raw))):]
    else:
        raw += data.draw(st.binary(min_size=1, max_size=64))
    target["blob"] = base64.b64encode(bytes(raw)).decode()
    a = load_adwin(target)
    if a is not None:
        assert_adwin_works(a)


def test_every_byte_of_an_adwin_blob() -> None:
    """Each single-byte edit of a real blob is refused at load or keeps working (river 0.26 loaded a
    changed clock or bucket size, or a shifted length, and panicked on a later update or load)."""
    import base64

    node = adwin_state()
    raw = base64.b64decode(node["blob"])
    refused = 0
    for i in range(len(raw)):
        for value in (1, 0xFF):
            edited = bytearray(raw)
            if edited[i] == value:
                continue
            edited[i] = value
            a = load_adwin(dict(node, blob=base64.b64encode(bytes(edited)).decode()))
            if a is None:
                refused += 1
            else:
                assert_adwin_works(a)
    assert refused >= 20  # at least the parameter words are checked


# found by loadtest/fuzz.py (adwin harness): a bucket whose variances array holds 2 entries, not
# max_buckets + 1; the decoder and a one-update probe accept it, the third update panics
SHORT_BUCKET = bytes.fromhex(
    "fca9f1d24d62603f0800000005000000000000000000000000001440000000000000244000000000000000000000000000000000"
    "f9ffffd9000000000000000000000000000000000000000000000000000000000100000000000000050000000000000000000000"
    "000000000600000000000000000000000000000000000000000000000600000000000000000000000000000000000000000000000"
    "000000000000000020000000000000000000000000000000000000000000000fca9f1d24d62603f080000000500000000000000"
    "050000000a000000")


def test_a_blob_that_panics_later_is_refused() -> None:
    import base64

    from detectors.sequential import Adwin

    with pytest.raises(StateFormatError, match="adwin.blob"):
        Adwin.from_state({"args": [0.002, 8, 5, 5, 10], "blob": base64.b64encode(SHORT_BUCKET).decode()})


def test_decompression_is_bounded() -> None:
    """A payload inflating past the limit is refused without materializing it (either codec)."""
    for blob in (_zstd_bomb(), _zlib_bomb()):
        with pytest.raises(StateFormatError, match="too large"):
            decode_state(blob)
        _assert_refused_within_bound(blob)


def _zstd_bomb() -> bytes:
    """A valid JSON object longer than the length its header gives (the largest allowed)."""
    bomb = bytes(cramjam.zstd.compress(b'{"a": "' + b" " * MAX_STATE_BYTES + b'"}', 1))
    return struct.pack(">4sHII", MAGIC, FORMAT_VERSION, zlib.crc32(bomb), MAX_STATE_BYTES) + bomb


def _zlib_bomb() -> bytes:
    bomb = zlib.compress(b" " * (MAX_STATE_BYTES + 1024), 9)
    return struct.pack(">4sHI", ZLIB_MAGIC, FORMAT_VERSION, zlib.crc32(bomb)) + bomb


def _assert_refused_within_bound(blob: bytes) -> None:
    import tracemalloc

    tracemalloc.start()
    try:
        assert load(blob) is None
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak <= 2 * MAX_STATE_BYTES + (8 << 20)  # the output buffer and its final copy
