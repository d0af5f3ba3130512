"""Decoding of raw inference and label messages: mapping, validation, hostile input."""
from __future__ import annotations

import json
import math

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.events import DEPLOYMENTS
from stream.decoding import DecodeError, JsonDecoder, Limits, build_decoders, compile_path, decoder_for_topic

BASE = {"event_id": "e1", "ts": 100.5, "model": "content-filter", "model_version": "v1",
        "deployment": "canary", "features": {"brightness": 0.4, "logo": "none"}, "prediction": "safe",
        "scores": {"safe": 0.7, "nsfw": 0.2, "violence": 0.1}}


def enc(obj: object) -> bytes:
    return json.dumps(obj).encode()


def reason(decoder: JsonDecoder, raw: bytes, label: bool = False) -> str:
    with pytest.raises(DecodeError) as info:
        (decoder.decode_label if label else decoder.decode_inference)(raw)
    return info.value.reason


def test_default_layout() -> None:
    e = JsonDecoder().decode_inference(enc(BASE))
    assert (e.event_id, e.ts, e.model, e.model_version, e.deployment) == ("e1", 100.5, "content-filter", "v1", "canary")
    assert e.features == BASE["features"] and e.prediction == "safe"
    assert e.confidence == 0.7  # max score when confidence is absent
    assert e.position == -1


def test_explicit_confidence_and_default_deployment() -> None:
    obj = {k: v for k, v in BASE.items() if k not in ("deployment", "scores")}
    e = JsonDecoder().decode_inference(enc({**obj, "confidence": 0.55}))
    assert e.deployment == "stable" and e.confidence == 0.55 and e.scores is None
    assert JsonDecoder().decode_inference(enc(obj)).confidence is None


def test_iso_timestamps() -> None:
    d = JsonDecoder()
    assert d.decode_inference(enc({**BASE, "ts": "1970-01-01T00:01:40Z"})).ts == 100.0
    assert d.decode_inference(enc({**BASE, "ts": "1970-01-01T00:01:40"})).ts == 100.0  # naive = UTC
    assert d.decode_inference(enc({**BASE, "ts": "1970-01-01T01:01:40+01:00"})).ts == 100.0
    assert reason(d, enc({**BASE, "ts": "yesterday"})) == "bad_value:ts"
    assert JsonDecoder(ts_unit="ms").decode_inference(enc({**BASE, "ts": 100500})).ts == 100.5


def test_field_mapping_and_constants() -> None:
    raw = enc({"meta": {"id": "x9", "time": 7}, "input": {"a/b": 1.0}, "output": {"label": "nsfw", "p": [0.2, 0.8]},
               "ver": "v2"})
    d = JsonDecoder({"event_id": "/meta/id", "ts": "/meta/time", "features": "/input", "prediction": "/output/label",
                     "confidence": "/output/p/1", "model_version": "ver"}, constants={"model": "content-filter"})
    e = d.decode_inference(raw)
    assert (e.event_id, e.ts, e.model, e.model_version, e.prediction, e.confidence) == \
        ("x9", 7.0, "content-filter", "v2", "nsfw", 0.8)
    assert e.features == {"a/b": 1.0}


def test_pointer_escapes_and_misses() -> None:
    get = compile_path("/a~1b/c~0d")
    assert get({"a/b": {"c~d": 3}}) == 3
    assert compile_path("/x/5")({"x": [1]}) is not None  # missing: the sentinel, not an exception
    with pytest.raises(ValueError):
        JsonDecoder({"nonsense": "/x"})


def test_nan_literals_reach_the_core() -> None:
    raw = json.dumps({**BASE, "features": {"brightness": float("nan"), "size": float("inf")},
                      "scores": {"safe": float("nan"), "nsfw": 0.3}}).encode()
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(raw)
    e = JsonDecoder().decode_inference(raw)
    assert math.isnan(e.features["brightness"]) and e.features["size"] == math.inf
    assert e.confidence == 0.3


@pytest.mark.parametrize("raw, expected", [
    (b"{not json", "malformed_json"),
    (b"\xff\xfeNaN", "malformed_json"),
    (b"[1, 2, 3]", "not_an_object"),
    (b"null", "not_an_object"),
    (enc({k: v for k, v in BASE.items() if k != "event_id"}), "missing_field:event_id"),
    (enc({**BASE, "event_id": None}), "null_field:event_id"),
    (enc({**BASE, "event_id": ""}), "empty_field:event_id"),
    (enc({**BASE, "ts": [1]}), "wrong_type:ts"),
    (enc({**BASE, "ts": True}), "wrong_type:ts"),
    (enc({**BASE, "ts": 10 ** 400}), "malformed_json"),  # beyond 64-bit integers
    (enc({**BASE, "ts": 10 ** 400, "confidence": float("nan")}), "integer_out_of_range"),  # json fallback reads it
    (enc({**BASE, "ts": float("inf")}), "bad_value:ts"),
    (enc({**BASE, "features": [1, 2]}), "wrong_type:features"),
    (enc({**BASE, "prediction": 1.5}), "wrong_type:prediction"),
    (enc({**BASE, "deployment": "blue"}), "bad_deployment"),
    (enc({**BASE, "deployment": 3}), "bad_deployment"),
    (enc({**BASE, "scores": {"safe": "high"}}), "wrong_type:scores"),
    (enc({**BASE, "confidence": "0.9"}), "wrong_type:confidence"),
])
def test_bad_inference(raw: bytes, expected: str) -> None:
    assert reason(JsonDecoder(), raw) == expected


def test_hostile_cardinality() -> None:
    d = JsonDecoder(limits=Limits(max_bytes=10_000, max_features=8, max_string=32, max_scores=4))
    assert reason(d, b" " * 10_001) == "oversized"
    assert reason(d, enc({**BASE, "features": {f"f{i}": 1 for i in range(9)}})) == "too_many_features"
    assert reason(d, enc({**BASE, "features": {"logo": "x" * 33}})) == "string_too_long:features"
    assert reason(d, enc({**BASE, "features": {"x" * 33: 1}})) == "string_too_long:features"
    assert reason(d, enc({**BASE, "features": {"n": [[1] * 40]}})) == "nested_too_large:features"
    assert reason(d, enc({**BASE, "scores": {f"c{i}": 0.1 for i in range(5)}})) == "too_many_scores"
    assert reason(d, enc({**BASE, "model": "m" * 33})) == "string_too_long:model"
    # an integer id or version is text once decoded, under the same bound (17 characters here)
    short = JsonDecoder(limits=Limits(max_bytes=10_000, max_string=16))
    assert reason(short, enc({**BASE, "event_id": -(10 ** 15)})) == "string_too_long:event_id"
    assert reason(short, enc({**BASE, "model_version": 10 ** 16})) == "string_too_long:model_version"
    assert short.decode_inference(enc({**BASE, "event_id": -(10 ** 14)})).event_id == str(-(10 ** 14))


def test_deep_nesting_is_rejected_not_crashing() -> None:
    deep = b'{"features": {"x": ' + b"[" * 5000 + b"]" * 5000 + b"}}"
    assert reason(JsonDecoder(limits=Limits(max_bytes=1 << 20)), deep) == "malformed_json"
    deep_nan = enc({**BASE, "features": {"x": "HOLE"}}).replace(b'"HOLE"', b"[" * 600 + b"NaN" + b"]" * 600)
    assert reason(JsonDecoder(limits=Limits(max_bytes=1 << 20)), deep_nan) == "nested_too_large:features"


def test_labels() -> None:
    d = JsonDecoder()
    lab = d.decode_label(enc({"event_id": "e1", "ts": "1970-01-01T00:00:10Z", "label": "nsfw", "source": "vendor-a"}))
    assert (lab.event_id, lab.ts, lab.label, lab.source) == ("e1", 10.0, "nsfw", "vendor-a")
    assert d.decode_label(enc({"event_id": 5, "ts": 1, "label": 2})).source == "unknown"
    assert reason(d, enc({"event_id": "e1", "ts": 1}), label=True) == "missing_field:label"
    assert reason(d, enc({"event_id": "e1", "ts": 1, "label": "x", "source": ["a"]}), label=True) == \
        "wrong_type:source"


def test_build_decoders_from_config_entries() -> None:
    class K:
        inference_topics = [{"name": "inf", "field_mapping": {"event_id": "/meta/id"}, "max_message_bytes": 100}]
        label_topics = [{"name": "lab"}]

    class C:
        kafka = K()

    decs = build_decoders(C())
    assert set(decs) == {"inf", "lab"}
    with pytest.raises(DecodeError):
        decs["inf"].decode_inference(b" " * 101)
    with pytest.raises(ValueError):
        decoder_for_topic({"name": "x", "decoder": "avro"})


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_only_raise_decode_error(raw: bytes) -> None:
    d = JsonDecoder(limits=Limits(max_bytes=300))
    for fn in (d.decode_inference, d.decode_label):
        try:
            fn(raw)
        except DecodeError:
            pass


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["event_id", "ts", "model", "model_version", "deployment", "features",
                                        "prediction", "scores", "confidence", "label", "source", "x"]),
                       json_values, max_size=10))
def test_arbitrary_json_objects_only_raise_decode_error(obj: dict) -> None:
    raw = json.dumps(obj).encode()
    d = JsonDecoder()
    for fn in (d.decode_inference, d.decode_label):
        try:
            fn(raw)
        except DecodeError:
            pass


names = st.text(min_size=1, max_size=30)
finite = st.floats(allow_nan=False, allow_infinity=False, width=64)


@settings(max_examples=300, deadline=None)
@given(event_id=names, ts=st.floats(min_value=0, max_value=1.7e9), model=names, version=names,
       deployment=st.sampled_from(DEPLOYMENTS), prediction=names,
       features=st.dictionaries(st.text(max_size=20), finite | st.text(max_size=20) | st.none() | st.integers(-1000, 1000),
                                max_size=20),
       scores=st.none() | st.dictionaries(names, st.floats(0, 1), min_size=1, max_size=5),
       confidence=st.none() | st.floats(0, 1))
def test_valid_events_round_trip(event_id, ts, model, version, deployment, prediction, features, scores,
                                 confidence) -> None:
    obj = {"event_id": event_id, "ts": ts, "model": model, "model_version": version, "deployment": deployment,
           "features": features, "prediction": prediction}
    if scores is not None:
        obj["scores"] = scores
    if confidence is not None:
        obj["confidence"] = confidence
    raw = orjson.dumps(obj)
    e = JsonDecoder().decode_inference(raw)
    assert e == JsonDecoder().inference_from_obj(orjson.loads(raw))  # fast path == general path
    assert (e.event_id, e.ts, e.model, e.model_version, e.deployment, e.prediction) == \
        (event_id, ts, model, version, deployment, prediction)
    assert e.features == features and e.scores == scores
    expected = confidence if confidence is not None else (max(scores.values()) if scores else None)
    assert e.confidence == expected


@settings(max_examples=200, deadline=None)
@given(event_id=names, ts=st.floats(min_value=0, max_value=1.7e9), label=names, source=names)
def test_labels_round_trip(event_id, ts, label, source) -> None:
    lab = JsonDecoder().decode_label(orjson.dumps({"event_id": event_id, "ts": ts, "label": label, "source": source}))
    assert (lab.event_id, lab.ts, lab.label, lab.source) == (event_id, ts, label, source)


# -- poison pills: every message ends as an event or a DecodeError -----------------------------
@pytest.mark.parametrize("label", [False, True])
def test_tombstone_is_a_decode_error(label: bool) -> None:
    d = JsonDecoder()
    with pytest.raises(DecodeError) as info:
        (d.decode_label if label else d.decode_inference)(None)  # type: ignore[arg-type]
    assert info.value.reason == "null_value"


@pytest.mark.parametrize("where", ["event_id", "model", "prediction", "feature_name", "feature_value", "score"])
def test_lone_surrogate_after_the_nan_fallback_is_refused(where: str) -> None:
    """Python's json (the NaN fallback) accepts lone surrogates that cannot be re-encoded as UTF-8."""
    obj = dict(BASE, features={"brightness": "NaN-marker", "logo": "none"})
    if where in ("event_id", "model", "prediction"):
        obj[where] = "\ud800x"
    elif where == "feature_name":
        obj["features"] = {"\udfff": 1.0}
    elif where == "feature_value":
        obj["features"] = {"logo": "a\ud800"}
    else:
        obj["scores"] = {"\ud800": 0.5}
    raw = json.dumps(obj).replace('"NaN-marker"', "NaN").encode()
    if "NaN" not in raw.decode():
        raw = raw[:-1] + b', "extra": NaN}'
    assert reason(JsonDecoder(), raw) == "invalid_unicode"


def test_integers_beyond_64_bits_after_the_nan_fallback_are_refused() -> None:
    raw = enc({**BASE, "features": {"brightness": 2 ** 70, "logo": "none"}})[:-1] + b', "extra": NaN}'
    assert reason(JsonDecoder(), raw) == "integer_out_of_range"
    raw = enc({**BASE, "event_id": "x", "ts": 1.0})[:-1] + b', "n": -' + str(2 ** 80).encode() + b', "x": NaN}'
    assert reason(JsonDecoder(), raw) == "integer_out_of_range"


def test_label_with_lone_surrogate_source_is_refused() -> None:
    raw = b'{"event_id": "e1", "ts": 1.0, "label": "safe", "source": "\\ud800", "x": NaN}'
    assert reason(JsonDecoder(), raw, label=True) == "invalid_unicode"


def test_every_decoded_event_reencodes() -> None:
    """What the decoder accepts can always be written to the internal topic and read back."""
    from stream.records import decode_record, encode_inference
    raw = enc({**BASE, "features": {"a": 1, "b": "x", "c": None, "d": True}})[:-1] + b', "extra": NaN}'
    e = JsonDecoder().decode_inference(raw)
    assert decode_record(encode_inference(e)).inference.features == e.features


# -- the event clock cannot be pushed into the future ------------------------------------------
def test_timestamps_beyond_the_future_bound_are_refused() -> None:
    now = 1_700_000_000.0
    d = JsonDecoder(max_future_seconds=300, clock=lambda: now)
    assert d.decode_inference(enc({**BASE, "ts": now + 299})).ts == now + 299
    assert reason(d, enc({**BASE, "ts": now + 301})) == "ts_in_future"
    assert reason(d, enc({**BASE, "ts": 1e12})) == "ts_in_future"
    assert reason(d, enc({**BASE, "ts": "2999-01-01T00:00:00Z"})) == "ts_in_future"
    assert reason(d, enc({"event_id": "e1", "ts": 1e12, "label": "safe"}), label=True) == "ts_in_future"
    ms = JsonDecoder(max_future_seconds=300, clock=lambda: now)  # milliseconds on a topic configured in seconds
    assert reason(ms, enc({**BASE, "ts": now * 1000})) == "ts_in_future"
    assert d.decode_inference(enc({**BASE, "ts": 5.0})).ts == 5.0  # old events are fine: they cannot move the clock


def test_future_bound_can_be_disabled() -> None:
    d = JsonDecoder(max_future_seconds=None, clock=lambda: 0.0)
    assert d.decode_inference(enc({**BASE, "ts": 1e12})).ts == 1e12
