import json

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.cusum import CusumBank


def _bank(cols: int = 3) -> CusumBank:
    b = CusumBank(cols, 2, min_run=5)
    b.set_params(np.full((cols, 2), 0.3), np.full((cols, 2), 0.4), np.full((cols, 2), 2.5), np.full((cols, 2), 3.0),
                 np.ones(cols))
    b.set_prior(40, 0.0)
    return b


def _bursty(seed: int, n: int, cols: int = 3) -> np.ndarray:
    """Noise whose first columns swing far from their mean for long stretches (alarm after alarm)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, cols))
    x[n // 5:, : cols - 1] += 4 * np.sin(np.arange(n - n // 5) / 40)[:, None]
    return x


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.lists(st.integers(1, 700), min_size=1, max_size=6))
def test_alarm_bursts_are_independent_of_batch_cuts(seed, cuts):
    """Hits and state after bursts of alarms are the same for one batch, any cuts, or one event at a time."""
    x = _bursty(seed, 1500)
    whole = _bank()
    want = whole.update(x)
    assert len(want) > 20  # the data really is a burst
    cut, edges = _bank(), np.cumsum(cuts).tolist()
    got, lo = [], 0
    for hi in [e for e in edges if e < len(x)] + [len(x)]:
        got += [(h[0] + lo, *h[1:]) for h in cut.update(x[lo:hi])]
        lo = hi
    assert got == want
    assert json.dumps(cut.to_state()) == json.dumps(whole.to_state())
    if seed % 5 == 0:
        one = _bank()
        singles = [(h[0] + i, *h[1:]) for i in range(len(x)) for h in one.update(x[i:i + 1])]
        assert singles == want and json.dumps(one.to_state()) == json.dumps(whole.to_state())


def _reference(b: CusumBank, x: np.ndarray, valid: np.ndarray | None, cols: list[int]) -> list[tuple]:
    """The module doc's recursion, one value at a time in plain Python (restart after each alarm)."""
    hits = []
    for q, c in enumerate(cols):
        for i in range(x.shape[0]):
            if valid is not None and not valid[i, q]:
                continue
            b.n[c] += 1.0
            b.total[c] += x[i, q]
            dev = x[i, q] - b.total[c] / b.n[c]
            b.up[c] += dev - b.k_up[c]
            b.umin[c] = np.minimum(b.umin[c], b.up[c])
            b.dn[c] += dev + b.k_dn[c]
            b.dmax[c] = np.maximum(b.dmax[c], b.dn[c])
            su, sd = b.up[c] - b.umin[c], b.dmax[c] - b.dn[c]
            if not ((su > b.h_up[c]).any() or (sd > b.h_dn[c]).any()) or not b.enabled[c] or b.n[c] < b.min_run:
                continue
            ru, rd = su / b.h_up[c], sd / b.h_dn[c]
            ju, jd = int(ru.argmax()), int(rd.argmax())
            side, j, stat, thr = (("up", ju, su[ju], b.h_up[c, ju]) if ru[ju] >= rd[jd]
                                  else ("down", jd, sd[jd], b.h_dn[c, jd]))
            hits.append((i, c, side, j, float(stat), float(thr), int(b.n[c] - b.prior_n[c]), float(b.total[c] / b.n[c])))
            b.detections[c] += 1
            b.restart(c)
    return sorted(hits, key=lambda h: (h[0], h[1]))


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 400), st.booleans(), st.booleans())
def test_compiled_scan_is_the_plain_recursion(seed, n, masked, subset):
    """Hits and every state number equal the module doc's recursion run value by value in Python."""
    x = _bursty(seed, n, 4)
    rng = np.random.default_rng(seed)
    valid = rng.random(x.shape) > 0.2 if masked else None
    cols = [3, 0, 2] if subset else [0, 1, 2, 3]
    fast, slow = _bank(4), _bank(4)
    fast.enabled[1] = slow.enabled[1] = False
    got = fast.update(x[:, :len(cols)], None if valid is None else valid[:, :len(cols)],
                      np.array(cols) if subset else None)
    want = _reference(slow, x[:, :len(cols)], None if valid is None else valid[:, :len(cols)], cols)
    assert got == want
    assert json.dumps(fast.to_state()) == json.dumps(slow.to_state())
    if n >= 200:
        assert fast.detections.sum() > 0  # the data really alarms


def _exceedance_reference(b: CusumBank) -> tuple[np.ndarray, np.ndarray]:
    """The statistic / threshold choice written with whole-array numpy operations."""
    with np.errstate(divide="ignore", invalid="ignore"):
        su, sd = b.up - b.umin, b.dmax - b.dn
        ratio = np.concatenate((su / b.h_up, sd / b.h_dn), axis=1)
        ratio = np.where(np.isfinite(ratio), ratio, -1.0)
    j = ratio.argmax(axis=1)
    stat = np.concatenate((su, sd), axis=1)[np.arange(b.C), j]
    thr = np.concatenate((b.h_up, b.h_dn), axis=1)[np.arange(b.C), j]
    return stat / b.scale, thr / b.scale


_THRESHOLDS = st.one_of(st.floats(0.01, 50.0), st.just(float("inf")))


@settings(max_examples=150, deadline=None)
@given(cols=st.integers(1, 5), drifts=st.integers(1, 4), seed=st.integers(0, 2**32 - 1),
       h=st.lists(_THRESHOLDS, min_size=40, max_size=40), zeroed=st.lists(st.booleans(), min_size=40, max_size=40),
       fresh=st.booleans())
def test_exceedance_picks_the_side_and_drift_nearest_their_threshold(cols, drifts, seed, h, zeroed, fresh):
    rng = np.random.default_rng(seed)
    b = CusumBank(cols, drifts)
    shape = (cols, drifts)
    thresholds = np.array(h[:2 * cols * drifts]).reshape(2, cols, drifts)
    b.set_params(rng.uniform(0.1, 1.0, shape), rng.uniform(0.1, 1.0, shape), thresholds[0], thresholds[1],
                 rng.uniform(0.0, 3.0, cols))  # a scale of 0 reads as 1
    if not fresh:  # sums of a stream (a fresh bank's are 0)
        b.update(rng.normal(0.0, 1.0, (60, cols)) + rng.normal(0.0, 1.0, cols))
    # thresholds of 0 afterwards: ratios of x / 0 and 0 / 0, which are not finite
    mask = np.array(zeroed[:2 * cols * drifts]).reshape(2, cols, drifts)
    b.h_up[mask[0]], b.h_dn[mask[1]] = 0.0, 0.0
    stat, thr = b.exceedance()
    want_stat, want_thr = _exceedance_reference(b)
    assert stat.tobytes() == want_stat.tobytes() and thr.tobytes() == want_thr.tobytes()
