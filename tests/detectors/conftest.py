"""Shared builders for the detector tests (small, fast configurations)."""
from __future__ import annotations

import pytest

from detectors.simulate import demo_model
from detectors.spec import AlertPolicySpec, CalibrationSpec, ModelSpec


@pytest.fixture()
def small_spec() -> ModelSpec:
    """4 numeric + 2 categorical features, two triggers, reference of 1000 events."""
    return demo_model(n_numeric=4, n_categorical=2, reference_size=1000, label_reference_size=300)


@pytest.fixture()
def calib() -> CalibrationSpec:
    return CalibrationSpec(window=500, label_window=300)


@pytest.fixture()
def alerts() -> AlertPolicySpec:
    return AlertPolicySpec()


class Runner:
    """Feeds a ModelMonitor batches of events/labels and records messages and detections."""

    def __init__(self, spec, calib, alerts):
        from detectors.engine import ModelMonitor
        self.spec = spec
        self.mon = ModelMonitor(spec, calib, alerts)
        self.messages = []
        self.pos = 0

    def events(self, n, batch=250, seed=0, **kw):
        from detectors.simulate import make_events
        evs = make_events(self.spec, n, seed=seed, start=self.pos, t0=self.pos / 100.0, **kw)
        self.pos += n
        for i in range(0, n, batch):
            self.messages += self.mon.process_inference(evs[i:i + batch])
        return evs

    def labels(self, evs, batch=250, seed=0, **kw):
        from detectors.simulate import make_labels
        labs = make_labels(evs, seed=seed, **kw)
        for i in range(0, len(labs), batch):
            self.messages += self.mon.process_labels(labs[i:i + batch])
        return labs

    def counts(self, signal=None):
        c = dict(self.mon.detector_counts)
        return {k: v for k, v in c.items() if signal is None or k.startswith(signal + "/")}

    def alerts(self, signal=None):
        return [m.to_dict() for m in self.messages
                if m.to_dict()["kind"] == "alert" and (signal is None or m.to_dict()["signal"] == signal)]


@pytest.fixture()
def runner(small_spec, calib, alerts):
    return Runner(small_spec, calib, alerts)


@pytest.fixture()
def default_runner(small_spec, alerts):
    """Runner at the default calibration (window 1000, F = 0.01)."""
    return Runner(small_spec, CalibrationSpec(), alerts)
