"""Internal-topic batch records: exact round trips, both formats read, hostile bytes refused with RecordError."""
from __future__ import annotations

import math
import struct

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.events import InferenceEvent, JoinedLabel, LabelEvent
from stream.records import (BATCH_VERSION, MAX_RECORD_BYTES, MIXED_BATCH_VERSION, UNSIZED_EVENTS, RecordError,
                            decode_batch, encode_inference, encode_inference_batch, encode_label, encode_label_batch,
                            encode_registry)

names = st.text(min_size=1, max_size=12)
value = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**6, 10**6), st.none(),
                  st.booleans(), st.text(max_size=8))


def _same(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


def _event(i: int, feats: dict, model: str = "m") -> InferenceEvent:
    return InferenceEvent(f"e{i}", 1.5 + i, model, "v1", "stable", feats, "safe", 0.9 if i % 2 else None,
                          {"safe": 0.9} if i % 3 == 0 else None, (1 << 56) | i,
                          "sha256:" + "ab" * 32 if i % 4 == 1 else None)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.dictionaries(names, value, max_size=6), min_size=1, max_size=30))
def test_inference_events_round_trip_exactly(feature_dicts):
    events = [_event(i, f) for i, f in enumerate(feature_dicts)]
    out = [e for raw in encode_inference_batch(events) for e in decode_batch(raw).items]
    assert len(out) == len(events)
    for a, b in zip(events, out):
        assert list(a.features) == list(b.features)
        assert all(_same(a.features[k], b.features[k]) for k in a.features)
        assert (a.event_id, a.ts, a.model, a.model_version, a.deployment, a.prediction, a.confidence,
                a.position, a.artifact_digest) == (b.event_id, b.ts, b.model, b.model_version, b.deployment,
                                                   b.prediction, b.confidence, b.position, b.artifact_digest)
        assert b.scores is None  # no detector reads them: not carried


def _header(raw: bytes) -> dict:
    return orjson.loads(raw[9:9 + struct.unpack_from("<I", raw, 5)[0]])


PLAIN = st.one_of(st.text(max_size=4), st.integers(-(2**63), 2**64 - 1), st.none(), st.booleans(),
                  st.floats(allow_nan=False, allow_infinity=False))


@settings(max_examples=80, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=6), min_size=1, max_size=6, unique=True), st.data())
def test_events_sharing_their_features_travel_as_columns_whatever_the_values(names, data):
    """Events with the same features in the same order travel as columns (floats in the matrix,
    anything else JSON holds as one list per feature) and come back with the same values and types."""
    float_like = data.draw(st.lists(st.booleans(), min_size=len(names), max_size=len(names)))
    n = data.draw(st.integers(1, 25))
    column = {name: data.draw(st.lists(st.floats(allow_nan=True, allow_infinity=True) if f else PLAIN,
                                        min_size=n, max_size=n)) for name, f in zip(names, float_like)}
    events = [_event(i, {name: column[name][i] for name in names}) for i in range(n)]
    raws = encode_inference_batch(events)
    out = [e for raw in raws for e in decode_batch(raw).items]
    for a, b in zip(events, out, strict=True):
        assert list(a.features) == list(b.features) and type(b.features) is not dict
        assert all(_same(a.features[k], b.features[k]) for k in a.features)
        assert (a.event_id, a.confidence, a.position, b.scores) == (b.event_id, b.confidence, b.position, None)
    floats = [name for name in names if set(map(type, column[name])) == {float}]
    versions = {raw[3] for raw in raws}
    assert versions == ({BATCH_VERSION} if floats == names else {MIXED_BATCH_VERSION})
    assert all(_header(raw)["cols"] == floats and _header(raw)["f"] is None for raw in raws)


def test_non_finite_floats_beside_other_values_travel_per_event():
    events = [_event(i, {"x": [1.0, math.nan, "a"][i % 3], "c": "k"}) for i in range(6)]
    raws = encode_inference_batch(events)
    assert [raw[3] for raw in raws] == [BATCH_VERSION] and _header(raws[0])["cols"] is None
    back = decode_batch(raws[0]).items
    assert math.isnan(back[1].features["x"]) and back[2].features["x"] == "a" and type(back[0].features) is dict


def test_float_features_travel_as_one_matrix_and_keep_non_finite_values():
    events = [_event(i, {"x": float(i), "y": [math.nan, math.inf, -math.inf][i % 3]}) for i in range(300)]
    raws = encode_inference_batch(events)
    assert len(raws) == 1 and len(raws[0]) < 300 * 100   # columnar: far below one JSON object per event
    back = decode_batch(raws[0]).items
    assert [e.features["x"] for e in back] == [float(i) for i in range(300)]
    assert math.isnan(back[0].features["y"]) and back[1].features["y"] == math.inf


def test_large_runs_are_split_below_the_record_bound():
    wide = {f"f{j}": float(j) for j in range(300)}
    events = [_event(i, dict(wide)) for i in range(2000)]
    raws = encode_inference_batch(events)
    assert len(raws) > 1 and max(map(len, raws)) <= MAX_RECORD_BYTES
    assert [e.event_id for raw in raws for e in decode_batch(raw).items] == [e.event_id for e in events]


def test_short_runs_of_long_events_are_split_below_the_record_bound():
    """Runs of up to UNSIZED_EVENTS events are encoded at once, without sizing: one too long for a
    record is still split in halves, every event kept in order."""
    wide = {f"f{j}": float(j) for j in range(2000)}  # 16 KB per event as columns: 64 of them exceed a record
    events = [_event(i, dict(wide)) for i in range(UNSIZED_EVENTS)]
    raws = encode_inference_batch(events)
    assert len(raws) > 1 and max(map(len, raws)) <= MAX_RECORD_BYTES
    back = [e for raw in raws for e in decode_batch(raw).items]
    assert [e.event_id for e in back] == [e.event_id for e in events]
    assert back[-1].features["f1999"] == 1999.0
    short = encode_inference_batch(events[:3])
    assert len(short) == 1 and [e.position for e in decode_batch(short[0]).items] == [e.position for e in events[:3]]


def test_labels_round_trip_and_single_event_records_are_still_read():
    joined = [JoinedLabel(LabelEvent(f"e{i}", 10.0 + i, "nsfw", "human", 7 + i), "m", "v2", "canary", "safe", 3.0)
              for i in range(5)]
    batch = decode_batch(encode_label_batch(joined)[0])
    assert batch.kind == "l" and batch.model == "m" and batch.items == joined
    raw = encode_label_batch(joined)[0]
    with pytest.raises(RecordError):
        decode_batch(raw[:3] + bytes([MIXED_BATCH_VERSION]) + raw[4:])
    legacy = decode_batch(encode_label(joined[0]))
    assert legacy.items == joined[:1]
    event = _event(5, {"x": 1.0})
    assert decode_batch(encode_inference(event)).items == [event]
    doc = {"model": "m", "version": "v3"}
    registry = decode_batch(encode_registry("m", 9, doc))
    assert (registry.kind, registry.model, registry.items) == ("r", "m", [doc])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.integers(0, 400))
def test_hostile_bytes_raise_record_error_only(noise, cut):
    good = encode_inference_batch([_event(i, {"x": 1.0, "c": "a"}) for i in range(3)])[0]
    for raw in (noise, b"DLB" + noise, good[:cut] + noise, good[:cut]):
        try:
            decode_batch(raw)
        except RecordError:
            pass


def test_inconsistent_headers_are_refused():
    good = encode_inference_batch([_event(i, {"x": 1.0}) for i in range(3)])[0]
    head_len = struct.unpack_from("<I", good, 5)[0]
    header = orjson.loads(good[9:9 + head_len])
    for bad in ({"n": 4}, {"id": ["a", "b", 3]}, {"cols": ["x", "x"]}, {"c": ["high"] * 3}, {"m": ""},
                {"ad": [1, None, None]}):
        doc = header | bad
        raw = orjson.dumps(doc)
        with pytest.raises(RecordError):
            decode_batch(good[:5] + struct.pack("<I", len(raw)) + raw + good[9 + head_len:])
    with pytest.raises(RecordError):
        decode_batch(good + b"\0")                 # body longer than the header says
    with pytest.raises(RecordError):
        decode_batch(good[:3] + bytes([MIXED_BATCH_VERSION]) + good[4:])  # version 3 without its fields


def test_scores_are_not_written_and_records_that_carry_them_are_read():
    events = [_event(i, {"x": float(i)}) for i in range(4)]
    good = encode_inference_batch(events)[0]
    head_len = struct.unpack_from("<I", good, 5)[0]
    header = _header(good)
    assert events[0].scores and "s" not in header
    scores = [{"safe": 0.9, "nsfw": 0.1}, None, {"safe": 0.5}, None]
    raw = orjson.dumps(header | {"s": scores})  # as a release that carried them wrote it
    back = decode_batch(good[:5] + struct.pack("<I", len(raw)) + raw + good[9 + head_len:]).items
    assert [e.scores for e in back] == scores and [e.features["x"] for e in back] == [0.0, 1.0, 2.0, 3.0]
    raw = orjson.dumps(header | {"s": [{"safe": 0.9}, "high", None, None]})
    with pytest.raises(RecordError):
        decode_batch(good[:5] + struct.pack("<I", len(raw)) + raw + good[9 + head_len:])


def test_inconsistent_mixed_headers_are_refused():
    good = encode_inference_batch([_event(i, {"x": 1.0, "c": "a", "k": i}) for i in range(3)])[0]
    head_len = struct.unpack_from("<I", good, 5)[0]
    header = _header(good)
    assert good[3] == MIXED_BATCH_VERSION and header["names"] == ["x", "c", "k"] and header["cols"] == ["x"]
    assert decode_batch(good).items[2].features == {"x": 1.0, "c": "a", "k": 2}
    for bad in ({"names": ["x", "c", "c"]}, {"names": ["x", "c"]}, {"names": None}, {"x": {}},
                {"x": {"c": ["a"] * 3, "k": [0, 1]}}, {"x": {"c": ["a", {"o": 1}, "a"], "k": [0, 1, 2]}},
                {"x": {"c": ["a"] * 3, "k": [[0], 1, 2]}}, {"cols": ["x", "k"]}, {"cols": []},
                {"cols": None}, {"x": {"c": ["a"] * 3, "k": [0, 1, 2], "y": [1, 2, 3]}}, {"x": None}):
        raw = orjson.dumps(header | bad)
        with pytest.raises(RecordError):
            decode_batch(good[:5] + struct.pack("<I", len(raw)) + raw + good[9 + head_len:])
    with pytest.raises(RecordError):
        decode_batch(good[:3] + bytes([BATCH_VERSION]) + good[4:])  # its fields in a version 2 record
    with pytest.raises(RecordError):
        decode_batch(good[:3] + b"\x07" + good[4:])  # unknown version


def test_columnar_events_give_the_same_detector_state_as_dict_events():
    """Events decoded from columnar records (matrix views, no per-event dicts) leave byte-identical state."""
    import numpy as np

    from detectors.engine import ModelMonitor
    from detectors.spec import AlertPolicySpec, CalibrationSpec, FeatureSpec, ModelSpec

    spec = ModelSpec(name="m", classes=["safe", "bad"], versions=["v1"], stable_version="v1", reference_size=200,
                     features=[FeatureSpec(name=f"f{j}", type="numeric") for j in range(4)])
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3000, 4))
    x[2000:, 1] += 2.0
    x[17, 2], x[900, 0] = math.nan, math.inf
    events = [_event(i, dict(zip([f"f{j}" for j in range(4)], x[i].tolist()))) for i in range(3000)]
    plain, columnar = (ModelMonitor(spec, CalibrationSpec(), AlertPolicySpec()) for _ in range(2))
    out_plain, out_columnar = [], []
    for lo in range(0, 3000, 700):
        out_plain += plain.process_inference(events[lo:lo + 700])
        items = [e for raw in encode_inference_batch(events[lo:lo + 700]) for e in decode_batch(raw).items]
        assert type(items[0].features) is not dict
        out_columnar += columnar.process_inference(items)
    assert out_plain and [m.to_dict() for m in out_columnar] == [m.to_dict() for m in out_plain]
    assert columnar.to_bytes() == plain.to_bytes()
    assert orjson.loads(encode_inference(items[0]))["f"] == dict(items[0].features)  # re-encodable (dead letters)


def test_mixed_columnar_events_give_the_same_detector_state_as_dict_events():
    """Events with string, integer and float features decoded from version 3 records (no per-event
    dicts) leave the state and messages dict events leave, with odd values among them."""
    import numpy as np

    from detectors.engine import ModelMonitor
    from detectors.simulate import demo_model
    from detectors.spec import AlertPolicySpec, CalibrationSpec

    spec = demo_model(name="m", n_numeric=3, n_categorical=2, reference_size=300)
    num = [f.name for f in spec.features if f.type == "numeric"]
    cat = [f.name for f in spec.features if f.type == "categorical"]
    rng = np.random.default_rng(11)
    x = rng.standard_normal((4000, 3))
    x[2500:, 0] += 2.0
    shifted = ["a", "b", "c", "d"]
    events = []
    for i in range(4000):
        feats: dict = dict(zip(num, x[i].tolist()))
        feats[num[2]] = int(x[i, 2] * 10)  # an integer-valued numeric feature
        feats[cat[0]] = str(rng.choice(shifted[:2] if i < 3000 else shifted))
        feats[cat[1]] = [None, 7, "q", "r"][i % 4] if i % 50 == 0 else "r"
        events.append(_event(i, feats))
    plain, columnar = (ModelMonitor(spec, CalibrationSpec(), AlertPolicySpec()) for _ in range(2))
    out_plain, out_columnar = [], []
    for lo in range(0, 4000, 900):
        out_plain += plain.process_inference(events[lo:lo + 900])
        raws = encode_inference_batch(events[lo:lo + 900])
        assert {raw[3] for raw in raws} == {MIXED_BATCH_VERSION}
        items = [e for raw in raws for e in decode_batch(raw).items]
        out_columnar += columnar.process_inference(items)
    assert out_plain and [m.to_dict() for m in out_columnar] == [m.to_dict() for m in out_plain]
    assert columnar.to_bytes() == plain.to_bytes()
    assert orjson.loads(encode_inference(items[0]))["f"] == dict(items[0].features)
