"""Detector throughput: driftline's engine vs a naive per-event river loop, same run, same events.

Model: 16 numeric + 4 categorical features, 2 triggers, every signal on (numeric and
categorical drift, prediction, confidence, triggers, input integrity, version integrity,
canary judge). The engine receives micro-batches; its reference profile is learned before
timing starts. The naive baseline calls river's ``ADWIN.update`` and ``PageHinkley.update``
on the raw value of every numeric feature of every event (and does nothing for the
categorical features, so it does strictly less work than the engine).

``--models M`` adds the many-model shape of a platform's log: the same number of events spread
over ``M`` monitors (each with its own reference), every micro-batch handing each monitor its
``batch / M`` events, against one monitor taking whole batches (``models_ratio``, median of
per-repeat ratios): the engine's fixed cost per call.

``--arm M`` times what a worker pays once per model before it detects anything: ``M`` new monitors
(10 numeric features) each taking its ``--reference``-event reference and 25 more events (profile
build, threshold calibration, first batch), against the same events through monitors already armed
(``arm_ratio``: milliseconds per model of the first over the second, median of per-repeat ratios;
the threshold memo is cleared before each repeat, so repeats do not serve each other).

Prints one JSON object: events/s of both (median of ``--repeats``), the ratio of the medians,
and the median of per-repeat ratios (each repeat runs both back to back, so this one is the
more robust figure on a shared machine). ``--clock cpu`` times both with the process's CPU time
instead of wall time (for a machine whose cores are shared with other jobs).

    .venv/bin/python loadtest/bench_detectors.py [--events 40000] [--batch 1000] [--repeats 7] [--clock cpu]
    .venv/bin/python loadtest/bench_detectors.py --models 200 --batch 5000 --clock cpu --repeats 3
    .venv/bin/python loadtest/bench_detectors.py --arm 100 --reference 2000 --clock cpu --repeats 3
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from river.drift import ADWIN, PageHinkley  # noqa: E402

from detectors import calibration  # noqa: E402
from detectors.engine import ModelMonitor  # noqa: E402
from detectors.simulate import demo_model, make_events  # noqa: E402
from detectors.spec import AlertPolicySpec, CalibrationSpec  # noqa: E402


CLOCK = {"wall": time.perf_counter, "cpu": time.process_time}
clock = time.perf_counter


def run_engine(spec, reference, events, batch: int) -> float:
    mon = ModelMonitor(spec, CalibrationSpec(), AlertPolicySpec())
    for i in range(0, len(reference), batch):
        mon.process_inference(reference[i:i + batch])
    t = clock()
    for i in range(0, len(events), batch):
        mon.process_inference(events[i:i + batch])
    return len(events) / (clock() - t)


def run_naive(spec, events) -> float:
    names = [f.name for f in spec.features if f.type == "numeric"]
    det = {n: (ADWIN(), PageHinkley()) for n in names}
    t = clock()
    for e in events:
        feats = e.features
        for n in names:
            a, p = det[n]
            x = feats[n]
            a.update(x)
            p.update(x)
    return len(events) / (clock() - t)


def run_models(models: int, events: int, batch: int) -> tuple[float, float]:
    """Events/s of one monitor taking whole batches, and of ``models`` monitors (10 numeric features,
    a 100-event reference each) taking ``batch / models`` events each per batch: same total events."""
    per = max(1, batch // models)
    rounds = max(1, events // (per * models))
    specs = [demo_model(name=f"m{i:03d}", n_numeric=10, n_categorical=0, triggers=False, reference_size=100)
             for i in range(models)]
    streams = [make_events(s, 100 + per * rounds, seed=i) for i, s in enumerate(specs)]
    one_events = make_events(specs[0], 100 + per * rounds * models, seed=models)
    one = ModelMonitor(specs[0], CalibrationSpec(), AlertPolicySpec())
    one.process_inference(one_events[:100])
    t = clock()
    for i in range(100, len(one_events), per * models):
        one.process_inference(one_events[i:i + per * models])
    one_rate = (len(one_events) - 100) / (clock() - t)
    mons = [ModelMonitor(s, CalibrationSpec(), AlertPolicySpec()) for s in specs]
    for m, ev in zip(mons, streams):
        m.process_inference(ev[:100])
    t = clock()
    for r in range(rounds):
        lo = 100 + r * per
        for m, ev in zip(mons, streams):
            m.process_inference(ev[lo:lo + per])
    return one_rate, per * rounds * models / (clock() - t)


def run_arming(models: int, reference: int) -> tuple[float, float]:
    """Milliseconds per model: new monitors taking their reference and 25 events, then monitors
    already armed taking the same events again (the steady cost of those events)."""
    specs = [demo_model(name=f"m{i:03d}", n_numeric=10, n_categorical=0, triggers=False, reference_size=reference)
             for i in range(models)]
    streams = [make_events(s, reference + 25, seed=i) for i, s in enumerate(specs)]
    calibration._thresholds.cache_clear()
    calibration.normal_isf.cache_clear()
    t = clock()
    mons = [ModelMonitor(s, CalibrationSpec(), AlertPolicySpec()) for s in specs]
    for m, ev in zip(mons, streams):
        m.process_inference(ev[:reference])
        m.process_inference(ev[reference:])
    arming = (clock() - t) / models * 1e3
    t = clock()
    for m, ev in zip(mons, streams):
        m.process_inference(ev[:reference])
        m.process_inference(ev[reference:])
    return arming, (clock() - t) / models * 1e3


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=40_000)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--clock", choices=sorted(CLOCK), default="wall")
    ap.add_argument("--models", type=int, default=0, help="many-model run over this many monitors (0: off)")
    ap.add_argument("--arm", type=int, default=0, help="arming run over this many new monitors (0: off)")
    ap.add_argument("--reference", type=int, default=2000, help="reference events per monitor (--arm)")
    args = ap.parse_args(argv)
    global clock
    clock = CLOCK[args.clock]
    if args.arm:
        # Runs are rounded once and every median is taken from the printed values, so the JSON agrees with itself.
        runs = [tuple(round(t, 6) for t in run_arming(args.arm, args.reference)) for _ in range(args.repeats)]
        print(json.dumps({
            "benchmark": "detectors", "mode": "arm", "clock": args.clock, "features": 10, "models": args.arm,
            "reference": args.reference, "repeats": args.repeats,
            "baseline": "the same events through armed monitors",
            "arm_ms_per_model": round(statistics.median(r[0] for r in runs), 3),
            "armed_ms_per_model": round(statistics.median(r[1] for r in runs), 3),
            "arm_ratio": round(statistics.median(a / b for a, b in runs), 3),
            "arm_runs": [r[0] for r in runs], "armed_runs": [r[1] for r in runs]}))
        return 0
    if args.models:
        runs = [tuple(round(t) for t in run_models(args.models, args.events, args.batch)) for _ in range(args.repeats)]
        one, many = statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
        print(json.dumps({
            "benchmark": "detectors", "mode": "models", "clock": args.clock, "features": 10, "models": args.models,
            "events": args.events, "batch": args.batch, "repeats": args.repeats, "baseline": "one monitor, whole batches",
            "one_model_events_per_s": round(one), "many_models_events_per_s": round(many),
            "models_ratio": round(statistics.median(m / o for o, m in runs), 3),
            "one_model_runs": [r[0] for r in runs], "many_models_runs": [r[1] for r in runs]}))
        return 0
    spec = demo_model()
    reference = make_events(spec, spec.reference_size, seed=1)
    stable = make_events(spec, args.events, seed=2, start=spec.reference_size, t0=spec.reference_size / 100.0)
    engine, naive = [], []
    for _ in range(args.repeats):
        naive.append(run_naive(spec, stable))
        engine.append(run_engine(spec, reference, stable, args.batch))
    e, n = statistics.median(engine), statistics.median(naive)
    pair = statistics.median(a / b for a, b in zip(engine, naive))
    print(json.dumps({
        "benchmark": "detectors", "clock": args.clock, "features": len(spec.features), "events": args.events, "batch": args.batch,
        "repeats": args.repeats, "engine_events_per_s": round(e), "naive_events_per_s": round(n),
        "ratio": round(e / n, 2), "ratio_median_of_pairs": round(pair, 2),
        "engine_runs": [round(x) for x in engine], "naive_runs": [round(x) for x in naive],
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
