"""The pipeline benchmark's traffic (the feature mix a model declares is the one its events carry) and its scraper."""
import time

import orjson
import pytest

from detectors.spec import MonitorSpec
from loadtest import bench_pipeline


@pytest.fixture
def mix():
    saved = dict(bench_pipeline.MIX)
    yield bench_pipeline.MIX
    bench_pipeline.MIX.update(saved)


def test_mixed_events_carry_the_kinds_their_model_declares(mix):
    mix.update(integer=3, categorical=4)
    doc = bench_pipeline._model_doc("m", features=10, reference_size=100)
    MonitorSpec.model_validate({"models": [doc]})
    types = [f["type"] for f in doc["features"]]
    assert types == ["numeric"] * 6 + ["categorical"] * 4
    events = [orjson.loads(e) for e in bench_pipeline._events(400, 0, 1.0, shift_from=200, features=10)]
    for e in events:
        values = list(e["features"].values())
        assert [type(v) for v in values] == [float] * 3 + [int] * 3 + [str] * 4
        assert set(values[6:]) <= set(bench_pipeline.CATEGORIES)
    before = [v for e in events[:200] for v in list(e["features"].values())[6:]]
    after = [v for e in events[200:] for v in list(e["features"].values())[6:]]
    assert before.count("k7") < after.count("k7")  # the shift moves the categories too


def test_without_a_mix_every_feature_is_a_float(mix):
    mix.update(integer=0, categorical=0)
    events = [orjson.loads(e) for e in bench_pipeline._events(5, 1, 1.0)]
    assert all(type(v) is float for e in events for v in e["features"].values())
    assert {f["type"] for f in bench_pipeline._model_doc("m")["features"]} == {"numeric"}


def test_sustained_mode_refuses_a_mix(mix, capsys):
    with pytest.raises(SystemExit):
        bench_pipeline.main(["--mode", "sustained", "--categorical-features", "2"])
    assert "float features only" in capsys.readouterr().err


def test_cpu_seconds_count_this_process_working_not_waiting():
    import os
    import time

    before = bench_pipeline._cpu_seconds(os.getpid())
    time.sleep(0.3)
    slept = bench_pipeline._cpu_seconds(os.getpid()) - before
    end = time.process_time() + 0.5
    while time.process_time() < end:
        pass
    busy = bench_pipeline._cpu_seconds(os.getpid()) - before - slept
    assert 0 <= slept < 0.2 and 0.35 <= busy < 2.0


def test_scaling_events_reach_every_input_partition(stack):
    """Two workers can share the raw input only if it is spread over the partitions: all under one
    key (the throughput modes) lands on a single one."""
    import uuid

    spread, keyed = (f"bench-spread-{uuid.uuid4().hex[:8]}", f"bench-keyed-{uuid.uuid4().hex[:8]}")
    bench_pipeline._create(stack.kafka_bootstrap, [spread, keyed])
    try:
        values = [b"{}"] * 2000
        bench_pipeline._produce_spread(stack.kafka_bootstrap, spread, values)
        bench_pipeline._produce(stack.kafka_bootstrap, keyed, values)
        high = bench_pipeline._high_watermarks(stack.kafka_bootstrap, spread)
        assert sum(high.values()) == 2000
        assert min(high.values()) > 2000 / bench_pipeline.PARTITIONS / 2  # near even, not just non-empty
        assert sorted(bench_pipeline._high_watermarks(stack.kafka_bootstrap, keyed).values()) == [0, 0, 0, 2000]
    finally:
        bench_pipeline._drop(stack.kafka_bootstrap, [spread, keyed])


def test_cpu_figures_compare_medians_per_event():
    figures = bench_pipeline._cpu_figures(("one_model", [2.0, 4.0, 3.0]), ("many_models", [6.0, 9.0, 5.0]))
    assert figures["one_model_cpu_us_per_event"] == 3.0 and figures["many_models_cpu_us_per_event"] == 6.0
    assert figures["cpu_ratio"] == 0.5
    assert figures["many_models_cpu_all"] == [6.0, 9.0, 5.0]


def test_the_scraper_gets_every_worker_endpoint_until_stopped():
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            hits.append(self.path)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    stop = threading.Event()
    urls = [f"http://127.0.0.1:{server.server_address[1]}/metrics", f"http://127.0.0.1:{bench_pipeline._free_port()}/x"]
    scraper = threading.Thread(target=bench_pipeline._scrape_every, args=(urls, 0.02, stop), daemon=True)
    scraper.start()
    try:
        deadline = time.monotonic() + 10
        while len(hits) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(hits) >= 3 and set(hits) == {"/metrics"}, "a refused endpoint does not stop the others' scrapes"
    finally:
        stop.set()
        scraper.join(5)
        server.shutdown()
    assert not scraper.is_alive()
