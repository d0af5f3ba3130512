"""The worker's catch-up and client calls under a broker that does not answer: retried, never fatal."""
from __future__ import annotations

import time

import pytest
from confluent_kafka import KafkaException

from stream.config import parse_config
from stream.state import PartitionKey
from stream.worker import Worker


def _worker(monkeypatch, stall: float) -> Worker:
    monkeypatch.setenv("K", "k" * 32)
    cfg = parse_config({"kafka": {"bootstrap_servers": "127.0.0.1:1", "inference_topics": [{"name": "t"}],
                                  "stall_timeout_seconds": stall},
                        "signing": {"key_env": "K"},
                        "metrics": {"enabled": False},
                        "monitor": {"models": [{"name": "m", "classes": ["a", "b"], "versions": ["v1"]}]}})
    return Worker(cfg)


def test_a_catch_up_without_broker_is_a_transient_error_not_a_crash(monkeypatch):
    """A catch-up while the broker restarts used to raise RuntimeError after the stall timeout and
    end the worker (two exits in the long chaos run); it is now a retriable Kafka error, raised
    once no record came for a call timeout, which the batch loop retries with backoff."""
    worker = _worker(monkeypatch, stall=6)
    started = time.monotonic()
    with pytest.raises(KafkaException) as info:
        worker._catch_up(PartitionKey("driftline-internal", 0), 0, 10)
    assert info.value.args[0].retriable() and not info.value.args[0].fatal()
    assert time.monotonic() - started < 6, "the catch-up must give up before the watchdog's stall timeout"


@pytest.mark.parametrize("stall", [5, 20, 120, 600])
def test_blocking_client_calls_return_well_before_the_watchdog_fires(monkeypatch, stall):
    """A transactional call waiting for a restarting broker returns (and is repeated) before the
    watchdog takes the batch for a hung one (two watchdog exits in the long chaos run: 30 s calls
    under a 20 s stall timeout)."""
    worker = _worker(monkeypatch, stall=stall)
    assert worker._call_timeout <= min(30.0, stall / 3)
