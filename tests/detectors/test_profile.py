import pytest

from detectors.engine import ModelMonitor
from detectors.errors import ProfileFormatError
from detectors.profile import ReferenceProfile, build_profile
from detectors.simulate import demo_model, make_events
from detectors.spec import AlertPolicySpec, CalibrationSpec

SPEC = demo_model(n_numeric=3, n_categorical=2, reference_size=500)


def test_build_and_round_trip():
    evs = make_events(SPEC, 3000, seed=1)
    p = build_profile(SPEC, evs)
    d = p.to_dict()
    assert d["format"] == "driftline.profile/v1" and p.n == 3000
    assert ReferenceProfile.from_dict(SPEC, d).to_dict() == d
    x0 = p.numeric["x0"]
    assert len(x0.edges) == 9 and abs(x0.mean) < 0.1 and abs(x0.std - 1) < 0.1
    c0 = p.categorical["c0"]
    assert len(c0.top) <= 16 and sum(c0.counts) == c0.n and c0.unseen_n > 0
    assert sum(p.predictions) == 3000
    assert sum(p.confidence_grid_counts) == p.confidence[0] == 3000 and len(p.confidence_grid) >= 32


def test_a_profile_without_a_confidence_grid_loads_and_runs_the_indicator_cusum_only():
    """Profiles written before the confidence CUSUM have no grid: they load, the score CUSUM stays off."""
    from detectors.confidence import ConfidenceDrift
    d = build_profile(SPEC, make_events(SPEC, 2000, seed=2)).to_dict()
    del d["confidence_grid"]
    old = ReferenceProfile.from_dict(SPEC, d)
    assert old.confidence_grid == [] and old.confidence_grid_counts == []
    cd = ConfidenceDrift(old, CalibrationSpec(), SPEC.low_confidence)
    assert not cd.score_on and cd.seq_low.bank.enabled.all()
    assert ConfidenceDrift(build_profile(SPEC, make_events(SPEC, 2000, seed=2)), CalibrationSpec(), 0.5).score_on


@pytest.mark.parametrize("mutate", [
    lambda d: d.update(format="x"),
    lambda d: d["numeric"].pop("x0"),
    lambda d: d["numeric"]["x0"].update(edges=[1.0, 0.0]),
    lambda d: d["numeric"]["x0"].update(counts=[1]),
    lambda d: d.update(predictions=[1, 2]),
    lambda d: d["categorical"]["c0"].update(top=[1, 2]),
    lambda d: d.update(confidence="x"),
    lambda d: d.update(confidence_grid=[[0.5, 0.2], [1, 1, 598]]),
    lambda d: d.update(confidence_grid=[[0.5], [1, 2]]),
])
def test_malformed_profiles_rejected(mutate):
    d = build_profile(SPEC, make_events(SPEC, 600)).to_dict()
    mutate(d)
    with pytest.raises(ProfileFormatError):
        ReferenceProfile.from_dict(SPEC, d)


def test_file_profile_arms_streams_immediately():
    prof = build_profile(SPEC, make_events(SPEC, 3000, seed=1))
    mon = ModelMonitor(SPEC, CalibrationSpec(window=500), AlertPolicySpec())
    mon.process_inference(make_events(SPEC, 10, seed=2))
    assert not mon.streams[("v1", "stable")].armed
    mon.set_reference(prof)
    assert mon.streams[("v1", "stable")].armed and mon.streams[("v1", "stable")].n == 10
    mon.process_inference(make_events(SPEC, 1000, seed=3, start=10, mean_shift={"x0": 1.0}))
    assert mon.detections["numeric_drift"] > 0
    restored = ModelMonitor.from_bytes(SPEC, CalibrationSpec(window=500), AlertPolicySpec(), mon.to_bytes())
    assert restored.reference is not None and restored.reference.to_dict() == prof.to_dict()
