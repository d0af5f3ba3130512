"""Label-side signals: label drift, performance (error rate) and per-source disagreement.

Inputs are :class:`~detectors.events.JoinedLabel` (a label joined with its prediction).
Per stream, the first ``ModelSpec.label_reference_size`` joined labels form the label
reference; then every ``CalibrationSpec.label_window`` labels the window is tested:

- ``label_drift``: per label class, two-sided beta-binomial rate test; label entropy z-test
  (delta-method variance of the plug-in entropy).
- ``performance``: error rate (label != prediction), overall and per label class
  (one-sided: only degradation alarms).

Labels are scarcer than predictions, so a few hundred reference labels estimate the
reference rates poorly; windows without any detection are merged into the label reference
(counts merge exactly, in doubling steps) until it reaches ``REFERENCE_GROWTH`` times its
initial size.

:class:`SourceDisagreement` tracks, per label source (labeler, vendor), how often its
labels disagree with the model and with other sources labelling the same event, and
compares each source with the pool of all other sources over the same period (one-sided
two-proportion z-test): a compromised labeler flipping labels stands out even when the
global error rate barely moves. Sources beyond ``max_sources`` are pooled as ``<other>``;
the cross-source memory of recent (event, source, label) triples is bounded.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from detectors import calibration as cal
from detectors.errors import StateFormatError
from detectors.signals import Hit
from detectors.sketches import Counts, entropy
from detectors.spec import CalibrationSpec
from detectors.state import check_counts, check_int, check_list, check_str

CROSS_MEMORY = 8192
REFERENCE_GROWTH = 8  # clean windows are merged into the label reference until it is this many times its size
OTHER_SOURCE = "<other>"


def _r(x: float) -> float:
    return float(round(x, 6))


class LabelStream:
    """Label reference + windowed label-drift and performance tests of one stream."""

    def __init__(self, classes: list[str], ref_size: int, c: CalibrationSpec) -> None:
        self.names = list(classes) + ["<other>"]
        k = len(self.names)
        self.ref_size = ref_size
        self.w = c.label_window
        self.ref = [Counts(k), Counts(k), 0]  # label counts, per-class errors, errors
        self.win = [Counts(k), Counts(k), 0]
        self.pending = [Counts(k), Counts(k), 0]
        self.fill = 0
        self.min_class = c.min_class_labels
        f = c.false_alarms_per_million
        self.alpha_rate = cal.window_alpha(f, cal.SHARES["label_drift"]["class_rate"], self.w)
        self.alpha_ent = cal.window_alpha(f, cal.SHARES["label_drift"]["entropy"], self.w)
        self.alpha_err = cal.window_alpha(f, 1.0, self.w)

    @property
    def ready(self) -> bool:
        return self.ref[0].n >= self.ref_size

    def process(self, lab: np.ndarray, err: np.ndarray) -> list[Hit]:
        """``lab``: label class codes, ``err``: 1 where label != prediction (batch order)."""
        out: list[Hit] = []
        n, pos = lab.size, 0
        if not self.ready:
            take = min(n, self.ref_size - self.ref[0].n)
            self._add(self.ref, lab[:take], err[:take])
            pos = take
        while pos < n:
            take = min(n - pos, self.w - self.fill)
            self._add(self.win, lab[pos:pos + take], err[pos:pos + take])
            self.fill += take
            pos += take
            if self.fill == self.w:
                out.extend(self._close(pos - 1))
                self.fill = 0
        return out

    @staticmethod
    def _add(acc: list[Any], lab: np.ndarray, err: np.ndarray) -> None:
        acc[0].update_codes(lab)
        acc[1].update_codes(lab[err.astype(bool)])
        acc[2] += int(err.sum())

    def _close(self, idx: int) -> list[Hit]:
        out: list[Hit] = []
        rc, re, rerr = self.ref[0].counts, self.ref[1].counts, self.ref[2]
        wc, we, werr = self.win[0].counts, self.win[1].counts, self.win[2]
        nref, n = int(rc.sum()), int(wc.sum())
        for j, name in enumerate(self.names):
            lo, hi = cal.rate_bounds(int(rc[j]), nref, n, self.alpha_rate)
            if wc[j] >= hi or wc[j] < lo:
                out.append(("label_drift", "class_rate", name, wc[j] / n, (hi if wc[j] >= hi else lo) / n,
                            {"rate": _r(rc[j] / nref), "n": nref}, {"rate": _r(wc[j] / n), "n": n}, idx))
        h_ref, h_cur = entropy(rc + 0.5), entropy(wc)
        p = (rc + 0.5) / (rc + 0.5).sum()
        var = float((p * np.log(p) ** 2).sum() - h_ref ** 2)
        sd = math.sqrt(max(var, 1e-12) * (1.0 / n + 1.0 / nref)) + 1.0 / n
        z = abs(h_cur - h_ref) / sd
        zt = cal.z_threshold(self.alpha_ent)
        if z >= zt:
            out.append(("label_drift", "entropy", "entropy", z, zt, {"entropy": _r(h_ref), "n": nref},
                        {"entropy": _r(h_cur), "n": n}, idx))
        hi = cal.rate_bounds(rerr, nref, n, self.alpha_err, False)[1]
        if werr >= hi:
            out.append(("performance", "error_rate", "", werr / n, hi / n, {"error_rate": _r(rerr / nref), "n": nref},
                        {"error_rate": _r(werr / n), "n": n}, idx))
        for j, name in enumerate(self.names):
            if wc[j] >= self.min_class and rc[j] >= self.min_class:
                hi = cal.rate_bounds(int(re[j]), int(rc[j]), int(wc[j]), self.alpha_err, False)[1]
                if we[j] >= hi:
                    out.append(("performance", "class_error_rate", name, we[j] / wc[j], hi / wc[j],
                                {"error_rate": _r(re[j] / rc[j]), "n": int(rc[j])},
                                {"error_rate": _r(we[j] / wc[j]), "n": int(wc[j])}, idx))
        if not out and self.ref[0].n < self.ref_size * REFERENCE_GROWTH:
            # clean windows sharpen the reference (counts merge exactly) in doubling steps, up to a cap
            p = self.pending
            self.pending = [p[0].merge(self.win[0]), p[1].merge(self.win[1]), p[2] + self.win[2]]
            if self.pending[0].n >= self.ref[0].n:
                p = self.pending
                self.ref = [self.ref[0].merge(p[0]), self.ref[1].merge(p[1]), self.ref[2] + p[2]]
                self.pending = [Counts(len(self.names)), Counts(len(self.names)), 0]
        self.win = [Counts(len(self.names)), Counts(len(self.names)), 0]
        return out

    @property
    def reference_error_rate(self) -> tuple[int, int]:
        return self.ref[2], self.ref[0].n

    def to_state(self) -> list[Any]:
        return [self.ref[0].to_state(), self.ref[1].to_state(), self.ref[2],
                self.win[0].to_state(), self.win[1].to_state(), self.win[2], self.fill,
                self.pending[0].to_state(), self.pending[1].to_state(), self.pending[2]]

    def load_state(self, st: Any) -> None:
        st = check_list(st, "label_stream", 10)
        k = len(self.names)
        for acc, a, b, e in ((self.ref, st[0], st[1], st[2]), (self.win, st[3], st[4], st[5]),
                             (self.pending, st[7], st[8], st[9])):
            acc[0].load_state(check_counts(a, "labels", k))
            acc[1].load_state(check_counts(b, "labels", k))
            acc[2] = check_int(e, "labels.errors")
        self.fill = check_int(st[6], "labels.fill", 0, self.w - 1)


class SourceDisagreement:
    """Per-source disagreement with the model and with other sources (see module doc)."""

    def __init__(self, c: CalibrationSpec) -> None:
        self.max_sources = c.max_sources
        self.m = c.min_source_labels
        f = c.false_alarms_per_million
        self.z = cal.z_threshold(cal.window_alpha(f, cal.SHARES["label_disagreement"]["model"], self.m), False)
        self.min_shift = c.min_shift
        # per source: [n, k_model, n_cross, k_cross, snapshot of totals (4)]
        self.src: dict[str, list[int]] = {}
        self.tot = [0, 0, 0, 0]
        self.recent: dict[str, tuple[str, str]] = {}  # event_id -> (source, label), bounded FIFO

    def _name(self, s: str) -> str:
        if s in self.src or len(self.src) < self.max_sources:
            return s
        return OTHER_SOURCE

    def _row(self, s: str) -> list[int]:
        r = self.src.get(s)
        if r is None:
            r = self.src[s] = [0, 0, 0, 0] + list(self.tot)
        return r

    def add(self, event_id: str, source: str, label: str, disagree_model: bool, idx: int) -> list[Hit]:
        s = self._name(source)
        r = self._row(s)
        r[0] += 1
        r[1] += disagree_model
        self.tot[0] += 1
        self.tot[1] += disagree_model
        prev = self.recent.get(event_id)
        if prev is not None and prev[0] != s:
            d = int(prev[1] != label)
            other = self._row(prev[0])
            for row in (r, other):
                row[2] += 1
                row[3] += d
            self.tot[2] += 2
            self.tot[3] += 2 * d
        else:
            self.recent[event_id] = (s, label)
            if len(self.recent) > CROSS_MEMORY:
                del self.recent[next(iter(self.recent))]
        if r[0] >= self.m:
            return self._close(s, r, idx)
        return []

    def _close(self, s: str, r: list[int], idx: int) -> list[Hit]:
        out: list[Hit] = []
        for det, (n, k), (tn, tk), base in (("model", (r[0], r[1]), (self.tot[0] - r[4], self.tot[1] - r[5]), 20),
                                            ("sources", (r[2], r[3]), (self.tot[2] - r[6], self.tot[3] - r[7]), 20)):
            on, ok = tn - n, tk - k  # the other sources over the same period
            if n >= base and on >= base:
                p1, p0 = k / n, ok / on
                pool = (k + ok) / (n + on)
                sd = math.sqrt(max(pool * (1 - pool), 1e-9) * (1 / n + 1 / on))
                z = (p1 - p0) / sd
                if z >= self.z and p1 - p0 >= self.min_shift:
                    out.append(("label_disagreement", det, s, z, self.z,
                                {"other_sources_rate": _r(p0), "n": on}, {"rate": _r(p1), "n": n}, idx))
        self.src[s] = [0, 0, 0, 0] + list(self.tot)
        return out

    def to_state(self) -> dict[str, Any]:
        return {"src": self.src, "tot": self.tot, "recent": self.recent}  # dict in insertion (FIFO) order

    def load_state(self, st: Any) -> None:
        if not isinstance(st, dict) or not isinstance(st.get("src"), dict):
            raise StateFormatError("sources: malformed")
        self.src = {check_str(k, "source"): check_counts(v, "source row", 8) for k, v in st["src"].items()}
        if len(self.src) > self.max_sources + 1:
            raise StateFormatError("sources: too many")
        self.tot = check_counts(st.get("tot"), "sources.tot", 4)
        rec = st.get("recent")
        if not isinstance(rec, dict) or len(rec) > CROSS_MEMORY:
            raise StateFormatError("sources.recent: expected an object of at most CROSS_MEMORY entries")
        if not all(type(r) is list and len(r) == 2 and type(r[0]) is str and type(r[1]) is str
                   for r in rec.values()):
            raise StateFormatError("sources.recent: entries must be [source, label] strings")
        self.recent = {k: (r[0], r[1]) for k, r in rec.items()}
