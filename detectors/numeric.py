"""Numeric feature drift for all numeric features of one stream, processed as one matrix.

Per micro-batch the numeric features form an ``(events x features)`` float matrix (invalid
values already masked out by input integrity), so each step below is a handful of numpy
calls for the whole batch rather than per feature or per event:

- **Windowed distribution tests** (``js``: the G test, PSI in its evidence; ``ks``): bin indices against every
  feature's reference quantile edges by one broadcast comparison, window histograms by one
  ``bincount``; tests run once per window of ``CalibrationSpec.window`` events.
- **Sequential detectors** (``adwin``, ``page_hinkley``) on *block means*: blocks are
  ``k = CalibrationSpec.block_size`` consecutive events of the stream (shared by all
  features, so block boundaries never depend on batch boundaries). The block mean of a
  feature's valid values, standardized as ``z = (mean - mu) * sqrt(c) / sigma`` (``c``
  valid values in the block, ``mu``/``sigma`` from the reference), is close to N(0, 1)
  whatever the feature's shape, which is what :mod:`detectors.calibration` assumes; a
  shift of ``s`` standard deviations becomes ``s * sqrt(k)`` in z-units; and the detectors
  run ``k`` times less often. Blocks with fewer than ``k / 2`` valid values are skipped.
  Page-Hinkley runs vectorized over all features at once (prefix sums); ADWIN gets one
  compiled call per block.

Histograms and window sums merge exactly; ADWIN and Page-Hinkley are sequential and do not
(see :mod:`detectors.sequential`).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from detectors import calibration as cal
from detectors.errors import StateFormatError
from detectors.profile import NumericProfile
from detectors.sequential import Adwin
from detectors.sketches import ordered_sum

PH_MIN_INSTANCES = 30  # blocks before Page-Hinkley may fire (as river's default min_instances)
REFERENCE_GROWTH = 8  # see detectors.calibration: clean windows sharpen the reference up to this factor
RECENT = 16  # blocks summarized in the evidence of a sequential detection
RING = RECENT
from detectors.signals import MIN_WINDOW_VALUES, Hit, _r
from detectors.spec import CalibrationSpec, FeatureSpec
from detectors.state import check_counts, check_float, check_int, check_list, enc_float


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
        self.edges = [np.asarray(p.edges, dtype=np.float64) for p in profs]
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
        self.mu = np.array([p.mean for p in profs], dtype=np.float64)
        sig = np.array([p.std for p in profs], dtype=np.float64)
        floor = np.maximum(np.abs(self.mu) * 1e-9, 1e-12)
        self.sigma = np.where((sig > 0) & np.isfinite(sig), sig, floor)
        self.enabled = np.array([p.n >= MIN_WINDOW_VALUES for p in profs], dtype=bool)
        self.k = c.block_size
        self.min_block = max(1, self.k // 2)
        self.part_s = np.zeros(F)
        self.part_c = np.zeros(F, dtype=np.int64)
        self.part_e = 0
        sh = cal.SHARES[self.signal]
        per_block = c.false_alarms_per_million * c.block_size
        self.adwin_delta = cal.adwin_delta(per_block * sh["adwin"])
        self.ph_threshold = cal.page_hinkley_threshold(c.ph_delta, per_block * sh["page_hinkley"])
        self.adwins = [Adwin(self.adwin_delta) for _ in range(F)]
        self.ph_delta = c.ph_delta
        # Page-Hinkley state per feature (rows): n, running total, up, up_min, down, down_max, detections
        self.ph = np.zeros((7, F))
        self.alpha = cal.window_alpha(c.false_alarms_per_million, sh["js"], c.window)
        self.alpha_ks = cal.window_alpha(c.false_alarms_per_million, sh["ks"], c.window)
        self.window = c.window
        self.last_z = np.zeros(F)
        self.ring = np.zeros((0, F))  # last RING block z-values (evidence, independent of batch cuts)
        self._bidx: np.ndarray | None = None
        self._xz: np.ndarray | None = None
        self._valid: np.ndarray | None = None

    def _ref_derived(self) -> None:
        R = self.ref_mat
        self.ref_p = _smoothed_rows(R, self.mask)
        self.ref_cdf = np.cumsum(R, axis=1) / np.maximum(R.sum(axis=1, keepdims=True), 1)

    # -- per batch ---------------------------------------------------------------------------
    def prepare(self, X: np.ndarray, valid: np.ndarray) -> None:
        """Bin codes and zero-filled values of a batch (used by :meth:`accumulate`/:meth:`sequential`)."""
        Xt = np.ascontiguousarray(X.T)
        B = np.empty(Xt.shape, dtype=np.int64)
        for f in range(self.F):  # one searchsorted per feature (NaNs land in the top bin; masked later)
            B[f] = np.searchsorted(self.edges[f], Xt[f], side="right")
        B += self.offs[:, None]
        self._bidx = B
        self._all_valid = bool(valid.all())
        self._valid_t = None if self._all_valid else np.ascontiguousarray(valid.T)
        self._xz = X if self._all_valid else np.where(valid, X, 0.0)
        self._valid = valid

    def accumulate(self, lo: int, hi: int) -> None:
        """Add events ``lo:hi`` of the prepared batch to the window sketches."""
        b = self._bidx[:, lo:hi]
        if self._all_valid:
            codes = b.ravel()
            self.wn += hi - lo
        else:
            v = self._valid_t[:, lo:hi]
            codes = b[v]
            self.wn += v.sum(axis=1)
        self.counts += np.bincount(codes, minlength=self.F * self.nb).reshape(self.F, self.nb)
        x = self._xz[lo:hi]
        self.s1 = ordered_sum(self.s1, x)
        self.s2 = ordered_sum(self.s2, x * x)

    def sequential(self, idx: np.ndarray) -> list[Hit]:
        """Block means of the prepared batch through Page-Hinkley and ADWIN."""
        xz, valid = self._xz, self._valid
        n, k, F, pe = xz.shape[0], self.k, self.F, self.part_e
        nblk = (pe + n) // k
        if nblk == 0:
            self.part_s = ordered_sum(self.part_s if pe else np.full(F, -0.0), xz)
            self.part_c += n if self._all_valid else valid.sum(axis=0)
            self.part_e += n
            return []
        # Block sums are left-to-right scans, and the open block's partial sum is continued
        # (after -0.0 padding, the additive identity), so a block's sum is the same whatever
        # the batch cuts. The first block completes the open one.
        used = nblk * k - pe
        head = np.full((pe, F), -0.0)
        if pe:
            head[-1] = self.part_s
        blocks = np.concatenate((head, xz[:used])) if pe else xz[:used]
        S = np.add.accumulate(blocks.reshape(nblk, k, F), axis=1)[:, -1]
        if self._all_valid:
            C = np.full((nblk, F), k, dtype=np.int64)
            C[0] -= pe
        else:
            C = np.concatenate((np.zeros((pe, F), dtype=np.int64), valid[:used].astype(np.int64))
                               ).reshape(nblk, k, F).sum(axis=1)
        C[0] += self.part_c
        ends = np.arange(1, nblk + 1) * k - 1 - pe
        tail = xz[used:]
        self.part_e = tail.shape[0]
        self.part_s = ordered_sum(np.full(F, -0.0), tail) if self.part_e else np.zeros(F)
        self.part_c = (np.full(F, self.part_e, dtype=np.int64) if self._all_valid
                       else valid[used:].sum(axis=0))
        ok = (C >= self.min_block) & self.enabled
        with np.errstate(divide="ignore", invalid="ignore"):
            z = (S / np.maximum(C, 1) - self.mu) * np.sqrt(C) / self.sigma
        np.clip(z, -1e6, 1e6, out=z)
        full = ok.all(axis=0)
        hits: list[tuple[int, int, str, float]] = []  # (block row, feature, detector, statistic)
        self._page_hinkley(z, ok, full, hits)
        zt = z.T.tolist()
        full_l = full.tolist()
        last_z = self.last_z.tolist()
        for f in range(self.F):
            if full_l[f]:
                col, rows = zt[f], None
            else:
                rows = np.flatnonzero(ok[:, f])
                if rows.size == 0:
                    continue
                col = z[rows, f].tolist()
            flags = list(map(self.adwins[f].update, col))
            if True in flags:
                for i, fl in enumerate(flags):
                    if fl:
                        hits.append((i if rows is None else int(rows[i]), f, "adwin", 0.0))
            last_z[f] = col[-1]
        self.last_z = np.array(last_z)
        ring = np.concatenate((self.ring, z))
        self.ring = ring[-RING:].copy()
        out: list[Hit] = []
        for row, f, det, stat in sorted(hits):
            p = self.profs[f]
            r = self.ring_len_before(ring, z)
            recent = ring[max(0, r + row + 1 - RECENT): r + row + 1, f]
            recent_mean = float(recent.mean())
            if det == "adwin":  # statistic: |mean z| of the recent blocks that tipped the cut
                stat = abs(recent_mean)
            thr = self.adwin_delta if det == "adwin" else self.ph_threshold
            out.append((self.signal, det, self.names[f], float(stat), float(thr),
                        {"mean": _r(p.mean), "std": _r(p.std), "z_mean": 0.0, "z_std": 1.0},
                        {"block_z": _r(z[row, f]), "recent_mean_z": _r(recent_mean), "recent_blocks": int(recent.size),
                         "block_size": k}, int(idx[ends[row]])))
        return out

    @staticmethod
    def ring_len_before(ring: np.ndarray, z: np.ndarray) -> int:
        return ring.shape[0] - z.shape[0]

    def _page_hinkley(self, z: np.ndarray, ok: np.ndarray, full: np.ndarray, hits: list) -> None:
        """Two-sided Page-Hinkley (same recursion as :class:`~detectors.sequential.PageHinkley`)
        for all features at once; state lives in arrays. A feature whose statistic crosses the
        threshold in this batch, or with skipped blocks, is rerun on its own column with restarts.
        """
        st = self.ph
        d, h = self.ph_delta, self.ph_threshold
        sel = np.flatnonzero(full)
        redo = np.flatnonzero(~full).tolist()
        if sel.size:
            allsel = sel.size == self.F
            Z = z if allsel else z[:, sel]
            n0, m0, u0, umin0, d0, dmax0 = (st[:, sel] if not allsel else st)[:6]
            t = n0 + np.arange(1, Z.shape[0] + 1, dtype=np.float64)[:, None]
            total = _scan(m0, Z)
            dev = Z - total / t
            up = _scan(u0, dev - d)
            umin = np.minimum(np.minimum.accumulate(up, axis=0), umin0)
            down = _scan(d0, dev + d)
            dmax = np.maximum(np.maximum.accumulate(down, axis=0), dmax0)
            alarm = (((up - umin) > h) | ((dmax - down) > h)) & (t >= PH_MIN_INSTANCES)
            any_alarm = alarm.any(axis=0)
            keep = ~any_alarm
            cols = sel[keep]
            if cols.size:
                st[0, cols] = t[-1, keep]
                st[1, cols] = total[-1, keep]
                st[2, cols] = up[-1, keep]
                st[3, cols] = umin[-1, keep]
                st[4, cols] = down[-1, keep]
                st[5, cols] = dmax[-1, keep]
            if any_alarm.any():
                redo.extend(sel[any_alarm].tolist())
        for f in redo:
            rows = np.flatnonzero(ok[:, f])
            if rows.size:
                for i, stat in self._ph_column(f, z[rows, f]):
                    hits.append((int(rows[i]), f, "page_hinkley", stat))

    def _ph_column(self, f: int, x: np.ndarray) -> list[tuple[int, float]]:
        """Page-Hinkley over one feature's z-values with restarts after each detection."""
        st = self.ph
        d, h = self.ph_delta, self.ph_threshold
        out: list[tuple[int, float]] = []
        start, m = 0, x.size
        while start < m:
            v = x[start:]
            n0, m0, u0, umin0, d0, dmax0 = st[:6, f]
            t = n0 + np.arange(1, v.size + 1, dtype=np.float64)
            total = _scan(m0, v)
            dev = v - total / t
            up = _scan(u0, dev - d)
            umin = np.minimum(np.minimum.accumulate(up), umin0)
            down = _scan(d0, dev + d)
            dmax = np.maximum(np.maximum.accumulate(down), dmax0)
            alarm = (((up - umin) > h) | ((dmax - down) > h)) & (t >= PH_MIN_INSTANCES)
            if alarm.any():
                i = int(alarm.argmax())
                out.append((start + i, float(max(up[i] - umin[i], dmax[i] - down[i]))))
                st[:6, f] = 0.0
                st[6, f] += 1
                start += i + 1
                continue
            st[:6, f] = (t[-1], total[-1], up[-1], umin[-1], down[-1], dmax[-1])
            break
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
        return {name: {"adwin_width": self.adwins[f].width, "adwin_detections": self.adwins[f].detections,
                       "adwin_delta": self.adwin_delta, "page_hinkley_statistic": float(max(self.ph[2, f] - self.ph[3, f],
                                                                        self.ph[5, f] - self.ph[4, f])),
                       "page_hinkley_threshold": self.ph_threshold, "page_hinkley_detections": int(self.ph[6, f]),
                       "last_block_z": float(self.last_z[f]), "window_values": int(self.wn[f]),
                       "reference_values": int(self.nref[f]),
                       "js_threshold_full_window": float(cal.chi2_quantile(int(self.bins[f]) - 1, self.alpha)
                                                         / (2.0 * (self.window + max(int(self.nref[f]), 1))))}
                for f, name in enumerate(self.names)}

    def to_state(self) -> dict[str, Any]:
        return {"counts": self.counts.ravel().tolist(), "s1": [enc_float(v) for v in self.s1.tolist()],
                "s2": [enc_float(v) for v in self.s2.tolist()], "wn": self.wn.tolist(),
                "part_s": [enc_float(v) for v in self.part_s.tolist()], "part_c": self.part_c.tolist(),
                "part_e": self.part_e, "last_z": [enc_float(v) for v in self.last_z.tolist()],
                "ring": [[enc_float(v) for v in row] for row in self.ring.tolist()],
                "ref": self.ref_mat.astype(np.int64).ravel().tolist(), "nref": self.nref.tolist(),
                "pending": self.pending.astype(np.int64).ravel().tolist(), "pending_n": self.pending_n.tolist(),
                "adwin": [a.to_state() for a in self.adwins],
                "ph": [[enc_float(v) for v in row] for row in self.ph.tolist()]}

    def load_state(self, st: Any) -> None:
        if not isinstance(st, dict):
            raise StateFormatError("numeric: expected an object")
        F = self.F
        self.counts = np.array(check_counts(st.get("counts"), "numeric.counts", F * self.nb),
                               dtype=np.int64).reshape(F, self.nb)

        def floats(key: str) -> np.ndarray:
            return np.array([check_float(v, key, finite=True) for v in check_list(st.get(key), key, F)])

        self.s1, self.s2, self.part_s = floats("s1"), floats("s2"), floats("part_s")
        self.last_z = floats("last_z")
        self.wn = np.array(check_counts(st.get("wn"), "numeric.wn", F), dtype=np.int64)
        self.part_c = np.array(check_counts(st.get("part_c"), "numeric.part_c", F), dtype=np.int64)
        self.part_e = check_int(st.get("part_e"), "numeric.part_e", 0, self.k - 1)
        if (self.part_c > self.part_e).any():
            raise StateFormatError("numeric: partial block counts exceed its events")
        self.ref_mat = np.array(check_counts(st.get("ref"), "numeric.ref", F * self.nb),
                                dtype=np.float64).reshape(F, self.nb)
        self.nref = np.array(check_counts(st.get("nref"), "numeric.nref", F), dtype=np.int64)
        self.pending = np.array(check_counts(st.get("pending"), "numeric.pending", F * self.nb),
                                dtype=np.float64).reshape(F, self.nb)
        self.pending_n = np.array(check_counts(st.get("pending_n"), "numeric.pending_n", F), dtype=np.int64)
        if (self.ref_mat[~self.mask] != 0).any() or (self.ref_mat.sum(axis=1) != self.nref).any():
            raise StateFormatError("numeric.ref inconsistent with its bins")
        self._ref_derived()
        ring = check_list(st.get("ring"), "numeric.ring")
        if len(ring) > RING:
            raise StateFormatError("numeric.ring too long")
        self.ring = np.array([[check_float(v, "numeric.ring", finite=True) for v in check_list(row, "ring", F)]
                              for row in ring], dtype=np.float64).reshape(len(ring), F)
        self.adwins = [Adwin.from_state(a) for a in check_list(st.get("adwin"), "numeric.adwin", F)]
        ph = [[check_float(v, "numeric.ph", finite=True) for v in check_list(row, "numeric.ph", F)]
              for row in check_list(st.get("ph"), "numeric.ph", 7)]
        self.ph = np.array(ph, dtype=np.float64).reshape(7, F)
        if (self.ph[0] < 0).any() or (self.ph[6] < 0).any():
            raise StateFormatError("numeric.ph: negative counts")


def _scan(start: Any, x: np.ndarray) -> np.ndarray:
    """Running sums ``start + x[0]``, ``start + x[0] + x[1]``, ... along axis 0, left to right
    (the additions of the one-value Page-Hinkley recursion, whatever the batch cuts)."""
    return np.add.accumulate(np.concatenate((np.asarray(start, dtype=np.float64)[None], x)), axis=0)[1:]


def _smoothed_rows(C: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Row-wise half-count smoothed proportions over each row's real bins; padding set to 1.

    Padding entries equal in both operands contribute nothing to PSI / JS (``(p-q) log(p/q)``
    and ``p log(p/m)`` vanish when ``p = q = m = 1``), so every feature is tested on its own bins.
    """
    c = np.where(mask, C + 0.5, 0.0)
    p = c / c.sum(axis=1, keepdims=True)
    return np.where(mask, p, 1.0)
