"""Signing: canonical bytes, HMAC round trips, issue time and freshness, and every failure reason."""
import hmac
import math
import time

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.signing import SCHEMA, Freshness, SigningKey, canonical_bytes, finite_json, sign, verify

KEY = SigningKey("k1", b"an-hmac-key-of-sufficient-length")
T = 1_800_000_000  # a fixed issue time
OTHER = SigningKey("k1", b"another-hmac-key-of-the-same-id!")


def rollback(**kw):
    doc = {"schema": SCHEMA, "kind": "rollback", "id": "a" * 32, "idempotency_key": "b" * 32, "model": "m",
           "canary_version": "v2", "stable_version": "v1", "reason": "prediction divergence",
           "evidence": ["c" * 32], "details": {"js": 0.04, "rates": [0.5, 0.25]}, "event_id": "e9",
           "position": 9, "ts": 12.5}
    doc.update(kw)
    return doc


def test_sign_adds_key_id_and_hex_signature_and_verifies():
    doc = sign(rollback(), KEY)
    assert doc["key_id"] == "k1" and len(doc["signature"]) == 64
    assert verify(doc, KEY).ok
    assert "signature" not in rollback()  # input untouched


def test_canonical_bytes_sorted_compact_without_signature():
    raw = canonical_bytes({"b": 1, "a": {"d": 2, "c": [1.5]}, "signature": "x"})
    assert raw == b'{"a":{"c":[1.5],"d":2},"b":1}'


def test_signature_survives_json_round_trip_and_key_order():
    doc = sign(rollback(), KEY)
    back = orjson.loads(orjson.dumps(dict(reversed(list(doc.items())))))
    assert verify(back, KEY).ok


def test_signing_is_deterministic_for_one_issue_time():
    assert sign(rollback(), KEY, issued_at=T) == sign(rollback(), KEY, issued_at=T)
    assert sign(rollback(), KEY, issued_at=T)["signature"] != sign(rollback(), KEY, issued_at=T + 1)["signature"]


def test_resigning_replaces_signature():
    doc = sign(sign(rollback(), OTHER), KEY)
    assert verify(doc, KEY).ok


@pytest.mark.parametrize("field,value", [("canary_version", "v1"), ("stable_version", "v3"), ("model", "x"),
                                         ("evidence", []), ("ts", 12.6), ("details", {}), ("key_id", "k2"),
                                         ("idempotency_key", "d" * 32), ("issued_at", 0)])
def test_tampering_any_field_fails(field, value):
    doc = dict(sign(rollback(), KEY), **{field: value})
    result = verify(doc, {"k1": KEY, "k2": SigningKey("k2", b"k2-secret-of-enough-length")})
    assert not result.ok and result.reason == "bad signature"


def test_added_field_fails():
    doc = dict(sign(rollback(), KEY), extra=True)
    assert verify(doc, KEY).reason == "bad signature"


def test_wrong_key_fails():
    assert verify(sign(rollback(), KEY), OTHER).reason == "bad signature"


def test_failure_reasons():
    doc = sign(rollback(), KEY)
    assert verify({k: v for k, v in doc.items() if k != "signature"}, KEY).reason == "missing signature"
    assert verify({k: v for k, v in doc.items() if k != "key_id"}, KEY).reason == "missing key id"
    assert verify(dict(doc, key_id="k9"), KEY).reason == "unknown key id 'k9'"
    assert verify(dict(doc, schema="driftline.control/v0"), KEY).reason.startswith("wrong schema")
    assert verify(dict(doc, signature="zz"), KEY).reason.startswith("malformed signature")
    assert verify(dict(doc, signature=doc["signature"].upper()), KEY).reason.startswith("malformed signature")
    assert verify([doc], KEY).reason == "not a JSON object"


def test_key_rotation_by_key_id():
    new = SigningKey("k2", b"the-next-key-after-rotation")
    keyring = [KEY, new]
    assert verify(sign(rollback(), KEY), keyring).ok
    assert verify(sign(rollback(), new), keyring).ok


def test_short_or_unnamed_keys_rejected():
    with pytest.raises(ValueError):
        SigningKey("k", b"short")
    with pytest.raises(ValueError):
        SigningKey("", b"long-enough-secret-bytes")
    assert "long-enough" not in repr(SigningKey("k", b"long-enough-secret-bytes"))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**53, 2**53) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=10)


@settings(max_examples=200)
@given(st.dictionaries(st.text(min_size=1, max_size=8).filter(lambda k: k not in ("signature", "key_id")),
                       json_values, max_size=6))
def test_any_json_message_round_trips_through_the_wire(extra):
    doc = sign(dict(rollback(), **{"x_" + k: v for k, v in extra.items()}), KEY)
    assert verify(orjson.loads(orjson.dumps(doc)), KEY).ok


@settings(max_examples=100)
@given(st.text(min_size=1, max_size=20))
def test_any_changed_reason_fails(reason):
    doc = sign(rollback(), KEY)
    if reason != doc["reason"]:
        assert not verify(dict(doc, reason=reason), KEY).ok


# -- defect: null, NaN and +-Infinity shared one canonical form -------------------------------------
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_a_signature_over_a_non_finite_number_does_not_verify_null(value):
    doc = sign(rollback(details={"x": value}), KEY)
    assert not verify(dict(doc, details={"x": None}), KEY).ok


def test_non_finite_numbers_have_distinct_signatures():
    sigs = {sign(rollback(details={"x": v}), KEY)["signature"]
            for v in (None, float("nan"), float("inf"), float("-inf"))}
    assert len(sigs) == 4


def test_a_message_carrying_a_raw_non_finite_number_never_verifies():
    doc = sign(rollback(details={"x": None}), KEY)
    result = verify(dict(doc, details={"x": float("nan")}), KEY)
    assert not result.ok and "non-finite" in result.reason


# -- issue time and freshness -----------------------------------------------------------------------
def test_sign_adds_the_wall_clock_issue_time_inside_the_signed_bytes():
    before = int(time.time())
    doc = sign(rollback(), KEY)
    assert isinstance(doc["issued_at"], int) and before <= doc["issued_at"] <= time.time() + 1
    assert b'"issued_at":' in canonical_bytes(doc)
    assert verify(dict(doc, issued_at=doc["issued_at"] + 1), KEY, freshness=None).reason == "bad signature"


def test_resigning_takes_a_new_issue_time():
    old = sign(rollback(), KEY, issued_at=T)
    assert sign(old, KEY, issued_at=T + 50)["issued_at"] == T + 50


@pytest.mark.parametrize("age,ok", [(0, True), (299, True), (300, True), (301, False), (86_400, False),
                                    (-30, True), (-31, False)])
def test_freshness_window(age, ok):
    doc = sign(rollback(), KEY, issued_at=T)
    result = verify(doc, KEY, now=T + age)
    assert result.ok == ok
    if not ok:
        assert result.reason.startswith("expired" if age > 0 else "issued in the future"), result.reason


def test_configurable_window_and_signature_only_mode():
    doc = sign(rollback(), KEY, issued_at=T)
    assert verify(doc, KEY, freshness=Freshness(max_age_seconds=3600), now=T + 3000).ok
    assert not verify(doc, KEY, freshness=Freshness(max_age_seconds=60), now=T + 61).ok
    assert verify(doc, KEY, freshness=Freshness(max_skew_seconds=0), now=T).ok
    assert not verify(doc, KEY, freshness=Freshness(max_skew_seconds=0), now=T - 1).ok
    assert verify(doc, KEY, freshness=None, now=T + 10**9).ok


def test_signature_is_checked_before_freshness():
    doc = sign(rollback(), KEY, issued_at=T)
    assert verify(dict(doc, model="x"), KEY, now=T + 10**6).reason == "bad signature"
    assert verify(doc, OTHER, now=T + 10**6).reason == "bad signature"


@pytest.mark.parametrize("issued", [None, 1.8e9, "1800000000", True])
def test_missing_or_malformed_issue_time_is_refused_even_if_signed(issued):
    body = {k: v for k, v in rollback().items()}
    if issued is not None:
        body["issued_at"] = issued
    body["key_id"] = KEY.key_id
    body["canonicalization"] = "rfc8785"
    body["signature"] = hmac.new(KEY.secret, canonical_bytes(body), "sha256").hexdigest()
    assert verify(body, KEY, freshness=None).ok  # the signature itself is fine
    result = verify(body, KEY, now=T)
    assert not result.ok and "issue time" in result.reason


def test_rotation_accepts_old_and_new_key_ids_and_refuses_unknown_ones():
    old, new = SigningKey("2026-10", b"the-key-before-rotation-0123"), SigningKey("2026-11", b"the-key-after-rotation-45678")
    ring = {"2026-10": old, "2026-11": new}
    assert verify(sign(rollback(), old), ring).ok and verify(sign(rollback(), new), ring).ok
    stranger = sign(rollback(), SigningKey("2026-12", new.secret))
    assert verify(stranger, ring).reason == "unknown key id '2026-12'"
    assert verify(dict(sign(rollback(), old), key_id="2026-11"), ring).reason == "bad signature"


finite_or_not = st.floats(allow_nan=True, allow_infinity=True)


@settings(max_examples=200)
@given(st.lists(finite_or_not | st.none(), max_size=5))
def test_signed_documents_never_carry_non_finite_numbers_and_verify_after_the_wire(values):
    doc = sign(rollback(details={"values": values}), KEY)
    back = orjson.loads(orjson.dumps(doc))
    assert verify(back, KEY).ok
    for v, w in zip(values, back["details"]["values"]):
        if v is None or math.isfinite(v):
            assert w == v
        else:
            assert w == ("nan" if math.isnan(v) else "inf" if v > 0 else "-inf")


def test_finite_json_converts_nested_and_numpy_values():
    import numpy as np

    out = finite_json({"a": [float("nan"), 1.5, {"b": np.float32("inf")}], "c": np.array([1.0, -np.inf])})
    assert out == {"a": ["nan", 1.5, {"b": "inf"}], "c": [1.0, "-inf"]}
    with pytest.raises(ValueError, match=r"non-finite number at \$\.c\[1\]"):
        canonical_bytes({"c": np.array([1.0, -np.inf])})


@pytest.mark.parametrize("module", ["stream.signing", "stream.control"])
def test_docstring_examples(module):
    import doctest
    import importlib

    assert doctest.testmod(importlib.import_module(module)).failed == 0


def test_a_rollback_raised_by_a_label_signs_and_verifies_after_the_wire():
    """A rollback decided on a joined label carries the label message's position, beyond 2**53
    (every topic after the first is): signing it raised ValueError, uncaught, and the worker
    crash-looped on the internal record (the chaos run with seed 7). RFC 8785 numbers are doubles,
    so such an integer is signed as the double every JSON reader makes of it."""
    from stream.records import source_position

    position = source_position(1, 1, 5)
    assert position > 2**53
    doc = sign(rollback(position=position), KEY, issued_at=T)
    wire = orjson.loads(orjson.dumps(doc))
    assert wire["position"] == position  # the exact integer travels; the signature covers its double
    assert verify(wire, KEY, freshness=None).ok
    assert not verify(dict(wire, position=position + 2**12), KEY, freshness=None).ok
    assert canonical_bytes(wire) == canonical_bytes(dict(wire, position=float(position)))
