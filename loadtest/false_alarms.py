"""False alarms of the whole engine on long stationary streams: expected (from the budget) vs observed.

Per family, a model with ``--features`` numeric features drawn i.i.d. from that family (synthetic
families), or rows resampled i.i.d. from a real data set that river bundles (offline: Statlog
Shuttle, 9 heavy-tailed integer sensor readings; Image Segmentation, 19 features with ties and
constant columns), plus ``--categorical`` categorical features (Zipf over 60 categories, top 16
tracked) with one trigger on the first (a category seen on about 5% of events), predictions from
four classes and Beta(8, 2) confidences, runs through a
:class:`~detectors.engine.ModelMonitor` in batches of 1000. Expected detections are
``F * keys * armed events / 1e6`` per signal (every signal spends ``F`` per key over its
detectors); observed are the engine's detections (and alerts, after deduplication).

    nice -n 10 python loadtest/false_alarms.py --events 1000000 [--per-million 0.01] [--families normal ...]
    nice -n 10 python loadtest/false_alarms.py --events 1000000 --per-million 10 --canary-share 0.2 --seed 2

Prints one JSON object and a markdown table.
"""
from __future__ import annotations

import argparse
import gzip
import io
import json
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detectors.engine import ModelMonitor  # noqa: E402
from detectors.events import InferenceEvent  # noqa: E402
from detectors.spec import AlertPolicySpec, CalibrationSpec, FeatureSpec, ModelSpec, TriggerSpec  # noqa: E402

SYNTHETIC = ("normal", "lognormal", "cauchy", "poisson_ties", "bimodal", "outliers", "zipf_integers", "constant")
REAL = ("shuttle", "segment")
CLASSES = ["a", "b", "c", "d"]
CLASS_P = np.array([0.9, 0.07, 0.025, 0.005])
CATEGORY_P = 1.0 / np.arange(1, 61) ** 1.1
CATEGORY_P /= CATEGORY_P.sum()
TRIGGER_CATEGORY = "k3"  # about 5% of events


def _river_file(name: str) -> Path:
    import river.datasets
    return Path(river.datasets.__file__).with_name(name)


def real_rows(name: str) -> np.ndarray:
    """The numeric columns of a data set bundled with river (no download)."""
    if name == "shuttle":
        with gzip.open(_river_file("shuttle.csv.gz"), "rt") as fh:
            return np.loadtxt(fh, delimiter=",", skiprows=1)[:, :9]
    if name == "segment":
        with zipfile.ZipFile(_river_file("segment.csv.zip")) as z:
            text = z.read(z.namelist()[0]).decode()
        return np.loadtxt(io.StringIO(text), delimiter=",", skiprows=1, usecols=range(18))
    raise ValueError(name)


def draw(family: str, n: int, F: int, rng: np.random.Generator) -> np.ndarray:
    """``n x F`` stationary values of a family (real data sets: rows resampled with replacement)."""
    if family in REAL:
        rows = real_rows(family)
        return rows[rng.integers(0, rows.shape[0], n)]
    from detectors.checks.harnesses import _family
    return np.column_stack([_family(family, n, rng) for _ in range(F)])


def run_family(family: str, n_events: int, F: int, per_million: float, seed: int = 0,
               categorical: int = 0) -> dict[str, Any]:
    rng = np.random.default_rng([seed, (SYNTHETIC + REAL).index(family)])
    crng = np.random.default_rng([seed, 99, (SYNTHETIC + REAL).index(family)])  # numeric draws stay as before
    width = real_rows(family).shape[1] if family in REAL else F
    cats = [f"c{j}" for j in range(categorical)]
    spec = ModelSpec(name="fa", classes=CLASSES, versions=["v1"], stable_version="v1",
                     features=[FeatureSpec(name=f"x{j}", type="numeric") for j in range(width)]
                     + [FeatureSpec(name=c, type="categorical", top_k=16) for c in cats],
                     triggers=[TriggerSpec(name="t0", feature="c0", equals=TRIGGER_CATEGORY)] if cats else [])
    cal = CalibrationSpec(false_alarms_per_million=per_million)
    mon = ModelMonitor(spec, cal, AlertPolicySpec())
    names = [f"x{j}" for j in range(width)] + cats
    alerts = 0
    chunk = 50_000
    started = time.perf_counter()
    for lo in range(0, n_events, chunk):
        m = min(chunk, n_events - lo)
        X = draw(family, m, F, rng).tolist()
        if cats:
            C = crng.choice(CATEGORY_P.size, (m, len(cats)), p=CATEGORY_P)
            X = [row + [f"k{j}" for j in crow] for row, crow in zip(X, C.tolist())]
        pc = rng.choice(len(CLASSES), m, p=CLASS_P).tolist()
        conf = rng.beta(8, 2, m).tolist()
        evs = [InferenceEvent(f"e{lo + i}", (lo + i) / 100.0, "fa", "v1", "stable", dict(zip(names, X[i])),
                              CLASSES[pc[i]], conf[i], None, lo + i) for i in range(m)]
        for b in range(0, m, 1000):
            alerts += sum(1 for msg in mon.process_inference(evs[b:b + 1000]) if msg.to_dict()["kind"] == "alert")
    armed = n_events - spec.reference_size
    keys = {"numeric_drift": width, "prediction_drift": len(CLASSES) + 1, "confidence_drift": 1}
    if cats:
        keys.update({"categorical_drift": len(cats), "trigger": 1})
    expected = {s: round(per_million * k * armed / 1e6, 4) for s, k in keys.items()}
    observed = {s: mon.detections[s] for s in keys}
    return {"family": family, "events": n_events, "features": width, "per_million": per_million,
            "expected": expected, "observed": observed, "expected_total": round(sum(expected.values()), 4),
            "observed_total": sum(observed.values()), "alerts": alerts,
            "observed_per_million_events": round(sum(observed.values()) * 1e6 / armed, 3),
            "by_detector": dict(sorted(mon.detector_counts.items())),
            "seconds": round(time.perf_counter() - started, 1)}


def run_canary(n_events: int, per_million: float, share: float, seed: int = 0) -> dict[str, Any]:
    """The canary judge alone on stationary canary and stable traffic (a ``share`` of canary events, the
    classes and confidences above): its per-event comparisons' detections (``canary_divergence/cusum``,
    keys ``prediction`` and ``confidence``) against ``F x share x 2 keys x events / 1e6``."""
    from detectors.calibration import SHARES
    from detectors.canary import CanaryJudge
    from detectors.spec import CanaryPolicy

    rng = np.random.default_rng([seed, 7])
    judge = CanaryJudge(len(CLASSES) + 1, CanaryPolicy(), per_million)
    judge.start("v2")
    hits: dict[str, int] = {}
    chunk = 100_000
    started = time.perf_counter()
    for lo in range(0, n_events, chunk):
        m = min(chunk, n_events - lo)
        ic = rng.random(m) < share
        pc = rng.choice(len(CLASSES), m, p=CLASS_P)
        conf = rng.beta(8, 2, m)
        for b in range(0, m, 1000):
            for h in judge.process(ic[b:b + 1000], ~ic[b:b + 1000], pc[b:b + 1000], conf[b:b + 1000]):
                hits[f"{h[1]}:{h[2]}"] = hits.get(f"{h[1]}:{h[2]}", 0) + 1
    expected = per_million * SHARES["canary_divergence"]["cusum"] * 2 * n_events / 1e6
    observed = sum(v for k, v in hits.items() if k.startswith("cusum:"))
    return {"canary_share": share, "events": n_events, "per_million": per_million, "seed": seed,
            "expected": round(expected, 4), "observed": observed, "by_detector_key": dict(sorted(hits.items())),
            "seconds": round(time.perf_counter() - started, 1)}


def table(rows: list[dict[str, Any]]) -> str:
    head = ["family", "events", "features", "F", "expected numeric", "observed numeric", "expected all",
            "observed all", "alerts", "observed per 1M events"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        out.append("| " + " | ".join(str(x) for x in (
            r["family"], r["events"], r["features"], r["per_million"], r["expected"]["numeric_drift"],
            r["observed"]["numeric_drift"], r["expected_total"], r["observed_total"], r["alerts"],
            r["observed_per_million_events"])) + " |")
    return "\n".join(out)


def signal_table(rows: list[dict[str, Any]]) -> str:
    """Expected / observed detections per signal and family."""
    sigs = sorted({s for r in rows for s in r["expected"]})
    out = ["| family | F | " + " | ".join(sigs) + " |", "|" + "---|" * (len(sigs) + 2)]
    for r in rows:
        out.append(f"| {r['family']} | {r['per_million']} | " + " | ".join(
            f"{r['expected'][s]} / {r['observed'][s]}" if s in r["expected"] else "-" for s in sigs) + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--features", type=int, default=8)
    ap.add_argument("--per-million", type=float, default=0.01)
    ap.add_argument("--families", nargs="*", default=list(SYNTHETIC + REAL))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--categorical", type=int, default=2, help="categorical features (the first carries a trigger)")
    ap.add_argument("--canary-share", type=float, default=None,
                    help="instead: the canary judge alone with this share of canary events (per seed up to --seed)")
    args = ap.parse_args(argv)
    if args.canary_share is not None:
        runs = [run_canary(args.events, args.per_million, args.canary_share, sd) for sd in range(args.seed + 1)]
        print(json.dumps({"benchmark": "false_alarms_canary", "runs": runs}))
        return 0
    rows = [run_family(f, args.events, args.features, args.per_million, args.seed, args.categorical)
            for f in args.families]
    print(table(rows))
    print(signal_table(rows))
    print(json.dumps({"benchmark": "false_alarms", "rows": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
