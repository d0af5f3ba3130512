"""The exactly-once verifier's comparisons catch what they must: duplicates, losses, extras, divergence."""
from __future__ import annotations

import copy

from hypothesis import given, settings
from hypothesis import strategies as st

from loadtest.eos_verify import check_routing, compare_control, compare_states
from stream.records import source_position


def _alert(i: int, **extra) -> dict:
    return {"schema": "driftline.control/v1", "kind": "alert", "id": f"a{i}", "model": "m", "signal": "numeric_drift",
            "statistic": 0.5 + i, "position": i, "ts": 1.0 + i, **extra}


def _rollback(i: int) -> dict:
    return {"schema": "driftline.control/v1", "kind": "rollback", "id": f"r{i}", "model": "m",
            "canary_version": "v2", "stable_version": "v1", "evidence": [f"a{i}"]}


EXPECTED = [_alert(1), _alert(2), _rollback(3)]


def test_identical_output_passes_and_transport_fields_are_ignored():
    observed = copy.deepcopy(EXPECTED)
    observed[2].update(key_id="k1", signature="ab" * 32, issued_at=1_800_000_000.5)
    report = compare_control(EXPECTED, observed)
    assert (report["lost"], report["duplicated"], report["extra"], report["mismatched"]) == (0, 0, 0, 0)
    assert report["expected"] == report["observed"] == 3
    assert report["expected_by_kind"] == {"alert": 2, "rollback": 1}


def test_a_planted_duplicate_is_caught():
    report = compare_control(EXPECTED, EXPECTED + [copy.deepcopy(EXPECTED[1])])
    assert report["duplicated"] == 1 and report["duplicated_ids"] == ["a2"]
    assert report["lost"] == 0 and report["extra"] == 0


def test_a_missing_message_is_caught():
    report = compare_control(EXPECTED, EXPECTED[:1] + EXPECTED[2:])
    assert report["lost"] == 1 and report["lost_ids"] == ["a2"]


def test_an_extra_message_and_changed_content_are_caught():
    changed = copy.deepcopy(EXPECTED)
    changed[0]["statistic"] = 9.0
    report = compare_control(EXPECTED, changed + [_alert(7)])
    assert report["extra"] == 1 and report["extra_ids"] == ["a7"]
    assert report["mismatched"] == 1 and report["mismatched_ids"] == ["a1"]


def test_a_state_mismatch_is_caught():
    expected = {"m1": b"\x01state", "m2": b"\x02state"}
    assert compare_states(expected, dict(expected))["all_equal"]
    diverged = compare_states(expected, {"m1": b"\x01state", "m2": b"\x02statf"})
    assert not diverged["all_equal"] and diverged["diverged"] == ["m2"]
    missing = compare_states(expected, {"m1": b"\x01state", "m2": None})
    assert missing["diverged"] == ["m2"]
    surplus = compare_states({"m1": b"\x01state"}, {"m1": b"\x01state", "m3": b"x"})
    assert surplus["diverged"] == ["m3"]


def test_routing_catches_a_lost_a_twice_routed_and_a_reordered_message():
    raw = {source_position(0, 0, o): "inference" for o in range(4)} | {source_position(1, 0, 0): "label"}
    clean = [(2, source_position(0, 0, o), "m") for o in range(3)]
    report = check_routing(raw, clean + [(2, source_position(1, 0, 0), "m")], [source_position(0, 0, 3)])
    assert (report["lost"], report["duplicated"], report["order_violations"]) == (0, 0, 0)
    report = check_routing(raw, clean, [source_position(0, 0, 3)])
    assert report["lost"] == 1
    report = check_routing(raw, clean + [clean[1]] + [(2, source_position(1, 0, 0), "m")], [source_position(0, 0, 3)])
    assert report["duplicated"] == 1
    report = check_routing(raw, [clean[1], clean[0], clean[2], (2, source_position(1, 0, 0), "m")],
                           [source_position(0, 0, 3)])
    assert report["order_violations"] == 1
    report = check_routing(raw, clean + [(2, source_position(1, 0, 0), "m")],
                           [source_position(0, 0, 3), source_position(0, 0, 3)])
    assert report["duplicated"] == 1


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 30), max_size=40), st.lists(st.integers(0, 30), max_size=40))
def test_counts_add_up_for_any_observation(expected_ids, observed_ids):
    """lost + matched = expected and matched + duplicated + extra = observed, whatever is observed."""
    report = compare_control([_alert(i) for i in expected_ids], [_alert(i) for i in observed_ids])
    exp, obs = set(expected_ids), set(observed_ids)
    matched = sum(min(expected_ids.count(i), observed_ids.count(i)) for i in exp & obs)
    assert report["lost"] + matched == len(expected_ids)
    assert matched + report["duplicated"] + sum(observed_ids.count(i) for i in obs - exp) == len(observed_ids)
    assert report["extra"] == len(obs - exp)
    assert report["mismatched"] == 0


def test_a_signed_rollback_matches_its_unsigned_expected_content():
    """Every field ``sign`` adds (``canonicalization`` too) is transport, not content: a correctly
    signed rollback must not count as a mismatch (the long chaos run's one "mismatched" message)."""
    from stream.signing import SigningKey, sign

    key = SigningKey("k1", b"s" * 32)
    observed = [EXPECTED[0], EXPECTED[1], sign(EXPECTED[2], key)]
    report = compare_control(EXPECTED, observed)
    assert report["mismatched"] == 0, report["mismatched_ids"]
    observed[2] = dict(observed[2], stable_version="v0")  # a real content change is still caught
    assert compare_control(EXPECTED, observed)["mismatched_ids"] == ["r3"]


def test_state_differences_name_a_key_order_difference():
    """Two states with the same entries in another key order differ as bytes; the report says where."""
    from detectors.state import encode_state
    from loadtest.eos_verify import state_differences

    a = encode_state({"kind": "x", "per": {"v1": {"label_drift": 1, "numeric_drift": 2}}})
    b = encode_state({"kind": "x", "per": {"v1": {"numeric_drift": 2, "label_drift": 1}}})
    assert a != b
    diff = state_differences(a, b)
    assert len(diff) == 1 and diff[0].startswith(".per.v1: same entries, key order"), diff
    assert state_differences(a, a) == []


def test_unmatched_labels_are_classified_by_when_their_prediction_was_routed():
    from loadtest.eos_verify import classify_unmatched

    known = {"e1", "e2", "e3"}
    routed_at = {"e1": 100.0, "e2": 130.0, "e3": 99.5}
    unmatched = [("e1", 120.0), ("e2", 120.0), ("e3", 100.0), ("e9", 120.0)]
    assert classify_unmatched(unmatched, known, routed_at) == {"unknown_event": 1, "overtook": 2,
                                                               "prediction_lost": 1}
