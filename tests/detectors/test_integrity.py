"""Input integrity: invalid-value bursts on a clean feature, and quiet stationary streams."""
import numpy as np

from detectors import calibration as cal
from detectors.signals import InputIntegrity
from detectors.spec import CalibrationSpec


def _with_invalid(n, rate, seed):
    rng = np.random.default_rng(seed)
    return [float("nan") if r < rate / 2 else ("oops" if r < rate else float(x))
            for r, x in zip(rng.random(n), rng.standard_normal(n))]


def test_invalid_burst_on_clean_feature_detected_within_500_events(default_runner):
    """A feature never invalid so far starts emitting 1% invalid values: caught in < 500 events."""
    r = default_runner
    r.events(20_000, seed=1)  # reference (1000) and a clean stretch
    assert r.counts() == {}, r.counts()
    start = r.pos
    for i in range(10):  # 50-event batches, so the tipping event is located within 50 events
        r.events(50, batch=50, seed=100 + i, extra={"x2": _with_invalid(50, 0.01 if i else 0.0, i)})
        if r.counts("input_integrity"):
            break
    got = r.counts("input_integrity")
    assert got.get("input_integrity/invalid_burst"), got
    a = r.alerts("input_integrity")[0]
    assert a["key"] == "x2" and sum(a["current"]["by_kind"].values()) == a["statistic"]
    assert r.pos - start <= 500


def test_stationary_streams_stay_quiet_at_default_calibration(default_runner):
    """No invalid values at all, and rare ones (0.1%, present in the reference too): nothing fires."""
    r = default_runner
    n = 60_000
    r.events(n, batch=1000, seed=3, extra={"x2": _with_invalid(n, 0.001, 7)})
    r.events(n, batch=1000, seed=4)
    assert not r.counts("input_integrity"), r.counts()


def test_burst_rate_within_budget_by_simulation():
    """At a raised budget, burst and window alarms per million events per feature stay within
    their shares, averaged over reference draws of invalid rates 0.05% to 1%."""
    rng = np.random.default_rng(0)
    c = CalibrationSpec(false_alarms_per_million=100.0)
    feats, n_events = 20, 400_000
    for p in (0.0005, 0.002, 0.01):
        ii = InputIntegrity([f"f{i}" for i in range(feats)], rng.binomial(2000, p, feats).tolist(),
                            [2000] * feats, c)
        bursts = rates = 0
        for s in range(0, n_events, c.window):
            kinds = (rng.random((c.window, feats)) < p).astype(np.int8)
            bursts += len(ii.accumulate(kinds, 0, 400)) + len(ii.accumulate(kinds, 400, c.window))
            rates += len(ii.close(s))
        budget = c.false_alarms_per_million * 0.5 * n_events / 1e6 * feats  # per test: 80 alarms
        assert bursts <= 1.5 * budget and rates <= 1.5 * budget, (p, bursts, rates, budget)


def test_burst_count():
    assert cal.burst_count(0, 16_000, 250, 5e-9) == 4
    assert cal.burst_count(0, 2000, 250, 5e-9) > cal.burst_count(0, 16_000, 250, 5e-9)
    assert cal.burst_count(20, 2000, 250, 5e-9) > 8  # a 1% reference rate needs many more
    assert cal.burst_count(0, 100, 3, 1e-12) == 4  # nothing within budget: never fires


def test_batch_cuts_do_not_change_bursts():
    c = CalibrationSpec()
    rng = np.random.default_rng(1)
    kinds = (rng.random((3000, 3)) < 0.02).astype(np.int8) * rng.integers(1, 6, (3000, 3)).astype(np.int8)
    outs = []
    for cuts in ([0, 3000], [0, 7, 500, 1999, 2000, 3000]):
        ii = InputIntegrity(["a", "b", "c"], [0, 0, 0], [16_000] * 3, c)
        hits = []
        for lo, hi in zip(cuts, cuts[1:]):
            hits += [h[:7] for h in ii.accumulate(kinds, lo, hi)]
        outs.append((hits, ii.to_state()))
    assert outs[0] == outs[1] and outs[0][0]


def test_window_with_a_burst_stays_out_of_the_reference():
    c = CalibrationSpec()
    ii = InputIntegrity(["a"], [0], [1000], c)
    k = ii.k[0]
    kinds = np.zeros((c.window, 1), dtype=np.int8)
    kinds[10:10 + k] = 1  # a burst, below the window test's threshold
    assert len(ii.accumulate(kinds, 0, c.window)) == 1
    assert ii.close(0) == [] and ii.pend_n == [0] and ii.ref_n == [1000]
    ii.accumulate(np.zeros((c.window, 1), dtype=np.int8), 0, c.window)
    ii.close(1)  # a clean window does
    assert ii.ref_n == [2000] and ii.k[0] < k


def _scattered(n, features, p_event, seed):
    """Integrity codes of a pipeline that breaks one random feature of ``p_event`` of the events."""
    rng = np.random.default_rng(seed)
    kinds = np.zeros((n, features), dtype=np.int8)
    rows = np.flatnonzero(rng.random(n) < p_event)
    kinds[rows, rng.integers(0, features, rows.size)] = rng.integers(1, 6, rows.size)
    return kinds


def test_event_level_key_catches_invalid_values_scattered_over_features():
    """4% of events carry one invalid value among 10 clean features: each feature sees 0.4%, the
    event-level key 4%; it fires first, on 3 invalid events within the short span or 4 within 250."""
    c = CalibrationSpec()
    names = [f"f{j}" for j in range(10)]
    ii = InputIntegrity(names, [0] * 10, [16_000] * 10, c)
    assert ii.names[-1] == "<any feature>" and ii.rules[-1] == [(3, 106), (4, 250)]
    delays = []
    for seed in range(20):
        ii = InputIntegrity(names, [0] * 10, [16_000] * 10, c)
        kinds = _scattered(3000, 10, 0.04, seed)
        hits = ii.accumulate(kinds, 0, 1000) + ii.accumulate(kinds, 1000, 2000) + ii.accumulate(kinds, 2000, 3000)
        assert hits, seed
        assert hits[0][2] == "<any feature>" and hits[0][6]["invalid_values"] in (3, 4)
        assert hits[0][6]["events"] <= hits[0][6]["span"]
        delays.append(hits[0][7])
    assert np.median(delays) < 150, delays  # the 3rd to 4th invalid event: about 75 to 100 events


def test_event_level_burst_stays_within_budget_on_a_stationary_invalid_rate():
    """Invalid values at the reference's own rate (0.2% of events, one random feature each) at a
    raised budget: event-level burst detections within twice the budget (plus Poisson slack)."""
    F_pm = 1000.0
    c = CalibrationSpec(false_alarms_per_million=F_pm)
    n, features = 400_000, 5
    ref = _scattered(16_000, features, 0.002, 1)
    bad = (ref != 0).sum(axis=0)
    ii = InputIntegrity([f"f{j}" for j in range(features)], bad.tolist(), [16_000] * features, c)
    kinds = _scattered(n, features, 0.002, 2)
    got = 0
    for lo in range(0, n, 1000):
        got += sum(1 for h in ii.accumulate(kinds, lo, lo + 1000) if h[2] == "<any feature>")
        ii.close(lo + 999)
    expected = F_pm * cal.SHARES["input_integrity"]["invalid_burst"] * n / 1e6
    assert got <= 2 * expected + 3 * np.sqrt(expected) + 1, (got, expected)
