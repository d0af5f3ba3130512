"""Shared fixtures: connection details of the local stack started by `scripts/stack start`."""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass

import pytest


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
