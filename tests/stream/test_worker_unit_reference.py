"""The worker's model loading: a reference file broken after start-up does not stop the worker."""
from __future__ import annotations

from stream.config import parse_config
from stream.worker import Worker


def test_an_unreadable_reference_file_falls_back_to_learning(tmp_path, monkeypatch):
    monkeypatch.setenv("K", "k" * 32)
    ref = tmp_path / "ref.json"
    ref.write_text('{"schema": NaN, broken')
    cfg = parse_config({"kafka": {"bootstrap_servers": "127.0.0.1:1", "inference_topics": [{"name": "t"}]},
                        "signing": {"key_env": "K"},
                        "metrics": {"enabled": False},
                        "monitor": {"models": [{"name": "m", "classes": ["a", "b"], "versions": ["v1"],
                                                "reference_file": str(ref)}]}})
    worker = Worker(cfg)
    monitor = worker._new_monitor("m", None)
    assert monitor.reference is None
    assert worker.metrics.value("driftline_state_rebuilds_total", model="m", reason="reference_unreadable") == 1.0
