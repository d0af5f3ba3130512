"""Replay of recorded logs: merge by time, in-memory label join, dirty input, outputs."""
from __future__ import annotations

import gzip
import io
import json
import random
import sys

import orjson
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detectors.events import InferenceEvent, LabelEvent
from detectors.spec import FeatureSpec, ModelSpec, MonitorSpec
from stream.replay import LabelJoin, load_replay_config, main, run_replay

SPEC = MonitorSpec(models=[ModelSpec(name="m", classes=["a", "b"], versions=["v1"], stable_version="v1",
                                     features=[FeatureSpec(name="x", type="numeric")])])


def event(i: int, **kw: object) -> dict:
    doc = {"event_id": f"e{i}", "ts": 1000.0 + i, "model": "m", "model_version": "v1", "features": {"x": 0.1},
           "prediction": "a", "confidence": 0.9}
    doc.update(kw)
    return doc


def lines(docs: list) -> bytes:
    return b"".join((d if isinstance(d, bytes) else json.dumps(d).encode()) + b"\n" for d in docs)


@pytest.fixture(scope="module")
def shifted(tmp_path_factory):
    """4000 events, x shifts and an unlisted version appears from event 3000; labels for every 4th event."""
    rng = random.Random(7)
    docs, labs = [], []
    for i in range(4000):
        x = rng.gauss(3.0 if i >= 3000 else 0.0, 1.0)
        docs.append(event(i, features={"x": x}, model_version="v9" if i >= 3000 and i % 10 == 0 else "v1",
                          prediction="a" if rng.random() < 0.9 else "b"))
        if i % 4 == 0:
            labs.append({"event_id": f"e{i}", "ts": 1000.0 + i + rng.uniform(1, 50), "label": "a", "source": "s"})
    labs.append({"event_id": "ghost", "ts": 1100.0, "label": "a", "source": "s"})
    labs.sort(key=lambda d: d["ts"])
    root = tmp_path_factory.mktemp("shifted")
    (root / "i.jsonl").write_bytes(lines(docs))
    (root / "l.jsonl").write_bytes(lines(labs))
    return root / "i.jsonl", root / "l.jsonl"


def test_detections_name_their_event(shifted, tmp_path) -> None:
    inf, lab = shifted
    out = tmp_path / "alerts.jsonl"
    report = run_replay(SPEC, inf, lab, out)
    docs = [json.loads(x) for x in out.read_text().splitlines()]
    rogue = [d for d in docs if d["kind"] == "alert" and d["signal"] == "version_integrity"]
    assert rogue and rogue[0]["version"] == "v9" and rogue[0]["event_id"] == "e3000"
    assert rogue[0]["replay"] == {"stream": "inference", "line": 3001} == {"stream": "inference",
                                                                           "line": rogue[0]["position"]}
    assert any(d["kind"] == "alert" and d["signal"] == "numeric_drift" and d["ts"] >= 4000 for d in docs)
    assert all(d["schema"] == "driftline.control/v1" and d["event_id"] for d in docs)
    assert report.events == 4000 and report.labels_joined == 1000
    assert report.rejected["labels"]["label_unknown_event"] == 1
    assert report.messages["alert"] == sum(d["kind"] == "alert" for d in docs)


def test_replay_is_deterministic_and_batch_independent(shifted, tmp_path) -> None:
    inf, _ = shifted
    outs = []
    for k, batch in enumerate((5, 4096, 4096)):
        out = tmp_path / f"a{k}.jsonl"
        run_replay(SPEC, inf, None, out, batch_size=batch)
        outs.append(out.read_bytes())
    assert outs[0] == outs[1] == outs[2] and outs[0]


def test_dirty_lines_are_counted_by_reason(tmp_path) -> None:
    raw = lines([event(0), b"{broken", b"", event(1, ts=float("nan")), event(2, features={"x": float("nan")}),
                 event(3, model="other"), event(4, prediction=None), event(5, features=None), b"\xff\xfe",
                 event(6, deployment="blue"), event(7, ts="2026-01-01T00:00:00Z"), b"[]", event(8)])
    inf = tmp_path / "inf.jsonl.gz"
    inf.write_bytes(gzip.compress(raw))
    lab = tmp_path / "lab.jsonl"
    lab.write_bytes(lines([{"event_id": "e0", "ts": 1000.5, "label": "a", "source": "s"},
                           {"event_id": "nope", "ts": 1001.0, "label": "a", "source": "s"},
                           b"not json", {"event_id": "e2", "ts": 1002.5, "label": 7}]))
    report = run_replay(SPEC, inf, lab, None)
    r = report.rejected
    assert r["inference"]["malformed_json"] == 2 and r["inference"]["blank_line"] == 1
    assert r["inference"]["bad_value:ts"] == 1 and r["inference"]["null_field:prediction"] == 1
    assert r["inference"]["null_field:features"] == 1 and r["inference"]["bad_deployment"] == 1
    assert r["inference"]["not_an_object"] == 1 and r["inference"]["unknown_model"] == 1
    assert report.events == 4 and report.unknown_model_events == 1
    assert r["labels"] == {"label_unknown_event": 1, "malformed_json": 1}
    assert report.labels_joined == 2
    assert report.inference_lines == 13 and report.label_lines == 4


def test_label_join_horizon() -> None:
    j = LabelJoin(horizon=10.0)
    j.remember(InferenceEvent("a", 0.0, "m", "v1", "stable", {}, "x"))
    j.remember(InferenceEvent("b", 5.0, "m", "v1", "canary", {}, "y"))
    ok = j.join(LabelEvent("b", 6.0, "y", "s"))
    assert not isinstance(ok, str) and len(ok) == 1 and ok[0].deployment == "canary" and ok[0].predicted_ts == 5.0
    assert j.join(LabelEvent("a", 11.0, "x", "s")) == "label_too_late"
    j.expire(12.0)
    assert "a" not in j.pending and j.join(LabelEvent("a", 12.0, "x", "s")) == "label_too_late"
    assert j.join(LabelEvent("zzz", 12.0, "x", "s")) == "label_unknown_event"


def test_labels_wait_for_their_time(tmp_path) -> None:
    """A label logged before its prediction's time is unknown at that moment, as it would be live."""
    inf = tmp_path / "i.jsonl"
    inf.write_bytes(lines([event(i) for i in range(5)]))
    lab = tmp_path / "l.jsonl"
    lab.write_bytes(lines([{"event_id": "e4", "ts": 1001.0, "label": "a", "source": "s"},
                           {"event_id": "e1", "ts": 1003.0, "label": "a", "source": "s"}]))
    report = run_replay(SPEC, inf, lab, None, batch_size=1)
    assert report.labels_joined == 1 and report.rejected["labels"]["label_unknown_event"] == 1


def test_cli_stdin_report_and_config(tmp_path, monkeypatch, capsys) -> None:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"monitor": SPEC.model_dump(mode="json"),
                                   "kafka": {"inference_topics": [{"name": "t", "field_mapping": {"event_id": "/id"}}]}}))
    data = lines([{**event(i), "id": f"x{i}"} for i in range(3)] + [event(3, model_version="v9")])
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BufferedReader(io.BytesIO(gzip.compress(data)))))
    out, rep = tmp_path / "out.jsonl", tmp_path / "rep.json"
    assert main(["--config", str(cfg), "--inference", "-", "--alerts", str(out), "--report", str(rep)]) == 0
    report = json.loads(rep.read_text())
    assert report["events"] == 3 and report["rejected"]["inference"] == {"missing_field:event_id": 1}
    assert "replay:" in capsys.readouterr().err
    assert out.read_text() == ""
    assert main(["--config", str(tmp_path / "missing.yaml"), "--inference", "-", "--alerts", "-"]) == 2


def test_config_topic_mapping(tmp_path) -> None:
    cfg = tmp_path / "c.yaml"
    doc = {"kafka": {"inference_topics": [{"name": "main"}, {"name": "other", "field_mapping": {"prediction": "/out"}}]},
           "redis": {"pending_ttl_seconds": 3600}, "monitor": SPEC.model_dump(mode="json")}
    cfg.write_text(yaml.safe_dump(doc))
    rc = load_replay_config(cfg, inference_topic="other")
    assert rc.horizon_seconds == 3600.0
    e = rc.inference_decoder.decode_inference(orjson.dumps({**event(1), "out": "b"}))
    assert e.prediction == "b"
    with pytest.raises(ValueError):
        load_replay_config(cfg, inference_topic="nope")
    doc["kafka"]["bootstrap_servers"] = "127.0.0.1:9092"
    doc["signing"] = {"key_env": "SOME_KEY"}
    cfg.write_text(yaml.safe_dump(doc))
    full = load_replay_config(cfg, inference_topic="other")  # a complete worker config, validated as such
    assert full.inference_decoder.decode_inference(orjson.dumps({**event(1), "out": "b"})).prediction == "b"
    doc["kafka"]["inference_topics"][1]["field_mapping"] = {"colour": "/x"}
    cfg.write_text(yaml.safe_dump(doc))
    with pytest.raises(ValueError):
        load_replay_config(cfg)


line = st.one_of(
    st.binary(max_size=60).filter(lambda b: b"\n" not in b and b"\r" not in b),
    st.builds(lambda i, x, v, p, ts: json.dumps(event(i, features={"x": x}, model_version=v, prediction=p, ts=ts)).encode(),
              st.integers(0, 50), st.floats() | st.none() | st.text(max_size=3), st.sampled_from(["v1", "v2", ""]),
              st.sampled_from(["a", "b", "zzz"]), st.floats(0, 1e4) | st.just(float("nan"))),
    st.builds(lambda i, ts, lab: json.dumps({"event_id": f"e{i}", "ts": ts, "label": lab, "source": "s"}).encode(),
              st.integers(0, 50), st.floats(0, 1e4), st.sampled_from(["a", "b", 3])))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(inf=st.lists(line, max_size=40), lab=st.lists(line, max_size=20), batch=st.integers(1, 8))
def test_any_input_is_counted_never_raised(tmp_path, inf, lab, batch) -> None:
    i, j = tmp_path / "i.jsonl", tmp_path / "l.jsonl"
    i.write_bytes(b"".join(x + b"\n" for x in inf))
    j.write_bytes(b"".join(x + b"\n" for x in lab))
    report = run_replay(SPEC, i, j, tmp_path / "out.jsonl", batch_size=batch)
    assert report.inference_lines == len(inf) and report.label_lines == len(lab)
    for doc in map(json.loads, (tmp_path / "out.jsonl").read_text().splitlines()):
        assert doc["schema"] == "driftline.control/v1"


def test_gzip_magic_without_gzip_and_truncated_gzip(tmp_path) -> None:
    """A text file that merely starts with gzip's magic bytes is read as lines; a truncated .gz
    (a log still being written) keeps the lines before the cut and is reported, never raised."""
    import gzip

    fake = tmp_path / "fake.jsonl"
    fake.write_bytes(b"\x1f\x8b not gzip\n" + json.dumps(event(1)).encode() + b"\n")
    report = run_replay(SPEC, fake, None, None)
    assert report.inference_lines == 2 and report.events == 1

    full = gzip.compress(b"".join(json.dumps(event(i)).encode() + b"\n" for i in range(5000)))
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(full[: len(full) // 2])
    report = run_replay(SPEC, cut, None, None)
    assert report.rejected["inference"]["unreadable_input"] == 1
    assert 0 < report.events < 5000


def test_a_label_joins_every_model_that_predicted_its_event() -> None:
    """Two models sharing request ids both get the label (no last-write-wins), within the topic's scope."""
    j = LabelJoin(horizon=10.0)
    j.remember(InferenceEvent("r1", 0.0, "fraud", "v1", "stable", {}, "ok"))
    j.remember(InferenceEvent("r1", 0.5, "abuse", "v3", "canary", {}, "bad"))
    both = j.join(LabelEvent("r1", 2.0, "ok", "s"))
    assert [(x.model, x.prediction) for x in both] == [("abuse", "bad"), ("fraud", "ok")]
    scoped = LabelJoin(horizon=10.0, scope=frozenset({"fraud"}))
    scoped.remember(InferenceEvent("r1", 0.0, "fraud", "v1", "stable", {}, "ok"))
    scoped.remember(InferenceEvent("r1", 0.5, "abuse", "v3", "canary", {}, "bad"))
    assert [x.model for x in scoped.join(LabelEvent("r1", 2.0, "ok", "s"))] == ["fraud"]
    j.expire(10.2)   # fraud's prediction (ts 0) leaves the horizon, abuse's (ts 0.5) stays
    assert [x.model for x in j.join(LabelEvent("r1", 10.3, "ok", "s"))] == ["abuse"]


def test_a_far_future_timestamp_is_refused_and_changes_nothing(shifted, tmp_path) -> None:
    """One message with ts 1e12 used to resolve every open alert and mute the signal for good."""
    inf, lab = shifted
    clean = run_replay(SPEC, inf, lab, None, collect=True)
    docs = inf.read_bytes().splitlines()
    bogus = json.loads(docs[3100])
    bogus.update(event_id="bogus", ts=1e12)
    poisoned = tmp_path / "poisoned.jsonl"
    poisoned.write_bytes(b"\n".join(docs[:3101] + [json.dumps(bogus).encode()] + docs[3101:]) + b"\n")
    report = run_replay(SPEC, poisoned, lab, None, collect=True)
    assert report.rejected["inference"]["ts_in_future"] == 1
    def what(docs: list[dict]) -> list[tuple]:  # ids embed line numbers, which the extra line shifts
        return [(d["kind"], d.get("signal"), d.get("version"), d.get("key"), d.get("event_id")) for d in docs]
    assert what(report.collected) == what(clean.collected)
    assert any(d["kind"] == "alert" for d in clean.collected)


@pytest.mark.parametrize("batch_size", [1, 3, 4096])
def test_inference_alone_takes_whole_batches_with_the_same_results(tmp_path, batch_size: int) -> None:
    """Without labels, lines go to the engine in whole batches; counts, positions and messages are
    those of the merged path (taken here with an empty label file)."""
    raw = lines([event(0), b"{broken", b"", event(1, ts=float("nan")), event(2, features={"x": float("nan")}),
                 event(3, model="other"), b"\xff\xfe", event(4, model_version="v9")]
                + [event(i, features={"x": 50.0 if i > 300 else float(i % 7)}) for i in range(5, 600)])
    inf = tmp_path / "inf.jsonl"
    inf.write_bytes(raw)
    empty = tmp_path / "none.jsonl"
    empty.write_bytes(b"")
    alone = run_replay(SPEC, inf, None, None, batch_size=batch_size, collect=True)
    merged = run_replay(SPEC, inf, empty, None, batch_size=batch_size, collect=True)
    assert alone.events == merged.events == 598 and alone.rejected["inference"] == merged.rejected["inference"]
    assert alone.rejected["inference"]["blank_line"] == 1 and alone.collected == merged.collected
    assert alone.collected and {d["replay"]["stream"] for d in alone.collected} == {"inference"}


def test_the_collector_runs_less_often_during_a_replay_and_as_before_after_it(shifted, tmp_path) -> None:
    """The first-generation threshold is raised while the replay runs and restored when it ends,
    also when it ends with an error."""
    import gc

    from stream.collector import GC_THRESHOLD

    inf, lab = shifted
    before = gc.get_threshold()
    seen = []
    run_replay(SPEC, inf, lab, None, on_batch=lambda engine, now: seen.append(gc.get_threshold()))
    assert seen and all(t == (max(before[0], GC_THRESHOLD), *before[1:]) for t in seen)
    assert gc.get_threshold() == before

    def fail(engine, now):
        raise RuntimeError("observer failed")

    with pytest.raises(RuntimeError, match="observer failed"):
        run_replay(SPEC, inf, lab, None, on_batch=fail)
    assert gc.get_threshold() == before


def _chunks(items: list, sizes: list[int]):
    """``items`` as lists cut at the given sizes (cycled), as the decoded-line reader yields them."""
    i, k = 0, 0
    while i < len(items):
        size = sizes[k % len(sizes)]
        yield items[i:i + size]
        i, k = i + size, k + 1


@settings(max_examples=300, deadline=None)
@given(inf_ts=st.lists(st.integers(0, 6), max_size=40), lab_ts=st.lists(st.integers(0, 6), max_size=40),
       inf_cuts=st.lists(st.integers(1, 7), min_size=1, max_size=4),
       lab_cuts=st.lists(st.integers(1, 7), min_size=1, max_size=4), batch_size=st.integers(1, 9))
def test_merged_batches_cut_the_line_by_line_merge(inf_ts, lab_ts, inf_cuts, lab_cuts, batch_size) -> None:
    """The batched merge gives the line-by-line merge's order (ties to inference, each stream's own
    order even where its times go back), cut into full batches, whatever the reader's list sizes."""
    from stream.replay import INFERENCE, LABELS, _merge, _merged_batches

    infs = [InferenceEvent(f"i{k}", float(t), "m", "v1", "stable", {}, "a") for k, t in enumerate(inf_ts)]
    labs = [LabelEvent(f"l{k}", float(t), "a", "s") for k, t in enumerate(lab_ts)]
    expected = [item for _, _, _, item in _merge(iter([(e.ts, INFERENCE, k, e) for k, e in enumerate(infs)]),
                                                   iter([(x.ts, LABELS, k, x) for k, x in enumerate(labs)]))]
    batches = list(_merged_batches(_chunks(infs, inf_cuts), _chunks(labs, lab_cuts), batch_size))
    assert [item for batch in batches for item in batch] == expected
    assert all(len(b) == batch_size for b in batches[:-1]) and all(batches)


def test_label_join_forgets_a_prediction_remembered_again_only_at_its_last_time() -> None:
    """A prediction remembered twice expires by its second timestamp; another model's prediction of
    the same event, remembered after it, expires behind it (expiry follows the remembering order)."""
    j = LabelJoin(horizon=10.0)
    j.remember(InferenceEvent("r", 0.0, "m", "v1", "stable", {}, "a"))
    j.remember(InferenceEvent("r", 5.0, "m", "v2", "canary", {}, "b"))
    j.remember(InferenceEvent("r", 1.0, "n", "v1", "stable", {}, "a"))
    j.expire(12.0)  # m's first remembering is skipped; its second (ts 5) stays, and n's (ts 1) waits behind it
    got = j.join(LabelEvent("r", 12.5, "b", "s"))  # n's prediction is past the horizon for this label
    assert [(x.model, x.model_version, x.prediction) for x in got] == [("m", "v2", "b")]
    j.expire(16.0)
    assert j.join(LabelEvent("r", 16.0, "b", "s")) == "label_too_late" and not j.pending and not j.order


class _ReferenceJoin:
    """The label join spelled out: every remembering in a list, the latest per (event id, model) counts."""

    def __init__(self, horizon: float, scope: frozenset[str] | None) -> None:
        self.horizon, self.scope = horizon, scope
        self.log: list[tuple[int, str, str, tuple]] = []  # (sequence, event id, model, (version, ..., ts))
        self.latest: dict[tuple[str, str], int] = {}
        self.expired: set[str] = set()
        self.count = 0

    def remember(self, e: InferenceEvent) -> None:
        self.count += 1
        seq = self.count
        self.log.append((seq, e.event_id, e.model, (e.model_version, e.deployment, e.prediction, e.ts)))
        self.latest[(e.event_id, e.model)] = seq

    def expire(self, now: float) -> None:
        while self.log:
            seq, eid, model, value = self.log[0]
            if self.latest.get((eid, model)) != seq:
                self.log.pop(0)
                continue
            if value[3] >= now - self.horizon:
                break
            self.log.pop(0)
            del self.latest[(eid, model)]
            self.expired.add(eid)

    def join(self, lab: LabelEvent) -> list[tuple] | str:
        held = {m: v for seq, eid, m, v in self.log if eid == lab.event_id and self.latest.get((eid, m)) == seq}
        names = [m for m in sorted(held) if self.scope is None or m in self.scope]
        if not names:
            return "label_too_late" if lab.event_id in self.expired else "label_unknown_event"
        out = [(m, *held[m]) for m in names if lab.ts - held[m][3] <= self.horizon]
        return out or "label_too_late"


_JOIN_OPS = st.lists(st.tuples(st.sampled_from(["remember", "label", "expire"]), st.sampled_from(["r1", "r2", "r3"]),
                               st.sampled_from(["fraud", "abuse", "spam"]), st.integers(0, 30)), max_size=60)


@settings(max_examples=300, deadline=None)
@given(ops=_JOIN_OPS, scoped=st.booleans())
def test_label_join_matches_the_join_spelled_out(ops: list[tuple[str, str, str, int]], scoped: bool) -> None:
    """Remember, join and expire in any order, with ids shared by up to three models: the compact
    join answers every label as the list of every remembering does."""
    scope = frozenset({"fraud", "spam"}) if scoped else None
    join, ref = LabelJoin(horizon=10.0, scope=scope), _ReferenceJoin(10.0, scope)
    for op, eid, model, t in ops:
        if op == "remember":
            e = InferenceEvent(eid, float(t), model, f"v{t % 2}", "stable", {}, f"p{t}")
            join.remember(e)
            ref.remember(e)
        elif op == "label":
            lab = LabelEvent(eid, float(t), "x", "s")
            got = join.join(lab)
            want = ref.join(lab)
            if isinstance(want, str):
                assert got == want
            else:
                assert [(j.model, j.model_version, j.deployment, j.prediction, j.predicted_ts) for j in got] == want
        else:
            join.expire(float(t))
            ref.expire(float(t))
    join.expire(100.0)
    ref.expire(100.0)
    assert not join.pending and not join.order
    for eid in ("r1", "r2", "r3"):
        lab = LabelEvent(eid, 100.0, "x", "s")
        assert join.join(lab) == ref.join(lab)
