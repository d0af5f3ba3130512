"""Self-starting two-sided CUSUMs for many per-event scores at once (one compiled pass per batch).

Each column of a :class:`CusumBank` is one score per event or joined label: a numeric
feature's normal score or squared normal score under the reference (:mod:`detectors.numeric`), a predicted-class
indicator, an error indicator, a per-source disagreement score. Per column and per drift
``k_j`` two CUSUMs run on the *innovations* ``dev_t = x_t - mean(x_1..x_t)`` (the mean since
the column's last restart)::

    up_t   = sum_{s<=t} (dev_s - k_up_j)     alarm when up_t - min(0, min_s up_s)   > h_up_j
    down_t = sum_{s<=t} (dev_s + k_down_j)   alarm when max(0, max_s down_s) - down_t > h_down_j

``up - min(up)`` is Page's CUSUM ``S_t = max(0, S_{t-1} + dev_t - k)``. A batch is one pass of
a loop compiled with numba (``_page_scan``: per column, its state in locals, row by row) whose
additions happen in arrival order, so the state after a stream is byte-identical however the
stream is cut into batches; a column restarts at the row of its alarm, without rescanning.
Centring on the running mean (a
self-starting CUSUM) cancels a constant offset between the reference and the live stream
(an unlucky reference sample) exactly: the innovations have mean zero under no change
whatever that offset is. After an alarm the column restarts (mean and sums), so a
persistent change is re-learned as the new normal.

Thresholds are set by the owner from the false-alarm budget
(:func:`detectors.calibration.lundberg_theta`, :func:`detectors.calibration.cusum_threshold`).
The bank is order dependent and does not merge (like every sequential detector: one owner
per model, see :mod:`detectors.engine`).

>>> import numpy as np
>>> b = CusumBank(1, 1, min_run=5)
>>> b.set_params(np.array([[0.5]]), np.array([[0.5]]), np.array([[4.0]]), np.array([[4.0]]), np.ones(1))
>>> x = np.r_[np.zeros(50), np.full(20, 3.0)][:, None]
>>> [(h[0], h[2]) for h in b.update(x)]
[(51, 'up')]
"""
from __future__ import annotations

from typing import Any

import numba
import numpy as np

from detectors.errors import StateFormatError
from detectors.state import check_float, check_int, check_list, enc_float

MIN_RUN = 30  # updates since the last restart before a column may fire
PRIOR_WEIGHT = 2000  # reference values the running mean starts from (see CusumBank.set_prior)

#: A hit: (batch row, column, side "up"/"down", drift index, statistic, threshold, updates since restart, running mean)
CusumHit = tuple[int, int, str, int, float, float, int, float]


NO_MASK = np.zeros((0, 0), dtype=np.bool_)  # the mask argument of kernels called without one


_F1, _F2, _F3 = numba.float64[:], numba.float64[:, :], numba.float64[:, :, :]
_B1, _B2 = numba.boolean[:], numba.boolean[:, :]


# argument types given: compiled (or loaded from the cache) at import, not in the first batch; the
# state travels packed in three arrays, since numba unboxes every array argument on every call
@numba.njit((_F2, _B2, numba.boolean, numba.int64[:], _F2, _F3, _F3, _B1, numba.float64, numba.int64[:]),
            cache=True, nogil=True)
def _page_scan(X, valid, masked, cols, per_col, sums, params, enabled, min_run,
               detections):  # pragma: no cover - compiled
    """Advance bank columns ``cols`` over ``X``'s columns row by row, restarting a column after
    each alarm; the state arrays are updated in place (``per_col``: n, total, prior_n, prior_mean;
    ``sums``: up, umin, dn, dmax; ``params``: k_up, k_dn, h_up, h_dn). Returns the alarms as
    ``(row, column, side 0 up / 1 down, drift, statistic, threshold, run, mean)``."""
    n, total, prior_n, prior_mean = per_col[0], per_col[1], per_col[2], per_col[3]
    up, umin, dn, dmax = sums[0], sums[1], sums[2], sums[3]
    k_up, k_dn, h_up, h_dn = params[0], params[1], params[2], params[3]
    rows, K = X.shape[0], up.shape[1]
    out = [(0, 0, 0, 0, 0.0, 0.0, 0, 0.0) for _ in range(0)]
    # one column's state in locals while its rows are scanned
    u_, um, d_, dm = np.empty(K), np.empty(K), np.empty(K), np.empty(K)
    ku, kd, hu, hd = np.empty(K), np.empty(K), np.empty(K), np.empty(K)
    for a in range(cols.shape[0]):
        c = cols[a]
        t, tot, on = n[c], total[c], enabled[c]
        for j in range(K):
            u_[j], um[j], d_[j], dm[j] = up[c, j], umin[c, j], dn[c, j], dmax[c, j]
            ku[j], kd[j], hu[j], hd[j] = k_up[c, j], k_dn[c, j], h_up[c, j], h_dn[c, j]
        for i in range(rows):
            if masked and not valid[i, a]:
                continue
            x = X[i, a]
            t = t + 1.0
            tot = tot + x
            dev = x - tot / t
            fire = False
            for j in range(K):
                u = u_[j] + (dev - ku[j])
                u_[j] = u
                lo = min(um[j], u)
                um[j] = lo
                d = d_[j] + (dev + kd[j])
                d_[j] = d
                hi = max(dm[j], d)
                dm[j] = hi
                fire |= (u - lo > hu[j]) | (hi - d > hd[j])
            if not fire or not on or t < min_run:
                continue
            ju, jd = 0, 0
            ru, rd = (u_[0] - um[0]) / hu[0], (dm[0] - d_[0]) / hd[0]
            for j in range(1, K):
                r = (u_[j] - um[j]) / hu[j]
                if r > ru:
                    ju, ru = j, r
                r = (dm[j] - d_[j]) / hd[j]
                if r > rd:
                    jd, rd = j, r
            if ru >= rd:
                out.append((i, c, 0, ju, u_[ju] - um[ju], hu[ju], int(t - prior_n[c]), tot / t))
            else:
                out.append((i, c, 1, jd, dm[jd] - d_[jd], hd[jd], int(t - prior_n[c]), tot / t))
            detections[c] += 1
            t, tot = prior_n[c], prior_n[c] * prior_mean[c]
            u_[:], um[:], d_[:], dm[:] = 0.0, 0.0, 0.0, 0.0
        n[c], total[c] = t, tot
        for j in range(K):
            up[c, j], umin[c, j], dn[c, j], dmax[c, j] = u_[j], um[j], d_[j], dm[j]
    return out


@numba.njit((_F2, _F2, _F2, _F2, _F2, _F2, _F1), cache=True, nogil=True, error_model="numpy")
def _exceedance(up, umin, dn, dmax, h_up, h_dn, scale):  # pragma: no cover - compiled
    """Per column, the (statistic, threshold) pair of the side and drift with the largest finite
    statistic / threshold (the first such; -1 stands for a ratio that is not finite), each divided
    by the column's ``scale``: what :meth:`CusumBank.exceedance` reports, one pass per column."""
    C, K = up.shape
    stat, thr = np.empty(C), np.empty(C)
    for c in range(C):
        best, s_, t_ = -np.inf, 0.0, 0.0
        for side in range(2):
            for j in range(K):
                if side == 0:
                    s, t = up[c, j] - umin[c, j], h_up[c, j]
                else:
                    s, t = dmax[c, j] - dn[c, j], h_dn[c, j]
                r = s / t
                if not np.isfinite(r):
                    r = -1.0
                if r > best:
                    best, s_, t_ = r, s, t
        stat[c], thr[c] = s_ / scale[c], t_ / scale[c]
    return stat, thr


def _row_view(store: str, row: int) -> property:
    """A name for row ``row`` of a bank's packed array ``store``: reading gives a view, assigning
    writes into the array."""
    def get(self: "CusumBank") -> np.ndarray:
        return getattr(self, store)[row]

    def put(self: "CusumBank", value: Any) -> None:
        getattr(self, store)[row] = value
    return property(get, put)


class CusumBank:
    """``cols`` self-starting two-sided CUSUMs with ``drifts`` reference values each (see module doc)."""

    # per_col rows: n, total, prior_n, prior_mean; sums: up, umin, dn, dmax; params: k_up, k_dn,
    # h_up, h_dn (each (columns, drifts)); the names below are views into them
    __slots__ = ("C", "K", "min_run", "scale", "enabled", "detections", "per_col", "sums", "params", "_all_cols")

    def __init__(self, cols: int, drifts: int, min_run: int = MIN_RUN) -> None:
        self.C, self.K, self.min_run = int(cols), int(drifts), int(min_run)
        shape = (self.C, self.K)
        self.params = np.empty((4,) + shape)
        self.params[:2], self.params[2:] = 1.0, np.inf  # drifts 1, thresholds infinite: off until parameterized
        self.sums = np.zeros((4,) + shape)
        self.per_col = np.zeros((4, self.C))
        self.scale = np.ones(self.C)
        self.enabled = np.zeros(self.C, dtype=bool)
        self.detections = np.zeros(self.C, dtype=np.int64)
        self._all_cols = np.arange(self.C, dtype=np.int64)

    n, total, prior_n, prior_mean = (_row_view("per_col", i) for i in range(4))
    up, umin, dn, dmax = (_row_view("sums", i) for i in range(4))
    k_up, k_dn, h_up, h_dn = (_row_view("params", i) for i in range(4))

    def set_prior(self, weight: np.ndarray | float, mean: np.ndarray | float) -> None:
        """Start (and restart) the running mean as if ``weight`` reference values of mean ``mean``
        had been seen: a stream that is different from its first value on (a bad canary judged
        against stable's reference) is still caught, and the reference's weight fades as the
        stream's own values accumulate. Columns that have not been updated yet take it at once."""
        pc, sums = self.per_col, self.sums  # rows n, total, prior_n, prior_mean; up, umin, dn, dmax
        pc[2], pc[3] = weight, mean  # broadcast over the columns
        fresh = (pc[0] == 0) & (sums[0] == 0).all(axis=1) & (sums[2] == 0).all(axis=1)
        pc[0], pc[1] = np.where(fresh, pc[2], pc[0]), np.where(fresh, pc[2] * pc[3], pc[1])

    def set_params(self, k_up: np.ndarray, k_dn: np.ndarray, h_up: np.ndarray, h_dn: np.ndarray,
                   scale: np.ndarray, enabled: np.ndarray | None = None) -> None:
        """Drifts and thresholds per (column, drift), in score units; ``scale`` (a score's standard
        deviation) only normalizes reported statistics. Columns may be re-parameterized at any time."""
        p = self.params  # rows k_up, k_dn, h_up, h_dn, each broadcast to (columns, drifts)
        p[0], p[1], p[2], p[3] = k_up, k_dn, h_up, h_dn
        self.scale = np.where(np.asarray(scale, dtype=np.float64) > 0, scale, 1.0) * np.ones(self.C)
        en = np.ones(self.C, dtype=bool) if enabled is None else np.asarray(enabled, dtype=bool)
        self.enabled = en & np.isfinite(p[2]).any(axis=1) | en & np.isfinite(p[3]).any(axis=1)

    def grow(self, cols: int) -> None:
        """Add columns (fresh, disabled until parameterized) up to ``cols``."""
        extra = int(cols) - self.C
        if extra <= 0:
            return
        fill = np.array([1.0, 1.0, np.inf, np.inf])[:, None, None]  # fresh k_up, k_dn, h_up, h_dn
        self.params = np.concatenate((self.params, np.broadcast_to(fill, (4, extra, self.K))), axis=1)
        self.sums = np.concatenate((self.sums, np.zeros((4, extra, self.K))), axis=1)
        self.per_col = np.concatenate((self.per_col, np.zeros((4, extra))), axis=1)
        self.scale = np.concatenate((self.scale, np.ones(extra)))
        self.enabled = np.concatenate((self.enabled, np.zeros(extra, dtype=bool)))
        self.detections = np.concatenate((self.detections, np.zeros(extra, dtype=np.int64)))
        self.C = int(cols)
        self._all_cols = np.arange(self.C, dtype=np.int64)

    # -- updates -----------------------------------------------------------------------------
    def update(self, X: np.ndarray, valid: np.ndarray | None = None, cols: np.ndarray | None = None
               ) -> list[CusumHit]:
        """Feed a batch (rows = events in order, columns = scores); ``valid`` masks values to skip;
        ``cols`` names the bank columns of ``X``'s columns (default: all, in order).

        Returns the alarms, sorted by row then column.
        """
        X = np.asarray(X, dtype=np.float64)
        if X.shape[0] == 0:
            return []
        cols = self._all_cols if cols is None else np.asarray(cols, dtype=np.int64)
        masked = valid is not None
        mask = np.asarray(valid, dtype=np.bool_) if masked else NO_MASK
        found = _page_scan(X, mask, masked, cols, self.per_col, self.sums, self.params, self.enabled,
                           float(self.min_run), self.detections)
        if not found:
            return []
        hits: list[CusumHit] = [(r, c, "down" if side else "up", j, stat, thr, run, mean)
                                for r, c, side, j, stat, thr, run, mean in found]
        hits.sort(key=lambda h: (h[0], h[1]))
        return hits

    def restart(self, c: int) -> None:
        """Forget column ``c``'s history (after an alarm); the running mean starts from the prior."""
        self.n[c] = self.prior_n[c]
        self.total[c] = self.prior_n[c] * self.prior_mean[c]
        self.up[c] = self.umin[c] = self.dn[c] = self.dmax[c] = 0.0

    # -- statistics --------------------------------------------------------------------------
    def exceedance(self) -> tuple[np.ndarray, np.ndarray]:
        """Per column, the largest CUSUM statistic relative to its threshold, as
        ``(statistic, threshold)`` in units of the score's standard deviation."""
        return _exceedance(self.up, self.umin, self.dn, self.dmax, self.h_up, self.h_dn, self.scale)

    def side_exceedance(self, col: int, side: str) -> float:
        """How far column ``col``'s CUSUMs on one side (``"up"``/``"down"``) are towards their
        thresholds: the largest statistic / threshold over the drifts (0 when the column is off)."""
        if not self.enabled[col]:
            return 0.0
        with np.errstate(divide="ignore", invalid="ignore"):
            if side == "up":
                ratio = (self.up[col] - self.umin[col]) / self.h_up[col]
            else:
                ratio = (self.dmax[col] - self.dn[col]) / self.h_dn[col]
        ratio = ratio[np.isfinite(ratio)]
        return float(ratio.max()) if ratio.size else 0.0

    # -- state -------------------------------------------------------------------------------
    def to_state(self) -> list[Any]:
        return [[enc_float(v) for v in self.n.tolist()], [enc_float(v) for v in self.total.tolist()],
                [[enc_float(v) for v in row] for a in (self.up, self.umin, self.dn, self.dmax) for row in a.tolist()],
                self.detections.tolist()]

    def load_state(self, st: Any) -> None:
        st = check_list(st, "cusum", 4)
        C, K = self.C, self.K
        n = [check_float(v, "cusum.n", finite=True) for v in check_list(st[0], "cusum.n", C)]
        total = [check_float(v, "cusum.total", finite=True) for v in check_list(st[1], "cusum.total", C)]
        rows = check_list(st[2], "cusum.sums", 4 * C)
        sums = np.array([[check_float(v, "cusum.sums", finite=True) for v in check_list(r, "cusum.sums", K)]
                         for r in rows], dtype=np.float64).reshape(4, C, K)
        det = [check_int(v, "cusum.detections") for v in check_list(st[3], "cusum.detections", C)]
        self.n = np.array(n, dtype=np.float64)
        if (self.n < 0).any() or (self.n != np.floor(self.n)).any():
            raise StateFormatError("cusum.n: expected whole non-negative counts")
        up, umin, dn, dmax = sums
        if (umin > 0).any() or (dmax < 0).any() or (up < umin).any() or (dn > dmax).any():
            raise StateFormatError("cusum: running extremes inconsistent with their sums")
        self.total = np.array(total, dtype=np.float64)
        self.up, self.umin, self.dn, self.dmax = up.copy(), umin.copy(), dn.copy(), dmax.copy()
        self.detections = np.array(det, dtype=np.int64)
