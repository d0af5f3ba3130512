"""Canary rollback decision.

A canary version is rolled back when it diverges from the stable version serving the same
traffic period (prediction distribution, mean confidence, error rate on joined labels), or
when a page-severity drift alert fires on the canary deployment alone. The decision names
the alert ids that justify it and carries a deterministic idempotency key (one per model,
canary version and stable version), so an actuator applying it twice does nothing twice.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import math

import numpy as np
from scipy import stats as _st

from detectors import calibration as cal
from detectors.cusum import PRIOR_WEIGHT, CusumBank
from detectors.errors import StateFormatError
from detectors.ids import SCHEMA, stable_id
from detectors.sketches import Moments, jensen_shannon, smoothed
from detectors.state import check_counts, check_float, check_int, check_list, check_str, enc_float

MIN_SIDE = 30  # canary and stable events (confidences) before the per-event comparison is armed
# events the per-event comparisons' running means start from (at 0): a difference score's mean is
# zero by construction, so unlike a score judged against a reference sample it needs no
# self-starting correction, and a canary that differs from its first event must not be absorbed
DIFF_PRIOR_WEIGHT = 100_000
#: canary events at which the per-event comparisons are (re-)derived before the first window ends
EARLY_DERIVE = (100, 200, 400)


def difference_cusum(c: np.ndarray, spread: np.ndarray, pi: float, drifts: list[float], rate: float
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Drifts and thresholds of two-sided CUSUMs on ``(x - c) * (1[canary] / pi - 1[stable] / (1 - pi))``
    for 0/1 indicators ``x`` of rate ``c`` (one row each): the four-point law has mean zero whatever
    the true rate, and the adjustment coefficient is the smallest over the rates ``c - spread``,
    ``c`` and ``c + spread`` (as :func:`~detectors.calibration.bernoulli_cusum`): a rate
    underestimated either way (a rare class, or one near 1 whose misses are rare) does not overspend
    the budget. Returns ``(k, h_up, h_down, sd)`` per (row, drift), ``sd`` per row.

    >>> k, h_up, h_dn, sd = difference_cusum(np.array([0.5, 0.997]), np.array([0.01, 0.002]), 0.2, [0.25], 1e-8)
    >>> bool((h_up > 0).all() and (h_dn > 0).all() and h_up[1, 0] / sd[1] > h_up[0, 0] / sd[0])
    True
    """
    C = np.asarray(c, dtype=np.float64)[:, None]
    vals = np.hstack(((1 - C) / pi, -C / pi, -(1 - C) / (1 - pi), C / (1 - pi)))

    def law(q: np.ndarray) -> np.ndarray:
        Q = np.clip(q, 1e-9, 1 - 1e-9)[:, None]
        return np.hstack((pi * Q, pi * (1 - Q), (1 - pi) * Q, (1 - pi) * (1 - Q)))

    kk, _, _, sd = cal.score_cusum(vals, law(C[:, 0]), drifts, rate)
    R, D = kk.shape
    rows = np.repeat(np.arange(R), D)
    th_up, th_dn = np.full((R, D), np.inf), np.full((R, D), np.inf)
    for q in (C[:, 0] - spread, C[:, 0], C[:, 0] + spread):
        pr = law(q)[rows]
        th_up = np.minimum(th_up, cal.lundberg_theta(vals[rows], pr, kk.ravel()).reshape(R, D))
        th_dn = np.minimum(th_dn, cal.lundberg_theta(-vals[rows], pr, kk.ravel()).reshape(R, D))
    sdk = np.repeat(sd, D).reshape(R, D)
    h_up = cal.cusum_threshold(th_up, kk, sdk, rate, vals.max(axis=1)[:, None] - kk)
    h_dn = cal.cusum_threshold(th_dn, kk, sdk, rate, (-vals).max(axis=1)[:, None] - kk)
    return kk, h_up, h_dn, sd


@dataclass(slots=True)
class RollbackDecision:
    """Roll ``canary_version`` back to ``stable_version``; ``evidence`` lists alert ids."""

    id: str
    idempotency_key: str
    model: str
    canary_version: str
    stable_version: str
    reason: str
    evidence: list[str]
    event_id: str
    position: int
    ts: float
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA, "kind": "rollback", "id": self.id,
            "idempotency_key": self.idempotency_key, "model": self.model,
            "canary_version": self.canary_version, "stable_version": self.stable_version,
            "reason": self.reason, "evidence": list(self.evidence), "details": self.details,
            "event_id": self.event_id, "position": self.position, "ts": self.ts,
        }


def rollback_key(model: str, canary_version: str, stable_version: str) -> str:
    """Idempotency key of rolling ``canary_version`` back to ``stable_version``."""
    return stable_id(model, canary_version, stable_version, "rollback")


class CanaryJudge:
    """Compares the canary with stable over the same traffic period.

    Every ``CanaryPolicy.window`` canary predictions (after ``min_events``), the canary's
    class distribution is compared with stable's predictions of the same period
    (chi-square homogeneity test AND Jensen-Shannon above ``max_prediction_js``), and its
    mean confidence (z-test AND a drop above ``max_confidence_drop``). Every ``min_labels``
    canary labels, error rates since the canary started are compared (one-sided
    two-proportion z-test AND an increase above ``max_error_rate_increase``). Hits use the
    signal ``canary_divergence``.

    Per event (detector ``cusum``), the same comparison runs sequentially on canary and stable
    events: per predicted class ``j`` the score ``(1[pred = j] - p_j) * (1[canary] / pi - 1[stable] / (1 - pi))``
    (``pi``: the canary's share of those events, ``p_j``: the class's rate over both; key
    ``prediction``, both ways), and for the confidence the same score of ``1[confidence < cut]``
    (key ``confidence``, up only: the canary is more often below the cut), ``cut`` being stable's
    mean confidence when the comparisons are first derived. Each score's mean is the canary's rate minus stable's,
    zero while both behave alike whatever the traffic does; centring the indicator on ``p_j``
    keeps it zero when the canary's share of traffic changes (a ramp from 5% to 50%, a canary
    that stops while stable goes on). Its law is four-point, known from the counts since the canary started
    (:func:`difference_cusum`: thresholds hold for rates two posterior standard deviations either side)
    (derived after :data:`EARLY_DERIVE` canary predictions, then re-derived every
    ``CanaryPolicy.window``). The CUSUMs start at the first
    derivation with both sides seen (their running means start at 0 with the weight of
    :data:`DIFF_PRIOR_WEIGHT` events: the null mean is zero by construction).

    Per joined label (detector ``cusum``), a self-starting CUSUM runs on the score
    ``err * (1[canary] / pi - 1[stable] / (1 - pi))`` of canary and stable labels (``pi``: the
    canary's share of them): its mean is the canary's error rate minus stable's, zero while
    both err alike, whatever the common error rate does. Its parameters are re-derived every
    ``min_labels`` canary labels from the counts since the canary started (conservative error
    rate), its budget is ``CalibrationSpec.false_alarms_per_million`` per million labels.
    """

    def __init__(self, n_classes: int, policy: Any, per_million: float = 0.01,
                 drifts: tuple[float, ...] = (0.1, 0.25, 0.6)) -> None:
        self.p = policy
        self.k = n_classes
        self.version: str | None = None
        self.total = 0
        self._fresh()
        self.lab = [0, 0, 0, 0]  # canary n, canary errors, stable n, stable errors (since the canary started)
        self.z = cal.normal_isf(policy.false_alarm_probability)
        self.drifts = list(drifts)
        self.rate = per_million * cal.SHARES["canary_divergence"]["cusum"] / 1e6 / len(self.drifts)
        self.cusum = CusumBank(1, len(self.drifts))
        self.snap = [0, 0, 0, 0]
        self.pi = 0.5
        self.rate_pred = per_million * cal.SHARES["canary_divergence"]["cusum"] / 1e6 / (2 * self.k * len(self.drifts))
        self._fresh_seq()

    def _fresh(self) -> None:
        self.cc = np.zeros(self.k, dtype=np.int64)
        self.sc = np.zeros(self.k, dtype=np.int64)
        self.cm = Moments()
        self.sm = Moments()

    def _fresh_seq(self) -> None:
        """Per-event comparison state of a new canary (see class doc): counts since it started,
        the confidence cut, the snapshot its parameters came from, and the CUSUMs."""
        self.inf = [0, 0]  # canary, stable events since the canary started
        self.icls = np.zeros(self.k, dtype=np.int64)  # their predicted classes (both together)
        self.cut: float | None = None
        self.ilow = [0, 0, 0, 0]  # canary n, canary low, stable n, stable low (confidence, since the cut)
        self.isnap: list[Any] = [0, 0, [0] * self.k, [0, 0, 0, 0]]
        self.ipi = 0.5
        self.iseq = CusumBank(self.k + 1, len(self.drifts))  # columns: predicted classes, then confidence
        self.iseq.set_prior(DIFF_PRIOR_WEIGHT, 0.0)  # canary and stable alike until shown otherwise
        self._derive_inf(self.isnap)

    def _derive_inf(self, snap: list[Any]) -> None:
        """Per-event prediction and confidence score laws from the counts ``snap``."""
        self.isnap = [snap[0], snap[1], list(snap[2]), list(snap[3])]
        cn, sn, cls, low = snap
        k, D = self.k, len(self.drifts)
        if cn < MIN_SIDE or sn < MIN_SIDE:
            self.ipi = 0.5
            self.icenter = np.zeros(k + 1)
            self.iseq.set_params(np.ones((k + 1, D)), np.ones((k + 1, D)), np.full((k + 1, D), np.inf),
                                 np.full((k + 1, D), np.inf), np.ones(k + 1), np.zeros(k + 1, dtype=bool))
            return
        pi = min(max(cn / (cn + sn), 1e-3), 0.999)
        a = np.append(np.asarray(cls, dtype=np.float64), low[1] + low[3]) + 0.5
        b = np.append(np.full(k, float(cn + sn)), low[0] + low[2]) - a + 1.0
        c = a / (a + b)  # the rate each indicator is centred on (Jeffreys posterior mean)
        spread = 2 * np.sqrt(c * (1 - c) / (a + b + 1))
        kk, h_up, h_dn, sd = difference_cusum(c, spread, pi, self.drifts, self.rate_pred)
        # the confidence column: up only, the whole key's budget on one side
        kc, hc_up, _, _ = difference_cusum(c[k:], spread[k:], pi, self.drifts, self.rate)
        kk[k], h_up[k], h_dn[k] = kc[0], hc_up[0], np.inf
        on = np.append(np.asarray(cls) > 0, low[0] >= MIN_SIDE and low[2] >= MIN_SIDE and low[1] + low[3] > 0)
        self.iseq.set_params(kk, kk, h_up, h_dn, sd, on)
        self.ipi = pi
        self.icenter = c

    def start(self, version: str) -> None:
        if version != self.version:
            self.version = version
            self.total = 0
            self._fresh()
            self._fresh_seq()
            self.lab = [0, 0, 0, 0]
            self.cusum = CusumBank(1, len(self.drifts))
            self.cusum.set_prior(PRIOR_WEIGHT, 0.0)  # canary and stable err alike until shown otherwise
            self._derive([0, 0, 0, 0])

    def _derive(self, snap: list[int]) -> None:
        """Error-difference score law from the label counts ``snap`` (see class doc)."""
        self.snap = list(snap)
        cn, ce, sn, se = snap
        m = self.p.min_labels
        if cn < m or sn < m or ce + se == 0:
            # no law yet (the CUSUM is off); pi still weighs the scores its running mean sums, so it
            # is a function of ``snap`` alone, as a judge restored from its state derives it
            self.pi = 0.5
            self.cusum.set_params(np.ones((1, len(self.drifts))), np.ones((1, len(self.drifts))),
                                  np.full((1, len(self.drifts)), np.inf), np.full((1, len(self.drifts)), np.inf),
                                  np.ones(1), np.zeros(1, dtype=bool))
            return
        pi = min(max(cn / (cn + sn), 1e-3), 0.999)
        a, b = ce + se + 0.5, cn + sn - ce - se + 0.5
        p = a / (a + b)
        p = min(p + 2 * math.sqrt(p * (1 - p) / (a + b + 1)), 0.999)
        vals = np.array([[0.0, 1 / pi, -1 / (1 - pi)]])
        probs = np.array([[1 - p, p * pi, p * (1 - pi)]])
        k, h_up, _, sd = cal.score_cusum(vals, probs, self.drifts, self.rate)
        self.cusum.set_params(k, k, h_up, np.full_like(h_up, np.inf), sd)
        self.pi = pi

    def process(self, is_canary: np.ndarray, is_stable: np.ndarray, preds: np.ndarray, conf: np.ndarray
                ) -> list[tuple[str, str, str, float, float, dict[str, Any], dict[str, Any], int]]:
        """Canary and stable events of one run: per-event CUSUMs and the window comparisons, by event."""
        self._inf_hits: list = []
        out = self._process(is_canary, is_stable, preds, conf)
        return sorted(out + self._inf_hits, key=lambda h: h[7])

    def _process(self, is_canary: np.ndarray, is_stable: np.ndarray, preds: np.ndarray, conf: np.ndarray) -> list:
        out = []
        w = self.p.window
        where = np.flatnonzero(is_canary)
        start = 0
        while True:
            need = w - int(self.cc.sum())
            early = [e - self.total for e in EARLY_DERIVE if 0 < e - self.total < need]
            step = early[0] if early else need
            if where.size < step:
                self._add(is_canary, is_stable, preds, conf, start, preds.size)
                self.total += where.size
                return out
            end = int(where[step - 1]) + 1
            self._add(is_canary, is_stable, preds, conf, start, end)
            self.total += step
            where = where[step:]
            start = end
            if step == need and self.total >= self.p.min_events:
                out.extend(self._compare(end - 1))
            if self.cut is None and self.sm.n >= MIN_SIDE:  # stable's mean confidence so far in the first window
                self.cut = float(self.sm.mean)
            self._derive_inf([self.inf[0], self.inf[1], self.icls.tolist(), list(self.ilow)])
            if step == need:
                self._fresh()

    def _add(self, ic, is_, preds, conf, lo, hi) -> None:
        c, s = ic[lo:hi], is_[lo:hi]
        self._sequential(c, s, preds[lo:hi], conf[lo:hi], lo)
        self.cc += np.bincount(preds[lo:hi][c], minlength=self.k)[: self.k]
        self.sc += np.bincount(preds[lo:hi][s], minlength=self.k)[: self.k]
        for m, mask in ((self.cm, c), (self.sm, s)):
            x = conf[lo:hi][mask]
            m.update(x[~np.isnan(x)])

    def _sequential(self, c: np.ndarray, s: np.ndarray, preds: np.ndarray, conf: np.ndarray, lo: int) -> None:
        """Canary and stable events of a segment through the per-event CUSUMs (see class doc)."""
        rows = np.flatnonzero(c | s)
        if not rows.size:
            return
        armed = self.inf[0] >= MIN_SIDE and self.isnap[0] >= MIN_SIDE and self.isnap[1] >= MIN_SIDE
        ci, pr, cf = c[rows], preds[rows], conf[rows]
        w = np.where(ci, 1.0 / self.ipi, -1.0 / (1.0 - self.ipi))
        k = self.k
        Y = np.zeros((rows.size, k + 1))
        Y[np.arange(rows.size), np.minimum(pr, k - 1)] = 1.0
        okc = ~np.isnan(cf)
        low = np.zeros(rows.size, dtype=bool)
        if self.cut is not None:
            low[okc] = cf[okc] < self.cut
        Y[:, k] = low
        Y -= self.icenter[None, :]
        Y *= w[:, None]
        valid = None
        if not okc.all():
            valid = np.ones(Y.shape, dtype=bool)
            valid[:, k] = okc
        for row, col, side, j, stat, thr, run, mean in (self.iseq.update(Y, valid) if armed else ()):
            sd = float(self.iseq.scale[col])
            if col < k:
                ref = {"rate_canary_and_stable": round(float(self.icls[col]) / max(self.inf[0] + self.inf[1], 1), 6),
                       "class": int(col), "canary_share": round(self.ipi, 6)}
                cur = {"excess_rate_since_restart": round(mean, 6), "direction": side, "drift_sd": self.drifts[j],
                       "events_since_restart": run, "class": int(col)}
                key = "prediction"
            else:
                ref = {"confidence_cut": round(float(self.cut or 0.0), 6), "canary_share": round(self.ipi, 6),
                       "low_rate": round((self.ilow[1] + self.ilow[3]) / max(self.ilow[0] + self.ilow[2], 1), 6)}
                cur = {"excess_low_rate_since_restart": round(mean, 6), "drift_sd": self.drifts[j],
                       "events_since_restart": run}
                key = "confidence"
            self._inf_hits.append(("canary_divergence", "cusum", key, stat / sd, thr / sd, ref, cur,
                                   lo + int(rows[row])))
        self.inf[0] += int(ci.sum())
        self.inf[1] += int(rows.size - ci.sum())
        self.icls += np.bincount(np.minimum(pr, k - 1), minlength=k)[:k]
        if self.cut is not None:
            for side, m in ((0, ci & okc), (2, ~ci & okc)):
                self.ilow[side] += int(m.sum())
                self.ilow[side + 1] += int(low[m].sum())

    def _compare(self, idx: int) -> list:
        out = []
        nc, ns = int(self.cc.sum()), int(self.sc.sum())
        if ns >= 30:
            tab = np.vstack((self.cc, self.sc)).astype(np.float64) + 0.5
            exp = tab.sum(1, keepdims=True) * tab.sum(0, keepdims=True) / tab.sum()
            chi = float(((tab - exp) ** 2 / exp).sum())
            pval = float(_st.chi2.sf(chi, self.k - 1))
            js = jensen_shannon(self.cc, self.sc)
            if pval <= self.p.false_alarm_probability and js >= self.p.max_prediction_js:
                out.append(("canary_divergence", "prediction", "prediction", js, self.p.max_prediction_js,
                            {"stable_rates": (smoothed(self.sc)).round(4).tolist(), "n": ns},
                            {"canary_rates": (smoothed(self.cc)).round(4).tolist(), "n": nc, "p_value": pval}, idx))
        if self.cm.n >= 30 and self.sm.n >= 30:
            drop = self.sm.mean - self.cm.mean
            sd = math.sqrt(self.sm.std ** 2 / self.sm.n + self.cm.std ** 2 / self.cm.n) + 1e-9
            if drop / sd >= self.z and drop >= self.p.max_confidence_drop:
                out.append(("canary_divergence", "confidence", "confidence", drop, self.p.max_confidence_drop,
                            {"stable_mean": round(self.sm.mean, 6), "n": self.sm.n},
                            {"canary_mean": round(self.cm.mean, 6), "n": self.cm.n, "z": round(drop / sd, 3)}, idx))
        return out

    def process_labels(self, is_canary: np.ndarray, is_stable: np.ndarray, err: np.ndarray) -> list:
        self._seq_hits: list = []
        out = self._process_labels(is_canary, is_stable, err)
        return sorted(out + self._seq_hits, key=lambda h: h[7])

    def _process_labels(self, is_canary: np.ndarray, is_stable: np.ndarray, err: np.ndarray) -> list:
        out = []
        m = self.p.min_labels
        where = np.flatnonzero(is_canary)
        start = 0
        while True:
            need = m - (self.lab[0] % m)
            if where.size < need:
                self._add_lab(is_canary, is_stable, err, start, err.size)
                return out
            end = int(where[need - 1]) + 1
            self._add_lab(is_canary, is_stable, err, start, end)
            where = where[need:]
            start = end
            out.extend(self._compare_errors(end - 1))
            self._derive(self.lab)

    def _add_lab(self, ic, is_, err, lo, hi) -> None:
        c, s = ic[lo:hi], is_[lo:hi]
        both = c | s
        if both.any():
            rows = np.flatnonzero(both)
            e = err[lo:hi][rows].astype(np.float64)
            y = e * np.where(c[rows], 1.0 / self.pi, -1.0 / (1.0 - self.pi))
            for row, _, side, j, stat, thr, run, mean in self.cusum.update(y[:, None]):
                sd = float(self.cusum.scale[0])
                self._seq_hits.append(("canary_divergence", "cusum", "error_rate", stat / sd, thr / sd,
                                       {"stable_error_rate": round(self.lab[3] / max(self.lab[2], 1), 6),
                                        "n": self.lab[2], "canary_label_share": round(self.pi, 6)},
                                       {"excess_error_rate_since_restart": round(mean, 6), "labels_since_restart": run,
                                        "drift_sd": self.drifts[j]}, lo + int(rows[row])))
        self._add_counts(ic, is_, err, lo, hi)

    def _add_counts(self, ic, is_, err, lo, hi) -> None:
        e = err[lo:hi]
        self.lab[0] += int(ic[lo:hi].sum())
        self.lab[1] += int(e[ic[lo:hi]].sum())
        self.lab[2] += int(is_[lo:hi].sum())
        self.lab[3] += int(e[is_[lo:hi]].sum())

    def _compare_errors(self, idx: int) -> list:
        cn, ce, sn, se = self.lab
        if cn < self.p.min_labels or sn < self.p.min_labels:
            return []
        p1, p0 = ce / cn, se / sn
        pool = (ce + se) / (cn + sn)
        sd = math.sqrt(max(pool * (1 - pool), 1e-9) * (1 / cn + 1 / sn))
        if (p1 - p0) / sd >= self.z and p1 - p0 >= self.p.max_error_rate_increase:
            return [("canary_divergence", "error_rate", "error_rate", p1 - p0, self.p.max_error_rate_increase,
                     {"stable_error_rate": round(p0, 6), "n": sn}, {"canary_error_rate": round(p1, 6), "n": cn}, idx)]
        return []

    def to_state(self) -> dict[str, Any]:
        return {"version": self.version, "total": self.total, "cc": self.cc.tolist(), "sc": self.sc.tolist(),
                "cm": self.cm.to_state(), "sm": self.sm.to_state(), "lab": list(self.lab),
                "snap": list(self.snap), "cusum": self.cusum.to_state(),
                "inference": [self.inf, self.icls.tolist(), enc_float(self.cut) if self.cut is not None else None,
                              self.ilow, self.isnap, self.iseq.to_state()]}

    def load_state(self, st: Any) -> None:
        if not isinstance(st, dict):
            raise StateFormatError("canary: expected an object")
        v = st.get("version")
        self.version = None if v is None else check_str(v, "canary.version")
        self.total = check_int(st.get("total"), "canary.total")
        self.cc = np.array(check_counts(st.get("cc"), "canary.cc", self.k), dtype=np.int64)
        self.sc = np.array(check_counts(st.get("sc"), "canary.sc", self.k), dtype=np.int64)
        self.cm.load_state(st.get("cm"))
        self.sm.load_state(st.get("sm"))
        self.lab = check_counts(st.get("lab"), "canary.lab", 4)
        snap = check_counts(st.get("snap"), "canary.snap", 4)
        if any(a > b for a, b in zip(snap, self.lab)):
            raise StateFormatError("canary.snap ahead of the label counts")
        self._derive(snap)
        self.cusum.set_prior(PRIOR_WEIGHT, 0.0)
        self.cusum.load_state(st.get("cusum"))
        inf = check_list(st.get("inference"), "canary.inference", 6)
        self._fresh_seq()
        self.inf = check_counts(inf[0], "canary.inference.events", 2)
        self.icls = np.array(check_counts(inf[1], "canary.inference.classes", self.k), dtype=np.int64)
        self.cut = None if inf[2] is None else check_float(inf[2], "canary.inference.cut", finite=True)
        self.ilow = check_counts(inf[3], "canary.inference.low", 4)
        isnap = check_list(inf[4], "canary.inference.snapshot", 4)
        isnap = [check_int(isnap[0], "canary.inference.snapshot"), check_int(isnap[1], "canary.inference.snapshot"),
                 check_counts(isnap[2], "canary.inference.snapshot", self.k),
                 check_counts(isnap[3], "canary.inference.snapshot", 4)]
        if (int(self.icls.sum()) != self.inf[0] + self.inf[1] or self.ilow[0] + self.ilow[2] > sum(self.inf)
                or self.ilow[1] > self.ilow[0] or self.ilow[3] > self.ilow[2]
                or isnap[0] > self.inf[0] or isnap[1] > self.inf[1]):
            raise StateFormatError("canary.inference: counts inconsistent")
        self._derive_inf(isnap)
        self.iseq.load_state(inf[5])
