"""The hand-wired anchor: river's ``ADWIN()`` and ``PageHinkley()`` with their defaults, wired as a user would.

One detector pair per numeric feature (raw finite values), per predicted-class indicator (every
event), and per label source's error indicator (every label joined with its prediction within the
label horizon, in arrival order). It reads a drill's written logs (``inference.jsonl``,
``labels.jsonl``, ``meta.json``) and reports every detection with its event time and stream, the
first detection after the injection on the streams the scenario moves, and the false alarms (any
detection before the injection, or any at all on the stationary control).

The delay counts the first detection after the injection on a watched stream that raised no false
alarm before the injection: a stream that already fired on stationary data (river's ADWIN on
heavy-tailed integer features fires every few hundred events) says nothing by firing again, and
its first post-injection detection would be a coin toss. The first detection on any watched
stream is reported as well (``*_any``).

    python loadtest/anchor.py DRILL_DIR [--json OUT]
"""
from __future__ import annotations

import argparse
import bisect
import json
import math
import sys
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from loadtest.drills import SCENARIOS  # noqa: E402

DETECTORS = ("adwin", "page_hinkley")

#: Streams a scenario's incident moves, as the anchor's user would watch them ("feature:NAME",
#: "class:NAME", "source:NAME" prefixes; the scenario's intended key narrows them further).
WATCHED: dict[str, str] = {
    "sudden_shift": "feature:", "gradual_drift": "feature:", "small_shift": "feature:", "one_of_50": "feature:",
    "real_heavy_tailed": "feature:", "garbage": "feature:", "backdoor_canary": "class:", "label_flip": "source:",
    "concept_drift": "source:", "concept_drift_delayed": "source:",
}


def _new(kind: str) -> Any:
    from river.drift import ADWIN, PageHinkley

    return ADWIN() if kind == "adwin" else PageHinkley()


def detections(drill_dir: Path) -> tuple[dict[str, list[tuple[float, str]]], dict[str, Any], list[float]]:
    """Every anchor detection ``(event time, stream)`` per detector, the drill metadata and the
    inference timestamps (for delays in events)."""
    meta = json.loads((drill_dir / "meta.json").read_text())
    horizon = float(meta.get("label_horizon_seconds", 3600.0))
    dets: dict[str, dict[str, Any]] = {k: {} for k in DETECTORS}
    out: dict[str, list[tuple[float, str]]] = {k: [] for k in DETECTORS}
    preds: dict[str, tuple[str, float]] = {}
    inference_ts: list[float] = []

    def feed(stream: str, x: float, ts: float) -> None:
        for kind in DETECTORS:
            d = dets[kind].get(stream)
            if d is None:
                d = dets[kind][stream] = _new(kind)
            d.update(x)
            if d.drift_detected:
                out[kind].append((ts, stream))

    classes: list[str] = []
    for line in (drill_dir / "inference.jsonl").read_bytes().splitlines():
        try:
            e = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(e, dict) or not isinstance(e.get("ts"), (int, float)):
            continue
        ts = float(e["ts"])
        inference_ts.append(ts)
        feats = e.get("features") if isinstance(e.get("features"), dict) else {}
        for name, v in feats.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                feed(f"feature:{name}", float(v), ts)
        pred = e.get("prediction")
        if isinstance(pred, str):
            if pred not in classes:
                classes.append(pred)
            for c in classes:
                feed(f"class:{c}", float(pred == c), ts)
            if isinstance(e.get("event_id"), str):
                preds[e["event_id"]] = (pred, ts)
    lab_path = drill_dir / "labels.jsonl"
    if lab_path.exists():
        for line in lab_path.read_bytes().splitlines():
            lab = orjson.loads(line)
            p = preds.get(lab.get("event_id"))
            if p is None or lab["ts"] - p[1] > horizon:
                continue
            feed(f"source:{lab['source']}", float(lab["label"] != p[0]), float(lab["ts"]))
    for kind in DETECTORS:
        out[kind].sort()
    inference_ts.sort()
    return out, meta, inference_ts


def score(drill_dir: Path) -> dict[str, Any]:
    """Per detector: first detection on the watched streams after the injection (events, seconds,
    stream) and the false alarms."""
    found, meta, its = detections(drill_dir)
    scenario = meta["scenario"]
    inj_ts, inj = meta["injection_ts"], meta["injection_index"]
    prefix = WATCHED.get(scenario)
    key = meta.get("intended_key")
    armed_events = max(len(its) - 0, 1)
    res: dict[str, Any] = {"scenario": scenario, "watched": prefix, "events": len(its)}
    for kind, rows in found.items():
        false = [r for r in rows if inj_ts is None or r[0] < inj_ts]
        noisy = {r[1] for r in false}
        hit = first_any = None
        if inj_ts is not None and prefix is not None:
            watched = [r for r in rows if r[0] >= inj_ts and r[1].startswith(prefix)
                       and (key is None or r[1] == prefix + key)]
            first_any = watched[0] if watched else None
            hit = next((r for r in watched if r[1] not in noisy), None)
        res[kind] = {
            "seconds_to_detection_any": None if first_any is None else round(first_any[0] - inj_ts, 3),
            "stream_any": None if first_any is None else first_any[1],
            "detected": hit is not None, "stream": None if hit is None else hit[1],
            "seconds_to_detection": None if hit is None else round(hit[0] - inj_ts, 3),
            "events_to_detection": None if hit is None else bisect.bisect_right(its, hit[0]) - inj,
            "false_alarms": len(false),
            "false_alarms_per_million_events": round(len(false) * 1e6 / (armed_events if inj_ts is None
                                                                          else max(inj, 1)), 1),
            "detections_total": len(rows),
        }
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("drill_dir")
    ap.add_argument("--json", default=None, help="write the result here (default DRILL_DIR/anchor.json)")
    args = ap.parse_args(argv)
    d = Path(args.drill_dir)
    res = score(d)
    Path(args.json or d / "anchor.json").write_text(json.dumps(res, indent=2))
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    assert set(WATCHED) <= set(SCENARIOS)
    sys.exit(main())
