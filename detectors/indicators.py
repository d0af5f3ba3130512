"""Per-event Bernoulli CUSUMs of 0/1 indicator columns against reference rates.

One :class:`IndicatorCusums` holds a :class:`~detectors.cusum.CusumBank` whose columns are
indicators (a category, "never seen", "low confidence", "trigger holds"), each judged
against its reference rate with Page's likelihood-ratio CUSUM for the odds ratios
``CalibrationSpec.rate_ratios`` (:func:`~detectors.calibration.bernoulli_cusum`): the same
machinery as predicted classes (:class:`~detectors.signals.PredictionDrift`), shared by the
categorical, confidence and trigger signals.

>>> ic = IndicatorCusums(1, [3.0], 1e-6)
>>> ic.derive(np.array([100]), np.array([2000]))
>>> x = np.r_[np.arange(2000) % 20 == 0, np.ones(200)].astype(float)[:, None]
>>> [(h[0] >= 2000, h[2]) for h in ic.update(x)][:1]
[(True, 'up')]
"""
from __future__ import annotations

from typing import Any

import numpy as np

from detectors import calibration as cal
from detectors.cusum import PRIOR_WEIGHT, CusumBank, CusumHit

MIN_REFERENCE = 30  # reference trials before an indicator's CUSUM is armed


class IndicatorCusums:
    """``cols`` indicator CUSUMs, each one-sided or two-sided, with thresholds from reference counts."""

    __slots__ = ("ratios", "rate", "up_only", "bank")

    def __init__(self, cols: int, ratios: list[float], rate: float, up_only: np.ndarray | None = None) -> None:
        self.ratios = list(ratios)
        self.rate = float(rate)
        self.up_only = np.zeros(cols, dtype=bool) if up_only is None else np.asarray(up_only, dtype=bool)
        self.bank = CusumBank(cols, len(self.ratios))

    def derive(self, hits: np.ndarray, n: np.ndarray) -> None:
        """Drifts, thresholds and the running means' prior from ``hits`` of ``n`` reference trials per
        column (Jeffreys posterior, see :func:`~detectors.calibration.bernoulli_cusum`); a column with
        fewer than :data:`MIN_REFERENCE` trials stays off."""
        hits = np.asarray(hits, dtype=np.float64)
        n = np.asarray(n, dtype=np.float64)
        k_up, k_dn, h_up, h_dn, sd = cal.bernoulli_cusum(hits, n, self.ratios, self.rate)
        h_dn = np.where(self.up_only[:, None], np.inf, h_dn)
        self.bank.set_params(k_up, k_dn, h_up, h_dn, sd, n >= MIN_REFERENCE)
        self.bank.set_prior(np.minimum(n, PRIOR_WEIGHT), (hits + 0.5) / (n + 1.0))

    def update(self, X: np.ndarray) -> list[CusumHit]:
        """Indicators of a segment (rows = trials in order, one column per indicator)."""
        return self.bank.update(X)

    def odds_ratio(self, side: str, j: int) -> float:
        """The odds ratio drift ``j`` targets on ``side``."""
        return self.ratios[j] if side == "up" else 1.0 / self.ratios[j]

    def scale(self, col: int) -> float:
        """Standard deviation of column ``col``'s indicator under the reference (statistics are reported in it)."""
        return float(self.bank.scale[col])

    def to_state(self) -> list[Any]:
        return self.bank.to_state()

    def load_state(self, st: Any) -> None:
        self.bank.load_state(st)
