"""Confidence drift of one inference stream: the mean confidence and the low-confidence rate.

Per event (detector ``cusum``), two sequential tests share the signal's CUSUM budget
(:data:`detectors.calibration.SHARES`) half and half:

- the confidence's *normal score* under the reference, ``Phi^-1(u)`` of its mid-rank ``u`` on a
  fine quantile grid of the reference confidences (as numeric features,
  :func:`detectors.numeric.score_table`), through a self-starting two-sided CUSUM calibrated on the
  score's own discrete law (:func:`~detectors.calibration.score_cusum`): a shift of the
  confidence's location, distribution-free (confidences pile up near 1 and tie);
- the low-confidence indicator (``confidence < ModelSpec.low_confidence``), a Bernoulli CUSUM
  against the grown reference rate (:mod:`detectors.indicators`), both ways.

Per window, the mean z-test and the low-confidence rate test stay as a second opinion.
A profile written before the confidence grid existed has none: its score CUSUM stays off.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from detectors import calibration as cal
from detectors.cusum import PRIOR_WEIGHT, CusumBank
from detectors.errors import StateFormatError
from detectors.indicators import IndicatorCusums
from detectors.masks import any_true
from detectors.numeric import MIN_RANK_SD, PSEUDO_COUNT, drift_weights, rank_table, score_table
from detectors.profile import ReferenceProfile
from detectors.signals import MIN_WINDOW_VALUES, REFERENCE_GROWTH, Hit, _r
from detectors.sketches import Moments
from detectors.spec import CalibrationSpec
from detectors.state import check_int, check_list

SCORE_SHARE = 0.5  # of the confidence CUSUM budget: the normal-score CUSUM; the rest to the low-confidence indicator


class ConfidenceDrift:
    """Mean confidence and the rate of low-confidence predictions, per event and per window (module doc).

    The reference (mean, spread and low-confidence count) is sharpened by clean windows like
    the histograms (:class:`~detectors.signals.GrowingReference`, :mod:`detectors.calibration` point 4): an error
    of the reference mean is common to every later window, so a reference of a few thousand
    events that is off by chance would make the z-test fire far above its target rate.
    """

    signal = "confidence_drift"

    def __init__(self, prof: ReferenceProfile, c: CalibrationSpec, low: float) -> None:
        n, mean, std, low_n = prof.confidence
        self.ref = _moments(int(n), float(mean), float(std))
        self.lowref = int(low_n)
        self.cap = int(n) * REFERENCE_GROWTH
        self.pending = Moments()
        self.pending_low = 0
        self.low = low
        self.mom = Moments()
        self.low_count = 0
        sh = cal.SHARES[self.signal]
        self.alpha = cal.window_alpha(c.false_alarms_per_million, sh["mean"], c.window)
        self.alpha_low = cal.window_alpha(c.false_alarms_per_million, sh["low_rate"], c.window)
        self.z = cal.z_threshold(self.alpha)
        budget = c.false_alarms_per_million * sh["cusum"] / 1e6
        self.seq_low = IndicatorCusums(1, list(c.rate_ratios), budget * (1 - SCORE_SHARE) / (2 * len(c.rate_ratios)))
        self.win_seq = 0  # CUSUM detections in the open window (such a window never enters the reference)
        self.drifts = list(c.cusum_drifts)
        self.grid = np.asarray(prof.confidence_grid, dtype=np.float64)
        counts = np.asarray(prof.confidence_grid_counts, dtype=np.float64)
        self.seq_score = CusumBank(1, len(self.drifts))
        self.stab = score_table(prof.confidence_grid_counts) if counts.size else np.zeros(1)
        self.score_on = bool(counts.size and counts.sum() >= MIN_WINDOW_VALUES)
        if self.score_on:
            probs = (counts + PSEUDO_COUNT)[None, :]
            rates = budget * SCORE_SHARE / (2 * len(self.drifts)) * drift_weights(self.drifts)
            k, h_up, h_dn, sd = cal.score_cusum(self.stab[None, :], probs, self.drifts, rates)
            rsd = cal.score_cusum(rank_table(prof.confidence_grid_counts)[None, :], probs, self.drifts[:1], 1e-6)[3]
            self.score_on = bool(rsd[0] >= MIN_RANK_SD)  # (nearly) constant confidences: no rank spread
            self.score_sd = float(sd[0])
            self.score_mean = float((probs[0] * self.stab).sum() / probs.sum())
            self.seq_score.set_params(k, k, h_up, h_dn, sd, np.array([self.score_on]))
            self.seq_score.set_prior(min(int(n), PRIOR_WEIGHT), self.score_mean)
        self._derive()

    def _derive(self) -> None:
        self.seq_low.derive(np.array([self.lowref]), np.array([self.ref.n]))

    @property
    def nref(self) -> int:
        return self.ref.n

    def accumulate(self, conf: np.ndarray, lo: int = 0) -> list[Hit]:
        """Window sums, and every confidence through the CUSUMs (hit index: ``lo`` + row of ``conf``)."""
        missing = np.isnan(conf)
        rows = np.flatnonzero(~missing) if any_true(missing) else None
        x = conf if rows is None else conf[rows]
        self.mom.update(x)
        low = x < self.low
        self.low_count += int(np.count_nonzero(low))
        if not x.size:
            return []
        out: list[Hit] = []
        at = (lambda r: lo + r) if rows is None else (lambda r: lo + int(rows[r]))
        score_hits = self.seq_score.update(self.stab[self.grid.searchsorted(x, side="right")][:, None]) \
            if self.score_on else []
        low_hits = self.seq_low.update(low.astype(np.float64)[:, None])
        if not score_hits and not low_hits:
            return out
        ref_s = {"mean": _r(self.ref.mean), "low_rate": _r(self.lowref / max(self.ref.n, 1)), "n": self.ref.n}
        for row, _, side, j, stat, thr, run, mean in score_hits:
            out.append((self.signal, "cusum", "", stat / self.score_sd, thr / self.score_sd,
                        {**ref_s, "score": "normal_score", "score_mean": _r(self.score_mean),
                         "score_sd": _r(self.score_sd)},
                        {"score": "normal_score", "direction": side, "drift_sd": self.drifts[j],
                         "score_mean_since_restart": _r(mean), "values_since_restart": run}, at(row)))
        for row, _, side, j, stat, thr, run, mean in low_hits:
            sd = self.seq_low.scale(0)
            out.append((self.signal, "cusum", "", stat / sd, thr / sd, {**ref_s, "score": "low_confidence"},
                        {"score": "low_confidence", "direction": side,
                         "odds_ratio": _r(self.seq_low.odds_ratio(side, j)), "low_rate_since_restart": _r(mean),
                         "values_since_restart": run}, at(row)))
        if len(out) > 1:
            out.sort(key=lambda h: h[7])
        self.win_seq += len(out)
        return out

    def close(self, idx: int) -> list[Hit]:
        out: list[Hit] = []
        n, nref = self.mom.n, self.ref.n
        if n >= MIN_WINDOW_VALUES and nref >= MIN_WINDOW_VALUES:
            mref, sref = self.ref.mean, self.ref.std
            ref_s = {"mean": _r(mref), "low_rate": _r(self.lowref / nref), "n": nref}
            cur_s = {"mean": _r(self.mom.mean), "low_rate": _r(self.low_count / n), "n": n}
            sd = max(sref, 1e-6) * np.sqrt(1.0 / n + 1.0 / nref)
            z = abs(self.mom.mean - mref) / sd
            if z >= self.z:
                out.append((self.signal, "mean", "", float(z), self.z, ref_s, cur_s, idx))
            lo, hi = cal.rate_bounds(self.lowref, nref, n, self.alpha_low)
            if self.low_count >= hi or self.low_count < lo:
                out.append((self.signal, "low_rate", "", self.low_count / n,
                            (hi if self.low_count >= hi else lo) / n, ref_s, cur_s, idx))
            if not out and not self.win_seq and nref < self.cap:
                self.pending = self.pending.merge(self.mom)
                self.pending_low += self.low_count
                if self.pending.n >= nref:  # doubling steps, as GrowingReference
                    self.ref = self.ref.merge(self.pending)
                    self.lowref += self.pending_low
                    self.pending, self.pending_low = Moments(), 0
                    self._derive()
        self.mom.reset()
        self.low_count = 0
        self.win_seq = 0
        return out

    def to_state(self) -> list[Any]:
        return [self.mom.to_state(), self.low_count, self.ref.to_state(), self.lowref,
                self.pending.to_state(), self.pending_low, self.seq_score.to_state(), self.seq_low.to_state(),
                self.win_seq]

    def load_state(self, st: Any) -> None:
        st = check_list(st, "confidence", 9)
        self.mom.load_state(st[0])
        self.low_count = check_int(st[1], "confidence.low")
        self.ref.load_state(st[2])
        self.lowref = check_int(st[3], "confidence.lowref")
        self.pending.load_state(st[4])
        self.pending_low = check_int(st[5], "confidence.pending_low")
        if self.low_count > self.mom.n or self.lowref > self.ref.n or self.pending_low > self.pending.n:
            raise StateFormatError("confidence: low-confidence counts exceed their totals")
        self._derive()
        self.seq_score.load_state(st[6])
        self.seq_low.load_state(st[7])
        self.win_seq = check_int(st[8], "confidence.win_seq")


def _moments(n: int, mean: float, std: float) -> Moments:
    """The :class:`Moments` sketch of ``n`` values with this mean and (sample) standard deviation."""
    m = Moments()
    if n:
        m.n, m.shift, m.s1, m.s2 = n, mean, 0.0, std * std * max(n - 1, 0)
    return m
