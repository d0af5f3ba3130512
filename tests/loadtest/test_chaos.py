"""The short chaos run: every fault kind once under traffic, then the exactly-once verdict."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


def test_every_fault_kind_once_loses_and_duplicates_nothing(tmp_path):
    """A private stack (ports 24000-24999), 2 workers, one fault of each kind, Redis losing 1 s of AOF."""
    cmd = [sys.executable, str(ROOT / "loadtest" / "chaos.py"), "--workers", "2", "--cycles", "5", "--rate", "800",
           "--duration", "28", "--seed", "11", "--ports", "24000", "--redis-loss", "1.0", "--drain-timeout", "90",
           "--dir", str(tmp_path)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    lines = out.stdout.strip().splitlines()
    assert lines, f"chaos.py printed no report (exit {out.returncode}):\n{out.stderr[-4000:]}"
    report = json.loads(lines[-1])
    logs = "\n".join(f"--- {p.name}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-10:])
                     for p in sorted((tmp_path / "workers").glob("*.log")))
    context = json.dumps({k: report.get(k) for k in ("violations", "faults", "worker_exits", "messages")})[:4000] + logs[-4000:]
    injected = report["faults"]["by_kind"]
    assert set(injected) == {"worker_kill", "redis_kill", "broker_kill", "worker_add", "worker_remove"}, context
    assert report["faults"]["survived"] == report["faults"]["injected"] == 5, context
    messages = report["messages"]
    assert messages["lost"] == 0 and messages["duplicated"] == 0, context
    assert messages["extra"] == 0 and messages["mismatched"] == 0, context
    assert messages["expected"] > 0 and messages["expected"] == messages["observed"], context
    assert report["states_equal"] and report["states"]["models"] == 4, context
    assert report["routing"]["lost"] == 0 and report["routing"]["duplicated"] == 0, context
    assert report["ok"] and out.returncode == 0, context
