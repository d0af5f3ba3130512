"""Engine: batch-boundary independence, state round trips, hostile state, routing."""
import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detectors.engine import Engine, ModelMonitor
from detectors.errors import StateFormatError
from detectors.simulate import demo_model, make_events, make_labels
from detectors.spec import AlertPolicySpec, CalibrationSpec, MonitorSpec
from detectors.state import decode_state, encode_state

SPEC = demo_model(n_numeric=3, n_categorical=2, reference_size=400, label_reference_size=200)
CAL = CalibrationSpec(window=300, label_window=200, block_size=16)
AL = AlertPolicySpec(resolve_after_quiet_seconds=20, cooldown_seconds=5)


def traffic():
    """Stationary stretch, then drift, a rogue version and a diverging canary, with labels."""
    evs = make_events(SPEC, 1500, seed=1)
    evs += make_events(SPEC, 1500, seed=2, start=1500, t0=15, mean_shift={"x0": 0.8},
                       class_p=np.array([0.6, 0.2, 0.15, 0.05]))
    evs += make_events(SPEC, 20, seed=3, start=3000, t0=30, version="vX")
    # the canary starts once stable's drift alerts resolved, so its own drift is on the canary alone
    evs += make_events(SPEC, 800, seed=4, start=3020, t0=55, version="v2", deployment="canary",
                       class_p=np.array([0.3, 0.3, 0.3, 0.1]))
    evs += make_events(SPEC, 800, seed=5, start=3820, t0=80)  # quiet period: resolutions
    labs = make_labels(evs[:3000], seed=6, error_rate=0.05)
    return evs, labs


EVENTS, LABELS = traffic()


def run(mon, evs, labs, cuts_e, cuts_l):
    out = []
    for items, cuts, fn in ((evs, cuts_e, mon.process_inference), (labs, cuts_l, mon.process_labels)):
        b = [0] + sorted(set(c for c in cuts if 0 < c < len(items))) + [len(items)]
        for lo, hi in zip(b, b[1:]):
            out += [m.to_dict() for m in fn(items[lo:hi])]
    return out


BASELINE = run(ModelMonitor(SPEC, CAL, AL), EVENTS, LABELS, list(range(0, 5000, 500)), list(range(0, 5000, 500)))


def test_traffic_produces_every_kind():
    kinds = {m["kind"] for m in BASELINE}
    assert kinds == {"alert", "resolve", "rollback"}, kinds
    assert all(m["schema"] == "driftline.control/v1" and m["event_id"] for m in BASELINE)
    ids = [m["id"] for m in BASELINE]
    assert len(ids) == len(set(ids))
    for m in BASELINE:  # plain JSON, no numpy scalars
        assert orjson.loads(orjson.dumps(m)) == m


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(1, 4620), max_size=12), st.lists(st.integers(1, 3600), max_size=8))
def test_messages_do_not_depend_on_batch_boundaries(cuts_e, cuts_l):
    assert run(ModelMonitor(SPEC, CAL, AL), EVENTS, LABELS, cuts_e, cuts_l) == BASELINE


BASELINE_STATE = None


def _state_after(cuts_e, cuts_l, restore):
    """Final state bytes after feeding the traffic in the given batches, optionally restoring
    the monitor from its bytes at every cut (as a worker does after a crash or a rebalance)."""
    mon = ModelMonitor(SPEC, CAL, AL)
    out = []
    for items, cuts, kind in ((EVENTS, cuts_e, "i"), (LABELS, cuts_l, "l")):
        b = [0] + sorted(set(c for c in cuts if 0 < c < len(items))) + [len(items)]
        for lo, hi in zip(b, b[1:]):
            fn = mon.process_inference if kind == "i" else mon.process_labels
            out += [m.to_dict() for m in fn(items[lo:hi])]
            if restore:
                mon = ModelMonitor.from_bytes(SPEC, CAL, AL, mon.to_bytes())
    return out, mon.to_bytes()


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(1, 4620), max_size=14), st.lists(st.integers(1, 3600), max_size=8), st.booleans())
def test_state_bytes_do_not_depend_on_batch_boundaries(cuts_e, cuts_l, restore):
    global BASELINE_STATE
    if BASELINE_STATE is None:
        BASELINE_STATE = _state_after([], [], False)
    messages, blob = _state_after(cuts_e, cuts_l, restore)
    assert messages == BASELINE_STATE[0]
    assert blob == BASELINE_STATE[1], "state after the same stream must be byte-identical whatever the cuts"


@pytest.mark.parametrize("split", [150, 399, 401, 1700, 3010, 4000])
def test_state_round_trip_gives_identical_future(split):
    mon = ModelMonitor(SPEC, CAL, AL)
    first = run(mon, EVENTS[:split], [], [137], [])
    blob = mon.to_bytes()
    restored = ModelMonitor.from_bytes(SPEC, CAL, AL, blob)
    assert restored.to_bytes() == blob
    rest = run(restored, EVENTS[split:], LABELS, [250], [333])
    assert first + rest == run(ModelMonitor(SPEC, CAL, AL), EVENTS, LABELS, [split], [])


def test_state_bytes_do_not_depend_on_the_order_detections_came_in():
    """Per-stream detection counts are encoded in one order, so a restored monitor (whose counts
    are read back in signal order) writes the same bytes as the live one whose first label drift
    came before its first numeric drift (a diverged state in the long chaos run)."""
    a, b = ModelMonitor(SPEC, CAL, AL), ModelMonitor(SPEC, CAL, AL)
    run(a, EVENTS[:500], [], [], [])
    run(b, EVENTS[:500], [], [], [])
    a.stream_detections = {"v1/stable": {"label_drift": 2, "numeric_drift": 1}, "v2/canary": {"performance": 1}}
    b.stream_detections = {"v2/canary": {"performance": 1}, "v1/stable": {"numeric_drift": 1, "label_drift": 2}}
    assert a.to_bytes() == b.to_bytes()
    blob = a.to_bytes()
    assert ModelMonitor.from_bytes(SPEC, CAL, AL, blob).to_bytes() == blob


def test_state_is_compact():
    mon = ModelMonitor(SPEC, CAL, AL)
    run(mon, EVENTS, LABELS, [], [])
    assert len(mon.to_bytes()) < 64 * 1024


def test_wrong_spec_or_model_rejected():
    blob = ModelMonitor(SPEC, CAL, AL).to_bytes()
    other = demo_model(n_numeric=2, n_categorical=2, reference_size=400)
    with pytest.raises(StateFormatError, match="different model spec"):
        ModelMonitor.from_bytes(other, CAL, AL, blob)
    with pytest.raises(StateFormatError, match="different model spec"):
        ModelMonitor.from_bytes(SPEC, CalibrationSpec(window=999), AL, blob)
    renamed = SPEC.model_copy(update={"name": "other"})
    with pytest.raises(StateFormatError, match="is for model"):
        ModelMonitor.from_bytes(renamed, CAL, AL, blob)
    ModelMonitor.from_bytes(SPEC, CAL, AlertPolicySpec(cooldown_seconds=1), blob)  # policy may change


MID = ModelMonitor(SPEC, CAL, AL)
run(MID, EVENTS[:2000], LABELS[:1500], [], [])
DOC = decode_state(MID.to_bytes())


def _paths(doc, prefix=()):
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _paths(v, prefix + (i,))
    yield prefix


PATHS = [p for p in _paths(DOC) if p]
json_values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**63 - 1),
                                     st.floats(allow_nan=False), st.text(max_size=5)),
                           lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=3), c, max_size=3),
                           max_leaves=5)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(PATHS), json_values)
def test_hostile_documents_raise_state_format_error(path, value):
    doc = orjson.loads(orjson.dumps(DOC))
    node = doc
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    try:
        mon = ModelMonitor.from_bytes(SPEC, CAL, AL, encode_state(doc))
    except StateFormatError:
        return
    mon.process_inference(EVENTS[2000:2300])  # accepted state must stay usable
    mon.process_labels(LABELS[1500:1700])


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 10**6), st.integers(0, 255))
def test_corrupt_bytes_raise_state_format_error(at, byte):
    blob = bytearray(MID.to_bytes())
    at %= len(blob)
    blob[at] = byte if blob[at] != byte else (byte + 1) % 256
    with pytest.raises(StateFormatError):
        ModelMonitor.from_bytes(SPEC, CAL, AL, bytes(blob))
    with pytest.raises(StateFormatError):
        ModelMonitor.from_bytes(SPEC, CAL, AL, bytes(blob[: at]))


def test_engine_routes_and_counts_unknown_models():
    eng = Engine(MonitorSpec(models=[SPEC], calibration=CAL, alerts=AL))
    evs = make_events(SPEC, 10)
    for e in evs[:3]:
        e.model = "ghost"
    eng.process_inference(evs)
    eng.process_labels(make_labels(evs[:3]))
    assert eng.unknown_model_events == 3 and eng.unknown_model_labels >= 3
    assert eng.monitors[SPEC.name].events == 7
    st_ = eng.stats
    assert st_["models"][SPEC.name]["streams"]["v1/stable"]["events"] == 7


def test_stats_snapshot():
    s = MID.stats
    orjson.dumps(s)
    assert s["events"] == 2000 and s["streams"]["v1/stable"]["armed"]
    num = s["streams"]["v1/stable"]["numeric"]["x0"]
    assert {"cusum_statistic", "cusum_threshold", "cusum_detections", "values_since_restart"} <= set(num)
    assert s["alerts"]["raised"] >= 1 and sum(s["detections"].values()) >= 1


def test_broken_timestamps_do_not_poison_event_time():
    mon = ModelMonitor(SPEC, CAL, AL)
    evs = make_events(SPEC, 50, seed=9, version="vBad")
    evs[0].ts = float("nan")
    evs[1].ts = float("inf")
    msgs = [m.to_dict() for m in mon.process_inference(evs)]
    assert msgs and all(np.isfinite(m["ts"]) for m in msgs)
    assert np.isfinite(mon.now) and mon.now == max(e.ts for e in evs[2:])
    orjson.dumps(msgs)


def test_a_clock_pushed_into_the_future_can_be_clamped_back():
    """State saved while a far-future ts held the clock: alerts resolved at once and stayed muted."""
    from dataclasses import replace
    mon = ModelMonitor(SPEC, CAL, AL)
    mon.process_inference(EVENTS[:1500])
    drift = EVENTS[1500:3000]
    first = [m for m in mon.process_inference(drift[:600]) if m.to_dict()["kind"] == "alert"]
    assert first, "the drift must raise an alert"
    bogus = replace(drift[600], ts=1e12, event_id="bogus")
    resolved = [m for m in mon.process_inference([bogus]) if m.to_dict()["kind"] == "resolve"]
    assert resolved and mon.now == 1e12
    # the keys alerted before the clock jumped (a key first seen later, such as the trigger whose
    # rate the drift raises, alerts either way)
    keys = {(m.to_dict()["signal"], m.to_dict()["key"]) for m in first}

    def again(msgs):
        docs = [m.to_dict() for m in msgs]
        return [d for d in docs if d["kind"] == "alert" and (d["signal"], d["key"]) in keys]

    muted = ModelMonitor.from_bytes(SPEC, CAL, AL, mon.to_bytes())
    assert not again(muted.process_inference(drift[601:]))
    repaired = ModelMonitor.from_bytes(SPEC, CAL, AL, mon.to_bytes())
    assert repaired.clamp_clock(drift[600].ts) and repaired.now == drift[600].ts
    assert again(repaired.process_inference(drift[601:]))
    assert not repaired.clamp_clock(1e11)  # nothing left to clamp


def test_a_canary_starting_while_stable_learns_its_reference_does_not_depend_on_batch_cuts():
    """A canary stream inherits the stable profile learned *before its first event*, however batches are cut.

    Created at the start of a batch in which stable finished learning, it used to get stable's
    profile in one run and learn its own in another (the chaos verifier's diverged states).
    """
    stable = make_events(SPEC, 600, seed=21)
    canary = make_events(SPEC, 200, seed=22, start=600, version="v2", deployment="canary")
    events = sorted(stable + canary, key=lambda e: e.ts)
    first_canary = next(i for i, e in enumerate(events) if e.deployment == "canary")
    armed_at = [i for i, e in enumerate(events) if e.deployment == "stable"][SPEC.reference_size - 1]
    assert first_canary < armed_at, "the canary must start while stable still learns"
    whole = ModelMonitor(SPEC, CAL, AL)
    whole.process_inference(events)
    one_by_one = ModelMonitor(SPEC, CAL, AL)
    for e in events:
        one_by_one.process_inference([e])
    assert whole.to_bytes() == one_by_one.to_bytes()


def test_canary_reference_does_not_depend_on_batch_cuts():
    """A canary whose first events precede stable's completed profile learns its own reference,
    whatever batch holds stable's completing event (a live worker and a replay cut differently)."""
    evs = make_events(SPEC, 900, seed=11)
    can = make_events(SPEC, 300, seed=12, version="v2", deployment="canary")
    mixed = []
    for i, e in enumerate(evs):
        mixed.append(e)
        if i % 3 == 0 and can:
            mixed.append(can.pop(0))
    for i, e in enumerate(mixed):
        e.position = i
    blobs = set()
    for size in (50, 257, 4096):
        mon = ModelMonitor(SPEC, CAL, AL)
        for lo in range(0, len(mixed), size):
            mon.process_inference(mixed[lo:lo + size])
        assert not mon.streams[("v2", "canary")].from_file
        blobs.add(mon.to_bytes())
    assert len(blobs) == 1
