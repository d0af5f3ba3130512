"""The scoreboard's per-signal delays: first alert of each intended signal after the injection."""
import json

from loadtest.scoreboard import signal_delays, signal_table


def _run(root, seed, alerts):
    d = root / f"seed-{seed}" / "drill"
    d.mkdir(parents=True)
    (d / "meta.json").write_text(json.dumps({"injection_index": 1000, "intended_signals": ["a", "b"]}))
    (d / "alerts.jsonl").write_text("\n".join(json.dumps(
        {"kind": k, "signal": s, "detector": det, "replay": {"stream": st, "line": line}})
        for k, s, det, st, line in alerts))


def test_first_alert_per_intended_signal_median_over_seeds(tmp_path):
    _run(tmp_path, 0, [("alert", "a", "cusum", "inference", 900),  # before the injection: not counted
                       ("alert", "a", "js", "inference", 1300), ("alert", "a", "cusum", "inference", 1100),
                       ("alert", "b", "cusum", "labels", 1050),  # a label line is not an event position
                       ("resolve", "b", "cusum", "inference", 1010)])
    _run(tmp_path, 1, [("alert", "a", "cusum", "inference", 1200), ("alert", "b", "rate", "inference", 1500)])
    _run(tmp_path, 2, [("alert", "a", "js", "inference", 1400)])
    rows = signal_delays(tmp_path, ["drill"], [0, 1, 2])
    assert rows["drill"]["a"] == {"events": 200, "by": ["cusum", "js"]}
    assert rows["drill"]["b"] == {"events": None, "by": ["rate"]}  # one seed of three alerted
    assert "| drill | a | 200 | cusum,js |" in signal_table(rows)
