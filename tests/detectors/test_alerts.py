from detectors.alerts import AlertPolicy
from detectors.detection import Detection
from detectors.spec import AlertPolicySpec

SPEC = AlertPolicySpec(cooldown_seconds=100, group_window_seconds=5, resolve_after_quiet_seconds=60)


def det(signal="numeric_drift", key="x", pos=1, ts=0.0, version="v1"):
    return Detection(signal, "psi", "m", version, "stable", key, 1.0, 0.5, {}, {}, f"e{pos}", pos, ts, "ticket")


def test_dedup_and_resolution_and_cooldown():
    p = AlertPolicy("m", SPEC)
    a = p.observe(det(pos=1, ts=0), now=0)
    assert len(a) == 1
    assert p.observe(det(key="x", pos=2, ts=10), now=10) == []  # same (model, version, signal, key): absorbed
    assert p.advance(69, "e3", 3, 69) == []  # quiet for 59 s only
    res = p.advance(70, "e4", 4, 70)
    assert len(res) == 1 and res[0].alert_id == a[0].id and res[0].detections == 2 and res[0].keys == ["x"]
    d = res[0].to_dict()
    assert d["kind"] == "resolve" and d["schema"] == "driftline.control/v1" and d["event_id"] == "e4"
    assert p.observe(det(pos=5, ts=120), now=120) == []  # cool-down until 170
    assert p.suppressed == 1
    again = p.observe(det(pos=6, ts=171), now=171)
    assert len(again) == 1 and again[0].id != a[0].id


def test_grouping_into_incidents():
    p = AlertPolicy("m", SPEC)
    a1 = p.observe(det("numeric_drift", pos=1), now=0)[0]
    a2 = p.observe(det("prediction_drift", pos=2), now=3)[0]
    a3 = p.observe(det("confidence_drift", pos=3), now=30)[0]  # the incident is still open
    a4 = p.observe(det("trigger", pos=4, version="v2"), now=1)[0]
    assert a3.incident_id == a2.incident_id == a1.incident_id == a1.id
    assert a4.incident_id == a4.id  # other version, other incident
    assert len(p.advance(200, "e9", 9, 200)) == 4
    a5 = p.observe(det("confidence_drift", key="z", pos=5), now=201)[0]
    assert a5.incident_id == a5.id != a1.id  # after everything resolved: a new incident


def test_no_masking_a_detection_on_another_key_alerts_at_once():
    """An open alert (say a false alarm on one feature) never absorbs another key's detection."""
    p = AlertPolicy("m", SPEC)
    first = p.observe(det(key="outlier_feature", pos=1, ts=0), now=0)[0]
    assert p.observe(det(key="outlier_feature", pos=2, ts=50), now=50) == []
    later = [p.observe(det(key=k, pos=10 + i, ts=100 + i), now=100 + i) for i, k in enumerate(("a", "b", "a"))]
    assert [len(x) for x in later] == [1, 1, 0]
    a, b = later[0][0], later[1][0]
    assert {a.to_dict()["key"], b.to_dict()["key"]} == {"a", "b"}
    assert a.incident_id == b.incident_id == first.incident_id  # one incident, one alert per key
    assert len({first.id, a.id, b.id}) == 3
    assert p.alert_id_for("v1", "numeric_drift") == first.id and p.alert_id_for("v1", "numeric_drift", "b") == b.id


def test_ids_deterministic_and_severity():
    p1, p2 = AlertPolicy("m", SPEC), AlertPolicy("m", SPEC)
    assert p1.observe(det(pos=7), 0)[0].id == p2.observe(det(pos=7), 0)[0].id
    assert AlertPolicy("m", SPEC).observe(det(pos=8), 0)[0].id != p1.alert_id_for("v1", "numeric_drift")
    assert p1.severity("trigger") == "page" and p1.severity("numeric_drift") == "ticket"


def test_state_round_trip():
    p = AlertPolicy("m", SPEC)
    p.observe(det(pos=1), 0)
    p.advance(100, "e", 2, 100)
    p.observe(det("trigger", pos=3), 110)
    q = AlertPolicy("m", SPEC)
    q.load_state(p.to_state())
    assert q.to_state() == p.to_state()
    assert [r.to_dict() for r in q.advance(500, "z", 9, 500)] == [r.to_dict() for r in p.advance(500, "z", 9, 500)]
