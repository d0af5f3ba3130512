"""End-to-end drills through replay: each incident is caught by its intended signal, the control is quiet.

These run the real detection core on synthetic traffic (60k events per scenario, 200k for the
stationary control), so they are the slowest tests of the suite.
"""
from __future__ import annotations

import functools

import pytest

from loadtest.drills import SCENARIOS
from stream.drill import DrillResult, plot, run_drill, score, table

INCIDENTS = sorted(s for s in SCENARIOS if s != "stationary")


@functools.lru_cache(maxsize=None)
def result(scenario: str) -> DrillResult:
    return run_drill(scenario, seed=0)


@pytest.mark.parametrize("scenario", INCIDENTS)
def test_incident_is_detected_by_its_intended_signal(scenario: str) -> None:
    r = result(scenario)
    assert r.detected, f"{scenario}: no alert of {r.meta['intended_signals']} after the injection"
    assert r.detection["signal"] in r.meta["intended_signals"]
    assert r.events_to_detection >= 0 and r.seconds_to_detection >= 0


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_rollback_fires_only_when_expected(scenario: str) -> None:
    r = result(scenario)
    assert r.rollback_fired == r.rollback_expected, \
        [m.get("reason") for m in r.messages if m.get("kind") == "rollback"]


@pytest.mark.parametrize("scenario", INCIDENTS)
def test_no_alert_before_the_injection(scenario: str) -> None:
    r = result(scenario)
    assert r.false_alarms == []


def test_stationary_control_raises_nothing() -> None:
    r = result("stationary")
    assert [m for m in r.messages if m.get("kind") in ("alert", "rollback")] == []


def test_score_and_report(tmp_path) -> None:
    meta = {"scenario": "x", "intended_signals": ["trigger"], "intended_deployment": "canary",
            "intended_version": None, "intended_key": None, "injection_ts": 100.0, "injection_index": 10,
            "rollback_expected": True, "first_ts": 0.0, "last_ts": 200.0, "description": "test"}
    msgs = [{"kind": "alert", "signal": "numeric_drift", "deployment": "stable", "ts": 50.0},
            {"kind": "alert", "signal": "trigger", "deployment": "stable", "ts": 110.0},
            {"kind": "alert", "signal": "trigger", "deployment": "canary", "ts": 120.0, "detector": "p",
             "version": "v3", "statistic": 2.0, "threshold": 1.0},
            {"kind": "rollback", "ts": 121.0}]
    r = score(meta, msgs, [{"signal": "trigger", "statistic": 2.0, "threshold": 1.0, "ts": 120.0}],
              [float(t) for t in range(0, 200, 1)], {})
    assert r.detected and r.seconds_to_detection == 20.0 and r.events_to_detection == 121 - 10
    assert len(r.false_alarms) == 1 and r.other_alerts == 1 and r.rollback_fired and not r.passed
    assert "FAIL" in table([r])
    assert plot(r, ([1.0, 2.0], [0.1, 0.2], "y"), tmp_path / "r.png").stat().st_size > 1000


def test_registry_swap_is_paged_on_the_first_wrong_digest_and_the_release_is_silent() -> None:
    r = result("registry_swap")
    meta = r.meta
    assert r.replay["registry_accepted"] == 3 and r.replay["rejected"]["registry"] == {}
    first = r.detection
    assert (first["detector"], first["version"], first["deployment"]) == ("digest_mismatch", "v2", "canary")
    assert first["event_id"] == meta["swap_event_id"] and r.events_to_detection == 1
    alert = next(m for m in r.messages if m.get("kind") == "alert")
    assert alert["severity"] == "page" and alert["reference"]["expected_digest"] == meta["registered_digest"] \
        and alert["current"]["observed_digest"] == meta["swapped_digest"]
    rollback = next(m for m in r.messages if m.get("kind") == "rollback")
    assert rollback["canary_version"] == "v2" and rollback["event_id"] == meta["swap_event_id"]
    assert not [m for m in r.messages if m.get("version") == meta["release_version"]], "the release must be silent"
    assert [m["kind"] for m in r.messages if m.get("kind") in ("alert", "rollback")] == ["alert", "rollback"]


def test_a_larger_budget_detects_the_small_shift_sooner() -> None:
    """The drill's budget reaches the thresholds: 1,000 times the default budget (still below ADWIN's
    measured false-alarm rate) detects the 0.25 sd shift sooner than the default does."""
    default = result("small_shift")
    loose = run_drill("small_shift", seed=0, false_alarms_per_million=10.0)
    assert loose.detected and loose.detection["signal"] == "numeric_drift"
    assert loose.events_to_detection < default.events_to_detection


def test_the_drill_budget_is_validated() -> None:
    import argparse

    from detectors.spec import MonitorSpec
    from loadtest.drills import drill_monitor_spec
    from stream.drill import _budget

    assert MonitorSpec.model_validate(drill_monitor_spec("small_shift", 2.5)).calibration.false_alarms_per_million == 2.5
    assert "calibration" not in drill_monitor_spec("small_shift")
    for bad in ("0", "-1", "1e9", "many"):
        with pytest.raises(argparse.ArgumentTypeError):
            _budget(bad)
