"""The faust-streaming runtime against the real local Kafka and Redis (started by scripts/stack)."""
from __future__ import annotations

import dataclasses
import json

import pytest
import redis
import yaml

from tests.stream.worker_harness import (
    committed_offsets, control_verify, drain, inference_events, make_scenario, model_spec, produce, read_topic,
    start_worker, stop_worker, wait_until,
)

pytestmark = pytest.mark.integration
MODELS = ["content-filter", "spam-filter"]


def _kinds(messages: list[dict], kind: str) -> list[dict]:
    return [m for m in messages if m.get("kind") == kind]


def _state(stack, scenario, models: list[str]) -> dict[str, bytes | None]:
    r = redis.Redis.from_url(stack.redis_url)
    return {m: r.get(f"{scenario.prefix}:{m}:state") for m in models}


def _two_model_events() -> list[dict]:
    events = []
    for i, m in enumerate(MODELS):
        events += inference_events(m, 12000, seed=10 + i, shift_at=6000)
    return events


def _run_to_end(stack, scenario, events: list[dict], runtime: str) -> tuple[dict, list[dict]]:
    """One uninterrupted worker over ``events``: the committed state and control messages."""
    produce(stack, scenario.inference_topic, events)
    worker = start_worker(scenario, runtime=runtime)
    try:
        drain(stack, scenario, len(events))
    finally:
        stop_worker(worker)
    return _state(stack, scenario, MODELS), read_topic(stack, scenario.control_topic, idle_seconds=3, timeout=30)


def test_faust_injected_shift_is_alerted_on_the_control_topic(stack, tmp_path):
    scenario = make_scenario(tmp_path, stack)
    produce(stack, scenario.inference_topic, inference_events("content-filter", 6000, seed=1, shift_at=3000))
    worker = start_worker(scenario, runtime="faust")
    try:
        messages = wait_until(
            lambda: [m for m in _kinds(read_topic(stack, scenario.control_topic, idle_seconds=2, timeout=10), "alert")
                     if m.get("signal") == "numeric_drift"],
            timeout=180, what="a numeric_drift alert")
    finally:
        stop_worker(worker)
    assert worker.returncode == 0
    alert = messages[0]
    assert (alert["model"], alert["version"], alert["key"]) == ("content-filter", "v1", "brightness")
    assert int(alert["event_id"].rsplit("-", 1)[1]) >= 3000, "alert raised before the shift"


def test_faust_poisoned_canary_gets_a_signed_rollback_that_verifies(stack, tmp_path):
    scenario = make_scenario(tmp_path, stack)
    stable = inference_events("content-filter", 4000, seed=2)
    canary = inference_events("content-filter", 4000, seed=3, version="v2", deployment="canary", backdoor=True)
    produce(stack, scenario.inference_topic, [e for pair in zip(stable, canary) for e in pair])
    worker = start_worker(scenario, runtime="faust")
    try:
        rollbacks = wait_until(
            lambda: _kinds(read_topic(stack, scenario.control_topic, idle_seconds=2, timeout=10), "rollback"),
            timeout=180, what="a rollback command")
    finally:
        stop_worker(worker)
    command = rollbacks[0]
    assert (command["canary_version"], command["stable_version"]) == ("v2", "v1") and command["evidence"]
    for doc, accepted in ((command, True), (dict(command, canary_version="v1"), False)):
        result = control_verify(doc, tmp_path / "rollback.json")
        assert (result.returncode == 0) is accepted, result.stdout + result.stderr


def test_faust_malformed_messages_are_dead_lettered_with_reason(stack, tmp_path):
    scenario = make_scenario(tmp_path, stack)
    good = inference_events("content-filter", 300, seed=4)
    raw = [b"{not json", b"[1, 2, 3]", json.dumps({"event_id": "x", "model": "content-filter"}).encode(),
           json.dumps(dict(good[0], event_id="unknown-1", model="no-such-model")).encode()]
    produce(stack, scenario.inference_topic, good, raw=raw)
    worker = start_worker(scenario, runtime="faust")
    try:
        dead = wait_until(lambda: read_topic(stack, scenario.dead_letter_topic, expect=4, timeout=10),
                          timeout=120, what="dead letters")
        drain(stack, scenario, len(good) + len(raw))
    finally:
        stop_worker(worker)
    reasons = sorted(d["reason"] for d in dead)
    assert len(dead) == 4 and "malformed_json" in reasons and "unknown_model" in reasons
    assert any(r.startswith(("missing_field", "wrong_type")) for r in reasons)
    assert all(d["topic"] == scenario.inference_topic and d["detail"] for d in dead)


def _interrupted_run(stack, scenario, events: list[dict], kills: list[tuple[str, int]], finisher: str, *,
                     held_back: list[dict] = (), every_model: bool = False):
    """Workers of the given runtimes SIGKILLed once past the given raw progress, then one finishing worker.

    ``held_back`` is produced only after the kills, so a killed worker cannot have reached the end of the
    stream; with ``every_model`` a kill also waits until every model has committed state.
    Returns the committed state left by each killed worker, the final state and the control messages.
    """
    produce(stack, scenario.inference_topic, events)
    group = f"it-{scenario.tag}"
    left = []
    for runtime, kill_after in kills:
        worker = start_worker(scenario, runtime=runtime)
        try:
            wait_until(lambda: committed_offsets(stack, group, scenario.inference_topic, 4) >= kill_after
                       and (not every_model or all(_state(stack, scenario, MODELS).values())),
                       timeout=180, what=f"progress past {kill_after}")
        finally:
            stop_worker(worker, kill=True)
        left.append(_state(stack, scenario, MODELS))
    produce(stack, scenario.inference_topic, list(held_back))
    worker = start_worker(scenario, runtime=finisher)
    try:
        drain(stack, scenario, len(events) + len(held_back))
    finally:
        stop_worker(worker)
    return left, _state(stack, scenario, MODELS), read_topic(stack, scenario.control_topic, idle_seconds=3, timeout=30)


def _assert_same_outcome(state, control, expected_state, expected_control) -> None:
    assert state == expected_state
    ids = [m["id"] for m in control]
    assert len(ids) == len(set(ids)), "a control message was published twice"
    assert sorted(ids) == sorted(m["id"] for m in expected_control)


def _scenario(tmp_path, stack, name: str):
    (tmp_path / name).mkdir()
    return make_scenario(tmp_path / name, stack, models=[model_spec(m) for m in MODELS], batch_size=500)


def test_faust_sigkill_mid_stream_resumes_to_identical_state_without_duplicate_ids(stack, tmp_path):
    events = _two_model_events()
    expected_state, expected_control = _run_to_end(stack, _scenario(tmp_path, stack, "a"), events, "faust")
    assert all(expected_state.values())
    assert _kinds(expected_control, "alert"), "the reference run must raise alerts for this test to mean anything"

    kills = [("faust", 1500), ("faust", 9000), ("faust", 17000)]
    _, state, control = _interrupted_run(stack, _scenario(tmp_path, stack, "b"), events, kills, "faust")
    _assert_same_outcome(state, control, expected_state, expected_control)


def test_state_left_by_a_killed_faust_worker_is_finished_by_the_default_runtime(stack, tmp_path):
    """Same keys, format and offsets: the confluent-kafka worker resumes where a faust worker stopped,
    and ends exactly where one confluent-kafka worker alone ends."""
    events = _two_model_events()
    expected_state, expected_control = _run_to_end(stack, _scenario(tmp_path, stack, "a"), events, "confluent")
    assert _kinds(expected_control, "alert")

    # Each model has a partition of its own; the faust worker may finish one before it starts the other,
    # so the kill waits for both models' state, and each model's last quarter arrives only after the kill.
    early = [e for i, e in enumerate(events) if i % 12000 < 9000]
    late = [e for i, e in enumerate(events) if i % 12000 >= 9000]
    left, state, control = _interrupted_run(stack, _scenario(tmp_path, stack, "b"), early, [("faust", 12000)],
                                            "confluent", held_back=late, every_model=True)
    assert all(left[0].values()), "the faust worker must have committed state for the hand-over to mean anything"
    _assert_same_outcome(state, control, expected_state, expected_control)


def test_a_faust_worker_joins_the_group_a_killed_default_worker_left(stack, tmp_path):
    """The broker refuses the faust worker (another group protocol) while the killed default worker's
    session lasts; the faust worker retries the join until then and finishes the stream."""
    scenario = _scenario(tmp_path, stack, "a")
    doc = yaml.safe_load(scenario.config_path.read_text())
    doc["kafka"]["client_options"] = {"session.timeout.ms": 15000, "heartbeat.interval.ms": 1000}
    default = dataclasses.replace(scenario, config_path=scenario.config_path.with_name("default.yaml"))
    default.config_path.write_text(yaml.safe_dump(doc))
    events = inference_events("content-filter", 4000, seed=3)
    produce(stack, scenario.inference_topic, events[:2000])
    worker = start_worker(default)
    try:
        wait_until(lambda: committed_offsets(stack, f"it-{scenario.tag}", scenario.inference_topic, 4) >= 500,
                   timeout=120, what="progress of the default worker")
    finally:
        stop_worker(worker, kill=True)
    produce(stack, scenario.inference_topic, events[2000:])  # only the faust worker can process these
    faust = start_worker(scenario, runtime="faust", log_path=tmp_path / "faust.log")
    try:
        drain(stack, scenario, len(events), timeout=120)
    finally:
        stop_worker(faust)
    assert faust.returncode == 0
    assert "still has a member of the default runtime" in (tmp_path / "faust.log").read_text()
