"""A read-only trace of the detection engine during a replay, for the HTML backtest report.

After every replay micro-batch, :meth:`StatsTrace.sample` reads each model's public
``ModelMonitor.stats`` snapshot at the batch's event time: every ``<detector>_statistic`` with its
``<detector>_threshold`` under a stream's sections (today the rank CUSUM per numeric feature) and
the cumulative invalid-value counts per stream. :meth:`StatsTrace.attach` also records every
detection, not only those the alert policy lets through, by wrapping each monitor's
``policy.observe`` with a recorder that returns the original result unchanged (the drill report
records detections the same way). Nothing is written to the engine, so detection results are the
same with or without a trace.

Memory is bounded: at most :data:`MAX_POINTS` points per series (when full, neighbouring pairs
merge, keeping the one further past its threshold, and each later point keeps the peak of twice as
many samples),
:data:`MAX_SERIES` series per model, :data:`MAX_DETECTIONS` recorded detections per model and
detector.

>>> from detectors.engine import Engine
>>> from detectors.events import InferenceEvent
>>> from detectors.spec import MonitorSpec
>>> eng = Engine(MonitorSpec.model_validate({"models": [{"name": "m", "classes": ["a"], "versions": ["v1"],
...     "reference_size": 100, "features": [{"name": "x", "type": "numeric"}]}]}))
>>> trace = StatsTrace().attach(eng)
>>> for b in range(5):
...     _ = eng.process_inference([InferenceEvent(f"e{i}", float(i), "m", "v1", "stable", {"x": i % 7}, "a", 0.9)
...                                for i in range(b * 100, b * 100 + 100)])
...     trace.sample(eng, b * 100 + 99.0)
>>> sorted(trace.series["m"])
[('v1/stable', 'numeric_drift', 'cusum', 'x')]
>>> len(trace.series["m"][('v1/stable', 'numeric_drift', 'cusum', 'x')].t)
5
"""
from __future__ import annotations

import math
from typing import Any

MAX_POINTS = 512
MAX_SERIES = 256
MAX_DETECTIONS = 2000
SECTION_SIGNALS = {"numeric": "numeric_drift", "categorical": "categorical_drift", "prediction": "prediction_drift",
                   "confidence": "confidence_drift", "integrity": "input_integrity", "triggers": "trigger"}


def exceedance(statistic: float, threshold: float) -> float:
    """How far a statistic is past (>1) or below (<1) its threshold; 0 when either is unusable."""
    if not (math.isfinite(statistic) and math.isfinite(threshold)) or threshold == 0:
        return 0.0
    return abs(statistic / threshold)


class Series:
    """A bounded time series of (event time, statistic, threshold)."""

    __slots__ = ("t", "stat", "thr", "stride", "skip")

    def __init__(self) -> None:
        self.t: list[float] = []
        self.stat: list[float] = []
        self.thr: list[float] = []
        self.stride = 1
        self.skip = 0

    def add(self, t: float, stat: float, thr: float) -> None:
        """Append a point; past the first halving, each point stands for ``stride`` samples (their peak)."""
        if self.skip == 0:
            self.t.append(t)
            self.stat.append(stat)
            self.thr.append(thr)
        elif exceedance(stat, thr) > exceedance(self.stat[-1], self.thr[-1]):
            self.t[-1], self.stat[-1], self.thr[-1] = t, stat, thr
        self.skip = (self.skip + 1) % self.stride
        if len(self.t) >= MAX_POINTS and self.skip == 0:
            self._halve()

    def _halve(self) -> None:
        """Merge neighbours, keeping the point further past its threshold (peaks survive)."""
        t, s, h = [], [], []
        for i in range(0, len(self.t) - 1, 2):
            j = i if exceedance(self.stat[i], self.thr[i]) >= exceedance(self.stat[i + 1], self.thr[i + 1]) else i + 1
            t.append(self.t[j])
            s.append(self.stat[j])
            h.append(self.thr[j])
        self.t, self.stat, self.thr = t, s, h
        self.stride *= 2

    @property
    def peak(self) -> float:
        return max((exceedance(a, b) for a, b in zip(self.stat, self.thr)), default=0.0)


class StatsTrace:
    """Samples of ``ModelMonitor.stats`` per micro-batch and every detection (see module doc)."""

    def __init__(self) -> None:
        self.series: dict[str, dict[tuple[str, str, str, str], Series]] = {}
        self.invalid: dict[str, dict[str, Series]] = {}          # model -> stream -> cumulative invalid values
        self.invalid_final: dict[str, dict[str, dict[str, list[int]]]] = {}  # model -> stream -> feature -> counts
        self.detections: dict[str, dict[tuple[str, str], list[dict[str, Any]]]] = {}
        self.detections_seen: dict[str, int] = {}
        self.dropped_series: dict[str, int] = {}
        self.stats: dict[str, dict[str, Any]] = {}               # last snapshot per model
        self.first: float | None = None                          # event time of the first and last sample
        self.last: float | None = None
        self.last_event: float | None = None                     # ... of the last sample with new inference events
        self._events = 0

    def attach(self, engine: Any) -> "StatsTrace":
        """Record every detection of ``engine``'s monitors (the alert policy's results are unchanged)."""
        for name, mon in engine.monitors.items():
            policy = getattr(mon, "policy", None)
            observe = getattr(policy, "observe", None)
            if observe is not None:
                policy.observe = self._recorder(name, observe)
        return self

    def _recorder(self, model: str, observe: Any) -> Any:
        per = self.detections.setdefault(model, {})

        def recording(det: Any, now: float) -> Any:
            self.detections_seen[model] = self.detections_seen.get(model, 0) + 1
            rows = per.setdefault((det.signal, det.detector), [])
            if len(rows) < MAX_DETECTIONS:
                rows.append({"ts": float(det.ts), "version": det.version, "deployment": det.deployment,
                             "key": det.key, "statistic": float(det.statistic), "threshold": float(det.threshold)})
            return observe(det, now)
        return recording

    def sample(self, engine: Any, now: float) -> None:
        """Read every model's stats snapshot at event time ``now``."""
        if math.isfinite(now):
            self.first = now if self.first is None else min(self.first, now)
            self.last = now if self.last is None else max(self.last, now)
        events = 0
        for name, mon in engine.monitors.items():
            stats = mon.stats
            self.stats[name] = stats
            events += int(stats.get("events", 0))
            series = self.series.setdefault(name, {})
            for stream, st in (stats.get("streams") or {}).items():
                for signal, detector, key, stat, thr in _pairs(st):
                    k = (stream, signal, detector, key)
                    s = series.get(k)
                    if s is None:
                        if len(series) >= MAX_SERIES:
                            self.dropped_series[name] = self.dropped_series.get(name, 0) + 1
                            continue
                        s = series[k] = Series()
                    s.add(now, stat, thr)
                inv = st.get("invalid") or {}
                if inv:
                    total = float(sum(sum(c) for c in inv.values()))
                    per = self.invalid.setdefault(name, {})
                    if stream in per or len(per) < MAX_SERIES:
                        per.setdefault(stream, Series()).add(now, total, math.nan)
                    self.invalid_final.setdefault(name, {})[stream] = {f: list(c) for f, c in inv.items()}
        if events > self._events and math.isfinite(now):
            self._events, self.last_event = events, now


def _pairs(stream_stats: dict[str, Any]) -> list[tuple[str, str, str, float, float]]:
    """(signal, detector, key, statistic, threshold) of every ``X_statistic`` / ``X_threshold`` pair."""
    out = []
    for section, body in stream_stats.items():
        if not isinstance(body, dict):
            continue
        signal = SECTION_SIGNALS.get(section, section)
        for key, entry in body.items():
            if not isinstance(entry, dict):
                continue
            for name, value in entry.items():
                if name.endswith("_statistic") and f"{name[:-10]}_threshold" in entry:
                    try:
                        out.append((signal, name[:-10], str(key), float(value),
                                    float(entry[f"{name[:-10]}_threshold"])))
                    except (TypeError, ValueError):
                        continue
    return out
