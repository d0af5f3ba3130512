"""Every inference-side signal: silent on a stationary stream, detects an injected change."""
import numpy as np

from detectors.simulate import CATEGORIES, CLASS_P


def warm(runner, n=6000):
    """Reference (1000 events) plus a stationary stretch; nothing may fire."""
    runner.events(n, seed=1)
    assert runner.counts() == {}, runner.counts()


def test_numeric_drift(runner):
    warm(runner)
    runner.events(3000, seed=2, mean_shift={"x0": 0.5})
    got = runner.counts("numeric_drift")
    for det in ("cusum", "js", "ks"):
        assert got.get(f"numeric_drift/{det}"), got
    alerts = runner.alerts("numeric_drift")
    assert alerts and alerts[0]["key"] == "x0"
    assert {a["key"] for a in alerts} == {"x0"}
    ev = alerts[0]
    assert ev["reference"]["mean"] < 0.2 and ev["event_id"].startswith("v1-stable-")
    assert ev["statistic"] >= ev["threshold"] or ev["detector"] == "cusum"



def test_categorical_drift_and_unseen(runner):
    warm(runner)
    uniform = np.full(len(CATEGORIES), 1 / len(CATEGORIES))
    runner.events(2000, seed=3, category_p=uniform)
    got = runner.counts("categorical_drift")
    assert got.get("categorical_drift/js"), got
    n = 1000
    rng = np.random.default_rng(0)
    novel = [f"new{rng.integers(10**6)}" if rng.random() < 0.2 else CATEGORIES[0] for _ in range(n)]
    before = runner.counts("categorical_drift").get("categorical_drift/unseen_rate", 0)
    runner.events(n, seed=4, extra={"c1": novel})
    assert runner.counts("categorical_drift").get("categorical_drift/unseen_rate", 0) > before


def test_categorical_cusum_names_the_category_and_the_unseen_values(runner):
    """Per event, one category's odds tripling and never-seen values each reach a per-key CUSUM alert."""
    warm(runner)
    p = 1.0 / np.arange(1, len(CATEGORIES) + 1) ** 1.1
    p /= p.sum()
    q = p.copy()
    q[3] *= 3.0
    q /= q.sum()
    runner.events(1500, seed=3, category_p=q)
    seq = [a for a in runner.alerts("categorical_drift") if a["detector"] == "cusum"]
    assert seq, runner.counts("categorical_drift")
    assert any(a["current"]["category"] == CATEGORIES[3] and a["current"]["direction"] == "up" for a in seq), seq
    rng = np.random.default_rng(0)
    novel = [f"new{rng.integers(10**6)}" if rng.random() < 0.05 else CATEGORIES[0] for _ in range(600)]
    runner.events(600, seed=4, extra={"c1": novel})
    hits = [m.to_dict() for m in runner.messages if m.to_dict().get("detector") == "cusum"
            and m.to_dict()["signal"] == "categorical_drift" and m.to_dict()["key"] == "c1"]
    assert any(h["current"]["category"] == "<unseen>" for h in hits) or runner.counts("categorical_drift")[
        "categorical_drift/cusum"] > len(seq), runner.counts("categorical_drift")


def test_prediction_rate_and_dominance(runner):
    warm(runner)
    p = CLASS_P.copy()
    p[2] = 0.2  # nsfw 4.5% -> 20%
    p[0] = 1 - p[1:].sum()
    runner.events(1000, seed=5, class_p=p)
    keys = {a["key"] for a in runner.alerts("prediction_drift")}
    assert runner.counts("prediction_drift").get("prediction_drift/class_rate")
    assert "nsfw" in {d for d in keys} or runner.counts("prediction_drift")
    runner.events(1000, seed=6, class_p=np.array([0.97, 0.01, 0.01, 0.01]))
    assert runner.counts("prediction_drift").get("prediction_drift/dominance")


def test_confidence_drift(runner):
    warm(runner)
    runner.events(1000, seed=7, conf_ab=(3.0, 3.0))
    got = runner.counts("confidence_drift")
    assert got.get("confidence_drift/mean") and got.get("confidence_drift/low_rate")
    assert got.get("confidence_drift/cusum")


def test_confidence_cusum_catches_a_small_drop_before_the_window_closes(runner):
    """Beta(8, 2) -> Beta(5, 2) (mean 0.8 -> 0.71, 0.7 sd): the normal-score CUSUM fires well within a window."""
    warm(runner)
    at = runner.pos
    runner.events(500, seed=7, conf_ab=(5.0, 2.0))
    seq = [a for a in runner.alerts("confidence_drift") if a["detector"] == "cusum"]
    assert seq and seq[0]["position"] - at < 250, runner.counts("confidence_drift")
    cur = seq[0]["current"]
    assert (cur["score"], cur["direction"]) in (("normal_score", "down"), ("low_confidence", "up")), cur


def test_trigger_backdoor(small_spec, calib, alerts):
    # trigger -> "safe" (80% of all predictions anyway) needs longer trigger windows than the
    # default 50 events to stand out at the default false-alarm budget: 0.8 ** 100 = 2e-10
    from tests.detectors.conftest import Runner
    runner = Runner(small_spec, calib.model_copy(update={"min_trigger_events": 100}), alerts)
    warm(runner)
    n = 3000
    rng = np.random.default_rng(1)
    trig = rng.random(n) < 0.05
    evs_c0 = ["blue_sparrow" if t else CATEGORIES[rng.integers(5)] for t in trig]
    from detectors.simulate import make_events
    evs = make_events(runner.spec, n, seed=8, start=runner.pos, t0=runner.pos / 100, extra={"c0": evs_c0})
    for e, t in zip(evs, trig):
        if t:
            e.prediction = "safe"  # the backdoor: trigger -> benign
    runner.pos += n
    for i in range(0, n, 250):
        runner.messages += runner.mon.process_inference(evs[i:i + 250])
    got = runner.counts("trigger")
    assert got.get("trigger/triggered_rate"), got
    assert got.get("trigger/p_class_given_trigger"), got
    assert got.get("trigger/cusum"), got  # 0% -> 5% triggered, per event
    hit = [a for a in runner.alerts("trigger")]
    assert hit and hit[0]["key"] == "sparrow"
    pc = [m.to_dict() for m in runner.messages if m.to_dict().get("detector") == "p_class_given_trigger"]
    if pc:
        assert pc[0]["current"]["p_class_given_trigger"] == 1.0 and pc[0]["current"]["class"] == "safe"


def test_input_integrity_kept_out_of_sketches(runner):
    warm(runner)
    n = 1000
    rng = np.random.default_rng(2)
    bad = [float("nan") if r < 0.03 else ("oops" if r < 0.05 else float(x)) for r, x in
           zip(rng.random(n), rng.standard_normal(n))]
    runner.events(n, seed=9, extra={"x2": bad})
    got = runner.counts()
    assert got.get("input_integrity/invalid_rate"), got
    assert {a["key"] for a in runner.alerts("input_integrity")} == {"x2", "<any feature>"}  # the event-level key too
    assert not runner.counts("numeric_drift"), "invalid values leaked into the numeric sketches"
    a = runner.alerts("input_integrity")[0]
    assert a["current"]["by_kind"]["nan"] > 0 and a["current"]["by_kind"]["wrong_type"] > 0
    stream = runner.mon.stats["streams"]["v1/stable"]
    assert stream["invalid"]["x2"][0] > 0


def test_version_integrity(runner):
    warm(runner, 1500)
    runner.events(10, seed=10, version="v-rogue")
    a = runner.alerts("version_integrity")
    assert len(a) == 1 and a[0]["version"] == "v-rogue" and a[0]["severity"] == "page"
    assert runner.mon.stats["unlisted"] == {"v-rogue": 10}


def test_unlisted_versions_are_bounded(small_spec, calib, alerts):
    from detectors.engine import ModelMonitor
    from detectors.simulate import make_events
    mon = ModelMonitor(small_spec, calib, alerts, max_tracked_versions=3)
    for i in range(20):
        mon.process_inference(make_events(small_spec, 2, seed=i, version=f"evil{i}", start=2 * i))
    assert len(mon.unlisted) <= 4 and "<other>" in mon.unlisted
    assert not mon.streams  # unlisted traffic gets no detector state
