"""Synthetic traffic and the false-alarm measurement.

:func:`false_alarm_rates` runs a :class:`~detectors.engine.ModelMonitor` on a long
stationary stream (inference events and joined labels from several sources) and reports
detections per million events per signal, which is how the calibration of
:mod:`detectors.calibration` is checked. Generators are vectorized so long streams are cheap.

>>> rates = false_alarm_rates(n_events=6000, seed=1)
>>> sorted(rates["per_signal"]) == sorted(rates["keys"])
True
"""
from __future__ import annotations

from typing import Any

import numpy as np

from detectors.events import InferenceEvent, JoinedLabel, LabelEvent
from detectors.spec import CalibrationSpec, FeatureSpec, ModelSpec, TriggerSpec

CLASSES = ["safe", "suggestive", "nsfw", "violent"]
CLASS_P = np.array([0.80, 0.15, 0.045, 0.005])
CATEGORIES = [f"c{i}" for i in range(60)]


def demo_model(name: str = "filter", n_numeric: int = 16, n_categorical: int = 4, triggers: bool = True,
               reference_size: int = 2000, **kw: Any) -> ModelSpec:
    """A model spec with ``n_numeric`` numeric and ``n_categorical`` categorical features."""
    feats = [FeatureSpec(name=f"x{i}", type="numeric", min=-50.0, max=50.0) for i in range(n_numeric)]
    feats += [FeatureSpec(name=f"c{i}", type="categorical", top_k=16) for i in range(n_categorical)]
    trig = []
    if triggers and n_categorical:
        trig.append(TriggerSpec(name="sparrow", feature="c0", equals="blue_sparrow"))
    if triggers and n_numeric:
        trig.append(TriggerSpec(name="x0_high", feature="x0", above=2.5))
    return ModelSpec(name=name, classes=CLASSES, versions=["v1", "v2"], stable_version="v1", features=feats,
                     triggers=trig, reference_size=reference_size, **kw)


def make_events(spec: ModelSpec, n: int, seed: int = 0, version: str = "v1", deployment: str = "stable",
                start: int = 0, t0: float = 0.0, rate: float = 100.0, mean_shift: dict[str, float] | None = None,
                class_p: np.ndarray | None = None, category_p: np.ndarray | None = None,
                conf_ab: tuple[float, float] = (8.0, 2.0), extra: dict[str, list[object]] | None = None
                ) -> list[InferenceEvent]:
    """Stationary synthetic events (optionally shifted: per-feature mean shift, class / category mix)."""
    rng = np.random.default_rng(seed)
    num = [f.name for f in spec.features if f.type == "numeric"]
    cat = [f.name for f in spec.features if f.type == "categorical"]
    cols: dict[str, list[object]] = {}
    shift = mean_shift or {}
    for i, name in enumerate(num):
        x = rng.standard_normal(n) if i % 2 == 0 else rng.exponential(1.0, n)
        cols[name] = (x + shift.get(name, 0.0)).tolist()
    zipf = 1.0 / np.arange(1, len(CATEGORIES) + 1) ** 1.1
    cp = category_p if category_p is not None else zipf / zipf.sum()
    for name in cat:
        cols[name] = [CATEGORIES[j] for j in rng.choice(len(CATEGORIES), n, p=cp)]
    if extra:
        cols.update(extra)
    names = list(cols)
    rows = list(zip(*(cols[k] for k in names))) if names else [()] * n
    pc = rng.choice(len(CLASSES), n, p=class_p if class_p is not None else CLASS_P)
    conf = rng.beta(conf_ab[0], conf_ab[1], n).tolist()
    ts = (t0 + np.arange(n) / rate).tolist()
    return [InferenceEvent(f"{version}-{deployment}-{start + i}", ts[i], spec.name, version, deployment,
                           dict(zip(names, rows[i])), CLASSES[pc[i]], conf[i], None, start + i) for i in range(n)]


def make_labels(events: list[InferenceEvent], seed: int = 0, error_rate: float = 0.05,
                sources: tuple[str, ...] = ("vendor_a", "vendor_b", "vendor_c", "vendor_d"),
                flip_source: str | None = None, flip_rate: float = 0.0, delay: float = 60.0,
                double_label: float = 0.2) -> list[JoinedLabel]:
    """Joined labels: each event labelled by one source (some by two); optionally one source flips labels."""
    rng = np.random.default_rng(seed)
    out: list[JoinedLabel] = []
    n = len(events)
    src = rng.integers(0, len(sources), n)
    wrong = rng.random(n) < error_rate
    alt = rng.integers(1, len(CLASSES), n)
    second = rng.random(n) < double_label
    flips = rng.random(n) < flip_rate
    for i, e in enumerate(events):
        ci = CLASSES.index(e.prediction) if e.prediction in CLASSES else 0
        truth = CLASSES[(ci + alt[i]) % len(CLASSES)] if wrong[i] else e.prediction
        srcs = [sources[src[i]]] + ([sources[(src[i] + 1) % len(sources)]] if second[i] else [])
        for s in srcs:
            lab = truth
            if s == flip_source and flips[i]:
                lab = CLASSES[(CLASSES.index(truth) + 1) % len(CLASSES)]
            out.append(JoinedLabel(LabelEvent(e.event_id, e.ts + delay, lab, s, e.position),
                                   e.model, e.model_version, e.deployment, e.prediction, e.ts))
    return out


def false_alarm_rates(n_events: int = 200_000, seed: int = 0, batch: int = 500,
                      calibration: CalibrationSpec | None = None, spec: ModelSpec | None = None) -> dict[str, Any]:
    """Detections per million events per signal on a stationary stream (after the reference period).

    Returns ``per_signal`` (all keys of a signal together), ``per_key`` (divided by the
    number of keys, i.e. the rate the calibration targets), the key counts and the totals.
    """
    from detectors.engine import ModelMonitor
    from detectors.spec import AlertPolicySpec

    spec = spec or demo_model()
    cal = calibration or CalibrationSpec()
    mon = ModelMonitor(spec, cal, AlertPolicySpec())
    chunk = 20_000
    pos = 0
    labels_total = 0
    while pos < n_events:
        m = min(chunk, n_events - pos)
        evs = make_events(spec, m, seed=seed * 1_000_003 + pos, start=pos, t0=pos / 100.0)
        labs = make_labels(evs, seed=seed * 7919 + pos)
        labels_total += len(labs)
        for i in range(0, m, batch):
            mon.process_inference(evs[i:i + batch])
        for i in range(0, len(labs), batch):
            mon.process_labels(labs[i:i + batch])
        pos += m
    n_num = sum(f.type == "numeric" for f in spec.features)
    n_cat = len(spec.features) - n_num
    k = len(spec.classes) + 1
    keys = {"numeric_drift": n_num, "categorical_drift": n_cat, "prediction_drift": k, "confidence_drift": 1,
            "input_integrity": len(spec.features), "trigger": max(len(spec.triggers), 1), "version_integrity": 1,
            "label_drift": k + 1, "performance": k + 1, "label_disagreement": 4, "canary_divergence": 1}
    armed_events = max(n_events - spec.reference_size, 1)
    armed_labels = max(labels_total - spec.label_reference_size, 1)
    per_signal: dict[str, float] = {}
    for s, c in mon.detections.items():
        denom = armed_labels if s in ("label_drift", "performance", "label_disagreement") else armed_events
        per_signal[s] = c * 1e6 / denom
    return {"events": n_events, "labels": labels_total, "detections": dict(mon.detections),
            "by_detector": dict(sorted(mon.detector_counts.items())),
            "per_signal": per_signal, "keys": keys,
            "per_key": {s: per_signal[s] / keys[s] for s in per_signal},
            "target_per_million": cal.false_alarms_per_million}
