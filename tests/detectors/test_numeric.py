import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.numeric import NumericBank
from detectors.profile import NumericProfile
from detectors.sequential import PageHinkley
from detectors.spec import CalibrationSpec, FeatureSpec

F = 3


def bank(k=8, **kw):
    feats = [FeatureSpec(name=f"x{j}", type="numeric") for j in range(F)]
    profs = [NumericProfile([-1.0, 0.0, 1.0], [159, 341, 341, 159], 0.0, 1.0, 1000, 0) for _ in range(F)]
    return NumericBank(feats, profs, CalibrationSpec(block_size=k, **kw))


def feed(b, X, valid, cuts):
    hits = []
    bounds = [0] + sorted(set(cuts)) + [X.shape[0]]
    for lo, hi in zip(bounds, bounds[1:]):
        if hi > lo:
            b.prepare(X[lo:hi], valid[lo:hi])
            b.accumulate(0, hi - lo)
            hits += [(h[1], h[2], h[7] + lo) for h in b.sequential(np.arange(hi - lo))]
    return hits


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.lists(st.integers(1, 399), max_size=6), st.floats(0, 0.3))
def test_block_means_and_page_hinkley_match_reference(seed, cuts, p_invalid):
    """Block means over event blocks (any batch cuts) drive Page-Hinkley exactly like the 1-D reference."""
    rng = np.random.default_rng(seed)
    n, k = 400, 8
    X = rng.standard_normal((n, F)) * 2 + np.r_[np.zeros(200), np.full(200, 1.5)][:, None]
    valid = rng.random((n, F)) >= p_invalid
    X = np.where(valid, X, np.nan)
    b = bank(k, ph_delta=0.5)
    hits = feed(b, X, valid, cuts)
    thr = b.ph_threshold
    for j in range(F):
        ref = PageHinkley(0.5, thr, 30)
        zs, ends = [], []
        for blk in range(n // k):
            sl = slice(blk * k, (blk + 1) * k)
            c = valid[sl, j].sum()
            if c >= k // 2:
                zs.append(X[sl, j][valid[sl, j]].mean() * np.sqrt(c))
                ends.append((blk + 1) * k - 1)
        want = [ends[i] for i in ref.update_many(np.asarray(zs))]
        got = sorted(e for d, key, e in hits if key == f"x{j}" and d == "page_hinkley")
        assert got == want
    assert b.wn.tolist() == valid.sum(axis=0).tolist()
    assert b.counts.sum() == valid.sum()


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
