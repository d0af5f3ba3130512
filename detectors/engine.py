"""Engine: the one entry point used by both the Kafka worker and replay.

:class:`ModelMonitor` holds all state of one model: a
:class:`~detectors.deployment.DeploymentMonitor` per listed ``(version, deployment)``,
label streams, per-source disagreement, the canary judge and the alert policy. It turns
micro-batches of events into control messages (:class:`~detectors.alerts.Alert`,
:class:`~detectors.alerts.Resolution`, :class:`~detectors.canary.RollbackDecision`).
Results do not depend on micro-batch boundaries, and ids are derived from model, signal
and the position of the triggering event, so a replay produces the same messages as the
live run.

Ownership: sequential detectors do not merge, so one model's state must be updated by one
worker seeing that model's events in order (the worker rekeys events by model).

>>> from detectors.spec import MonitorSpec, ModelSpec, FeatureSpec
>>> from detectors.events import InferenceEvent
>>> spec = MonitorSpec(models=[ModelSpec(name="m", classes=["a", "b"], versions=["v1"],
...                                      features=[FeatureSpec(name="x", type="numeric")])])
>>> eng = Engine(spec)
>>> msgs = eng.process_inference([InferenceEvent("e1", 1.0, "m", "v9", "stable", {"x": 1.0}, "a", 0.9, position=7)])
>>> [(m.to_dict()["kind"], m.to_dict()["signal"]) for m in msgs]
[('alert', 'version_integrity')]
>>> ModelMonitor.from_bytes(spec.models[0], spec.calibration, spec.alerts, eng.monitors["m"].to_bytes()).events
1
"""
from __future__ import annotations

import functools
import hashlib
from operator import attrgetter
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, Union

import numpy as np

from detectors.alerts import Alert, AlertPolicy, Resolution
from detectors.canary import CanaryJudge, RollbackDecision, rollback_key
from detectors.columns import confidence_column
from detectors.deployment import DeploymentMonitor
from detectors.detection import SIGNALS, Detection
from detectors.errors import StateFormatError
from detectors.events import DEPLOYMENTS, InferenceEvent, JoinedLabel
from detectors.ids import stable_id
from detectors.labels import LabelStream, SourceDisagreement
from detectors.manifest import Manifest, RegistryEntry
from detectors.masks import all_true
from detectors.profile import ReferenceProfile, prediction_codes
from detectors.signals import Hit
from detectors.spec import AlertPolicySpec, CalibrationSpec, ModelSpec, MonitorSpec
from detectors.state import (check_dict, check_float, check_int, check_list, check_str, decode_state, enc_float,
                             encode_state)

ControlMessage = Union[Alert, RollbackDecision, Resolution]
_TS = attrgetter("ts")
_VD = attrgetter("model_version", "deployment")
_DIGEST = attrgetter("artifact_digest")
_EVENT_ID = attrgetter("event_id")
_POSITION = attrgetter("position")
_LABEL_TS = attrgetter("label.ts")
_LABEL_ID = attrgetter("label.event_id")
_LABEL_POSITION = attrgetter("label.position")
STATE_KIND = "driftline.model_monitor"
#: stable's own CUSUM on a canary detection's key and side at least this far to its threshold: the
#: drift is one both versions show (a canary judged against stable's reference crossed first), not
#: grounds for a rollback. In control a CUSUM sits that high with probability about ARL^(-1/4).
SHARED_DRIFT = 0.25
MAX_NAME = 200
OTHER = "<other>"


def spec_fingerprint(spec: ModelSpec, calibration: CalibrationSpec) -> str:
    """Hash of what detector state depends on (the alert policy may change freely)."""
    return hashlib.sha256((spec.model_dump_json() + calibration.model_dump_json()).encode()).hexdigest()[:32]


_F = TypeVar("_F", bound=Callable[..., Any])


def _no_panic(method: _F) -> _F:
    """Surface a panic of river's compiled code as a RuntimeError.

    pyo3 raises ``PanicException``, a BaseException, which ``except Exception`` (the worker's
    isolation of a failing record) does not catch: one panicking detector would end the process.
    """
    @functools.wraps(method)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except Exception:
            raise
        except BaseException as exc:
            if isinstance(exc, (KeyboardInterrupt, SystemExit, GeneratorExit)):
                raise
            raise RuntimeError(f"a compiled detector failed: {type(exc).__name__}: {exc}") from None
    return guarded  # type: ignore[return-value]

class ModelMonitor:
    """All detection state for one model (see module doc)."""

    def __init__(self, spec: ModelSpec, calibration: CalibrationSpec, alerts: AlertPolicySpec,
                 max_tracked_versions: int = 16, registry: bool = False) -> None:
        self.spec = spec
        self.calibration = calibration
        self.alerts = alerts
        self.max_tracked = max_tracked_versions
        self.class_index = {c: i for i, c in enumerate(spec.classes)}
        self.listed = frozenset(spec.versions)
        # with a registry, its manifest decides for every version it names; the static list
        # only for the others (see apply_registry)
        self.manifest: Manifest | None = Manifest(spec.name) if registry else None
        self.fingerprint = spec_fingerprint(spec, calibration)
        self.reference: ReferenceProfile | None = None
        self.streams: dict[tuple[str, str], DeploymentMonitor] = {}
        self.label_streams: dict[tuple[str, str], LabelStream] = {}
        self.sources = SourceDisagreement(calibration)
        self.canary = CanaryJudge(len(spec.classes) + 1, spec.canary, calibration.false_alarms_per_million,
                                  tuple(calibration.cusum_drifts))
        self._rollback_signals = frozenset(spec.canary.rollback_signals)
        self.policy = AlertPolicy(spec.name, alerts)
        self.now = float("-inf")
        self.unlisted: dict[str, int] = {}     # unlisted version (or "deployment:<name>") -> events
        self.stable_seen: str | None = None
        self.rolled_back: list[str] = []
        self.events = 0
        self.labels = 0
        self.unlisted_labels = 0
        self.detections = {s: 0 for s in SIGNALS}
        self.detector_counts: dict[str, int] = {}  # "signal/detector" -> detections (not persisted)
        self.stream_detections: dict[str, dict[str, int]] = {}  # "version/deployment" -> signal -> count

    # -- configuration ---------------------------------------------------------------------
    def set_reference(self, profile: ReferenceProfile) -> None:
        """Use a profile made offline (``driftline profile``) for every stream of this model.

        Streams still learning their reference switch to it at once; armed streams keep theirs.
        """
        self.reference = profile
        for key, dm in list(self.streams.items()):
            if not dm.armed:
                fresh = DeploymentMonitor(self.spec, self.calibration, profile)
                fresh.n, fresh.invalid_total = dm.n, dm.invalid_total
                self.streams[key] = fresh

    def _reference_for(self, deployment: str) -> ReferenceProfile | None:
        """A file profile if loaded; for canary/shadow streams, the stable stream's learned profile.

        A canary is judged against what stable looked like, so a version that is bad from
        its first event still shows as drift (its own first events would hide that).
        """
        if self.reference is not None:
            return self.reference
        if deployment != "stable" and self.stable_version is not None:
            st = self.streams.get((self.stable_version, "stable"))
            if st is not None and st.profile is not None:
                return st.profile
        return None

    @property
    def stable_version(self) -> str | None:
        return self.spec.stable_version or self.stable_seen

    # -- processing ------------------------------------------------------------------------
    @_no_panic
    def process_inference(self, events: Sequence[InferenceEvent]) -> list[ControlMessage]:
        """Process a micro-batch of this model's inference events, in source order."""
        n = len(events)
        if n == 0:
            return []
        cut = self._inheritance_cut(events)
        if cut:  # results must not depend on batch cuts: see _inheritance_cut
            return self.process_inference(events[:cut]) + self.process_inference(events[cut:])
        self.events += n
        preds = prediction_codes(events, self.class_index)
        conf = confidence_column([e.confidence for e in events])
        groups = _groups(list(map(_VD, events)))
        hits: list[tuple[Hit, int, str, str]] = []
        shared: dict[tuple[int, str, str], float | None] = {}
        # stable streams last: a canary detection that could roll the canary back is then judged
        # against stable's CUSUM as it stood at that event (see _rolls_back)
        for (v, d), idxs in sorted(groups.items(), key=lambda g: g[0][1] == "stable"):
            if v not in self.listed or d not in DEPLOYMENTS:
                hits.extend(self._unlisted(v, d, idxs if idxs is not None else np.arange(n)))
                continue
            dm = self.streams.get((v, d))
            if dm is None:
                dm = self.streams[(v, d)] = DeploymentMonitor(self.spec, self.calibration, self._reference_for(d))
            probes = self._stable_probes(hits) if d == "stable" and v == self.stable_version else []
            if idxs is None and not probes:
                for h in dm.process(events, preds, conf):
                    hits.append((h, h[7], v, d))
            else:
                rows = np.arange(n) if idxs is None else idxs
                lo = 0
                for gi, sig, key, current in probes + [(n, None, None, None)]:
                    hi = int(rows.searchsorted(gi, side="left"))
                    if hi > lo:  # the stable events before this canary detection (all that is left, at the end)
                        seg = rows[lo:hi]
                        for h in dm.process([events[i] for i in seg], preds[seg], conf[seg]):
                            hits.append((h, int(seg[h[7]]), v, d))
                        lo = hi
                    if sig is not None:
                        shared[(gi, sig, key)] = dm.exceedance(sig, key, current)
            if d == "stable":
                self.stable_seen = v
        if self.manifest is not None and self.manifest.expected_digests:
            hits.extend(self._digest_hits(events, groups))
        if self.spec.canary.enabled and (self.canary.version is not None or any(d == "canary" for _, d in groups)):
            hits.extend(self._canary([e.model_version for e in events], [e.deployment for e in events], preds, conf))
        stable = self.stable_version
        if stable is not None and (stable, "stable") not in groups:  # stable's state is as of every event here
            st = self.streams.get((stable, "stable"))
            for gi, sig, key, current in self._stable_probes(hits):
                shared[(gi, sig, key)] = None if st is None else st.exceedance(sig, key, current)
        return self._emit(hits, events, _EVENT_ID, _POSITION, np.fromiter(map(_TS, events), dtype=np.float64, count=n),
                          shared)

    def _stable_probes(self, hits: list[tuple[Hit, int, str, str]]) -> list[tuple[int, str, str, dict]]:
        """Canary detections whose rollback depends on stable's own CUSUM at their event: (event
        index, signal, key, evidence), in event order."""
        allowed = self._rollback_signals
        out = [(gi, h[0], h[2], h[6]) for h, gi, v, d in hits
               if d == "canary" and v in self.listed and h[0] != "canary_divergence" and isinstance(h[6], dict)
               and (h[0] in allowed or f"{h[0]}/{h[1]}" in allowed)]
        out.sort(key=lambda p: p[0])
        return out

    def _inheritance_cut(self, events: Sequence[InferenceEvent]) -> int:
        """Index of the first event (after the first) that opens a canary/shadow stream while the
        stable stream is still learning, else 0.

        Such a stream inherits the stable profile learned before its first event; processing the
        batch's stable events first could arm stable "too early" and hand the new stream a profile
        it would not get in an event-by-event run. Splitting the batch there keeps results
        independent of batch cuts.
        """
        if self.reference is not None:
            return 0
        st = self.streams.get((self.stable_version, "stable")) if self.stable_version is not None else None
        if st is not None and st.armed:
            return 0
        streams, listed = self.streams, self.listed
        for i in range(1, len(events)):
            e = events[i]
            if (e.deployment != "stable" and e.deployment in DEPLOYMENTS and e.model_version in listed
                    and (e.model_version, e.deployment) not in streams):
                return i
        return 0

    def _digest_hits(self, events: Sequence[InferenceEvent],
                     groups: dict[tuple[str, str], np.ndarray | None]) -> list[tuple[Hit, int, str, str]]:
        """Events whose artifact digest is not the one registered for their version.

        Events without a digest are not judged. A detection on the first wrong-digest event of a
        version, then one per ``calibration.window`` of them (as for unlisted versions).
        """
        manifest = self.manifest
        expected = manifest.expected_digests
        out: list[tuple[Hit, int, str, str]] = []
        for (v, d), idxs in groups.items():
            exp = expected.get(v)
            if exp is None or d not in DEPLOYMENTS:
                continue
            if idxs is None:
                digs = list(map(_DIGEST, events))
                where = None
            else:
                where = idxs.tolist()
                digs = [events[i].artifact_digest for i in where]
            if digs.count(exp) + digs.count(None) == len(digs):  # the common case: all as registered
                continue
            bad = [j for j, x in enumerate(digs) if x is not None and x != exp]
            c0 = manifest.count_mismatches(v, len(bad))
            stage = manifest.entries[v].stage
            for j in range((-c0) % self.calibration.window, len(bad), self.calibration.window):
                k = bad[j]
                gi = k if where is None else where[k]
                out.append((("version_integrity", "digest_mismatch", v[:MAX_NAME], float(c0 + j + 1), 0.0,
                             {"expected_digest": exp, "stage": stage},
                             {"observed_digest": digs[k], "version": v[:MAX_NAME], "deployment": d,
                              "events": c0 + j + 1}, gi), gi, v, d))
        return out

    def apply_registry(self, entries: Sequence[RegistryEntry], max_age: float | None = None) -> list[str | None]:
        """Apply verified registry entries of this model in order; per entry None (accepted) or why not.

        Registry entries do not move the event clock; staleness is judged against it
        (``max_age`` seconds). Streams of versions that stop serving are dropped.
        """
        if self.manifest is None:
            return ["registry_disabled"] * len(entries)
        out = [self.manifest.apply(e, self.now, max_age) for e in entries]
        if any(r is None for r in out):
            self._relist()
        return out

    def _relist(self) -> None:
        """Recompute the allow-list from the manifest (and the static list for versions it does not name)."""
        m = self.manifest
        self.listed = (frozenset(self.spec.versions) - m.known()) | m.serving()
        for table in (self.streams, self.label_streams):
            for key in [k for k in table if k[0] not in self.listed]:
                del table[key]

    def _unlisted(self, v: str, d: str, idxs: np.ndarray) -> list[tuple[Hit, int, str, str]]:
        name = (v if d in DEPLOYMENTS else f"deployment:{d}")[:MAX_NAME]
        if name not in self.unlisted and len(self.unlisted) >= self.max_tracked:
            name = OTHER
        c0 = self.unlisted.get(name, 0)
        self.unlisted[name] = c0 + idxs.size
        w = self.calibration.window
        out = []
        for j in range((-c0) % w, idxs.size, w):
            ver = v[:MAX_NAME] if name != OTHER else OTHER
            out.append((("version_integrity", "unlisted_version" if d in DEPLOYMENTS else "unknown_deployment", name,
                         float(c0 + j + 1), 0.0, {"listed_versions": list(self.spec.versions) if self.manifest is None
                                                   else sorted(self.listed)},
                         {"version": v[:MAX_NAME], "deployment": d[:MAX_NAME], "events": c0 + j + 1},
                         int(idxs[j])), int(idxs[j]), ver, d[:MAX_NAME]))
        return out

    def _canary(self, vers, deps, preds, conf) -> list[tuple[Hit, int, str, str]]:
        """Feed the canary judge from the first event of each canary version on, whatever the
        batch cuts: stable traffic counts once a canary runs, even in batches without canary events."""
        out: list[tuple[Hit, int, str, str]] = []
        lo, n = 0, len(vers)
        while lo < n:
            cur = self.canary.version
            j = next((i for i in range(lo, n) if deps[i] == "canary" and vers[i] != cur and vers[i] in self.listed), n)
            if cur is not None and j > lo:
                out.extend(self._canary_run(cur, vers[lo:j], deps[lo:j], preds[lo:j], conf[lo:j], lo))
            if j == n:
                break
            self.canary.start(vers[j])
            lo = j
        return out

    def _canary_run(self, version: str, vers, deps, preds, conf, offset: int) -> list[tuple[Hit, int, str, str]]:
        stable = self.stable_version
        m = len(vers)
        is_c = np.fromiter((d == "canary" and v == version for v, d in zip(vers, deps)), dtype=bool, count=m)
        is_s = np.fromiter((d == "stable" and v == stable for v, d in zip(vers, deps)), dtype=bool, count=m)
        return [(h[:7] + (h[7] + offset,), h[7] + offset, version, "canary")
                for h in self.canary.process(is_c, is_s, preds, conf)]

    @_no_panic
    def process_labels(self, labels: Sequence[JoinedLabel]) -> list[ControlMessage]:
        """Process a micro-batch of joined labels of this model, in source order."""
        n = len(labels)
        if n == 0:
            return []
        self.labels += n
        other = len(self.class_index)
        get = self.class_index.get
        lab = np.fromiter((get(j.label.label, other) for j in labels), dtype=np.int64, count=n)
        err = np.fromiter((j.label.label != j.prediction for j in labels), dtype=np.int8, count=n)
        vers = [j.model_version for j in labels]
        deps = [j.deployment for j in labels]
        hits: list[tuple[Hit, int, str, str]] = []
        # per-source disagreement sees every label; label drift and performance only the first
        # label of each event (a second source's label of the same event is not new evidence)
        first = np.ones(n, dtype=bool)
        add, recent, tracked = self.sources.add, self.sources.recent, self.sources.tracked
        src_rows: list[int] = []
        src_names: list[str] = []
        for i, j in enumerate(labels):
            if j.model_version in self.listed:
                first[i] = j.label.event_id not in recent
                src_rows.append(i)
                for h in add(j.label.event_id, j.label.source, j.label.label, bool(err[i]), i):
                    hits.append((h, i, j.model_version, j.deployment))
                src_names.append(tracked(j.label.source))
        if src_rows:
            rows = np.asarray(src_rows, dtype=np.int64)
            for h in self.sources.sequential(src_names, err[rows], rows):
                hits.append((h, h[7], vers[h[7]], deps[h[7]]))
        for (v, d), idxs in _groups(list(zip(vers, deps))).items():
            if v not in self.listed or d not in DEPLOYMENTS:
                self.unlisted_labels += n if idxs is None else idxs.size
                continue
            ls = self.label_streams.get((v, d))
            if ls is None:
                ls = self.label_streams[(v, d)] = LabelStream(self.spec.classes, self.spec.label_reference_size,
                                                              self.calibration)
            sel = np.arange(n) if idxs is None else idxs
            sel = sel[first[sel]]
            hits.extend((h, int(sel[h[7]]), v, d) for h in ls.process(lab[sel], err[sel]))
        if self.spec.canary.enabled and self.canary.version is not None:
            cv, sv = self.canary.version, self.stable_version
            is_c = np.fromiter((d == "canary" and v == cv for v, d in zip(vers, deps)), dtype=bool, count=n)
            is_s = np.fromiter((d == "stable" and v == sv for v, d in zip(vers, deps)), dtype=bool, count=n)
            hits.extend((h, h[7], cv, "canary") for h in self.canary.process_labels(is_c, is_s, err))
        return self._emit(hits, labels, _LABEL_ID, _LABEL_POSITION,
                          np.fromiter(map(_LABEL_TS, labels), dtype=np.float64, count=n))

    def _emit(self, hits: list[tuple[Hit, int, str, str]], items: Sequence[Any], get_id: Any, get_pos: Any,
              ts: np.ndarray, shared: dict[tuple[int, str, str], float | None] | None = None) -> list[ControlMessage]:
        """Hits -> detections -> alert policy (with event-time resolutions) -> rollbacks; ``shared``:
        stable's exceedance at canary detections (see :meth:`_rolls_back`)."""
        n = ts.size
        policy = self.policy
        if not all_true(np.isfinite(ts)):  # a broken timestamp must not poison event time
            ts = np.where(np.isfinite(ts), ts, np.nan)
            now_arr = np.fmax.accumulate(np.concatenate(([self.now], ts)))[1:]
            ts = np.where(np.isnan(ts), np.where(np.isfinite(now_arr), now_arr, 0.0), ts)
        if not hits and not policy.open_count:
            self.now = max(self.now, float(ts.max()))
            return []
        now_arr = np.maximum.accumulate(np.concatenate(([self.now], ts)))[1:]
        out: list[ControlMessage] = []

        def resolve_until(i: int) -> None:
            while True:
                d = policy.next_deadline()
                if d == float("inf"):
                    return
                j = int(np.searchsorted(now_arr, d, side="left"))
                if j > i or j >= n:
                    return
                out.extend(policy.advance(float(now_arr[j]), get_id(items[j]), get_pos(items[j]), float(ts[j])))

        hits.sort(key=lambda h: h[1])
        for h, gi, v, d in hits:
            resolve_until(gi)
            det = Detection(h[0], h[1], self.spec.name, v, d, h[2], float(h[3]), float(h[4]), h[5], h[6],
                            get_id(items[gi]), get_pos(items[gi]), float(ts[gi]), policy.severity(h[0]))
            self.detections[det.signal] += 1
            dk = f"{det.signal}/{det.detector}"
            self.detector_counts[dk] = self.detector_counts.get(dk, 0) + 1
            sk = f"{v}/{d}"
            if sk in self.stream_detections or len(self.stream_detections) < 4 * self.max_tracked + 3 * len(self.listed):
                per = self.stream_detections.setdefault(sk, {})
                per[det.signal] = per.get(det.signal, 0) + 1
            alerts = policy.observe(det, float(now_arr[gi]))
            out.extend(alerts)
            if d == "canary" and v in self.listed and self._rolls_back(
                    det, None if shared is None else shared.get((gi, det.signal, det.key))):
                alert_id = alerts[0].id if alerts else policy.alert_id_for(v, det.signal, det.key)
                if alert_id is not None:
                    out.extend(self._rollback(det, alert_id))
        resolve_until(n - 1)
        self.now = float(now_arr[-1])
        return out

    def _rolls_back(self, det: Detection, stable_exceedance: float | None = None) -> bool:
        """Whether a detection on the canary deployment justifies rolling the canary back.

        A ``canary_divergence`` detection compares the canary with stable over the same period,
        so it qualifies on its own. Any other signal listed in ``CanaryPolicy.rollback_signals``
        (as ``signal`` or ``signal/detector``) qualifies at page severity, and only while the
        stable version has no open alert of the same signal and ``stable_exceedance`` (stable's own
        CUSUM on the same key, score and side, at the canary detection's event) is below
        ``SHARED_DRIFT``: a drift both versions show (the traffic changed, or labels did) is not the
        canary's fault, even when the canary, judged against stable's reference, crosses first.
        Stable's statistic is taken at that event (its events are processed up to it), so the
        decision does not depend on how batches are cut.
        """
        if det.detector == "digest_mismatch":  # the canary is not serving the registered artifact
            return det.severity == "page"
        allowed = self._rollback_signals
        if det.signal not in allowed and f"{det.signal}/{det.detector}" not in allowed:
            return False
        if det.signal == "canary_divergence":
            return True
        stable = self.stable_version
        if det.severity != "page":
            return False
        if stable is None:
            return True
        if self.policy.alert_id_for(stable, det.signal) is not None:
            return False
        return stable_exceedance is None or stable_exceedance < SHARED_DRIFT

    def _rollback(self, det: Detection, alert_id: str) -> list[RollbackDecision]:
        stable = self.stable_version
        if stable is None or det.version == stable or det.version in self.rolled_back:
            return []
        self.rolled_back.append(det.version)
        return [RollbackDecision(
            id=stable_id(self.spec.name, det.version, "rollback", det.position),
            idempotency_key=rollback_key(self.spec.name, det.version, stable), model=self.spec.name,
            canary_version=det.version, stable_version=stable,
            reason=f"{det.signal}/{det.detector} on canary ({det.key or 'overall'}): "
                   f"statistic {det.statistic:.4g} vs threshold {det.threshold:.4g}",
            evidence=[alert_id], event_id=det.event_id, position=det.position, ts=det.ts,
            details={"signal": det.signal, "detector": det.detector, "key": det.key,
                     "reference": det.reference, "current": det.current})]

    def clamp_clock(self, limit: float) -> bool:
        """Pull the event clock and the alert policy's times back to ``limit``; True if they were later.

        For state saved while a far-future timestamp held the clock (before such events were
        refused at decoding): its alerts would stay muted until that time.
        """
        changed = self.policy.clamp_times(limit)
        if self.now > limit:
            self.now, changed = limit, True
        return changed

    # -- statistics -------------------------------------------------------------------------
    @property
    def stats(self) -> dict[str, Any]:
        """Snapshot for metrics: per stream detector statistics, detection and alert counts."""
        return {
            "model": self.spec.name, "events": self.events, "labels": self.labels,
            "unlisted_labels": self.unlisted_labels, "unlisted": dict(self.unlisted),
            "detections": dict(self.detections),
            "detections_by_stream": {k: dict(v) for k, v in self.stream_detections.items()},
            "alerts": {"raised": self.policy.raised, "suppressed": self.policy.suppressed,
                       "resolved": self.policy.resolved, "open": len(self.policy.open_alerts)},
            "streams": {f"{v}/{d}": dm.stats() for (v, d), dm in sorted(self.streams.items())},
            "label_streams": {f"{v}/{d}": {"reference_ready": ls.ready, "window_fill": ls.fill}
                              for (v, d), ls in sorted(self.label_streams.items())},
            "rolled_back": list(self.rolled_back),
            **({"manifest": self.manifest.describe()} if self.manifest is not None else {}),
        }

    # -- state ------------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """Versioned, checksummed, compressed JSON state (see :mod:`detectors.state`)."""
        return encode_state({
            "kind": STATE_KIND, "model": self.spec.name,
            "fingerprint": self.fingerprint,
            "reference": self.reference.to_dict() if self.reference else None,
            "streams": [[v, d, dm.to_state()] for (v, d), dm in sorted(self.streams.items())],
            "label_streams": [[v, d, ls.to_state()] for (v, d), ls in sorted(self.label_streams.items())],
            "sources": self.sources.to_state(), "canary": self.canary.to_state(),
            "policy": self.policy.to_state(), "now": enc_float(self.now), "unlisted": self.unlisted,
            "stable_seen": self.stable_seen, "rolled_back": self.rolled_back,
            "counters": [self.events, self.labels, self.unlisted_labels],
            "detections": self.detections,
            # one order whatever order detections came in (a restored monitor reads them back in this one)
            "detections_by_stream": {k: {s: v[s] for s in SIGNALS if s in v}
                                     for k, v in sorted(self.stream_detections.items())},
            **({"manifest": self.manifest.to_state()} if self.manifest is not None else {}),
        })

    @classmethod
    def from_bytes(cls, spec: ModelSpec, calibration: CalibrationSpec, alerts: AlertPolicySpec, data: bytes,
                   max_tracked_versions: int = 16, registry: bool = False) -> "ModelMonitor":
        """Restore from :meth:`to_bytes`; raises :class:`StateFormatError` on anything invalid."""
        doc = decode_state(data)
        try:
            return cls._load(spec, calibration, alerts, doc, max_tracked_versions, registry)
        except StateFormatError:
            raise
        except (KeyError, TypeError, ValueError, IndexError, AttributeError, OverflowError) as exc:
            raise StateFormatError(f"invalid state document: {type(exc).__name__}: {exc}") from None

    @classmethod
    def _load(cls, spec, calibration, alerts, doc, max_tracked, registry=False) -> "ModelMonitor":
        if doc.get("kind") != STATE_KIND:
            raise StateFormatError("not a model monitor state")
        if doc.get("model") != spec.name:
            raise StateFormatError(f"state is for model {doc.get('model')!r}, not {spec.name!r}")
        m = cls(spec, calibration, alerts, max_tracked, registry)
        if doc.get("fingerprint") != m.fingerprint:
            raise StateFormatError("state was made for a different model spec or calibration")
        if m.manifest is not None and doc.get("manifest") is not None:
            m.manifest.load_state(doc["manifest"])
            m._relist()
        if doc.get("reference") is not None:
            from detectors.errors import ProfileFormatError
            try:
                m.reference = ReferenceProfile.from_dict(spec, doc["reference"])
            except ProfileFormatError as exc:
                raise StateFormatError(f"reference: {exc}") from None
        for row in check_list(doc.get("streams"), "streams"):
            v, d, st = check_list(row, "stream", 3)
            if check_str(v, "version") not in m.listed or check_str(d, "deployment") not in DEPLOYMENTS:
                raise StateFormatError(f"stream {v}/{d} is not a listed version/deployment")
            m.streams[(v, d)] = DeploymentMonitor.from_state(spec, calibration, st)
        for row in check_list(doc.get("label_streams"), "label_streams"):
            v, d, st = check_list(row, "label stream", 3)
            if check_str(v, "version") not in m.listed or check_str(d, "deployment") not in DEPLOYMENTS:
                raise StateFormatError(f"label stream {v}/{d} is not a listed version/deployment")
            ls = LabelStream(spec.classes, spec.label_reference_size, calibration)
            ls.load_state(st)
            m.label_streams[(v, d)] = ls
        m.sources.load_state(doc.get("sources"))
        m.canary.load_state(doc.get("canary"))
        m.policy.load_state(check_dict(doc.get("policy"), "policy"))
        m.now = check_float(doc.get("now"), "now")
        unl = check_dict(doc.get("unlisted"), "unlisted")
        if len(unl) > max_tracked + 1:
            raise StateFormatError("too many unlisted versions")
        m.unlisted = {check_str(k, "unlisted")[:MAX_NAME]: check_int(c, "unlisted count") for k, c in unl.items()}
        ss = doc.get("stable_seen")
        m.stable_seen = None if ss is None else check_str(ss, "stable_seen")
        m.rolled_back = [check_str(v, "rolled_back") for v in check_list(doc.get("rolled_back"), "rolled_back")]
        m.events, m.labels, m.unlisted_labels = (check_int(c, "counter") for c in
                                                 check_list(doc.get("counters"), "counters", 3))
        det = check_dict(doc.get("detections"), "detections")
        m.detections = {s: check_int(det.get(s, 0), "detections") for s in SIGNALS}
        dbs = check_dict(doc.get("detections_by_stream", {}), "detections_by_stream")
        if len(dbs) > 4 * max_tracked + 3 * len(m.listed):
            raise StateFormatError("too many streams in detections_by_stream")
        m.stream_detections = {check_str(k, "stream")[:2 * MAX_NAME + 1]: {
            s: check_int(check_dict(v, "stream detections").get(s, 0), "count") for s in SIGNALS
            if s in v} for k, v in dbs.items()}
        return m


def _groups(keys: list[tuple[str, str]]) -> dict[tuple[str, str], np.ndarray | None]:
    """Indices per (version, deployment); ``None`` means "the whole batch" (common fast path)."""
    k0 = keys[0]
    if keys.count(k0) == len(keys):
        return {k0: None}
    out: dict[tuple[str, str], list[int]] = {}
    for i, k in enumerate(keys):
        lst = out.get(k)
        if lst is None:
            out[k] = [i]
        else:
            lst.append(i)
    return {k: np.asarray(v, dtype=np.int64) for k, v in out.items()}


class Engine:
    """Routes events to one :class:`ModelMonitor` per configured model; unknown models are counted."""

    def __init__(self, spec: MonitorSpec, registry: bool = False) -> None:
        self.spec = spec
        self.monitors: dict[str, ModelMonitor] = {
            m.name: ModelMonitor(m, spec.calibration, spec.alerts, spec.max_tracked_versions, registry)
            for m in spec.models}
        self.unknown_model_events = 0
        self.unknown_model_labels = 0

    def process_inference(self, events: Sequence[InferenceEvent]) -> list[ControlMessage]:
        out: list[ControlMessage] = []
        for name, batch in _by_model(events, lambda e: e.model).items():
            mon = self.monitors.get(name)
            if mon is None:
                self.unknown_model_events += len(batch)
            else:
                out.extend(mon.process_inference(batch))
        return out

    def process_labels(self, labels: Sequence[JoinedLabel]) -> list[ControlMessage]:
        out: list[ControlMessage] = []
        for name, batch in _by_model(labels, lambda j: j.model).items():
            mon = self.monitors.get(name)
            if mon is None:
                self.unknown_model_labels += len(batch)
            else:
                out.extend(mon.process_labels(batch))
        return out

    def apply_registry(self, entries: Sequence[RegistryEntry], max_age: float | None = None) -> list[str | None]:
        """Apply verified registry entries in order; per entry None (accepted) or the refusal reason."""
        out: list[str | None] = []
        for e in entries:
            mon = self.monitors.get(e.model)
            out.append("registry_unknown_model" if mon is None else mon.apply_registry([e], max_age)[0])
        return out

    @property
    def stats(self) -> dict[str, Any]:
        return {"unknown_model_events": self.unknown_model_events,
                "unknown_model_labels": self.unknown_model_labels,
                "models": {n: m.stats for n, m in self.monitors.items()}}


def _by_model(items: Sequence[Any], key: Any) -> dict[str, Sequence[Any]]:
    if not items:
        return {}
    names = [key(x) for x in items]
    if names.count(names[0]) == len(names):
        return {names[0]: items}
    out: dict[str, list[Any]] = {}
    for x, nm in zip(items, names):
        out.setdefault(nm, []).append(x)
    return out
