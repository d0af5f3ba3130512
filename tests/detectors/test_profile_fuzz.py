"""Fuzzing reference profile files (``driftline profile`` output, read by the worker, replay and check-config).

A real profile is broken at one to three positions and read back the way its readers do
(Python's ``json``, which also reads NaN literals, lone surrogates and integers of any size, or
orjson). Only :class:`ProfileFormatError` may escape ``from_dict``; a profile it accepts must
arm a monitor that then processes events and saves and loads its state.
"""
from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detectors.engine import ModelMonitor
from detectors.errors import ProfileFormatError
from detectors.profile import ReferenceProfile, build_profile
from detectors.simulate import demo_model, make_events
from detectors.spec import AlertPolicySpec, CalibrationSpec
from tests.json_strategies import SERIALIZERS, mutated, serialize

SPEC = demo_model(name="m", n_numeric=2, n_categorical=2, reference_size=200, label_reference_size=50)
CALIBRATION = CalibrationSpec(window=100, label_window=50)
ALERTS = AlertPolicySpec()


@lru_cache(maxsize=1)
def profile_doc() -> bytes:
    return orjson.dumps(build_profile(SPEC, make_events(SPEC, 600, seed=4)).to_dict())


PROFILES = st.builds(lambda: orjson.loads(profile_doc()))


def read(raw: bytes, reader: str) -> Any:
    """Parse a profile file as its readers do; None when it is not JSON at all (their own clear error)."""
    try:
        return json.loads(raw) if reader == "json" else orjson.loads(raw)
    except (ValueError, RecursionError):
        return None


def assert_arms_a_monitor(profile: ReferenceProfile) -> None:
    m = ModelMonitor(SPEC, CALIBRATION, ALERTS)
    m.set_reference(profile)
    m.process_inference(make_events(SPEC, 300, seed=5, mean_shift={"x0": 2.0}))
    ModelMonitor.from_bytes(SPEC, CALIBRATION, ALERTS, m.to_bytes())


def load(doc: Any) -> ReferenceProfile | None:
    try:
        return ReferenceProfile.from_dict(SPEC, doc)
    except ProfileFormatError as err:
        assert str(err)
        return None


def test_a_real_profile_loads() -> None:
    p = load(orjson.loads(profile_doc()))
    assert p is not None and p.n == 600
    assert_arms_a_monitor(p)


@settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))
@given(raw=st.builds(serialize, mutated(PROFILES), st.sampled_from(SERIALIZERS)),
       reader=st.sampled_from(["json", "orjson"]))
def test_mutated_profiles(raw: bytes, reader: str) -> None:
    doc = read(raw, reader)
    if doc is None:
        return
    p = load(doc)
    if p is not None:
        assert_arms_a_monitor(p)


@pytest.mark.parametrize("path, value", [
    (("numeric", "x0", "mean"), 10**400), (("numeric", "x0", "edges", 0), -(10**400)),
    (("numeric", "x0", "counts", 0), 10**400), (("confidence", 1), 10**400), (("predictions", 0), 10**30),
    (("numeric", "x0", "n"), 2**64), (("categorical", "c0", "top", 0), "\ud800"),
    (("numeric", "x0", "counts", 0), 2**53), (("numeric", "x0", "n"), 2**39), (("numeric", "x0", "counts", 0), 2**63 - 1),
    (("predictions", 0), 2**63 - 1), (("confidence", 3), 10**6), (("categorical", "c0", "counts", 0), 2**62),
], ids=["mean-1e400", "edge-minus-1e400", "count-1e400", "confidence-mean-1e400", "prediction-count-1e30",
        "n-2^64", "category-lone-surrogate", "count-2^53", "n-not-sum-of-counts", "count-int64-max",
        "prediction-count-int64-max", "low-confidence-over-n", "category-count-2^62"])
def test_hostile_numbers_and_strings(path: tuple, value: Any) -> None:
    doc = orjson.loads(profile_doc())
    node = doc
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    p = load(json.loads(json.dumps(doc)))
    if p is not None:
        assert_arms_a_monitor(p)
