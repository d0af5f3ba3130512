"""Decoded events the detection core consumes.

Decoding of raw JSON into these classes lives in ``stream/``; the core only ever sees
these plain, slotted dataclasses. Feature values are kept raw (they may be NaN, None or
of the wrong type): input-integrity checks count such values and keep them out of every
other sketch.

>>> e = InferenceEvent("e1", 1.0, "filter", "v1", "stable", {"x": 0.5}, "safe", 0.9)
>>> e.position
-1
"""
from __future__ import annotations

from dataclasses import dataclass

DEPLOYMENTS: tuple[str, ...] = ("stable", "canary", "shadow")


@dataclass(slots=True)
class InferenceEvent:
    """One prediction served by a model version."""

    event_id: str
    ts: float
    model: str
    model_version: str
    deployment: str
    features: dict[str, object]
    prediction: str
    confidence: float | None = None
    scores: dict[str, float] | None = None
    position: int = -1
    artifact_digest: str | None = None  # "sha256:<64 hex>" of the serving artifact, when the event says


@dataclass(slots=True)
class LabelEvent:
    """A delayed ground-truth label for the prediction whose id is ``event_id``."""

    event_id: str
    ts: float
    label: str
    source: str
    position: int = -1


@dataclass(slots=True)
class JoinedLabel:
    """A label joined with the prediction it refers to (the join is done by the caller)."""

    label: LabelEvent
    model: str
    model_version: str
    deployment: str
    prediction: str
    predicted_ts: float
