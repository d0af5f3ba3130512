"""Replay throughput (events/s) on a 20-feature drill file, against baselines measured in the same run.

Prints one JSON object with medians over ``--repeats``:

- ``baseline_events_per_s``: the bare loop reading the same file and ``orjson.loads`` per line
  (the ceiling for any JSON-lines reader in Python);
- ``decode_events_per_s``: the same loop through driftline's validating decoder;
- ``replay_events_per_s``: ``run_replay`` (decode, label join, every detector, alert policy),
  with and without the label file, and its ratio to the baseline, as a user gets it: with
  ``decode_processes`` other processes decoding the inference file (by default one per spare
  core, :func:`stream.decode_process.auto_processes`);
- ``replay_in_process_events_per_s``: the same with every line decoded in the replaying process
  (the release before), so the ratio between the two is measured in the same run.

    python loadtest/bench_replay.py --events 200000 --repeats 3
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402

from detectors.spec import MonitorSpec  # noqa: E402
from loadtest.drills import drill_monitor_spec, make_drill, write_drill  # noqa: E402
from stream.decode_process import auto_processes, usable_cores  # noqa: E402
from stream.decoding import JsonDecoder  # noqa: E402
from stream.replay import ReplayConfig, run_replay  # noqa: E402


def _bare(path: Path) -> int:
    n = 0
    with open(path, "rb") as fh:
        for line in fh:
            orjson.loads(line)
            n += 1
    return n


def _decode(path: Path) -> int:
    dec = JsonDecoder().decode_inference
    n = 0
    with open(path, "rb") as fh:
        for line in fh:
            dec(line.rstrip(b"\n"))
            n += 1
    return n


def bench(events: int, repeats: int, batch_size: int, decode_processes: int | None = None) -> dict:
    """Measure the loops ``repeats`` times each, interleaved."""
    drill = make_drill("stationary", n_events=events, seed=11)
    spec = MonitorSpec.model_validate(drill_monitor_spec())
    cfg = ReplayConfig(spec, horizon_seconds=drill.meta["label_horizon_seconds"])
    runs: dict[str, list[float]] = {"baseline": [], "decode": [], "replay": [], "replay_with_labels": [],
                                    "replay_in_process": [], "replay_with_labels_in_process": []}
    with tempfile.TemporaryDirectory(prefix="bench-replay-") as tmp:
        paths = write_drill(drill, tmp)
        inf, lab = paths["inference"], paths["labels"]
        processes = auto_processes(inf, cfg.inference_decoder) if decode_processes is None else decode_processes

        def replay(labels: Path | None, n: int) -> int:
            return run_replay(cfg, inf, labels, None, batch_size=batch_size, decode_processes=n).events

        for _ in range(repeats):
            for name, fn in (("baseline", lambda: _bare(inf)), ("decode", lambda: _decode(inf)),
                             ("replay", lambda: replay(None, processes)),
                             ("replay_in_process", lambda: replay(None, 0)),
                             ("replay_with_labels", lambda: replay(lab, processes)),
                             ("replay_with_labels_in_process", lambda: replay(lab, 0))):
                t = time.perf_counter()
                n = fn()
                runs[name].append(n / (time.perf_counter() - t))
    med = {k: statistics.median(v) for k, v in runs.items()}
    return {
        "events": events, "labels": len(drill.labels), "features": 20, "repeats": repeats, "batch_size": batch_size,
        "decode_processes": processes, "cores": usable_cores(),
        "baseline": "read lines + orjson.loads", "baseline_events_per_s": round(med["baseline"]),
        "decode_events_per_s": round(med["decode"]),
        "replay_events_per_s": round(med["replay"]),
        "replay_with_labels_events_per_s": round(med["replay_with_labels"]),
        "replay_in_process_events_per_s": round(med["replay_in_process"]),
        "replay_with_labels_in_process_events_per_s": round(med["replay_with_labels_in_process"]),
        "ratio_replay_to_baseline": round(med["replay"] / med["baseline"], 4),
        "ratio_replay_with_labels_to_baseline": round(med["replay_with_labels"] / med["baseline"], 4),
        "ratio_decode_to_baseline": round(med["decode"] / med["baseline"], 4),
        "ratio_replay_to_in_process": round(med["replay"] / med["replay_in_process"], 4),
        "ratio_replay_with_labels_to_in_process": round(med["replay_with_labels"]
                                                        / med["replay_with_labels_in_process"], 4),
        "runs": {k: [round(x) for x in v] for k, v in runs.items()},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=100_000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--decode-processes", type=int, default=None,
                   help="decoding processes of the replay rows (default: what driftline replay chooses)")
    args = p.parse_args(argv)
    print(json.dumps(bench(args.events, args.repeats, args.batch_size, args.decode_processes), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
