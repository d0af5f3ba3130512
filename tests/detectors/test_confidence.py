"""Confidence drift: per-event normal-score and low-confidence CUSUMs, window tests, state."""
import numpy as np
import orjson
import pytest

from detectors.confidence import ConfidenceDrift
from detectors.errors import StateFormatError
from detectors.profile import ProfileBuilder
from detectors.spec import CalibrationSpec, ModelSpec

SPEC = ModelSpec(name="m", classes=["a"], versions=["v1"], features=[])


def drift(conf: np.ndarray, per_million: float = 0.01) -> ConfidenceDrift:
    b = ProfileBuilder(SPEC)
    b.add(conf.size, {}, np.zeros(conf.size, dtype=np.int64), conf, {})
    return ConfidenceDrift(b.build(SPEC.low_confidence), CalibrationSpec(false_alarms_per_million=per_million), 0.5)


def test_nan_confidences_are_skipped_and_hits_index_the_batch():
    rng = np.random.default_rng(1)
    cd = drift(rng.beta(8, 2, 2000))
    x = np.clip(rng.beta(8, 2, 3000) - 0.15, 0, 1)
    x[::7] = np.nan
    hits = cd.accumulate(x, lo=100)
    assert hits and all(not np.isnan(x[h[7] - 100]) for h in hits)
    assert hits[0][0:3] == ("confidence_drift", "cusum", "") and hits[0][6]["direction"] == "down"
    assert cd.mom.n == int((~np.isnan(x)).sum())


def test_a_window_with_a_cusum_detection_does_not_enter_the_reference():
    rng = np.random.default_rng(2)
    cd = drift(rng.beta(8, 2, 2000))
    n0 = cd.nref
    assert cd.accumulate(np.clip(rng.beta(8, 2, 2000) - 0.2, 0, 1))
    cd.close(0)
    assert cd.nref == n0 and cd.pending.n == 0
    assert not cd.accumulate(rng.beta(8, 2, 1000))
    cd.close(0)
    assert cd.pending.n == 1000


def test_state_round_trip_and_validation():
    rng = np.random.default_rng(3)
    cd = drift(rng.beta(8, 2, 2000))
    cd.accumulate(rng.beta(8, 2, 700))
    st = orjson.loads(orjson.dumps(cd.to_state()))
    twin = drift(np.random.default_rng(3).beta(8, 2, 2000))
    twin.load_state(st)
    nxt = rng.beta(6, 2, 1500)
    assert cd.accumulate(nxt) == twin.accumulate(nxt)
    assert orjson.dumps(cd.to_state()) == orjson.dumps(twin.to_state())
    with pytest.raises(StateFormatError):
        twin.load_state(st[:6])  # a format-4 confidence state
