"""Flagger rollback webhook: answers 200 while a verified rollback stands for the polled canary.

Flagger calls ``type: rollback`` webhooks with ``POST`` and a JSON payload ``{"name", "namespace",
"phase", "metadata"}`` while a canary is Progressing or Waiting; a 2xx answer makes it stop the
analysis, shift traffic back to the primary and mark the canary failed. ``driftline control act``
serves that contract:

- ``POST /rollback/{namespace}/{canary}``: the canary named by the path (a payload naming
  another canary is refused with 400);
- ``POST /rollback/check``: the canary named by the payload (one URL for every canary, the
  shape of Flagger's load tester).

It answers 200 with the rollback command's id, model and versions while a verified rollback of
a model mapped to that canary stands (``actuation.flagger.hold_seconds`` after the command's
issue time), 403 when none stands, 404 for a canary the configuration does not map, 400 for a
malformed request, 503 when the state store cannot be read. A ``metadata.canary_version`` in the
payload narrows the match to a rollback of that version.

Stands live in Redis (``{prefix}:@rollback:{namespace}:{canary}``, expiring with the
hold) so every replica of ``control act`` answers alike and a restart forgets nothing.
"""
from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import orjson
import redis

from stream.webhook import Delivery

MAX_BODY = 64 * 1024


class Stands:
    """Rollbacks standing per Flagger canary, in Redis with the hold as TTL."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self._r = client
        self._prefix = prefix

    def _key(self, namespace: str, canary: str) -> str:
        return f"{self._prefix}:@rollback:{namespace}:{canary}"

    def put(self, namespace: str, canary: str, record: Mapping[str, Any], ttl_seconds: int) -> None:
        """Let ``record`` stand for ``ttl_seconds``."""
        self._r.set(self._key(namespace, canary), orjson.dumps(dict(record)), ex=ttl_seconds)

    def get(self, namespace: str, canary: str) -> dict[str, Any] | None:
        """The rollback standing for the canary, or None."""
        raw = self._r.get(self._key(namespace, canary))
        return orjson.loads(raw) if raw else None


class FlaggerAction:
    """Acting on a rollback = letting it stand for each Flagger canary its model maps to."""

    kind = "flagger"
    name = "flagger"

    def __init__(self, spec: Any, stands: Stands, now: Any = time.time) -> None:
        self.hold = spec.hold_seconds
        self.by_model: dict[str, list[tuple[str, str]]] = {}
        self.by_canary: dict[tuple[str, str], str] = {}
        for c in spec.canaries:
            self.by_model.setdefault(c.model, []).append((c.namespace, c.canary))
            self.by_canary[(c.namespace, c.canary)] = c.model
        self.stands = stands
        self._now = now

    def applies_to(self, model: str) -> bool:
        """Whether ``model`` maps to a Flagger canary."""
        return model in self.by_model

    def deliver(self, raw: bytes, doc: Mapping[str, Any], stop: Any = None) -> Delivery:
        """Record the rollback as standing for the model's canaries until its hold ends."""
        until = int(doc["issued_at"]) + self.hold
        ttl = until - int(self._now())
        targets = self.by_model.get(str(doc.get("model")), [])
        if ttl <= 0:
            return Delivery(True, 1, None, f"hold of {self.hold} s already over; nothing stands")
        record = {k: doc.get(k) for k in ("id", "idempotency_key", "model", "canary_version", "stable_version",
                                          "reason", "issued_at")}
        record["until"] = until
        for namespace, canary in targets:
            self.stands.put(namespace, canary, record, ttl)
        names = ", ".join(f"{n}/{c}" for n, c in targets)
        return Delivery(True, 1, None, f"rollback stands for {names} until {until}")

    def answer(self, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
        """HTTP status and JSON body for a Flagger webhook call (``path`` without query)."""
        parts = path.strip("/").split("/")
        if not parts or parts[0] != "rollback" or len(parts) not in (2, 3) or (len(parts) == 2 and parts[1] != "check"):
            return 404, {"error": "unknown path; use POST /rollback/{namespace}/{canary} or /rollback/check"}
        payload: Any = {}
        if body.strip():
            try:
                payload = orjson.loads(body)
            except orjson.JSONDecodeError:
                return 400, {"error": "payload is not JSON"}
            if not isinstance(payload, dict):
                return 400, {"error": "payload is not a JSON object"}
        name, namespace = payload.get("name"), payload.get("namespace")
        if len(parts) == 3:
            if (name is not None and name != parts[2]) or (namespace is not None and namespace != parts[1]):
                return 400, {"error": f"payload names {namespace}/{name}, the path {parts[1]}/{parts[2]}"}
            namespace, name = parts[1], parts[2]
        elif not isinstance(name, str) or not isinstance(namespace, str):
            return 400, {"error": "payload needs name and namespace"}
        model = self.by_canary.get((namespace, name))
        if model is None:
            return 404, {"error": f"canary {namespace}/{name} is not mapped to a driftline model"}
        try:
            stand = self.stands.get(namespace, name)
        except redis.RedisError as exc:
            return 503, {"error": f"state store unavailable: {type(exc).__name__}"}
        metadata = payload.get("metadata") if isinstance(payload.get("metadata"), dict) else {}
        wanted = metadata.get("canary_version")
        base = {"canary": f"{namespace}/{name}", "model": model, "phase": payload.get("phase")}
        if stand is None:
            return 403, {**base, "rollback": False, "detail": "no verified rollback stands for this canary"}
        if wanted is not None and wanted != stand.get("canary_version"):
            return 403, {**base, "rollback": False,
                         "detail": f"the standing rollback is of version {stand.get('canary_version')!r}, not {wanted!r}"}
        return 200, {**base, "rollback": True, **{k: stand.get(k) for k in (
            "id", "idempotency_key", "canary_version", "stable_version", "reason", "issued_at", "until")}}
