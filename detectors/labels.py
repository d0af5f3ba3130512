"""Label-side signals: label drift, performance (error rate) and per-source disagreement.

Inputs are :class:`~detectors.events.JoinedLabel` (a label joined with its prediction).
Per stream, the first ``ModelSpec.label_reference_size`` joined labels form the label
reference. From then on **every joined label** updates self-starting CUSUMs
(:class:`~detectors.cusum.CusumBank`, detector ``cusum``) of the error indicator
(``performance``, degradation only) and of each label class indicator (``label_drift``,
both ways), targeting odds ratios ``CalibrationSpec.rate_ratios`` with thresholds from the
budget per joined label (:func:`~detectors.calibration.bernoulli_cusum`, re-derived whenever
the reference grows). Every ``CalibrationSpec.label_window`` labels the window is also tested,
as a second opinion:

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
the cross-source memory of recent (event, source, label) triples is bounded. Per joined label,
a CUSUM per source runs on the score ``err * (1[source = s] / pi_s - 1[source != s] / (1 - pi_s))``
(``pi_s``: the source's share of labels, ``err``: label != prediction): its mean is the source's
error rate minus the other sources' over the same labels, zero when all sources agree with the
model equally, *whatever the common error rate does* (a concept drift moves all sources alike
and is not a source's fault).
"""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any

import numpy as np

from detectors import calibration as cal
from detectors.cusum import PRIOR_WEIGHT, CusumBank
from detectors.errors import StateFormatError
from detectors.signals import Hit
from detectors.sketches import Counts, entropy
from detectors.spec import CalibrationSpec
from detectors.state import check_counts, check_int, check_list, check_str

CROSS_MEMORY = 8192
REFRESH = 1024  # labels between re-derivations of the per-source CUSUM parameters
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
        self.alpha_err = cal.window_alpha(f, cal.SHARES["performance"]["error_rate"], self.w)
        self.ratios = list(c.rate_ratios)
        self.rate_err = f * cal.SHARES["performance"]["cusum"] / 1e6 / len(self.ratios)
        self.rate_lab = f * cal.SHARES["label_drift"]["cusum"] / 1e6 / (2 * len(self.ratios))
        self.cusum = CusumBank(k + 1, len(self.ratios))  # column 0: error indicator; 1..k: label classes
        self._eye = np.eye(k, dtype=np.float64)

    @property
    def ready(self) -> bool:
        return self.ref[0].n >= self.ref_size

    def _derive(self) -> None:
        """CUSUM drifts and thresholds from the (grown) label reference."""
        rc = self.ref[0].counts
        nref = int(rc.sum())
        hits = np.concatenate(([self.ref[2]], rc))
        k_up, k_dn, h_up, h_dn, sd = cal.bernoulli_cusum(hits, np.full(hits.size, nref), self.ratios, self.rate_lab)
        e = cal.bernoulli_cusum(hits[:1], np.array([nref]), self.ratios, self.rate_err)
        k_up[0], h_up[0], h_dn[0] = e[0][0], e[2][0], np.inf  # performance: degradation only
        self.cusum.set_params(k_up, k_dn, h_up, h_dn, sd)
        self.cusum.set_prior(min(nref, PRIOR_WEIGHT), (hits + 0.5) / (nref + 1.0))

    def _sequential(self, lab: np.ndarray, err: np.ndarray, offset: int) -> list[Hit]:
        X = np.column_stack((err.astype(np.float64), self._eye[lab]))
        out: list[Hit] = []
        for row, col, side, j, stat, thr, run, mean in self.cusum.update(X):
            sd = float(self.cusum.scale[col])
            cur = {"direction": side, "odds_ratio": _r(self.ratios[j] if side == "up" else 1 / self.ratios[j]),
                   "error_rate" if col == 0 else "rate": _r(mean), "labels_since_restart": run}
            if col == 0:
                out.append(("performance", "cusum", "", stat / sd, thr / sd,
                            {"error_rate": _r(self.ref[2] / max(self.ref[0].n, 1)), "n": self.ref[0].n}, cur,
                            offset + row))
            else:
                name = self.names[col - 1]
                out.append(("label_drift", "cusum", name, stat / sd, thr / sd,
                            {"rate": _r(self.ref[0].counts[col - 1] / max(self.ref[0].n, 1)), "n": self.ref[0].n},
                            cur, offset + row))
        return out

    def process(self, lab: np.ndarray, err: np.ndarray) -> list[Hit]:
        """``lab``: label class codes, ``err``: 1 where label != prediction (batch order)."""
        out: list[Hit] = []
        n, pos = lab.size, 0
        if not self.ready:
            take = min(n, self.ref_size - self.ref[0].n)
            self._add(self.ref, lab[:take], err[:take])
            pos = take
            if self.ready:
                self._derive()
        while pos < n:
            take = min(n - pos, self.w - self.fill)
            out.extend(self._sequential(lab[pos:pos + take], err[pos:pos + take], pos))
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
                self._derive()
        self.win = [Counts(len(self.names)), Counts(len(self.names)), 0]
        return out

    @property
    def reference_error_rate(self) -> tuple[int, int]:
        return self.ref[2], self.ref[0].n

    def to_state(self) -> list[Any]:
        return [self.ref[0].to_state(), self.ref[1].to_state(), self.ref[2],
                self.win[0].to_state(), self.win[1].to_state(), self.win[2], self.fill,
                self.pending[0].to_state(), self.pending[1].to_state(), self.pending[2], self.cusum.to_state()]

    def load_state(self, st: Any) -> None:
        st = check_list(st, "label_stream", 11)
        k = len(self.names)
        for acc, a, b, e in ((self.ref, st[0], st[1], st[2]), (self.win, st[3], st[4], st[5]),
                             (self.pending, st[7], st[8], st[9])):
            acc[0].load_state(check_counts(a, "labels", k))
            acc[1].load_state(check_counts(b, "labels", k))
            acc[2] = check_int(e, "labels.errors")
        self.fill = check_int(st[6], "labels.fill", 0, self.w - 1)
        if self.ready:
            self._derive()
        self.cusum.load_state(st[10])


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
        # event_id -> (source, label), bounded FIFO; an OrderedDict drops its oldest entry in constant
        # time, where deleting a dict's first key leaves a hole every later first-key lookup scans
        self.recent: OrderedDict[str, tuple[str, str]] = OrderedDict()
        # per-label sequential test (see module doc): one CUSUM column per source, in order of appearance
        self.drifts = list(c.cusum_drifts)
        self.rate = f * cal.SHARES["label_disagreement"]["cusum"] / 1e6 / len(self.drifts)
        self.cols: dict[str, int] = {}
        self.seen: list[int] = []  # labels per column
        self.seen_all = [0, 0]  # labels, errors
        self.cusum = CusumBank(0, len(self.drifts))
        self.params_at = -1  # labels seen when the CUSUM parameters were last derived
        self.snap: list[Any] = [[], [0, 0]]  # the counts they were derived from
        self._pi = np.zeros(0)

    def tracked(self, source: str) -> str:
        """The name a source is tracked under (``<other>`` beyond ``max_sources``), after :meth:`add`."""
        return source if source in self.src else OTHER_SOURCE

    def _derive(self, snap: list[Any] | None = None) -> None:
        """Per-source score laws from the shares and the error rate seen so far (refreshed every
        ``REFRESH`` labels; a source needs ``min_source_labels`` labels to be tested)."""
        if snap is None:
            snap = [list(self.seen), list(self.seen_all)]
        self.snap = snap
        seen, (n, e) = snap
        C = len(seen)
        pi = np.array(seen, dtype=np.float64) / max(n, 1)
        a, b = e + 0.5, n - e + 0.5
        p = a / (a + b)
        p = min(p + 2 * math.sqrt(p * (1 - p) / (a + b + 1)), 0.999)  # conservative: a rate underestimated overspends
        ok = (np.array(seen) >= self.m) & (pi <= 0.95) & (n - np.array(seen) >= self.m) & (e > 0)
        pis = np.where(ok, np.clip(pi, 1e-6, 0.95), 0.5)
        vals = np.stack((np.zeros(C), 1 / pis, -1 / (1 - pis)), axis=1)
        probs = np.stack((np.full(C, 1 - p), p * pis, p * (1 - pis)), axis=1)
        k, h_up, _, sd = cal.score_cusum(vals, probs, self.drifts, self.rate)
        self.cusum.grow(C)
        grown = self.cusum.C
        if C < grown:  # sources first seen after this snapshot stay disabled until the next refresh
            pad = grown - C
            k, h_up, sd = (np.concatenate((k, np.ones((pad, k.shape[1])))),
                           np.concatenate((h_up, np.full((pad, k.shape[1]), np.inf))), np.concatenate((sd, np.ones(pad))))
            ok, pis = np.concatenate((ok, np.zeros(pad, dtype=bool))), np.concatenate((pis, np.full(pad, 0.5)))
        self.cusum.set_params(k, k, h_up, np.full_like(h_up, np.inf), sd, ok)
        self._pi = pis
        self.params_at = n

    def sequential(self, names: list[str], err: np.ndarray, idx: np.ndarray) -> list[Hit]:
        """Per joined label, every source's disagreement score (see module doc); ``names``: the
        labels' tracked source names, ``idx``: their batch rows. A source's column starts at its
        first label."""
        out: list[Hit] = []
        n, pos = len(names), 0
        while pos < n:
            if self.seen_all[0] // REFRESH != self.params_at // REFRESH or self.params_at < 0:
                self._derive()
            take = min(n - pos, REFRESH - self.seen_all[0] % REFRESH)
            born: dict[int, int] = {}
            cl: list[int] = []
            for i, nm in enumerate(names[pos:pos + take]):
                c = self.cols.get(nm)
                if c is None:
                    c = self.cols[nm] = len(self.cols)
                    self.seen.append(0)
                    born[c] = i
                cl.append(c)
            c = np.asarray(cl, dtype=np.int64)
            e = err[pos:pos + take].astype(np.float64)
            C = len(self.cols)
            self.cusum.grow(C)
            self.cusum.set_prior(PRIOR_WEIGHT, 0.0)  # sources agree until shown otherwise (new columns only)
            pi = self._pi[:C] if self._pi.size >= C else np.concatenate((self._pi, np.full(C - self._pi.size, 0.5)))
            one = c[:, None] == np.arange(C)[None, :]
            Y = e[:, None] * np.where(one, 1.0 / pi[None, :], -1.0 / (1.0 - pi[None, :]))
            valid = None
            if any(r > 0 for r in born.values()):
                valid = np.ones(Y.shape, dtype=bool)
                for col, r in born.items():
                    valid[:r, col] = False
            cols_names = list(self.cols)
            for row, col, side, j, stat, thr, run, mean in self.cusum.update(Y, valid):
                sd = float(self.cusum.scale[col])
                out.append(("label_disagreement", "cusum", cols_names[col], stat / sd, thr / sd,
                            {"label_share": _r(float(pi[col])), "error_rate_all_sources": _r(
                                self.seen_all[1] / max(self.seen_all[0], 1))},
                            {"excess_error_rate_since_restart": _r(mean), "labels_since_restart": run,
                             "drift_sd": self.drifts[j]}, int(idx[pos + row])))
            for q in cl:
                self.seen[q] += 1
            self.seen_all[0] += take
            self.seen_all[1] += int(e.sum())
            pos += take
        return out

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
                self.recent.popitem(last=False)
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
        return {"src": self.src, "tot": self.tot, "recent": self.recent,  # dict in insertion (FIFO) order
                "seq": [list(self.cols), self.seen, self.seen_all, self.params_at, self.cusum.to_state(),
                        self.snap]}

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
        self.recent = OrderedDict((k, (r[0], r[1])) for k, r in rec.items())
        seq = check_list(st.get("seq"), "sources.seq", 6)
        names = [check_str(x, "sources.seq") for x in check_list(seq[0], "sources.seq", None)]
        if len(names) > self.max_sources + 1 or len(set(names)) != len(names):
            raise StateFormatError("sources.seq: too many or duplicate sources")
        self.cols = {nm: i for i, nm in enumerate(names)}
        self.seen = check_counts(seq[1], "sources.seq.seen", len(names))
        self.seen_all = check_counts(seq[2], "sources.seq.all", 2)
        self.params_at = check_int(seq[3], "sources.seq.params_at", -1, self.seen_all[0])
        if sum(self.seen) != self.seen_all[0] or self.seen_all[1] > self.seen_all[0]:
            raise StateFormatError("sources.seq: counts inconsistent")
        self.cusum = CusumBank(len(names), len(self.drifts))
        snap = check_list(seq[5], "sources.seq.snapshot", 2)
        snap = [check_counts(snap[0], "sources.seq.snapshot", len(check_list(snap[0], "snapshot"))),
                check_counts(snap[1], "sources.seq.snapshot", 2)]
        if len(snap[0]) > len(names) or snap[1][0] != self.params_at and self.params_at >= 0:
            raise StateFormatError("sources.seq.snapshot inconsistent")
        self._derive(snap)
        self.params_at = check_int(seq[3], "sources.seq.params_at", -1, self.seen_all[0])
        self.cusum.set_prior(PRIOR_WEIGHT, 0.0)
        self.cusum.load_state(seq[4])
