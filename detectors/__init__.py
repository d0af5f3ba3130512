"""driftline detection core: pure, in-process detectors turning events into control messages.

No I/O, no network, no import of ``stream/``. The one entry point is
:class:`detectors.engine.Engine` (or one :class:`detectors.engine.ModelMonitor` per model).

Modules:

- ``events``      decoded event dataclasses (InferenceEvent, LabelEvent, JoinedLabel)
- ``spec``        pydantic configuration (MonitorSpec, ModelSpec, FeatureSpec, ...)
- ``engine``      ModelMonitor / Engine: batches in, control messages out, state to/from bytes
- ``deployment``  all inference-side detectors of one (version, deployment) stream
- ``columns``     hot-path extraction of numpy columns + input-integrity classification
- ``masks``       whole-mask tests (all true / any true) of the per-batch checks
- ``numeric``     numeric drift for all numeric features at once (histograms, mid-rank CUSUMs)
- ``cusum``       self-starting two-sided CUSUMs of many per-event scores at once
- ``checks``      contract checks every sequential (cusum) detector must pass
- ``signals``     categorical, prediction, integrity and trigger signals
- ``confidence``  confidence drift (normal-score and low-confidence CUSUMs, window tests)
- ``indicators``  per-event Bernoulli CUSUMs of 0/1 indicators against reference rates
- ``labels``      label drift, performance, per-source disagreement
- ``canary``      canary vs stable judge and RollbackDecision
- ``alerts``      alert policy (dedup, cool-down, incidents, resolution) and Alert/Resolution
- ``sequential``  ADWIN and Page-Hinkley wrappers (order dependent, not mergeable; no longer used by signals)
- ``sketches``    mergeable sketches and divergences (PSI, JS, chi-square, KS, entropy)
- ``calibration`` thresholds from a target false-alarm rate
- ``profile``     ReferenceProfile, build_profile, ProfileBuilder
- ``state``       versioned, checksummed, compressed JSON state encoding
- ``detection``   Detection (evidence of one threshold crossing) and the signal names
- ``simulate``    synthetic traffic and the false-alarm measurement
- ``ids``, ``errors``

Mergeability: histograms, category/class counts and moments merge exactly (two partitions'
sketches combine into the sketch of the union). The CUSUMs and the sequence of window tests are
order dependent and do not merge: the worker rekeys events by model into
an internal topic so each model's detectors see one ordered stream owned by one worker.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from detectors.alerts import Alert, Resolution
    from detectors.canary import RollbackDecision
    from detectors.detection import SIGNALS, Detection
    from detectors.engine import ControlMessage, Engine, ModelMonitor
    from detectors.errors import ProfileFormatError, StateFormatError
    from detectors.events import InferenceEvent, JoinedLabel, LabelEvent
    from detectors.profile import ReferenceProfile, build_profile
    from detectors.spec import (AlertPolicySpec, CalibrationSpec, CanaryPolicy, FeatureSpec, ModelSpec, MonitorSpec,
                                TriggerSpec)

# Public names and their modules, imported on first use: a process that only decodes events
# (stream.decode_process) need not load the statistics stack (scipy, numba) the engine uses.
_EXPORTS = {
    "Alert": "alerts", "Resolution": "alerts", "RollbackDecision": "canary", "SIGNALS": "detection",
    "Detection": "detection", "ControlMessage": "engine", "Engine": "engine", "ModelMonitor": "engine",
    "ProfileFormatError": "errors", "StateFormatError": "errors", "InferenceEvent": "events",
    "JoinedLabel": "events", "LabelEvent": "events", "ReferenceProfile": "profile", "build_profile": "profile",
    "AlertPolicySpec": "spec", "CalibrationSpec": "spec", "CanaryPolicy": "spec", "FeatureSpec": "spec",
    "ModelSpec": "spec", "MonitorSpec": "spec", "TriggerSpec": "spec",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'detectors' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"detectors.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


__all__ = sorted(_EXPORTS)
