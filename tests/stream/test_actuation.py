"""control act: only verified, fresh rollbacks act, once each, over real HTTP, Redis and Kafka."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
import redis
import yaml

from stream.actuation import ActedStore, ActuationMetrics, Actuator, serve
from stream.config import parse_config
from stream.flagger import FlaggerAction, Stands
from stream.signing import Freshness, SigningKey, sign
from stream.webhook import WebhookAction
from tests.stream.receiver import Receiver
from tests.stream.worker_harness import committed_offsets, create_topics, end_offsets, produce, read_topic, wait_until

pytestmark = pytest.mark.integration

OLD = SigningKey("2026-10", b"the-previous-actuation-key-000")
NEW = SigningKey("2026-11", b"the-current-actuation-key-1111")
NEW_ENV = "DRIFTLINE_TEST_ACT_KEY"
OLD_ENV = "DRIFTLINE_TEST_ACT_OLD_KEY"


def command(model: str = "filter", key: SigningKey = NEW, issued_at: int | None = None, canary: str = "v2",
            **kw) -> dict:
    doc = {"schema": "driftline.control/v1", "kind": "rollback", "id": uuid.uuid4().hex,
           "idempotency_key": uuid.uuid5(uuid.NAMESPACE_OID, f"{model}/{canary}").hex, "model": model,
           "canary_version": canary, "stable_version": "v1", "reason": "canary_divergence", "evidence": ["c" * 32],
           "details": {"js": 0.2}, "event_id": "e1", "position": 7, "ts": 1_800_000_000.5}
    doc.update(kw)
    return sign(doc, key, issued_at=issued_at)


def raw(doc) -> bytes:
    return json.dumps(doc).encode()


def hostile(now: int) -> list[tuple[bytes | None, str, str]]:
    """(message, expected outcome, expected reason prefix): nothing here may act."""
    good = command()
    unsigned = {k: v for k, v in good.items() if k != "signature"}
    return [
        (raw(unsigned), "rejected", "missing signature"),
        (raw(dict(good, canary_version="v1")), "rejected", "bad signature"),
        (raw(dict(good, issued_at=good["issued_at"] + 1)), "rejected", "bad signature"),
        (raw(command(key=SigningKey("2026-12", NEW.secret))), "rejected", "unknown key id"),
        (raw(command(issued_at=now - 3600)), "rejected", "expired"),
        (raw(command(issued_at=now + 3600)), "rejected", "issued in the future"),
        (raw(dict(command(), signature="0" * 64)), "rejected", "bad signature"),
        (b"[1]", "invalid", "not a JSON object"), (b"\xff", "invalid", "not UTF-8"), (None, "invalid", "empty"),
        (raw({"schema": "driftline.control/v1", "kind": "alert", "model": "filter"}), "ignored", "kind"),
    ]


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def store(stack):
    """A Redis client and a fresh key prefix (the keys written expire within the hour)."""
    return redis.Redis.from_url(stack.redis_url), f"act-{uuid.uuid4().hex[:8]}"


def act_spec(url: str):
    """An actuation section: webhook ``ops`` to ``url``, Flagger canaries prod/filter and prod/spam."""
    return parse_config({
        "kafka": {"bootstrap_servers": "127.0.0.1:1", "inference_topics": [{"name": "p"}]},
        "signing": {"key_env": "X"},
        "monitor": {"models": [{"name": m, "classes": ["a", "b"], "versions": ["v1"]} for m in ("filter", "spam")]},
        "actuation": {"webhooks": [{"name": "ops", "url": url}],
                      "flagger": {"hold_seconds": 600, "canaries": [
                          {"model": "filter", "namespace": "prod", "canary": "filter"},
                          {"model": "spam", "namespace": "prod", "canary": "spam"}]}}}).actuation


def actuator(store, receiver, dead: list | None = None) -> tuple[Actuator, FlaggerAction]:
    client, prefix = store
    spec = act_spec(receiver.url)
    hook = WebhookAction(spec.webhooks[0], None, 3, 0.01, 0.02)
    flagger = FlaggerAction(spec.flagger, Stands(client, prefix))
    act = Actuator({OLD.key_id: OLD, NEW.key_id: NEW}, Freshness(300, 30), [hook, flagger],
                   ActedStore(client, prefix, 3600), ActuationMetrics(),
                   dead_letter=(lambda v, r, d: dead.append((v, r, d))) if dead is not None else None)
    return act, flagger


def test_unsigned_tampered_unknown_key_stale_or_invalid_commands_never_act(store, receiver):
    act, flagger = actuator(store, receiver)
    for value, status, reason in hostile(int(time.time())):
        out = act.handle(value)
        assert (out.status, out.reason[:len(reason)]) == (status, reason), (value, out)
    assert receiver.requests == []
    assert flagger.stands.get("prod", "filter") is None
    m = act.metrics
    assert m.registry.get_sample_value("driftline_actuation_commands_total",
                                       {"outcome": "rejected", "reason": "expired"}) == 1
    assert m.registry.get_sample_value("driftline_actuation_commands_total",
                                       {"outcome": "rejected", "reason": "bad_signature"}) == 3


def test_a_valid_command_acts_once_per_idempotency_key_with_either_rotation_key(store, receiver):
    act, flagger = actuator(store, receiver)
    first = raw(command(key=OLD))
    out = act.handle(first)
    assert out.status == "acted" and out.actions == {"ops": "acted", "flagger": "acted"}
    assert act.handle(first).status == "duplicate"
    again = raw(command(key=NEW))  # re-issued by the rotated key: same idempotency key, new id
    assert act.handle(again).actions == {"ops": "duplicate", "flagger": "duplicate"}
    assert [r.body for r in receiver.requests] == [first]
    other = raw(command(model="spam", key=NEW))  # another model: no webhook filter, so it acts too
    assert act.handle(other).status == "acted"
    assert [r.body for r in receiver.requests] == [first, other]
    assert flagger.stands.get("prod", "filter")["canary_version"] == "v2"


def test_a_failing_webhook_is_dead_lettered_and_tried_again_on_redelivery(store, receiver):
    dead: list = []
    receiver.statuses = [500, 500, 500, 200]
    act, _ = actuator(store, receiver, dead)
    value = raw(command())
    out = act.handle(value)
    assert out.status == "failed" and out.actions == {"ops": "failed", "flagger": "acted"}
    assert len(receiver.requests) == 3 and len(dead) == 1
    assert dead[0][0] == value and dead[0][1] == "actuation_failed" and dead[0][2].startswith("ops: HTTP 500")
    out = act.handle(value)  # redelivered: the webhook is tried again, Flagger already stands
    assert out.actions == {"ops": "acted", "flagger": "duplicate"}
    assert act.handle(value).status == "duplicate" and len(receiver.requests) == 4


def test_an_unreachable_state_store_stops_before_any_action(receiver):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]  # nothing listens here once the socket is closed
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    client = redis.Redis(host="127.0.0.1", port=closed, socket_timeout=1, socket_connect_timeout=1,
                         retry=Retry(NoBackoff(), 0))
    spec = act_spec(receiver.url)
    act = Actuator({NEW.key_id: NEW}, Freshness(), [WebhookAction(spec.webhooks[0], None, 1, 0.1, 0.1)],
                   ActedStore(client, "x", 600))
    with pytest.raises(redis.ConnectionError):
        act.handle(raw(command()))  # the caller retries later and commits nothing meanwhile
    assert receiver.requests == []


def _post(url: str, body: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else b""
    req = urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def test_flagger_endpoint_answers_200_only_for_the_rolled_back_canary(store, receiver):
    act, flagger = actuator(store, receiver)
    server = serve("127.0.0.1", 0, act.metrics, flagger)
    try:
        base = server.url
        payload = {"name": "filter", "namespace": "prod", "phase": "Progressing", "metadata": {}}
        assert _post(f"{base}/rollback/prod/filter", payload)[0] == 403
        doc = command()
        act.handle(raw(doc))
        status, body = _post(f"{base}/rollback/prod/filter", payload)
        assert status == 200 and body["rollback"] and body["id"] == doc["id"] and body["canary_version"] == "v2"
        assert _post(f"{base}/rollback/prod/filter")[0] == 200  # the path alone names the canary
        assert _post(f"{base}/rollback/check", payload)[0] == 200  # one URL, the payload names the canary
        assert _post(f"{base}/rollback/prod/spam", dict(payload, name="spam"))[0] == 403
        assert _post(f"{base}/rollback/check", dict(payload, name="spam"))[0] == 403
        assert _post(f"{base}/rollback/prod/unmapped")[0] == 404
        assert _post(f"{base}/rollback/prod/filter", dict(payload, name="spam"))[0] == 400
        assert _post(f"{base}/rollback/check", {"phase": "Waiting"})[0] == 400
        v2 = dict(payload, metadata={"canary_version": "v2"})
        assert _post(f"{base}/rollback/prod/filter", v2)[0] == 200
        assert _post(f"{base}/rollback/prod/filter", dict(payload, metadata={"canary_version": "v3"}))[0] == 403
        with urllib.request.urlopen(f"{base}/metrics", timeout=10) as resp:
            assert b"driftline_actuation_commands_total" in resp.read()
        with pytest.raises(urllib.error.HTTPError, match="503"):
            urllib.request.urlopen(f"{base}/readyz", timeout=10)  # not consuming: not ready
    finally:
        server.shutdown()


def test_a_stand_ends_with_its_hold(store, receiver):
    act, flagger = actuator(store, receiver)
    act.handle(raw(command(issued_at=int(time.time()) - 250)))
    client, prefix = store
    ttl = client.ttl(f"{prefix}:@rollback:prod:filter")
    assert 300 <= ttl <= 351  # hold 600 s from the issue time, 250 s of it gone


# -- end to end: a real control topic, the driftline CLI, restarts ---------------------------------
def _config(tmp_path: Path, stack, topic: str, group: str, prefix: str, url: str) -> Path:
    old_file = tmp_path / "old.key"
    old_file.write_bytes(OLD.secret.hex().encode() + b"\n")
    doc = {
        "kafka": {"bootstrap_servers": stack.kafka_bootstrap, "group_id": f"it-{group}",
                  "inference_topics": [{"name": f"{topic}-inference"}], "control_topic": topic,
                  "dead_letter_topic": f"{topic}-dead"},
        "redis": {"url": stack.redis_url, "key_prefix": prefix},
        "signing": {"key_env": NEW_ENV, "key_id": NEW.key_id,
                    "verification_keys": [{"key_id": OLD.key_id, "key_file": str(old_file), "key_encoding": "hex"}]},
        "metrics": {"port": 0},
        "monitor": {"models": [{"name": m, "classes": ["a", "b"], "versions": ["v1", "v2"]} for m in ("filter", "spam")]},
        "actuation": {"group_id": group, "port": 0, "max_attempts": 2, "backoff_seconds": 0.05,
                      "acted_ttl_seconds": 900,
                      "webhooks": [{"name": "ops", "url": url}],
                      "flagger": {"canaries": [{"model": "filter", "namespace": "prod", "canary": "filter"},
                                               {"model": "spam", "namespace": "prod", "canary": "spam"}]}},
    }
    path = tmp_path / f"{group}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _start(config: Path, log: Path) -> tuple[subprocess.Popen, str]:
    env = dict(os.environ, **{NEW_ENV: NEW.secret.decode()})
    proc = subprocess.Popen([sys.executable, "-m", "stream.cli", "control", "act", "--config", str(config)],
                            stdout=open(log, "ab"), stderr=subprocess.STDOUT, env=env)

    def url() -> str | None:
        if proc.poll() is not None:
            raise AssertionError(f"control act exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        m = re.search(r"serving (http://127\.0\.0\.1:\d+)", log.read_text())
        return m.group(1) if m else None

    return proc, wait_until(url, timeout=60, interval=0.2, what="control act to serve")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0


def _drained(stack, proc: subprocess.Popen, log: Path, group: str, topic: str) -> None:
    def done() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"control act exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        return committed_offsets(stack, group, topic, 1) >= end_offsets(stack, topic, 1)[0]

    wait_until(done, timeout=60, interval=0.3, what=f"control act ({group}) to commit the whole control topic")


def test_control_act_end_to_end_acts_exactly_once_across_restarts_and_redelivery(stack, tmp_path, receiver):
    tag = uuid.uuid4().hex[:8]
    topic, prefix = f"it-{tag}-control", f"it-{tag}"
    create_topics(stack, {topic: 1})
    now = int(time.time())
    valid = command(key=OLD)  # signed by the previous key: accepted during the rotation
    messages = [v for v, _, _ in hostile(now) if v is not None] + [raw(valid)]
    produce(stack, topic, [], raw=messages)
    first_log = tmp_path / "act-1.log"
    proc, url = _start(_config(tmp_path, stack, topic, f"{tag}-a", prefix, receiver.url), first_log)
    try:
        _drained(stack, proc, first_log, f"{tag}-a", topic)
        assert [r.body for r in receiver.requests] == [raw(valid)]
        assert receiver.requests[0].headers["idempotency-key"] == valid["idempotency_key"]
        assert _post(f"{url}/rollback/prod/filter", {"name": "filter", "namespace": "prod"})[0] == 200
        assert _post(f"{url}/rollback/prod/spam", {"name": "spam", "namespace": "prod"})[0] == 403
    finally:
        _stop(proc)
    log = first_log.read_text()
    assert log.count(": rejected (") == 7 and log.count(": invalid (") == 2, log[-3000:]

    # redelivered: a second copy on the topic, and a new group that re-reads everything from the start
    produce(stack, topic, [], raw=[raw(valid)])
    second_log = tmp_path / "act-2.log"
    proc, url = _start(_config(tmp_path, stack, topic, f"{tag}-b", prefix, receiver.url), second_log)
    try:
        _drained(stack, proc, second_log, f"{tag}-b", topic)
        assert len(receiver.requests) == 1, "a redelivered command acted twice"
        assert _post(f"{url}/rollback/check", {"name": "filter", "namespace": "prod"})[0] == 200
    finally:
        _stop(proc)
    assert second_log.read_text().count(": duplicate") == 2
    assert read_topic(stack, f"{topic}-dead", timeout=3, idle_seconds=1) == []


def test_control_act_refuses_a_config_without_actuation(tmp_path, capsys):
    from stream import cli

    cfg = {"kafka": {"bootstrap_servers": "127.0.0.1:1", "inference_topics": [{"name": "p"}]},
           "signing": {"key_env": NEW_ENV},
           "monitor": {"models": [{"name": "m", "classes": ["a", "b"], "versions": ["v1"]}]}}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert cli.main(["control", "act", "--config", str(path)]) == 2
    assert "actuation: section missing" in capsys.readouterr().err
