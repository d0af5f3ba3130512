"""The webhook action over real HTTP on loopback: body as published, headers, retries, no redirects."""
import json

import pytest

from stream.config import WebhookActionSpec
from stream.webhook import WebhookAction, delays
from tests.stream.receiver import Receiver

DOC = {"id": "a" * 32, "idempotency_key": "b" * 32, "model": "filter"}
RAW = json.dumps(DOC, indent=1).encode()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def action(url: str, attempts: int = 4, **spec) -> tuple[WebhookAction, list[float]]:
    slept: list[float] = []
    a = WebhookAction(WebhookActionSpec(name="hook", url=url, timeout_seconds=2, **spec), spec.pop("token", None),
                      attempts, 0.5, 1.5, sleep=slept.append)
    return a, slept


def test_posts_the_published_bytes_with_idempotency_headers(receiver):
    a, slept = action(receiver.url, headers={"X-Team": "ml"})
    d = a.deliver(RAW, DOC)
    assert (d.ok, d.attempts, d.status) == (True, 1, 200) and slept == []
    (req,) = receiver.requests
    assert req.body == RAW and req.path == "/hooks/rollback"
    assert req.headers["idempotency-key"] == "b" * 32 and req.headers["x-driftline-command-id"] == "a" * 32
    assert req.headers["content-type"] == "application/json" and req.headers["x-team"] == "ml"
    assert "authorization" not in req.headers


def test_bearer_token(receiver):
    a = WebhookAction(WebhookActionSpec(name="h", url=receiver.url), "t0k3n", 1, 0.1, 0.1)
    assert a.deliver(RAW, DOC).ok
    assert receiver.requests[0].headers["authorization"] == "Bearer t0k3n"


def test_non_2xx_is_retried_with_backoff_then_succeeds(receiver):
    receiver.statuses = [500, 503, 202]
    a, slept = action(receiver.url)
    d = a.deliver(RAW, DOC)
    assert (d.ok, d.attempts, d.status) == (True, 3, 202)
    assert slept == [0.5, 1.0] and len(receiver.requests) == 3


def test_gives_up_after_max_attempts(receiver):
    receiver.statuses = [500]
    a, slept = action(receiver.url, attempts=4)
    d = a.deliver(RAW, DOC)
    assert not d.ok and d.attempts == 4 and d.status == 500 and "HTTP 500" in d.detail
    assert slept == [0.5, 1.0, 1.5] and len(receiver.requests) == 4


def test_a_redirect_is_not_followed_and_not_a_success(receiver):
    receiver.statuses = [307]
    a, _ = action(receiver.url, attempts=2)
    d = a.deliver(RAW, DOC)
    assert not d.ok and d.status == 307 and len(receiver.requests) == 2


def test_refused_connection_is_retried_and_reported(receiver):
    url = receiver.url
    receiver.close()
    a, slept = action(url, attempts=2)
    d = a.deliver(RAW, DOC)
    assert not d.ok and d.status is None and "no answer" in d.detail and slept == [0.5]


def test_stop_ends_retries_early(receiver):
    receiver.statuses = [500]
    a, slept = action(receiver.url, attempts=5)
    assert not a.deliver(RAW, DOC, stop=lambda: True).ok
    assert len(receiver.requests) == 1 and slept == []


def test_delays_double_up_to_the_cap():
    assert delays(6, 1.0, 5.0) == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert delays(1, 1.0, 5.0) == []
