"""Numeric feature drift for all numeric features of one stream, processed as one matrix.

Per micro-batch the numeric features form an ``(events x features)`` float matrix (invalid
values already masked out by input integrity), so each step below is a handful of numpy
calls or one compiled pass (numba) for the whole batch rather than per feature or per event:

- **Per-event sequential detection** (``cusum``): every value is replaced by its *mid-rank*
  under the reference, ``u = (reference values below its grid bin + half of those in it) / n``,
  on a fine quantile grid of the reference (:func:`~detectors.profile.rank_grid`: 64 bins,
  and a bin of its own for every tied value holding at least one bin's share), and ``u`` by
  its normal score ``z = Phi^-1(u)`` (:func:`score_table`). Two self-starting two-sided CUSUMs
  (:class:`~detectors.cusum.CusumBank`) per feature run on every event: on ``z`` (location;
  the normal score keeps the Gaussian efficiency that raw mid-ranks lose) and on ``z^2``
  (Klotz's scale score: mass moving into or out of the tails, which leaves the mean rank
  alone), with ``LOCATION_SHARE`` and the rest of the budget, split over the drifts
  ``CalibrationSpec.cusum_drifts`` (standard deviations of each score) by
  :func:`drift_weights`. Scores are bounded (one outlier moves a CUSUM by a bounded step,
  whatever its magnitude) and distribution-free (a continuous feature gives the scores of
  uniform ranks, a discrete or tied one a known discrete law: the reference's bin masses);
  thresholds come from the budget and each feature's own score law
  (:func:`~detectors.calibration.score_cusum`), so heavy tails, ties and multimodal shapes
  keep the false-alarm rate. A feature whose reference is (nearly) constant has no rank
  spread and no CUSUM (its histogram test and input integrity still watch it).
- **Windowed distribution tests** (``js``: the G test, PSI in its evidence; ``ks``): bin indices against every
  feature's reference quantile edges (with the grid scores, in one compiled pass:
  ``_bins_and_scores``), window histograms by one
  ``bincount``; tests run once per window of ``CalibrationSpec.window`` events, as a second
  opinion for slow shape changes that keep the ranks' mean.

Histograms and window sums merge exactly; the CUSUMs are sequential and do not (see
:mod:`detectors.cusum`).
"""
from __future__ import annotations

import math
from itertools import chain
from typing import Any

import numba
import numpy as np
from scipy.special import ndtri

from detectors import calibration as cal
from detectors.cusum import NO_MASK, PRIOR_WEIGHT, CusumBank
from detectors.errors import StateFormatError
from detectors.masks import all_true
from detectors.profile import RANK_GRID, NumericProfile

REFERENCE_GROWTH = 8  # see detectors.calibration: clean windows sharpen the reference up to this factor
MIN_RANK_SD = 0.01  # mid-rank spread below which a feature counts as constant (no CUSUM)
PSEUDO_COUNT = 0.5  # added to every grid bin's reference count in the score laws (an empty bin is not impossible)
LOCATION_SHARE = 0.75  # of the CUSUM budget: the normal-score (location) CUSUMs; the rest to the tail (Klotz) ones
SCORES = ("normal_score", "squared_normal_score")
from detectors.signals import MIN_WINDOW_VALUES, Hit, _r
from detectors.spec import CalibrationSpec, FeatureSpec
from detectors.state import check_counts, check_float, check_list, enc_float


def rank_table(grid_counts: list[int]) -> np.ndarray:
    """Mid-rank of each grid bin: ``(values below the bin + half of the bin's) / n``."""
    return _rank_rows(np.asarray(grid_counts, dtype=np.float64)[None, :])[0]


def _rank_rows(counts: np.ndarray) -> np.ndarray:
    """:func:`rank_table` of every row of ``counts`` (rows padded with zeros keep their prefix)."""
    n = np.maximum(counts.sum(axis=1, keepdims=True), 1.0)
    return (np.cumsum(counts, axis=1) - 0.5 * counts) / n


def _score_rows(counts: np.ndarray) -> np.ndarray:
    """:func:`score_table` of every row of ``counts``."""
    lo = 0.5 / RANK_GRID
    return ndtri(np.clip(_rank_rows(counts), lo, 1.0 - lo))


def _padded(rows: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Count lists as one zero-padded float matrix and the mask of its real entries."""
    sizes = np.array([len(r) for r in rows], dtype=np.int64)
    inside = np.arange(int(sizes.max(initial=0)))[None, :] < sizes[:, None]
    out = np.zeros(inside.shape)
    out[inside] = np.fromiter(chain.from_iterable(rows), dtype=np.float64, count=int(sizes.sum()))
    return out, inside


def score_table(grid_counts: list[int]) -> np.ndarray:
    """Normal score ``Phi^-1(u)`` of each grid bin's mid-rank ``u`` (van der Waerden): the location
    score the CUSUMs see. ``u`` is held within half a grid bin of 0 and 1 (``|z| <= 2.42`` with 64
    bins), the resolution of the grid: a continuous feature's edge bins sit there already, and a
    tied feature's rare extreme values (a Poisson count of 5 seen once in the reference) would
    otherwise carry scores whose masses the reference cannot estimate (their squares ran the
    tail CUSUM over budget)."""
    return _score_rows(np.asarray(grid_counts, dtype=np.float64)[None, :])[0]


def drift_weights(drifts: list[float]) -> np.ndarray:
    """Share of the CUSUM budget per drift, relative to an even split: proportional to ``1 / drift``.

    A CUSUM with drift ``k`` detects shifts of about ``2 k`` after about ``log(ARL) / (2 k^2)``
    values, so budget moved from a large drift to a small one saves many events on small shifts
    and costs about one on large ones (``log`` of the weights' ratio over the large shift's KL).
    """
    w = 1.0 / np.asarray(drifts, dtype=np.float64)
    return DRIFT_WEIGHTING * w * w.size / w.sum() + (1 - DRIFT_WEIGHTING)


DRIFT_WEIGHTING = 1.0


@numba.njit((numba.float64[:], numba.int64, numba.float64), cache=True, nogil=True)
def _right(edges, size, x):  # pragma: no cover - compiled
    """``np.searchsorted(edges[:size], x, side="right")`` (NaN after every edge)."""
    lo, hi = 0, size
    while lo < hi:
        mid = (lo + hi) >> 1
        if x < edges[mid]:
            hi = mid
        else:
            lo = mid + 1
    return lo


# argument types given: compiled (or loaded from the cache) at import, not in the first batch
@numba.njit((numba.float64[:, :], numba.float64[:, :], numba.int64[:], numba.int64[:], numba.float64[:, :],
             numba.int64[:], numba.float64[:, :], numba.float64[:, :], numba.int64[:, :], numba.float64[:, :]),
            cache=True, nogil=True)
def _bins_and_scores(X, E, esize, offs, G, gsize, UT, TT, B, U):  # pragma: no cover - compiled
    """Per value of ``X`` (events x features): its histogram bin code into ``B`` (features x
    events, offset per feature) and its normal and squared normal scores into ``U`` (events x
    2 features), from each feature's padded edges, grid and score tables."""
    n, F = X.shape
    for f in range(F):
        for i in range(n):
            x = X[i, f]
            B[f, i] = _right(E[f], esize[f], x) + offs[f]
            g = _right(G[f], gsize[f], x)
            U[i, f] = UT[f, g]
            U[i, F + f] = TT[f, g]


# argument types given: compiled (or loaded from the cache) at import, not in the first batch
@numba.njit((numba.int64[:, :], numba.boolean[:, :], numba.boolean, numba.int64, numba.int64, numba.float64[:, :],
             numba.int64, numba.int64[:, :], numba.int64[:], numba.float64[:], numba.float64[:]), cache=True, nogil=True)
def _window_add(B, valid_t, masked, lo, hi, XZ, nb, counts, wn, s1, s2):  # pragma: no cover - compiled
    """Add rows ``lo:hi`` to the window: bin counts and value counts of valid values, and the
    sums of values and squares (``XZ`` holds zeros where invalid) added row by row in arrival
    order, so that they do not depend on batch cuts (see :func:`detectors.sketches._moment_sums`)."""
    F = B.shape[0]
    for f in range(F):
        base = f * nb
        for i in range(lo, hi):
            if masked and not valid_t[f, i]:
                continue
            counts[f, B[f, i] - base] += 1
            wn[f] += 1
    for i in range(lo, hi):
        for f in range(F):
            x = XZ[i, f]
            s1[f] += x
            s2[f] += x * x


class NumericBank:
    """Windowed and sequential drift detectors of every numeric feature of one stream."""

    signal = "numeric_drift"

    def __init__(self, feats: list[FeatureSpec], profs: list[NumericProfile], c: CalibrationSpec) -> None:
        F = len(feats)
        self.F = F
        self.names = [f.name for f in feats]
        self.profs = profs
        bmax = max((len(p.edges) for p in profs), default=0)
        self.E = np.full((F, max(bmax, 1)), np.inf)
        for j, p in enumerate(profs):
            self.E[j, : len(p.edges)] = p.edges
        self.nb = self.E.shape[1] + 1
        self.offs = np.arange(F, dtype=np.int64) * self.nb
        self.ref = [np.asarray(p.counts, dtype=np.int64) for p in profs]
        self.bins = np.array([len(p.edges) + 1 for p in profs], dtype=np.int64)
        self.mask = np.arange(self.nb)[None, :] < self.bins[:, None]
        R = np.zeros((F, self.nb))
        for j, r in enumerate(self.ref):
            R[j, : r.size] = r
        self.ref_mat = R
        self._ref_derived()
        self.nref = np.array([p.n for p in profs], dtype=np.int64)
        self.ref_cap = self.nref * REFERENCE_GROWTH
        self.pending = np.zeros((F, self.nb))  # clean windows waiting to be merged into the reference
        self.pending_n = np.zeros(F, dtype=np.int64)
        self.counts = np.zeros((F, self.nb), dtype=np.int64)
        self.s1 = np.zeros(F)
        self.s2 = np.zeros(F)
        self.wn = np.zeros(F, dtype=np.int64)
        self.enabled = np.array([p.n >= MIN_WINDOW_VALUES for p in profs], dtype=bool)
        sh = cal.SHARES[self.signal]
        self.grid = [np.asarray(p.grid, dtype=np.float64) for p in profs]
        counts, inside = _padded([p.grid_counts for p in profs])
        ranks = np.where(inside, _rank_rows(counts), 0.0)
        scores = np.where(inside, _score_rows(counts), 0.0)
        vals = np.concatenate((scores, scores * scores))
        probs = np.tile(np.where(inside, counts + PSEUDO_COUNT, 0.0), (2, 1))
        utab = [scores[j, : int(inside[j].sum())] for j in range(F)]
        # the edges, grids and score tables padded into matrices for _bins_and_scores
        self.esize = self.bins - 1
        self.gsize = np.array([g.size for g in self.grid], dtype=np.int64)
        self.G = np.full((F, max(int(self.gsize.max(initial=0)), 1)), np.inf)
        self.UT = np.zeros((F, self.G.shape[1] + 1))
        for j in range(F):
            self.G[j, : self.gsize[j]] = self.grid[j]
            self.UT[j, : utab[j].size] = utab[j]
        self.TT = self.UT * self.UT
        self.drifts = list(c.cusum_drifts)
        base = c.false_alarms_per_million * sh["cusum"] / 1e6 / (2 * len(self.drifts)) * drift_weights(self.drifts)
        k, h_up, h_dn, sd = cal.score_cusum(vals[:F], probs[:F], self.drifts, base * LOCATION_SHARE)
        kt, ht_up, ht_dn, sdt = cal.score_cusum(vals[F:], probs[F:], self.drifts, base * (1 - LOCATION_SHARE))
        _, _, _, rsd = cal.score_cusum(ranks, probs[:F], self.drifts[:1], 1e-6)
        self.score_sd = np.concatenate((sd, sdt))
        on = self.enabled & (rsd >= MIN_RANK_SD)  # a (nearly) constant feature has no rank spread: no CUSUM
        self.cusum = CusumBank(2 * F, len(self.drifts))
        self.cusum.set_params(np.concatenate((k, kt)), np.concatenate((k, kt)), np.concatenate((h_up, ht_up)),
                              np.concatenate((h_dn, ht_dn)), self.score_sd, np.concatenate((on, on)))
        self.score_mean = (probs * vals).sum(axis=1) / np.maximum(probs.sum(axis=1), 1.0)
        self.cusum.set_prior(np.concatenate((np.minimum(self.nref, PRIOR_WEIGHT),) * 2), self.score_mean)
        self.alpha = cal.window_alpha(c.false_alarms_per_million, sh["js"], c.window)
        self.alpha_ks = cal.window_alpha(c.false_alarms_per_million, sh["ks"], c.window)
        self.window = c.window
        self._bidx: np.ndarray | None = None
        self._xz: np.ndarray | None = None
        self._u: np.ndarray | None = None
        self._valid: np.ndarray | None = None

    def _ref_derived(self) -> None:
        R = self.ref_mat
        self.ref_p = _smoothed_rows(R, self.mask)
        self.ref_cdf = np.cumsum(R, axis=1) / np.maximum(R.sum(axis=1, keepdims=True), 1)

    # -- per batch ---------------------------------------------------------------------------
    def prepare(self, X: np.ndarray, valid: np.ndarray) -> None:
        """Bin codes and zero-filled values of a batch (used by :meth:`accumulate`/:meth:`sequential`)."""
        n, F = X.shape[0], self.F
        B, U = np.empty((F, n), dtype=np.int64), np.empty((n, 2 * F))
        _bins_and_scores(np.asarray(X, dtype=np.float64), self.E, self.esize, self.offs, self.G, self.gsize,
                         self.UT, self.TT, B, U)  # NaNs land in the top bins; masked later
        self._bidx = B
        self._u = U
        self._all_valid = all_true(valid)
        self._valid_t = None if self._all_valid else np.ascontiguousarray(valid.T)
        self._xz = X if self._all_valid else np.where(valid, X, 0.0)
        self._valid = valid

    def accumulate(self, lo: int, hi: int) -> None:
        """Add events ``lo:hi`` of the prepared batch to the window sketches."""
        masked = not self._all_valid
        _window_add(self._bidx, self._valid_t if masked else NO_MASK, masked, lo, hi, self._xz, self.nb,
                    self.counts, self.wn, self.s1, self.s2)

    def sequential(self, idx: np.ndarray) -> list[Hit]:
        """Scores of the prepared batch through the per-feature CUSUMs (hits index into ``idx``)."""
        valid = None if self._all_valid else np.concatenate((self._valid, self._valid), axis=1)
        hits = self.cusum.update(self._u, valid)
        out: list[Hit] = []
        F = self.F
        for row, c, side, j, stat, thr, run, mean in hits:
            f, tail = c % F, c >= F
            p = self.profs[f]
            sd = float(self.score_sd[c])
            out.append((self.signal, "cusum", self.names[f], stat / sd, thr / sd,
                        {"mean": _r(p.mean), "std": _r(p.std), "score": SCORES[tail],
                         "score_mean": _r(float(self.score_mean[c])), "score_sd": _r(sd)},
                        {"score": SCORES[tail], "direction": side, "drift_sd": self.drifts[j],
                         "score_mean_since_restart": _r(mean), "values_since_restart": run}, int(idx[row])))
        return out

    def close(self, idx: int) -> list[Hit]:
        """Window tests (G test reported as weighted JS, KS) of every feature at once; resets the window.

        See :mod:`detectors.calibration`: the histogram decision is the two-sample G test
        (far-tail accurate); PSI is part of the evidence.
        """
        out: list[Hit] = []
        C = self.counts.astype(np.float64)
        js_v, js_t = cal.g_test(C, self.ref_mat, self.alpha)
        ks_v = np.abs(np.cumsum(C, axis=1) / np.maximum(C.sum(axis=1, keepdims=True), 1) - self.ref_cdf).max(axis=1)
        for f in np.flatnonzero(self.enabled & (self.wn >= MIN_WINDOW_VALUES)).tolist():
            n, nref, bins = int(self.wn[f]), int(self.nref[f]), int(self.bins[f])
            fired = [(det, float(stat), float(thr)) for det, stat, thr in (
                ("js", js_v[f], js_t[f]),
                ("ks", ks_v[f], cal.ks_threshold(n, nref, self.alpha_ks)),
            ) if stat >= thr]
            if fired:  # evidence is built only when a test fires
                pr = self.profs[f]
                mean = self.s1[f] / n
                std = math.sqrt(max(self.s2[f] / n - mean * mean, 0.0))
                ref_s = {"mean": _r(pr.mean), "std": _r(pr.std), "n": nref, "edges": list(pr.edges),
                         "bins": self.ref_p[f, :bins].round(4).tolist()}
                ref_s["n"] = nref
                p = _smoothed_rows(C[f:f + 1], self.mask[f:f + 1])[0]
                q = self.ref_p[f]
                cur_s = {"mean": _r(mean), "std": _r(std), "n": n, "bins": p[:bins].round(4).tolist(),
                         "psi": _r(float(((p - q) * np.log(p / q)).sum()))}
                out.extend((self.signal, det, self.names[f], stat, thr, ref_s, cur_s, idx) for det, stat, thr in fired)
            elif self.nref[f] < self.ref_cap[f]:
                self.pending[f] += C[f]
                self.pending_n[f] += n
        grow = np.flatnonzero((self.pending_n >= self.nref) & (self.pending_n > 0))
        if grow.size:  # merge once the clean windows match the reference in size (doubling steps)
            self.ref_mat[grow] += self.pending[grow]
            self.nref[grow] += self.pending_n[grow]
            self.pending[grow] = 0
            self.pending_n[grow] = 0
            self._ref_derived()
        self.counts[:] = 0
        self.s1[:] = 0
        self.s2[:] = 0
        self.wn[:] = 0
        return out

    # -- stats / state -------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        stat, thr = self.cusum.exceedance()
        F, bank = self.F, self.cusum
        stat_l, thr_l = stat.tolist(), thr.tolist()  # Python numbers of whole arrays at once
        detections = (bank.detections[:F] + bank.detections[F:2 * F]).tolist()
        armed, runs = bank.enabled[:F].tolist(), bank.n[:F].astype(np.int64).tolist()
        window_values, nref, bins = self.wn.tolist(), self.nref.tolist(), self.bins.tolist()
        return {name: {"cusum_statistic": stat_l[f], "cusum_threshold": thr_l[f],
                       "tail_cusum_statistic": stat_l[F + f], "tail_cusum_threshold": thr_l[F + f],
                       "cusum_detections": detections[f], "cusum_armed": armed[f],
                       "values_since_restart": runs[f], "window_values": window_values[f],
                       "reference_values": nref[f],
                       "js_threshold_full_window": cal.chi2_quantile(bins[f] - 1, self.alpha)
                                                   / (2.0 * (self.window + max(nref[f], 1)))}
                for f, name in enumerate(self.names)}

    def to_state(self) -> dict[str, Any]:
        return {"counts": self.counts.ravel().tolist(), "s1": [enc_float(v) for v in self.s1.tolist()],
                "s2": [enc_float(v) for v in self.s2.tolist()], "wn": self.wn.tolist(),
                "ref": self.ref_mat.astype(np.int64).ravel().tolist(), "nref": self.nref.tolist(),
                "pending": self.pending.astype(np.int64).ravel().tolist(), "pending_n": self.pending_n.tolist(),
                "cusum": self.cusum.to_state()}

    def load_state(self, st: Any) -> None:
        if not isinstance(st, dict):
            raise StateFormatError("numeric: expected an object")
        F = self.F
        self.counts = np.array(check_counts(st.get("counts"), "numeric.counts", F * self.nb),
                               dtype=np.int64).reshape(F, self.nb)

        def floats(key: str) -> np.ndarray:
            return np.array([check_float(v, key, finite=True) for v in check_list(st.get(key), key, F)])

        self.s1, self.s2 = floats("s1"), floats("s2")
        self.wn = np.array(check_counts(st.get("wn"), "numeric.wn", F), dtype=np.int64)
        self.ref_mat = np.array(check_counts(st.get("ref"), "numeric.ref", F * self.nb),
                                dtype=np.float64).reshape(F, self.nb)
        self.nref = np.array(check_counts(st.get("nref"), "numeric.nref", F), dtype=np.int64)
        self.pending = np.array(check_counts(st.get("pending"), "numeric.pending", F * self.nb),
                                dtype=np.float64).reshape(F, self.nb)
        self.pending_n = np.array(check_counts(st.get("pending_n"), "numeric.pending_n", F), dtype=np.int64)
        if (self.ref_mat[~self.mask] != 0).any() or (self.ref_mat.sum(axis=1) != self.nref).any():
            raise StateFormatError("numeric.ref inconsistent with its bins")
        self._ref_derived()
        self.cusum.load_state(st.get("cusum"))


def _smoothed_rows(C: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Row-wise half-count smoothed proportions over each row's real bins; padding set to 1.

    Padding entries equal in both operands contribute nothing to PSI / JS (``(p-q) log(p/q)``
    and ``p log(p/m)`` vanish when ``p = q = m = 1``), so every feature is tested on its own bins.
    """
    c = np.where(mask, C + 0.5, 0.0)
    p = c / c.sum(axis=1, keepdims=True)
    return np.where(mask, p, 1.0)
