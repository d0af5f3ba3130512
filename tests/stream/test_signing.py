"""Signing: canonical bytes, HMAC round trips, and every failure reason."""
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.signing import SCHEMA, SigningKey, canonical_bytes, sign, verify

KEY = SigningKey("k1", b"an-hmac-key-of-sufficient-length")
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


def test_signing_is_deterministic():
    assert sign(rollback(), KEY) == sign(rollback(), KEY)


def test_resigning_replaces_signature():
    doc = sign(sign(rollback(), OTHER), KEY)
    assert verify(doc, KEY).ok


@pytest.mark.parametrize("field,value", [("canary_version", "v1"), ("stable_version", "v3"), ("model", "x"),
                                         ("evidence", []), ("ts", 12.6), ("details", {}), ("key_id", "k2"),
                                         ("idempotency_key", "d" * 32)])
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
