"""Label-side signals: label drift, performance, per-source disagreement."""
import numpy as np

from detectors.simulate import CLASS_P


def warm(runner, n=3000):
    evs = runner.events(n, seed=1)
    runner.labels(evs, seed=1)
    assert runner.counts() == {}, runner.counts()


def test_performance_error_rate(runner):
    warm(runner)
    evs = runner.events(1500, seed=2)
    runner.labels(evs, seed=2, error_rate=0.25)
    got = runner.counts("performance")
    assert got.get("performance/error_rate"), got
    assert got.get("performance/class_error_rate"), got
    a = runner.alerts("performance")[0]
    assert a["current"]["error_rate"] > a["reference"]["error_rate"]


def test_label_drift(runner):
    warm(runner)
    p = np.array([0.4, 0.4, 0.15, 0.05])
    evs = runner.events(1500, seed=3, class_p=p)
    runner.labels(evs, seed=3)
    got = runner.counts("label_drift")
    assert got.get("label_drift/class_rate") and got.get("label_drift/entropy"), got


def test_compromised_labeler_stands_out(runner):
    warm(runner)
    evs = runner.events(3000, seed=4)
    runner.labels(evs, seed=4, flip_source="vendor_b", flip_rate=0.3)
    alerts = runner.alerts("label_disagreement")
    assert alerts, runner.counts()
    assert {a["key"] for a in alerts} == {"vendor_b"}
    assert runner.counts("label_disagreement").get("label_disagreement/model")
    # one of four vendors flipping 30% moves the global error rate only a few points
    a = alerts[0]
    if a["detector"] == "cusum":  # per label: the CUSUM of its excess error rate crossed its threshold
        assert a["statistic"] >= a["threshold"] and a["current"]["labels_since_restart"] >= 30
    else:
        assert a["current"]["rate"] > a["reference"]["other_sources_rate"] + 0.1


def test_concept_drift_is_not_blamed_on_a_source(runner):
    """Every source's errors rise together: performance fires, no source's disagreement CUSUM does."""
    warm(runner)
    evs = runner.events(4000, seed=6)
    runner.labels(evs, seed=6, error_rate=0.2)
    assert runner.alerts("performance")
    assert not runner.counts("label_disagreement").get("label_disagreement/cusum"), runner.counts()


def test_cross_source_disagreement(runner):
    warm(runner)
    evs = runner.events(4000, seed=5)
    runner.labels(evs, seed=5, flip_source="vendor_c", flip_rate=0.5, double_label=0.6)
    got = runner.counts("label_disagreement")
    assert got.get("label_disagreement/sources"), got


def test_sources_are_bounded(small_spec, alerts):
    from detectors.engine import ModelMonitor
    from detectors.simulate import make_events, make_labels
    from detectors.spec import CalibrationSpec
    mon = ModelMonitor(small_spec, CalibrationSpec(max_sources=3), alerts)
    evs = make_events(small_spec, 200)
    mon.process_labels(make_labels(evs, sources=tuple(f"s{i}" for i in range(50))))
    assert len(mon.sources.src) <= 4 and "<other>" in mon.sources.src
    assert set(mon.sources.cols) <= set(mon.sources.src) and mon.sources.cusum.C == len(mon.sources.cols)


def test_cross_source_memory_keeps_the_newest_events_in_order_through_a_state_round_trip():
    """The memory of recent (event, source, label) triples drops its oldest entry first, and a
    state round trip keeps the order, so later labels pair with the same earlier ones."""
    from detectors.labels import CROSS_MEMORY, SourceDisagreement
    from detectors.spec import CalibrationSpec
    from detectors.state import decode_state, encode_state

    sd = SourceDisagreement(CalibrationSpec())
    total = CROSS_MEMORY + 50
    for i in range(total):
        sd.add(f"e{i}", "human", "a", False, i)
    assert len(sd.recent) == CROSS_MEMORY
    assert next(iter(sd.recent)) == "e50" and next(reversed(sd.recent)) == f"e{total - 1}"
    back = SourceDisagreement(CalibrationSpec())
    back.load_state(decode_state(encode_state(sd.to_state())))
    assert list(back.recent) == list(sd.recent)
    for d in (sd, back):  # a second source on a remembered event pairs with it; then the oldest goes
        d.add("e60", "vendor", "b", True, total)
        d.add(f"e{total}", "human", "a", False, total + 1)
    assert sd.src == back.src and sd.tot == back.tot and sd.tot[2:] == [2, 2]
    assert list(back.recent) == list(sd.recent) and next(iter(sd.recent)) == "e51"
    assert encode_state(sd.to_state()) == encode_state(back.to_state())
