"""Fuzzing the raw-message decoder: every layout, every limit, any bytes.

Properties: only :class:`DecodeError` escapes (its reason and message can be written to a dead
letter); a decoded event is well-formed, within the topic's limits, re-encodes to an internal
record that decodes to the same event, and its names are valid Prometheus label values; decoding
an input under the size limit allocates at most a fixed multiple of its size.
"""
from __future__ import annotations

import math
import tracemalloc
from dataclasses import asdict
from datetime import datetime
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detectors.events import DEPLOYMENTS, InferenceEvent, JoinedLabel, LabelEvent
from stream.decoding import INFERENCE_FIELDS, LABEL_FIELDS, DecodeError, JsonDecoder, Limits
from stream.metrics import WorkerMetrics
from stream.records import decode_record, encode_inference, encode_label
from tests.json_strategies import (HOSTILE_SCALARS, HOSTILE_TEXT, SERIALIZERS, finite_or_nan_equal, hostile_bytes,
                                   mutated, serialize)

FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))
MAPPED = settings(FUZZ, max_examples=150)
NAMES = st.text(min_size=1, max_size=12)
FEATURE_VALUES = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-(2**40), 2**40),
                           st.text(max_size=8), st.booleans(), st.none())
PAST = 1.7e9  # valid documents carry past times (the decoders refuse times beyond max_future_seconds)
ISO = st.datetimes(max_value=datetime(2023, 12, 31), timezones=st.none()).map(lambda d: d.isoformat())


def inference_values() -> st.SearchStrategy[dict[str, Any]]:
    """Field values of a valid inference message (driftline field -> value)."""
    return st.fixed_dictionaries(
        {"event_id": NAMES | st.integers(0, 2**62), "ts": st.floats(0, PAST) | st.integers(0, int(PAST)) | ISO,
         "model": NAMES, "model_version": NAMES | st.integers(0, 1000), "features": st.dictionaries(
             NAMES, FEATURE_VALUES, max_size=6), "prediction": NAMES | st.integers(0, 9)},
        optional={"deployment": st.sampled_from(DEPLOYMENTS), "scores": st.dictionaries(NAMES, st.floats(0, 1),
                                                                                      max_size=4),
                  "confidence": st.floats(0, 1)})


def label_values() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({"event_id": NAMES, "ts": st.floats(0, PAST) | ISO, "label": NAMES},
                                 optional={"source": NAMES})


POINTER_SEGMENTS = st.sampled_from(["a", "b", "0", "1", "x~1y", "t~0", "meta", ""])


@st.composite
def mappings(draw: st.DrawFn, fields: tuple[str, ...]) -> dict[str, str]:
    """A field mapping: some fields moved to JSON pointers (distinct first segments), some kept."""
    out = {}
    for i, f in enumerate(fields):
        how = draw(st.sampled_from(["keep", "pointer", "pointer", "bare"]))
        if how == "pointer":
            rest = draw(st.lists(POINTER_SEGMENTS, max_size=2))
            out[f] = "/" + "/".join([f"f{i}"] + rest)
        elif how == "bare":
            out[f] = f"k_{f}"
    return out


def place(doc: dict, pointer: str, value: Any) -> None:
    """Put ``value`` where ``pointer`` (or a bare top-level key) reads it; arrays for numeric segments."""
    if not pointer.startswith("/"):
        doc[pointer] = value
        return
    parts = [p.replace("~1", "/").replace("~0", "~") for p in pointer[1:].split("/")]
    node: Any = doc
    for p, nxt in zip(parts, parts[1:] + [None]):
        child = value if nxt is None else ([] if nxt.isdigit() else {})
        if isinstance(node, list):
            i = int(p)
            node.extend([None] * (i + 1 - len(node)))
            if nxt is None or not isinstance(node[i], (dict, list)):
                node[i] = child
            node = node[i]
        else:
            if nxt is None or not isinstance(node.get(p), (dict, list)):
                node[p] = child
            node = node[p]


def layout(values: dict[str, Any], mapping: dict[str, str], constants: dict[str, Any]) -> dict:
    doc: dict = {}
    for f, v in values.items():
        if f not in constants:
            place(doc, mapping.get(f, f), v)
    return doc


@st.composite
def topic_decoders(draw: st.DrawFn, fields: tuple[str, ...]) -> tuple[JsonDecoder, dict, dict]:
    """A decoder for a random topic configuration: mapping, constants, ts unit, limits, future bound."""
    mapping = draw(st.one_of(st.just({}), mappings(fields)))
    constants = draw(st.dictionaries(st.sampled_from(fields), st.one_of(NAMES, st.integers(-5, 2**70),
                                                                        st.floats(allow_nan=True)), max_size=2))
    unit = draw(st.sampled_from(["s", "ms", "us", "ns"]))
    limits = draw(st.one_of(st.just(Limits()), st.builds(
        Limits, max_bytes=st.integers(64, 4096), max_features=st.integers(1, 8), max_string=st.integers(16, 64),
        max_scores=st.integers(1, 6))))
    future = draw(st.sampled_from([300.0, None, 0.0]))
    mapping = {k: v for k, v in mapping.items() if k not in constants}
    return (JsonDecoder(mapping, constants=constants, limits=limits, ts_unit=unit, max_future_seconds=future),
            mapping, constants)


def text_ok(s: Any, limit: int) -> bool:
    if type(s) is not str or not 1 <= len(s) <= limit:
        return False
    s.encode("utf-8")  # a lone surrogate raises here, with the offending value in the traceback
    return True


def assert_dead_letter_ready(err: DecodeError) -> None:
    """The reason and message go into a dead-letter record and a metric label: valid UTF-8 text."""
    assert err.reason and type(err.reason) is str
    orjson.dumps({"reason": err.reason, "detail": str(err)[:500]})


def assert_label_values_render(*values: str) -> None:
    """Names from traffic end up as Prometheus label values; every scrape must still render as UTF-8."""
    m = WorkerMetrics(max_label_values=8)
    model, version, key = (values + ("v", "k"))[:3]
    m.unknown_model(model)
    m.processed(model, "i", 1)
    m.control_message({"kind": "alert", "model": model, "version": version, "deployment": "stable",
                       "signal": "categorical_drift", "detector": "g_test", "key": key, "statistic": 1.0,
                       "threshold": 2.0})
    m.render().decode("utf-8")


def same_number(a: float | None, b: float | None) -> bool:
    """Equal, or both missing or non-finite (how the detection core reads a confidence or score)."""
    if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)):
        return (a is None or not math.isfinite(a)) and (b is None or not math.isfinite(b))
    return a == b


def assert_inference_ok(e: InferenceEvent, lim: Limits) -> None:
    for name in ("event_id", "model", "model_version", "prediction"):
        assert text_ok(getattr(e, name), lim.max_string), name
    assert type(e.ts) is float and math.isfinite(e.ts)
    assert e.deployment in DEPLOYMENTS
    assert type(e.features) is dict and len(e.features) <= lim.max_features
    for k, v in e.features.items():
        assert type(k) is str and len(k) <= lim.max_string
        k.encode("utf-8")
        if type(v) is str:
            assert len(v) <= lim.max_string
            v.encode("utf-8")
    if e.scores is not None:
        assert type(e.scores) is dict and len(e.scores) <= lim.max_scores
        assert all(type(v) is float for v in e.scores.values())
        assert all(len(k) <= lim.max_string for k in e.scores)
    assert e.confidence is None or type(e.confidence) is float
    e.position = 12345
    rec = decode_record(encode_inference(e))
    back = rec.inference
    assert rec.model == e.model and back is not None
    for name in ("event_id", "model", "model_version", "deployment", "prediction", "position"):
        assert getattr(back, name) == getattr(e, name), name
    assert back.ts == e.ts
    assert same_number(back.confidence, e.confidence)  # non-finite travels as null: the core reads both as NaN
    assert (back.scores is None) == (e.scores is None)
    if e.scores is not None:
        assert back.scores.keys() == e.scores.keys()
        assert all(same_number(back.scores[k], v) for k, v in e.scores.items())
    assert back.features.keys() == e.features.keys()
    for k, v in e.features.items():  # nested values travel as JSON (NaN inside them becomes null)
        w = back.features[k]
        assert finite_or_nan_equal(w, v) or (isinstance(v, (dict, list)) and orjson.dumps(w) == orjson.dumps(v))
    assert_label_values_render(e.model, e.model_version, next(iter(e.features), "k"))


def assert_label_ok(lab: LabelEvent, lim: Limits) -> None:
    for name in ("event_id", "label", "source"):
        assert text_ok(getattr(lab, name), lim.max_string), name
    assert type(lab.ts) is float and math.isfinite(lab.ts)
    lab.position = 7
    joined = JoinedLabel(label=lab, model="m", model_version="v", deployment="stable", prediction="p",
                         predicted_ts=lab.ts)
    back = decode_record(encode_label(joined)).label
    assert back is not None
    assert (back.label.event_id, back.label.label, back.label.source, back.label.position) == \
        (lab.event_id, lab.label, lab.source, 7)
    assert_label_values_render(lab.source, lab.label)


def decode(decoder: JsonDecoder, raw: bytes | None, label: bool) -> InferenceEvent | LabelEvent | None:
    """Decode; return None on DecodeError (checked dead-letter ready); anything else propagates."""
    try:
        return decoder.decode_label(raw) if label else decoder.decode_inference(raw)
    except DecodeError as err:
        assert_dead_letter_ready(err)
        return None


# -- default layout --------------------------------------------------------------------------------
@FUZZ
@given(raw=hostile_bytes(inference_values()))
def test_default_inference_layout(raw: bytes | None) -> None:
    d = JsonDecoder()
    e = decode(d, raw, label=False)
    if e is not None:
        assert_inference_ok(e, d.limits)


@FUZZ
@given(raw=hostile_bytes(label_values()))
def test_default_label_layout(raw: bytes | None) -> None:
    d = JsonDecoder()
    lab = decode(d, raw, label=True)
    if lab is not None:
        assert_label_ok(lab, d.limits)


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=400))
def test_arbitrary_bytes(raw: bytes) -> None:
    d = JsonDecoder()
    for label in (False, True):
        event = decode(d, raw, label)
        if event is not None:
            (assert_label_ok if label else assert_inference_ok)(event, d.limits)


# -- every topic configuration -------------------------------------------------------------------------
@st.composite
def configured_messages(draw: st.DrawFn, label: bool) -> tuple[JsonDecoder, bytes | None]:
    fields = LABEL_FIELDS if label else INFERENCE_FIELDS
    decoder, mapping, constants = draw(topic_decoders(fields))
    values = label_values() if label else inference_values()
    docs = values.map(lambda v: layout(v, mapping, constants))
    return decoder, draw(hostile_bytes(docs))


@MAPPED
@given(case=configured_messages(label=False))
def test_mapped_inference(case: tuple[JsonDecoder, bytes | None]) -> None:
    decoder, raw = case
    e = decode(decoder, raw, label=False)
    if e is not None:
        assert_inference_ok(e, decoder.limits)


@MAPPED
@given(case=configured_messages(label=True))
def test_mapped_labels(case: tuple[JsonDecoder, bytes | None]) -> None:
    decoder, raw = case
    lab = decode(decoder, raw, label=True)
    if lab is not None:
        assert_label_ok(lab, decoder.limits)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(field=st.sampled_from(INFERENCE_FIELDS), value=HOSTILE_SCALARS | HOSTILE_TEXT,
       style=st.sampled_from(SERIALIZERS), nan=st.booleans())
def test_every_field_position_takes_any_scalar(field: str, value: Any, style: str, nan: bool) -> None:
    """A hostile scalar in each field, with a NaN elsewhere (forcing the json fallback) or not."""
    doc = {"event_id": "e1", "ts": 1.5, "model": "m", "model_version": "v1", "features": {"x": 1.0},
           "prediction": "safe", field: value}
    if nan:
        doc["confidence" if field != "confidence" else "scores"] = math.nan
    e = decode(JsonDecoder(), serialize(doc, style), label=False)
    if e is not None:
        assert_inference_ok(e, Limits())
    doc["features"] = {"x": value, value if isinstance(value, str) else "k": 1.0}
    e = decode(JsonDecoder(), serialize(doc, style), label=False)
    if e is not None:
        assert_inference_ok(e, Limits())


@pytest.mark.parametrize("raw", [
    None, b"", b"null", b"NaN", b'"\\ud800"',
    b'{"event_id": "\\ud800", "ts": 1, "model": "m", "model_version": "v", "features": {}, "prediction": "p",'
    b' "confidence": NaN}',
    b'{"event_id": "e", "ts": 1, "model": "m\\udfff", "model_version": "v", "features": {}, "prediction": "p",'
    b' "confidence": NaN}',
    b'{"event_id": "e", "ts": 1, "model": "m", "model_version": "v", "features": {"x": 18446744073709551616},'
    b' "prediction": "p", "confidence": NaN}',
    b'{"event_id": "e", "ts": 1, "model": "m", "model_version": "v", "features": {"x": 18446744073709551615},'
    b' "prediction": "p"}',
    b'{"event_id": "e", "ts": 1, "model": "m", "model_version": "v", "features": {"\\ud800": 1},'
    b' "prediction": "p", "confidence": NaN}',
], ids=["tombstone", "empty", "null", "nan", "surrogate", "surrogate-id", "surrogate-model", "int-65-bits",
        "uint64-max", "surrogate-feature"])
def test_known_poison_pills(raw: bytes | None) -> None:
    """Messages of issue 8 that used to escape as TypeError/UnicodeEncodeError: event or DecodeError."""
    d = JsonDecoder()
    e = decode(d, raw, label=False)
    if e is not None:
        assert_inference_ok(e, d.limits)
    lab = decode(d, raw, label=True)
    if lab is not None:
        assert_label_ok(lab, d.limits)


# -- bounded allocation -------------------------------------------------------------------------------
def peak_bytes(fn: Any, *args: Any) -> int:
    tracemalloc.start()
    try:
        fn(*args)
    except DecodeError:
        pass
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def bound(size: int) -> int:
    """What decoding an input of ``size`` bytes may allocate at most: 128 bytes per input byte + 1 MiB."""
    return 128 * size + (1 << 20)


def at_limit(body: bytes, fill: bytes, limit: int) -> bytes:
    """``body`` with ``FILL`` repeated to just under ``limit`` bytes (a worst case for one shape)."""
    n = (limit - len(body)) // (len(fill) + 1)
    return body.replace(b"FILL", b",".join([fill] * n))


WORST = {
    "int_array": (b'{"features": [FILL]}', b"0"),
    "object_array_nan": (b'{"c": NaN, "features": [FILL]}', b"{}"),
    "nested_arrays_nan": (b'{"c": NaN, "features": {"x": [FILL]}}', b"[[]]"),
    "many_features_nan": (b'{"c": NaN, "features": {FILL}}', b'"":0'),
    "strings_nan": (b'{"c": NaN, "features": [FILL]}', b'"\\ud800"'),
    "floats": (b'{"features": [FILL]}', b"1e308"),
}


@pytest.mark.parametrize("shape", sorted(WORST))
def test_worst_shapes_at_the_size_limit_stay_bounded(shape: str) -> None:
    body, fill = WORST[shape]
    d = JsonDecoder()
    raw = at_limit(body, fill, d.limits.max_bytes)
    assert len(raw) <= d.limits.max_bytes
    for fn in (d.decode_inference, d.decode_label):
        assert peak_bytes(fn, raw) <= bound(len(raw))


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(raw=hostile_bytes(inference_values()))
def test_allocation_is_proportional_to_input(raw: bytes | None) -> None:
    d = JsonDecoder()
    size = len(raw or b"")
    try:
        peak = peak_bytes(d.decode_inference, raw)
    except Exception:  # noqa: BLE001 - escaping errors are the other tests' finding
        return
    assert peak <= bound(min(size, d.limits.max_bytes))


def test_mutation_strategy_reaches_valid_events() -> None:
    """The structure-aware generator must not only produce garbage: some mutants still decode."""
    found = {"ok": 0, "error": 0}

    @settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(doc=mutated(inference_values(), mutations=1))
    def probe(doc: Any) -> None:
        try:
            JsonDecoder().decode_inference(serialize(doc, "json_ascii"))
            found["ok"] += 1
        except Exception:  # noqa: BLE001 - counted only
            found["error"] += 1

    probe()
    assert found["ok"] >= 5 and found["error"] >= 5


# -- batches -----------------------------------------------------------------------------------------
@st.composite
def topic_batches(draw: st.DrawFn, label: bool) -> tuple[JsonDecoder, list[bytes | None]]:
    """A decoder (the default layout or any topic configuration) and a batch of its messages, hostile
    ones among them."""
    values = label_values() if label else inference_values()
    if draw(st.booleans()):
        return JsonDecoder(), draw(st.lists(hostile_bytes(values), max_size=8))
    decoder, mapping, constants = draw(topic_decoders(LABEL_FIELDS if label else INFERENCE_FIELDS))
    docs = values.map(lambda v: layout(v, mapping, constants))
    return decoder, draw(st.lists(hostile_bytes(docs), max_size=8))


def assert_same_outcomes(decoder: JsonDecoder, raws: list[bytes | None], label: bool) -> None:
    """The batch hands back, message by message, what one call per message returns or raises."""
    many = decoder.decode_label_many(raws) if label else decoder.decode_inference_many(raws)
    assert len(many) == len(raws)
    for raw, got in zip(raws, many):
        try:
            want: Any = decoder.decode_label(raw) if label else decoder.decode_inference(raw)
        except Exception as exc:  # noqa: BLE001 - compared with what the batch handed back
            assert type(got) is type(exc) and getattr(got, "reason", None) == getattr(exc, "reason", None)
            continue
        assert type(got) is type(want) and finite_or_nan_equal(asdict(got), asdict(want))


@MAPPED
@given(case=topic_batches(label=False))
def test_a_batch_of_inference_messages_decodes_as_one_call_per_message(case) -> None:
    assert_same_outcomes(*case, label=False)


@MAPPED
@given(case=topic_batches(label=True))
def test_a_batch_of_label_messages_decodes_as_one_call_per_message(case) -> None:
    assert_same_outcomes(*case, label=True)


def test_a_batch_bounds_times_by_one_clock_reading_and_checks_later_times_afresh() -> None:
    """The batch reads the clock once; a time beyond that bound is decoded alone with a fresh reading,
    so a batch accepts what one call per message, each reading the clock, would accept."""
    readings = iter([100.0, 200.0, 300.0])
    d = JsonDecoder(max_future_seconds=0.0, clock=lambda: next(readings))
    doc = {"event_id": "e", "model": "m", "model_version": "v1", "features": {"x": 1.0}, "prediction": "a"}
    got = d.decode_inference_many([orjson.dumps({**doc, "ts": ts}) for ts in (50.0, 150.0, 350.0)])
    assert [g.ts for g in got[:2]] == [50.0, 150.0]  # 150: beyond the batch's reading (100), within the next (200)
    assert isinstance(got[2], DecodeError) and got[2].reason == "ts_in_future"  # 350: beyond the third (300)


def test_refusals_in_a_batch_leave_no_reference_cycle() -> None:
    """Refusals come back without frames: a traceback would reach the batch's list of results (and
    every message of it) again, a cycle that kept batches of oversized messages alive until the
    collector ran. Nothing decoded here becomes garbage only the collector can free."""
    import gc

    d = JsonDecoder(limits=Limits(max_bytes=4096))
    doc = {"event_id": "e", "ts": 1.0, "model": "m", "model_version": "v1", "features": {"x": 1.0}, "prediction": "a"}
    raws = [orjson.dumps(doc), b"{not json", b"x" * 10_000, b'{"event_id": NaN}', None, b"[]",
            orjson.dumps({**doc, "ts": 1e12})]
    gc.collect()
    gc.disable()
    try:
        got = d.decode_inference_many(raws)
        labels = d.decode_label_many(raws)
        assert sum(isinstance(g, DecodeError) for g in got) == 6
        assert all(g.__traceback__ is None and g.__context__ is None for g in got + labels if isinstance(g, Exception))
        del got, labels
        assert gc.collect() == 0
    finally:
        gc.enable()
