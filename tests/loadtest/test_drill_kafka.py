"""The drill through the live path: a worker on the local stack, scored like a replay."""
from __future__ import annotations

import pytest

from stream.drill import run_kafka_drill

pytestmark = pytest.mark.integration


def test_backdoored_canary_is_rolled_back_live(stack) -> None:
    r = run_kafka_drill("backdoor_canary", stack.kafka_bootstrap, stack.redis_url, seed=0, n_events=40_000,
                        timeout=240)
    assert r.detected and r.rollback_fired
    rollback = next(m for m in r.messages if m["kind"] == "rollback")
    assert rollback["canary_version"] == "v3" and rollback["stable_version"] == "v1"


def test_rogue_version_live(stack) -> None:
    r = run_kafka_drill("rogue_version", stack.kafka_bootstrap, stack.redis_url, seed=0, n_events=15_000,
                        injection=10_000, timeout=240)
    assert r.detected and r.detection["version"] == "v2-hotfix" and not r.rollback_fired
