"""Run every drill scenario and write one results JSON (time to detection, false alarms, rollbacks).

Each scenario runs in its own ``python -m stream.drill`` process (``--jobs`` at a time); the
per-scenario results are gathered into one file and a table is printed.

    python loadtest/scoreboard.py --out drill-results --json drill-results/scoreboard.json --jobs 4
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from loadtest.drills import SCENARIOS  # noqa: E402


def run_one(scenario: str, out: Path, seed: int, plot: bool) -> dict[str, Any]:
    """One scenario in a child process; its ``result.json`` (plus wall time)."""
    cmd = [sys.executable, "-m", "stream.drill", scenario, "--seed", str(seed), "--out", str(out)]
    if not plot:
        cmd.append("--no-plot")
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    path = out / scenario / "result.json"
    if not path.exists():
        return {"scenario": scenario, "passed": False, "error": proc.stderr[-2000:]}
    res = json.loads(path.read_text())
    res["wall_seconds"] = round(time.perf_counter() - started, 2)
    return res


def scoreboard(out: Path, seed: int = 0, jobs: int = 2, plot: bool = True,
               scenarios: list[str] | None = None) -> dict[str, Any]:
    """Run the scenarios and summarize them."""
    names = scenarios or sorted(SCENARIOS)
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        results = list(pool.map(lambda s: run_one(s, out, seed, plot), names))
    summary = {
        "passed": [r["scenario"] for r in results if r.get("passed")],
        "failed": [r["scenario"] for r in results if not r.get("passed")],
        "detected": [r["scenario"] for r in results if r.get("detected")],
        "false_alarms": {r["scenario"]: r.get("false_alarms") for r in results},
        "wrong_rollback_call": [r["scenario"] for r in results
                                if r.get("rollback_fired") != r.get("rollback_expected")],
    }
    slim = {r["scenario"]: {k: v for k, v in r.items() if k not in ("meta",)} for r in results}
    return {"seed": seed, "summary": summary, "scenarios": slim}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="drill-results", help="directory for per-scenario logs and reports")
    p.add_argument("--json", default=None, help="results file (default OUT/scoreboard.json)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--scenario", action="append", help="run only these (repeatable)")
    args = p.parse_args(argv)
    out = Path(args.out)
    board = scoreboard(out, args.seed, args.jobs, not args.no_plot, args.scenario)
    target = Path(args.json) if args.json else out / "scoreboard.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(board, indent=2, default=str))
    for name, r in board["scenarios"].items():
        det = r.get("detection") or {}
        print(f"{name:16} {'PASS' if r.get('passed') else 'FAIL'}  events={r.get('events_to_detection')}  "
              f"seconds={r.get('seconds_to_detection')}  by={det.get('signal')}/{det.get('detector')}  "
              f"false_alarms={r.get('false_alarms')}  rollback={r.get('rollback_fired')}"
              f"/{r.get('rollback_expected')}")
    print(json.dumps(board["summary"]))
    return 0 if not board["summary"]["failed"] else 1


if __name__ == "__main__":
    sys.exit(main())
