"""Bernoulli indicator CUSUMs: thresholds from reference counts, one-sided columns, state."""
import numpy as np
from hypothesis import given, settings, strategies as st

from detectors.indicators import MIN_REFERENCE, IndicatorCusums


def test_up_only_columns_never_fire_down_and_thin_references_stay_off():
    ic = IndicatorCusums(3, [1.5, 3.0, 8.0], 1e-6, np.array([False, True, False]))
    ic.derive(np.array([500, 500, 5]), np.array([2000, 2000, MIN_REFERENCE - 1]))
    assert np.isinf(ic.bank.h_dn[1]).all() and np.isfinite(ic.bank.h_dn[0]).all()
    assert list(ic.bank.enabled) == [True, True, False]
    x = np.zeros((3000, 3))  # every indicator drops to 0 (from 25%): column 0 fires down, 1 never, 2 is off
    hits = ic.update(x)
    assert {(h[1], h[2]) for h in hits} == {(0, "down")}


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(1, 700), min_size=1, max_size=6), st.integers(0, 2**31 - 1))
def test_state_does_not_depend_on_batch_cuts(cuts, seed):
    rng = np.random.default_rng(seed)
    x = (rng.random((2500, 2)) < np.r_[np.full(1200, 0.1), np.full(1300, 0.3)][:, None]).astype(float)
    bounds = [0] + sorted({min(c * (i + 1), 2500) for i, c in enumerate(cuts)}) + [2500]
    one, many = IndicatorCusums(2, [3.0], 1e-5), IndicatorCusums(2, [3.0], 1e-5)
    for ic in (one, many):
        ic.derive(np.array([200, 200]), np.array([2000, 2000]))
    a = [(h[0], h[1], h[2]) for h in one.update(x)]
    b = []
    for lo, hi in zip(bounds, bounds[1:]):
        b += [(h[0] + lo, h[1], h[2]) for h in many.update(x[lo:hi])]
    assert a == b and a
    assert one.to_state() == many.to_state()
