"""Smoke test through the real local stack: Kafka topics and groups, Redis, a Prometheus scrape."""
from __future__ import annotations

import json
import os
import time
import urllib.parse
import urllib.request
import uuid

import pytest
import redis
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from prometheus_client import CollectorRegistry, Gauge, start_http_server

pytestmark = pytest.mark.integration

# the last of the stack's Prometheus scrape targets (scripts/stack, DRIFTLINE_METRICS_PORTS)
SCRAPED_PORT = int(os.environ.get("DRIFTLINE_METRICS_PORTS", "9464 9465 19464").split()[-1])


def test_inference_events_round_trip_through_kafka_consumer_group(stack):
    topic = f"smoke-inference-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": stack.kafka_bootstrap})
    for future in admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)]).values():
        future.result(timeout=30)

    producer = Producer({"bootstrap.servers": stack.kafka_bootstrap, "enable.idempotence": True})
    sent = {}
    for i in range(300):
        event = {"event_id": f"e{i}", "ts": 1_700_000_000 + i, "model": "content-filter",
                 "model_version": "v1", "features": {"brightness": i / 300}, "prediction": "safe"}
        sent[event["event_id"]] = event
        producer.produce(topic, key=event["event_id"].encode(), value=json.dumps(event).encode())
    assert producer.flush(30) == 0

    group = f"smoke-{uuid.uuid4().hex[:8]}"
    consumer = Consumer({"bootstrap.servers": stack.kafka_bootstrap, "group.id": group,
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    received = {}
    deadline = time.monotonic() + 60
    while len(received) < len(sent) and time.monotonic() < deadline:
        for msg in consumer.consume(500, timeout=1.0):
            assert msg.error() is None, msg.error()
            event = json.loads(msg.value())
            received[event["event_id"]] = event
    consumer.commit(asynchronous=False)
    committed = consumer.committed([TopicPartition(topic, p) for p in range(3)], timeout=10)
    consumer.close()

    assert received == sent
    assert sum(tp.offset for tp in committed) == len(sent)


def test_value_round_trips_through_redis(stack):
    client = redis.Redis.from_url(stack.redis_url)
    key = f"driftline:smoke:{uuid.uuid4().hex}"
    payload = b"\x00driftline\xffstate"
    client.set(key, payload, ex=60)
    assert client.get(key) == payload
    assert client.delete(key) == 1


def test_prometheus_scrapes_a_target(stack):
    registry = CollectorRegistry()
    marker = Gauge("driftline_smoke_marker", "Value the smoke test expects Prometheus to scrape", registry=registry)
    expected = float(uuid.uuid4().int % 1_000_000)
    marker.set(expected)
    server, thread = start_http_server(SCRAPED_PORT, addr="127.0.0.1", registry=registry)
    try:
        query = urllib.parse.urlencode({"query": "driftline_smoke_marker"})
        deadline = time.monotonic() + 30
        value = None
        while time.monotonic() < deadline:
            with urllib.request.urlopen(f"{stack.prometheus_url}/api/v1/query?{query}", timeout=5) as resp:
                result = json.load(resp)["data"]["result"]
            if result and float(result[0]["value"][1]) == expected:
                value = float(result[0]["value"][1])
                break
            time.sleep(0.5)
        assert value == expected, "Prometheus never scraped the smoke target"
    finally:
        server.shutdown()
        thread.join(timeout=5)
