"""Both runtimes over SASL_SSL Kafka and TLS Redis as an ACL user; bad credentials fail at start.

The local stack (scripts/stack) serves a SASL_SSL listener (SCRAM-SHA-512) and a TLS Redis port
whose ACL user may run only driftline's commands on keys under its prefix; see `scripts/stack env`.
"""
from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest
import redis
import yaml

from tests.stream.worker_harness import (
    RUNTIME_COMMANDS, inference_events, make_scenario, model_spec, produce, read_topic, run_worker_to_exit,
    start_worker, stop_worker, wait_until,
)

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory) -> str:
    """A CA that signed nothing the stack serves."""
    out = tmp_path_factory.mktemp("other-ca")
    subprocess.run([str(ROOT / "scripts" / "make-certs"), str(out)], check=True)
    return str(out / "ca.pem")


@pytest.mark.parametrize("runtime", sorted(RUNTIME_COMMANDS))
def test_worker_runs_over_sasl_ssl_and_redis_tls_as_the_acl_user(secure_stack, tmp_path, runtime):
    model = f"sec-{uuid.uuid4().hex[:8]}"
    scenario = make_scenario(tmp_path, secure_stack, models=[model_spec(model)], secure=secure_stack)
    events = inference_events(model, 300, seed=11)
    rogue = dict(events[-1], event_id=f"{model}-rogue", model_version="v9")  # a version the config does not list
    produce(secure_stack, scenario.inference_topic, events + [rogue])
    log = tmp_path / "worker.log"
    worker = start_worker(scenario, runtime=runtime, log_path=log)
    store = redis.Redis.from_url(secure_stack.redis_url, username=secure_stack.redis_username,
                                 password=secure_stack.redis_password, ssl_ca_certs=secure_stack.ca_file)
    try:
        def alert():  # wait_until fails at once, with the log tail, if the worker exits
            return [m for m in read_topic(secure_stack, scenario.control_topic, idle_seconds=1, timeout=5)
                    if m.get("kind") == "alert" and m.get("signal") == "version_integrity"]
        alerts = wait_until(alert, timeout=120, what=f"a version_integrity alert over SASL_SSL ({runtime})")
        state_key = f"{scenario.prefix}:{model}:state"
        wait_until(lambda: store.get(state_key) is not None, timeout=30,
                   what=f"{state_key} committed in Redis over TLS")
    finally:
        stop_worker(worker)
    assert alerts[0]["model"] == model and alerts[0]["version"] == "v9", alerts[0]
    assert alerts[0]["event_id"] == rogue["event_id"]
    assert store.acl_whoami() == secure_stack.redis_username
    assert "Traceback" not in log.read_text(errors="replace"), log.read_text(errors="replace")[-3000:]


def _rewrite(path: Path, **sections) -> None:
    config = yaml.safe_load(path.read_text())
    for section, values in sections.items():
        node = config
        for part in section.split("."):
            node = node[part]
        node.update(values)
    path.write_text(yaml.safe_dump(config))


def _one_line(res: subprocess.CompletedProcess) -> str:
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.returncode not in (0, None) and len(lines) == 1 and "Traceback" not in res.stderr, (
        f"exit {res.returncode}, stderr:\n{res.stderr[-3000:]}")
    return lines[0]


CASES = {  # case -> runtimes it runs under (both runtimes call the same start-up check)
    "wrong_sasl_password": ("confluent", "faust"),
    "untrusted_kafka_ca": ("confluent",),
    "untrusted_redis_ca": ("confluent",),
    "redis_user_without_rights": ("confluent", "faust"),
}


@pytest.mark.parametrize("case,runtime", [(c, r) for c, runtimes in CASES.items() for r in runtimes])
def test_bad_credentials_fail_at_start_with_one_line(secure_stack, stack, tmp_path, other_ca, case, runtime):
    scenario = make_scenario(tmp_path, secure_stack, models=[model_spec(f"sec-{uuid.uuid4().hex[:8]}")],
                             secure=secure_stack)
    env: dict[str, str] = {}
    admin = redis.Redis.from_url(stack.redis_url)
    limited = f"it-{scenario.tag}-limited"
    if case == "wrong_sasl_password":
        env["DRIFTLINE_TEST_SASL_PASSWORD"] = "not-the-password"
        expected = f"SASL authentication failed for user '{secure_stack.sasl_username}' (SCRAM-SHA-512)"
    elif case == "untrusted_kafka_ca":
        _rewrite(scenario.config_path, **{"kafka.security": {"ssl_ca_location": other_ca}})
        expected = f"the broker's TLS certificate is not trusted: certificate verify failed against the CA in " \
                   f"kafka.security.ssl_ca_location ({other_ca})"
    elif case == "untrusted_redis_ca":
        _rewrite(scenario.config_path, redis={"ssl_ca_location": other_ca})
        expected = "the server's TLS certificate is not trusted: certificate verify failed"
    else:  # every command, but on other keys than driftline's prefix
        admin.execute_command("ACL", "SETUSER", limited, "reset", "on", ">limited-password", "~elsewhere:*", "+@all")
        _rewrite(scenario.config_path, redis={"username": limited})
        env["DRIFTLINE_TEST_REDIS_PASSWORD"] = "limited-password"
        expected = f"user '{limited}' lacks a right driftline needs on keys {scenario.prefix}:*: " \
                   "this user has no permissions to access one of the keys"
    try:
        res = run_worker_to_exit(scenario, runtime=runtime, env=env)
    finally:
        admin.execute_command("ACL", "DELUSER", limited)
    assert expected in _one_line(res)
    assert res.returncode == 1
