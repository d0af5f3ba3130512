"""Alerting end to end: a drill on a live worker, the shipped Prometheus rule fires, Alertmanager's
webhook receiver on loopback gets the alert."""
from __future__ import annotations

import json
import socket
import threading
import time
import urllib.parse
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from loadtest.drill_kafka import run_kafka
from loadtest.drills import make_drill

pytestmark = pytest.mark.integration


class Receiver:
    """Alertmanager's webhook receiver: collects every posted notification."""

    def __init__(self, port: int) -> None:
        self.posts: list[dict[str, Any]] = []
        received = self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server naming)
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                received.append(json.loads(body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def alerts(self, name: str, model: str) -> list[dict[str, Any]]:
        return [a for p in list(self.posts) for a in p.get("alerts", [])
                if a["labels"].get("alertname") == name and a["labels"].get("model") == model]

    def __enter__(self) -> "Receiver":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def _free(ports: tuple[int, ...]) -> int:
    for port in ports:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    pytest.fail(f"every port the stack's Prometheus scrapes is taken: {ports}")


def _prometheus_alerts(prometheus_url: str, name: str, model: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{prometheus_url}/api/v1/alerts", timeout=5) as resp:
        alerts = json.load(resp)["data"]["alerts"]
    return [a for a in alerts if a["labels"].get("alertname") == name and a["labels"].get("model") == model]


def test_page_alert_reaches_the_alertmanager_webhook(stack, alerting) -> None:
    model = f"cf-{uuid.uuid4().hex[:8]}"  # this run's series only
    port = _free(alerting.metrics_ports)
    drill = make_drill("rogue_version", n_events=6000, injection=4000, seed=1)
    fired: list[dict[str, Any]] = []
    with Receiver(alerting.webhook_port) as receiver:
        def delivered() -> bool:
            fired[:] = _prometheus_alerts(stack.prometheus_url, "DriftlinePageAlert", model) or fired
            return bool(receiver.alerts("DriftlinePageAlert", model))

        started = time.time()
        messages = run_kafka(drill, stack.kafka_bootstrap, stack.redis_url, rate=20_000, timeout=60, idle=1.0,
                             metrics_port=port, model=model, hold=delivered)
        pages = [m for m in messages if m.get("kind") == "alert" and m.get("severity") == "page"]
        assert pages and pages[0]["signal"] == "version_integrity", "the drill raised no page alert"
        got = receiver.alerts("DriftlinePageAlert", model)
        assert fired and fired[0]["state"] == "firing", "the shipped rule never fired in Prometheus"
        assert got, (f"Alertmanager never posted DriftlinePageAlert for {model} to the webhook "
                     f"(received {len(receiver.posts)} notification(s))")
    alert = got[0]
    assert alert["status"] == "firing" and alert["labels"]["severity"] == "page"
    assert model in alert["annotations"]["summary"]
    starts = alert["startsAt"].rstrip("Z").split(".")[0]
    assert time.mktime(time.strptime(starts, "%Y-%m-%dT%H:%M:%S")) - time.timezone >= started - 5
    print(f"alert delivered {time.time() - started:.1f}s after the drill started")
