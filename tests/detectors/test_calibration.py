import numpy as np
import pytest
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
    """PSI / JS / KS critical values hold their per-window alpha under the null."""
    from detectors.sketches import binned_ks, jensen_shannon, psi
    rng = np.random.default_rng(2)
    bins, n, nref, alpha = 10, 1000, 2000, 0.01
    q = np.full(bins, 1 / bins)
    t_psi, t_js = cal.psi_threshold(bins, n, nref, alpha), cal.js_threshold(bins, n, nref, alpha)
    t_ks = cal.ks_threshold(n, nref, alpha)
    trials = 4000
    ref = rng.multinomial(nref, q, size=trials)
    cur = rng.multinomial(n, q, size=trials)
    fa = np.array([[psi(c, r) >= t_psi, jensen_shannon(c, r) >= t_js, binned_ks(c, r) >= t_ks]
                   for c, r in zip(cur, ref)]).mean(axis=0)
    assert (fa <= alpha * 2).all(), fa


def test_window_alpha():
    assert cal.window_alpha(1.0, 0.5, 1000) == 0.0005
    assert cal.window_alpha(1e6, 1.0, 1000) == 0.25
