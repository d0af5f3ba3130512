"""Hostile load, scaled down, against the shared stack: 20,000 distinct models, versions, categories,
event ids and label sources, 100 messages of each kind of bad input on both topic kinds, and a
flood of 2,000 oversized, highly compressible messages (500 MB once decompressed).

The worker must survive, dead-letter every bad message exactly once with its reason (and nothing
else), keep /metrics scrapeable with a series count that does not follow the distinct values,
keep its RSS flat within each phase and, under bad input, within the documented bound on the
message bytes it holds (kafka.batch_max_bytes + prefetch_max_bytes + fetch_max_bytes, plus
allocator slack), keep no Redis key per distinct model, version, category or
source, and publish no control message per distinct version.
"""
from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import redis

from loadtest.hostile import run

DISTINCT = 20_000
OVERSIZED = 2000


@pytest.mark.integration
def test_hostile_load(stack, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    try:
        report = run(stack.kafka_bootstrap, stack.redis_url, DISTINCT, 100, tmp_path, pending_ttl=600, interval=1.0,
                     phase_timeout=120, tag=tag, oversized=OVERSIZED)
        failed = {k: v for k, v in report["checks"].items() if not v}
        wrong = {k: v for k, v in report["dead_letters"].items() if not v["ok"]}
        assert not failed and not wrong, (failed, wrong, report["rss_plateau_by_phase"],
                                          Path(report["worker_log"]).read_text()[-3000:])
        assert report["worker_log_tracebacks"] == 0
        # each kind of bad input reached the worker and left with its own reason
        bad = report["dead_letters"]["malformed_inference"]["got"]
        assert len(bad) == 10 and all(sum(v.values()) == 100 for v in bad.values())
        assert report["dead_letters"]["unknown_models"]["got"] == {"*": {"unknown_model": DISTINCT}}
        assert report["dead_letters"]["oversized_flood"]["got"] == {"*": {"oversized": OVERSIZED}}
        # the flood was measured: RSS sampled during it, growth within the bound (checked above)
        assert "oversized_flood" in report["rss_growth_by_bad_phase"]
        assert report["memory_bound_mb"] == 49.0  # 16 + 32 + 1 MiB: the defaults
        series = [s["metrics_series"] for s in report["samples"]]
        assert max(series) < 1000  # 20,000 distinct values of every label-bearing field were sent
        keys = report["redis_keys"]
        valid_events = 3000 + 3 * DISTINCT  # warm-up, versions, categories, event ids: each remembered once
        assert keys.get("@pending_events") == valid_events
        assert keys.get("@pending", 0) <= 20  # bucketed: keys follow time, not events
        assert {k for k in keys if k.startswith("model:")} <= {"model:state", "model:staged"}
        assert keys.get("model:state") == 1  # one configured model: no state per unknown model or version
        assert sum(report["control_messages"].values()) < 200  # no alert per distinct version
    finally:
        r = redis.Redis.from_url(stack.redis_url)
        keys = list(r.scan_iter(match=f"hostile-{tag}:*", count=10_000))
        for i in range(0, len(keys), 5000):
            r.unlink(*keys[i:i + 5000])
        r.close()
