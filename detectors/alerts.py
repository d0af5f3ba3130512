"""Alert policy: deduplication, cool-down, incident grouping, resolution, severity.

Pure logic on event time (the running maximum of event timestamps), never the wall
clock, so a replay of the same events produces the same alerts and ids as the live run,
whatever the micro-batch boundaries.

- *Deduplication*: alerts are per ``(model, version, signal, key)``: while an alert for a key
  (feature, class, label source, trigger) is open, further detections of that key are
  absorbed (counted). A detection on *another* key raises its own alert at once, so one
  open alert (say a false alarm on one feature) can never mask an incident on others.
- *Resolution*: an open alert resolves at the first event whose time is at least
  ``resolve_after_quiet_seconds`` after its last detection (the key returned to normal).
- *Cool-down*: after a resolution, detections for the same dedup key are suppressed for
  ``cooldown_seconds`` (flapping signals do not page repeatedly).
- *Grouping*: alerts of the same model and version share one ``incident_id`` while any alert
  of that version's incident is open, or when raised within ``group_window_seconds`` of the
  incident's first alert; a control-topic reader sees a drift spreading over keys as one
  incident with one alert per key.
- *Severity*: ``page`` for signals in ``page_signals``, else ``ticket``.

>>> from detectors.spec import AlertPolicySpec
>>> from detectors.detection import Detection
>>> policy = AlertPolicy("m", AlertPolicySpec())
>>> d = Detection("trigger", "p_class_given_trigger", "m", "v1", "stable", "t", 9.0, 4.0,
...               {}, {}, "e1", 1, 100.0, "page")
>>> [m.to_dict()["kind"] for m in policy.observe(d, now=100.0)]
['alert']
>>> policy.observe(d, now=101.0)
[]
>>> other = Detection("trigger", "p_class_given_trigger", "m", "v1", "stable", "u", 9.0, 4.0,
...                   {}, {}, "e3", 3, 102.0, "page")
>>> [(a.to_dict()["key"], a.incident_id == policy.alert_id_for("v1", "trigger", "t")) for a in policy.observe(other, now=102.0)]
[('u', True)]
>>> [m.to_dict()["key"] for m in policy.advance(800.0, "e2", 2, 800.0)]
['t', 'u']
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from detectors.detection import Detection, _num
from detectors.ids import SCHEMA, stable_id
from detectors.spec import AlertPolicySpec

@dataclass(slots=True)
class Alert:
    """A raised alert (first detection of a dedup key), carrying that detection as evidence."""

    id: str
    incident_id: str
    detection: Detection

    @property
    def severity(self) -> str:
        return self.detection.severity

    def to_dict(self) -> dict[str, Any]:
        d = self.detection
        return {
            "schema": SCHEMA, "kind": "alert", "id": self.id, "incident_id": self.incident_id,
            "model": d.model, "version": d.version, "deployment": d.deployment, "signal": d.signal,
            "key": d.key, "severity": d.severity, "detector": d.detector,
            "statistic": _num(d.statistic), "threshold": _num(d.threshold),
            "reference": d.reference, "current": d.current,
            "event_id": d.event_id, "position": d.position, "ts": d.ts,
        }


@dataclass(slots=True)
class Resolution:
    """An open alert whose signal stayed quiet long enough."""

    id: str
    alert_id: str
    incident_id: str
    model: str
    version: str
    deployment: str
    signal: str
    detections: int
    keys: list[str]
    opened_ts: float
    last_detection_ts: float
    event_id: str
    position: int
    ts: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA, "kind": "resolve", "id": self.id, "alert_id": self.alert_id,
            "incident_id": self.incident_id, "model": self.model, "version": self.version,
            "deployment": self.deployment, "signal": self.signal, "key": self.keys[0] if self.keys else "",
            "detections": self.detections, "keys": list(self.keys), "opened_ts": self.opened_ts,
            "last_detection_ts": self.last_detection_ts,
            "event_id": self.event_id, "position": self.position, "ts": self.ts,
        }


@dataclass(slots=True)
class _Open:
    alert_id: str
    incident_id: str
    deployment: str
    opened_ts: float
    last_ts: float  # event time (running max) of the last absorbed detection
    count: int
    keys: list[str] = field(default_factory=list)


DedupKey = tuple[str, str, str]  # (version, signal, key)


class AlertPolicy:
    """Turns detections of one model into alerts and resolutions (see module doc)."""

    def __init__(self, model: str, spec: AlertPolicySpec) -> None:
        self.model = model
        self.spec = spec
        self._page = frozenset(spec.page_signals)
        self._open: dict[DedupKey, _Open] = {}
        self._cooldown_until: dict[DedupKey, float] = {}
        self._incident: dict[str, tuple[str, float]] = {}  # version -> (incident id, start time)
        self.suppressed = 0
        self.raised = 0
        self.resolved = 0

    def severity(self, signal: str) -> str:
        return "page" if signal in self._page else "ticket"

    @property
    def open_count(self) -> int:
        return len(self._open)

    @property
    def open_alerts(self) -> dict[DedupKey, str]:
        """``(version, signal, key) -> alert id`` of currently open alerts."""
        return {k: o.alert_id for k, o in self._open.items()}

    def next_deadline(self) -> float:
        """Earliest event time at which an open alert resolves (inf if none)."""
        quiet = self.spec.resolve_after_quiet_seconds
        return min((o.last_ts + quiet for o in self._open.values()), default=float("inf"))

    def advance(self, now: float, event_id: str, position: int, ts: float) -> list[Resolution]:
        """Resolve the open alerts that have been quiet long enough at event time ``now``."""
        quiet = self.spec.resolve_after_quiet_seconds
        out: list[Resolution] = []
        for key in sorted(k for k, o in self._open.items() if now >= o.last_ts + quiet):
            o = self._open.pop(key)
            self._cooldown_until[key] = now + self.spec.cooldown_seconds
            self.resolved += 1
            out.append(Resolution(
                id=stable_id(self.model, key[0], key[1], "resolve", o.alert_id, position),
                alert_id=o.alert_id, incident_id=o.incident_id, model=self.model, version=key[0],
                deployment=o.deployment, signal=key[1], detections=o.count, keys=[key[2]],
                opened_ts=o.opened_ts, last_detection_ts=o.last_ts, event_id=event_id,
                position=position, ts=ts))
        return out

    def alert_id_for(self, version: str, signal: str, key: str | None = None) -> str | None:
        """Id of the open alert of ``(version, signal, key)``; with ``key=None``, of any key
        (the earliest raised) of that signal."""
        if key is not None:
            o = self._open.get((version, signal, key))
            return None if o is None else o.alert_id
        ids = sorted((o.opened_ts, o.alert_id) for k, o in self._open.items() if k[0] == version and k[1] == signal)
        return ids[0][1] if ids else None

    def observe(self, det: Detection, now: float) -> list[Alert]:
        """Feed one detection at event time ``now``; returns the alert it raises, if any."""
        key = (det.version, det.signal, det.key)
        o = self._open.get(key)
        if o is not None:
            o.count += 1
            o.last_ts = max(o.last_ts, now)
            return []
        until = self._cooldown_until.get(key)
        if until is not None:
            if now < until:
                self.suppressed += 1
                return []
            del self._cooldown_until[key]
        alert_id = stable_id(self.model, det.version, det.signal, det.key, det.position)
        inc = self._incident.get(det.version)
        if inc is not None and (now - inc[1] <= self.spec.group_window_seconds
                                or any(o.incident_id == inc[0] for o in self._open.values())):
            incident_id = inc[0]
        else:
            incident_id = alert_id
            self._incident[det.version] = (alert_id, now)
        self._open[key] = _Open(alert_id, incident_id, det.deployment, now, now, 1, [det.key])
        self.raised += 1
        return [Alert(alert_id, incident_id, det)]

    def clamp_times(self, limit: float) -> bool:
        """Pull every event time the policy remembers back to ``limit``; True if any was later.

        Repairs state whose event clock was pushed into the future (cooldowns that would never end).
        """
        changed = False
        for o in self._open.values():
            if o.last_ts > limit or o.opened_ts > limit:
                o.last_ts, o.opened_ts, changed = min(o.last_ts, limit), min(o.opened_ts, limit), True
        for k, t in list(self._cooldown_until.items()):
            if t > limit:
                self._cooldown_until[k], changed = limit, True
        for v, (i, t) in list(self._incident.items()):
            if t > limit:
                self._incident[v], changed = (i, limit), True
        return changed

    # -- state ----------------------------------------------------------------------------
    def to_state(self) -> dict[str, Any]:
        return {
            "open": [[k[0], k[1], k[2], o.alert_id, o.incident_id, o.deployment, o.opened_ts, o.last_ts,
                      o.count] for k, o in sorted(self._open.items())],
            "cooldown": [[k[0], k[1], k[2], t] for k, t in sorted(self._cooldown_until.items())],
            "incident": [[v, i, t] for v, (i, t) in sorted(self._incident.items())],
            "counts": [self.suppressed, self.raised, self.resolved],
        }

    def load_state(self, st: dict[str, Any]) -> None:
        from detectors.state import check_list, check_str, check_float, check_int
        self._open = {}
        for row in check_list(st.get("open"), "alerts.open"):
            row = check_list(row, "alerts.open[]", 9)
            key = check_str(row[2], "key")
            self._open[(check_str(row[0], "version"), check_str(row[1], "signal"), key)] = _Open(
                check_str(row[3], "alert id"), check_str(row[4], "incident id"), check_str(row[5], "deployment"),
                check_float(row[6], "opened"), check_float(row[7], "last"), check_int(row[8], "count"), [key])
        self._cooldown_until = {}
        for row in check_list(st.get("cooldown"), "alerts.cooldown"):
            row = check_list(row, "alerts.cooldown[]", 4)
            self._cooldown_until[(check_str(row[0], "version"), check_str(row[1], "signal"),
                                  check_str(row[2], "key"))] = check_float(row[3], "cooldown")
        self._incident = {}
        for row in check_list(st.get("incident"), "alerts.incident"):
            row = check_list(row, "alerts.incident[]", 3)
            self._incident[check_str(row[0], "version")] = (check_str(row[1], "incident"),
                                                            check_float(row[2], "incident ts"))
        counts = check_list(st.get("counts"), "alerts.counts", 3)
        self.suppressed, self.raised, self.resolved = (check_int(c, "count") for c in counts)
