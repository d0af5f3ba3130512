"""The typed fast path gives exactly what the general decoder gives, event or dead-letter reason."""
from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream.decoding import DecodeError, JsonDecoder, Limits
from tests.json_strategies import finite_or_nan_equal, hostile_bytes
from tests.stream.test_decoding_fuzz import inference_values, label_values

DIFF = settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
SMALL = Limits(max_bytes=4096, max_features=3, max_string=8, max_scores=2)


def _pair(limits: Limits | None = None) -> tuple[JsonDecoder, JsonDecoder]:
    fast = JsonDecoder(limits=limits, max_future_seconds=60.0, clock=lambda: 1.7e9)
    general = JsonDecoder(limits=limits, max_future_seconds=60.0, clock=lambda: 1.7e9)
    general._read_inference = general._read_label = None
    assert fast._read_inference is not None and fast._read_label is not None
    return fast, general


def _outcome(decode: Any, raw: bytes | None) -> Any:
    try:
        e = decode(raw)
    except DecodeError as err:
        return ("error", err.reason)
    return ("event", {k: getattr(e, k) for k in e.__slots__})


def _same(fast: Any, general: Any) -> bool:
    return fast[0] == general[0] and (fast[1] == general[1] if fast[0] == "error"
                                      else finite_or_nan_equal(fast[1], general[1]))


@DIFF
@given(raw=hostile_bytes(inference_values()), small=st.booleans())
def test_inference_fast_path_matches_the_general_decoder(raw: bytes | None, small: bool) -> None:
    fast, general = _pair(SMALL if small else None)
    a, b = _outcome(fast.decode_inference, raw), _outcome(general.decode_inference, raw)
    assert _same(a, b), (raw, a, b)


@DIFF
@given(raw=hostile_bytes(label_values()), small=st.booleans())
def test_label_fast_path_matches_the_general_decoder(raw: bytes | None, small: bool) -> None:
    fast, general = _pair(SMALL if small else None)
    a, b = _outcome(fast.decode_label, raw), _outcome(general.decode_label, raw)
    assert _same(a, b), (raw, a, b)


GOOD = {"event_id": "e1", "ts": 1.5e9, "model": "m", "model_version": "v1", "features": {"x": 1.0, "n": 3},
        "prediction": "a", "scores": {"a": 0.75, "b": 0.25}}
EDGES = [
    {**GOOD, "features": {"x": 2**64}}, {**GOOD, "features": {"x": -(2**63) - 1}}, {**GOOD, "ts": 2**70},
    {**GOOD, "features": {"x": [1]}}, {**GOOD, "features": {"x": {"y": 1}}}, {**GOOD, "deployment": None},
    {**GOOD, "deployment": "blue"}, {**GOOD, "event_id": 7}, {**GOOD, "event_id": ""}, {**GOOD, "ts": "2024-01-01"},
    {**GOOD, "ts": True}, {**GOOD, "confidence": 1}, {**GOOD, "confidence": True}, {**GOOD, "scores": {"a": 1}},
    {**GOOD, "scores": {}}, {**GOOD, "scores": None}, {**GOOD, "position": 99}, {**GOOD, "artifact_digest": "AB" * 32},
    {**GOOD, "artifact_digest": "sha256:" + "ab" * 32}, {**GOOD, "features": {"x" * 2000: 1.0}},
    {**GOOD, "features": {f"f{i}": i for i in range(600)}}, {**GOOD, "extra": {"deep": [[[1]]]}},
]
RAW_EDGES = [b'{"event_id":"e1","event_id":"e2","ts":1.5e9,"model":"m","model_version":"v","features":{},'
             b'"prediction":"a"}', b'{"event_id":"e1","ts":1e400,"model":"m","model_version":"v","features":{},'
             b'"prediction":"a"}', b'{"event_id":"e1","ts":1.5e9,"model":"m","model_version":"v","features":'
             b'{"x":1e400,"y":-0.0,"z":5e-324},"prediction":"a"}', b'{"event_id":"\\ud800","ts":1.5e9,"model":"m",'
             b'"model_version":"v","features":{},"prediction":"a"}', b'{"event_id":"\xed\xa0\x80","ts":1.5e9,'
             b'"model":"m","model_version":"v","features":{},"prediction":"a"}', b'{"event_id":"e\xff","ts":1.5e9,'
             b'"model":"m","model_version":"v","features":{},"prediction":"a"}',
             b'{"event_id":"e1","ts":NaN,"model":"m","model_version":"v","features":{},"prediction":"a"}',
             b'{"event_id":"e1","ts":1.5e9,"model":"m","model_version":"v","features":{"x":NaN},"prediction":"a"}',
             b' {"event_id":"e1","ts":1.5e9,"model":"m","model_version":"v","features":{},"prediction":"a"}\n',
             b'{"event_id":"e1","ts":1.9e9,"model":"m","model_version":"v","features":{},"prediction":"a"}']


@pytest.mark.parametrize("raw", [json.dumps(d).encode() for d in EDGES] + RAW_EDGES)
def test_edge_cases_agree(raw: bytes) -> None:
    fast, general = _pair()
    a, b = _outcome(fast.decode_inference, raw), _outcome(general.decode_inference, raw)
    assert _same(a, b), (raw, a, b)


@pytest.mark.parametrize("recursion_limit", [None, 6000])
@pytest.mark.parametrize("depth", [1022, 1023, 1024, 1025, 3000])
def test_deeply_nested_unknown_fields_agree(depth: int, recursion_limit: int | None) -> None:
    """orjson refuses nesting beyond its limit; msgspec, which recurses, stops at the interpreter's
    recursion limit (hypothesis raises it while it runs). Both paths must give the same answer
    either side of orjson's limit, whatever that recursion limit, for inference and for labels."""
    import sys

    deep = b"[" * depth + b"]" * depth
    fast, general = _pair()
    label = b'{"ts": 0.0, "label": "0", "event_id": "0", "x": ' + deep + b"}"
    inference = orjson.dumps(GOOD)[:-1] + b', "x": ' + deep + b"}"
    before = sys.getrecursionlimit()
    sys.setrecursionlimit(recursion_limit or before)
    try:
        for decode in ("decode_label", "decode_inference"):
            raw = label if decode == "decode_label" else inference
            a, b = _outcome(getattr(fast, decode), raw), _outcome(getattr(general, decode), raw)
            assert _same(a, b), (depth, decode, a, b)
            assert a[0] == ("event" if depth < 1024 else "error")
    finally:
        sys.setrecursionlimit(before)


def test_fast_path_is_taken_for_the_default_layout() -> None:
    fast, _ = _pair()
    calls = []
    read = fast._read_inference
    fast._read_inference = lambda raw: calls.append(raw) or read(raw)
    e = fast.decode_inference(orjson.dumps(GOOD))
    assert calls and e.confidence == 0.75 and e.features == {"x": 1.0, "n": 3} and type(e.features["n"]) is int
    assert JsonDecoder({"event_id": "/meta/id"})._read_inference is None  # mapped layouts take the general path


@pytest.mark.parametrize("wrap", [str, bytearray, memoryview])
def test_text_and_buffers_decode_like_bytes(wrap) -> None:
    fast, general = _pair()
    raw = json.dumps(GOOD).encode()
    value = raw.decode() if wrap is str else wrap(raw)
    assert _same(_outcome(fast.decode_inference, value), _outcome(general.decode_inference, value))
    assert _outcome(fast.decode_inference, value)[0] == "event"
