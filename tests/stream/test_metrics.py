"""Metrics: dedicated registry, bounded labels, and the loopback /metrics, /healthz, /readyz server."""
import threading
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from stream.config import MetricsSpec
from stream.metrics import OTHER, LabelBound, ScrapeRequests, WorkerMetrics, metric_names, serve_metrics


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@pytest.fixture
def served():
    metrics = WorkerMetrics(MetricsSpec(port=0, max_label_values=3))
    server = serve_metrics(MetricsSpec(port=0), metrics)
    yield metrics, server
    server.shutdown()


def samples(body: bytes) -> dict[tuple[str, tuple], float]:
    out = {}
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_server_binds_loopback_and_serves_health_and_readiness(served):
    metrics, server = served
    assert server.url.startswith("http://127.0.0.1:")
    assert get(server.url + "/healthz") == (200, b"ok\n")
    assert get(server.url + "/readyz")[0] == 503
    metrics.set_ready(True)
    assert get(server.url + "/readyz") == (200, b"ready\n")
    metrics.set_ready(False)
    assert get(server.url + "/readyz")[0] == 503
    assert get(server.url + "/nope")[0] == 404


def test_scrape_shows_worker_activity(served):
    metrics, server = served
    metrics.processed("filter", "i", 120)
    metrics.processed("filter", "l", 7)
    metrics.dead_letter("malformed_json")
    metrics.late_label("unknown_or_expired")
    metrics.unknown_model("ghost")
    metrics.consumer_lag("preds", 3, 42)
    metrics.observe_batch(0.02)
    metrics.observe_checkpoint(0.003)
    metrics.control_message({"kind": "alert", "model": "filter", "version": "v1", "deployment": "stable",
                             "signal": "numeric_drift", "detector": "psi", "key": "x", "severity": "ticket",
                             "statistic": 0.4, "threshold": 0.2})
    metrics.control_message({"kind": "rollback", "model": "filter"})
    metrics.control_message({"kind": "alert", "model": "filter", "version": "v1", "deployment": "stable",
                             "signal": "trigger", "detector": "rate", "key": "t", "severity": "page",
                             "statistic": "inf", "threshold": 4.0})
    status, body = get(server.url + "/metrics")
    assert status == 200
    s = samples(body)
    assert s[("driftline_events_total", (("model", "filter"),))] == 120
    assert s[("driftline_labels_total", (("model", "filter"),))] == 7
    assert s[("driftline_dead_letters_total", (("reason", "malformed_json"),))] == 1
    assert s[("driftline_late_labels_total", (("reason", "unknown_or_expired"),))] == 1
    assert s[("driftline_unknown_models_total", (("model", "ghost"),))] == 1
    assert s[("driftline_consumer_lag", (("partition", "3"), ("topic", "preds")))] == 42
    assert s[("driftline_batch_duration_seconds_count", ())] == 1
    assert s[("driftline_checkpoint_duration_seconds_count", ())] == 1
    assert s[("driftline_rollbacks_total", (("model", "filter"),))] == 1
    assert s[("driftline_alerts_total", (("kind", "rollback"), ("model", "filter"), ("severity", "page")))] == 1
    assert s[("driftline_alerts_total", (("kind", "alert"), ("model", "filter"), ("severity", "ticket")))] == 1
    drift = (("deployment", "stable"), ("detector", "psi"), ("key", "x"), ("model", "filter"),
             ("signal", "numeric_drift"), ("version", "v1"))
    assert s[("driftline_drift_statistic", drift)] == 0.4
    assert s[("driftline_drift_threshold", drift)] == 0.2
    assert s[("driftline_drift_statistic", (("deployment", "stable"), ("detector", "rate"), ("key", "t"),
                                            ("model", "filter"), ("signal", "trigger"), ("version", "v1")))] \
        == float("inf")


def test_label_values_beyond_the_bound_collapse_to_other(served):
    metrics, server = served
    for i in range(10):
        metrics.unknown_model(f"attacker-{i}")
    s = samples(get(server.url + "/metrics")[1])
    models = {dict(k[1])["model"] for k in s if k[0] == "driftline_unknown_models_total"}
    assert models == {"attacker-0", "attacker-1", "attacker-2", OTHER}
    assert s[("driftline_unknown_models_total", (("model", OTHER),))] == 7


def test_label_bound_is_per_label_name():
    b = LabelBound(1)
    assert (b("model", "a"), b("model", "b"), b("reason", "b"), b("model", "a")) == ("a", OTHER, "b", "a")


def test_model_stats_export():
    m = WorkerMetrics(max_label_values=50)
    stats = {"detections": {"numeric_drift": 3, "trigger": 1}, "alerts": {"open": 2},
             "streams": {"v1/stable": {"armed": True, "numeric": {"x0": {"cusum_statistic": 1.5,
                                                                        "cusum_threshold": 9.0}}},
                         "v2/canary": {"armed": False}}}
    m.export_model_stats("filter", stats)
    m.export_model_stats("filter", dict(stats, detections={"numeric_drift": 5, "trigger": 1}))
    total = dict(model="filter", version="", deployment="")
    assert m.value("driftline_detections_total", signal="numeric_drift", **total) == 5
    assert m.value("driftline_detections_total", signal="trigger", **total) == 1
    per_stream = dict(stats, detections_by_stream={"v2/canary": {"trigger": 2}, "v1/stable": {"trigger": 1}})
    m2 = WorkerMetrics()
    m2.export_model_stats("filter", per_stream)
    per_stream["detections_by_stream"]["v2/canary"]["trigger"] = 6
    m2.export_model_stats("filter", per_stream)
    assert m2.value("driftline_detections_total", model="filter", version="v2", deployment="canary",
                    signal="trigger") == 6
    assert m2.value("driftline_detections_total", model="filter", version="v1", deployment="stable",
                    signal="trigger") == 1
    assert m.value("driftline_open_alerts", model="filter") == 2
    assert m.value("driftline_reference_ready", model="filter", version="v1", deployment="stable") == 1
    assert m.value("driftline_reference_ready", model="filter", version="v2", deployment="canary") == 0
    ph = dict(model="filter", version="v1", deployment="stable", signal="numeric_drift", detector="cusum",
              key="x0")
    assert m.value("driftline_drift_statistic", **ph) == 1.5
    assert m.value("driftline_drift_threshold", **ph) == 9.0


def test_real_monitor_stats_export():
    from detectors.engine import ModelMonitor
    from detectors.simulate import demo_model, make_events
    from detectors.spec import AlertPolicySpec, CalibrationSpec

    spec = demo_model(n_numeric=2, n_categorical=1, reference_size=200)
    mon = ModelMonitor(spec, CalibrationSpec(window=200, block_size=16), AlertPolicySpec())
    mon.process_inference(make_events(spec, 800, seed=1))
    m = WorkerMetrics()
    m.export_model_stats("filter", mon.stats)
    assert m.value("driftline_reference_ready", model="filter", version="v1", deployment="stable") == 1
    assert m.value("driftline_drift_threshold", model="filter", version="v1", deployment="stable",
                   signal="numeric_drift", detector="cusum", key="x0") > 0


def test_dedicated_registry_and_independent_instances():
    a, b = WorkerMetrics(), WorkerMetrics()
    a.processed("m", "i", 1)
    assert b.value("driftline_events_total", model="m") is None
    assert REGISTRY.get_sample_value("driftline_events_total", {"model": "m"}) is None


def test_metric_names_cover_the_documented_set():
    names = metric_names(WorkerMetrics().registry)
    for n in ("driftline_events_total", "driftline_labels_total", "driftline_dead_letters_total",
              "driftline_late_labels_total", "driftline_detections_total", "driftline_alerts_total",
              "driftline_rollbacks_total", "driftline_drift_statistic", "driftline_drift_threshold",
              "driftline_consumer_lag", "driftline_batch_duration_seconds_bucket",
              "driftline_checkpoint_duration_seconds_bucket", "driftline_unknown_models_total", "driftline_ready"):
        assert n in names


def test_disabled_metrics_serve_nothing():
    server = serve_metrics(MetricsSpec(enabled=False), WorkerMetrics())
    assert server.port == 0
    server.shutdown()


def test_lone_surrogate_label_values_do_not_break_the_scrape() -> None:
    m = WorkerMetrics(max_label_values=8)
    m.unknown_model("bad\ud800name")
    m.dead_letter("reason\udfff")
    text = m.render().decode("utf-8")
    assert {f.name for f in text_string_to_metric_families(text)} >= {"driftline_unknown_models", "driftline_dead_letters"}
    assert m.value("driftline_unknown_models_total", model="bad\\ud800name") == 1.0


def test_rollback_counter_is_exported_at_zero_once_a_model_is_seen():
    m = WorkerMetrics()
    assert m.value("driftline_rollbacks_total", model="filter") is None
    m.export_model_stats("filter", {})
    assert m.value("driftline_rollbacks_total", model="filter") == 0.0  # increase() then sees the first rollback
    m.control_message({"kind": "rollback", "model": "filter"})
    assert m.value("driftline_rollbacks_total", model="filter") == 1.0


def test_drift_gauges_follow_each_export_and_keep_label_bounds():
    """Reused gauge children still get every new value, beyond-bound keys still collapse to other,
    and keys that are equal but of other types (1, 1.0, True) keep labels of their own."""
    m = WorkerMetrics(max_label_values=2)

    def stats(scale: float) -> dict:
        numeric = {k: {"cusum_statistic": scale * (i + 1), "cusum_threshold": 10.0 + i}
                   for i, k in enumerate(["a", "b", "c"])}
        return {"streams": {"v1/stable": {"armed": True, "numeric": numeric}}}

    for scale in (1.0, 2.0, 3.0):
        m.export_model_stats("mod", stats(scale))
        labels = dict(model="mod", version="v1", deployment="stable", signal="numeric_drift", detector="cusum")
        assert m.value("driftline_drift_statistic", key="a", **labels) == scale
        assert m.value("driftline_drift_statistic", key="b", **labels) == 2 * scale
        assert m.value("driftline_drift_statistic", key=OTHER, **labels) == 3 * scale  # "c" is past the bound
        assert m.value("driftline_drift_threshold", key="b", **labels) == 11.0
    m2 = WorkerMetrics()
    for i, key in enumerate([1, 1.0, True]):
        m2.control_message({"kind": "alert", "model": "mod", "version": "v1", "deployment": "stable",
                            "signal": "s", "detector": "d", "key": key, "statistic": float(i), "threshold": 1.0})
    values = {k: m2.value("driftline_drift_statistic", model="mod", version="v1", deployment="stable", signal="s",
                          detector="d", key=k) for k in ("1", "1.0", "True")}
    assert values == {"1": 0.0, "1.0": 1.0, "True": 2.0}


def _answer_when_asked(requests: ScrapeRequests, export, stop: threading.Event) -> threading.Thread:
    """A stand-in batch loop: between its 'batches' it runs ``export`` for the newest waiting scrape."""
    def loop() -> None:
        while not stop.is_set():
            ticket = requests.waiting()
            if ticket:
                export()
                requests.answer(ticket)
            time.sleep(0.005)
    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    return thread


def test_a_scrape_is_served_what_the_batch_loop_exported_for_it(served):
    metrics, server = served
    metrics.scrapes = ScrapeRequests(wait_seconds=5.0)
    exports = []

    def export() -> None:
        exports.append(1)
        metrics.export_model_stats("m", {"detections_by_stream": {}, "streams": {"v1/stable": {"armed": True}}})

    stop = threading.Event()
    thread = _answer_when_asked(metrics.scrapes, export, stop)
    try:
        assert metrics.value("driftline_reference_ready", model="m", version="v1", deployment="stable") is None
        status, body = get(server.url + "/metrics")
        assert status == 200 and len(exports) == 1, "the scrape waited for one export"
        assert samples(body)[("driftline_reference_ready", (("deployment", "stable"), ("model", "m"),
                                                            ("version", "v1")))] == 1.0
        get(server.url + "/metrics")
        assert len(exports) == 2, "every scrape gets its own export"
    finally:
        stop.set()
        thread.join(5)


def test_a_scrape_nobody_answers_is_served_after_the_wait():
    requests = ScrapeRequests(wait_seconds=0.2)
    metrics = WorkerMetrics()
    metrics.scrapes = requests
    started = time.monotonic()
    body = metrics.render()
    assert 0.2 <= time.monotonic() - started < 5 and b"driftline_events" in body
    assert requests.waiting() == 1, "the unanswered ticket still waits: the loop exports for it later"
    requests.answer(1)
    assert requests.waiting() == 0


def test_an_answer_releases_the_scrapes_that_asked_before_it_only():
    requests = ScrapeRequests(wait_seconds=10.0)
    results: dict[int, bool] = {}
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, requests.ask())) for i in range(2)]
    threads[0].start()
    while requests.waiting() < 1:
        time.sleep(0.001)
    ticket = requests.waiting()
    threads[1].start()  # asks after the export for ``ticket`` began: needs the next one
    while requests.waiting() < 2:
        time.sleep(0.001)
    requests.answer(ticket)
    threads[0].join(5)
    assert results == {0: True} and threads[1].is_alive()
    assert requests.waiting() == 2
    requests.answer(requests.waiting())
    threads[1].join(5)
    assert results == {0: True, 1: True} and requests.waiting() == 0


def test_docstring_examples():
    import doctest

    import stream.metrics

    assert doctest.testmod(stream.metrics).failed == 0
