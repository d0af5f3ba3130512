"""Shared fixtures: connection details of the local stack started by `scripts/stack start`."""
from __future__ import annotations

import os
import shlex
import socket
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Stack:
    """Addresses of the real Kafka, Redis and Prometheus processes the tests talk to."""

    kafka_bootstrap: str
    redis_url: str
    prometheus_url: str


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def stack() -> Stack:
    """The running local stack; fails (never skips) when a component is down."""
    kafka_port = int(os.environ.get("DRIFTLINE_KAFKA_PORT", "19092"))
    redis_port = int(os.environ.get("DRIFTLINE_REDIS_PORT", "16379"))
    prom_port = int(os.environ.get("DRIFTLINE_PROMETHEUS_PORT", "19090"))
    down = [name for name, port in (("kafka", kafka_port), ("redis", redis_port), ("prometheus", prom_port))
            if not _reachable("127.0.0.1", port)]
    if down:
        pytest.fail(f"local stack not running ({', '.join(down)} down): run `scripts/stack start` first")
    return Stack(
        kafka_bootstrap=f"127.0.0.1:{kafka_port}",
        redis_url=f"redis://127.0.0.1:{redis_port}/0",
        prometheus_url=f"http://127.0.0.1:{prom_port}",
    )


@pytest.fixture(scope="session")
def private_ports() -> int:
    """Where the ports of servers tests start, kill and restart themselves begin: the chaos test's
    private stacks (base + 64 to base + 96, see loadtest.chaos_stack.Ports) and the Redis-loss
    test's Redis (base + 40 to base + 59).

    DRIFTLINE_CHAOS_PORTS moves them (default 24000) so that two suites on one machine, or a
    suite next to another private stack, never share a port.
    """
    return int(os.environ.get("DRIFTLINE_CHAOS_PORTS", "24000"))


@dataclass(frozen=True)
class Alerting:
    """The stack's Alertmanager and the loopback port its webhook receiver posts to."""

    alertmanager_url: str
    webhook_port: int
    metrics_ports: tuple[int, ...]  # ports the stack's Prometheus scrapes


@pytest.fixture(scope="session")
def alerting(stack: Stack) -> Alerting:
    """The running Alertmanager of the local stack; fails (never skips) when it is down."""
    port = int(os.environ.get("DRIFTLINE_ALERTMANAGER_PORT", "19095"))
    if not _reachable("127.0.0.1", port):
        pytest.fail(f"Alertmanager not running on 127.0.0.1:{port}: run `scripts/stack start` first")
    return Alerting(alertmanager_url=f"http://127.0.0.1:{port}",
                    webhook_port=int(os.environ.get("DRIFTLINE_ALERT_WEBHOOK_PORT", "19096")),
                    metrics_ports=tuple(int(p) for p in
                                        os.environ.get("DRIFTLINE_METRICS_PORTS", "9464 9465 19464").split()))


@dataclass(frozen=True)
class SecureStack:
    """The same stack's SASL_SSL listener and TLS Redis port with their users (`scripts/stack env`)."""

    kafka_bootstrap: str
    sasl_mechanism: str
    sasl_username: str
    sasl_password: str
    ca_file: str
    redis_url: str
    redis_username: str
    redis_password: str
    redis_prefixes: list[str]
    kafka_security: dict = field(default_factory=dict)  # librdkafka settings of a test's own clients


def _stack_env() -> dict[str, str]:
    path = Path(os.environ.get("DRIFTLINE_STACK_DIR", ROOT / ".stack")) / "env"
    out = {}
    for line in path.read_text().splitlines() if path.exists() else []:
        if line.startswith("export ") and "=" in line:
            name, _, value = line.removeprefix("export ").partition("=")
            out[name] = shlex.split(value)[0] if value else ""
    return out


@pytest.fixture(scope="session")
def secure_stack(stack) -> SecureStack:
    """The stack's secured endpoints; fails (never skips) when the stack runs without them."""
    env = _stack_env()
    if "DRIFTLINE_KAFKA_SASL_BOOTSTRAP" not in env:
        pytest.fail("the local stack's env file has no SASL_SSL/TLS endpoints (set DRIFTLINE_STACK_DIR to the "
                    "stack's dir, or restart it with the current scripts/stack: scripts/stack stop && scripts/stack start)")
    endpoints = (("kafka SASL_SSL", env["DRIFTLINE_KAFKA_SASL_BOOTSTRAP"]),
                 ("redis TLS", env["DRIFTLINE_REDIS_TLS_URL"].split("//")[1].split("/")[0]))
    down = [name for name, addr in endpoints if not _reachable(addr.rsplit(":", 1)[0], int(addr.rsplit(":", 1)[1]))]
    if down:
        pytest.fail(f"local stack's {', '.join(down)} down: restart it (scripts/stack stop && scripts/stack start)")
    return SecureStack(
        kafka_bootstrap=env["DRIFTLINE_KAFKA_SASL_BOOTSTRAP"], sasl_mechanism=env["DRIFTLINE_KAFKA_SASL_MECHANISM"],
        sasl_username=env["DRIFTLINE_KAFKA_SASL_USERNAME"], sasl_password=env["DRIFTLINE_KAFKA_SASL_PASSWORD"],
        ca_file=env["DRIFTLINE_TLS_CA"], redis_url=env["DRIFTLINE_REDIS_TLS_URL"],
        redis_username=env["DRIFTLINE_REDIS_USERNAME"], redis_password=env["DRIFTLINE_REDIS_PASSWORD"],
        redis_prefixes=env["DRIFTLINE_REDIS_KEY_PREFIXES"].split(),
        kafka_security={"security.protocol": "SASL_SSL", "sasl.mechanism": env["DRIFTLINE_KAFKA_SASL_MECHANISM"],
                        "sasl.username": env["DRIFTLINE_KAFKA_SASL_USERNAME"],
                        "sasl.password": env["DRIFTLINE_KAFKA_SASL_PASSWORD"], "ssl.ca.location": env["DRIFTLINE_TLS_CA"]},
    )
