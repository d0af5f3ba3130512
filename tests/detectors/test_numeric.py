import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from scipy.special import ndtri

from detectors.numeric import (PSEUDO_COUNT, NumericBank, _padded, _rank_rows, _score_rows, rank_table,
                               score_table)
from detectors.profile import RANK_GRID
from detectors.profile import NumericProfile
from detectors.spec import CalibrationSpec, FeatureSpec

F = 3


def bank(**kw):
    feats = [FeatureSpec(name=f"x{j}", type="numeric") for j in range(F)]
    profs = [NumericProfile([-1.0, 0.0, 1.0], [159, 341, 341, 159], 0.0, 1.0, 1000, 0) for _ in range(F)]
    return NumericBank(feats, profs, CalibrationSpec(**kw))


def feed(b, X, valid, cuts):
    hits = []
    bounds = [0] + sorted(set(cuts)) + [X.shape[0]]
    for lo, hi in zip(bounds, bounds[1:]):
        if hi > lo:
            b.prepare(X[lo:hi], valid[lo:hi])
            b.accumulate(0, hi - lo)
            hits += [(h[1], h[2], h[7] + lo, h[6].get("score")) for h in b.sequential(np.arange(hi - lo))]
    return hits


def cusum_loop(u, k, h_up, h_dn, min_run=30, w=0.0, m=0.0):
    """Plain-Python self-starting two-sided CUSUM with restarts (independent of the vectorized bank);
    the running mean starts from ``w`` values of mean ``m``."""
    out, t, total = [], w, w * m
    K = len(k)
    up, umin, dn, dmax = [0.0] * K, [0.0] * K, [0.0] * K, [0.0] * K
    for i, x in enumerate(u):
        t += 1
        total += x
        dev = x - total / t
        fire = False
        for j in range(K):
            up[j] += dev - k[j]
            umin[j] = min(umin[j], up[j])
            dn[j] += dev + k[j]
            dmax[j] = max(dmax[j], dn[j])
            fire |= up[j] - umin[j] > h_up[j] or dmax[j] - dn[j] > h_dn[j]
        if fire and t >= min_run:
            out.append(i)
            t, total = w, w * m
            up, umin, dn, dmax = [0.0] * K, [0.0] * K, [0.0] * K, [0.0] * K
    return out


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000), st.lists(st.integers(1, 599), max_size=6), st.floats(0, 0.3))
def test_score_cusums_match_a_plain_loop(seed, cuts, p_invalid):
    """Normal scores and squared normal scores of every valid value drive each feature's two CUSUMs
    exactly like a one-value loop, any batch cuts."""
    rng = np.random.default_rng(seed)
    n = 600
    X = rng.standard_normal((n, F)) * 2 + np.r_[np.zeros(300), np.full(300, 1.0)][:, None]
    valid = rng.random((n, F)) >= p_invalid
    X = np.where(valid, X, np.nan)
    b = bank(false_alarms_per_million=5000.0)
    hits = feed(b, X, valid, cuts)
    c = b.cusum
    for j in range(F):
        z = score_table(b.profs[j].grid_counts)[np.searchsorted(b.grid[j], X[valid[:, j], j], side="right")]
        rows = np.flatnonzero(valid[:, j])
        for col, score, u in ((j, "normal_score", z), (F + j, "squared_normal_score", z * z)):
            w = np.asarray(b.profs[j].grid_counts) + PSEUDO_COUNT
            m = float((w * score_table(b.profs[j].grid_counts) ** (2 if col >= F else 1)).sum() / w.sum())
            want = [int(rows[i]) for i in cusum_loop(u.tolist(), c.k_up[col].tolist(), c.h_up[col].tolist(),
                                                     c.h_dn[col].tolist(), w=1000.0, m=m)]
            got = sorted(e for d, key, e, sc in hits if key == f"x{j}" and d == "cusum" and sc == score)
            assert got == want, (j, score)
    assert any(d == "cusum" and sc == "normal_score" for d, _, _, sc in hits)  # the shift is found
    assert b.wn.tolist() == valid.sum(axis=0).tolist()
    assert b.counts.sum() == valid.sum()


def test_single_outlier_moves_a_score_cusum_by_a_bounded_step():
    b = bank()
    X = np.zeros((200, F))
    X[100, 0] = -2460.0
    feed(b, X, np.ones_like(X, dtype=bool), [])
    u_out = rank_table(b.profs[0].grid_counts)[0]
    assert 0.0 <= u_out < 0.5
    z = score_table(b.profs[0].grid_counts)
    assert np.isfinite(z).all() and -2.5 < z[0] < 0 and abs(z.max()) < 2.5
    stat, thr = b.cusum.exceedance()
    assert (stat < thr).all()


def test_state_round_trip_same_future():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((1000, F))
    X[600:, 1] += 1.0
    v = np.ones_like(X, dtype=bool)
    a = bank()
    feed(a, X[:333], v[:333], [])
    b = bank()
    b.load_state(a.to_state())
    assert feed(a, X[333:], v[333:], [100]) == feed(b, X[333:], v[333:], [100])
    assert a.to_state() == b.to_state()
    assert a.close(5) == b.close(5)


def test_window_tests_detect_shift_only_where_injected():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((1000, F))
    X[:, 2] += 0.4
    b = bank()
    feed(b, X, np.ones_like(X, dtype=bool), [])
    hits = b.close(999)
    assert {h[2] for h in hits} == {"x2"} and {h[1] for h in hits} == {"js", "ks"}
    assert all(h[3] >= h[4] for h in hits)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 300))
def test_bins_and_scores_match_searchsorted_per_feature(seed, n):
    """The compiled pass gives every value the bin code and scores of numpy's per-feature searchsorted,
    for features whose edges and grids differ in length, values on edges, and NaNs."""
    rng = np.random.default_rng(seed)
    feats, profs = [], []
    for j in range(4):
        edges = np.unique(rng.integers(-20, 20, int(rng.integers(1, 12)))).astype(float).tolist()
        counts = rng.integers(1, 50, len(edges) + 1).tolist()
        grid = np.unique(rng.normal(0, 5, int(rng.integers(1, 70))).round(1)).tolist()
        gc = rng.integers(1, 30, len(grid) + 1).tolist()
        feats.append(FeatureSpec(name=f"x{j}", type="numeric"))
        profs.append(NumericProfile(edges, counts, 0.0, 1.0, sum(counts), 0, grid=grid, grid_counts=gc))
    b = NumericBank(feats, profs, CalibrationSpec())
    X = np.where(rng.random((n, 4)) < 0.5, rng.integers(-22, 22, (n, 4)).astype(float), rng.normal(0, 8, (n, 4)))
    X[rng.random((n, 4)) < 0.1] = np.nan
    b.prepare(X, ~np.isnan(X))
    for j, p in enumerate(profs):
        want_bins = np.searchsorted(np.asarray(p.edges), X[:, j], side="right") + j * b.nb
        g = np.searchsorted(np.asarray(p.grid), X[:, j], side="right")
        assert b._bidx[j].tolist() == want_bins.tolist()
        assert b._u[:, j].tolist() == score_table(p.grid_counts)[g].tolist()
        assert b._u[:, 4 + j].tolist() == (score_table(p.grid_counts)[g] ** 2).tolist()


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.lists(st.integers(1, 199), max_size=5), st.floats(0, 0.5))
def test_window_sketches_match_a_plain_loop(seed, cuts, p_invalid):
    """Bin counts, value counts and the sums of values and squares of the open window equal a
    one-value loop over the valid values in arrival order, any batch cuts."""
    rng = np.random.default_rng(seed)
    n = 200
    X = rng.standard_normal((n, F)) * 3
    valid = rng.random((n, F)) >= p_invalid
    X = np.where(valid, X, np.nan)
    b = bank(window=10_000)
    feed(b, X, valid, cuts)
    for j in range(F):
        edges = np.asarray(b.profs[j].edges)
        s1 = s2 = 0.0
        counts = [0] * (len(edges) + 1)
        for i in range(n):
            if valid[i, j]:
                x = float(X[i, j])
                s1 += x
                s2 += x * x
                counts[int(np.searchsorted(edges, x, side="right"))] += 1
        assert (float(b.s1[j]), float(b.s2[j])) == (s1, s2)
        assert b.counts[j, : len(counts)].tolist() == counts and b.counts[j, len(counts):].sum() == 0
        assert int(b.wn[j]) == int(valid[:, j].sum())


def _stats_reference(b: NumericBank) -> dict:
    """Each feature's statistics read element by element from the bank's arrays."""
    from detectors import calibration as cal

    stat, thr = b.cusum.exceedance()
    out = {}
    for f, name in enumerate(b.names):
        out[name] = {"cusum_statistic": float(stat[f]), "cusum_threshold": float(thr[f]),
                     "tail_cusum_statistic": float(stat[F + f]), "tail_cusum_threshold": float(thr[F + f]),
                     "cusum_detections": int(b.cusum.detections[f] + b.cusum.detections[F + f]),
                     "cusum_armed": bool(b.cusum.enabled[f]), "values_since_restart": int(b.cusum.n[f]),
                     "window_values": int(b.wn[f]), "reference_values": int(b.nref[f]),
                     "js_threshold_full_window": float(cal.chi2_quantile(int(b.bins[f]) - 1, b.alpha)
                                                       / (2.0 * (b.window + max(int(b.nref[f]), 1))))}
    return out


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 700), shift=st.floats(0.0, 3.0))
def test_stats_read_every_feature_as_its_arrays_hold_it(seed, n, shift):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, F)) + np.array([0.0, shift, -shift])
    valid = rng.random((n, F)) > 0.05
    b = bank()
    feed(b, X, valid, [n // 3])
    got = b.stats()
    assert got == _stats_reference(b)
    # the same Python types (an int where the reference has an int, a bool where it has a bool)
    assert {k: {s: type(v) for s, v in d.items()} for k, d in got.items()} == \
        {k: {s: type(v) for s, v in d.items()} for k, d in _stats_reference(b).items()}


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(st.integers(0, 10**6), max_size=70), min_size=1, max_size=12))
def test_the_tables_of_all_features_at_once_match_one_feature_at_a_time(rows):
    """Mid-ranks and normal scores computed over the zero-padded matrix of every feature's grid
    counts hold, bit for bit, what one feature's list gives on its own (arming builds them at once)."""
    counts, inside = _padded(rows)
    assert counts.shape == (len(rows), max(map(len, rows)))
    ranks, scores = _rank_rows(counts), _score_rows(counts)
    lo = 0.5 / RANK_GRID
    for j, row in enumerate(rows):
        c = np.asarray(row, dtype=np.float64)
        want = (np.cumsum(c) - 0.5 * c) / max(c.sum(), 1.0)
        assert inside[j].sum() == len(row) and counts[j, : len(row)].tolist() == row
        assert ranks[j, : len(row)].tobytes() == want.tobytes() == rank_table(row).tobytes()
        assert scores[j, : len(row)].tobytes() == ndtri(np.clip(want, lo, 1 - lo)).tobytes()
        assert score_table(row).tobytes() == scores[j, : len(row)].tobytes()
