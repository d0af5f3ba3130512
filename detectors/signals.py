"""Windowed signals of one inference stream (one model version on one deployment).

Each signal accumulates mergeable sketches over a tumbling window of ``W`` events
(vectorized per micro-batch segment) and runs its calibrated tests once per window
(:mod:`detectors.calibration`), not per event. A test result is a :data:`Hit`:
``(signal, detector, key, statistic, threshold, reference summary, current summary,
index of the tipping event in the stream batch)``.

Besides the window tests, predicted classes, categories, unseen categories and triggers each
get a per-event Bernoulli CUSUM (detector ``cusum``, :mod:`detectors.indicators`), calibrated
to the signal's share of the budget; the window tests stay as a second opinion.

Window sketches merge (histograms and counts add); the window *tests* are sequential over
windows and are owned by one worker, like the sequential detectors.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from detectors import calibration as cal
from detectors.cusum import PRIOR_WEIGHT, CusumBank
from detectors.columns import INVALID_KINDS, CategoricalColumn
from detectors.indicators import IndicatorCusums
from detectors.masks import all_true
from detectors.profile import CategoricalProfile, ReferenceProfile
from detectors.sketches import Counts, Vocabulary, chi2_distance, smoothed
from detectors.spec import CalibrationSpec, FeatureSpec, TriggerSpec
from detectors.errors import StateFormatError
from detectors.state import check_counts, check_int, check_list

Hit = tuple[str, str, str, float, float, dict[str, Any], dict[str, Any], int]
ANY_FEATURE = "<any feature>"  # input integrity's event-level key
MIN_WINDOW_VALUES = 30
REFERENCE_GROWTH = 8


class GrowingReference:
    """Reference counts sharpened by clean windows (see :mod:`detectors.calibration`).

    Windows without any detection accumulate in ``pending``; once pending holds as many
    observations as the reference, it is merged in (so thresholds change in a few doubling
    steps), until the reference is ``REFERENCE_GROWTH`` times its initial size.
    """

    __slots__ = ("counts", "n", "cap", "pending", "pending_n")

    def __init__(self, counts: Any) -> None:
        self.counts = np.asarray(counts, dtype=np.int64).copy()
        self.n = int(self.counts.sum())
        self.cap = self.n * REFERENCE_GROWTH
        self.pending = np.zeros_like(self.counts)
        self.pending_n = 0

    def clean(self, cur: np.ndarray) -> None:
        if self.n >= self.cap:
            return
        self.pending += cur
        self.pending_n += int(cur.sum())
        if self.pending_n >= self.n and self.pending_n:
            self.counts += self.pending
            self.n += self.pending_n
            self.pending[:] = 0
            self.pending_n = 0

    def to_state(self) -> list[Any]:
        return [self.counts.tolist(), self.pending.tolist()]

    def load_state(self, st: Any) -> None:
        st = check_list(st, "reference", 2)
        k = self.counts.size
        self.counts = np.array(check_counts(st[0], "reference", k), dtype=np.int64)
        self.pending = np.array(check_counts(st[1], "reference.pending", k), dtype=np.int64)
        self.n, self.pending_n = int(self.counts.sum()), int(self.pending.sum())


def _r(x: float) -> float:
    return float(round(x, 6))


class CategoricalDrift:
    """G test (reported as weighted JS, chi-square distance in the evidence) of bounded top-k + other
    counts vs the reference, and the never-seen rate, per window; per event (detector ``cusum``) a
    Bernoulli CUSUM of each top-k category's indicator and of ``<other>`` (both ways), and of the
    never-seen indicator (up only), against the grown reference's rates (the never-seen one: the
    profile's split-half estimate). The feature is one key: its CUSUM budget is split evenly over
    its ``k + 2`` columns."""

    signal = "categorical_drift"

    def __init__(self, f: FeatureSpec, prof: CategoricalProfile, c: CalibrationSpec) -> None:
        self.key = f.name
        self.prof = prof
        self.vocab = Vocabulary(prof.top, prof.rest)
        self.k = self.vocab.k
        self.grow = GrowingReference(prof.counts)
        self.counts = Counts(self.k + 2)
        sh = cal.SHARES[self.signal]
        self.alpha = cal.window_alpha(c.false_alarms_per_million, sh["js"], c.window)
        self.alpha_unseen = cal.window_alpha(c.false_alarms_per_million, sh["unseen_rate"], c.window)
        self.enabled = prof.n >= MIN_WINDOW_VALUES
        self.names = self.vocab.top + ["<other>", "<unseen>"]
        cols = self.k + 2
        rate = c.false_alarms_per_million * sh["cusum"] / 1e6 / (2 * len(c.rate_ratios) * cols)
        self.seq = IndicatorCusums(cols, list(c.rate_ratios), rate, np.arange(cols) == self.k + 1)
        self.win_seq = 0  # CUSUM detections in the open window (such a window never enters the reference)
        self._derive()

    def _derive(self) -> None:
        hits = np.concatenate((self.grow.counts, [self.prof.unseen_hits]))
        n = np.array([self.grow.n] * (self.k + 1) + [self.prof.unseen_n])
        self.seq.derive(hits, n)

    def accumulate(self, col: CategoricalColumn, lo: int, hi: int) -> list[Hit]:
        """Window counts, and every valid value through the CUSUMs (hit index: in the batch)."""
        vals = col.values[lo:hi]
        rows = None
        if not all_true(col.valid[lo:hi]):
            rows = np.flatnonzero(col.valid[lo:hi])
            vals = [vals[i] for i in rows.tolist()]
        codes = self.vocab.codes(vals)
        self.counts.update_codes(codes)
        if not codes.size:
            return []
        X = np.zeros((codes.size, self.k + 2))
        X[np.arange(codes.size), np.minimum(codes, self.k)] = 1.0
        X[:, self.k + 1] = codes == self.k + 1
        out: list[Hit] = []
        for row, c, side, j, stat, thr, run, mean in self.seq.update(X):
            sd = self.seq.scale(c)
            unseen = c == self.k + 1
            ref_rate = (self.prof.unseen_hits / max(self.prof.unseen_n, 1) if unseen
                        else self.grow.counts[c] / max(self.grow.n, 1))
            out.append((self.signal, "cusum", self.key, stat / sd, thr / sd,
                        {"category": self.names[c], "rate": _r(ref_rate),
                         "n": self.prof.unseen_n if unseen else self.grow.n},
                        {"category": self.names[c], "direction": side, "odds_ratio": _r(self.seq.odds_ratio(side, j)),
                         "rate": _r(mean), "values_since_restart": run},
                        lo + (row if rows is None else int(rows[row]))))
        self.win_seq += len(out)
        return out

    def close(self, idx: int) -> list[Hit]:
        out: list[Hit] = []
        c = self.counts.counts
        n = int(c.sum())
        if self.enabled and n >= MIN_WINDOW_VALUES:
            k = self.k
            cur = np.concatenate((c[:k], [c[k] + c[k + 1]]))
            ref, nref = self.grow.counts, self.grow.n
            b = k + 1
            js, thr = cal.g_test(cur, ref, self.alpha)
            fired = [("js", float(js[0]), float(thr[0]))] if js[0] >= thr[0] else []
            hi = cal.rate_bounds(self.prof.unseen_hits, self.prof.unseen_n, n, self.alpha_unseen, False)[1]
            if c[k + 1] >= hi:
                fired.append(("unseen_rate", float(c[k + 1] / n), hi / n))
            if fired:  # evidence is built only when a test fires
                names = self.vocab.top + ["<other>"]
                ref_s = {"top": dict(zip(names, smoothed(ref).round(4).tolist())), "n": nref,
                         "unseen_rate": _r(self.prof.unseen_hits / max(self.prof.unseen_n, 1))}
                cur_s = {"top": dict(zip(names, smoothed(cur).round(4).tolist())), "n": n,
                         "chi2_distance": _r(chi2_distance(cur, ref)),
                         "unseen_rate": _r(c[k + 1] / n)}
                out.extend((self.signal, det, self.key, stat, thr, ref_s, cur_s, idx) for det, stat, thr in fired)
            elif not self.win_seq:
                before = self.grow.n
                self.grow.clean(cur)
                if self.grow.n != before:
                    self._derive()
        self.counts.reset()
        self.win_seq = 0
        return out

    def to_state(self) -> list[Any]:
        return [self.counts.to_state(), self.grow.to_state(), self.seq.to_state(), self.win_seq]

    def load_state(self, st: Any) -> None:
        st = check_list(st, "categorical", 4)
        self.counts.load_state(st[0])
        self.grow.load_state(st[1])
        self._derive()
        self.seq.load_state(st[2])
        self.win_seq = check_int(st[3], "categorical.win_seq")


class PredictionDrift:
    """Per-class prediction rates: a per-event CUSUM of each predicted-class indicator (detector
    ``cusum``, odds ratios ``CalibrationSpec.rate_ratios`` both ways, thresholds from the budget
    and the grown reference's rates, :func:`~detectors.calibration.bernoulli_cusum`), and per
    window the two-sided rate test and one class dominating."""

    signal = "prediction_drift"

    def __init__(self, classes: list[str], prof: ReferenceProfile, c: CalibrationSpec) -> None:
        self.names = list(classes) + ["<other>"]
        self.grow = GrowingReference(prof.predictions)
        self.counts = Counts(len(self.names))
        self.alpha = cal.window_alpha(c.false_alarms_per_million, cal.SHARES[self.signal]["class_rate"], c.window)
        self.dominance = c.dominance_share
        self.ratios = list(c.rate_ratios)
        self.rate = c.false_alarms_per_million * cal.SHARES[self.signal]["cusum"] / 1e6 / (2 * len(self.ratios))
        self.cusum = CusumBank(len(self.names), len(self.ratios))
        self._eye = np.eye(len(self.names))
        self._derive()

    def _derive(self) -> None:
        ref, nref = self.grow.counts, self.grow.n
        k_up, k_dn, h_up, h_dn, sd = cal.bernoulli_cusum(ref, np.full(ref.size, nref), self.ratios, self.rate)
        self.cusum.set_params(k_up, k_dn, h_up, h_dn, sd, np.full(ref.size, nref >= MIN_WINDOW_VALUES))
        self.cusum.set_prior(min(nref, PRIOR_WEIGHT), (ref + 0.5) / (nref + 1.0))

    def sequential(self, codes: np.ndarray, lo: int) -> list[Hit]:
        """Predicted-class indicators of a segment through the CUSUMs (hit index: ``lo`` + row)."""
        out: list[Hit] = []
        for row, col, side, j, stat, thr, run, mean in self.cusum.update(self._eye[codes]):
            sd = float(self.cusum.scale[col])
            out.append((self.signal, "cusum", self.names[col], stat / sd, thr / sd,
                        {"rate": _r(self.grow.counts[col] / max(self.grow.n, 1)), "n": self.grow.n},
                        {"direction": side, "odds_ratio": _r(self.ratios[j] if side == "up" else 1 / self.ratios[j]),
                         "rate": _r(mean), "events_since_restart": run}, lo + row))
        return out

    def close(self, idx: int) -> list[Hit]:
        out: list[Hit] = []
        c = self.counts.counts
        n = int(c.sum())
        ref, nref = self.grow.counts, self.grow.n
        if n >= MIN_WINDOW_VALUES and nref:
            top = int(c.argmax())
            for j, name in enumerate(self.names):
                lo, hi = cal.rate_bounds(int(ref[j]), nref, n, self.alpha)
                cj = int(c[j])
                if cj >= hi or cj < lo:
                    ref_s = {"rate": _r(ref[j] / nref), "n": nref}
                    cur_s = {"rate": _r(cj / n), "n": n, "count": cj}
                    out.append((self.signal, "class_rate", name, cj / n, (hi if cj >= hi else lo) / n,
                                ref_s, cur_s, idx))
                    if j == top and cj / n >= self.dominance and ref[j] / nref < self.dominance and cj >= hi:
                        out.append((self.signal, "dominance", name, cj / n, self.dominance, ref_s, cur_s, idx))
            if not out:
                before = self.grow.n
                self.grow.clean(c.copy())
                if self.grow.n != before:
                    self._derive()
        self.counts.reset()
        return out


class InputIntegrity:
    """Invalid values (NaN, Inf, null, wrong type, out of range) of every feature.

    Two tests share the signal's budget (:data:`detectors.calibration.SHARES`):

    - ``invalid_rate``: the window's invalid count against the beta-binomial predictive of
      the reference (:func:`~detectors.calibration.rate_bounds`), once per window.
    - ``invalid_burst``: ``k`` invalid values of one feature within ``span`` events
      (``CalibrationSpec.window // 4``), or ``k - 1`` within a shorter span, checked at every
      invalid value. ``k`` is the smallest count whose alarm rate per event under the
      reference posterior is within half the test's budget
      (:func:`~detectors.calibration.burst_count`), the short span the longest that keeps
      ``k - 1`` within the other half (:func:`~detectors.calibration.burst_span`). A feature
      that has never been invalid in a reference of 16k events fires on 3 invalid values in
      106 events or 4 in 250 at the default calibration; the window test needs 6 to 10 in a
      window of 1000.

    Both tests also run on one more key, ``<any feature>``: the event-level indicator "some
    feature of this event is invalid". A broken pipeline that corrupts a few random features
    of 4% of the events gives each feature 0.4% (4 hits in 250 events take about 1,000 events)
    but the event-level key 4% (about 100 events). Why a burst count and not a likelihood-
    ratio CUSUM on the indicator: with a reference rate of 0 in n events the rate is only
    known to be below about 1/n, and averaged over its posterior two invalid values within
    ``s`` events already cost ``E[p^2] s`` (3e-9 s at n = 16k) against a budget of 5e-9 per
    event, so no calibrated test fires on one or two values; the burst count is the
    posterior-exact form of that test. The event-level reference counts the sum of the
    features' reference invalid values (an upper bound: a conservative rate).

    The reference (invalid and total counts) grows with windows without a detection, up to
    ``REFERENCE_GROWTH`` times its initial size, as the histograms' references do: a zero
    rate seen over more events bounds the rate more tightly.

    ``accumulate`` receives the batch's ``(events x features)`` integrity codes, or None
    when the whole batch is valid (the common case costs one integer addition).
    """

    signal = "input_integrity"

    def __init__(self, names: list[str], ref_invalid: list[int], ref_n: list[int], c: CalibrationSpec) -> None:
        # one more key: the event-level indicator "some feature of this event is invalid"; its
        # reference count is bounded by the sum of the features' (conservative: a higher rate);
        # with a single feature it would repeat that feature's key
        self.pooled = len(names) >= 2
        extra = 1 if self.pooled else 0
        self.names = list(names) + [ANY_FEATURE] * extra
        F = len(self.names)
        self.ref_invalid = [int(x) for x in ref_invalid] + [int(sum(ref_invalid))] * extra
        self.ref_n = [int(x) for x in ref_n] + [int(max(ref_n, default=0))] * extra
        self.cap = [n * REFERENCE_GROWTH for n in self.ref_n]
        self.pend_invalid, self.pend_n = [0] * F, [0] * F
        self.counts = np.zeros((F, 5), dtype=np.int64)
        self.offs = np.arange(F, dtype=np.int64)[None, :] * 6
        self.n = 0
        self.pos = 0  # events of the stream seen since arming
        self.win_bursts = 0  # burst detections in the open window (such a window never enters the reference)
        sh = cal.SHARES[self.signal]
        self.alpha = cal.window_alpha(c.false_alarms_per_million, sh["invalid_rate"], c.window)
        self.burst_budget = c.false_alarms_per_million * sh["invalid_burst"] / 1e6  # alarms per event
        self.span = max(c.window // 4, 2)
        self.recent: list[list[list[int]]] = [[] for _ in range(F)]  # [position, kind code] of the last k - 1 invalid values
        self.k = [0] * F
        self._derive()

    def _derive(self) -> None:
        self.k, self.rules = [], []
        half = self.burst_budget / 2
        for f in range(len(self.names)):
            k = cal.burst_count(self.ref_invalid[f], self.ref_n[f], self.span, half)
            short = cal.burst_span(self.ref_invalid[f], self.ref_n[f], k - 1, half, self.span - 1) if k > 2 else 0
            self.k.append(k)
            self.rules.append(([(k - 1, short)] if k > 2 and short >= k - 1 else [])
                              + ([(k, self.span)] if k <= self.span else []))

    def accumulate(self, kinds: np.ndarray | None, lo: int, hi: int) -> list[Hit]:
        """Window counts, and burst tests at each invalid value (hit index: in the batch)."""
        out: list[Hit] = []
        base = self.pos - lo
        self.n += hi - lo
        self.pos += hi - lo
        if kinds is not None:
            seg = kinds[lo:hi]
            if seg.any():
                F = len(self.names)
                if self.pooled:  # the event-level key takes the kind of the event's first invalid feature
                    bad = seg != 0
                    seg = np.column_stack((seg, np.where(bad.any(axis=1), seg[np.arange(seg.shape[0]), bad.argmax(axis=1)], 0)))
                self.counts += np.bincount((seg + self.offs).ravel(), minlength=6 * F).reshape(F, 6)[:, 1:]
                segt = seg.T
                fs, rs = np.nonzero(segt)  # feature-major, positions increasing per feature
                for f, r, code in zip(fs.tolist(), rs.tolist(), segt[fs, rs].tolist()):
                    out.extend(self._burst(f, base + lo + r, int(code), lo + r))
                out.sort(key=lambda h: h[7])  # event order (then feature), whatever the batch cuts
        return out

    def _burst(self, f: int, at: int, code: int, idx: int) -> list[Hit]:
        k, rec = self.k[f], self.recent[f]
        for kr, span in self.rules[f]:
            if len(rec) >= kr - 1 and (kr == 1 or at - rec[-(kr - 1)][0] < span):
                burst = rec[len(rec) - (kr - 1):] + [[at, code]]
                rec.clear()
                self.win_bursts += 1
                kinds = [0] * len(INVALID_KINDS)
                for _, c in burst:
                    kinds[c - 1] += 1
                ref_s = {"invalid_rate": _r(self.ref_invalid[f] / max(self.ref_n[f], 1)), "n": self.ref_n[f]}
                cur_s = {"invalid_values": kr, "events": at - burst[0][0] + 1, "span": span,
                         "by_kind": dict(zip(INVALID_KINDS, kinds))}
                return [(self.signal, "invalid_burst", self.names[f], float(kr), float(kr), ref_s, cur_s, idx)]
        if not self.rules[f]:
            return []
        rec.append([at, code])
        if len(rec) > max(k - 1, 0):
            del rec[: len(rec) - max(k - 1, 0)]
        return []

    def close(self, idx: int) -> list[Hit]:
        out: list[Hit] = []
        bad = self.counts.sum(axis=1)
        for f in np.flatnonzero(bad).tolist():
            b = int(bad[f])
            hi = cal.rate_bounds(self.ref_invalid[f], self.ref_n[f], self.n, self.alpha, False)[1]
            if b >= hi:
                cur_s = {"invalid_rate": _r(b / self.n), "n": self.n,
                         "by_kind": dict(zip(INVALID_KINDS, self.counts[f].tolist()))}
                ref_s = {"invalid_rate": _r(self.ref_invalid[f] / max(self.ref_n[f], 1)), "n": self.ref_n[f]}
                out.append((self.signal, "invalid_rate", self.names[f], b / self.n, hi / self.n, ref_s, cur_s, idx))
        if not out and not self.win_bursts:  # a clean window sharpens the reference (doubling steps)
            grew = False
            for f in range(len(self.names)):
                if self.ref_n[f] >= self.cap[f]:
                    continue
                self.pend_invalid[f] += int(bad[f])
                self.pend_n[f] += self.n
                if self.pend_n[f] >= self.ref_n[f]:
                    self.ref_invalid[f] += self.pend_invalid[f]
                    self.ref_n[f] += self.pend_n[f]
                    self.pend_invalid[f] = self.pend_n[f] = 0
                    grew = True
            if grew:
                self._derive()
        self.counts[:] = 0
        self.n = 0
        self.win_bursts = 0
        return out

    def to_state(self) -> list[Any]:
        return [self.counts.ravel().tolist(), self.n, self.pos, self.ref_invalid, self.ref_n,
                self.pend_invalid, self.pend_n, self.recent, self.win_bursts]

    def load_state(self, st: Any) -> None:
        st = check_list(st, "integrity", 9)
        F = len(self.names)
        self.counts = np.array(check_counts(st[0], "integrity", 5 * F), dtype=np.int64).reshape(F, 5)
        self.n = check_int(st[1], "integrity.n")
        self.pos = check_int(st[2], "integrity.pos")
        self.win_bursts = check_int(st[8], "integrity.win_bursts")
        self.ref_invalid = check_counts(st[3], "integrity.ref_invalid", F)
        self.ref_n = check_counts(st[4], "integrity.ref_n", F)
        self.pend_invalid = check_counts(st[5], "integrity.pend_invalid", F)
        self.pend_n = check_counts(st[6], "integrity.pend_n", F)
        recent = check_list(st[7], "integrity.recent", F)
        self.recent = [[[check_int(x, "integrity.recent", 0, self.pos), check_int(c, "integrity.recent", 1, 5)]
                        for x, c in (check_list(e, "integrity.recent", 2) for e in check_list(r, "integrity.recent"))]
                       for r in recent]
        if (any(a > b for a, b in zip(self.ref_invalid, self.ref_n))
                or any(a > b for a, b in zip(self.pend_invalid, self.pend_n))
                or int(self.counts.sum(axis=1).max(initial=0)) > self.n or self.n > self.pos):
            raise StateFormatError("integrity: invalid counts exceed their totals")
        self._derive()


class TriggerWatch:
    """Triggered-event rate per window and per event (detector ``cusum``: a Bernoulli CUSUM of the
    trigger's indicator against its reference rate, both ways), and P(class | trigger) vs the
    baseline per trigger window.

    The baseline is the reference's class distribution under the trigger when the reference
    saw enough triggered events, else the reference's overall class distribution. A backdoor
    shows as P(class | trigger) far above it.
    """

    signal = "trigger"

    def __init__(self, t: TriggerSpec, classes: list[str], prof: ReferenceProfile, c: CalibrationSpec) -> None:
        self.key = t.name
        self.names = list(classes) + ["<other>"]
        row = prof.triggers.get(t.name, [0] * (len(self.names) + 1))
        self.ref_trig, self.ref_n = row[0], prof.n
        if row[0] >= MIN_WINDOW_VALUES:
            self.base, self.base_n, self.base_kind = np.asarray(row[1:]), row[0], "reference_under_trigger"
        else:
            self.base, self.base_n, self.base_kind = (np.asarray(prof.predictions), max(int(sum(prof.predictions)), 1),
                                                      "reference_overall")
        self.m = c.min_trigger_events
        sh = cal.SHARES[self.signal]
        self.alpha_rate = cal.window_alpha(c.false_alarms_per_million, sh["triggered_rate"], c.window)
        self.budget_cls = c.false_alarms_per_million * sh["p_class_given_trigger"] / len(self.names)
        self.win_trig = 0
        self.win_n = 0
        rate = c.false_alarms_per_million * sh["cusum"] / 1e6 / (2 * len(c.rate_ratios))
        self.seq = IndicatorCusums(1, list(c.rate_ratios), rate)
        self.seq.derive(np.array([self.ref_trig]), np.array([self.ref_n]))
        self.cls = Counts(len(self.names))      # predictions under the trigger (trigger window)
        self.overall = Counts(len(self.names))  # all predictions during the trigger window

    def accumulate(self, mask: np.ndarray, preds: np.ndarray, lo: int, hi: int) -> list[Hit]:
        """Window counts, and trigger windows closing exactly at their ``m``-th triggered event."""
        m = mask[lo:hi]
        self.win_n += hi - lo
        self.win_trig += int(m.sum())
        out = self._sequential(m, lo)
        where = np.flatnonzero(m)
        start = 0
        while where.size:
            need = self.m - self.cls.n
            if where.size < need:
                self.cls.update_codes(preds[lo:hi][where])
                self.overall.update_codes(preds[lo + start:hi])
                return out
            end = int(where[need - 1]) + 1
            self.cls.update_codes(preds[lo:hi][where[:need]])
            self.overall.update_codes(preds[lo + start:lo + end])
            out.extend(self._close_trigger_window(lo + end - 1))
            where = where[need:]
            start = end
        self.overall.update_codes(preds[lo + start:hi])
        return out

    def _sequential(self, m: np.ndarray, lo: int) -> list[Hit]:
        """The trigger's indicator of every event of a segment through its CUSUM (hit index: ``lo`` + row)."""
        out: list[Hit] = []
        for row, _, side, j, stat, thr, run, mean in self.seq.update(m[:, None].astype(np.float64)):
            sd = self.seq.scale(0)
            out.append((self.signal, "cusum", self.key, stat / sd, thr / sd,
                        {"rate": _r(self.ref_trig / max(self.ref_n, 1)), "n": self.ref_n},
                        {"direction": side, "odds_ratio": _r(self.seq.odds_ratio(side, j)), "rate": _r(mean),
                         "events_since_restart": run}, lo + row))
        return out

    def _close_trigger_window(self, idx: int) -> list[Hit]:
        out: list[Hit] = []
        c, n = self.cls.counts, self.cls.n
        on = max(self.overall.n, 1)
        # the budget is per million events: a trigger window spanning `on` events may spend
        # on/1e6 of it (rounded down to a power of two so thresholds stay cacheable)
        alpha = min(0.01, self.budget_cls * on / 1e6)
        alpha = 2.0 ** np.floor(np.log2(alpha))
        for j, name in enumerate(self.names):
            hi = cal.rate_bounds(int(self.base[j]), int(self.base_n), n, alpha, False)[1]
            if c[j] >= hi:
                ref_s = {"p_class": _r(self.base[j] / self.base_n), "baseline": self.base_kind,
                         "class": name}
                cur_s = {"p_class_given_trigger": _r(c[j] / n), "p_class_overall": _r(self.overall.counts[j] / on),
                         "triggered": n, "class": name}
                out.append((self.signal, "p_class_given_trigger", self.key, c[j] / n, hi / n, ref_s, cur_s, idx))
        self.cls.reset()
        self.overall.reset()
        return out

    def close(self, idx: int) -> list[Hit]:
        out: list[Hit] = []
        n, k = self.win_n, self.win_trig
        if n >= MIN_WINDOW_VALUES:
            lo, hi = cal.rate_bounds(self.ref_trig, self.ref_n, n, self.alpha_rate)
            if k >= hi or k < lo:
                out.append((self.signal, "triggered_rate", self.key, k / n, (hi if k >= hi else lo) / n,
                            {"rate": _r(self.ref_trig / max(self.ref_n, 1)), "n": self.ref_n},
                            {"rate": _r(k / n), "n": n}, idx))
        self.win_n = self.win_trig = 0
        return out

    def to_state(self) -> list[Any]:
        return [self.win_trig, self.win_n, self.cls.to_state(), self.overall.to_state(), self.seq.to_state()]

    def load_state(self, st: Any) -> None:
        st = check_list(st, "trigger", 5)
        self.seq.load_state(st[4])
        self.win_trig = check_int(st[0], "trigger.win_trig")
        self.win_n = check_int(st[1], "trigger.win_n")
        self.cls.load_state(st[2])
        self.overall.load_state(st[3])
        if self.cls.n >= self.m:
            raise StateFormatError("trigger window overfull")
