"""A batch gathered across a revocation, or without a group membership, is dropped and read again."""
from __future__ import annotations

import logging
import sys

import pytest
import redis
from confluent_kafka import TopicPartition

from detectors.simulate import demo_model
from stream.config import parse_config
from stream.membership import MAGIC
from stream.worker import Worker


def _metadata(generation: int, member: str) -> bytes:
    return MAGIC + generation.to_bytes(4, sys.byteorder, signed=True) + b"g\x00" + member.encode() + b"\x00\x01"


class _Consumer:
    """What the rebalance callbacks and ``_refetch`` ask of the consumer."""

    def __init__(self, assigned: list[TopicPartition]) -> None:
        self.assigned = assigned

    def assignment(self) -> list[TopicPartition]:
        return list(self.assigned)

    def resume(self, partitions: list[TopicPartition]) -> None:
        pass

    def unassign(self) -> None:
        self.assigned = []


def _worker(monkeypatch) -> Worker:
    monkeypatch.setenv("K", "k" * 32)
    cfg = parse_config({"kafka": {"bootstrap_servers": "127.0.0.1:1", "inference_topics": [{"name": "t"}]},
                        "signing": {"key_env": "K"}, "metrics": {"enabled": False},
                        "monitor": {"models": [demo_model(name="m", n_numeric=2, n_categorical=0, triggers=False,
                                                          reference_size=100).model_dump(mode="json")]}})
    worker = Worker(cfg)
    worker._consumer = _Consumer([TopicPartition("t", 0), TopicPartition(worker._internal, 0)])
    return worker


def _refetched(worker: Worker, reason: str) -> float:
    return worker.metrics.registry.get_sample_value("driftline_refetched_batches_total", {"reason": reason}) or 0.0


def test_a_batch_is_processed_only_under_the_membership_it_was_fetched_in(monkeypatch):
    worker = _worker(monkeypatch)
    member = _metadata(4, "rdkafka-1")
    before = worker._revocations
    assert worker._stale(before, member) is None
    assert worker._stale(before, _metadata(-1, "")) == "no_member"
    assert worker._stale(before, _metadata(4, "")) == "no_member"
    worker._on_revoke(worker._consumer, worker._consumer.assignment())  # inside the batch's gather
    assert worker._stale(before, member) == "revoked"
    assert worker._stale(worker._revocations, member) is None, "a batch gathered after it is fine"


def test_metadata_in_an_unknown_format_is_trusted_and_said_once(monkeypatch, caplog):
    worker = _worker(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="driftline.worker"):
        assert worker._stale(worker._revocations, b"CGMDv9:whatever") is None
        assert worker._stale(worker._revocations, b"CGMDv9:whatever") is None
    assert sum("format this version does not read" in r.getMessage() for r in caplog.records) == 1


def test_a_stale_batch_rewinds_what_is_still_assigned(monkeypatch):
    worker = _worker(monkeypatch)
    settled = []
    monkeypatch.setattr(worker, "_settle", lambda consumer, partitions, claim: settled.append((partitions, claim)))
    worker._refetch(120, "no_member")
    assert settled == [(worker._consumer.assignment(), False)], \
        "the dropped messages are past the consumer's position: every assigned partition restarts from its commit"
    assert not worker._needs_rewind
    assert _refetched(worker, "no_member") == 1.0


def test_a_rewind_that_fails_is_left_to_the_batch_loop(monkeypatch):
    worker = _worker(monkeypatch)

    def unreachable(consumer, partitions, claim):
        raise redis.ConnectionError("Redis went away")

    monkeypatch.setattr(worker, "_settle", unreachable)
    with pytest.raises(redis.ConnectionError):
        worker._refetch(10, "revoked")
    assert worker._needs_rewind, "the batch loop retries the rewind (aborting first) after its backoff"


def test_a_stale_batch_after_losing_everything_waits_for_the_next_assignment(monkeypatch):
    worker = _worker(monkeypatch)
    before = worker._revocations
    worker._on_revoke(worker._consumer, worker._consumer.assignment())
    reason = worker._stale(before, _metadata(4, "rdkafka-1"))
    monkeypatch.setattr(worker, "_settle", lambda *args, **kwargs: pytest.fail("nothing is assigned to rewind"))
    worker._refetch(50, reason)
    assert not worker._needs_rewind, "the next assignment starts from the committed offsets"
    assert _refetched(worker, "revoked") == 1.0
