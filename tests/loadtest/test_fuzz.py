"""The atheris harnesses run: every parser, 2,000 inputs each, in their own processes, with no finding."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from loadtest.fuzz import HARNESSES

ROOT = Path(__file__).resolve().parents[2]


def test_every_harness_runs_clean(tmp_path: Path) -> None:
    out = tmp_path / "fuzz.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "loadtest" / "fuzz.py"), "--runs", "2000", "--jobs", "2", "--seed", "1",
         "--work", str(tmp_path / "work"), "--out", str(out)],
        capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    by_name = {h["parser"]: h for h in report["harnesses"]}
    assert set(by_name) == set(HARNESSES)
    for name, h in by_name.items():
        assert h["findings"] == [], (name, h["findings"])
        assert h["executions"] == 2000, (name, h)
        # each harness reaches both outcomes its parser has: accepted inputs, and (but for control,
        # whose every input gets a verdict) documented refusals
        assert h["accepted"] > 0, (name, h)
        assert h["rejected"] > 0 or name == "control", (name, h)
        assert h["corpus_size"] > 0
    assert report["total_executions"] == 2000 * len(HARNESSES)


def test_a_finding_is_reported(tmp_path: Path) -> None:
    """A harness whose parser raises an undocumented error reports it (type, place, saved input)."""
    script = tmp_path / "run_broken.py"
    script.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "from loadtest import fuzz\n"
        "def setup():\n"
        "    def one(data):\n"
        "        if data[:1] == b'{':\n"
        "            raise KeyError('boom')\n"
        "    return one, (ValueError,)\n"
        "fuzz.HARNESSES['broken'] = fuzz.Harness(setup, lambda: [b'{}', b'x'])\n"
        "sys.exit(fuzz.main(sys.argv[1:]))\n")
    proc = subprocess.run([sys.executable, str(script), "--parsers", "broken", "--runs", "300", "--seed", "1",
                           "--work", str(tmp_path / "w")], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    (h,) = report["harnesses"]
    assert h["executions"] == 300
    (finding,) = h["findings"]
    assert finding["type"] == "KeyError" and finding["count"] >= 1
    assert Path(finding["input"]).read_bytes()[:1] == b"{"
