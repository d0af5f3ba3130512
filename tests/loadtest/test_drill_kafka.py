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
    routed = r.replay
    assert routed["events"] == routed["produced_inference"], "every inference event must be committed once"
    # the drill adds one label per 500 for events that never existed; every other label must join
    assert routed["labels"] + routed["dead_letters"] == routed["produced_labels"]
    assert routed["dead_letters"] <= routed["produced_labels"] // 500 + 1, "labels lost in the live join"


def test_rogue_version_live(stack) -> None:
    r = run_kafka_drill("rogue_version", stack.kafka_bootstrap, stack.redis_url, seed=0, n_events=15_000,
                        injection=10_000, timeout=240)
    assert r.detected and r.detection["version"] == "v2-hotfix" and not r.rollback_fired


def test_produce_only_plays_a_scenario_into_a_configured_deployment(stack, tmp_path) -> None:
    """What the docker-compose ``drill`` service does: traffic into the topics a running worker reads."""
    import uuid

    import yaml
    from confluent_kafka import Consumer, TopicPartition

    from loadtest.drills import drill_config
    from stream.drill import main

    prefix = f"produce-{uuid.uuid4().hex[:8]}"
    cfg = tmp_path / "driftline.yaml"
    cfg.write_text(yaml.safe_dump(drill_config(stack.kafka_bootstrap, stack.redis_url, prefix=prefix)))
    code = main(["rogue_version", "--produce-only", "--config", str(cfg), "--kafka", stack.kafka_bootstrap,
                 "--events", "3000", "--injection", "2000", "--rate", "50000"])
    assert code == 0
    c = Consumer({"bootstrap.servers": stack.kafka_bootstrap, "group.id": f"{prefix}-count"})
    try:
        counts = {}
        for topic in (f"{prefix}-inference", f"{prefix}-labels"):
            meta = c.list_topics(topic, timeout=10).topics[topic]
            counts[topic] = sum(c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                                for p in meta.partitions)
    finally:
        c.close()
    assert counts[f"{prefix}-inference"] == 3000
    assert counts[f"{prefix}-labels"] > 0
    assert main(["rogue_version", "--produce-only", "--config", str(cfg), "--kafka", "10.1.2.3:9092",
                 "--events", "100"]) == 2, "drills must refuse a non-loopback broker"


def test_registry_swap_live(stack) -> None:
    r = run_kafka_drill("registry_swap", stack.kafka_bootstrap, stack.redis_url, seed=0, n_events=10_000,
                        injection=7_000, timeout=240)
    assert r.detected and r.passed, r.to_dict()
    assert r.detection["detector"] == "digest_mismatch" and r.detection["event_id"] == r.meta["swap_event_id"]
    assert r.rollback_fired and not [m for m in r.messages if m.get("version") == r.meta["release_version"]]
    assert r.replay["registry"] == 3 and r.replay["events"] == r.replay["produced_inference"]
