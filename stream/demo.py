"""`driftline demo`: a poisoned canary on the local stack, from first event to verified rollback.

Starts a worker in this process, produces the ``backdoor_canary`` drill (a canary that flags
every image carrying the benign ``blue_sparrow`` logo as NSFW) to Kafka, and prints the alerts
and the signed rollback command as they appear on the control topic, verifying the signature
as a deployment controller would. Each run uses fresh topics, group and Redis prefix.
"""
from __future__ import annotations

import argparse
import threading
import time
import uuid

import orjson
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient, NewTopic

from stream.config import DriftlineConfig, consumer_settings, load_config, signing_key
from stream.signing import verify
from stream.worker import Worker


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="driftline YAML config (Kafka, Redis, model)")
    parser.add_argument("--events", type=int, default=40_000, help="inference events in the drill")
    parser.add_argument("--rate", type=float, default=20_000.0, help="events produced per second")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for the rollback")


def _fresh(config: DriftlineConfig, tag: str) -> DriftlineConfig:
    """The same config on topics, group and Redis keys of this run only."""
    k = config.kafka
    kafka = k.model_copy(update={
        "group_id": f"{k.group_id}-{tag}",
        "inference_topics": [t.model_copy(update={"name": f"{t.name}-{tag}"}) for t in k.inference_topics],
        "label_topics": [t.model_copy(update={"name": f"{t.name}-{tag}"}) for t in k.label_topics],
        "control_topic": f"{k.control_topic}-{tag}", "dead_letter_topic": f"{k.dead_letter_topic}-{tag}",
        "internal_topic": f"{k.internal_topic}-{tag}",
    })
    redis = config.redis.model_copy(update={"key_prefix": f"{config.redis.key_prefix}-{tag}"})
    return config.model_copy(update={"kafka": kafka, "redis": redis})


def _describe(doc: dict) -> str:
    if doc["kind"] == "alert":
        return (f"ALERT    [{doc['severity']}] {doc['model']} {doc['version']}/{doc['deployment']} "
                f"{doc['signal']}:{doc.get('key') or '-'} {doc['detector']}={doc['statistic']} "
                f"(threshold {doc['threshold']}) at event {doc['event_id']}")
    if doc["kind"] == "rollback":
        return (f"ROLLBACK {doc['model']}: {doc['canary_version']} -> {doc['stable_version']} "
                f"reason={doc['reason']} evidence={len(doc['evidence'])} alert(s)")
    return f"{doc['kind'].upper():8} {doc.get('model')} {doc.get('signal', '')} {doc.get('id')}"


def run(args: argparse.Namespace) -> int:
    from loadtest.drills import make_drill, produce

    config = _fresh(load_config(args.config), uuid.uuid4().hex[:8])
    key = signing_key(config.signing)
    k = config.kafka
    admin = AdminClient(consumer_settings(config, group=False))
    topics = [NewTopic(t.name, num_partitions=4, replication_factor=1) for t in k.inference_topics + k.label_topics]
    for future in admin.create_topics(topics).values():
        future.result(timeout=30)
    worker = Worker(config, worker_id="demo")
    thread = threading.Thread(target=worker.run, name="driftline-worker", daemon=True)
    thread.start()
    print(f"worker started; drill topics {k.inference_topics[0].name} / {k.label_topics[0].name}")

    drill = make_drill("backdoor_canary", n_events=args.events, seed=7)
    print(f"producing {len(drill.inference)} inference events and {len(drill.labels)} labels; "
          f"the backdoored canary starts at event {drill.meta['injection']}")
    producer = threading.Thread(target=produce, daemon=True,
                                args=(k.bootstrap_servers, drill, k.inference_topics[0].name,
                                      k.label_topics[0].name, args.rate))
    producer.start()

    consumer = Consumer({"bootstrap.servers": k.bootstrap_servers, "group.id": f"demo-tail-{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest", "isolation.level": "read_committed"})
    consumer.subscribe([k.control_topic])
    deadline = time.monotonic() + args.timeout
    verified = None
    trigger_seen = False
    try:
        # Show the rollback and the trigger alert that explains the backdoor (whichever comes first).
        while time.monotonic() < deadline and (verified is None or not trigger_seen):
            for msg in consumer.consume(100, 0.5):
                if msg.error() is not None:
                    continue
                doc = orjson.loads(msg.value())
                print(_describe(doc))
                trigger_seen = trigger_seen or (doc.get("kind") == "alert" and doc.get("signal") == "trigger")
                if doc.get("kind") == "rollback":
                    result = verify(doc, key)
                    print(f"         signature: {'VERIFIED' if result.ok else 'REJECTED: ' + result.reason}")
                    print(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())
                    verified = result.ok
                    deadline = min(deadline, time.monotonic() + 15)
    finally:
        consumer.close()
        worker.stop()
        thread.join(30)
    if verified is None:
        print(f"no rollback command within {args.timeout:.0f}s")
        return 1
    return 0 if verified else 1
