"""Coverage-guided fuzzing (atheris / libFuzzer) of every parser of untrusted bytes.

One harness per parser; each runs in its own process (libFuzzer owns the process), seeded with
real messages from the drills, and reports executions and findings as JSON:

- ``inference``, ``label``: raw messages through the default JSON layout; ``inference_mapped``,
  ``label_mapped``: the first input byte picks a topic configuration (pointers, constants,
  timestamp unit, small limits). Only ``DecodeError`` may escape; a decoded event must re-encode
  to an internal record that decodes back, and its names must render as metric labels.
- ``record``: internal-topic records (``decode_record``); only ``RecordError``; accepted records
  run through a live ``ModelMonitor`` whose state is saved and loaded every 500 records.
- ``state``: Redis state blobs through ``ModelMonitor.from_bytes``: the input is the JSON payload
  (wrapped with a valid header and CRC, so the fuzzer meets the validation, not the checksum) or,
  when the first byte is 1, the raw blob. Only ``StateFormatError``; a loaded state must keep working.
- ``adwin``: river's compiled ADWIN decoder under the loader's checks; only ``StateFormatError``.
- ``redis_values``: pending predictions, offsets and staged model lists read back from Redis.
- ``control``: ``control verify`` input (``read_documents``, ``check``, ``verify``): a verdict for
  anything, and no changed rollback verifies.
- ``profile``: reference profile files read as check-config and replay (``json``) or the worker
  (orjson) read them; only ``ProfileFormatError``; an accepted profile must arm a monitor.
- ``config``: YAML configuration files through ``load_config``; only ``ConfigError``.

Besides escaping exceptions and broken properties, libFuzzer reports inputs slower than
``--input-timeout`` seconds and processes past ``--rss-limit-mb`` (unbounded allocation).

    python loadtest/fuzz.py --seconds 180                 # every harness, 3 minutes each
    python loadtest/fuzz.py --parsers inference,state --runs 20000 --out reports/fuzz.json
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


_SEEDS: list[bytes] = []  # in a harness process: the seed corpus written by the driver
_SCRATCH: list[Path] = []  # in a harness process: directories to remove before it exits


class NotJson(ValueError):
    """Input no JSON reader takes: refused before the parser under test (counted as refused)."""


class PropertyViolation(AssertionError):
    """A harness property that does not hold (reported as a finding, like an escaping exception)."""


def _require(cond: bool, what: str) -> None:
    if not cond:
        raise PropertyViolation(what)


@dataclass
class Harness:
    """``setup()`` (called once, inside atheris' instrumentation) returns the function run per input
    and the exception types that input may raise; ``seeds()`` the initial corpus."""

    setup: Callable[[], tuple[Callable[[bytes], None], tuple[type[BaseException], ...]]]
    seeds: Callable[[], list[bytes]]
    max_len: int = 8192


# -- seeds -----------------------------------------------------------------------------------------
@functools.cache
def _drill(scenario: str = "garbage", n: int = 3000):
    from loadtest.drills import make_drill

    return make_drill(scenario, n_events=n, injection=n // 2, seed=7)


def _spec():
    from detectors.spec import MonitorSpec
    from loadtest.drills import drill_monitor_spec

    return MonitorSpec.model_validate(drill_monitor_spec())


def _pick(lines: list[bytes], k: int = 40) -> list[bytes]:
    step = max(1, len(lines) // k)
    return lines[::step][:k]


@functools.lru_cache(maxsize=4)
def _monitor_after_drill(scenario: str = "backdoor_canary", n: int = 20000):
    """A drill model's monitor after a drill (reference learned, alerts, labels): its messages too."""
    from detectors.engine import ModelMonitor
    from stream.decoding import JsonDecoder

    spec = _spec()
    model = spec.models[0]
    drill = _drill(scenario, n)
    dec = JsonDecoder()
    events = []
    for line in drill.inference:
        try:
            events.append(dec.decode_inference(line))
        except Exception:  # noqa: BLE001 - garbage lines of the drill
            continue
    for i, e in enumerate(events):
        e.position = i
    monitor = ModelMonitor(model, spec.calibration, spec.alerts, spec.max_tracked_versions)
    messages = monitor.process_inference(events)
    return spec, monitor, events, messages


@functools.cache
def _message_seeds() -> list[bytes]:
    d = _drill()
    extra = [b'{"event_id": "e", "ts": NaN, "model": "m", "model_version": "v", "features": {}, "prediction": "p"}',
             b'{"event_id": "\\ud800", "ts": 1, "model": "m", "model_version": "v", "features": {"x": 1e999}, '
             b'"prediction": "p", "confidence": NaN}', b"", b"null", b"[]"]
    return _pick(d.inference) + _pick(d.labels, 20) + extra


@functools.cache
def _mapped_seeds() -> list[bytes]:
    from loadtest.drills import make_drill

    out = []
    for line in _pick(make_drill("garbage", n_events=2000, injection=1000, seed=7).inference, 20):
        doc = json.loads(line)
        nested = {"meta": {"id": doc.get("event_id"), "time": doc.get("ts"), "model": doc.get("model")},
                  "input": doc.get("features"), "output": {"label": doc.get("prediction"), "p": [0.2, 0.8]},
                  "ver": doc.get("model_version"), "label": doc.get("prediction"), "source": "vendor-a"}
        for selector in range(len(_topic_configs())):
            out.append(bytes([selector]) + json.dumps(nested).encode())
    return out


@functools.cache
def _record_seeds() -> list[bytes]:
    from detectors.events import JoinedLabel, LabelEvent
    from stream.records import encode_inference, encode_inference_batch, encode_label

    _, _, events, _ = _monitor_after_drill("garbage", 3000)
    recs = [encode_inference(e) for e in events[::60]]
    recs += [encode_label(JoinedLabel(LabelEvent(e.event_id, e.ts + 5, e.prediction, "vendor-a", i), e.model,
                                      e.model_version, e.deployment, e.prediction, e.ts))
             for i, e in enumerate(events[::150])]
    recs += encode_inference_batch(events[:40]) + encode_inference_batch(events[500:520])  # batch framing
    return recs


@functools.cache
def _state_seeds() -> list[bytes]:
    import orjson

    from detectors.state import decode_state

    out = []
    for scenario, n in (("stationary", 3000), ("backdoor_canary", 20000)):  # armed; armed with alerts and labels
        blob = _monitor_after_drill(scenario, n)[1].to_bytes()
        out += [b"\x00" + orjson.dumps(decode_state(blob)), b"\x01" + blob]
    return out


@functools.cache
def _control_seeds() -> list[bytes]:
    from stream.control import encode, prepare

    _, _, _, messages = _monitor_after_drill()
    docs = [encode(prepare(m, _signing_key())) for m in messages]  # alerts and a signed rollback
    return docs + [b"\n".join(docs), b"[" + b",".join(docs) + b"]", b"{}"]


@functools.cache
def _profile_seeds() -> list[bytes]:
    import orjson

    from detectors.profile import build_profile

    spec, _, events, _ = _monitor_after_drill("stationary", 3000)
    return [orjson.dumps(build_profile(spec.models[0], events[:2000]).to_dict())]


@functools.cache
def _config_seeds() -> list[bytes]:
    import yaml

    from loadtest.drills import drill_config

    return [(ROOT / "examples" / "content-filter.yaml").read_bytes(), yaml.safe_dump(drill_config()).encode()]


@functools.cache
def _adwin_seeds() -> list[bytes]:
    import base64

    from detectors.sequential import Adwin

    out = []
    for delta, n in ((0.002, 0), (0.002, 300), (0.01, 2000)):
        a = Adwin(delta)
        for i in range(n):
            a.update(float(i % 7) + (3.0 if i > n // 2 else 0.0))
        st = a.to_state()
        out.append(bytes([round(delta * 1000) - 1]) + base64.b64decode(st["blob"]))
    return out


@functools.cache
def _redis_seeds() -> list[bytes]:
    return [b"\x00" + b'["v1", "stable", "safe", 1767225600.5]', b"\x01" + b"12345", b"\x02" + b'["m1", "m2"]',
            b"\x01" + b"-1", b"\x00" + b'["v1", "canary", "nsfw", "nan"]']


def _signing_key():
    from stream.signing import SigningKey

    return SigningKey("fuzz", b"fuzzing-signing-key-0123456789")


# -- harnesses -------------------------------------------------------------------------------------
def _event_checks():
    """The checks every decoded event passes: limits, re-encoding, metric label rendering."""
    import math

    from detectors.events import DEPLOYMENTS, JoinedLabel
    from stream.metrics import WorkerMetrics
    from stream.records import decode_record, encode_inference, encode_label

    metrics = WorkerMetrics(max_label_values=16)

    def text(v: Any, lim: int, what: str) -> None:
        _require(type(v) is str and 0 < len(v) <= lim, f"{what} is not a non-empty string within the limit")
        v.encode("utf-8")

    def inference(e: Any, lim: Any) -> None:
        for name in ("event_id", "model", "model_version", "prediction"):
            text(getattr(e, name), lim.max_string, name)
        _require(type(e.ts) is float and math.isfinite(e.ts), "ts is not a finite float")
        _require(e.deployment in DEPLOYMENTS, "unknown deployment")
        _require(type(e.features) is dict and len(e.features) <= lim.max_features, "features over the limit")
        e.position = 42
        back = decode_record(encode_inference(e)).inference
        _require(back is not None and (back.event_id, back.model, back.model_version, back.prediction) ==
                 (e.event_id, e.model, e.model_version, e.prediction), "inference does not round-trip")
        _require(back.features.keys() == e.features.keys(), "features do not round-trip")
        metrics.unknown_model(e.model)
        metrics.control_message({"kind": "alert", "model": e.model, "version": e.model_version,
                                 "deployment": e.deployment, "signal": "s", "key": next(iter(e.features), "")})

    def label(lab: Any, lim: Any) -> None:
        for name in ("event_id", "label", "source"):
            text(getattr(lab, name), lim.max_string, name)
        _require(type(lab.ts) is float and math.isfinite(lab.ts), "ts is not a finite float")
        lab.position = 7
        back = decode_record(encode_label(JoinedLabel(lab, "m", "v", "stable", "p", lab.ts))).label
        _require(back is not None and back.label.source == lab.source, "label does not round-trip")
        metrics.processed(lab.source, "l", 1)

    return inference, label, metrics


def _decoder_harness(kind: str, mapped: bool):
    def setup():
        from stream.decoding import DecodeError, JsonDecoder

        check_inference, check_label, metrics = _event_checks()
        decoders = [JsonDecoder(**cfg) for cfg in _topic_configs()] if mapped else [JsonDecoder()]
        seen = [0]

        def one(data: bytes) -> None:
            d = decoders[data[0] % len(decoders)] if mapped and data else decoders[0]
            raw = data[1:] if mapped else data
            if kind == "inference":
                check_inference(d.decode_inference(raw), d.limits)
            else:
                check_label(d.decode_label(raw), d.limits)
            seen[0] += 1
            if seen[0] % 200 == 0:
                metrics.render().decode("utf-8")

        def guarded(data: bytes) -> None:
            try:
                if not data:  # an empty input stands for a tombstone (a null value) as well
                    try:
                        (decoders[0].decode_inference if kind == "inference" else decoders[0].decode_label)(None)
                    except DecodeError:
                        pass
                one(data)
            except DecodeError as err:
                _require(bool(err.reason), "DecodeError without a reason")
                json.dumps({"reason": err.reason, "detail": str(err)}).encode("utf-8")
                raise

        return guarded, (DecodeError,)
    return setup


def _topic_configs() -> list[dict[str, Any]]:
    from stream.decoding import Limits

    ptr = {"event_id": "/meta/id", "ts": "/meta/time", "model": "/meta/model", "features": "/input",
           "prediction": "/output/label", "confidence": "/output/p/1", "model_version": "ver"}
    return [
        {"fields": ptr},
        {"fields": ptr, "ts_unit": "ms"},
        {"fields": {**ptr, "model": "/meta/model"}, "constants": {"model_version": "v1", "deployment": "canary"},
         "ts_unit": "ns"},
        {"constants": {"model": "content-filter", "source": 7}, "ts_unit": "us"},
        {"fields": ptr, "limits": Limits(max_bytes=512, max_features=4, max_string=16, max_scores=2)},
        {"limits": Limits(max_bytes=256, max_features=2, max_string=16, max_scores=1)},
    ]



def _record_setup():
    from detectors.engine import ModelMonitor
    from stream.records import RecordError, decode_batch, decode_record

    spec = _spec()
    model = spec.models[0]
    state = {"monitor": ModelMonitor(model, spec.calibration, spec.alerts), "n": 0}

    def one(data: bytes) -> None:
        m = state["monitor"]
        if data[:3] == b"DLB":  # batch framing (format 2): one model's run of events or labels
            batch = decode_batch(data)
            _require(type(batch.model) is str, "batch model is not a string")
            if batch.model == model.name and batch.kind == "i":
                m.process_inference(batch.items)
            elif batch.model == model.name and batch.kind == "l":
                m.process_labels(batch.items)
            state["n"] += 1
            return
        rec = decode_record(data)
        _require(type(rec.model) is str, "record model is not a string")
        if rec.model == model.name:
            if rec.inference is not None:
                m.process_inference([rec.inference])
            else:
                m.process_labels([rec.label])
            state["n"] += 1
            if state["n"] % 500 == 0:
                state["monitor"] = ModelMonitor.from_bytes(model, spec.calibration, spec.alerts, m.to_bytes())

    return one, (RecordError,)


def _state_setup():
    from detectors.engine import ModelMonitor
    from detectors.errors import StateFormatError
    from detectors.state import pack_document

    spec = _spec()
    model = spec.models[0]
    _, _, events, _ = _monitor_after_drill("stationary", 600)
    probe = events[-50:]

    def one(data: bytes) -> None:
        if data[:1] == b"\x01":
            blob = data[1:]
        else:
            blob = pack_document(data[1:])
        m = ModelMonitor.from_bytes(model, spec.calibration, spec.alerts, blob)
        m.process_inference(probe)
        try:
            ModelMonitor.from_bytes(model, spec.calibration, spec.alerts, m.to_bytes())
        except StateFormatError as exc:
            raise PropertyViolation(f"a loaded state saved a state that does not load: {exc}") from None

    return one, (StateFormatError,)


def _adwin_setup():
    import base64

    from detectors.errors import StateFormatError
    from detectors.sequential import Adwin

    def one(data: bytes) -> None:
        delta = ((data[0] if data else 1) % 200 + 1) / 1000  # the first byte picks delta, the rest is the blob
        st = {"args": [delta, 8, 5, 5, 10], "blob": base64.b64encode(data[1:]).decode()}
        a = Adwin.from_state(st)
        for i in range(64):
            a.update(float(i % 5))
        try:
            Adwin.from_state(a.to_state())
        except StateFormatError as exc:
            raise PropertyViolation(f"a loaded ADWIN saved a state that does not load: {exc}") from None

    return one, (StateFormatError,)


def _redis_setup():
    import math

    from detectors.errors import StateFormatError
    from stream.state import _decode_pending, _split, parse_offset

    def one(data: bytes) -> None:
        which, raw = (data[0] % 3 if data else 0), data[1:]
        if which == 0:
            p = _decode_pending(raw)
            _require(p is None or (type(p.ts) is float and math.isfinite(p.ts)), "pending ts not finite")
        elif which == 1:
            off = parse_offset(raw, "k")
            _require(off is None or 0 <= off < 1 << 63, "offset out of range")
        else:
            _require(all(type(m) is str for m in _split(raw, "k")), "staged model not a string")

    return one, (StateFormatError,)


def _control_setup():
    import io

    from stream.control import check, read_documents
    from stream.signing import VerifyResult, canonical_bytes, verify

    key = _signing_key()
    signed = set()
    for seed in _SEEDS:
        try:
            doc = json.loads(seed)
        except ValueError:
            continue
        if isinstance(doc, dict) and doc.get("kind") == "rollback":
            signed.add(canonical_bytes(doc))
    _require(bool(signed), "the seeds hold a signed rollback")

    def one(data: bytes) -> None:
        for item in read_documents(io.BytesIO(data), "fuzz"):
            if item.error:
                continue
            result = check(item.doc, key)
            _require(isinstance(result, VerifyResult), "check gave no verdict")
            _require(isinstance(verify(item.doc, key), VerifyResult), "verify gave no verdict")
            if result.ok and isinstance(item.doc, dict) and item.doc.get("kind") == "rollback":
                _require(canonical_bytes(item.doc) in signed, "a changed rollback verified")

    return one, ()


def _profile_setup():
    import orjson

    from detectors.engine import ModelMonitor
    from detectors.errors import ProfileFormatError
    from detectors.profile import ReferenceProfile

    spec = _spec()
    model = spec.models[0]
    _, _, events, _ = _monitor_after_drill("sudden_shift", 3000)
    probe = events[-300:]

    def one(data: bytes) -> None:
        parsed = 0
        for reader in (json.loads, orjson.loads):
            try:
                doc = reader(data)
            except (ValueError, RecursionError):
                continue  # not JSON: the reader's own error
            parsed += 1
            prof = ReferenceProfile.from_dict(model, doc)
            m = ModelMonitor(model, spec.calibration, spec.alerts)
            m.set_reference(prof)
            m.process_inference(probe)
            ModelMonitor.from_bytes(model, spec.calibration, spec.alerts, m.to_bytes())
        if not parsed:
            raise NotJson("neither reader parses the input")

    return one, (ProfileFormatError, NotJson)


def _config_setup():
    from stream.config import ConfigError, consumer_settings, load_config
    from stream.decoding import build_decoders

    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    scratch = Path(tempfile.mkdtemp(prefix="driftline-fuzz-", dir=base))
    _SCRATCH.append(scratch)
    path = scratch / "driftline.yaml"

    def one(data: bytes) -> None:
        path.write_bytes(data)
        cfg = load_config(path)
        build_decoders(cfg)
        consumer_settings(cfg)

    return one, (ConfigError,)


HARNESSES: dict[str, Harness] = {
    "inference": Harness(_decoder_harness("inference", False), _message_seeds),
    "label": Harness(_decoder_harness("label", False), _message_seeds),
    "inference_mapped": Harness(_decoder_harness("inference", True), _mapped_seeds),
    "label_mapped": Harness(_decoder_harness("label", True), _mapped_seeds),
    "record": Harness(_record_setup, _record_seeds),
    "state": Harness(_state_setup, _state_seeds, max_len=1 << 20),  # a real state's JSON is a few 100 KiB
    "adwin": Harness(_adwin_setup, _adwin_seeds),
    "redis_values": Harness(_redis_setup, _redis_seeds, max_len=256),
    "control": Harness(_control_setup, _control_seeds, max_len=16384),
    "profile": Harness(_profile_setup, _profile_seeds, max_len=32768),
    "config": Harness(_config_setup, _config_seeds, max_len=16384),
}


# -- one harness, in its own process ---------------------------------------------------------------
def _where(exc: BaseException) -> str:
    """The innermost frame of the project's own code in a traceback (file:line function)."""
    frames = traceback.extract_tb(exc.__traceback__)
    own = [f for f in frames if str(ROOT) in f.filename and "loadtest/fuzz.py" not in f.filename] or frames
    f = own[-1]
    return f"{Path(f.filename).resolve().relative_to(ROOT) if str(ROOT) in f.filename else f.filename}:{f.lineno} {f.name}"


def run_child(name: str, runs: int | None, seconds: float | None, corpus: Path, out: Path, findings_dir: Path,
              rss_limit_mb: int, input_timeout: int, seed: int | None = None) -> None:
    """Fuzz one harness until ``runs`` inputs or ``seconds`` elapse; write its report to ``out``."""
    import atheris

    harness = HARNESSES[name]
    _SEEDS.extend(p.read_bytes() for p in sorted(corpus.glob("seed-*")))
    # imported before instrumenting: numba compiles their kernels and cannot compile atheris' tracing calls
    import detectors.calibration  # noqa: F401
    import detectors.cusum  # noqa: F401
    import detectors.numeric  # noqa: F401
    with atheris.instrument_imports(include=["stream", "detectors"]):
        one, allowed = harness.setup()
    report: dict[str, Any] = {"parser": name, "executions": 0, "accepted": 0, "rejected": 0, "findings": {}}
    started = time.monotonic()
    last_write = [started]

    def write() -> None:
        elapsed = time.monotonic() - started
        report["seconds"] = round(elapsed, 2)
        report["execs_per_second"] = round(report["executions"] / max(elapsed, 1e-3))
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(report))
        tmp.replace(out)

    def test_one_input(data: bytes) -> None:
        report["executions"] += 1
        try:
            one(data)
            report["accepted"] += 1
        except allowed:
            report["rejected"] += 1
        except BaseException as exc:  # noqa: BLE001 - anything else is a finding (PanicException is one)
            if isinstance(exc, KeyboardInterrupt):
                raise
            sig = f"{type(exc).__name__} at {_where(exc)}"
            f = report["findings"].setdefault(sig, {"type": type(exc).__name__, "where": _where(exc), "count": 0})
            f["count"] += 1
            if f["count"] == 1:
                digest = hashlib.sha1(data).hexdigest()[:16]
                path = findings_dir / f"{name}-{digest}"
                path.write_bytes(data)
                f.update(message=str(exc)[:300], input=str(path), input_preview=data[:120].decode("utf-8", "replace"))
        now = time.monotonic()
        done = (runs is not None and report["executions"] >= runs) or (seconds is not None and now - started >= seconds)
        if done or now - last_write[0] >= 2.0:
            last_write[0] = now
            write()
        if done:
            for d in _SCRATCH:
                shutil.rmtree(d, ignore_errors=True)
            sys.stdout.flush()
            os._exit(0)

    args = [sys.argv[0], str(corpus), f"-rss_limit_mb={rss_limit_mb}", f"-timeout={input_timeout}",
            f"-max_len={harness.max_len}", "-print_final_stats=0", "-close_fd_mask=1"]
    if seed is not None:
        args.append(f"-seed={seed}")
    atheris.Setup(args, test_one_input)
    atheris.Fuzz()


# -- the driver ------------------------------------------------------------------------------------
def run_harness(name: str, runs: int | None, seconds: float | None, work: Path, rss_limit_mb: int = 2048,
                input_timeout: int = 20, seed: int | None = None) -> dict[str, Any]:
    """Fuzz one harness in a child process; its report, plus libFuzzer's own findings (OOM, timeout)."""
    corpus = work / f"corpus-{name}"
    corpus.mkdir(parents=True, exist_ok=True)
    findings = work / "findings"
    findings.mkdir(exist_ok=True)
    for i, data in enumerate(HARNESSES[name].seeds()):
        (corpus / f"seed-{i:03d}").write_bytes(data)
    started = time.monotonic()
    out = work / f"report-{name}.json"
    script = Path(sys.argv[0]).resolve() if sys.argv[0].endswith(".py") else Path(__file__).resolve()
    cmd = [sys.executable, str(script), "--child", name, "--corpus", str(corpus),  # the script that registered it
           "--report", str(out), "--findings", str(findings), "--rss-limit-mb", str(rss_limit_mb),
           "--input-timeout", str(input_timeout)]
    if runs is not None:
        cmd += ["--runs", str(runs)]
    if seconds is not None:
        cmd += ["--seconds", str(seconds)]
    if seed is not None:
        cmd += ["--seed", str(seed)]
    budget = (seconds or 0) + 600 if runs is None else None
    env = dict(os.environ, RUST_BACKTRACE="0")  # river's panics (caught as findings or refusals) print no backtrace
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=budget, cwd=ROOT, env=env)
    report = json.loads(out.read_text()) if out.exists() else {"parser": name, "executions": 0, "findings": {}}
    report["findings"] = list(report.get("findings", {}).values())
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-15:]
        kind = next((k for k, marker in (("out_of_memory", "out-of-memory"), ("timeout", "ERROR: libFuzzer: timeout"),
                                          ("crash", "ERROR: libFuzzer")) if any(marker in t for t in tail)), "exit")
        crash = next((t.split()[-1] for t in tail if "Test unit written to" in t), None)
        report["findings"].append({"type": kind, "where": f"exit status {proc.returncode}", "count": 1,
                                   "message": "\n".join(tail)[-1500:], "input": crash})
    report["corpus_size"] = len(list(corpus.iterdir()))
    report["process_seconds"] = round(time.monotonic() - started, 1)
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--parsers", default="all", help=f"comma-separated, or all: {','.join(HARNESSES)}")
    p.add_argument("--runs", type=int, default=None, help="inputs per harness")
    p.add_argument("--seconds", type=float, default=None, help="seconds per harness")
    p.add_argument("--work", default=None, help="directory for corpora and finding inputs (default: a temp dir)")
    p.add_argument("--out", default=None, help="also write the JSON report here")
    p.add_argument("--rss-limit-mb", type=int, default=2048, help="libFuzzer's memory bound per harness process")
    p.add_argument("--input-timeout", type=int, default=20, help="seconds one input may take")
    p.add_argument("--jobs", type=int, default=1, help="harness processes at a time")
    p.add_argument("--seed", type=int, default=None, help="libFuzzer's random seed (default: from the clock)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--corpus", help=argparse.SUPPRESS)
    p.add_argument("--report", help=argparse.SUPPRESS)
    p.add_argument("--findings", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        run_child(args.child, args.runs, args.seconds, Path(args.corpus), Path(args.report), Path(args.findings),
                  args.rss_limit_mb, args.input_timeout, args.seed)
        return 0
    if args.runs is None and args.seconds is None:
        args.seconds = 60.0
    names = list(HARNESSES) if args.parsers == "all" else [n.strip() for n in args.parsers.split(",")]
    unknown = sorted(set(names) - set(HARNESSES))
    if unknown:
        p.error(f"unknown parsers {unknown}; known: {', '.join(HARNESSES)}")
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="driftline-fuzz-"))
    started = time.monotonic()
    for n in names:  # seeds first, in this process (drills are shared through a cache)
        HARNESSES[n].seeds()
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        reports = list(pool.map(lambda n: run_harness(n, args.runs, args.seconds, work, args.rss_limit_mb,
                                                      args.input_timeout, args.seed), names))
    result = {"harnesses": reports, "total_executions": sum(r.get("executions", 0) for r in reports),
              "total_findings": sum(len(r["findings"]) for r in reports),
              "wall_seconds": round(time.monotonic() - started, 1), "work_dir": str(work),
              "limits": {"rss_limit_mb": args.rss_limit_mb, "input_timeout_s": args.input_timeout}}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
