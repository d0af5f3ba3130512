"""Thresholds from a target false-alarm rate.

Raw library defaults are not usable on production traffic (river's PageHinkley with its
default threshold fires more than 100 times in 100k draws of N(0, 1)). driftline instead:

0. **Sequential detectors** (``cusum``, every event or joined label) get their thresholds from
   :func:`lundberg_theta` and :func:`cusum_threshold` (:func:`score_cusum` for scores with a known
   discrete law such as reference mid-ranks, :func:`bernoulli_cusum` for indicators); see
   :mod:`detectors.cusum` and :mod:`detectors.numeric`. Every signal has one: numeric features and the
   confidence (normal scores of reference mid-ranks), predicted classes, categories, never-seen
   categories, low confidence and triggers (indicators, :mod:`detectors.indicators`), label
   classes and errors, and the difference scores of label sources and of the canary against
   stable (three- and four-point laws). Each takes the ``cusum`` share of its signal's budget
   per key (:data:`SHARES`), split evenly over its columns, sides and drifts (numeric features
   and the confidence: over drifts in proportion to ``1 / drift``). Points 1 and the ADWIN / Page-Hinkley
   parts of 3 describe the block-mean detectors used before state format 3 (the functions stay).

1. **Standardizes** every stream against its reference. Sequential detectors (ADWIN,
   Page-Hinkley) see *block means*: the mean of ``k`` consecutive valid values,
   ``z = (block_mean - ref_mean) / (ref_std / sqrt(k))``. By the central limit theorem ``z``
   is close to N(0, 1) whatever the feature's shape, so one calibration fits every feature,
   and the detectors run ``k`` times less often (faster, and a shift of ``s`` standard
   deviations becomes a shift of ``s * sqrt(k)`` in z-units).
2. **Budgets** false alarms: ``CalibrationSpec.false_alarms_per_million`` (F) is the expected
   number of detections per million events of one stream, per signal and key, on a
   stationary stream. Each signal splits F across its detectors (``SHARES``), and a test
   run once per window of ``W`` events gets the per-window false-alarm probability
   ``alpha = F * share * W / 1e6``.
3. **Derives thresholds** per detector:

   - Page-Hinkley (two-sided, running mean, tolerance ``delta``): Siegmund's approximation
     of the in-control average run length of a CUSUM on N(0, 1),
     ``ARL(h) = (exp(2 delta b) - 2 delta b - 1) / (2 delta^2)``, ``b = h + 1.166``,
     halved for two sides, solved for the threshold ``h``.
   - ADWIN: its confidence ``delta`` does not map to an alarm rate in closed form, so
     :data:`ADWIN_RATE_TABLE` holds the measured alarms per million N(0, 1) updates of
     river's ADWIN (clock 8) for several deltas (:func:`measure_adwin_rate` reproduces
     it); the delta for a target rate is interpolated in log-log space.
   - Windowed histogram tests (numeric bins, categorical top-k + other): the decision is
     the two-sample likelihood-ratio (G) test of the window counts ``c`` against the
     reference counts ``r`` (``N = n + n_ref``, ``t = c + r``)::

         G = 2 * sum_i [c_i ln(c_i N / (n t_i)) + r_i ln(r_i N / (n_ref t_i))]

     divided by Williams' correction ``1 + (N/n + N/n_ref - 1)(N sum_i 1/t_i - 1) / (6 N (B - 1))``
     and compared with the exact chi-square(``B - 1``) quantile (``B`` bins with ``t_i > 0``).
     Why G: its tail is the chi-square tail *in the far tail too*. ``G / 2`` is the log
     likelihood ratio, so by Sanov's theorem ``P(G >= g)`` decays as ``exp(-g / 2)``, the
     chi-square exponent, and Williams' factor fixes the polynomial term; quadratic
     statistics (PSI taken as ``sum (p - q)^2 / q``, Jensen-Shannon as 1/8 of it, Pearson or
     Neyman chi-square) only match the chi-square near its centre. A bin with a small
     expected count (a categorical tail bucket with 10 expected values per window, a
     reference bin that is low by chance) gives them a heavier tail: on 1M null window
     pairs (``B = 17`` Zipf bins, ``n = 1000``, ``n_ref = 2000``) ``sum (p - q)^2 / q``
     against its chi-square threshold fired 7 times its alpha at 1e-4 and 17 times at 1e-5;
     on 4M pairs the G test with Williams' factor fired 1.07 and 1.02 times alpha (10
     uniform bins or 17 Zipf bins, ``n_ref`` 2000 or 16000: 0.85 to 1.2 times at 1e-5,
     0.9 to 1.8 times at 1.7e-6 on 6 to 12 alarms). The reported statistic is the Jensen-Shannon divergence
     *with sample-size weights* ``(n / N, n_ref / N)`` of the raw proportions, which is
     exactly ``G / (2 N)`` (so detector ``js`` reports a JS divergence and its threshold is
     the chi-square quantile times Williams' factor over ``2 N``); PSI (numeric) and the
     chi-square distance (categorical) are reported in the evidence only. One test per
     histogram therefore gets the budget that used to be split between two near-duplicates
     (PSI and JS decide on the same deviation). KS uses the two-sample asymptotic critical
     value (the binned KS is never larger than the exact one, so the test stays
     conservative).
   - Rates (class rates, error rates, invalid-value rates, unseen categories, triggered
     rates): the beta-binomial posterior predictive of the reference counts (Jeffreys
     prior), so the uncertainty of a reference estimated from a few thousand events is
     part of the threshold and rates of zero in the reference are handled.
   - Invalid-value bursts (``input_integrity/invalid_burst``): the window test above is
     slow for a feature that was never invalid (a Jeffreys posterior from 0 of 2000 still
     allows rates near 1e-3, so a window of 1000 needs about 10 invalid values at the
     default budget; the drill's broken pipeline, 0.4% per feature, took ~9,500 events).
     A sequential count is much faster at the same budget: fire when ``k`` invalid values
     of one feature fall within ``span = window / 4`` events, checked at each invalid value.
     Its alarm rate per event at rate ``p`` is at most ``p * P(Bin(span - 1, p) >= k - 1)``;
     averaged over the posterior it is a size-biased beta-binomial tail
     (:func:`burst_count`), and ``k`` is the smallest count within ``F * share / 1e6``. The
     rate's ``k``-th moment falls fast with the reference size, so a feature clean over the
     grown reference (16k events) needs 4 invalid values in 250 events at F = 0.01 (7 from
     the initial 2000), one with a 1% reference rate about 12.

4. **Sharpens references**. The thresholds above hold *on average over reference draws*;
   a reference of a few thousand events that happens to be unlucky makes one key fire far
   more often than the target. Windows without any detection are therefore merged into
   the reference (the sketches merge exactly) in doubling steps until it is
   ``REFERENCE_GROWTH`` (8) times its initial size (numeric and categorical histograms,
   prediction class counts, confidence mean/spread and low-confidence count, label
   references, invalid-value counts). Windows with a detection never enter it; a drift slow enough to stay below
   every threshold during that period can be absorbed. Why it matters: a per-window test
   that adds the reference variance to the window's (``1/n + 1/n_ref``) is right on average
   over references, but the reference error is *common* to all later windows. A reference
   mean 2 of its standard errors off (n_ref = 2000, windows of 1000) shifts every window's
   z by 1.15 and makes the per-window rate 1.6 to 4.4 times its target (per-window targets
   1e-7 to 5e-4), for the whole stream. Merged up to 8 times the reference, that error is
   diluted to about 0.7 of the larger reference's standard error and the rate is back at
   (below) target.

   The sequential detectors need no such sharpening of the reference *mean*: Page-Hinkley
   compares each block with the running mean since its last restart and ADWIN compares two
   sub-windows of its own data, so a constant offset of every block z cancels in both
   (measured: ADWIN's alarm rate on block means of the drill's discrete ``aspect_ratio``,
   Poisson ``face_count`` and normal ``emb_max`` is that of N(0, 1) within noise, with the
   reference or the true mean/std). What remains is the reference *spread*: block z has
   variance ``(sigma / sigma_ref)^2``, and a standard deviation 2% low raises Page-Hinkley's
   rate by about a third at 30 per million blocks (more at lower rates). Block means of 32
   skewed values (Poisson(0.7) counts: skewness 0.2) fire about 20% above N(0, 1). Both are
   small next to the budget itself.
5. **Spends trigger budgets per event**: a P(class | trigger) test closes after
   ``min_trigger_events`` triggered events, which may span many events of the stream; it
   gets ``F * share * events_spanned / 1e6`` of the budget (rounded down to a power of two).

6. **Chooses the budget per stream**. F is per signal *and key*; a stream has one key per
   feature, class, trigger and label source (30 to 60 in a typical model), and false alarms
   of all of them add up. The default F = 0.01 therefore means about 0.5 false detections
   per million events of one stream (one every few days at 100 events/s), which is what
   the stationary 200k-event drill and the stretches before each drill incident need to stay
   quiet; F = 1 gave several per drill.

``detectors.simulate.false_alarm_rates`` measures the resulting rates on long stationary
streams; the tests check them (at a raised F, so that a short run resolves them).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache

import numba
import numpy as np
from scipy import special as _sp
from scipy import stats as _st

#: Share of one signal-key's false-alarm budget given to each of its detectors. ``cusum`` is
#: the per-event sequential detector (:mod:`detectors.cusum`); windowed tests keep the rest as
#: a second opinion.
SHARES: dict[str, dict[str, float]] = {
    "numeric_drift": {"cusum": 0.7, "js": 0.2, "ks": 0.1},
    "categorical_drift": {"cusum": 0.6, "js": 0.25, "unseen_rate": 0.15},
    "prediction_drift": {"cusum": 0.6, "class_rate": 0.2, "dominance": 0.2},
    "confidence_drift": {"cusum": 0.6, "mean": 0.2, "low_rate": 0.2},
    "label_drift": {"cusum": 0.6, "class_rate": 0.2, "entropy": 0.2},
    "performance": {"cusum": 0.7, "error_rate": 0.3},
    "label_disagreement": {"cusum": 0.6, "model": 0.2, "sources": 0.2},
    "trigger": {"cusum": 0.4, "triggered_rate": 0.2, "p_class_given_trigger": 0.4},
    "input_integrity": {"invalid_rate": 0.5, "invalid_burst": 0.5},
    "canary_divergence": {"prediction": 0.25, "confidence": 0.25, "error_rate": 0.2, "cusum": 0.3},
}

#: Smallest largest-step (score at its maximum minus the drift), in standard deviations of the
#: score, for which a one-sided score CUSUM is armed (see :func:`score_cusum`).
MIN_STEP_SD = 0.25

#: Siegmund's correction for the overshoot of a CUSUM over its threshold, in standard
#: deviations of one increment (exact for normal increments, conservative for coarser ones).
OVERSHOOT = 1.166

#: Measured alarms per million N(0,1) updates of river's ADWIN with clock=8
#: (4 x 5M draws per delta, see :func:`measure_adwin_rate`).
ADWIN_RATE_TABLE: tuple[tuple[float, float], ...] = (
    (0.002, 1.05), (0.005, 3.35), (0.01, 7.7), (0.02, 17.05), (0.03, 29.15),
    (0.05, 53.0), (0.1, 126.35), (0.3, 492.15), (0.5, 955.6),
)
ADWIN_CLOCK = 8


def _fp(a: np.ndarray) -> tuple[str, tuple[int, ...], bytes]:
    """Exact identity of a float64 array (dtype, shape and bits): a hashable cache key."""
    return a.dtype.str, a.shape, np.ascontiguousarray(a).tobytes()


@lru_cache(maxsize=1024)
def _thresholds(kind: str, *keys: tuple[str, tuple[int, ...], bytes]) -> tuple[np.ndarray, ...]:
    """Results of :func:`score_cusum` and :func:`bernoulli_cusum` (a few KB each) keyed on the exact
    inputs: arming solves the same bisections for every model whose reference has the same counts
    (a continuous feature's quantile grid always has the same counts for a given reference size)."""
    arrays = (np.frombuffer(b, dtype=dt).reshape(shape) for dt, shape, b in keys)
    return tuple(np.array(r, copy=True) for r in _UNCACHED[kind](*arrays))


def _memoized(kind: str, *args: object) -> tuple:
    """:data:`_UNCACHED` ``[kind]`` on the arguments as float64 arrays, through :func:`_thresholds`;
    the results are fresh copies (callers may edit what they get)."""
    keys = (_fp(np.asarray(a, dtype=np.float64)) for a in args)
    return tuple(r.copy() for r in _thresholds(kind, *keys))


_F1, _F2 = numba.float64[:], numba.float64[:, :]
_R1, _R2 = (numba.types.Array(numba.float64, nd, "A", readonly=True) for nd in (1, 2))  # inputs, writable or not


@numba.njit(numba.types.UniTuple(numba.float64, 2)(_R2, _R2, numba.int64, numba.float64, numba.float64),
            cache=True, nogil=True, error_model="numpy")
def _log_mgf(v, p, r, k, th):  # pragma: no cover - compiled
    """Row ``r``'s ``log sum_j p[j] exp(th (v[j] - k))`` and its slope in ``th`` (log-sum-exp)."""
    mx = -np.inf
    for j in range(v.shape[1]):
        if p[r, j] > 0:
            a = th * (v[r, j] - k) + math.log(p[r, j])
            if a > mx:
                mx = a
    tot = 0.0
    moment = 0.0
    for j in range(v.shape[1]):
        if p[r, j] > 0:
            w = math.exp(th * (v[r, j] - k) + math.log(p[r, j]) - mx)
            tot += w
            moment += w * (v[r, j] - k)
    return mx + math.log(tot), moment / tot


# argument types given: compiled (or loaded from the cache) at import, not when the first model arms
@numba.njit((_R2, _R2, _R1, _F1), cache=True, nogil=True, error_model="numpy")
def _lundberg_rows(v, p, k, out):  # pragma: no cover - compiled
    """:func:`lundberg_theta` row by row into ``out``."""
    for r in range(v.shape[0]):
        top = -np.inf
        var = 0.0
        for j in range(v.shape[1]):
            if p[r, j] > 0:
                top = max(top, v[r, j])
                var += p[r, j] * v[r, j] * v[r, j]
        if not top > k[r]:
            out[r] = np.inf
            continue
        th = 2.0 * k[r] / var if var > 0 else 1.0  # the normal law's value
        if not th > 0:
            th = 1.0
        for _ in range(200):
            if not _log_mgf(v, p, r, k[r], th)[0] < 0:
                break
            th *= 2
        for _ in range(100):  # from the right of the root, f > 0 and f' > 0: each step stays right of it
            val, slope = _log_mgf(v, p, r, k[r], th)
            step = val / slope if val > 0 and slope > 0 else 0.0
            th -= step
            if not step > th * 1e-15:
                break
        out[r] = th


def lundberg_theta(values: np.ndarray, probs: np.ndarray, drift: np.ndarray) -> np.ndarray:
    """Per row, the ``theta > 0`` with ``sum_j probs[j] * exp(theta * (values[j] - drift)) = 1``.

    ``values``/``probs`` (rows x support) describe the in-control distribution of one score,
    centred (``sum_j probs[j] * values[j] = 0``); ``drift`` (rows) is the CUSUM's reference
    value ``k > 0``. ``theta`` is the adjustment coefficient of the random walk of increments
    ``score - k``: by Lundberg's inequality the walk started at 0 ever exceeds ``h`` with
    probability at most ``exp(-theta * h)``, whatever the score's distribution (discrete,
    tied, skewed). For N(0, sigma^2) it is ``2 k / sigma^2``. Rows whose score can never
    exceed ``k`` get ``inf`` (the CUSUM can never fire). Compiled, per row: a bracket doubling
    from the normal law's value, then Newton's method from its right end (the log moment
    generating function is convex, so the iterates fall monotonically onto the root and never
    cross it).

    >>> v = np.array([[-1.0, 1.0]]); p = np.array([[0.5, 0.5]])
    >>> round(float(lundberg_theta(v, p, np.array([0.5]))[0]), 4)
    1.2188
    """
    v = np.asarray(values, dtype=np.float64)
    p = np.asarray(probs, dtype=np.float64)
    k = np.asarray(drift, dtype=np.float64).reshape(-1)
    out = np.empty(v.shape[0])
    _lundberg_rows(v, p, k, out)
    return out


@numba.njit((_R1, _R1, _R1, _R1, _F1), cache=True, nogil=True, error_model="numpy")
def _threshold_flat(theta, drift, over, rate, out):  # pragma: no cover - compiled
    """:func:`cusum_threshold` element by element into ``out``."""
    for i in range(theta.size):
        th = theta[i]
        if not math.isfinite(th):
            out[i] = np.inf
            continue
        a = th * drift[i] / rate[i]
        # solve exp(y) - y - 1 = a for y > 0 (Newton from the log, monotone)
        la = math.log(a + 1.0)
        y = max(la + math.log1p(la / max(a, 1e-300)), 1e-6)
        for _ in range(60):
            e = math.expm1(y)
            y_next = max(y - (e - y - a) / e, 1e-9)
            if y_next == y:  # a fixed point: further steps change nothing
                break
            y = y_next
        h = y / th - over[i]
        out[i] = h if h > 0 or h != h else 0.0


def cusum_threshold(theta: np.ndarray, drift: np.ndarray, sd: np.ndarray, rate: float | np.ndarray,
                    max_step: np.ndarray | None = None) -> np.ndarray:
    """One-sided CUSUM threshold ``h`` whose in-control alarm rate per update is ``rate``.

    Siegmund's approximation of the in-control average run length, generalized with the
    adjustment coefficient ``theta`` of :func:`lundberg_theta`:
    ``ARL(h) = (exp(theta b) - theta b - 1) / (theta k)``, ``b = h + OVERSHOOT * sd``
    (``sd``: standard deviation of one score). For normal scores this is the classical
    ``(exp(2 k b) - 2 k b - 1) / (2 k^2)`` (unit variance). Solved for ``ARL = 1 / rate``.
    The overshoot can never exceed the walk's largest step ``max_step`` (``score - k`` at the
    score's largest value): a score bounded close above its mean on that side (a squared
    normal score seen from below, a rare indicator's down side) gets that bound instead.

    >>> round(float(cusum_threshold(np.array([1.0]), np.array([0.5]), np.array([1.0]), 1e-6)[0]), 2)
    11.96
    """
    sd = np.asarray(sd, dtype=np.float64)
    over = OVERSHOOT * sd if max_step is None else np.minimum(OVERSHOOT * sd, np.maximum(max_step, 0.0))
    args = [np.asarray(a, dtype=np.float64) for a in (theta, drift, over, rate)]
    shape = np.broadcast_shapes(*(a.shape for a in args))
    out = np.empty(shape)
    _threshold_flat(*(a.ravel() if a.shape == shape else np.broadcast_to(a, shape).ravel() for a in args),
                    out.reshape(-1))
    return out


def score_cusum(values: np.ndarray, probs: np.ndarray, drifts: list[float], rate: float | np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Drifts and thresholds of two-sided CUSUMs on scores with known discrete in-control laws.

    ``values``/``probs`` (columns x support, zero-padded probabilities allowed) give each
    column's score distribution (for a numeric feature: the mid-ranks of the reference's grid
    bins and their masses); ``drifts`` are reference values in standard deviations of the
    score; ``rate`` is the alarm rate per update of each one-sided CUSUM (one value, or one per
    drift). Returns
    ``(k, h_up, h_down, sd)``: ``k`` and the thresholds per (column, drift) in score units,
    ``sd`` per column. Each side's threshold uses that side's own adjustment coefficient, so
    a skewed or tied score gets the threshold its own tail needs.
    """
    return _memoized("score", values, probs, drifts, rate)


def _score_cusum(v: np.ndarray, p: np.ndarray, d: np.ndarray, rate: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`score_cusum` on float64 inputs (uncached)."""
    p = p / np.maximum(p.sum(axis=1, keepdims=True), 1e-300)
    c = v - (p * v).sum(axis=1, keepdims=True)
    sd = np.sqrt((p * c * c).sum(axis=1))
    C, K = v.shape[0], d.size
    k = sd[:, None] * d[None, :]
    rows = np.repeat(np.arange(C), K)
    th_up = lundberg_theta(c[rows], p[rows], k.ravel()).reshape(C, K)
    th_dn = lundberg_theta(-c[rows], p[rows], k.ravel()).reshape(C, K)
    sdk = np.repeat(sd, K).reshape(C, K)
    rate = np.broadcast_to(np.asarray(rate, dtype=np.float64), (K,))[None, :]
    live = p > 0
    top = np.where(live, c, -np.inf).max(axis=1)[:, None] - k
    bottom = np.where(live, -c, -np.inf).max(axis=1)[:, None] - k
    # a side whose largest step is a sliver of a standard deviation (a squared score seen from
    # below with a large drift) is ruled by the running mean's own error, not by the law: off
    h_up = np.where(top >= MIN_STEP_SD * sdk, cusum_threshold(th_up, k, sdk, rate, top), np.inf)
    h_dn = np.where(bottom >= MIN_STEP_SD * sdk, cusum_threshold(th_dn, k, sdk, rate, bottom), np.inf)
    return k, h_up, h_dn, sd


def bernoulli_cusum(hits: np.ndarray, n: np.ndarray, ratios: list[float], rate: float
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Drifts and thresholds of two-sided CUSUMs on 0/1 indicators with reference ``hits`` of ``n``.

    Drift ``j`` targets a change of the odds by ``ratios[j]`` up and ``1 / ratios[j]`` down:
    the CUSUM on ``x - mean - k`` is then Page's likelihood-ratio CUSUM of that change (its
    increments are linear in ``x``). The rate is known only as well as the reference tells
    (Jeffreys posterior); the adjustment coefficient is the smallest over the posterior mean
    and two posterior standard deviations either side, so an underestimated rate of a rare
    class does not overspend the budget. Returns ``(k_up, k_down, h_up, h_down, sd)``.

    >>> k_up, k_dn, h_up, h_dn, sd = bernoulli_cusum(np.array([20]), np.array([2000]), [2.0], 1e-8)
    >>> bool(0 < k_up[0, 0] < 0.01 and h_up[0, 0] > 10 * k_up[0, 0])
    True
    """
    return _memoized("bernoulli", hits, n, ratios, rate)


def _bernoulli_cusum(hits: np.ndarray, n: np.ndarray, r: np.ndarray, rate: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`bernoulli_cusum` on float64 inputs (uncached)."""
    a = hits + 0.5
    b = n - hits + 0.5
    p = a / (a + b)
    sp = np.sqrt(p * (1 - p) / (a + b + 1))
    C, K = p.size, r.size

    def cut(p0: np.ndarray, rho: np.ndarray) -> np.ndarray:
        p1 = rho * p0 / (1 - p0 + rho * p0)
        la, lb = np.log(p1 / p0), np.log((1 - p1) / (1 - p0))
        return -lb / (la - lb)

    P = p[:, None]
    k_up = cut(P, r[None, :]) - P
    k_dn = P - cut(P, 1.0 / r[None, :])
    th_up = np.full((C, K), np.inf)
    th_dn = np.full((C, K), np.inf)
    for q in (np.clip(p - 2 * sp, 1e-9, 1 - 1e-9), p, np.clip(p + 2 * sp, 1e-9, 1 - 1e-9)):
        vals = np.repeat(np.stack((-q, 1 - q), axis=1), K, axis=0)
        pr = np.repeat(np.stack((1 - q, q), axis=1), K, axis=0)
        th_up = np.minimum(th_up, lundberg_theta(vals, pr, k_up.ravel()).reshape(C, K))
        th_dn = np.minimum(th_dn, lundberg_theta(-vals, pr, k_dn.ravel()).reshape(C, K))
    sd = np.sqrt(p * (1 - p))
    sdk = np.repeat(sd, K).reshape(C, K)
    return (k_up, k_dn, cusum_threshold(th_up, k_up, sdk, rate, 1 - P - k_up),
            cusum_threshold(th_dn, k_dn, sdk, rate, P - k_dn), sd)


def window_alpha(per_million: float, share: float, window: int) -> float:
    """False-alarm probability of one test run once per ``window`` events."""
    return min(0.25, per_million * share * window / 1e6)


def page_hinkley_arl(h: float, delta: float) -> float:
    """Siegmund's two-sided in-control ARL of a CUSUM with tolerance ``delta`` on N(0, 1)."""
    b = h + 1.166
    x = 2 * delta * b
    one_sided = (math.exp(x) - x - 1) / (2 * delta * delta)
    return one_sided / 2


@lru_cache(maxsize=256)
def page_hinkley_threshold(delta: float, alarms_per_million_updates: float) -> float:
    """Threshold ``h`` giving the target alarm rate on N(0, 1) input (bisection on the ARL).

    >>> round(page_hinkley_threshold(0.5, 8.0), 2)
    10.57
    """
    target_arl = 1e6 / alarms_per_million_updates
    lo, hi = 0.0, 1.0
    while page_hinkley_arl(hi, delta) < target_arl:
        hi *= 2
    for _ in range(80):
        mid = (lo + hi) / 2
        if page_hinkley_arl(mid, delta) < target_arl:
            lo = mid
        else:
            hi = mid
    return hi


def adwin_delta(alarms_per_million_updates: float) -> float:
    """ADWIN ``delta`` whose measured false-alarm rate is the target (log-log interpolation).

    Below the table, the rate is extrapolated proportionally to delta (conservative: the
    measured slope is steeper than 1).

    >>> round(adwin_delta(7.7), 4)
    0.01
    """
    xs = np.log([d for d, _ in ADWIN_RATE_TABLE])
    ys = np.log([r for _, r in ADWIN_RATE_TABLE])
    y = math.log(alarms_per_million_updates)
    if y <= ys[0]:
        return float(ADWIN_RATE_TABLE[0][0] * alarms_per_million_updates / ADWIN_RATE_TABLE[0][1])
    if y >= ys[-1]:
        return float(ADWIN_RATE_TABLE[-1][0])
    return float(math.exp(np.interp(y, ys, xs)))


@lru_cache(maxsize=4096)
def chi2_quantile(df: int, alpha: float) -> float:
    """Upper ``alpha`` quantile of chi-square(``df``)."""
    return float(_st.chi2.isf(alpha, df)) if df >= 1 else math.inf


def g_test(cur: np.ndarray, ref: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Two-sample G tests of count rows ``cur`` against ``ref`` (same shape, one row per test).

    Returns ``(js, threshold)`` per row: the sample-size weighted Jensen-Shannon divergence
    (natural log) ``G / (2 N)`` and its critical value, chi2.isf(alpha, B - 1) times
    Williams' correction over ``2 N`` (``B``: bins with any count). Rows where either side
    is empty get threshold inf.

    >>> js, thr = g_test(np.array([[50, 50]]), np.array([[100, 100]]), 0.01)
    >>> round(float(js[0]), 12), bool(thr[0] > 0.005)
    (0.0, True)
    """
    if np.ndim(cur) == 1:  # one histogram (categorical): plain floats are faster than numpy here
        js1, thr1 = _g_row(np.asarray(cur).tolist(), np.asarray(ref).tolist(), alpha)
        return np.array([js1]), np.array([thr1])
    c = np.asarray(cur, dtype=np.float64).reshape(-1, np.shape(cur)[-1])
    r = np.asarray(ref, dtype=np.float64).reshape(c.shape)
    t = c + r
    n, m = c.sum(axis=1), r.sum(axis=1)
    N = n + m
    ok = (n > 0) & (m > 0)
    if not ok.all():
        n, m, N = np.where(ok, n, 1.0), np.where(ok, m, 1.0), np.where(ok, N, 1.0)
    # G / 2 = sum c ln c + sum r ln r - sum t ln t + N ln N - n ln n - m ln m  (0 ln 0 = 0)
    xl = _sp.xlogy
    half_g = (xl(c, c).sum(axis=1) + xl(r, r).sum(axis=1) - xl(t, t).sum(axis=1)
              + xl(N, N) - xl(n, n) - xl(m, m))
    js = np.maximum(half_g / N, 0.0)
    inv_t = np.divide(1.0, t, out=np.zeros_like(t), where=t > 0).sum(axis=1)
    df = np.count_nonzero(t, axis=1) - 1
    williams = 1.0 + (N / n + N / m - 1.0) * (N * inv_t - 1.0) / (6.0 * N * np.maximum(df, 1))
    q = np.array([chi2_quantile(d, alpha) for d in df.tolist()])
    thr = q * williams / (2.0 * N)
    if not ok.all():
        thr = np.where(ok, thr, math.inf)
    return js, thr


def _g_row(c: list, r: list, alpha: float) -> tuple[float, float]:
    """:func:`g_test` of one pair of count lists."""
    n, m = float(sum(c)), float(sum(r))
    if n <= 0 or m <= 0:
        return 0.0, math.inf
    log = math.log
    N = n + m
    half_g = N * log(N) - n * log(n) - m * log(m)
    inv_t = 0.0
    bins = 0
    for x, y in zip(c, r):
        t = x + y
        if t > 0:
            bins += 1
            inv_t += 1.0 / t
            half_g -= t * log(t)
            if x > 0:
                half_g += x * log(x)
            if y > 0:
                half_g += y * log(y)
    df = bins - 1
    if df < 1:
        return max(half_g / N, 0.0), math.inf
    williams = 1.0 + (N / n + N / m - 1.0) * (N * inv_t - 1.0) / (6.0 * N * df)
    return max(half_g / N, 0.0), chi2_quantile(df, alpha) * williams / (2.0 * N)


def ks_threshold(n: int, n_ref: int, alpha: float) -> float:
    """Two-sample Kolmogorov-Smirnov asymptotic critical value."""
    return math.sqrt(-math.log(alpha / 2) / 2 * (n + n_ref) / (n * n_ref))


def z_threshold(alpha: float, two_sided: bool = True) -> float:
    """Standard normal critical value."""
    return normal_isf(alpha / 2 if two_sided else alpha)


@lru_cache(maxsize=4096)
def normal_isf(p: float) -> float:
    """Upper ``p`` quantile of the standard normal; cached: scipy's generic path costs about 0.1 ms
    a call, and every new monitor asks for the same few."""
    return float(_st.norm.isf(p))


@lru_cache(maxsize=4096)
def rate_bounds(ref_hits: int, ref_n: int, n: int, alpha: float, two_sided: bool = True) -> tuple[int, int]:
    """Counts ``(lo, hi)``: a window of ``n`` trials is anomalous if its hits ``< lo`` or ``>= hi``.

    Uses the beta-binomial posterior predictive of the reference (Jeffreys prior), so a
    small reference widens the band and a zero reference rate still gives a finite ``hi``.

    >>> rate_bounds(2, 2000, 1000, 1e-4)[1] > 1
    True
    """
    a, b = ref_hits + 0.5, ref_n - ref_hits + 0.5
    tail = alpha / 2 if two_sided else alpha
    k = np.arange(n + 1, dtype=np.float64)
    logp = (_sp.gammaln(n + 1) - _sp.gammaln(k + 1) - _sp.gammaln(n - k + 1)
            + _sp.betaln(k + a, n - k + b) - _sp.betaln(a, b))
    p = np.exp(logp - logp.max())
    p /= p.sum()
    upper = np.cumsum(p[::-1])[::-1]  # P(X >= k), summed from the small end of the tail
    above = np.flatnonzero(upper <= tail)
    hi = int(above[0]) if above.size else n + 1
    lo = int(np.searchsorted(np.cumsum(p), tail, side="right")) if two_sided else 0
    return lo, hi


@lru_cache(maxsize=4096)
@lru_cache(maxsize=4096)
def burst_count(ref_hits: int, ref_n: int, span: int, alarms_per_event: float) -> int:
    """Smallest ``k`` such that "``k`` hits within ``span`` trials", checked at every hit, fires
    at most ``alarms_per_event`` times per trial on average over the reference posterior.

    At a hit rate ``p`` the check at a trial fires if the trial is a hit and at least ``k - 1``
    of the ``span - 1`` trials before it are hits: ``p * P(Bin(span - 1, p) >= k - 1)`` (an
    upper bound of the alarm rate, since the check restarts after an alarm). Averaged over
    the Jeffreys posterior Beta(a, b) of the reference, ``E[p * P(Bin >= k - 1)]`` is
    ``a / (a + b) * P(BetaBinom(span - 1, a + 1, b) >= k - 1)`` (size-biased posterior).
    Returns ``span + 1`` (never fires) if no ``k <= span`` is within budget.

    >>> burst_count(0, 16000, 250, 5e-9), burst_count(0, 2000, 250, 5e-9)
    (4, 7)
    """
    rate = burst_rates(ref_hits, ref_n, span)  # rate[k - 1]: alarm rate per trial of k hits within span
    ok = np.flatnonzero(rate <= alarms_per_event)
    return int(ok[0]) + 1 if ok.size else span + 1


def burst_rates(ref_hits: int, ref_n: int, span: int) -> np.ndarray:
    """Per ``k`` (index ``k - 1``), the posterior-averaged alarm rate per trial of "``k`` hits within
    ``span`` trials" (see :func:`burst_count`)."""
    a, b = ref_hits + 0.5, ref_n - ref_hits + 0.5
    m = span - 1
    j = np.arange(m + 1, dtype=np.float64)
    logp = (_sp.gammaln(m + 1) - _sp.gammaln(j + 1) - _sp.gammaln(m - j + 1)
            + _sp.betaln(j + a + 1, m - j + b) - _sp.betaln(a + 1, b))
    p = np.exp(logp - logp.max())
    p /= p.sum()
    upper = np.cumsum(p[::-1])[::-1]  # P(X >= j)
    return a / (a + b) * upper


@lru_cache(maxsize=4096)
def burst_span(ref_hits: int, ref_n: int, k: int, alarms_per_event: float, max_span: int) -> int:
    """Largest ``span <= max_span`` within which ``k`` hits fire at most ``alarms_per_event`` times
    per trial (see :func:`burst_count`); 0 if even ``span = k`` is over budget.

    >>> burst_span(0, 16000, 3, 2.5e-9, 250)
    106
    """
    def ok(span: int) -> bool:
        return bool(burst_rates(ref_hits, ref_n, span)[k - 1] <= alarms_per_event)

    if k < 1 or max_span < k or not ok(k):
        return 0
    lo, hi = k, max_span
    while lo < hi:  # the rate grows with the span
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if ok(mid) else (lo, mid - 1)
    return lo


def measure_adwin_rate(delta: float, n: int = 1_000_000, seed: int = 0, clock: int = ADWIN_CLOCK) -> float:
    """Alarms per million updates of river's ADWIN on ``n`` N(0, 1) draws (how the table was made)."""
    from river.drift import ADWIN

    update = ADWIN(delta=delta, clock=clock)._helper.update
    hits = 0
    for v in np.random.default_rng(seed).standard_normal(n).tolist():
        if update(v):
            hits += 1
    return hits * 1e6 / n


#: The computations behind :func:`_thresholds`, by kind.
_UNCACHED: dict[str, Callable[..., tuple[np.ndarray, ...]]] = {"score": _score_cusum, "bernoulli": _bernoulli_cusum}
