"""One harness per signal with a ``cusum`` detector: builds it from a family's reference, draws
streams (optionally with a change), feeds batches and exposes the state (see :mod:`detectors.checks`)."""
from __future__ import annotations

import copy
from typing import Any

import numpy as np

from detectors import calibration as cal
from detectors.canary import CanaryJudge
from detectors.columns import categorical_column
from detectors.confidence import ConfidenceDrift
from detectors.labels import LabelStream, SourceDisagreement
from detectors.numeric import NumericBank
from detectors.profile import NumericProfile, ProfileBuilder, ReferenceProfile, rank_grid
from detectors.signals import CategoricalDrift, PredictionDrift, TriggerWatch
from detectors.spec import CalibrationSpec, CanaryPolicy, FeatureSpec, ModelSpec, TriggerSpec

REF = 2000


class Harness:
    """Base: subclasses set ``signal``, ``families``, ``share`` and implement the hooks."""

    signal = ""
    families: tuple[str, ...] = ()
    no_shift: tuple[str, ...] = ()
    warmup = 0
    share = 1.0
    delay_n = 8000  # updates of the detection-delay check (the change comes half-way)

    def keys(self, family: str) -> int:
        return 1

    def build(self, family: str, per_million: float, rng: np.random.Generator) -> None:
        raise NotImplementedError

    def draw(self, family: str, n: int, rng: np.random.Generator, shift_at: int | None) -> Any:
        raise NotImplementedError

    def slice(self, data: Any, lo: int, hi: int) -> Any:
        return tuple(d[lo:hi] for d in data)

    def feed(self, data: Any) -> list[int]:
        raise NotImplementedError

    def state(self) -> Any:
        raise NotImplementedError

    def load(self, st: Any) -> None:
        raise NotImplementedError

    def clone(self) -> "Harness":
        """A fresh detector with the same parameters (to restore a state into)."""
        return copy.deepcopy(self)

    @staticmethod
    def _hits(hits: list, signal: str) -> list[int]:
        return [int(h[7]) for h in hits if h[0] == signal and h[1] == "cusum"]


def _family(name: str, n: int, rng: np.random.Generator) -> np.ndarray:
    if name == "normal":
        return rng.standard_normal(n)
    if name == "lognormal":
        return rng.lognormal(0.0, 1.5, n)
    if name == "cauchy":
        return rng.standard_cauchy(n)
    if name == "poisson_ties":
        return rng.poisson(0.7, n).astype(np.float64)
    if name == "bimodal":
        return np.where(rng.random(n) < 0.3, rng.normal(-3, 0.5, n), rng.normal(2, 1.0, n))
    if name == "outliers":
        x = rng.standard_normal(n)
        return np.where(rng.random(n) < 0.001, -2460.0, x)
    if name == "zipf_integers":
        return rng.zipf(1.8, n).astype(np.float64)
    if name == "constant":
        return np.full(n, 3.0)
    raise ValueError(name)


class NumericHarness(Harness):
    signal = "numeric_drift"
    families = ("normal", "lognormal", "cauchy", "poisson_ties", "bimodal", "outliers", "zipf_integers", "constant")
    no_shift = ("constant",)
    share = cal.SHARES["numeric_drift"]["cusum"]

    def build(self, family, per_million, rng):
        x = _family(family, REF, rng)
        e, c = rank_grid(x)
        prof = NumericProfile([0.0], [int((x < 0).sum()), int((x >= 0).sum())], float(x.mean()), float(x.std()),
                              REF, 0, e.tolist(), c.tolist())
        self.bank = NumericBank([FeatureSpec(name="x", type="numeric")], [prof],
                                CalibrationSpec(false_alarms_per_million=per_million))

    def draw(self, family, n, rng, shift_at):
        x = _family(family, n, rng)
        if shift_at is not None:
            q = np.quantile(_family(family, 4000, np.random.default_rng(5)), [0.25, 0.75])
            step = 0.5 * max((q[1] - q[0]) / 1.35, 0.5)  # half a robust sd (at least 0.25: integer families)
            x = np.where(np.arange(n) >= shift_at, x + step, x)
        return (x[:, None],)

    def feed(self, data):
        (X,) = data
        if X.shape[0] == 0:
            return []
        self.bank.prepare(X, np.ones(X.shape, dtype=bool))
        return self._hits(self.bank.sequential(np.arange(X.shape[0])), self.signal)

    def state(self):
        return self.bank.cusum.to_state()

    def load(self, st):
        self.bank.cusum.load_state(st)


RATES = {"balanced": np.array([0.5, 0.3, 0.2]), "rare": np.array([0.97, 0.025, 0.005])}


class PredictionHarness(Harness):
    signal = "prediction_drift"
    families = ("balanced", "rare")
    share = cal.SHARES["prediction_drift"]["cusum"]

    def keys(self, family):
        return 4  # three classes and <other>

    def build(self, family, per_million, rng):
        codes = rng.choice(3, REF, p=RATES[family])
        prof = ReferenceProfile(n=REF, predictions=np.bincount(codes, minlength=4).tolist())
        self.det = PredictionDrift(["a", "b", "c"], prof, CalibrationSpec(false_alarms_per_million=per_million))

    def draw(self, family, n, rng, shift_at):
        p = RATES[family]
        q = p * np.array([1.0, 3.0, 1.0])
        q = q / q.sum()
        idx = np.arange(n)
        u = rng.random(n)
        base = np.searchsorted(np.cumsum(p), u)
        if shift_at is None:
            return (np.minimum(base, 2),)
        return (np.minimum(np.where(idx >= shift_at, np.searchsorted(np.cumsum(q), u), base), 2),)

    def feed(self, data):
        (codes,) = data
        return self._hits(self.det.sequential(codes, 0), self.signal)

    def state(self):
        return self.det.cusum.to_state()

    def load(self, st):
        self.det.cusum.load_state(st)


LABELS = {"balanced": (np.array([0.6, 0.3, 0.1]), 0.05), "rare": (np.array([0.95, 0.04, 0.01]), 0.01)}


class LabelHarness(Harness):
    """Performance (error indicator) or label drift (label classes) of one label stream."""

    families = ("balanced", "rare")
    warmup = 500

    def __init__(self, signal: str) -> None:
        self.signal = signal
        self.share = cal.SHARES[signal]["cusum"]

    def keys(self, family):
        return 1 if self.signal == "performance" else 4

    def build(self, family, per_million, rng):
        self.ls = LabelStream(["a", "b", "c"], self.warmup, CalibrationSpec(false_alarms_per_million=per_million))

    def draw(self, family, n, rng, shift_at):
        p, e = LABELS[family]
        after = np.zeros(n, dtype=bool) if shift_at is None else np.arange(n) >= shift_at
        if self.signal == "label_drift":
            q = p * np.array([1.0, 1.0, 3.0])
            q /= q.sum()
            u = rng.random(n)
            lab = np.where(after, np.searchsorted(np.cumsum(q), u), np.searchsorted(np.cumsum(p), u))
            err = rng.random(n) < e
        else:
            lab = rng.choice(3, n, p=p)
            err = rng.random(n) < np.where(after, 3 * e, e)
        return (np.minimum(lab, 2).astype(np.int64), err.astype(np.int8))

    def feed(self, data):
        lab, err = data
        return self._hits(self.ls.process(lab, err), self.signal)

    def state(self):
        return self.ls.to_state()

    def load(self, st):
        self.ls.load_state(st)


SOURCES = {"three_sources": (np.array([0.5, 0.3, 0.2]), 0.05), "five_sources": (np.full(5, 0.2), 0.02)}


class SourceHarness(Harness):
    signal = "label_disagreement"
    families = ("three_sources", "five_sources")
    share = cal.SHARES["label_disagreement"]["cusum"]

    def keys(self, family):
        return SOURCES[family][0].size

    def build(self, family, per_million, rng):
        self.sd = SourceDisagreement(CalibrationSpec(false_alarms_per_million=per_million))

    def draw(self, family, n, rng, shift_at):
        p, e = SOURCES[family]
        src = rng.choice(p.size, n, p=p)
        after = np.zeros(n, dtype=bool) if shift_at is None else np.arange(n) >= shift_at
        err = rng.random(n) < np.where(after & (src == 1), 4 * e, e)
        return (np.array([f"s{i}" for i in src], dtype=object), err.astype(np.int8))

    def feed(self, data):
        names, err = data
        return self._hits(self.sd.sequential(list(names), err, np.arange(err.size)), self.signal)

    def state(self):
        return self.sd.to_state()

    def load(self, st):
        self.sd.load_state(st)


CANARY = {"share20": (0.2, 0.05), "share50": (0.5, 0.01)}


class CanaryHarness(Harness):
    signal = "canary_divergence"
    families = ("share20", "share50")
    share = cal.SHARES["canary_divergence"]["cusum"]
    delay_n = 20000

    def build(self, family, per_million, rng):
        self.judge = CanaryJudge(4, CanaryPolicy(), per_million)
        self.judge.start("v2")

    def draw(self, family, n, rng, shift_at):
        share, e = CANARY[family]
        is_c = rng.random(n) < share
        after = np.zeros(n, dtype=bool) if shift_at is None else np.arange(n) >= shift_at
        err = rng.random(n) < np.where(after & is_c, 4 * e, e)
        return (is_c, ~is_c, err.astype(np.int8))

    def feed(self, data):
        ic, is_, err = data
        return self._hits(self.judge.process_labels(ic, is_, err), self.signal)

    def state(self):
        return self.judge.to_state()

    def load(self, st):
        self.judge.load_state(st)


def _profile(spec: ModelSpec, cats: list[str] | None, conf: np.ndarray | None) -> ReferenceProfile:
    """A reference profile built the way a stream builds its own (one categorical feature ``c``)."""
    n = REF
    b = ProfileBuilder(spec)
    cols = {"c": categorical_column(cats)} if cats is not None else {}
    b.add(n, cols, np.zeros(n, dtype=np.int64), conf if conf is not None else np.full(n, 0.9), {})
    return b.build(spec.low_confidence)


CATS = {"zipf60": 1.0 / np.arange(1, 61) ** 1.1, "few_and_unseen": np.r_[[0.6, 0.3], np.full(100, 0.001)]}


class CategoricalHarness(Harness):
    """Every category indicator of one categorical feature (top-k, ``<other>``, never seen)."""

    signal = "categorical_drift"
    families = ("zipf60", "few_and_unseen")
    share = cal.SHARES["categorical_drift"]["cusum"]

    def _draw(self, family: str, n: int, rng: np.random.Generator, boost: np.ndarray | None = None) -> list[str]:
        p = CATS[family] / CATS[family].sum()
        if boost is not None:
            p = p * boost
            p = p / p.sum()
        return [f"v{j}" for j in rng.choice(p.size, n, p=p)]

    def build(self, family, per_million, rng):
        spec = ModelSpec(name="h", classes=["a"], versions=["v1"], features=[
            FeatureSpec(name="c", type="categorical", top_k=16)])
        prof = _profile(spec, self._draw(family, REF, rng), None).categorical["c"]
        self.det = CategoricalDrift(spec.features[0], prof,
                                    CalibrationSpec(false_alarms_per_million=per_million))

    def draw(self, family, n, rng, shift_at):
        boost = np.ones(CATS[family].size)
        boost[1] = 3.0  # the second category triples its odds
        base, after = self._draw(family, n, rng), self._draw(family, n, rng, boost)
        if shift_at is None:
            return (np.array(base, dtype=object),)
        return (np.array(base[:shift_at] + after[shift_at:], dtype=object),)

    def feed(self, data):
        (vals,) = data
        return self._hits(self.det.accumulate(categorical_column(list(vals)), 0, len(vals)), self.signal)

    def state(self):
        return self.det.to_state()

    def load(self, st):
        self.det.load_state(st)


def _confidences(family: str, n: int, rng: np.random.Generator) -> np.ndarray:
    if family == "beta82":
        return rng.beta(8.0, 2.0, n)
    if family == "rounded_ties":  # a model that reports two decimals, mostly 0.99 / 1.0
        return np.round(rng.beta(30.0, 1.0, n), 2)
    if family == "bimodal":
        return np.where(rng.random(n) < 0.3, rng.beta(2.0, 3.0, n), rng.beta(30.0, 2.0, n))
    raise ValueError(family)


class ConfidenceHarness(Harness):
    """The confidence's normal-score CUSUM and the low-confidence indicator's."""

    signal = "confidence_drift"
    families = ("beta82", "rounded_ties", "bimodal")
    share = cal.SHARES["confidence_drift"]["cusum"]

    def build(self, family, per_million, rng):
        spec = ModelSpec(name="h", classes=["a"], versions=["v1"], features=[])
        self.det = ConfidenceDrift(_profile(spec, None, _confidences(family, REF, rng)),
                                   CalibrationSpec(false_alarms_per_million=per_million), spec.low_confidence)

    def draw(self, family, n, rng, shift_at):
        x = _confidences(family, n, rng)
        if shift_at is not None:
            q = np.quantile(_confidences(family, 4000, np.random.default_rng(5)), [0.25, 0.75])
            step = 0.5 * max((q[1] - q[0]) / 1.35, 0.01)  # half a robust sd down (at least 0.005: tied families)
            x = np.where(np.arange(n) >= shift_at, np.clip(x - step, 0.0, 1.0), x)
        return (x,)

    def feed(self, data):
        (x,) = data
        return self._hits(self.det.accumulate(x, 0), self.signal)

    def state(self):
        return self.det.to_state()

    def load(self, st):
        self.det.load_state(st)


TRIGGER_RATES = {"rate2pct": 0.02, "rate20pct": 0.2}


class TriggerHarness(Harness):
    """The triggered indicator of one trigger."""

    signal = "trigger"
    families = ("rate2pct", "rate20pct")
    share = cal.SHARES["trigger"]["cusum"]

    def build(self, family, per_million, rng):
        hits = int(rng.binomial(REF, TRIGGER_RATES[family]))
        prof = ReferenceProfile(n=REF, predictions=[REF, 0], triggers={"t": [hits, hits, 0]})
        self.det = TriggerWatch(TriggerSpec(name="t", feature="c", equals="x"), ["a"], prof,
                                CalibrationSpec(false_alarms_per_million=per_million))

    def draw(self, family, n, rng, shift_at):
        p = np.full(n, TRIGGER_RATES[family])
        if shift_at is not None:
            p[shift_at:] = min(3 * p[0], 0.9)
        return (rng.random(n) < p,)

    def feed(self, data):
        (m,) = data
        return self._hits(self.det.accumulate(m, np.zeros(m.size, dtype=np.int64), 0, m.size), self.signal)

    def state(self):
        return self.det.to_state()

    def load(self, st):
        self.det.load_state(st)


class CanaryInferenceHarness(CanaryHarness):
    """The canary judge's per-event comparisons with stable: per predicted class (``share20``: the
    canary predicts class 2 three times as often) and confidence (``share50``: the canary is less
    confident, Beta(8, 2) -> Beta(6, 2))."""

    def keys(self, family):
        return 2  # prediction, confidence

    def draw(self, family, n, rng, shift_at):
        share, _ = CANARY[family]
        is_c = rng.random(n) < share
        after = np.zeros(n, dtype=bool) if shift_at is None else np.arange(n) >= shift_at
        bad = after & is_c
        p, q = np.array([0.8, 0.15, 0.045, 0.005]), np.array([0.7, 0.15, 0.145, 0.005])
        if family != "share20":
            q = p
        u = rng.random(n)
        preds = np.where(bad, np.searchsorted(np.cumsum(q), u), np.searchsorted(np.cumsum(p), u))
        conf = np.where(bad & (family != "share20"), rng.beta(6.0, 2.0, n), rng.beta(8.0, 2.0, n))
        return (is_c, ~is_c, np.minimum(preds, 3).astype(np.int64), conf)

    def feed(self, data):
        ic, is_, preds, conf = data
        return self._hits(self.judge.process(ic, is_, preds, conf), self.signal)


#: harness name -> harness factory; every signal with a ``cusum`` detector must appear here (a
#: signal with several sequential parts names one harness each as ``signal:part``).
HARNESSES: dict[str, Any] = {
    "numeric_drift": NumericHarness,
    "prediction_drift": PredictionHarness,
    "performance": lambda: LabelHarness("performance"),
    "label_drift": lambda: LabelHarness("label_drift"),
    "label_disagreement": SourceHarness,
    "canary_divergence": CanaryHarness,
    "canary_divergence:inference": CanaryInferenceHarness,
    "categorical_drift": CategoricalHarness,
    "confidence_drift": ConfidenceHarness,
    "trigger": TriggerHarness,
}
