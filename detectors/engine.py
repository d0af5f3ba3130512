"""Engine: the one entry point used by both the Kafka worker and replay (skeleton)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Union

from detectors.alerts import Alert, Resolution
from detectors.canary import RollbackDecision
from detectors.errors import StateFormatError
from detectors.events import InferenceEvent, JoinedLabel
from detectors.spec import AlertPolicySpec, CalibrationSpec, ModelSpec, MonitorSpec
from detectors.state import decode_state, encode_state

ControlMessage = Union[Alert, RollbackDecision, Resolution]


class ModelMonitor:
    """All detection state of one model."""

    def __init__(self, spec: ModelSpec, calibration: CalibrationSpec, alerts: AlertPolicySpec) -> None:
        self.spec = spec
        self.calibration = calibration
        self.alerts = alerts

    def process_inference(self, events: Sequence[InferenceEvent]) -> list[ControlMessage]:
        return []

    def process_labels(self, labels: Sequence[JoinedLabel]) -> list[ControlMessage]:
        return []

    def to_bytes(self) -> bytes:
        return encode_state({"model": self.spec.name})

    @classmethod
    def from_bytes(cls, spec: ModelSpec, calibration: CalibrationSpec, alerts: AlertPolicySpec,
                   data: bytes) -> "ModelMonitor":
        doc = decode_state(data)
        if doc.get("model") != spec.name:
            raise StateFormatError("state is for another model")
        return cls(spec, calibration, alerts)

    @property
    def stats(self) -> dict[str, Any]:
        return {}


class Engine:
    """Routes events to one :class:`ModelMonitor` per configured model."""

    def __init__(self, spec: MonitorSpec) -> None:
        self.spec = spec
        self.monitors = {m.name: ModelMonitor(m, spec.calibration, spec.alerts) for m in spec.models}
        self.unknown_model_events = 0

    def process_inference(self, events: Sequence[InferenceEvent]) -> list[ControlMessage]:
        return []

    def process_labels(self, labels: Sequence[JoinedLabel]) -> list[ControlMessage]:
        return []
