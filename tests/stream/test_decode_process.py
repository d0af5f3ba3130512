"""Inference files decoded by other processes: the same events, batches, rejects and alerts as in process."""
from __future__ import annotations

import gzip
import json
import os
import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from detectors.spec import FeatureSpec, ModelSpec, MonitorSpec
from stream.decode_process import (AUTO_MIN_BYTES, DecodeProcesses, DecodeProcessError, _Child, _write_frame,
                                   auto_processes)
from stream.decoding import JsonDecoder, Limits
from stream.lines import INFERENCE, decoded_batches, open_lines
from stream.replay import ReplayConfig, main, run_replay

SPEC = MonitorSpec(models=[
    ModelSpec(name="m", classes=["a", "b"], versions=["v1"], stable_version="v1",
              features=[FeatureSpec(name="x", type="numeric"), FeatureSpec(name="n", type="numeric"),
                        FeatureSpec(name="c", type="categorical")]),
    ModelSpec(name="k", classes=["a", "b"], versions=["v1"], stable_version="v1",
              features=[FeatureSpec(name="x", type="numeric")])])


def _line(rng: random.Random, i: int) -> bytes:
    """Mostly well-formed events of two models (and an unknown one), a shift from line 2500, and
    every kind of dirt the decoder names."""
    roll = rng.random()
    if roll < 0.02:
        return rng.choice([b"", b"   ", b"{broken", b"[]", b"\xff\xfe", b'{"event_id": 3}'])
    shift = 2.0 if i >= 2500 else 0.0
    model = "m" if roll < 0.7 else "k" if roll < 0.97 else "stranger"
    feats: dict = {"x": rng.gauss(shift, 1.0)}
    if model != "k":
        feats.update({"n": rng.randrange(100), "c": rng.choice("pqr")})
        if rng.random() < 0.02:
            feats["n"] = rng.choice([None, "7", True, 2**70, [1, 2], {"k": 1}])
    doc = {"event_id": f"e{i}", "ts": 1000.0 + i * 0.01, "model": model, "model_version": "v1",
           "features": feats, "prediction": "a" if rng.random() < 0.8 + shift / 20 else "b",
           "scores": {"a": 0.7, "b": 0.3}}
    if rng.random() < 0.01:
        doc["ts"] = "yesterday"
    text = json.dumps(doc).encode()
    if rng.random() < 0.01:
        text = text.replace(b'"x": ', b'"x": NaN, "y": ', 1)
    return text


@pytest.fixture(scope="module")
def logs(tmp_path_factory) -> tuple[Path, Path, Path]:
    rng = random.Random(5)
    root = tmp_path_factory.mktemp("decode-process")
    raw = b"".join(_line(rng, i) + b"\n" for i in range(4000))
    labels = b"".join(json.dumps({"event_id": f"e{i}", "ts": 1000.0 + i * 0.01 + 3, "label": "a",
                                  "source": "s"}).encode() + b"\n" for i in range(0, 4000, 3))
    (root / "i.jsonl").write_bytes(raw)
    (root / "i.jsonl.gz").write_bytes(gzip.compress(raw))
    (root / "l.jsonl").write_bytes(labels)
    return root / "i.jsonl", root / "i.jsonl.gz", root / "l.jsonl"


def _replay(inf: Path, lab: Path | None, processes: int, batch_size: int = 4096) -> tuple[dict, list]:
    report = run_replay(ReplayConfig(SPEC, horizon_seconds=60.0), inf, lab, None, batch_size=batch_size,
                        collect=True, decode_processes=processes)
    doc = report.to_dict()
    del doc["seconds"], doc["events_per_second"]
    return doc, report.collected


@pytest.mark.parametrize("labels", [False, True])
def test_a_replay_is_the_same_with_any_number_of_decoding_processes(logs, labels: bool) -> None:
    inf, _, lab = logs
    base = _replay(inf, lab if labels else None, 0)
    assert base[1], "the shift must raise control messages for the comparison to mean anything"
    assert base[0]["rejected"]["inference"]["malformed_json"] > 0
    assert base[0]["unknown_model_events"] > 0
    for processes in (1, 3):
        assert _replay(inf, lab if labels else None, processes) == base


def test_batches_are_cut_as_in_process_whatever_the_chunks(logs) -> None:
    inf, gz, _ = logs
    decoder = JsonDecoder()
    for path in (inf, gz):
        expected_rejects: Counter = Counter()
        with open_lines(path) as fh:
            expected = [[(e.position, e.event_id, e.model, e.ts, e.confidence) for e in batch]
                        for batch in decoded_batches(fh, INFERENCE, decoder, expected_rejects, 97)]
        for processes, chunk in ((1, 1), (2, 50), (3, 97), (4, 1000)):
            for here in (False, True):
                rejects: Counter = Counter()
                with DecodeProcesses(path, decoder, 97, rejects, processes, chunk=chunk, decode_here=here) as children:
                    got = [[(e.position, e.event_id, e.model, e.ts, e.confidence) for e in batch]
                           for batch in children.batches()]
                    assert here or children.decoded_here == 0
                assert got == expected, (path, processes, chunk, here)
                assert rejects == expected_rejects


@pytest.mark.parametrize("processes", [1, 2])
def test_the_replaying_process_decodes_until_the_children_are_ready(logs, processes: int) -> None:
    """The first chunks are decoded here while the children start; the rest by the children, from
    the chunk they are told; the events and rejects are those of an in-process decoding."""
    inf, _, _ = logs
    decoder = JsonDecoder()
    expected_rejects: Counter = Counter()
    with open_lines(inf) as fh:
        expected = [e.position for b in decoded_batches(fh, INFERENCE, decoder, expected_rejects, 50) for e in b]
    rejects: Counter = Counter()
    with DecodeProcesses(inf, decoder, 50, rejects, processes, chunk=50) as children:
        got: list[int] = []
        for batch in children.batches():
            if not got:  # the children are starting: wait until each has said it is ready
                assert children.decoded_here >= 1
                deadline = time.monotonic() + 60
                while not all([c.poll_ready() for c in children.children]) and time.monotonic() < deadline:
                    time.sleep(0.01)
            got.extend(e.position for e in batch)
        assert 1 <= children.decoded_here < 4000 // 50 // 2
    assert got == expected and rejects == expected_rejects


def test_an_input_decoded_before_the_children_start_stops_them(logs) -> None:
    inf, _, _ = logs
    decoder = JsonDecoder()
    with DecodeProcesses(inf, decoder, 4096, Counter(), 2, chunk=10_000) as children:  # one chunk
        got = [e.position for b in children.batches() for e in b]
        assert children.decoded_here == 1
        assert all(c.proc.poll() is not None for c in children.children)
    with open_lines(inf) as fh:
        assert got == [e.position for b in decoded_batches(fh, INFERENCE, decoder, Counter(), 4096) for e in b]


def test_features_arrive_as_decoded(logs) -> None:
    inf, _, _ = logs
    decoder = JsonDecoder()
    with open_lines(inf) as fh:
        expected = [dict(e.features) for b in decoded_batches(fh, INFERENCE, decoder, Counter(), 4096) for e in b]
    with DecodeProcesses(inf, decoder, 4096, Counter(), 2, chunk=333) as children:
        got = [{k: e.features[k] for k in e.features} for b in children.batches() for e in b]
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g.keys() == e.keys()
        for k in g:
            assert type(g[k]) is type(e[k]) and (g[k] == e[k] or g[k] != g[k] and e[k] != e[k])


def test_a_truncated_gzip_keeps_what_was_read_and_is_counted_once(tmp_path) -> None:
    body = b"".join(json.dumps({"event_id": f"e{i}", "ts": 1000.0 + i, "model": "k", "model_version": "v1",
                                "features": {"x": i * 0.1}, "prediction": "a"}).encode() + b"\n"
                    for i in range(6000))
    full = gzip.compress(body)
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(full[: len(full) // 2])
    base = _replay(cut, None, 0)
    assert base[0]["rejected"]["inference"]["unreadable_input"] == 1 and 0 < base[0]["events"] < 6000
    for processes in (1, 2):
        assert _replay(cut, None, processes, batch_size=500) == _replay(cut, None, 0, batch_size=500)


def test_an_empty_file_and_a_file_of_one_chunk(tmp_path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    assert _replay(empty, None, 2)[0]["inference_lines"] == 0
    one = tmp_path / "one.jsonl"
    one.write_bytes(b"\n" * 3)
    assert _replay(one, None, 3)[0]["rejected"]["inference"] == {"blank_line": 3}


def test_a_child_that_fails_is_an_error_not_a_short_replay(logs, monkeypatch) -> None:
    inf, _, _ = logs
    settings = JsonDecoder.settings
    monkeypatch.setattr(JsonDecoder, "settings", lambda self: {**settings(self), "unknown": 1})  # the child refuses them
    for here in (False, True):
        with pytest.raises(DecodeProcessError, match="decoding process 0 stopped before its last frame"):
            with DecodeProcesses(inf, JsonDecoder(), 10, Counter(), 1, chunk=1, decode_here=here) as children:
                for _ in children.batches():
                    time.sleep(0.002)  # slower than the child's failure: its input is not all decoded here


def test_a_child_the_input_did_not_need_may_fail_unnoticed(logs, monkeypatch) -> None:
    """Decoded here before the child started: the replay is whole, and the child is stopped."""
    inf, _, _ = logs
    settings = JsonDecoder.settings
    monkeypatch.setattr(JsonDecoder, "settings", lambda self: {**settings(self), "unknown": 1})
    with DecodeProcesses(inf, JsonDecoder(), 4096, Counter(), 1, chunk=10_000) as children:
        assert sum(map(len, children.batches())) > 3000


def _child_reading(tmp_path: Path, data: bytes) -> _Child:
    """A _Child whose frame pipe holds ``data`` (the process reads its stdin and ends)."""
    path = tmp_path / "frames.bin"
    path.write_bytes(data)
    child = _Child.__new__(_Child)
    child.proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.buffer.read()"], stdin=subprocess.PIPE)
    child.stream = open(path, "rb")
    child.share = 0
    child.ready = False
    return child


@pytest.mark.parametrize("data, problem", [
    (b"", "stopped before its last frame"),
    (b"\x05\x00\x00\x00[1,2]", "malformed frame header"),
    (b"\x02\x00\x00\x00{}", "malformed frame header"),
    (b"\x30\x00\x00\x00" + b'{"v":2,"sizes":[10],"rejected":{},"end":false}  ' + b"abc", "stopped inside a frame"),
    (b"\x30\x00\x00\x00" + b'{"v":1,"sizes":[10],"rejected":{},"end":false}  ' + b"abc", "malformed frame header"),
    (b"\x3c\x00\x00\x00" + b'{"v":2,"sizes":[],"rejected":{},"end":false,"ready":true}   ', "malformed frame header"),
    (b"\x30\x00\x00\x00" + b'{"v":9,"sizes":[],"rejected":{},"end":false}    ', "malformed frame header"),
    (b"\xff\xff\xff\xff", "malformed frame header"),
])
def test_frames_are_validated(tmp_path, data: bytes, problem: str) -> None:
    child = _child_reading(tmp_path, data)
    try:
        with pytest.raises(DecodeProcessError, match=problem):
            child.frame()
    finally:
        child.close()


def test_a_record_that_does_not_validate_stops_the_replay(tmp_path) -> None:
    import io

    buf = io.BytesIO()
    _write_frame(buf, [], Counter(), end=False, ready=True)
    _write_frame(buf, [b"DLB\x02iXXXX-not-a-record"], Counter(), end=False)
    children = DecodeProcesses.__new__(DecodeProcesses)
    children.children = [_child_reading(tmp_path, buf.getvalue())]
    children.batch_size, children.rejected, children.decode_here = 10, Counter(), False
    try:
        with pytest.raises(DecodeProcessError, match="invalid record"):
            list(children.batches())
    finally:
        children.close()


def test_decoder_settings_rebuild_the_same_decoder() -> None:
    dec = JsonDecoder(fields={"model": "/meta/model"}, constants={"model_version": "v1"},
                      limits=Limits(max_bytes=5000, max_features=7, max_string=50, max_scores=3), ts_unit="ms",
                      max_future_seconds=None)
    again = JsonDecoder.from_settings(json.loads(json.dumps(dec.settings())))
    assert again.settings() == dec.settings()
    raw = json.dumps({"event_id": "e", "ts": 1_000_000, "meta": {"model": "m"}, "features": {"x": 1.0},
                      "prediction": "a"}).encode()
    assert again.decode_inference(raw) == dec.decode_inference(raw)
    assert JsonDecoder(clock=lambda: 0.0).settings() is None
    assert JsonDecoder(constants={"model_version": ("v", 1)}).settings() is None  # a tuple comes back a list
    assert JsonDecoder(constants={"model_version": object()}).settings() is None
    for bad in ({}, {**dec.settings(), "limits": {"max_bytes": -1}}, {**dec.settings(), "extra": 1},
                {**dec.settings(), "max_future_seconds": "soon"}, {**dec.settings(), "ts_unit": "years"}):
        with pytest.raises(ValueError):
            JsonDecoder.from_settings(bad)


def test_auto_decodes_in_other_processes_only_where_it_pays(tmp_path, monkeypatch) -> None:
    small = tmp_path / "small.jsonl"
    small.write_bytes(b"{}\n")
    big = tmp_path / "big.jsonl"
    with open(big, "wb") as fh:
        fh.truncate(AUTO_MIN_BYTES)
    monkeypatch.setattr("stream.decode_process.usable_cores", lambda: 4)
    assert auto_processes(big, JsonDecoder()) == 3
    assert auto_processes(small, JsonDecoder()) == 0
    assert auto_processes("-", JsonDecoder()) == 0
    assert auto_processes(big, JsonDecoder(clock=lambda: 0.0)) == 0
    assert auto_processes(tmp_path / "missing", JsonDecoder()) == 0
    monkeypatch.setattr("stream.decode_process.usable_cores", lambda: 1)
    assert auto_processes(big, JsonDecoder()) == 0


def test_decoding_processes_are_refused_where_they_cannot_work(logs, tmp_path) -> None:
    inf, _, _ = logs
    with pytest.raises(ValueError, match="not stdin"):
        run_replay(SPEC, "-", None, None, decode_processes=1)
    cfg = ReplayConfig(SPEC, inference_decoder=JsonDecoder(clock=lambda: 2e9))
    with pytest.raises(ValueError, match="not stdin"):
        run_replay(cfg, inf, None, None, decode_processes=1)
    with pytest.raises(ValueError, match="between 0 and"):
        run_replay(SPEC, inf, None, None, decode_processes=99)


def test_cli_takes_the_number_of_decoding_processes(logs, tmp_path, capsys) -> None:
    inf, _, lab = logs
    cfg = tmp_path / "c.yaml"
    cfg.write_text(json.dumps({"monitor": SPEC.model_dump(mode="json")}))
    outs = []
    for n in ("0", "2"):
        out, rep = tmp_path / f"a{n}.jsonl", tmp_path / f"r{n}.json"
        assert main(["--config", str(cfg), "--inference", str(inf), "--labels", str(lab), "--alerts", str(out),
                     "--report", str(rep), "--decode-processes", n, "--quiet"]) == 0
        report = json.loads(rep.read_text())
        del report["seconds"], report["events_per_second"]
        outs.append((out.read_bytes(), report))
    assert outs[0] == outs[1] and outs[0][0]
    assert main(["--config", str(cfg), "--inference", "-", "--alerts", str(tmp_path / "x.jsonl"),
                 "--decode-processes", "1"]) == 2
    assert "not stdin" in capsys.readouterr().err


def test_the_decoding_process_does_not_load_the_statistics_stack_or_pydantic() -> None:
    heavy = "('scipy', 'numba', 'pydantic', 'detectors.engine')"
    code = f"import sys, stream.decode_process; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert out.stdout.strip() == "[]"


def test_the_frame_pipe_holds_a_frame(logs) -> None:
    """The child can write the next chunk's frame while the replaying process works on the last one."""
    import fcntl

    from stream.decode_process import PIPE_BYTES

    inf, _, _ = logs
    with DecodeProcesses(inf, JsonDecoder(), 4096, Counter(), 1) as children:
        size = fcntl.fcntl(children.children[0].stream.fileno(), fcntl.F_GETPIPE_SZ)
        list(children.batches())
    if int(Path("/proc/sys/fs/pipe-max-size").read_text()) >= PIPE_BYTES:
        assert size >= PIPE_BYTES
    else:  # the system refuses pipes this large: the default size stays
        assert size >= 4096
