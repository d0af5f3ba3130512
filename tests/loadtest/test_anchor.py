"""The hand-wired anchor (river ADWIN / PageHinkley defaults) and the side-by-side scoreboard table."""
from __future__ import annotations

from loadtest.anchor import score
from loadtest.drills import make_drill, write_drill
from loadtest.scoreboard import side_by_side, table


def test_anchor_detects_a_sudden_shift_on_the_watched_features(tmp_path):
    d = make_drill("sudden_shift", n_events=3000, injection=2000, seed=1)
    write_drill(d, tmp_path)
    res = score(tmp_path)
    a = res["adwin"]
    assert a["detected"] and a["stream"].startswith("feature:") and 0 <= a["events_to_detection"] < 1000
    assert a["seconds_to_detection_any"] <= a["seconds_to_detection"]
    assert res["page_hinkley"]["detections_total"] >= res["page_hinkley"]["false_alarms"]
    assert a["false_alarms"] >= 0 and res["events"] == 3000


def test_side_by_side_medians_and_ratio():
    def run(d, a, fa=0):
        return {"events_to_detection": d * 100, "seconds_to_detection": d, "false_alarms": fa, "passed": True,
                "detection": {"signal": "numeric_drift", "detector": "cusum"},
                "anchor": {"adwin": {"events_to_detection": a * 100, "seconds_to_detection": a, "false_alarms": 2,
                                     "false_alarms_per_million_events": 10.0},
                           "page_hinkley": {"events_to_detection": None, "seconds_to_detection": None,
                                            "false_alarms": 50, "false_alarms_per_million_events": 99.0}}}
    rows = side_by_side({"x": [run(1.0, 2.0), run(3.0, 2.0), run(2.0, 4.0)]})
    r = rows["x"]
    assert r["driftline"]["seconds"] == 2.0 and r["adwin"]["seconds"] == 2.0 and r["ratio_vs_adwin"] == 1.0
    assert r["adwin"]["false_alarms"] == 6 and r["page_hinkley"]["seconds"] is None
    assert "| x | 200.0 | 2.0 | numeric_drift/cusum |" in table(rows)
