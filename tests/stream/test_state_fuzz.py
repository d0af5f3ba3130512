"""Fuzzing what the worker reads back from Redis: pending predictions, offsets, staged model lists.

Redis holds values driftline wrote, but a bug elsewhere, an operator's edit or a hostile client
with access to the key prefix can leave anything there. Pending predictions that are not exactly
``[version, deployment, prediction, finite ts]`` are treated as absent (the label is then
dead-lettered as unmatched); offsets that are not non-negative 64-bit integers raise
:class:`StateFormatError` rather than seeking Kafka to a logical offset.
"""
from __future__ import annotations

import math
import uuid

import orjson
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detectors.errors import StateFormatError
from stream.state import PartitionKey, PendingPrediction, StateStore, _decode_pending, _split, parse_offset
from tests.json_strategies import HOSTILE_SCALARS, hostile_bytes

PENDING = st.tuples(st.text(max_size=8), st.text(max_size=8), st.sampled_from(["stable", "canary"]),
                    st.text(max_size=8), st.floats(0, 4e9)).map(list)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(raw=hostile_bytes(PENDING))
def test_pending_predictions(raw: bytes | None) -> None:
    p = _decode_pending(raw or b"")
    if p is not None:
        assert isinstance(p, PendingPrediction)
        assert all(type(x) is str for x in (p.model, p.model_version, p.deployment, p.prediction))
        assert type(p.ts) is float and math.isfinite(p.ts)


@pytest.mark.parametrize("raw", [b'["m", "v", "stable", "p", "nan"]', b'["m", "v", "stable", "p", "1e999"]',
                                 b'["m", "v", "stable", "p", true]', b'{"a": 1, "b": 2, "c": 3, "d": 4}',
                                 b'["m", "v", "stable", "p"]', b'[1, "v", "stable", "p", 5]', b'"vsp1"', b"1234"])
def test_malformed_pending_predictions_are_absent(raw: bytes) -> None:
    assert _decode_pending(raw) is None
    assert _decode_pending(b'["m", "v", "stable", "p", 5]') is not None


@settings(max_examples=300, deadline=None)
@given(raw=st.one_of(st.binary(max_size=30), st.integers(-(2**70), 2**70).map(lambda i: str(i).encode()),
                     st.text(max_size=12).map(lambda t: t.encode("utf-8", "surrogatepass")),
                     HOSTILE_SCALARS.map(lambda v: repr(v).encode("utf-8", "surrogatepass"))))
def test_offsets(raw: bytes) -> None:
    try:
        offset = parse_offset(raw, "k")
    except StateFormatError as err:
        assert "k:" in str(err)
        return
    assert type(offset) is int and 0 <= offset < 2**63 and offset == int(raw)


@pytest.mark.parametrize("raw", [b"-1", b"-2", b"", b" 5", b"5.0", b"1e3", b"\xd9\xa3", b"9223372036854775808",
                                 b"nan"])
def test_bad_offsets_are_refused(raw: bytes) -> None:
    with pytest.raises(StateFormatError):
        parse_offset(raw, "k")


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(raw=hostile_bytes(st.lists(st.text(max_size=6), max_size=4)))
def test_staged_model_lists(raw: bytes | None) -> None:
    try:
        models = _split(raw, "k")
    except StateFormatError:
        return
    assert all(type(m) is str for m in models)


@pytest.mark.integration
def test_restore_refuses_corrupt_offsets_in_redis(stack) -> None:
    """Against the real Redis: a corrupt committed or staged offset is a StateFormatError naming its key."""
    client = redis.Redis.from_url(stack.redis_url)
    prefix = f"fz-{uuid.uuid4().hex[:8]}"
    store = StateStore(client, prefix, "g")
    part = PartitionKey("internal", 0)
    key = store.offsets_key(part)
    try:
        client.hset(key, mapping={"committed": 41})
        assert store.restore(part, None) == 41
        for field, value in (("committed", "-1"), ("committed", "banana"), ("staged", "1e3")):
            client.delete(key)
            client.hset(key, mapping={field: value})
            with pytest.raises(StateFormatError, match=key):
                store.restore(part, 7)
        client.delete(key)
        client.hset(key, mapping={"staged": 9, "staged_models": orjson.dumps({"not": "a list"})})
        with pytest.raises(StateFormatError, match="staged_models"):
            store.restore(part, 9)
    finally:
        client.delete(key)
        client.close()
