"""All inference-side detectors of one stream: one model version on one deployment.

The first ``reference_size`` events fill a :class:`~detectors.profile.ProfileBuilder`
(input integrity is counted meanwhile); then the profile arms the detectors. Per
micro-batch, features are extracted once into numpy columns; sequential detectors consume
the whole batch, windowed sketches are updated per segment between window boundaries, so
results do not depend on how the stream is cut into batches.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from detectors.columns import NumericColumn
from detectors.errors import StateFormatError
from detectors.events import InferenceEvent
from detectors.masks import all_true
from detectors.profile import FeatureLayout, ProfileBuilder, ReferenceProfile, extract_features
from detectors.numeric import NumericBank
from detectors.confidence import ConfidenceDrift
from detectors.signals import CategoricalDrift, Hit, InputIntegrity, PredictionDrift, TriggerWatch

from detectors.spec import CalibrationSpec, ModelSpec
from detectors.state import check_counts, check_dict, check_int, check_list


class DeploymentMonitor:
    """Detectors of one ``(version, deployment)`` stream (see module doc)."""

    def __init__(self, spec: ModelSpec, calibration: CalibrationSpec, profile: ReferenceProfile | None = None) -> None:
        self.spec = spec
        self.cal = calibration
        self.layout = FeatureLayout(spec)
        self.n = 0            # events seen
        self.fill = 0         # events in the current window
        self.invalid_total = {f.name: np.zeros(5, dtype=np.int64) for f in spec.features}
        self.builder: ProfileBuilder | None = None
        self.profile: ReferenceProfile | None = None
        self.from_file = profile is not None  # given (file or stable's profile), not learned
        if profile is None:
            self.builder = ProfileBuilder(spec, calibration.max_known_categories)
        else:
            self._arm(profile)

    @property
    def armed(self) -> bool:
        return self.profile is not None

    def _arm(self, profile: ReferenceProfile) -> None:
        spec, c = self.spec, self.cal
        self.profile = profile
        self.builder = None
        self.fill = 0
        num = [f for f in spec.features if f.type == "numeric"]
        self.numeric = NumericBank(num, [profile.numeric[f.name] for f in num], c) if num else None
        self.categorical = [CategoricalDrift(f, profile.categorical[f.name], c)
                            for f in spec.features if f.type == "categorical"]
        profs = [profile.numeric.get(f.name) or profile.categorical.get(f.name) for f in spec.features]
        self.integrity = InputIntegrity([f.name for f in spec.features], [p.invalid for p in profs],
                                        [p.n + p.invalid for p in profs], c)
        self.prediction = PredictionDrift(spec.classes, profile, c)
        self.confidence = ConfidenceDrift(profile, c, spec.low_confidence)
        self.triggers = [TriggerWatch(t, spec.classes, profile, c) for t in spec.triggers]

    def process(self, events: Sequence[InferenceEvent], preds: np.ndarray, conf: np.ndarray) -> list[Hit]:
        """Update with a batch of this stream's events; hits index into ``events``."""
        n = len(events)
        if n == 0:
            return []
        self.n += n
        cols, trig, mat = extract_features(self.spec, events, self.layout)
        kinds = None
        if not (all_true(mat.valid) and all(all_true(c.valid) for c in cols.categorical.values())):
            kinds = np.column_stack([cols[f.name].kinds for f in self.spec.features])
            F = len(self.spec.features)
            per = np.bincount((kinds + np.arange(F)[None, :] * 6).ravel(), minlength=6 * F).reshape(F, 6)[:, 1:]
            for j, f in enumerate(self.spec.features):
                self.invalid_total[f.name] += per[j]
        start = 0
        if self.builder is not None:
            take = min(n, self.spec.reference_size - self.builder.n)
            if take == n:
                self.builder.add(n, cols, preds, conf, trig)
            else:
                self.builder.add(take, {k: _slice(c, 0, take) for k, c in cols.items()}, preds[:take], conf[:take],
                                 {k: m[:take] for k, m in trig.items()})
            if self.builder.n >= self.spec.reference_size:
                self._arm(self.builder.build(self.spec.low_confidence))
            start = take
            if start == n:
                return []
        return self._armed(cols, preds, conf, trig, mat, kinds, start, n)

    def _armed(self, cols, preds, conf, trig, mat, kinds, start: int, n: int) -> list[Hit]:
        hits: list[Hit] = []
        idx = np.arange(n)
        if start:
            idx = idx[start:]
            cols = {k: _slice(c, start, n) for k, c in cols.items()}
            preds, conf = preds[start:], conf[start:]
            trig = {k: m[start:] for k, m in trig.items()}
            kinds = kinds[start:] if kinds is not None else None
        m = n - start
        num = self.numeric
        if num is not None:
            num.prepare(mat.values[start:], mat.valid[start:])
            hits.extend(num.sequential(idx))
        w = self.cal.window
        pos = 0
        catg, integ, trigs = self.categorical, self.integrity, self.triggers
        pred_counts, confd = self.prediction.counts, self.confidence
        while pos < m:
            take = min(m - pos, w - self.fill)
            lo, hi = pos, pos + take
            if num is not None:
                num.accumulate(lo, hi)
            for sig in catg:
                for h in sig.accumulate(cols[sig.key], lo, hi):
                    hits.append(h[:7] + (int(idx[h[7]]),))
            for h in integ.accumulate(kinds, lo, hi):
                hits.append(h[:7] + (int(idx[h[7]]),))
            for h in self.prediction.sequential(preds[lo:hi], lo):
                hits.append(h[:7] + (int(idx[h[7]]),))
            pred_counts.update_codes(preds[lo:hi])
            for h in confd.accumulate(conf[lo:hi], lo):
                hits.append(h[:7] + (int(idx[h[7]]),))
            for t in trigs:
                for h in t.accumulate(trig[t.key], preds, lo, hi):
                    hits.append(h[:7] + (int(idx[h[7]]),))
            self.fill += take
            pos = hi
            if self.fill == w:
                at = int(idx[hi - 1])
                if num is not None:
                    hits.extend(num.close(at))
                for sig in catg:
                    hits.extend(sig.close(at))
                hits.extend(integ.close(at))
                hits.extend(self.prediction.close(at))
                hits.extend(confd.close(at))
                for t in trigs:
                    hits.extend(t.close(at))
                self.fill = 0
        return hits

    # -- stats / state ---------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {"events": self.n, "armed": self.armed, "window_fill": self.fill,
                               "reference_events": self.profile.n if self.profile else (self.builder.n if self.builder else 0),
                               "invalid": {k: v.tolist() for k, v in self.invalid_total.items()}}
        if self.armed and self.numeric is not None:
            out["numeric"] = self.numeric.stats()
        if self.armed:
            stat, thr = self.prediction.cusum.exceedance()
            out["cusum"] = {"prediction_drift": {name: [float(a), float(b)] for name, a, b in
                                                 zip(self.prediction.names, stat.tolist(), thr.tolist())},
                            "categorical_drift": {c.key: _closest(c.seq.bank) for c in self.categorical},
                            "confidence_drift": {"": _closest(self.confidence.seq_score, self.confidence.seq_low.bank)},
                            "trigger": {t.key: _closest(t.seq.bank) for t in self.triggers}}
        return out

    def exceedance(self, signal: str, key: str | None, current: dict[str, Any]) -> float | None:
        """How far this stream's per-event CUSUM matching a detection (``signal``, ``key``, and the
        score and direction in its ``current`` evidence) is towards its threshold (statistic /
        threshold, largest over drifts); None where no such CUSUM runs."""
        side, score = current.get("direction"), current.get("score")
        if not self.armed or side not in ("up", "down"):
            return None
        if signal == "prediction_drift" and key in self.prediction.names:
            return self.prediction.cusum.side_exceedance(self.prediction.names.index(key), side)
        if signal == "numeric_drift" and self.numeric is not None and key in self.numeric.names:
            f = self.numeric.names.index(key)
            return self.numeric.cusum.side_exceedance(f if score == "normal_score" else self.numeric.F + f, side)
        if signal == "confidence_drift":
            bank = self.confidence.seq_low.bank if score == "low_confidence" else self.confidence.seq_score
            return bank.side_exceedance(0, side)
        return None

    def to_state(self) -> dict[str, Any]:
        st: dict[str, Any] = {"n": self.n, "fill": self.fill, "from_file": self.from_file,
                              "invalid": {k: v.tolist() for k, v in self.invalid_total.items()}}
        if self.builder is not None:
            st["builder"] = self.builder.to_state()
            return st
        assert self.profile is not None
        st["profile"] = self.profile.to_dict()
        st["numeric"] = self.numeric.to_state() if self.numeric is not None else None
        st["categorical"] = [s.to_state() for s in self.categorical]
        st["integrity"] = self.integrity.to_state()
        st["prediction"] = [self.prediction.counts.to_state(), self.prediction.grow.to_state(),
                            self.prediction.cusum.to_state()]
        st["confidence"] = self.confidence.to_state()
        st["triggers"] = [t.to_state() for t in self.triggers]
        return st

    @classmethod
    def from_state(cls, spec: ModelSpec, calibration: CalibrationSpec, st: Any) -> "DeploymentMonitor":
        from detectors.errors import ProfileFormatError

        st = check_dict(st, "deployment")
        obj = cls.__new__(cls)
        obj.spec, obj.cal = spec, calibration
        obj.layout = FeatureLayout(spec)
        obj.n = check_int(st.get("n"), "deployment.n")
        obj.from_file = bool(st.get("from_file"))
        inv = check_dict(st.get("invalid"), "deployment.invalid")
        obj.invalid_total = {f.name: np.array(check_counts(inv.get(f.name), "invalid", 5), dtype=np.int64)
                             for f in spec.features}
        obj.builder, obj.profile = None, None
        if "builder" in st:
            obj.builder = ProfileBuilder(spec, calibration.max_known_categories)
            obj.builder.load_state(st["builder"])
            if obj.builder.n >= spec.reference_size:
                raise StateFormatError("profile builder is already full")
            obj.fill = 0
            return obj
        try:
            prof = ReferenceProfile.from_dict(spec, st.get("profile"))
        except ProfileFormatError as exc:
            raise StateFormatError(f"stored profile: {exc}") from None
        obj._arm(prof)
        obj.fill = check_int(st.get("fill"), "deployment.fill", 0, calibration.window - 1)
        if obj.numeric is not None:
            obj.numeric.load_state(st.get("numeric"))
        obj.integrity.load_state(st.get("integrity"))
        for group, key in ((obj.categorical, "categorical"), (obj.triggers, "triggers")):
            rows = check_list(st.get(key), key, len(group))
            for sig, row in zip(group, rows):
                try:
                    sig.load_state(row)
                except (ValueError, TypeError, AttributeError) as exc:
                    if isinstance(exc, StateFormatError):
                        raise
                    raise StateFormatError(f"{key}: {exc}") from None
        pred = check_list(st.get("prediction"), "prediction", 3)
        obj.prediction.counts.load_state(pred[0])
        obj.prediction.grow.load_state(pred[1])
        obj.prediction._derive()
        obj.prediction.cusum.load_state(pred[2])
        obj.confidence.load_state(st.get("confidence"))
        return obj



def _closest(*banks: Any) -> list[float]:
    """``[statistic, threshold]`` of the armed CUSUM column closest to its threshold (for metrics)."""
    best = [0.0, float("inf")]
    for bank in banks:
        stat, thr = bank.exceedance()
        for a, b, on in zip(stat.tolist(), thr.tolist(), bank.enabled.tolist()):
            if on and np.isfinite(b) and b > 0 and (not np.isfinite(best[1]) or a / b > best[0] / best[1]):
                best = [float(a), float(b)]
    return best


def _slice(col, lo: int, hi: int):
    if isinstance(col, NumericColumn):
        return NumericColumn(col.values[lo:hi], col.kinds[lo:hi], col.valid[lo:hi])
    return type(col)(col.values[lo:hi], col.kinds[lo:hi], col.valid[lo:hi])
