"""The live manifest on the real Kafka and Redis: announced, archived, forged, tampered and replayed releases."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import yaml
from confluent_kafka import Producer

from detectors.engine import ModelMonitor
from stream.config import load_config, redis_client
from stream.registry import generate_key, load_private_key, sign_event, write_keypair
from stream.state import StateStore
from tests.stream.worker_harness import (create_topics, drain, inference_events, make_scenario, read_topic,
                                         start_worker, stop_worker, wait_until)

pytestmark = pytest.mark.integration

MODEL = "content-filter"
HEADER = "x-artifact-digest"


def digest(tag: str) -> str:
    return "sha256:" + (tag.encode().hex() * 64)[:64]


def _setup(tmp_path, stack):
    scenario = make_scenario(tmp_path, stack)
    doc = yaml.safe_load(scenario.config_path.read_text())
    doc["kafka"]["registry_topic"] = f"it-{scenario.tag}-registry"
    doc["kafka"]["inference_topics"][0]["field_mapping"] = {"artifact_digest": f"header:{HEADER}"}
    write_keypair(generate_key(), tmp_path / "deploy.key", tmp_path / "deploy.pub")
    doc["registry"] = {"public_keys": {"deploy": "deploy.pub"}}  # relative to the config file
    scenario.config_path.write_text(yaml.safe_dump(doc))
    create_topics(stack, {doc["kafka"]["registry_topic"]: 1})
    return scenario, load_config(scenario.config_path)


def _manifest(config) -> dict:
    """The manifest as committed in Redis (what `driftline registry show` prints)."""
    store = StateStore(redis_client(config.redis), config.redis.key_prefix, config.kafka.group_id)
    blob = store.load_model(MODEL)
    if blob is None:
        return {}
    mon = config.monitor
    spec = mon.models[0]
    monitor = ModelMonitor.from_bytes(spec, mon.calibration, mon.alerts, blob, mon.max_tracked_versions, registry=True)
    return {v: (e["stage"], e["digest"], e["sequence"]) for v, e in monitor.manifest.describe()["versions"].items()}


def _produce(stack, topic: str, docs: list, headers: list | None = None) -> None:
    p = Producer({"bootstrap.servers": stack.kafka_bootstrap, "enable.idempotence": True, "linger.ms": 5})
    for i, d in enumerate(docs):
        value = d if isinstance(d, bytes) else json.dumps(d).encode()
        p.produce(topic, value=value, key=MODEL.encode(), headers=headers[i] if headers else None)
    assert p.flush(60) == 0


def _traffic(stack, topic: str, version: str, deployment: str, n: int, dig: str, *, seed: int, start: int) -> list:
    events = inference_events(MODEL, n, seed=seed, start=start, version=version, deployment=deployment)
    _produce(stack, topic, events, [[(HEADER, dig.encode())]] * n)
    return events


@pytest.mark.parametrize("runtime", ["confluent", "faust"])
def test_registry_events_drive_the_live_manifest(stack, tmp_path, runtime) -> None:
    scenario, config = _setup(tmp_path, stack)
    key = tmp_path / "deploy.key"
    private = load_private_key(key)
    now = int(time.time())
    registry = config.kafka.registry_topic
    worker = start_worker(scenario, runtime=runtime)
    try:
        # the deploy step's one-liner announces v1; v2 goes straight to the topic
        cmd = [sys.executable, "-m", "stream.cli", "registry", "publish", "--config", str(scenario.config_path),
               "--key-file", str(key), "--model", MODEL, "--version", "v1", "--digest", digest("v1"),
               "--stage", "production", "--sequence", "1"]
        published = subprocess.run(cmd, capture_output=True, text=True)
        assert published.returncode == 0, published.stderr
        v2 = sign_event(private, "deploy", MODEL, "v2", digest("v2"), "canary", issued_at=now, sequence=1)
        _produce(stack, registry, [v2])
        want = {"v1": ("production", digest("v1"), 1), "v2": ("canary", digest("v2"), 1)}
        wait_until(lambda: _manifest(config) == want, timeout=120, what="v1 and v2 in the manifest")

        # forged, tampered, unknown-key, replayed, unsigned and garbage events never change it
        forger = generate_key()
        attacks = [sign_event(forger, "deploy", MODEL, "v9", digest("v9"), "production", issued_at=now, sequence=7),
                   dict(v2, digest=digest("evil")),
                   sign_event(forger, "rogue-key", MODEL, "v9", digest("v9"), "production", issued_at=now, sequence=8),
                   v2,
                   {k: v for k, v in sign_event(private, "deploy", MODEL, "v2", digest("v2"), "archived",
                                                 issued_at=now, sequence=9).items() if k != "signature"},
                   b"\xff not json"]
        _produce(stack, registry, attacks)
        dead = read_topic(stack, scenario.dead_letter_topic, expect=len(attacks), timeout=120)
        assert sorted(d["reason"] for d in dead) == sorted(
            ["registry_bad_signature", "registry_bad_signature", "registry_unknown_key", "registry_replayed",
             "registry_unsigned", "registry_malformed"])
        assert _manifest(config) == want

        # traffic with the registered digests (in a header) raises nothing; a new version is accepted live
        sent = len(_traffic(stack, scenario.inference_topic, "v1", "stable", 600, digest("v1"), seed=1, start=0))
        v3 = sign_event(private, "deploy", MODEL, "v3", digest("v3"), "canary", issued_at=now, sequence=1)
        _produce(stack, registry, [v3])
        wait_until(lambda: "v3" in _manifest(config), timeout=120, what="v3 announced")
        sent += len(_traffic(stack, scenario.inference_topic, "v3", "canary", 150, digest("v3"), seed=2, start=600))
        drain(stack, scenario, sent)

        # archived: v3 raises version_integrity again; a swapped artifact behind v1 is paged
        _produce(stack, registry, [sign_event(private, "deploy", MODEL, "v3", digest("v3"), "archived",
                                              issued_at=now, sequence=2)])
        wait_until(lambda: _manifest(config).get("v3", ("",))[0] == "archived", timeout=120, what="v3 archived")
        late = _traffic(stack, scenario.inference_topic, "v3", "canary", 5, digest("v3"), seed=3, start=750)
        swapped = _traffic(stack, scenario.inference_topic, "v1", "stable", 5, digest("evil"), seed=4, start=755)
        sent += 10
        drain(stack, scenario, sent)
        alerts = read_topic(stack, scenario.control_topic, idle_seconds=3, timeout=60)
    finally:
        stop_worker(worker)
    got = sorted((a["signal"], a["detector"], a["version"], a["event_id"]) for a in alerts if a.get("kind") == "alert")
    assert got == [("version_integrity", "digest_mismatch", "v1", swapped[0]["event_id"]),
                   ("version_integrity", "unlisted_version", "v3", late[0]["event_id"])]
    mismatch = next(a for a in alerts if a.get("detector") == "digest_mismatch")
    assert mismatch["severity"] == "page" and mismatch["reference"]["expected_digest"] == digest("v1") \
        and mismatch["current"]["observed_digest"] == digest("evil")
    show = subprocess.run([sys.executable, "-m", "stream.cli", "registry", "show", "--config",
                           str(scenario.config_path)], capture_output=True, text=True)
    assert show.returncode == 0, show.stderr
    shown = json.loads(show.stdout)[MODEL]
    assert shown["allowed"] == ["v1", "v2"] and shown["versions"]["v3"]["stage"] == "archived"
