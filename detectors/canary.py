"""Canary rollback decision.

A canary version is rolled back when it diverges from the stable version serving the same
traffic period (prediction distribution, mean confidence, error rate on joined labels), or
when a page-severity drift alert fires on the canary deployment alone. The decision names
the alert ids that justify it and carries a deterministic idempotency key (one per model,
canary version and stable version), so an actuator applying it twice does nothing twice.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from detectors.ids import SCHEMA, stable_id


@dataclass(slots=True)
class RollbackDecision:
    """Roll ``canary_version`` back to ``stable_version``; ``evidence`` lists alert ids."""

    id: str
    idempotency_key: str
    model: str
    canary_version: str
    stable_version: str
    reason: str
    evidence: list[str]
    event_id: str
    position: int
    ts: float
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA, "kind": "rollback", "id": self.id,
            "idempotency_key": self.idempotency_key, "model": self.model,
            "canary_version": self.canary_version, "stable_version": self.stable_version,
            "reason": self.reason, "evidence": list(self.evidence), "details": self.details,
            "event_id": self.event_id, "position": self.position, "ts": self.ts,
        }


def rollback_key(model: str, canary_version: str, stable_version: str) -> str:
    """Idempotency key of rolling ``canary_version`` back to ``stable_version``."""
    return stable_id(model, canary_version, stable_version, "rollback")
