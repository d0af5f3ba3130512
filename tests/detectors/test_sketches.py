import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.sketches import (Counts, Histogram, Moments, Vocabulary, binned_ks, chi2_distance, entropy,
                                jensen_shannon, psi)

arrays = st.lists(st.floats(-1e6, 1e6, allow_nan=False), max_size=50).map(lambda x: np.asarray(x, dtype=float))
EDGES = [-1.0, 0.0, 0.5, 3.0]


def hist(x):
    h = Histogram(EDGES)
    h.update(x)
    return h


@settings(max_examples=100, deadline=None)
@given(arrays, arrays, arrays)
def test_histogram_merge_is_union_and_associative(a, b, c):
    ab_c = hist(a).merge(hist(b)).merge(hist(c))
    a_bc = hist(a).merge(hist(b).merge(hist(c)))
    union = hist(np.concatenate([a, b, c]))
    assert ab_c.counts.tolist() == a_bc.counts.tolist() == union.counts.tolist()
    assert hist(a).merge(hist(b)).counts.tolist() == hist(b).merge(hist(a)).counts.tolist()


codes = st.lists(st.integers(0, 5), max_size=40).map(lambda x: np.asarray(x, dtype=np.int64))


@settings(max_examples=100, deadline=None)
@given(codes, codes, codes)
def test_counts_merge(a, b, c):
    def cnt(x):
        k = Counts(6)
        k.update_codes(x)
        return k
    assert cnt(a).merge(cnt(b)).merge(cnt(c)).counts.tolist() == cnt(np.concatenate([a, b, c])).counts.tolist()
    assert cnt(a).merge(cnt(b).merge(cnt(c))).counts.tolist() == cnt(a).merge(cnt(b)).merge(cnt(c)).counts.tolist()


@settings(max_examples=100, deadline=None)
@given(arrays, arrays, arrays)
def test_moments_merge(a, b, c):
    def mom(x):
        m = Moments()
        m.update(x)
        return m
    u = np.concatenate([a, b, c])
    left = mom(a).merge(mom(b)).merge(mom(c))
    right = mom(a).merge(mom(b).merge(mom(c)))
    assert left.n == right.n == u.size
    if u.size:
        scale = max(1.0, float(np.abs(u).max()))
        assert abs(left.mean - u.mean()) <= 1e-9 * scale
        assert abs(left.mean - right.mean) <= 1e-9 * scale
        assert abs(left.m2 - ((u - u.mean()) ** 2).sum()) <= 1e-6 * scale * scale * max(u.size, 1)


def test_vocabulary_is_bounded():
    v = Vocabulary(["a", "b"], ["c"])
    assert v.codes(["a", "b", "c", "d", "e"]).tolist() == [0, 1, 2, 3, 3]
    assert len(v.lut) == 3  # unseen values never enter the table


def test_divergences():
    same = np.array([10, 20, 30])
    assert psi(same, same) == 0 and jensen_shannon(same, same) == 0 and binned_ks(same, same) == 0
    assert chi2_distance(same, same) == 0
    other = np.array([30, 20, 10])
    assert psi(other, same) > 0.1 and jensen_shannon(other, same) > 0.01 and binned_ks(other, same) > 0.2
    assert abs(entropy(np.array([5, 5])) - np.log(2)) < 1e-12


@settings(max_examples=100, deadline=None)
@given(st.lists(arrays, max_size=5))
def test_moments_sums_are_added_in_arrival_order(batches):
    """The sums are exactly those of a one-value loop in arrival order, however the values are cut
    into batches (state bytes do not depend on micro-batch boundaries)."""
    m = Moments()
    for b in batches:
        m.update(b)
    values = [float(v) for b in batches for v in b]
    shift = values[0] if values else 0.0
    s1 = s2 = 0.0
    for v in values:
        d = v - shift
        s1 += d
        s2 += d * d
    assert m.n == len(values)
    assert (m.shift, m.s1, m.s2) == ((shift, s1, s2) if values else (0.0, 0.0, 0.0))
    whole = Moments()
    whole.update(np.asarray(values, dtype=np.float64))
    assert whole.to_state() == m.to_state()
