"""Self-starting two-sided CUSUMs for many per-event scores at once (one numpy pass per batch).

Each column of a :class:`CusumBank` is one score per event or joined label: a numeric
feature's normal score or squared normal score under the reference (:mod:`detectors.numeric`), a predicted-class
indicator, an error indicator, a per-source disagreement score. Per column and per drift
``k_j`` two CUSUMs run on the *innovations* ``dev_t = x_t - mean(x_1..x_t)`` (the mean since
the column's last restart)::

    up_t   = sum_{s<=t} (dev_s - k_up_j)     alarm when up_t - min(0, min_s up_s)   > h_up_j
    down_t = sum_{s<=t} (dev_s + k_down_j)   alarm when max(0, max_s down_s) - down_t > h_down_j

``up - min(up)`` is Page's CUSUM ``S_t = max(0, S_{t-1} + dev_t - k)``; keeping the raw sums
and their running extremes makes a batch a handful of prefix operations (``add.accumulate``,
``minimum.accumulate``) whose additions happen in arrival order, so the state after a stream
is byte-identical however the stream is cut into batches. Centring on the running mean (a
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

import numpy as np

from detectors.errors import StateFormatError
from detectors.state import check_float, check_int, check_list, enc_float

MIN_RUN = 30  # updates since the last restart before a column may fire
PRIOR_WEIGHT = 2000  # reference values the running mean starts from (see CusumBank.set_prior)
CHUNK = 64  # rows of a column's first scan after a restart (see CusumBank._column)
BLOCK_VALUES = 49_152  # rows x columns x drifts per vectorized pass (see update)

#: A hit: (batch row, column, side "up"/"down", drift index, statistic, threshold, updates since restart, running mean)
CusumHit = tuple[int, int, str, int, float, float, int, float]


def _scan(start: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``start + x[0]``, ``start + x[0] + x[1]``, ... along axis 0, added left to right."""
    return np.add.accumulate(np.concatenate((start[None], x), axis=0), axis=0)[1:]


class CusumBank:
    """``cols`` self-starting two-sided CUSUMs with ``drifts`` reference values each (see module doc)."""

    __slots__ = ("C", "K", "min_run", "k_up", "k_dn", "h_up", "h_dn", "scale", "enabled", "n", "total", "up", "umin",
                 "dn", "dmax", "detections", "prior_n", "prior_mean")

    def __init__(self, cols: int, drifts: int, min_run: int = MIN_RUN) -> None:
        self.C, self.K, self.min_run = int(cols), int(drifts), int(min_run)
        shape = (self.C, self.K)
        self.k_up, self.k_dn = np.ones(shape), np.ones(shape)
        self.h_up, self.h_dn = np.full(shape, np.inf), np.full(shape, np.inf)
        self.scale = np.ones(self.C)
        self.enabled = np.zeros(self.C, dtype=bool)
        self.n = np.zeros(self.C)
        self.total = np.zeros(self.C)
        self.up, self.umin = np.zeros(shape), np.zeros(shape)
        self.dn, self.dmax = np.zeros(shape), np.zeros(shape)
        self.detections = np.zeros(self.C, dtype=np.int64)
        self.prior_n = np.zeros(self.C)
        self.prior_mean = np.zeros(self.C)

    def set_prior(self, weight: np.ndarray | float, mean: np.ndarray | float) -> None:
        """Start (and restart) the running mean as if ``weight`` reference values of mean ``mean``
        had been seen: a stream that is different from its first value on (a bad canary judged
        against stable's reference) is still caught, and the reference's weight fades as the
        stream's own values accumulate. Columns that have not been updated yet take it at once."""
        self.prior_n = np.broadcast_to(np.asarray(weight, dtype=np.float64), (self.C,)).copy()
        self.prior_mean = np.broadcast_to(np.asarray(mean, dtype=np.float64), (self.C,)).copy()
        fresh = (self.n == 0) & (self.up == 0).all(axis=1) & (self.dn == 0).all(axis=1)
        self.n = np.where(fresh, self.prior_n, self.n)
        self.total = np.where(fresh, self.prior_n * self.prior_mean, self.total)

    def set_params(self, k_up: np.ndarray, k_dn: np.ndarray, h_up: np.ndarray, h_dn: np.ndarray,
                   scale: np.ndarray, enabled: np.ndarray | None = None) -> None:
        """Drifts and thresholds per (column, drift), in score units; ``scale`` (a score's standard
        deviation) only normalizes reported statistics. Columns may be re-parameterized at any time."""
        shape = (self.C, self.K)
        self.k_up, self.k_dn = np.broadcast_to(k_up, shape).astype(np.float64), np.broadcast_to(k_dn, shape).astype(np.float64)
        self.h_up, self.h_dn = np.broadcast_to(h_up, shape).astype(np.float64), np.broadcast_to(h_dn, shape).astype(np.float64)
        self.scale = np.where(np.asarray(scale, dtype=np.float64) > 0, scale, 1.0) * np.ones(self.C)
        en = np.ones(self.C, dtype=bool) if enabled is None else np.asarray(enabled, dtype=bool)
        self.enabled = en & np.isfinite(self.h_up).any(axis=1) | en & np.isfinite(self.h_dn).any(axis=1)

    def grow(self, cols: int) -> None:
        """Add columns (fresh, disabled until parameterized) up to ``cols``."""
        extra = int(cols) - self.C
        if extra <= 0:
            return
        pad2 = lambda a, v: np.concatenate((a, np.full((extra, self.K), v)))  # noqa: E731
        self.k_up, self.k_dn = pad2(self.k_up, 1.0), pad2(self.k_dn, 1.0)
        self.h_up, self.h_dn = pad2(self.h_up, np.inf), pad2(self.h_dn, np.inf)
        self.up, self.umin, self.dn, self.dmax = (pad2(a, 0.0) for a in (self.up, self.umin, self.dn, self.dmax))
        self.scale = np.concatenate((self.scale, np.ones(extra)))
        self.prior_n, self.prior_mean = np.concatenate((self.prior_n, np.zeros(extra))), np.concatenate(
            (self.prior_mean, np.zeros(extra)))
        self.enabled = np.concatenate((self.enabled, np.zeros(extra, dtype=bool)))
        self.n, self.total = np.concatenate((self.n, np.zeros(extra))), np.concatenate((self.total, np.zeros(extra)))
        self.detections = np.concatenate((self.detections, np.zeros(extra, dtype=np.int64)))
        self.C = int(cols)

    # -- updates -----------------------------------------------------------------------------
    def update(self, X: np.ndarray, valid: np.ndarray | None = None, cols: np.ndarray | None = None
               ) -> list[CusumHit]:
        """Feed a batch (rows = events in order, columns = scores); ``valid`` masks values to skip;
        ``cols`` names the bank columns of ``X``'s columns (default: all, in order).

        Returns the alarms, sorted by row then column.
        """
        n = X.shape[0]
        if n == 0:
            return []
        width = (self.C if cols is None else len(cols)) * self.K
        step = max(CHUNK, BLOCK_VALUES // max(width, 1))
        if n > step:
            # row blocks: temporaries of a few hundred KiB run faster than batch-sized ones (fresh
            # pages, cache); results do not depend on cuts (module doc)
            hits: list[CusumHit] = []
            for lo in range(0, n, step):
                part = self.update(X[lo:lo + step], None if valid is None else valid[lo:lo + step], cols)
                hits.extend((h[0] + lo, *h[1:]) for h in part)
            return hits
        every = cols is None
        cols = np.arange(self.C) if cols is None else np.asarray(cols, dtype=np.int64)
        if every and valid is None:  # the common case, without the bookkeeping of masks and subsets
            alarm = self._run(cols, X, True)
            if alarm is None:
                return []
            rows = np.arange(n)
            hits = [h for q in np.flatnonzero(alarm).tolist() for h in self._column(q, X[:, q], rows)]
            hits.sort(key=lambda h: (h[0], h[1]))
            return hits
        hits = []
        full = np.ones(cols.size, dtype=bool) if valid is None else valid.all(axis=0)
        fsel = np.flatnonzero(full)
        redo = np.flatnonzero(~full).tolist()
        if fsel.size:
            whole = fsel.size == cols.size
            alarm = self._run(cols[fsel], X if whole else X[:, fsel], every and whole)
            if alarm is not None:
                redo.extend(fsel[alarm].tolist())
        for q in sorted(redo, key=lambda q: cols[q]):
            rows = np.arange(n) if valid is None or full[q] else np.flatnonzero(valid[:, q])
            if rows.size:
                hits.extend(self._column(int(cols[q]), X[rows, q], rows))
        hits.sort(key=lambda h: (h[0], h[1]))
        return hits

    def _run(self, sel: np.ndarray, X: np.ndarray, allc: bool) -> np.ndarray | None:
        """Advance columns ``sel`` over ``X`` without restarts. Columns that would alarm are left
        untouched and returned (as a mask over ``sel``) for :meth:`_column`; None if none."""
        n = X.shape[0]
        if allc:
            n0, tot0, k_up, k_dn = self.n, self.total, self.k_up, self.k_dn
            up0, umin0, dn0, dmax0 = self.up, self.umin, self.dn, self.dmax
            h_up, h_dn, enabled = self.h_up, self.h_dn, self.enabled
        else:
            n0, tot0, k_up, k_dn = self.n[sel], self.total[sel], self.k_up[sel], self.k_dn[sel]
            up0, umin0, dn0, dmax0 = self.up[sel], self.umin[sel], self.dn[sel], self.dmax[sel]
            h_up, h_dn, enabled = self.h_up[sel], self.h_dn[sel], self.enabled[sel]
        t = n0 + np.arange(1, n + 1, dtype=np.float64)[:, None]
        total = _scan(tot0, X)
        dev = (X - total / t)[:, :, None]
        # the same additions and extremes as scanning [start, x0, x1, ...], in place (fewer passes)
        up = dev - k_up
        up[0] += up0
        np.add.accumulate(up, axis=0, out=up)
        first = up[0].copy()  # running extremes start from the stored ones: seed row 0, scan, restore
        np.minimum(first, umin0, out=up[0])
        umin = np.minimum.accumulate(up, axis=0)
        up[0] = first
        dn = dev + k_dn
        dn[0] += dn0
        np.add.accumulate(dn, axis=0, out=dn)
        first = dn[0].copy()
        np.maximum(first, dmax0, out=dn[0])
        dmax = np.maximum.accumulate(dn, axis=0)
        dn[0] = first
        last_umin, last_dmax = umin[-1].copy(), dmax[-1].copy()
        over_up = np.subtract(up, umin, out=umin) > h_up
        over_dn = np.subtract(dmax, dn, out=dmax) > h_dn
        if n * self.K <= 256:  # few rows: fewer calls
            fire = (over_up | over_dn).any(axis=2)
        else:  # many rows: faster than .any(axis=2) over a short last axis
            fire = over_up[:, :, 0] | over_dn[:, :, 0]
            for j in range(1, self.K):
                fire |= over_up[:, :, j]
                fire |= over_dn[:, :, j]
        fire &= t >= self.min_run
        fire &= enabled
        bad = fire.any(axis=0)
        if not bad.any():
            if allc:
                self.n[:], self.total[:] = t[-1], total[-1]
                self.up[:], self.umin[:], self.dn[:], self.dmax[:] = up[-1], last_umin, dn[-1], last_dmax
            else:
                self.n[sel], self.total[sel] = t[-1], total[-1]
                self.up[sel], self.umin[sel], self.dn[sel], self.dmax[sel] = up[-1], last_umin, dn[-1], last_dmax
            return None
        ok = ~bad
        cols = sel[ok]
        if cols.size:
            self.n[cols] = t[-1, ok]
            self.total[cols] = total[-1, ok]
            self.up[cols], self.umin[cols] = up[-1, ok], last_umin[ok]
            self.dn[cols], self.dmax[cols] = dn[-1, ok], last_dmax[ok]
        return bad

    def _column(self, c: int, x: np.ndarray, rows: np.ndarray) -> list[CusumHit]:
        """One column over its values with restarts after each alarm.

        The values are scanned in chunks that start at :data:`CHUNK` rows after a restart and
        double while no alarm comes: an alarm only throws away the rest of its chunk, so a burst of
        alarms costs about the rows it covers, not the rows left in the batch per alarm. A chunk
        ends exactly as a batch cut there would (the same additions in the same order), so the
        state and the hits are those of one scan.
        """
        out: list[CusumHit] = []
        start, m = 0, x.size
        sel = np.array([c])
        size = CHUNK
        while start < m:
            stop = min(m, start + size)
            v = x[start:stop, None]
            t = self.n[c] + np.arange(1, v.shape[0] + 1, dtype=np.float64)[:, None]
            total = _scan(self.total[sel], v)
            dev = (v - total / t)[:, :, None]
            up = _scan(self.up[sel], dev - self.k_up[sel][None])
            umin = np.minimum(np.minimum.accumulate(up, axis=0), self.umin[sel][None])
            dn = _scan(self.dn[sel], dev + self.k_dn[sel][None])
            dmax = np.maximum(np.maximum.accumulate(dn, axis=0), self.dmax[sel][None])
            su, sd = (up - umin)[:, 0], (dmax - dn)[:, 0]
            fire = ((su > self.h_up[c][None]) | (sd > self.h_dn[c][None])).any(axis=1)
            fire &= (t[:, 0] >= self.min_run) & bool(self.enabled[c])
            if fire.any():
                i = int(fire.argmax())
                ru, rd = su[i] / self.h_up[c], sd[i] / self.h_dn[c]
                ju, jd = int(ru.argmax()), int(rd.argmax())
                if ru[ju] >= rd[jd]:
                    side, j, stat, thr = "up", ju, float(su[i, ju]), float(self.h_up[c, ju])
                else:
                    side, j, stat, thr = "down", jd, float(sd[i, jd]), float(self.h_dn[c, jd])
                out.append((int(rows[start + i]), c, side, j, stat, thr, int(t[i, 0] - self.prior_n[c]),
                            float(total[i, 0] / t[i, 0])))
                self.detections[c] += 1
                self.restart(c)
                start += i + 1
                size = CHUNK
                continue
            self.n[c], self.total[c] = t[-1, 0], total[-1, 0]
            self.up[c], self.umin[c], self.dn[c], self.dmax[c] = up[-1, 0], umin[-1, 0], dn[-1, 0], dmax[-1, 0]
            start = stop
            size *= 2
        return out

    def restart(self, c: int) -> None:
        """Forget column ``c``'s history (after an alarm); the running mean starts from the prior."""
        self.n[c] = self.prior_n[c]
        self.total[c] = self.prior_n[c] * self.prior_mean[c]
        self.up[c] = self.umin[c] = self.dn[c] = self.dmax[c] = 0.0

    # -- statistics --------------------------------------------------------------------------
    def exceedance(self) -> tuple[np.ndarray, np.ndarray]:
        """Per column, the largest CUSUM statistic relative to its threshold, as
        ``(statistic, threshold)`` in units of the score's standard deviation."""
        with np.errstate(divide="ignore", invalid="ignore"):
            su, sd = self.up - self.umin, self.dmax - self.dn
            ratio = np.concatenate((su / self.h_up, sd / self.h_dn), axis=1)
            ratio = np.where(np.isfinite(ratio), ratio, -1.0)
        j = ratio.argmax(axis=1)
        stat = np.concatenate((su, sd), axis=1)[np.arange(self.C), j]
        thr = np.concatenate((self.h_up, self.h_dn), axis=1)[np.arange(self.C), j]
        return stat / self.scale, thr / self.scale

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
