"""The worker against the real local Kafka, Redis and Prometheus (started by scripts/stack)."""
from __future__ import annotations

import json
import re

import pytest
import redis

from tests.stream.worker_harness import (
    committed_offsets, control_verify, inference_events, make_scenario, model_spec, produce, read_topic,
    start_worker, stop_worker, wait_until,
)

pytestmark = pytest.mark.integration


def _alerts(messages: list[dict], kind: str = "alert") -> list[dict]:
    return [m for m in messages if m.get("kind") == kind]


def _drain(stack, scenario, total_raw: int, timeout: float = 180.0) -> None:
    """Wait until the worker has consumed every raw record and emptied the internal topic."""
    group = f"it-{scenario.tag}"

    def done() -> bool:
        raw = committed_offsets(stack, group, scenario.inference_topic, 4)
        if raw < total_raw:
            return False
        internal_end = _end_offsets(stack, scenario.internal_topic)
        return committed_offsets(stack, group, scenario.internal_topic, 4) >= internal_end

    wait_until(done, timeout=timeout, what="worker to drain its input")


def _run_to_the_end(stack, scenario, events: list[dict], control: bool = True, produced: bool = False) -> list[dict]:
    """Produce ``events`` (unless ``produced``), run one worker until it has drained them; the
    control messages (read when ``control``)."""
    if not produced:
        produce(stack, scenario.inference_topic, events)
    worker = start_worker(scenario)
    try:
        _drain(stack, scenario, len(events))
    finally:
        stop_worker(worker)
    return read_topic(stack, scenario.control_topic, idle_seconds=3, timeout=30) if control else []


def _end_offsets(stack, topic: str) -> int:
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": stack.kafka_bootstrap, "group.id": "end-offsets",
                  "isolation.level": "read_committed"})
    total = 0
    for p in range(4):
        _, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
        total += high
    c.close()
    return total


def test_injected_shift_is_alerted_on_the_control_topic(stack, tmp_path):
    scenario = make_scenario(tmp_path, stack)
    events = inference_events("content-filter", 6000, seed=1, shift_at=3000)
    produce(stack, scenario.inference_topic, events)
    worker = start_worker(scenario)
    try:
        messages = wait_until(
            lambda: [m for m in read_topic(stack, scenario.control_topic, idle_seconds=2, timeout=10)
                     if m.get("kind") == "alert" and m.get("signal") == "numeric_drift"],
            timeout=180, what="a numeric_drift alert")
    finally:
        stop_worker(worker)
    alert = messages[0]
    assert alert["model"] == "content-filter" and alert["version"] == "v1"
    assert alert["key"] == "brightness"
    tipping = int(alert["event_id"].rsplit("-", 1)[1])
    assert tipping >= 3000, f"alert raised before the shift, at event {tipping}"


def test_poisoned_canary_gets_a_signed_rollback_that_verifies(stack, tmp_path):
    scenario = make_scenario(tmp_path, stack)
    stable = inference_events("content-filter", 4000, seed=2)
    canary = inference_events("content-filter", 4000, seed=3, version="v2", deployment="canary", backdoor=True)
    mixed = [e for pair in zip(stable, canary) for e in pair]
    produce(stack, scenario.inference_topic, mixed)
    worker = start_worker(scenario)
    try:
        rollbacks = wait_until(
            lambda: _alerts(read_topic(stack, scenario.control_topic, idle_seconds=2, timeout=10), "rollback"),
            timeout=180, what="a rollback command")
    finally:
        stop_worker(worker)
    command = rollbacks[0]
    assert command["model"] == "content-filter"
    assert command["canary_version"] == "v2" and command["stable_version"] == "v1"
    assert command["evidence"], "rollback must name the alerts that justify it"

    ok = control_verify(command, tmp_path / "rollback.json")
    assert ok.returncode == 0, ok.stdout + ok.stderr

    rejected = control_verify(dict(command, canary_version="v1"), tmp_path / "tampered.json")
    assert rejected.returncode != 0
    assert "signature" in (rejected.stdout + rejected.stderr).lower()


def test_malformed_messages_are_dead_lettered_with_reason_and_counted(stack, tmp_path):
    scenario = make_scenario(tmp_path, stack)
    good = inference_events("content-filter", 300, seed=4)
    raw = [b"{not json", b"[1, 2, 3]", json.dumps({"event_id": "x", "model": "content-filter"}).encode(),
           json.dumps(dict(good[0], event_id="unknown-1", model="no-such-model")).encode()]
    produce(stack, scenario.inference_topic, good, raw=raw)
    worker = start_worker(scenario)
    try:
        dead = wait_until(lambda: read_topic(stack, scenario.dead_letter_topic, expect=4, timeout=10),
                          timeout=120, what="dead letters")
        _drain(stack, scenario, len(good) + 4)
    finally:
        stop_worker(worker)
    reasons = sorted(d["reason"] for d in dead)
    assert "malformed_json" in reasons
    assert "unknown_model" in reasons
    assert any(r.startswith("missing_field") or r.startswith("wrong_type") for r in reasons)
    assert len(dead) == 4
    for d in dead:
        assert d["topic"] == scenario.inference_topic and d["detail"]


def _state_blob(stack, scenario, model: str) -> bytes | None:
    return redis.Redis.from_url(stack.redis_url).get(f"{scenario.prefix}:{model}:state")


def test_sigkill_mid_stream_resumes_to_identical_state_without_duplicate_ids(stack, tmp_path):
    models = ["content-filter", "spam-filter"]
    events = []
    for i, m in enumerate(models):
        events += inference_events(m, 12000, seed=10 + i, shift_at=6000)

    (tmp_path / "a").mkdir()
    reference = make_scenario(tmp_path / "a", stack, models=[model_spec(m) for m in models], batch_size=500)
    expected_control = _run_to_the_end(stack, reference, events)
    expected_state = {m: _state_blob(stack, reference, m) for m in models}
    assert all(expected_state.values())
    assert _alerts(expected_control), "the reference run must raise alerts for this test to mean anything"

    (tmp_path / "b").mkdir()
    crashed = make_scenario(tmp_path / "b", stack, models=[model_spec(m) for m in models], batch_size=500)
    produce(stack, crashed.inference_topic, events)
    group = f"it-{crashed.tag}"
    for kill_after in (1500, 9000, 17000):
        worker = start_worker(crashed)
        try:
            wait_until(lambda: committed_offsets(stack, group, crashed.inference_topic, 4) >= kill_after,
                       timeout=180, what=f"progress past {kill_after}")
        finally:
            stop_worker(worker, kill=True)
    worker = start_worker(crashed)
    try:
        _drain(stack, crashed, len(events))
    finally:
        stop_worker(worker)

    assert {m: _state_blob(stack, crashed, m) for m in models} == expected_state
    control = read_topic(stack, crashed.control_topic, idle_seconds=3, timeout=30)
    ids = [m["id"] for m in control]
    assert len(ids) == len(set(ids)), "a control message was published twice"
    assert sorted(ids) == sorted(m["id"] for m in expected_control)


def test_two_workers_split_partitions_and_match_one_worker(stack, tmp_path):
    models = [f"model-{i}" for i in range(6)]
    events = []
    for i, m in enumerate(models):
        events += inference_events(m, 4000, seed=20 + i, shift_at=2000 if i % 2 else None)

    (tmp_path / "one").mkdir()
    single = make_scenario(tmp_path / "one", stack, models=[model_spec(m) for m in models])
    one = _run_to_the_end(stack, single, events)

    (tmp_path / "two").mkdir()
    pair = make_scenario(tmp_path / "two", stack, models=[model_spec(m) for m in models])
    workers = [start_worker(pair, "a"), start_worker(pair, "b")]
    try:
        # both own partitions before the traffic: one worker alone may drain it before the other joins
        wait_until(lambda: all(re.search(r"owns internal partitions \[\d",
                                         (tmp_path / "two" / f"worker-{w}.log").read_text()) for w in ("a", "b")),
                   timeout=120, what="both workers to own internal partitions")
        produce(stack, pair.inference_topic, events)
        _drain(stack, pair, len(events))
    finally:
        for w in workers:
            stop_worker(w)
    two = read_topic(stack, pair.control_topic, idle_seconds=3, timeout=30)

    logs = [(tmp_path / "two" / f"worker-{w}.log").read_text() for w in ("a", "b")]
    assert all(re.search(r"owns internal partitions \[\d", log) for log in logs), \
        "both workers must have owned internal partitions"
    assert _alerts(one), "the single worker must raise alerts for this test to mean anything"
    assert sorted(m["id"] for m in two) == sorted(m["id"] for m in one)
    for m in models:
        assert _state_blob(stack, pair, m) == _state_blob(stack, single, m)


def _labels_of(stack, scenario, model: str) -> int:
    from detectors.state import decode_state
    return decode_state(_state_blob(stack, scenario, model))["counters"][1]


@pytest.mark.parametrize("runtime", ["confluent", "faust"])
def test_labels_that_overtake_their_predictions_still_join(stack, tmp_path, runtime):
    """Labels fetched before the backlog holding their predictions is routed wait for it, boundedly
    (their partition paused, then resumed where the waiting label is); labels for events that never
    existed are dead-lettered as unmatched."""
    scenario = make_scenario(tmp_path, stack)
    events = inference_events("content-filter", 20000, seed=5)
    produce(stack, scenario.inference_topic, events)
    late = events[-300:]  # predictions at the very end of the backlog
    labels = [{"event_id": e["event_id"], "ts": e["ts"] + 60, "label": e["prediction"], "source": "vendor-a"}
              for e in late]
    ghosts = [{"event_id": f"ghost-{i}", "ts": 1_750_000_000.0, "label": "safe", "source": "vendor-a"}
              for i in range(20)]
    produce(stack, scenario.label_topic, labels + ghosts, key_field="event_id")
    worker = start_worker(scenario, runtime=runtime)
    try:
        dead = wait_until(lambda: read_topic(stack, scenario.dead_letter_topic, expect=len(ghosts), timeout=5),
                          timeout=180, what="the ghost labels to be dead-lettered")
        wait_until(lambda: _state_blob(stack, scenario, "content-filter") is not None
                   and _labels_of(stack, scenario, "content-filter") >= len(labels), timeout=180,
                   what="every label to be joined")
    finally:
        stop_worker(worker)
    assert _labels_of(stack, scenario, "content-filter") == len(labels)
    assert sorted(d["reason"] for d in dead) == ["label_unmatched"] * len(ghosts)
    assert all(b'"ghost-' in json.dumps(d).encode() for d in dead)


def _events_of(stack, scenario, model: str) -> int:
    from detectors.state import decode_state
    return decode_state(_state_blob(stack, scenario, model))["counters"][0]


def test_poison_pills_are_dead_lettered_and_the_worker_keeps_going(stack, tmp_path):
    """Tombstones and payloads the json fallback reads but nothing can re-encode used to kill the worker,
    and every restart died on the same uncommitted message."""
    scenario = make_scenario(tmp_path, stack)
    good = inference_events("content-filter", 300, seed=8)
    nan = float("nan")
    feats = dict(good[0]["features"], contrast=nan)
    poison = {
        "null_value": None,
        "invalid_unicode": json.dumps(dict(good[0], event_id="p1", prediction="\ud800", features=feats)).encode(),
        "integer_out_of_range": json.dumps(dict(good[0], event_id="p2", features=dict(feats, blur=2 ** 70))).encode(),
        "ts_in_future": json.dumps(dict(good[0], event_id="p3", ts=1e12)).encode(),
    }
    unknown = json.dumps(dict(good[0], event_id="p4", model="\udfffevil", features=feats)).encode()
    produce(stack, scenario.inference_topic, good[:150], raw=list(poison.values()) + [unknown])
    produce(stack, scenario.inference_topic, good[150:])
    worker = start_worker(scenario)
    try:
        dead = wait_until(lambda: read_topic(stack, scenario.dead_letter_topic, expect=5, timeout=10),
                          timeout=120, what="dead letters")
        _drain(stack, scenario, len(good) + 5)
        assert worker.poll() is None
    finally:
        stop_worker(worker)
    assert sorted(d["reason"] for d in dead) == sorted(list(poison) + ["invalid_unicode"])
    assert _events_of(stack, scenario, "content-filter") == len(good)


def test_a_label_reaches_every_model_that_shares_its_event_id(stack, tmp_path):
    models = ["model-a", "model-b"]
    scenario = make_scenario(tmp_path, stack, models=[model_spec(m) for m in models])
    events = []
    for i, m in enumerate(models):
        evs = inference_events(m, 400, seed=20 + i)
        for j, e in enumerate(evs):
            e["event_id"] = f"req-{j}"  # both models log the same request ids
        events += evs
    produce(stack, scenario.inference_topic, events)
    labels = [{"event_id": f"req-{j}", "ts": events[j]["ts"] + 5, "label": "safe", "source": "vendor-a"}
              for j in range(200)]
    produce(stack, scenario.label_topic, labels, key_field="event_id")
    worker = start_worker(scenario)
    try:
        wait_until(lambda: all(_state_blob(stack, scenario, m) is not None and _labels_of(stack, scenario, m) >= 200
                               for m in models), timeout=180, what="both models to receive every label")
    finally:
        stop_worker(worker)
    assert [_labels_of(stack, scenario, m) for m in models] == [200, 200]


def test_a_changed_feature_list_rebuilds_state_instead_of_crash_looping(stack, tmp_path):
    import yaml
    scenario = make_scenario(tmp_path, stack)
    first = inference_events("content-filter", 600, seed=30)
    _run_to_the_end(stack, scenario, first, control=False)
    assert _events_of(stack, scenario, "content-filter") == len(first)
    config = yaml.safe_load(scenario.config_path.read_text())
    config["monitor"]["models"][0]["features"].append({"name": "new_feature", "type": "numeric"})
    scenario.config_path.write_text(yaml.safe_dump(config))
    second = inference_events("content-filter", 400, seed=31, start=600)
    produce(stack, scenario.inference_topic, second)
    worker = start_worker(scenario)
    try:
        _drain(stack, scenario, len(first) + len(second))
        assert worker.poll() is None
    finally:
        stop_worker(worker)
    assert _events_of(stack, scenario, "content-filter") == len(second)  # a fresh reference, then the new events


def _free_port() -> int:
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_redis(port: int, data_dir) -> "subprocess.Popen":
    import subprocess
    proc = subprocess.Popen(["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--dir", str(data_dir),
                             "--appendonly", "yes", "--appendfsync", "always", "--save", ""],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port)
    wait_until(lambda: _pings(client), timeout=20, what="a private redis-server")
    return proc


def _pings(client) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


def test_redis_going_away_is_retried_not_fatal(stack, tmp_path):
    """A Redis restart used to end the worker (the first ConnectionError aborted the batch and exited)."""
    import yaml
    port = _free_port()
    data = tmp_path / "redis"
    data.mkdir()
    server = _start_redis(port, data)
    scenario = make_scenario(tmp_path, stack)
    config = yaml.safe_load(scenario.config_path.read_text())
    config["redis"]["url"] = f"redis://127.0.0.1:{port}/0"
    config["redis"]["socket_timeout_seconds"] = 2
    scenario.config_path.write_text(yaml.safe_dump(config))
    first, second = inference_events("content-filter", 800, seed=40), inference_events("content-filter", 800, seed=41,
                                                                                          start=800)
    produce(stack, scenario.inference_topic, first)
    worker = start_worker(scenario)
    client = redis.Redis(port=port)
    try:
        _drain(stack, scenario, len(first))
        server.kill()
        server.wait(10)
        produce(stack, scenario.inference_topic, second)
        import time
        time.sleep(4)  # the worker meets the dead Redis and backs off
        assert worker.poll() is None, "the worker exited when Redis went away"
        server = _start_redis(port, data)
        _drain(stack, scenario, len(first) + len(second))
        from detectors.state import decode_state
        blob = client.get(f"{scenario.prefix}:content-filter:state")
        assert decode_state(blob)["counters"][0] == len(first) + len(second)
    finally:
        stop_worker(worker)
        server.kill()
        server.wait(10)


def test_records_held_under_a_backlog_end_as_batch_by_batch(stack, tmp_path):
    """Under a backlog the worker holds internal records back to detect each model's in longer
    runs (``kafka.detect_hold_ms``). A worker killed while it holds them, and restarted, ends with
    the states and control messages of one detecting every batch as it comes."""
    import yaml

    models = [f"hold-{i}" for i in range(6)]
    streams = [inference_events(m, 3000, seed=40 + i, shift_at=1500 if i % 2 else None) for i, m in enumerate(models)]
    events = [e for row in zip(*streams) for e in row]  # interleaved: each batch carries short runs of every model
    results = {}
    for hold in (0, 60_000):  # every batch; everything until the input is caught up
        (tmp_path / str(hold)).mkdir()
        s = make_scenario(tmp_path / str(hold), stack, models=[model_spec(m) for m in models], batch_size=60)
        config = yaml.safe_load(s.config_path.read_text())
        config["kafka"]["detect_hold_ms"] = hold
        port = config["metrics"]["port"] = _free_port()
        s.config_path.write_text(yaml.safe_dump(config))
        if hold:
            produce(stack, s.inference_topic, events)
            worker = start_worker(s)
            try:  # killed holding records whose offsets it has not committed
                wait_until(lambda: _gauge(port, "driftline_held_records") > 0, timeout=120, interval=0.05,
                           what="the worker to hold records back")
            finally:
                stop_worker(worker, kill=True)
        control = _run_to_the_end(stack, s, events, produced=bool(hold))
        results[hold] = ({m: _state_blob(stack, s, m) for m in models}, sorted(m["id"] for m in control),
                         len(_alerts(control)))
    assert results[0][2], "the shifted models must raise alerts for this test to mean anything"
    assert all(results[0][0].values())
    assert results[60_000] == results[0]


def _free_port() -> int:
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _gauge(port: int, name: str) -> float:
    """A gauge's value on a worker's /metrics (0 while the server is not up)."""
    import urllib.request
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            body = resp.read().decode()
    except OSError:
        return 0.0
    return next((float(line.split()[1]) for line in body.splitlines() if line.startswith(name + " ")), 0.0)
