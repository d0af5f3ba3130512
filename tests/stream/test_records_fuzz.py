"""Fuzzing internal-topic records: whoever can write the internal topic sends garbage, never a crash.

Properties: ``decode_record`` raises only :class:`RecordError`; a record it accepts is
well-formed, re-encodes, and runs through a ``ModelMonitor`` whose state then saves and loads.
"""
from __future__ import annotations

import math
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detectors.engine import ModelMonitor
from detectors.events import DEPLOYMENTS, InferenceEvent, JoinedLabel, LabelEvent
from detectors.simulate import demo_model
from detectors.spec import AlertPolicySpec, CalibrationSpec
from stream.records import DecodedRecord, RecordError, decode_record, encode_inference, encode_label
from tests.json_strategies import hostile_bytes

SPEC = demo_model(name="m", n_numeric=2, n_categorical=1, reference_size=100, label_reference_size=50)
CALIBRATION = CalibrationSpec(window=100, label_window=50)
ALERTS = AlertPolicySpec()
NAMES = st.text(min_size=1, max_size=10)
VALUES = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-(2**63), 2**64 - 1), st.text(max_size=6),
                   st.none(), st.booleans(), st.lists(st.integers(-5, 5), max_size=2))

INFERENCE = st.builds(
    InferenceEvent, event_id=NAMES, ts=st.floats(0, 4e9), model=st.just("m") | NAMES,
    model_version=st.sampled_from(["v1", "v2", "v9"]) | NAMES, deployment=st.sampled_from(DEPLOYMENTS),
    features=st.dictionaries(st.sampled_from(["x0", "x1", "c0"]) | NAMES, VALUES, max_size=4),
    prediction=st.sampled_from(SPEC.classes) | NAMES, confidence=st.none() | st.floats(allow_nan=True),
    scores=st.none() | st.dictionaries(NAMES, st.floats(0, 1), max_size=3), position=st.integers(0, 2**62))
LABELS = st.builds(
    JoinedLabel, label=st.builds(LabelEvent, event_id=NAMES, ts=st.floats(0, 4e9),
                                 label=st.sampled_from(SPEC.classes) | NAMES, source=NAMES,
                                 position=st.integers(0, 2**62)),
    model=st.just("m"), model_version=st.sampled_from(["v1", "v2"]) | NAMES,
    deployment=st.sampled_from(DEPLOYMENTS), prediction=st.sampled_from(SPEC.classes), predicted_ts=st.floats(0, 4e9))
RECORD_DOCS = st.one_of(INFERENCE.map(encode_inference), LABELS.map(encode_label)).map(orjson.loads)


def decode(raw: Any) -> DecodedRecord | None:
    try:
        return decode_record(raw)
    except RecordError as err:
        assert str(err)
        return None


def assert_usable(rec: DecodedRecord) -> None:
    """An accepted record is well-formed and the core takes it without breaking its state."""
    assert type(rec.model) is str
    assert (rec.inference is None) != (rec.label is None)
    monitor = ModelMonitor(SPEC, CALIBRATION, ALERTS)
    if rec.inference is not None:
        e = rec.inference
        assert e.model == rec.model and type(e.features) is dict and type(e.position) is int
        assert type(e.ts) is float and math.isfinite(e.ts), "a record's ts must be a finite number"
        assert type(e.deployment) is str
        if rec.model == SPEC.name:
            monitor.process_inference([e])
    else:
        j = rec.label
        assert type(j.label.ts) is float and math.isfinite(j.label.ts) and math.isfinite(j.predicted_ts)
        if rec.model == SPEC.name:
            monitor.process_labels([j])
    ModelMonitor.from_bytes(SPEC, CALIBRATION, ALERTS, monitor.to_bytes())


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(raw=hostile_bytes(RECORD_DOCS))
def test_only_record_errors_escape(raw: bytes | None) -> None:
    rec = decode(raw)
    if rec is not None:
        assert_usable(rec)


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=300))
def test_arbitrary_bytes(raw: bytes) -> None:
    rec = decode(raw)
    if rec is not None:
        assert_usable(rec)


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(doc=RECORD_DOCS)
def test_valid_records_round_trip(doc: dict) -> None:
    rec = decode(orjson.dumps(doc))
    assert rec is not None
    assert_usable(rec)


@pytest.mark.parametrize("patch", [
    {"ts": "nan"}, {"ts": "inf"}, {"ts": "1e999"}, {"pts": "-inf"}, {"d": "bogus"}, {"d": ""},
    {"ts": True}, {"pos": True}, {"c": True}, {"f": {"x0": {"$nonfinite": 5}}},
])
def test_hostile_field_values(patch: dict) -> None:
    for doc in (orjson.loads(encode_inference(InferenceEvent("e", 1.0, "m", "v1", "stable", {"x0": 1.0}, "safe",
                                                             position=3))),
                orjson.loads(encode_label(JoinedLabel(LabelEvent("e", 1.0, "safe", "s", 3), "m", "v1", "stable",
                                                      "safe", 1.0)))):
        rec = decode(orjson.dumps({**doc, **patch}))
        if rec is not None:
            assert_usable(rec)
