"""`driftline init`: a starter config from a log sample that check-config and replay accept unedited."""
from __future__ import annotations

import gzip
import json
import random
import uuid

import orjson
import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from loadtest.drills import make_drill, write_drill
from stream.cli import main as cli
from stream.config import load_config
from stream.decoding import JsonDecoder
from stream.layout import ShapeProfile, inference_layout, name_score
from stream.log_sample import Sample, sample_file, sample_topic
from stream.starter import FeatureStats, feature_spec, learn, render

KEY_ENV = {"DRIFTLINE_SIGNING_KEY": "starter-test-signing-key-0123456789"}


@pytest.fixture(scope="module")
def drill_logs(tmp_path_factory):
    """The backdoored-canary drill: default layout, 16k events, labels."""
    root = tmp_path_factory.mktemp("drill")
    return write_drill(make_drill("backdoor_canary", n_events=16_000, seed=0), root)


def _nested(doc: dict, i: int, rng: random.Random) -> bytes:
    feats = dict(doc["features"], user_id=7_000_000 + i, session=f"s-{rng.getrandbits(48):012x}",
                 is_premium=i % 3 == 0)
    ms = int(round(doc["ts"] * 1000))
    return orjson.dumps({"request": {"rid": doc["event_id"], "received_at_ms": ms, "sent_at_ms": ms - 7},
                         "model": {"name": doc["model"], "version": doc["model_version"], "track": doc["deployment"]},
                         "input": feats, "output": {"label": doc["prediction"], "probabilities": doc["scores"]}})


@pytest.fixture(scope="module")
def nested_logs(tmp_path_factory, drill_logs):
    """The same drill in another shape: nested objects, epoch-millisecond times, gzip, junk lines, ids."""
    root = tmp_path_factory.mktemp("nested")
    rng = random.Random(0)
    lines = [_nested(orjson.loads(x), i, rng) for i, x in enumerate(drill_logs["inference"].read_bytes().splitlines())]
    lines.insert(100, b'{"request": {"rid": "broken", ')
    lines.insert(200, b"not json at all")
    inf = root / "inference.jsonl.gz"
    with gzip.open(inf, "wb") as fh:
        fh.write(b"\n".join(lines) + b"\n")
    labels = [orjson.loads(x) for x in drill_logs["labels"].read_bytes().splitlines()]
    lab = root / "labels.jsonl"
    lab.write_bytes(b"".join(orjson.dumps({"ref": {"request_id": x["event_id"]}, "when": x["ts"],
                                           "verdict": x["label"], "annotator": x["source"]}) + b"\n" for x in labels))
    return {"inference": inf, "labels": lab}


def _round_trip(logs: dict, tmp_path, monkeypatch, capsys) -> tuple[dict, list[dict], dict]:
    """init, check-config and replay, unedited; returns the config document, control messages, replay report."""
    for k, v in KEY_ENV.items():
        monkeypatch.setenv(k, v)
    cfg = tmp_path / "driftline.yaml"
    assert cli(["init", "--inference", str(logs["inference"]), "--labels", str(logs["labels"]),
                "--out", str(cfg)]) == 0
    assert cli(["check-config", "--config", str(cfg)]) == 0
    alerts, report = tmp_path / "alerts.jsonl", tmp_path / "report.json"
    assert cli(["replay", "--config", str(cfg), "--inference", str(logs["inference"]), "--labels",
                str(logs["labels"]), "--alerts", str(alerts), "--report", str(report), "--quiet"]) == 0
    capsys.readouterr()
    return (yaml.safe_load(cfg.read_text()), [json.loads(x) for x in alerts.read_text().splitlines()],
            json.loads(report.read_text()))


def test_round_trip_on_the_drill_logs(drill_logs, tmp_path, monkeypatch, capsys) -> None:
    doc, msgs, report = _round_trip(drill_logs, tmp_path, monkeypatch, capsys)
    topic = doc["kafka"]["inference_topics"][0]
    assert "field_mapping" not in topic and "ts_unit" not in topic, "the default layout needs no mapping"
    (model,) = doc["monitor"]["models"]
    assert model["name"] == "content-filter" and model["stable_version"] == "v1"
    assert set(model["versions"]) == {"v1", "v2", "v3"} and set(model["classes"]) == {"safe", "nsfw", "violence"}
    kinds = {f["name"]: f["type"] for f in model["features"]}
    assert kinds["brightness"] == "numeric" and kinds["logo"] == "categorical" and len(kinds) == 20
    bright = next(f for f in model["features"] if f["name"] == "brightness")
    assert (bright["min"], bright["max"]) == (0.0, 1.0)
    assert report["events"] == 16_000 and not report["rejected"]["inference"]
    rollback = [m for m in msgs if m["kind"] == "rollback"]
    assert rollback and rollback[0]["canary_version"] == "v3", "the inferred config still catches the backdoor"


def test_round_trip_on_nested_logs_with_millisecond_times(nested_logs, tmp_path, monkeypatch, capsys) -> None:
    doc, msgs, report = _round_trip(nested_logs, tmp_path, monkeypatch, capsys)
    topic = doc["kafka"]["inference_topics"][0]
    assert topic["ts_unit"] == "ms"
    assert topic["field_mapping"] == {
        "event_id": "/request/rid", "ts": "/request/received_at_ms", "model": "/model/name",
        "model_version": "/model/version", "deployment": "/model/track", "features": "/input",
        "prediction": "/output/label", "scores": "/output/probabilities"}
    assert doc["kafka"]["label_topics"][0]["field_mapping"] == {
        "event_id": "/ref/request_id", "ts": "/when", "label": "/verdict", "source": "/annotator"}
    names = {f["name"] for f in doc["monitor"]["models"][0]["features"]}
    assert not names & {"user_id", "session", "is_premium"} and len(names) == 20
    text = (tmp_path / "driftline.yaml").read_text()
    assert "REVIEW: ts: 2 candidate timestamp fields: /request/received_at_ms (chosen), /request/sent_at_ms" in text
    assert "left out: 'user_id': looks like an id" in text and "left out: 'session': looks like an id" in text
    assert "left out: 'is_premium': booleans" in text
    assert "malformed_json=2" in text
    assert report["rejected"]["inference"] == {"malformed_json": 2} and report["events"] == 16_000
    assert report["labels_joined"] > 4000
    first, last = min(m["ts"] for m in msgs), max(m["ts"] for m in msgs)
    assert 1.7e9 < first <= last < 1.8e9, "times decoded in seconds from milliseconds"
    assert any(m["kind"] == "rollback" and m["canary_version"] == "v3" for m in msgs)


def test_hostile_sample_is_counted_and_bounded(tmp_path) -> None:
    rng = random.Random(3)
    lines = []
    for i in range(3000):
        feats = {"x": rng.gauss(0, 1), "token": f"t{rng.getrandbits(64)}", "city": f"c{rng.randrange(50)}"}
        if i < 5:
            feats.update({f"f{j}": j for j in range(600)})  # more features than a message may carry
        lines.append(orjson.dumps({"event_id": f"e{i}", "ts": 1.7e9 + i, "model": "big" if i < 2000 else f"m{i}",
                                   "model_version": f"build-{i}", "features": feats, "prediction": "a"}))
    lines[7:7] = [b"\xff\xfe garbage", b"[1, 2]", b"", b'"str"', b"x" * 300_000]
    path = tmp_path / "hostile.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    sample = sample_file(path, limit=0)
    assert sample.skipped["oversized"] == 1 and sample.skipped["blank_line"] == 1
    assert all(len(x) < 300_000 for x in sample.lines)
    learned = learn(sample)
    assert learned.rejected == {"malformed_json": 1, "not_an_object": 2, "too_many_features": 5}
    assert len(learned.models) == 32 and sum(learned.models_dropped.values()) == 1000 - 31
    big = learned.models["big"]
    assert big.events == 1995 and len(big.versions) == 64 and big.versions_dropped == 1995 - 64
    assert all(len(fs.distinct) <= 1024 for m in learned.models.values() for fs in m.features.values())
    text, summary = render(learned, "127.0.0.1:9092", "ml.inference", None, "redis://127.0.0.1:6379/0")
    doc = yaml.safe_load(text)
    load_config_doc(doc, tmp_path)
    model = doc["monitor"]["models"][0]
    assert model["name"] == "big" and {f["name"] for f in model["features"]} == {"x", "city"}
    assert "left out: 'token': looks like an id" in text
    assert "REVIEW: more than 32 models" in text and "REVIEW: over 64 versions" in text
    assert len(text.splitlines()) < 600, "notes stay bounded"
    assert summary["review"] >= 2


def load_config_doc(doc: dict, tmp_path) -> None:
    path = tmp_path / "check.yaml"
    path.write_text(yaml.safe_dump(doc))
    load_config(path)


def test_feature_decisions() -> None:
    def stats(values: list) -> FeatureStats:
        fs = FeatureStats()
        for v in values:
            fs.add(v)
        return fs

    share = [i / 100 for i in range(100)]
    assert feature_spec("r", stats(share), 100)[0] == {"name": "r", "type": "numeric", "min": 0.0, "max": 1.0}
    assert feature_spec("n", stats(list(range(5)) * 20), 100)[0] == {"name": "n", "type": "numeric", "min": 0.0}
    assert feature_spec("z", stats([i - 50.5 for i in range(100)]), 100)[0] == {"name": "z", "type": "numeric"}
    assert feature_spec("b", stats([True, False] * 50), 100)[0] is None
    assert feature_spec("c", stats(["a", "b", "c"] * 40), 120)[0] == {"name": "c", "type": "categorical"}
    spec, note = feature_spec("m", stats([1.0] * 90 + ["n/a"] * 10), 100)
    assert spec["type"] == "numeric" and "10.0% of values are not numbers" in note
    assert feature_spec("only_null", stats([None] * 10), 10)[0] is None
    assert name_score("/meta/request_id", "event_id") == 3 and name_score("/brightness", "ts") == 0


def test_timestamp_units_and_iso_strings() -> None:
    for unit, scale in (("s", 1), ("ms", 1e3), ("us", 1e6), ("ns", 1e9)):
        prof = ShapeProfile()
        for i in range(60):
            prof.add({"id": f"e{i}", "time": int((1.767e9 + i) * scale), "features": {"x": i}, "prediction": "a"})
        assert inference_layout(prof).ts_unit == unit
    prof = ShapeProfile()
    for i in range(60):
        prof.add({"id": f"e{i}", "created_at": f"2026-01-01T00:00:{i % 60:02d}Z", "features": {"x": i},
                  "prediction": "a"})
    lay = inference_layout(prof)
    assert lay.chosen["ts"] == "/created_at" and lay.ts_unit == "s"


@pytest.mark.parametrize("meta", ["feature", "features", "input", "inputs"])
def test_request_metadata_named_like_features_is_not_taken_for_them(meta: str) -> None:
    """An object holding the unique request id and the time is metadata whatever its name."""
    prof = ShapeProfile()
    for i in range(80):
        prof.add({meta: {"request_id": f"r-{i}", "timestamp": 1.767e9 + i},
                  "call": {"model_name": "pets", "input": {"w": i * 0.37 % 9, "c": "xy"[i % 2]}, "prediction": "cat"}})
    lay = inference_layout(prof)
    assert lay.chosen["features"] == "/call/input"
    assert lay.chosen["event_id"] == f"/{meta}/request_id" and lay.chosen["ts"] == f"/{meta}/timestamp"


_KEY = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=3, max_size=8)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(outer=_KEY, meta=_KEY, unit=st.sampled_from(["s", "ms", "us", "ns"]), n=st.integers(60, 120),
       seed=st.integers(0, 2**16))
def test_learned_layout_decodes_every_event(outer: str, meta: str, unit: str, n: int, seed: int) -> None:
    """Whatever the nesting names, the learned mapping reads back each event's id, time, model and class."""
    assume(outer != meta)
    rng = random.Random(seed)
    scale = {"s": 1, "ms": 1e3, "us": 1e6, "ns": 1e9}[unit]
    truth, lines = [], []
    for i in range(n):
        cls = rng.choice(["cat", "dog"])
        t = 1.767e9 + i * 0.5
        doc = {meta: {"request_id": f"r-{seed}-{i}", "timestamp": t if unit == "s" else int(t * scale)},
               outer: {"model_name": "pets", "version": "7", "input": {"w": rng.random() * 9, "c": rng.choice("xy")},
                       "prediction": cls, "scores": {"cat": 0.6, "dog": 0.4}}}
        truth.append((f"r-{seed}-{i}", t, cls))
        lines.append(orjson.dumps(doc))
    learned = learn(Sample("gen", lines))
    lay = learned.layout
    dec = JsonDecoder(lay.mapping, lay.constants, ts_unit=lay.ts_unit)
    for raw, (eid, t, cls) in zip(lines, truth):
        e = dec.decode_inference(raw)
        assert (e.event_id, e.model, e.model_version, e.prediction) == (eid, "pets", "7", cls)
        assert e.ts == pytest.approx(t, abs=1e-3)
        assert set(e.features) == {"w", "c"}


@pytest.mark.integration
def test_init_reads_a_kafka_topic(stack, drill_logs, tmp_path, monkeypatch, capsys) -> None:
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    topic = f"init-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": stack.kafka_bootstrap})
    for fut in admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)]).values():
        fut.result(30)
    try:
        producer = Producer({"bootstrap.servers": stack.kafka_bootstrap, "linger.ms": 5})
        lines = drill_logs["inference"].read_bytes().splitlines()[:3000]
        for i, line in enumerate(lines):
            producer.produce(topic, value=line, key=str(i % 7).encode())
        producer.produce(topic, value=b"{not json")
        assert producer.flush(30) == 0
        cfg = tmp_path / "from-kafka.yaml"
        assert cli(["init", "--inference-topic", topic, "--bootstrap", stack.kafka_bootstrap, "--sample", "2000",
                    "--timeout", "20", "--out", str(cfg)]) == 0
        for k, v in KEY_ENV.items():
            monkeypatch.setenv(k, v)
        assert cli(["check-config", "--config", str(cfg)]) == 0
        doc = yaml.safe_load(cfg.read_text())
        assert doc["kafka"]["bootstrap_servers"] == stack.kafka_bootstrap
        assert doc["kafka"]["inference_topics"][0]["name"] == topic
        model = doc["monitor"]["models"][0]
        assert model["name"] == "content-filter" and len(model["features"]) == 20
        assert "2000 line(s) of topic" in cfg.read_text()
        whole = sample_topic(stack.kafka_bootstrap, topic, limit=0, timeout=20)
        assert whole.exhausted and len(whole.lines) == 3001, "limit 0 reads every partition to its end"
        assert cli(["init", "--inference-topic", f"{topic}-missing", "--bootstrap", stack.kafka_bootstrap,
                    "--timeout", "5", "--out", str(tmp_path / "x.yaml")]) == 2
    finally:
        for fut in admin.delete_topics([topic]).values():
            fut.result(30)
        capsys.readouterr()


@pytest.mark.parametrize("module", ["stream.layout", "stream.log_sample"])
def test_docstring_examples(module: str) -> None:
    import doctest
    import importlib

    assert doctest.testmod(importlib.import_module(module)).failed == 0
