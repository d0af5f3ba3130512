"""The generic HTTP webhook action: POST a verified rollback command, retried with backoff.

The body is the command's bytes exactly as published on the control topic, so the receiver can
verify the signature itself; ``Idempotency-Key`` carries the command's idempotency key (Redis
remembers applied keys, but a receiver that also deduplicates by it stays exact even if that
memory loses its last second). A 2xx answer is success; anything else (another status, a
redirect, a timeout, a refused connection) is retried ``max_attempts`` times with exponential
backoff, then reported as failed. Proxies from the environment are not used.

>>> delays(4, 0.5, 30.0)
[0.5, 1.0, 2.0]
"""
from __future__ import annotations

import logging
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("driftline.webhook")
MAX_ERROR_BODY = 512


@dataclass(frozen=True, slots=True)
class Delivery:
    """Outcome of delivering one command: ``ok`` after a 2xx; ``detail`` says what happened last."""

    ok: bool
    attempts: int
    status: int | None
    detail: str


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> None:
        return None  # a redirected POST is not a delivery: report the 3xx instead of following it


def delays(attempts: int, backoff: float, cap: float) -> list[float]:
    """Waits between ``attempts`` tries: ``backoff`` doubling, at most ``cap``."""
    return [min(cap, backoff * 2**i) for i in range(max(attempts - 1, 0))]


class WebhookAction:
    """POSTs commands to one configured URL (``actuation.webhooks[]``)."""

    kind = "webhook"

    def __init__(self, spec: Any, token: str | None, max_attempts: int, backoff_seconds: float,
                 max_backoff_seconds: float, sleep: Callable[[float], None] = time.sleep) -> None:
        self.name = spec.name
        self.url = spec.url
        self.models = set(spec.models) if spec.models else None
        self.timeout = spec.timeout_seconds
        self.headers = {"Content-Type": "application/json", "User-Agent": "driftline-actuation",
                        **dict(spec.headers)}
        if token is not None:
            self.headers["Authorization"] = f"Bearer {token}"
        self.delays = delays(max_attempts, backoff_seconds, max_backoff_seconds)
        self._sleep = sleep
        context = ssl.create_default_context(cafile=spec.tls_ca_file) if spec.tls_ca_file else None
        handlers: list[Any] = [urllib.request.ProxyHandler({}), _NoRedirect()]
        if context is not None:
            handlers.append(urllib.request.HTTPSHandler(context=context))
        self._opener = urllib.request.build_opener(*handlers)

    def applies_to(self, model: str) -> bool:
        """Whether this webhook takes commands of ``model``."""
        return self.models is None or model in self.models

    def _post(self, body: bytes, headers: Mapping[str, str]) -> tuple[int | None, str]:
        req = urllib.request.Request(self.url, data=body, headers=dict(headers), method="POST")
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                return resp.status, ""
        except urllib.error.HTTPError as exc:
            text = exc.read(MAX_ERROR_BODY).decode("utf-8", "replace") if exc.fp is not None else ""
            return exc.code, text.strip()
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            return None, f"{type(exc).__name__}: {reason}"

    def deliver(self, raw: bytes, doc: Mapping[str, Any], stop: Callable[[], bool] = lambda: False) -> Delivery:
        """POST ``raw`` (the command as published); retry non-2xx answers until attempts run out."""
        headers = dict(self.headers)
        headers["Idempotency-Key"] = str(doc.get("idempotency_key", ""))
        headers["X-Driftline-Command-Id"] = str(doc.get("id", ""))
        status: int | None = None
        detail = ""
        for attempt in range(1, len(self.delays) + 2):
            status, detail = self._post(raw, headers)
            if status is not None and 200 <= status < 300:
                return Delivery(True, attempt, status, "delivered")
            what = f"HTTP {status}" if status is not None else "no answer"
            log.warning("webhook %s: attempt %d for command %s: %s %s", self.name, attempt, doc.get("id"), what,
                        detail[:200])
            if attempt > len(self.delays) or stop():
                return Delivery(False, attempt, status, f"{what} {detail}".strip()[:MAX_ERROR_BODY])
            self._sleep(self.delays[attempt - 1])
        return Delivery(False, len(self.delays) + 1, status, detail)  # not reached
