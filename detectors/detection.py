"""A detection: one detector crossing its calibrated threshold, with the evidence for it.

>>> d = Detection("numeric_drift", "psi", "m", "v1", "stable", "x", 0.4, 0.1,
...               {"mean": 0.0}, {"mean": 1.2}, "e9", 9, 12.0, "ticket")
>>> d.to_dict()["statistic"]
0.4
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SIGNALS: tuple[str, ...] = (
    "numeric_drift",       # per-event CUSUM on reference mid-ranks; G test (JS) / KS per window
    "categorical_drift",   # per-event CUSUM per category / unseen; JS (G test) of top-k counts, unseen rate
    "prediction_drift",    # per-class prediction rate, class dominance
    "confidence_drift",    # per-event CUSUM on normal scores / low confidence; mean, low-confidence rate
    "label_drift",         # per-class label rate, label entropy
    "performance",         # error rate of predictions joined with labels, overall and per class
    "label_disagreement",  # per-source disagreement with the model and with other sources
    "trigger",             # per-event CUSUM and window test of the triggered rate, P(class | trigger)
    "input_integrity",     # NaN / Inf / null / wrong type / out of range per feature
    "version_integrity",   # traffic served by an unlisted version, or by an artifact not the registered one
    "canary_divergence",   # canary vs stable prediction / confidence / error rate
)

#: Detector names per signal (as in ``Detection.detector``). ``cusum`` is the per-event (per
#: joined label) sequential detector of :mod:`detectors.cusum`. ``numeric_drift/adwin`` and
#: ``numeric_drift/page_hinkley`` (block-mean detectors before state format 3), ``numeric_drift/psi`` and
#: ``categorical_drift/chi2`` are no longer emitted (the histogram decision is the G test,
#: reported as ``js`` with PSI / the chi-square distance in its evidence, see
#: :mod:`detectors.calibration`); they stay valid names so existing configurations load.
DETECTORS: dict[str, tuple[str, ...]] = {
    "numeric_drift": ("cusum", "js", "ks", "adwin", "page_hinkley", "psi"),
    "categorical_drift": ("cusum", "js", "chi2", "unseen_rate"),
    "prediction_drift": ("cusum", "class_rate", "dominance"),
    "confidence_drift": ("cusum", "mean", "low_rate"),
    "label_drift": ("cusum", "class_rate", "entropy"),
    "performance": ("cusum", "error_rate", "class_error_rate"),
    "label_disagreement": ("cusum", "model", "sources"),
    "trigger": ("cusum", "triggered_rate", "p_class_given_trigger"),
    "input_integrity": ("invalid_rate", "invalid_burst"),
    "version_integrity": ("unlisted_version", "unknown_deployment", "digest_mismatch"),
    "canary_divergence": ("prediction", "confidence", "error_rate", "cusum"),
}


@dataclass(slots=True)
class Detection:
    """Evidence of one threshold crossing; ``event_id``/``position``/``ts`` name the tipping event."""

    signal: str
    detector: str
    model: str
    version: str
    deployment: str
    key: str
    statistic: float
    threshold: float
    reference: dict[str, Any]
    current: dict[str, Any]
    event_id: str
    position: int
    ts: float
    severity: str  # "page" | "ticket"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dictionary."""
        return {
            "signal": self.signal, "detector": self.detector, "model": self.model,
            "version": self.version, "deployment": self.deployment, "key": self.key,
            "statistic": _num(self.statistic), "threshold": _num(self.threshold),
            "reference": self.reference, "current": self.current, "event_id": self.event_id,
            "position": self.position, "ts": self.ts, "severity": self.severity,
        }


def _num(x: float) -> float | str:
    """JSON number with 10 significant digits (sums computed over different micro-batch cuts
    may differ in the last bits; rounding keeps messages identical); non-finite as strings."""
    x = float(x)
    if x != x or x in (float("inf"), float("-inf")):
        return str(x)
    return float(f"{x:.10g}")
