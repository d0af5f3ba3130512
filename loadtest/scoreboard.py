"""Run every drill scenario and write one results JSON (time to detection, false alarms, rollbacks),
side by side with the hand-wired anchor (river ``ADWIN()`` and ``PageHinkley()`` defaults, see
:mod:`loadtest.anchor`) on the same logs.

Each (scenario, seed) runs in its own ``python -m stream.drill`` process, then the anchor in its own
process on the logs the drill wrote (``--jobs`` at a time). With several ``--seeds`` the table shows
medians over seeds. The delay ratio is driftline's seconds to detection over ADWIN's.

    python loadtest/scoreboard.py --out drill-results --json drill-results/scoreboard.json --jobs 2 --seeds 0 1 2

``--false-alarms-per-million F`` runs driftline at another calibration budget than the default
(the anchor is unchanged): detection delays at a budget still below ADWIN's measured false-alarm
rate show what the default budget's quiet costs.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from detectors.spec import CalibrationSpec  # noqa: E402
from loadtest.drills import SCENARIOS  # noqa: E402


def run_one(scenario: str, out: Path, seed: int, plot: bool, anchor: bool = True,
            false_alarms_per_million: float | None = None) -> dict[str, Any]:
    """One scenario in a child process; its ``result.json`` (plus wall time and the anchor's result)."""
    cmd = [sys.executable, "-m", "stream.drill", scenario, "--seed", str(seed), "--out", str(out)]
    if false_alarms_per_million is not None:
        cmd += ["--false-alarms-per-million", repr(false_alarms_per_million)]
    if not plot:
        cmd.append("--no-plot")
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    path = out / scenario / "result.json"
    if not path.exists():
        return {"scenario": scenario, "passed": False, "error": proc.stderr[-2000:]}
    res = json.loads(path.read_text())
    res["wall_seconds"] = round(time.perf_counter() - started, 2)
    if anchor:
        a = subprocess.run([sys.executable, str(ROOT / "loadtest" / "anchor.py"), str(out / scenario)], cwd=ROOT,
                           capture_output=True, text=True)
        apath = out / scenario / "anchor.json"
        res["anchor"] = json.loads(apath.read_text()) if apath.exists() else {"error": a.stderr[-2000:]}
    return res


def _median(xs: list[float | None]) -> float | None:
    got = [x for x in xs if x is not None]
    return round(statistics.median(got), 3) if got and len(got) * 2 > len(xs) else None


def side_by_side(runs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Per scenario, medians over seeds of driftline's and the anchor's delays, and false alarms."""
    rows: dict[str, dict[str, Any]] = {}
    for name, rs in runs.items():
        row: dict[str, Any] = {"seeds": len(rs),
                               "driftline": {"events": _median([r.get("events_to_detection") for r in rs]),
                                             "seconds": _median([r.get("seconds_to_detection") for r in rs]),
                                             "by": sorted({f"{r['detection']['signal']}/{r['detection']['detector']}"
                                                           for r in rs if r.get("detection")}),
                                             "false_alarms": sum(r.get("false_alarms") or 0 for r in rs),
                                             "passed": sum(bool(r.get("passed")) for r in rs)}}
        for kind in ("adwin", "page_hinkley"):
            ks = [(r.get("anchor") or {}).get(kind) or {} for r in rs]
            row[kind] = {"events": _median([k.get("events_to_detection") for k in ks]),
                         "seconds": _median([k.get("seconds_to_detection") for k in ks]),
                         "false_alarms": sum(k.get("false_alarms") or 0 for k in ks),
                         "false_alarms_per_million_events": _median([k.get("false_alarms_per_million_events")
                                                                     for k in ks])}
        d, a = row["driftline"]["seconds"], row["adwin"]["seconds"]
        row["ratio_vs_adwin"] = None if d is None or a is None else round(max(d, 0.01) / max(a, 0.01), 2)
        rows[name] = row
    return rows


def table(rows: dict[str, dict[str, Any]]) -> str:
    """Markdown table of :func:`side_by_side`."""
    head = ["scenario", "driftline events", "driftline s", "driftline by", "driftline FA", "ADWIN events",
            "ADWIN s", "ADWIN FA", "PH events", "PH s", "PH FA", "ratio (driftline/ADWIN)"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    f = lambda v: "-" if v is None else str(v)  # noqa: E731
    for name, r in rows.items():
        d, a, p = r["driftline"], r["adwin"], r["page_hinkley"]
        out.append("| " + " | ".join([name, f(d["events"]), f(d["seconds"]), ",".join(d["by"]) or "-",
                                      f(d["false_alarms"]), f(a["events"]), f(a["seconds"]), f(a["false_alarms"]),
                                      f(p["events"]), f(p["seconds"]), f(p["false_alarms"]),
                                      f(r["ratio_vs_adwin"])]) + " |")
    return "\n".join(out)


def signal_delays(out: Path, scenarios: list[str], seeds: list[int]) -> dict[str, dict[str, Any]]:
    """Per scenario and intended signal, the first alert of that signal after the injection (events
    after it, median over seeds; ``None`` unless most seeds alerted) and the detectors that raised it,
    read from each run's ``alerts.jsonl``: how fast every intended signal speaks, not only the first."""
    rows: dict[str, dict[str, Any]] = {}
    for name in scenarios:
        per: dict[str, list[tuple[int | None, str | None]]] = {}
        for sd in seeds:
            d = out / f"seed-{sd}" / name
            if not (d / "meta.json").exists():
                continue
            meta = json.loads((d / "meta.json").read_text())
            inj = meta.get("injection_index")
            first: dict[str, tuple[int, str]] = {}
            alerts = (d / "alerts.jsonl").read_text().splitlines() if (d / "alerts.jsonl").exists() else []
            for line in alerts:
                a = json.loads(line)
                if inj is None or a.get("kind") != "alert" or a.get("replay", {}).get("stream") != "inference":
                    continue
                pos = a["replay"]["line"] - inj
                if pos >= 0 and (a["signal"] not in first or pos < first[a["signal"]][0]):
                    first[a["signal"]] = (pos, a["detector"])
            for sig in meta.get("intended_signals", []):
                per.setdefault(sig, []).append(first.get(sig, (None, None)))
        rows[name] = {sig: {"events": _median([e for e, _ in v]), "by": sorted({b for _, b in v if b})}
                      for sig, v in per.items()}
    return rows


def signal_table(rows: dict[str, dict[str, Any]]) -> str:
    """Markdown table of :func:`signal_delays`."""
    out = ["| scenario | signal | events (median) | by |", "|---|---|---|---|"]
    for name, sigs in rows.items():
        for sig, r in sigs.items():
            events = "-" if r["events"] is None else r["events"]
            out.append(f"| {name} | {sig} | {events} | {','.join(r['by']) or '-'} |")
    return "\n".join(out)


def scoreboard(out: Path, seed: int = 0, jobs: int = 2, plot: bool = True,
               scenarios: list[str] | None = None, seeds: list[int] | None = None,
               false_alarms_per_million: float | None = None) -> dict[str, Any]:
    """Run the scenarios (for each seed) and summarize them, side by side with the anchor; driftline at
    ``false_alarms_per_million`` when given, else at the default calibration."""
    names = scenarios or sorted(SCENARIOS)
    seeds = seeds or [seed]
    jobs_l = [(s, sd) for sd in seeds for s in names]
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        all_results = list(pool.map(lambda j: run_one(j[0], out / f"seed-{j[1]}", j[1], plot,
                                                      false_alarms_per_million=false_alarms_per_million), jobs_l))
    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in names}
    for (s, _), r in zip(jobs_l, all_results):
        runs[s].append(r)
    results = [r for r, (_, sd) in zip(all_results, jobs_l) if sd == seeds[0]]
    summary = {
        "passed": [r["scenario"] for r in results if r.get("passed")],
        "failed": [r["scenario"] for r in results if not r.get("passed")],
        "detected": [r["scenario"] for r in results if r.get("detected")],
        "false_alarms": {r["scenario"]: r.get("false_alarms") for r in results},
        "wrong_rollback_call": [r["scenario"] for r in results
                                if r.get("rollback_fired") != r.get("rollback_expected")],
    }
    slim = {r["scenario"]: {k: v for k, v in r.items() if k not in ("meta",)} for r in results}
    rows = side_by_side(runs)
    ratios = [r["ratio_vs_adwin"] for r in rows.values() if r["ratio_vs_adwin"] is not None]
    summary["median_ratio_vs_adwin"] = round(statistics.median(ratios), 2) if ratios else None
    summary["max_ratio_vs_adwin"] = max(ratios) if ratios else None
    budget = false_alarms_per_million if false_alarms_per_million is not None else \
        CalibrationSpec().false_alarms_per_million
    return {"seed": seeds[0], "seeds": seeds, "false_alarms_per_million": budget, "summary": summary,
            "side_by_side": rows, "by_signal": signal_delays(out, names, seeds), "scenarios": slim}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="drill-results", help="directory for per-scenario logs and reports")
    p.add_argument("--json", default=None, help="results file (default OUT/scoreboard.json)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", type=int, nargs="*", default=None, help="several seeds (medians in the table)")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--scenario", action="append", help="run only these (repeatable)")
    p.add_argument("--false-alarms-per-million", type=float, default=None, metavar="F",
                   help="driftline's calibration budget (default: the default calibration)")
    args = p.parse_args(argv)
    out = Path(args.out)
    board = scoreboard(out, args.seed, args.jobs, not args.no_plot, args.scenario, args.seeds,
                       args.false_alarms_per_million)
    target = Path(args.json) if args.json else out / "scoreboard.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(board, indent=2, default=str))
    for name, r in board["scenarios"].items():
        det = r.get("detection") or {}
        print(f"{name:16} {'PASS' if r.get('passed') else 'FAIL'}  events={r.get('events_to_detection')}  "
              f"seconds={r.get('seconds_to_detection')}  by={det.get('signal')}/{det.get('detector')}  "
              f"false_alarms={r.get('false_alarms')}  rollback={r.get('rollback_fired')}"
              f"/{r.get('rollback_expected')}")
    print(table(board["side_by_side"]))
    print(signal_table(board["by_signal"]))
    print(json.dumps({"false_alarms_per_million": board["false_alarms_per_million"],
                      "side_by_side": board["side_by_side"], "summary": board["summary"]}))
    return 0 if not board["summary"]["failed"] else 1


if __name__ == "__main__":
    sys.exit(main())
