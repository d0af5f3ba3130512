import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from detectors import calibration as cal
from detectors.sequential import PageHinkley


def test_page_hinkley_threshold_matches_simulation():
    """Siegmund's ARL gives the alarm rate on N(0,1) input (checked at a rate simulation can measure)."""
    target = 2000.0  # alarms per million updates
    h = cal.page_hinkley_threshold(0.5, target)
    rng = np.random.default_rng(7)
    ph = PageHinkley(0.5, h, min_instances=1)
    n = 400_000
    alarms = sum(len(ph.update_many(rng.standard_normal(50_000))) for _ in range(n // 50_000))
    rate = alarms * 1e6 / n
    assert 0.3 * target <= rate <= 1.5 * target, rate


def test_adwin_table_reproduces():
    delta = cal.adwin_delta(126.35)
    assert abs(delta - 0.1) < 1e-9
    rate = cal.measure_adwin_rate(delta, n=300_000, seed=3)
    assert 126.35 / 3 <= rate <= 126.35 * 3


def test_adwin_delta_monotone_and_extrapolated():
    rates = [0.01, 0.5, 1.05, 8, 100, 900, 5000]
    deltas = [cal.adwin_delta(r) for r in rates]
    assert deltas == sorted(deltas)
    assert deltas[0] < 0.002 and deltas[-1] == 0.5


@pytest.mark.parametrize("ref_hits, ref_n, n, alpha", [(0, 2000, 1000, 1e-4), (20, 2000, 1000, 1e-3),
                                                       (900, 2000, 500, 1e-3), (5, 100, 37, 0.01)])
def test_rate_bounds_tail_probabilities(ref_hits, ref_n, n, alpha):
    lo, hi = cal.rate_bounds(ref_hits, ref_n, n, alpha)
    d = stats.betabinom(n, ref_hits + 0.5, ref_n - ref_hits + 0.5)
    assert d.sf(hi - 1) <= alpha / 2 < d.sf(hi - 2)
    if lo > 0:
        assert d.cdf(lo - 1) <= alpha / 2 < d.cdf(lo)


def test_rate_bounds_false_alarm_rate_by_simulation():
    """Averaged over reference draws, the band's false-alarm probability is at most alpha."""
    rng = np.random.default_rng(1)
    p, ref_n, n, alpha = 0.03, 2000, 1000, 0.02
    trials, alarms = 3000, 0
    for _ in range(trials):
        lo, hi = cal.rate_bounds(int(rng.binomial(ref_n, p)), ref_n, n, alpha)
        k = rng.binomial(n, p)
        alarms += k >= hi or k < lo
    assert alarms / trials <= alpha * 1.5


def test_histogram_thresholds_by_simulation():
    """G-test / KS critical values hold their per-window alpha under the null."""
    from detectors.sketches import binned_ks
    rng = np.random.default_rng(2)
    bins, n, nref, alpha = 10, 1000, 2000, 0.01
    q = np.full(bins, 1 / bins)
    t_ks = cal.ks_threshold(n, nref, alpha)
    trials = 4000
    ref = rng.multinomial(nref, q, size=trials)
    cur = rng.multinomial(n, q, size=trials)
    js, t_js = cal.g_test(cur, ref, alpha)
    fa = np.array([(js >= t_js).mean(), np.mean([binned_ks(c, r) >= t_ks for c, r in zip(cur, ref)])])
    assert (fa <= alpha * 2).all(), fa


def test_g_test_far_tail_with_small_bins():
    """Zipf top-16 + other (10 expected values in the smallest bin): G holds alpha = 1e-4, the
    chi-square distance sum (p - q)^2 / q against the same chi-square quantile does not."""
    from detectors.sketches import chi2_distance
    rng = np.random.default_rng(5)
    z = 1 / np.arange(1, 61) ** 1.1
    z /= z.sum()
    p = np.r_[z[:16], z[16:].sum()]
    n, nref, alpha, trials = 1000, 2000, 1e-4, 400_000
    cur = rng.multinomial(n, p, size=trials)
    ref = rng.multinomial(nref, p, size=trials)
    js, thr = cal.g_test(cur, ref, alpha)
    assert (js >= thr).sum() <= 2 * alpha * trials  # expected 40
    old = stats.chi2.isf(alpha, p.size - 1) * (1 / n + 1 / nref)
    dist = np.array([chi2_distance(c, r) for c, r in zip(cur[:100_000], ref[:100_000])])
    assert (dist >= old).sum() > 3 * alpha * 100_000


def test_g_test_statistic_is_weighted_js():
    """G / (2 N) is the Jensen-Shannon divergence with weights n / N, n_ref / N."""
    c, r = np.array([30.0, 50.0, 20.0]), np.array([300.0, 250.0, 450.0])
    js, thr = cal.g_test(c, r, 1e-3)
    w1, w2 = c.sum() / (c.sum() + r.sum()), r.sum() / (c.sum() + r.sum())
    p, q = c / c.sum(), r / r.sum()
    m = w1 * p + w2 * q
    expected = w1 * (p * np.log(p / m)).sum() + w2 * (q * np.log(q / m)).sum()
    assert abs(js[0] - expected) < 1e-12
    g = 2 * (c.sum() + r.sum()) * js[0]
    assert g > stats.chi2.isf(1e-3, 2) and js[0] >= thr[0]
    assert cal.g_test(np.zeros(3), r, 1e-3)[1][0] == np.inf


def test_window_alpha():
    assert cal.window_alpha(1.0, 0.5, 1000) == 0.0005
    assert cal.window_alpha(1e6, 1.0, 1000) == 0.25


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 40), min_size=2, max_size=12), st.integers(1, 4), st.floats(1e-9, 1e-3))
def test_score_cusum_memo_is_exact_and_hands_out_copies(counts, rows, rate):
    """The memoized thresholds are bit-for-bit the computed ones, and editing a result does not leak."""
    c = np.asarray(counts, dtype=np.float64) + 0.5
    vals = np.tile(np.linspace(-1.5, 2.0, c.size), (rows, 1)) * np.arange(1, rows + 1)[:, None]
    probs = np.tile(c, (rows, 1))
    drifts = [0.1, 0.25, 0.6]
    want = cal._score_cusum(vals, probs, np.asarray(drifts), np.asarray(rate))
    first = cal.score_cusum(vals, probs, drifts, rate)
    for got in (first, cal.score_cusum(vals.copy(), probs.copy(), list(drifts), rate)):
        assert [a.tobytes() for a in got] == [a.tobytes() for a in want]
    first[1][...] = -1.0  # a caller editing its copy (labels.py edits bernoulli_cusum's results)
    assert cal.score_cusum(vals, probs, drifts, rate)[1].tobytes() == want[1].tobytes()
    other = cal.score_cusum(vals, probs, drifts, rate * 2)  # a different input is not served the stored one
    assert other[1].tobytes() == cal._score_cusum(vals, probs, np.asarray(drifts), np.asarray(rate * 2))[1].tobytes()


@given(st.lists(st.integers(0, 500), min_size=1, max_size=5), st.integers(500, 20000))
@settings(max_examples=30, deadline=None)
def test_bernoulli_cusum_memo_is_exact(hits, n):
    h = np.asarray(hits)
    want = cal._bernoulli_cusum(h.astype(np.float64), np.full(h.size, float(n)), np.array([1.5, 3.0]), np.array(1e-8))
    for _ in range(2):
        got = cal.bernoulli_cusum(h, np.full(h.size, n), [1.5, 3.0], 1e-8)
        assert [a.tobytes() for a in got] == [a.tobytes() for a in want]
        got[2][0] = 0.0


def test_threshold_memo_is_bounded():
    """The memo is a bounded LRU cache: a repeated input is served from it, a new one computed."""
    info = cal._thresholds.cache_info()
    assert info.maxsize == 1024 and info.currsize <= 1024
    h = np.array([17.0, 3.0])
    first = cal.bernoulli_cusum(h, np.full(2, 12345.0), [1.5, 3.0], 2e-8)
    before = cal._thresholds.cache_info()
    again = cal.bernoulli_cusum(h, np.full(2, 12345.0), [1.5, 3.0], 2e-8)
    after = cal._thresholds.cache_info()
    assert after.hits == before.hits + 1 and after.misses == before.misses
    assert [a.tobytes() for a in again] == [a.tobytes() for a in first]
    cal.bernoulli_cusum(h, np.full(2, 12346.0), [1.5, 3.0], 2e-8)
    assert cal._thresholds.cache_info().misses == after.misses + 1

def _discrete_law(draw_counts: list[int], spread: float) -> tuple[np.ndarray, np.ndarray]:
    """A centred discrete law on an uneven grid (zero masses allowed): values, probabilities."""
    p = np.asarray(draw_counts, dtype=np.float64)
    p = p / p.sum()
    v = np.cumsum(np.linspace(0.2, 1.0, p.size)) * spread
    return v - (p * v).sum(), p


def _log_mgf(v: np.ndarray, p: np.ndarray, k: float, theta: float) -> float:
    """``log sum_j p[j] exp(theta (v[j] - k))`` in plain floats (the equation lundberg_theta solves)."""
    terms = [theta * (x - k) + np.log(q) for x, q in zip(v.tolist(), p.tolist()) if q > 0]
    top = max(terms)
    return top + float(np.log(sum(np.exp(t - top) for t in terms)))


@settings(max_examples=80, deadline=None)
@given(st.lists(st.integers(0, 50), min_size=2, max_size=40).filter(lambda c: sum(c) > 0),
       st.floats(0.05, 5.0), st.floats(0.01, 3.0))
def test_lundberg_theta_solves_its_equation(counts, spread, drift_sd):
    """The compiled root is the positive zero of the log moment generating function of ``score - k``
    (sign change a relative 1e-9 either side), and ``inf`` exactly when the score never exceeds ``k``."""
    v, p = _discrete_law(counts, spread)
    sd = float(np.sqrt((p * v * v).sum()))
    k = drift_sd * sd if sd > 0 else drift_sd
    theta = float(cal.lundberg_theta(v[None, :], p[None, :], np.array([k]))[0])
    if not v[p > 0].max() > k:
        assert theta == np.inf
        return
    assert 0 < theta < np.inf
    assert _log_mgf(v, p, k, theta * (1 - 1e-9)) < 0 < _log_mgf(v, p, k, theta * (1 + 1e-9)) or \
        abs(_log_mgf(v, p, k, theta)) < 1e-12


def test_lundberg_theta_of_a_fine_normal_grid_is_two_k_over_variance():
    x = np.linspace(-8, 8, 4001)
    p = stats.norm.pdf(x)
    p /= p.sum()
    theta = cal.lundberg_theta(np.vstack([x, 2 * x]), np.vstack([p, p]), np.array([0.5, 0.5]))
    assert theta == pytest.approx([1.0, 0.25], rel=1e-3)


@settings(max_examples=80, deadline=None)
@given(st.floats(0.01, 20.0), st.floats(0.01, 3.0), st.floats(0.05, 4.0), st.floats(1e-10, 1e-2),
       st.one_of(st.none(), st.floats(0.0, 5.0)))
def test_cusum_threshold_gives_the_target_run_length(theta, drift, sd, rate, max_step):
    """``ARL(h) = (exp(theta b) - theta b - 1) / (theta k) = 1 / rate`` with ``b = h + overshoot``
    (relative 1e-9), or ``h = 0`` when even ``h = 0`` runs longer than that."""
    h = float(cal.cusum_threshold(np.array([theta]), np.array([drift]), np.array([sd]), rate,
                                  None if max_step is None else np.array([max_step]))[0])
    over = cal.OVERSHOOT * sd if max_step is None else min(cal.OVERSHOOT * sd, max_step)

    def arl(b: float) -> float:
        return (np.expm1(theta * b) - theta * b) / (theta * drift)

    if h == 0.0:
        assert arl(over) >= (1 / rate) * (1 - 1e-9)
    else:
        assert arl(h + over) == pytest.approx(1 / rate, rel=1e-9)


def test_cusum_threshold_broadcasts_and_never_fires_without_a_root():
    h = cal.cusum_threshold(np.array([[1.0, np.inf], [2.0, 0.5]]), np.array([[0.5], [0.25]]), np.ones((2, 2)),
                            np.array([1e-6, 1e-7]))
    assert h.shape == (2, 2) and h[0, 1] == np.inf and np.isfinite(h[[0, 1, 1], [0, 0, 1]]).all()
    assert h[0, 0] == cal.cusum_threshold(np.array([1.0]), np.array([0.5]), np.array([1.0]), 1e-6)[0]


@pytest.mark.parametrize("p", [0.5, 1e-3, 2.5e-9, 0.975])
def test_normal_isf_is_scipys_quantile_once_per_probability(p):
    cal.normal_isf.cache_clear()
    assert cal.normal_isf(p) == float(stats.norm.isf(p))
    assert cal.z_threshold(2 * p) == cal.normal_isf(p) and cal.z_threshold(p, two_sided=False) == float(stats.norm.isf(p))
    assert cal.normal_isf.cache_info().hits >= 1
