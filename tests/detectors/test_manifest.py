"""The live version manifest: replay protection, staleness, the allow-list, digests, state."""
from __future__ import annotations

import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detectors.engine import ModelMonitor
from detectors.errors import StateFormatError
from detectors.manifest import Manifest, RegistryEntry
from detectors.simulate import demo_model, make_events
from detectors.spec import AlertPolicySpec, CalibrationSpec
from detectors.state import decode_state, encode_state


def digest(tag: str) -> str:
    return "sha256:" + (tag.encode().hex() * 64)[:64]


def entry(version: str, stage: str, seq: int, issued: int = 1000, model: str = "filter", dig: str | None = None):
    return RegistryEntry(model, version, dig or digest(version), stage, issued, seq, "k1")


# -- Manifest -----------------------------------------------------------------------------------------------
def test_sequences_protect_against_replay_per_version() -> None:
    m = Manifest("filter")
    assert m.apply(entry("v7", "canary", 5), 0.0, None) is None
    assert m.apply(entry("v7", "canary", 5), 0.0, None) == "registry_replayed"
    assert m.apply(entry("v7", "production", 4), 0.0, None) == "registry_replayed"
    assert m.apply(entry("v8", "canary", 1), 0.0, None) is None, "sequences are per version"
    assert m.apply(entry("v7", "archived", 6), 0.0, None) is None
    assert m.apply(entry("v7", "canary", 5), 0.0, None) == "registry_replayed", "an old announcement revived"
    assert m.serving() == {"v8"} and m.known() == {"v7", "v8"} and m.accepted == 3


def test_stale_entries_are_judged_on_the_event_clock() -> None:
    m = Manifest("filter")
    assert m.apply(entry("v1", "canary", 1, issued=100), float("-inf"), 50.0) is None, "no clock yet: no bound"
    assert m.apply(entry("v2", "canary", 1, issued=100), 151.0, 50.0) == "registry_stale"
    assert m.apply(entry("v2", "canary", 1, issued=100), 150.0, 50.0) is None
    assert m.apply(entry("v3", "canary", 1, issued=100), 10**9, None) is None, "max_age None: no bound"


def test_wrong_model_and_malformed_entries_are_refused() -> None:
    m = Manifest("filter")
    assert m.apply(entry("v1", "canary", 1, model="other"), 0.0, None) == "registry_wrong_model"
    assert m.apply(entry("v1", "retired", 1), 0.0, None) == "registry_malformed"
    assert m.apply(entry("v1", "canary", 1, dig="sha256:abc"), 0.0, None) == "registry_malformed"
    assert m.apply(entry("v1", "canary", 0), 0.0, None) == "registry_malformed"
    assert not m.entries


def test_eviction_keeps_the_manifest_bounded_and_raises_the_floor() -> None:
    m = Manifest("filter", max_entries=3)
    for i, stage in enumerate(["archived", "production", "archived"], 1):
        assert m.apply(entry(f"v{i}", stage, 10 * i), 0.0, None) is None
    assert m.apply(entry("v4", "canary", 40), 0.0, None) is None
    assert "v1" not in m.entries and m.floor == 10 and len(m.entries) == 3
    assert m.apply(entry("v1", "canary", 9), 0.0, None) == "registry_replayed", "evicted, but not forgotten"
    assert m.apply(entry("v1", "canary", 11), 0.0, None) is None
    assert m.floor == 30 and set(m.entries) == {"v1", "v2", "v4"}
    assert m.apply(entry("v9", "canary", 99), 0.0, None) == "registry_manifest_full"


def test_manifest_state_round_trip_and_validation() -> None:
    m = Manifest("filter", max_entries=2)
    m.apply(entry("v1", "archived", 3), 0.0, None)
    m.apply(entry("v2", "canary", 4), 0.0, None)
    m.apply(entry("v3", "production", 5), 0.0, None)
    m.count_mismatches("v3", 7)
    back = Manifest("filter", max_entries=2)
    back.load_state(m.to_state())
    assert back.describe() == m.describe() and back.serving() == m.serving() and back.expected("v3") == digest("v3")
    bad = m.to_state()
    for mutate in (lambda d: d.update(v=2), lambda d: d["entries"][0].__setitem__(2, "gone"),
                   lambda d: d["entries"][0].__setitem__(1, "md5:00"), lambda d: d.update(floor=-1),
                   lambda d: d["entries"].append(list(d["entries"][0])), lambda d: d["entries"][0].pop()):
        doc = m.to_state()
        mutate(doc)
        with pytest.raises(StateFormatError):
            Manifest("filter", max_entries=2).load_state(doc)
    assert bad == m.to_state()


# -- ModelMonitor with a registry ---------------------------------------------------------------------------
CALIB = CalibrationSpec(window=500, label_window=300)


@pytest.fixture()
def spec():
    return demo_model(n_numeric=3, n_categorical=1, reference_size=300, label_reference_size=100)


def monitor(spec, registry: bool = True) -> ModelMonitor:
    return ModelMonitor(spec, CALIB, AlertPolicySpec(), registry=registry)


def events(spec, n, version="v1", deployment="stable", start=0, dig=None, seed=0):
    evs = make_events(spec, n, seed=seed, version=version, deployment=deployment, start=start, t0=start / 100.0)
    for e in evs:
        e.artifact_digest = dig
    return evs


def kinds(msgs):
    return [(m.to_dict()["kind"], m.to_dict().get("signal"), m.to_dict().get("detector"), m.to_dict().get("version"))
            for m in msgs]


def test_announced_version_is_accepted_without_restart_and_archived_one_alerts_again(spec) -> None:
    mon = monitor(spec)
    assert mon.apply_registry([entry("v9", "canary", 1)]) == [None]
    assert "v9" in mon.listed and "v1" in mon.listed, "static versions the registry does not name stay allowed"
    assert mon.process_inference(events(spec, 400, "v9", "canary")) == []
    assert mon.apply_registry([entry("v9", "archived", 2)]) == [None]
    assert ("v9", "canary") not in mon.streams, "a version that stops serving drops its streams"
    out = mon.process_inference(events(spec, 10, "v9", "canary", start=400))
    assert kinds(out) == [("alert", "version_integrity", "unlisted_version", "v9")]
    assert "v9" not in out[0].to_dict()["reference"]["listed_versions"]


def test_registry_can_archive_a_static_version(spec) -> None:
    mon = monitor(spec)
    mon.apply_registry([entry("v2", "archived", 1)])
    assert mon.listed == {"v1"}
    assert kinds(mon.process_inference(events(spec, 5, "v2"))) == [("alert", "version_integrity", "unlisted_version",
                                                                    "v2")]


def test_without_a_registry_the_static_list_rules(spec) -> None:
    mon = monitor(spec, registry=False)
    assert mon.apply_registry([entry("v9", "canary", 1)]) == ["registry_disabled"]
    assert kinds(mon.process_inference(events(spec, 5, "v9"))) == [("alert", "version_integrity",
                                                                    "unlisted_version", "v9")]


def test_first_wrong_digest_is_paged_naming_both_digests(spec) -> None:
    mon = monitor(spec)
    mon.apply_registry([entry("v1", "production", 1)])
    good = events(spec, 300, dig=digest("v1"))
    unknown = events(spec, 100, start=300, dig=None)
    swapped = events(spec, 700, start=400, dig=digest("evil"))
    assert mon.process_inference(good + unknown) == [], "the registered digest, or none, raises nothing"
    out = mon.process_inference(swapped[:50] + swapped[50:])
    alerts = [m.to_dict() for m in out if m.to_dict()["kind"] == "alert"]
    assert [(a["signal"], a["detector"], a["severity"]) for a in alerts] == [
        ("version_integrity", "digest_mismatch", "page")]
    a = alerts[0]
    assert a["event_id"] == swapped[0].event_id, "paged on the first wrong-digest event"
    assert a["reference"]["expected_digest"] == digest("v1") and a["current"]["observed_digest"] == digest("evil")
    assert mon.detector_counts["version_integrity/digest_mismatch"] == 2, "then once per window of mismatches"
    assert mon.manifest.entries["v1"].mismatches == 700


def test_wrong_digest_on_the_canary_rolls_it_back(spec) -> None:
    mon = monitor(spec)
    mon.apply_registry([entry("v1", "production", 1), entry("v2", "canary", 1)])
    mixed = [e for pair in zip(events(spec, 300, dig=digest("v1")),
                               events(spec, 300, "v2", "canary", start=300, dig=digest("other"), seed=1))
             for e in pair]
    out = [m.to_dict() for m in mon.process_inference(mixed)]
    rollback = [m for m in out if m["kind"] == "rollback"]
    assert len(rollback) == 1 and rollback[0]["canary_version"] == "v2" and rollback[0]["stable_version"] == "v1"
    assert "digest_mismatch" in rollback[0]["reason"]


def test_manifest_travels_with_the_model_state(spec) -> None:
    mon = monitor(spec)
    mon.apply_registry([entry("v9", "production", 3), entry("v2", "archived", 4)])
    mon.process_inference(events(spec, 50, "v9", dig=digest("v9")))
    blob = mon.to_bytes()
    back = ModelMonitor.from_bytes(spec, CALIB, AlertPolicySpec(), blob, registry=True)
    assert back.listed == {"v1", "v9"} and back.manifest.describe() == mon.manifest.describe()
    assert back.to_bytes() == blob
    assert back.apply_registry([entry("v9", "production", 3)]) == ["registry_replayed"], "replay protection survives"
    plain = monitor(spec, registry=False)
    plain.process_inference(events(spec, 20))
    assert ModelMonitor.from_bytes(spec, CALIB, AlertPolicySpec(), plain.to_bytes(), registry=True).manifest.entries \
        == {}, "a state from before the registry loads with an empty manifest"
    doc = decode_state(blob)
    doc["manifest"]["entries"][0][2] = "bogus"
    with pytest.raises(StateFormatError):
        ModelMonitor.from_bytes(spec, CALIB, AlertPolicySpec(), encode_state(doc), registry=True)


# -- batch boundaries ---------------------------------------------------------------------------------------
def _stream(spec):
    """Events of three versions with digests (one swapped) interleaved with registry entries."""
    items: list = [entry("v1", "production", 1, issued=0), entry("v2", "canary", 1, issued=0)]
    pos = 0
    for version, dep, dig, n in (("v1", "stable", "v1", 300), ("v2", "canary", "v2", 200), ("v3", "canary", "v3", 60)):
        items += events(spec, n, version, dep, start=pos, dig=digest(dig), seed=pos)
        pos += n
    items.append(entry("v3", "canary", 1, issued=5))
    items += events(spec, 300, "v3", "canary", start=pos, dig=digest("v3"), seed=7)
    pos += 300
    items += events(spec, 600, "v2", "canary", start=pos, dig=digest("evil"), seed=8)
    pos += 600
    items += [entry("v2", "archived", 2, issued=9), entry("v2", "canary", 2, issued=9)]
    items += events(spec, 200, "v2", "canary", start=pos, dig=digest("v2"), seed=9)
    return [dataclasses.replace(e, position=i) if isinstance(e, RegistryEntry) else e for i, e in enumerate(items)]


def _run(spec, items, cuts, restore):
    """Feed ``items`` in batches cut at ``cuts`` (runs of one kind, as the worker does), optionally restoring
    the state from bytes between batches; returns the messages and the final state bytes."""
    mon = monitor(spec)
    bounds = sorted({c % len(items) for c in cuts} | {0, len(items)})
    out = []
    for lo, hi in zip(bounds, bounds[1:]):
        chunk = items[lo:hi]
        i = 0
        while i < len(chunk):
            j = i
            kind = isinstance(chunk[i], RegistryEntry)
            while j < len(chunk) and isinstance(chunk[j], RegistryEntry) == kind:
                j += 1
            if kind:
                mon.apply_registry(chunk[i:j], 3600.0)
            else:
                out += [m.to_dict() for m in mon.process_inference(chunk[i:j])]
            i = j
        if restore:
            mon = ModelMonitor.from_bytes(spec, CALIB, AlertPolicySpec(), mon.to_bytes(), registry=True)
    return out, mon.to_bytes()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.integers(1, 10_000), max_size=10), st.booleans())
def test_results_do_not_depend_on_batch_boundaries(spec, cuts, restore) -> None:
    items = _stream(spec)
    want_msgs, want_state = _run(spec, items, [], False)
    assert ("alert", "digest_mismatch") in {(m["kind"], m.get("detector")) for m in want_msgs}
    got_msgs, got_state = _run(spec, items, cuts, restore)
    assert got_msgs == want_msgs
    assert decode_state(got_state) == decode_state(want_state)
