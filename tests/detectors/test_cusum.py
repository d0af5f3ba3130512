import json

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors import cusum
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


def test_restart_cost_follows_the_rows_not_rows_times_alarms(monkeypatch):
    """A burst of alarms scans each row a bounded number of times (it used to rescan the rest of the batch)."""
    scanned = [0]
    scan = cusum._scan

    def counting(start, x):
        scanned[0] += x.shape[0]
        return scan(start, x)

    monkeypatch.setattr(cusum, "_scan", counting)
    b = _bank(1)
    x = _bursty(3, 20_000, 2)[:, :1]
    hits = b.update(x)
    assert len(hits) > 1000
    # three scans (total, up, down) per chunk; each alarm wastes at most one chunk
    assert scanned[0] <= 3 * (2 * len(x) + len(hits) * cusum.CHUNK), (scanned[0], len(hits))


def test_large_batches_cut_in_row_blocks_match_one_pass(monkeypatch):
    """A batch cut into row blocks (to keep temporaries small) gives the hits and state of one pass."""
    x = _bursty(11, 3000)
    valid = np.random.default_rng(11).random(x.shape) > 0.05
    monkeypatch.setattr(cusum, "BLOCK_VALUES", 10**9)
    one = _bank()
    want = one.update(x, valid)
    monkeypatch.setattr(cusum, "BLOCK_VALUES", 6 * 100)  # 3 columns x 2 drifts: blocks of 100 rows
    blocked = _bank()
    got = blocked.update(x, valid)
    assert len(want) > 20 and got == want
    assert json.dumps(blocked.to_state()) == json.dumps(one.to_state())
