"""`driftline drill SCENARIO`: inject one known incident into realistic traffic and score the monitor.

The scenario's logs are synthesized (``loadtest/drills.py``), replayed through the engine (or,
with ``--kafka``, produced to a loopback broker and run through a live worker) and scored: time to detection (events and seconds after the injection) by the scenario's intended
signals, false alarms (alerts before the injection, or any alert on the stationary control),
and whether a rollback fired when, and only when, one is expected. Results print as a table and
are drawn as a PNG (the observable the incident moves, every detection's statistic against its
threshold, the injection and the first intended detection).
"""
from __future__ import annotations

import argparse
import bisect
import json
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detectors.detection import Detection
from detectors.engine import Engine
from detectors.spec import MonitorSpec


PLOT_TAIL_S = 300.0  # seconds shown after the last inference event (late labels beyond are left out)


def _drills() -> Any:
    """``loadtest.drills``, importable from a source checkout."""
    try:
        import loadtest.drills as drills
    except ImportError:
        root = Path(__file__).resolve().parents[1]
        if not (root / "loadtest" / "drills.py").exists():
            raise RuntimeError("driftline drill needs the loadtest/ directory of a source checkout") from None
        sys.path.insert(0, str(root))
        import loadtest.drills as drills
    return drills


@dataclass
class DrillResult:
    """Score of one scenario run."""

    scenario: str
    meta: dict[str, Any]
    detected: bool
    detection: dict[str, Any] | None
    events_to_detection: int | None
    seconds_to_detection: float | None
    false_alarms: list[dict[str, Any]]
    other_alerts: int
    rollback_fired: bool
    rollback_expected: bool
    replay: dict[str, Any]
    detections: list[dict[str, Any]] = field(default_factory=list, repr=False)
    messages: list[dict[str, Any]] = field(default_factory=list, repr=False)

    @property
    def passed(self) -> bool:
        """Detected by an intended signal (or quiet, for the control), no false alarm, right rollback call."""
        hit = self.detected if self.meta["intended_signals"] else True
        return hit and not self.false_alarms and self.rollback_fired == self.rollback_expected

    def to_dict(self) -> dict[str, Any]:
        return {"scenario": self.scenario, "passed": self.passed, "detected": self.detected,
                "intended_signals": self.meta["intended_signals"], "detection": self.detection,
                "events_to_detection": self.events_to_detection, "seconds_to_detection": self.seconds_to_detection,
                "false_alarms": len(self.false_alarms), "false_alarm_alerts": self.false_alarms,
                "other_alerts_after_injection": self.other_alerts, "rollback_fired": self.rollback_fired,
                "rollback_expected": self.rollback_expected, "detections_total": len(self.detections),
                "meta": self.meta, "replay": self.replay}


def _matches(doc: dict[str, Any], meta: dict[str, Any]) -> bool:
    if doc.get("signal") not in meta["intended_signals"]:
        return False
    for attr, key in (("intended_deployment", "deployment"), ("intended_version", "version"),
                      ("intended_key", "key")):
        want = meta.get(attr)
        if want is not None and doc.get(key) != want:
            return False
    return True


def _alert_row(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: doc.get(k) for k in ("signal", "detector", "version", "deployment", "key", "statistic", "threshold",
                                    "event_id", "ts", "replay")}


def run_drill(scenario: str, seed: int = 0, n_events: int | None = None, injection: int | None = None,
              out_dir: str | Path | None = None, batch_size: int = 4096,
              false_alarms_per_million: float | None = None) -> DrillResult:
    """Synthesize, replay and score one scenario; files go to ``out_dir`` (a temporary one if None).

    ``false_alarms_per_million`` replaces the default calibration budget (backtesting a threshold)."""
    from stream.replay import ReplayConfig, run_replay

    drills = _drills()
    drill = drills.make_drill(scenario, n_events=n_events, injection=injection, seed=seed)
    meta = drill.meta
    tmp = None
    if out_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix=f"drill-{scenario}-")
        out_dir = tmp.name
    try:
        paths = drills.write_drill(drill, out_dir)
        spec = MonitorSpec.model_validate(drills.drill_monitor_spec(scenario, false_alarms_per_million))
        config = ReplayConfig(spec, horizon_seconds=meta["label_horizon_seconds"])
        if "registry" in paths:
            from stream.registry import load_public_keys

            config.registry_keys = load_public_keys({drills.REGISTRY_KEY_ID: str(paths["registry_key"])})
        engine = Engine(spec, registry=config.registry_keys is not None)
        recorded: list[dict[str, Any]] = []
        for mon in engine.monitors.values():
            _record_detections(mon, recorded)
        report = run_replay(config, paths["inference"], paths["labels"], Path(out_dir) / "alerts.jsonl",
                            batch_size=batch_size, collect=True, engine=engine, registry_path=paths.get("registry"))
    finally:
        if tmp is not None:
            tmp.cleanup()
    return score(meta, report.collected, recorded, drill.inference_ts, report.to_dict())


def run_kafka_drill(scenario: str, bootstrap: str, redis_url: str, seed: int = 0, n_events: int | None = None,
                    injection: int | None = None, rate: float = 20_000.0, timeout: float = 300.0,
                    out_dir: str | Path | None = None, false_alarms_per_million: float | None = None) -> DrillResult:
    """Synthesize one scenario, run it through a worker on a loopback Kafka/Redis, score the control topic."""
    drills = _drills()
    from loadtest.drill_kafka import run_kafka

    drill = drills.make_drill(scenario, n_events=n_events, injection=injection, seed=seed)
    if out_dir is not None:
        drills.write_drill(drill, out_dir)
    counts: dict[str, int] = {}
    messages = run_kafka(drill, bootstrap, redis_url, rate=rate, timeout=timeout, counts=counts,
                         false_alarms_per_million=false_alarms_per_million)
    if out_dir is not None:
        with open(Path(out_dir) / "alerts.jsonl", "w") as fh:
            fh.writelines(json.dumps(m) + "\n" for m in messages)
    alerts = [m for m in messages if m.get("kind") == "alert"]
    return score(drill.meta, messages, alerts, drill.inference_ts,
                 {"mode": "kafka", "bootstrap": bootstrap, "produced_inference": len(drill.inference),
                  "produced_labels": len(drill.labels), **counts})


def _record_detections(monitor: Any, out: list[dict[str, Any]]) -> None:
    """Keep every detection (not only the alerts the policy lets through) for the report's plot."""
    observe = monitor.policy.observe

    def recording(det: Detection, now: float) -> list:
        out.append({"signal": det.signal, "detector": det.detector, "version": det.version,
                    "deployment": det.deployment, "key": det.key, "statistic": det.statistic,
                    "threshold": det.threshold, "ts": det.ts})
        return observe(det, now)
    monitor.policy.observe = recording


def score(meta: dict[str, Any], messages: list[dict[str, Any]], detections: list[dict[str, Any]],
          inference_ts: list[float], replay: dict[str, Any]) -> DrillResult:
    """Score control messages against the scenario metadata."""
    inj_ts = meta["injection_ts"]
    alerts = [m for m in messages if m.get("kind") == "alert"]
    if inj_ts is None:
        false_alarms = [_alert_row(a) for a in alerts]
        after: list[dict[str, Any]] = []
    else:
        false_alarms = [_alert_row(a) for a in alerts if a["ts"] < inj_ts]
        after = [a for a in alerts if a["ts"] >= inj_ts]
    hits = sorted((a for a in after if _matches(a, meta)), key=lambda a: a["ts"])
    first = hits[0] if hits else None
    events = seconds = None
    if first is not None:
        seconds = round(first["ts"] - inj_ts, 3)
        events = bisect.bisect_right(inference_ts, first["ts"]) - meta["injection_index"]
    rollbacks = [m for m in messages if m.get("kind") == "rollback" and (inj_ts is None or m["ts"] >= inj_ts)]
    early_rollbacks = [m for m in messages if m.get("kind") == "rollback" and inj_ts is not None and m["ts"] < inj_ts]
    false_alarms += [{"signal": "rollback", **{k: m.get(k) for k in ("canary_version", "reason", "ts")}}
                     for m in early_rollbacks]
    return DrillResult(meta["scenario"], meta, first is not None, None if first is None else _alert_row(first),
                       events, seconds, false_alarms, len(after) - len(hits), bool(rollbacks),
                       bool(meta["rollback_expected"]), replay, detections, messages)


# -- output -------------------------------------------------------------------------------------
def table(results: list[DrillResult]) -> str:
    """Fixed-width text table of results."""
    head = ("scenario", "result", "detected by", "events", "seconds", "false alarms", "rollback (expected)")
    rows = [head]
    for r in results:
        det = r.detection
        by = "-" if det is None else f"{det['signal']}/{det['detector']} {det['version']}/{det['deployment']}"
        rows.append((r.scenario, "PASS" if r.passed else "FAIL", by,
                     "-" if r.events_to_detection is None else str(r.events_to_detection),
                     "-" if r.seconds_to_detection is None else f"{r.seconds_to_detection:.1f}",
                     str(len(r.false_alarms)), f"{'yes' if r.rollback_fired else 'no'} "
                                               f"({'yes' if r.rollback_expected else 'no'})"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows)


def plot(result: DrillResult, observable: tuple[list[float], list[float], str] | None, path: str | Path) -> Path:
    """PNG: the observable the incident moves (top), each detection's statistic/threshold (bottom)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    meta = result.meta
    t0 = meta["first_ts"]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(10, 6.5), sharex=True)
    if observable is not None:
        xs, ys, label = observable
        ax1.plot([x - t0 for x in xs], ys, color="tab:blue", lw=1.2)
        ax1.set_ylabel(label)
    ax1.set_title(f"drill {result.scenario}: {meta['description']}", fontsize=9)
    intended = set(meta["intended_signals"])
    for sig_ok, colour, name in ((True, "tab:red", "intended signal"), (False, "tab:gray", "other signals")):
        pts = [(d["ts"] - t0, _exceedance(d["statistic"], d["threshold"])) for d in result.detections
               if (d["signal"] in intended) == sig_ok]
        if pts:
            ax2.scatter([p[0] for p in pts], [max(p[1], 1e-3) for p in pts], s=10, color=colour, label=name)
    ax2.axhline(1.0, color="black", lw=1, ls="--", label="threshold")
    ax2.set_yscale("log")
    ax2.set_ylabel("detection: statistic vs threshold (x)")
    ax2.set_xlabel("seconds since the first event")
    for ax in (ax1, ax2):
        if meta["injection_ts"] is not None:
            ax.axvline(meta["injection_ts"] - t0, color="tab:orange", lw=1.5, label="injection")
        if result.detection is not None:
            ax.axvline(result.detection["ts"] - t0, color="tab:red", lw=1.5, ls=":", label="first intended alert")
        for m in result.messages:
            if m.get("kind") == "rollback":
                ax.axvline(m["ts"] - t0, color="tab:purple", lw=1.5, ls="-.", label="rollback")
    ax2.legend(loc="upper left", fontsize=7)
    ax2.set_xlim(-5.0, meta["last_ts"] - t0 + PLOT_TAIL_S)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _exceedance(statistic: float, threshold: float) -> float:
    """How far past its threshold a detection is (lower-bound crossings count as threshold/statistic)."""
    if not (statistic == statistic and threshold == threshold) or threshold == 0:
        return 1.0
    if statistic > 0 and threshold > 0:
        return max(statistic / threshold, threshold / statistic)
    return 1.0


def observable(scenario: str, out_dir: str | Path) -> tuple[list[float], list[float], str] | None:
    """A windowed, directly measurable quantity the scenario's incident moves (read from the logs)."""
    import orjson
    inf = Path(out_dir) / "inference.jsonl"
    lab = Path(out_dir) / "labels.jsonl"
    if not inf.exists():
        return None
    events = []
    for line in inf.read_bytes().splitlines():
        try:
            events.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            events.append(None)
    if scenario == "label_flip" or scenario == "concept_drift":
        preds = {e["event_id"]: e["prediction"] for e in events if isinstance(e, dict)}
        rows = [orjson.loads(x) for x in lab.read_bytes().splitlines()]
        meta = json.loads((Path(out_dir) / "meta.json").read_text())
        rows = [r for r in rows if r["event_id"] in preds and r["ts"] <= meta["last_ts"] + PLOT_TAIL_S]
        if scenario == "label_flip":
            rows = [r for r in rows if r["source"] == "vendor-b"]
            label = "vendor-b disagreement with the model"
        else:
            label = "labelled error rate"
        return _windows([r["ts"] for r in rows], [float(r["label"] != preds[r["event_id"]]) for r in rows], label)
    ok = [e for e in events if isinstance(e, dict) and isinstance(e.get("features"), dict)]
    ts = [e["ts"] for e in ok if isinstance(e.get("ts"), float)]
    ok = [e for e in ok if isinstance(e.get("ts"), float)]
    if scenario == "backdoor_canary":
        sel = [e for e in ok if e["deployment"] == "canary"]
        return _windows([e["ts"] for e in sel], [float(e["prediction"] == "nsfw") for e in sel], "canary nsfw rate")
    if scenario == "garbage":
        def bad(e: dict) -> float:
            return float(any(v is None or isinstance(v, (list, dict)) or v != v or v in ("", "n/a")
                             or (isinstance(v, float) and abs(v) > 1e8) for v in e["features"].values()))
        return _windows(ts, [bad(e) for e in ok], "share of events with invalid features")
    if scenario == "rogue_version":
        return _windows(ts, [float(e["model_version"] not in ("v1", "v2", "v3")) for e in ok], "unlisted version share")
    if scenario == "registry_swap":
        meta = json.loads((Path(out_dir) / "meta.json").read_text())
        sel = [e for e in ok if e["deployment"] == "canary"]
        return _windows([e["ts"] for e in sel], [float(e.get("artifact_digest") != meta["registered_digest"])
                                                for e in sel], "canary events with an unregistered digest")
    vals = [e["features"].get("brightness") for e in ok]
    return _windows(ts, [v if isinstance(v, float) else float("nan") for v in vals], "mean brightness")


def _windows(ts: list[float], values: list[float], label: str, n: int = 120) -> tuple[list[float], list[float], str]:
    if not ts:
        return [], [], label
    lo, hi = min(ts), max(ts)
    width = (hi - lo) / n or 1.0
    sums = [0.0] * (n + 1)
    counts = [0] * (n + 1)
    for t, v in zip(ts, values):
        if v == v:
            k = int((t - lo) / width)
            sums[k] += v
            counts[k] += 1
    xs = [lo + (k + 0.5) * width for k in range(n + 1) if counts[k]]
    ys = [sums[k] / counts[k] for k in range(n + 1) if counts[k]]
    return xs, ys, label


# -- command line -------------------------------------------------------------------------------
def _budget(text: str) -> float:
    """A false-alarm budget as ``monitor.calibration.false_alarms_per_million`` accepts it."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value <= 10_000:
        raise argparse.ArgumentTypeError("must be in (0, 10000] false alarms per million events")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``driftline drill``."""
    parser.add_argument("scenario", help="scenario name, or 'all'")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--events", type=int, default=None, help="inference events (default per scenario)")
    parser.add_argument("--injection", type=int, default=None, help="event index where the incident starts")
    parser.add_argument("--out", default="drill-out", help="directory for logs, alerts, results and PNG reports")
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG report")
    parser.add_argument("--false-alarms-per-million", type=_budget, default=None, metavar="F",
                        help="calibration budget instead of the default (monitor.calibration.false_alarms_per_million)")
    parser.add_argument("--kafka", metavar="BOOTSTRAP", default=None,
                        help="run through a live worker on this loopback broker instead of replay")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="loopback Redis URL (with --kafka)")
    parser.add_argument("--rate", type=float, default=20_000.0, help="messages produced per second (with --kafka)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the worker (with --kafka)")
    parser.add_argument("--produce-only", action="store_true",
                        help="with --kafka and --config: only produce the scenario's traffic to the config's "
                             "inference and label topics, for a worker that is already running")
    parser.add_argument("--config", default=None, help="driftline config whose topics --produce-only writes to")


def run(args: argparse.Namespace) -> int:
    """Execute ``driftline drill``; exit 0 when every scenario passes, 1 otherwise."""
    drills = _drills()
    names = sorted(drills.SCENARIOS) if args.scenario == "all" else [args.scenario]
    unknown = [n for n in names if n not in drills.SCENARIOS]
    if unknown:
        print(f"driftline drill: unknown scenario {unknown[0]!r}; known: {', '.join(sorted(drills.SCENARIOS))}",
              file=sys.stderr)
        return 2
    if args.produce_only:
        return _produce_only(drills, names, args)
    results = []
    for name in names:
        out = Path(args.out) / name
        if args.kafka:
            res = run_kafka_drill(name, args.kafka, args.redis, seed=args.seed, n_events=args.events,
                                  injection=args.injection, rate=args.rate, timeout=args.timeout, out_dir=out,
                                  false_alarms_per_million=args.false_alarms_per_million)
        else:
            res = run_drill(name, seed=args.seed, n_events=args.events, injection=args.injection, out_dir=out,
                            false_alarms_per_million=args.false_alarms_per_million)
        (out / "result.json").write_text(json.dumps(res.to_dict(), indent=2, default=str))
        if not args.no_plot:
            plot(res, observable(name, out), out / "report.png")
        results.append(res)
    print(table(results))
    return 0 if all(r.passed for r in results) else 1


def _produce_only(drills, names: list[str], args: argparse.Namespace) -> int:
    """Play scenarios into a running deployment's topics (the docker-compose ``drill`` service)."""
    from stream.config import ConfigError, load_config

    if not args.kafka or not args.config:
        print("driftline drill: --produce-only needs --kafka and --config", file=sys.stderr)
        return 2
    try:
        config = load_config(args.config)
    except ConfigError as err:
        print(f"driftline drill: {err}", file=sys.stderr)
        return 2
    inference, labels = config.kafka.inference_topics[0].name, config.kafka.label_topics[0].name
    for name in names:
        drill = drills.make_drill(name, n_events=args.events, injection=args.injection, seed=args.seed)
        try:
            sent = drills.produce(args.kafka, drill, inference, labels, rate=args.rate)
        except ValueError as err:
            print(f"driftline drill: {err}", file=sys.stderr)
            return 2
        print(f"{name}: produced {sent} messages to {inference} and {labels} "
              f"(incident from event {drill.meta['injection_index']})")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point (``python -m stream.drill SCENARIO``)."""
    parser = argparse.ArgumentParser(prog="driftline drill", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
