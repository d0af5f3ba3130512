"""StateStore against a real Redis: ownership fencing, per-model label join, key spaces."""
from __future__ import annotations

import uuid

import pytest
import redis

from detectors.events import InferenceEvent
from stream.state import (OwnershipLost, PartitionKey, PendingPrediction, StateStore, encode_pending, event_lines,
                          pending_bucket_seconds, pending_lines)

pytestmark = pytest.mark.integration


@pytest.fixture()
def client(stack) -> redis.Redis:
    return redis.Redis.from_url(stack.redis_url)


@pytest.fixture()
def prefix(client) -> str:
    p = f"st-{uuid.uuid4().hex[:8]}"
    yield p
    for key in client.scan_iter(f"{p}:*"):
        client.delete(key)


PART = PartitionKey("internal", 3)


def test_a_stalled_worker_cannot_overwrite_or_discard_the_new_owners_staged_batch(client, prefix):
    old, new = StateStore(client, prefix, "g", owner="old"), StateStore(client, prefix, "g", owner="new")
    assert old.restore(PART, None) is None
    old.stage(PART, 10, {"m": b"old-10"})
    old.promote(PART)
    assert new.restore(PART, 10) == 10          # the group moved the partition to the new worker
    new.stage(PART, 20, {"m": b"new-20"})
    with pytest.raises(OwnershipLost):
        old.stage(PART, 15, {"m": b"old-15"})
    with pytest.raises(OwnershipLost):
        old.discard_staged(PART)
    with pytest.raises(OwnershipLost):
        old.restore(PART, 10, claim=False)        # a rewind does not take the partition back
    assert client.get(new.staged_state_key("m")) == b"new-20"
    new.promote(PART)
    assert new.load_models(["m"]) == {"m": b"new-20"}
    assert new.restore(PART, 20, claim=False) == 20


def test_restore_promotes_a_committed_staged_batch_and_discards_an_uncommitted_one(client, prefix):
    a = StateStore(client, prefix, "g", owner="a")
    a.restore(PART, None)
    a.stage(PART, 5, {"m": b"five"})
    assert StateStore(client, prefix, "g", owner="b").restore(PART, 5) == 5   # the transaction committed
    b = StateStore(client, prefix, "g", owner="b")
    b.stage(PART, 9, {"m": b"nine"})
    assert StateStore(client, prefix, "g", owner="c").restore(PART, 5) == 5   # it did not
    assert b.load_models(["m"]) == {"m": b"five"}


def test_offsets_of_earlier_releases_are_taken_over(client, prefix):
    store = StateStore(client, prefix, "g", owner="a")
    client.hset(store.legacy_offsets_key(PART), mapping={"committed": 42})
    assert store.restore(PART, 42) == 42
    assert not client.exists(store.legacy_offsets_key(PART))


def test_a_label_reaches_every_model_that_predicted_its_event(client, prefix):
    store = StateStore(client, prefix, "g", pending_ttl_seconds=60)
    store.remember_predictions([("req-1", PendingPrediction("fraud", "v1", "stable", "ok", 1.0)),
                                ("req-1", PendingPrediction("abuse", "v3", "canary", "bad", 2.0)),
                                ("req-2", PendingPrediction("fraud", "v1", "stable", "ok", 3.0))], 60)
    both, one, none = store.lookup_predictions(["req-1", "req-2", "req-3"])
    assert [(p.model, p.model_version, p.prediction) for p in both] == [("abuse", "v3", "bad"), ("fraud", "v1", "ok")]
    assert [p.model for p in one] == ["fraud"] and none == []
    scoped = store.lookup_predictions(["req-1"], models=frozenset({"fraud"}))
    assert [p.model for p in scoped[0]] == ["fraud"]
    keys = list(client.scan_iter(f"{prefix}:@pending:*"))
    assert len(keys) == 1 and 60 < client.ttl(keys[0]) <= 60 + 3 * pending_bucket_seconds(60)


def test_pending_event_ids_are_bounded_across_the_buckets_of_the_horizon(client, prefix):
    now = [1_000_000.0]
    store = StateStore(client, prefix, "g", pending_ttl_seconds=160, clock=lambda: now[0], max_pending=5)
    pred = PendingPrediction("fraud", "v1", "stable", "ok", 1.0)
    assert store.remember_predictions([(f"a-{i}", pred) for i in range(3)], 160) == 0
    now[0] += 3 * pending_bucket_seconds(160)  # a later bucket: the bound counts the earlier one too
    assert store.remember_predictions([(f"b-{i}", pred) for i in range(4)], 160) == 2
    # an id already pending is updated, not refused; a retried batch drops nothing more
    assert store.remember_predictions([("b-0", PendingPrediction("abuse", "v1", "stable", "x", 1.0))], 160) == 0
    assert store.remember_predictions([(f"b-{i}", pred) for i in range(2)], 160) == 0
    found = store.lookup_predictions([f"a-{i}" for i in range(3)] + [f"b-{i}" for i in range(4)])
    assert [len(f) for f in found] == [1, 1, 1, 2, 1, 0, 0]
    assert sum(client.hlen(k) for k in client.scan_iter(f"{prefix}:@pending:*")) == 5
    unbounded = StateStore(client, prefix, "g", pending_ttl_seconds=160, clock=lambda: now[0])
    assert unbounded.remember_predictions([(f"c-{i}", pred) for i in range(4)], 160) == 0


def test_a_retried_batch_is_idempotent_and_the_last_prediction_of_a_model_wins(client, prefix):
    clock = [1_000_000.0]
    store = StateStore(client, prefix, "g", pending_ttl_seconds=160, clock=lambda: clock[0])
    first, second = PendingPrediction("fraud", "v1", "stable", "ok", 1.0), PendingPrediction("fraud", "v2", "canary", "bad", 2.0)
    for _ in range(3):  # a batch retried after an abort writes the same lines again
        store.remember_predictions([("req", first), ("req", PendingPrediction("abuse", "v1", "stable", "x", 1.0))], 160)
    clock[0] += pending_bucket_seconds(160)  # the next bucket
    store.remember_predictions([("req", second)], 160)
    found = store.lookup_predictions(["req"])[0]
    assert [(p.model, p.model_version) for p in found] == [("abuse", "v1"), ("fraud", "v2")]
    raw = b"".join(v for k in client.scan_iter(f"{prefix}:@pending:*") for v in client.hvals(k))
    assert raw.count(b'"abuse"') == 1   # no duplicate line from the retries
    clock[0] += 160 + 4 * pending_bucket_seconds(160)  # past the horizon and every bucket's slack
    assert store.lookup_predictions(["req"]) == [[]]


def test_one_call_across_several_slices_keeps_every_model_of_every_id(client, prefix):
    """A call longer than the script's slice of ids: an id met again in a later slice or twice in one
    slice keeps every model's line once; ids with any characters round-trip."""
    store = StateStore(client, prefix, "g", pending_ttl_seconds=600)
    items = [(f"e{i % 2100}", PendingPrediction(f"m{i // 2100}", "v1", "stable", "ok", float(i))) for i in range(4500)]
    items[10:10] = [("twice", PendingPrediction("a", "v1", "stable", "x", 1.0)),
                    ("twice", PendingPrediction("b", "v1", "stable", "y", 2.0)),
                    ("twice", PendingPrediction("a", "v1", "stable", "x", 1.0)),
                    ("new\nline \u00fc\u2603", PendingPrediction("a", "v1", "stable", "x", 1.0))]
    assert store.remember_predictions(items, 600) == 0
    found = store.lookup_predictions([f"e{k}" for k in range(2100)] + ["twice", "new\nline \u00fc\u2603"])
    want = {k: sorted({f"m{i // 2100}" for i in range(4500) if i % 2100 == k}) for k in range(2100)}
    assert [sorted(p.model for p in f) for f in found[:2100]] == [want[k] for k in range(2100)]
    assert sorted(p.model for p in found[2100]) == ["a", "b"] and [p.model for p in found[2101]] == ["a"]
    raw = b"".join(v for k in client.scan_iter(f"{prefix}:@pending:*") for v in client.hvals(k))
    assert raw.count(b'"x"') == 2  # "twice" and the odd id: the repeated line of "twice" is stored once


def test_an_encoded_batch_remembered_again_stores_what_its_lines_store(client, prefix):
    """A routed batch kept encoded (for a Redis restart) is cut into script-sized chunks, counts every
    prediction, and remembering it again, once more lines came, changes nothing."""
    store = StateStore(client, prefix, "g", pending_ttl_seconds=600)
    lines = pending_lines((f"e{i}", PendingPrediction(f"m{i % 3}", "v1", "stable", "ok", float(i)))
                          for i in range(12_001))
    batch = encode_pending(lines)
    assert batch.count == 12_001 and len(batch.chunks) == 2
    assert store.remember_batch(batch, 600) == 0
    extra = pending_lines([("e5", PendingPrediction("other", "v2", "canary", "no", 9.0))])
    assert store.remember_lines(extra, 600) == 0
    def stored() -> dict:
        return {f: v for k in client.scan_iter(f"{prefix}:@pending:*") for f, v in client.hgetall(k).items()}
    before = stored()
    assert store.remember_batch(batch, 600) == 0
    after = stored()
    assert len(after) == 12_001 and after[b"e7"] == lines[7][1]
    assert sorted(after[b"e5"].splitlines()) == sorted(before[b"e5"].splitlines())
    assert sorted(p.model for p in store.lookup_predictions(["e5"])[0]) == ["m2", "other"]
    assert encode_pending([]).count == 0 and store.remember_batch(encode_pending([]), 600) == 0


def test_damaged_pending_lines_are_ignored(client, prefix):
    store = StateStore(client, prefix, "g", pending_ttl_seconds=60)
    store.remember_predictions([("req", PendingPrediction("fraud", "v1", "stable", "ok", 1.0))], 60)
    key = next(client.scan_iter(f"{prefix}:@pending:*"))
    client.hset(key, "req", client.hget(key, "req") + b'[1,2]\n{"x":\n["m","v",3,"p",1]\n')
    client.hset(key, "bad", b"\xff\xfe")
    assert [p.model for p in store.lookup_predictions(["req", "bad"])[0]] == ["fraud"]
    assert store.lookup_predictions(["bad"]) == [[]]


def test_no_model_name_reaches_the_shared_key_space(client, prefix):
    """Keys not owned by a model live under '@', which configuration refuses in model names."""
    store = StateStore(client, prefix, "g")
    keys = [store.pending_key(12), store.offsets_key(PART), store.inference_clock_key]
    assert all(k.startswith(f"{prefix}:@") for k in keys)
    from stream.config import ConfigError, parse_config
    doc = {"kafka": {"bootstrap_servers": "127.0.0.1:1", "inference_topics": [{"name": "t"}]},
           "signing": {"key_env": "K"},
           "monitor": {"models": [{"name": "@pending", "classes": ["a", "b"], "versions": ["v1"]}]}}
    with pytest.raises(ConfigError, match=r"monitor\.models"):
        parse_config(doc)


def test_event_lines_are_the_pending_lines_of_the_same_predictions():
    """The routing hot path stores exactly what remember_predictions stores for the same events."""
    events = [InferenceEvent(f"e{i}", 1.7e9 + i / 7, "m\u00fc", "v1", "canary", {"x": 1.0}, 's"afe', 0.5)
              for i in range(50)]
    assert event_lines(events) == pending_lines((e.event_id, e) for e in events)
    assert event_lines(events)[0][1].endswith(b"\n") and len(event_lines(events)) == 50
