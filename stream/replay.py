"""Replay recorded inference and label logs through the detection engine, without Kafka or Redis.

The two files are merged by timestamp so labels arrive as they did live; labels are joined in
memory with the predictions they refer to, under the same bounded horizon as the worker's
pending store. Every control message the engine raises is written as one JSON line (the
control-topic document plus ``"replay": {"stream", "line"}``). Dirty input (malformed lines,
wrong types, unknown models, labels too late or for unknown events) is counted by reason and
skipped. Positions, hence alert ids, come from line numbers, so a replay is reproducible.

Items are read in micro-batches of ``batch_size`` merged lines; within a batch, inference
events are processed before labels (``batch_size=1`` keeps the exact arrival interleaving).

With ``--registry REG.jsonl`` (and a ``registry`` section in the config), signed registry events
are merged in by ``issued_at`` (ahead of events of the same second), verified as the worker
verifies them and applied to the models' manifests where they fall in the stream: a batch ends at
each registry event, so the allow-list changes exactly there, whatever ``batch_size``.
"""
from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from sys import intern
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson
import yaml

from detectors.engine import Engine
from detectors.events import InferenceEvent, JoinedLabel, LabelEvent
from detectors.profile import ReferenceProfile
from detectors.spec import MonitorSpec
from stream.collector import fewer_collections
from stream.decode_process import MAX_PROCESSES, DecodeProcesses, DecodeProcessError, auto_processes
from stream.decoding import Decoder, JsonDecoder, decoder_for_topic
from stream.lines import INFERENCE, LABELS, REGISTRY, STREAM_NAMES, decoded_batches, decoded_items, open_lines

DEFAULT_HORIZON_S = 86_400.0
EXPIRED_MEMORY = 1_000_000        # expired event ids remembered to tell "too late" from "unknown"
DEFAULT_BATCH = 4096


@dataclass
class ReplayConfig:
    """What a replay needs from the driftline configuration."""

    monitor: MonitorSpec
    inference_decoder: Decoder = field(default_factory=JsonDecoder)
    label_decoder: Decoder = field(default_factory=JsonDecoder)
    horizon_seconds: float = DEFAULT_HORIZON_S
    references: dict[str, ReferenceProfile] = field(default_factory=dict)
    label_models: frozenset[str] | None = None  # the label topic's model scope (None: every model)
    registry_keys: dict[str, Any] | None = None  # key id -> Ed25519 public key; None: static version lists
    registry_max_age: float | None = 30 * 86_400.0
    registry_max_future: float = 300.0


@dataclass
class ReplayReport:
    """Counts of one replay: lines, events, joins, rejects by reason, control messages, speed."""

    inference_lines: int = 0
    label_lines: int = 0
    events: int = 0
    labels_joined: int = 0
    registry_lines: int = 0
    registry_accepted: int = 0
    rejected: dict[str, Counter] = field(default_factory=lambda: {"inference": Counter(), "labels": Counter()})
    unknown_model_events: int = 0
    unknown_model_labels: int = 0
    messages: Counter = field(default_factory=Counter)
    detections: dict[str, dict[str, int]] = field(default_factory=dict)  # model -> signal -> detections
    seconds: float = 0.0
    collected: list[dict[str, Any]] = field(default_factory=list)

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"inference_lines": self.inference_lines, "label_lines": self.label_lines, "events": self.events,
                "labels_joined": self.labels_joined,
                **({"registry_lines": self.registry_lines, "registry_accepted": self.registry_accepted}
                   if self.registry_lines else {}),
                "rejected": {k: dict(sorted(v.items())) for k, v in self.rejected.items()},
                "unknown_model_events": self.unknown_model_events,
                "unknown_model_labels": self.unknown_model_labels,
                "control_messages": dict(sorted(self.messages.items())), "detections": self.detections,
                "seconds": round(self.seconds, 3),
                "events_per_second": round(self.events_per_second, 1)}

    def summary(self) -> str:
        """A few human-readable lines for stderr."""
        rows = [f"replay: {self.events} events from {self.inference_lines} inference lines, "
                f"{self.labels_joined} labels joined from {self.label_lines} label lines, "
                f"{self.seconds:.2f}s ({self.events_per_second:,.0f} events/s)",
                "control messages: " + (", ".join(f"{k}={v}" for k, v in sorted(self.messages.items())) or "none")]
        for stream, c in self.rejected.items():
            if c:
                rows.append(f"skipped {stream}: " + ", ".join(f"{k}={v}" for k, v in c.most_common()))
        if self.unknown_model_events or self.unknown_model_labels:
            rows.append(f"unknown models: {self.unknown_model_events} events, {self.unknown_model_labels} labels")
        return "\n".join(rows)


# -- configuration ------------------------------------------------------------------------------
def load_replay_config(path: str | Path, inference_topic: str | None = None,
                       label_topic: str | None = None) -> ReplayConfig:
    """Read a driftline YAML config: the ``monitor`` section, topic field mappings, the label horizon.

    A complete worker configuration is validated as the worker would; a file holding only the
    ``monitor`` section (optionally with ``kafka.*_topics`` / ``redis``), or only a
    ``MonitorSpec`` (``models: ...``), is accepted too. Raises ``ValueError`` on invalid input.
    """
    from stream.config import RegistrySpec, TopicSpec, parse_config

    path = Path(path)
    doc = yaml.safe_load(path.read_text())
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    if "kafka" in doc and "signing" in doc:
        full = parse_config(doc, str(path))
        monitor, horizon = full.monitor, float(full.redis.pending_ttl_seconds)
        inf_topics, lab_topics = list(full.kafka.inference_topics), list(full.kafka.label_topics)
        registry = full.registry
    else:
        monitor = MonitorSpec.model_validate(doc["monitor"] if "monitor" in doc else doc)
        kafka = doc.get("kafka") or {}
        inf_topics = [TopicSpec.model_validate(t) for t in kafka.get("inference_topics") or []]
        lab_topics = [TopicSpec.model_validate(t) for t in kafka.get("label_topics") or []]
        horizon = float((doc.get("redis") or {}).get("pending_ttl_seconds") or DEFAULT_HORIZON_S)
        registry = RegistrySpec.model_validate(doc["registry"]) if doc.get("registry") else None
    inf = _pick_topic(inf_topics, inference_topic, "inference")
    lab = _pick_topic(lab_topics, label_topic, "label")
    refs: dict[str, ReferenceProfile] = {}
    for m in monitor.models:
        if m.reference_file:
            ref_path = Path(m.reference_file)
            if not ref_path.is_absolute():
                ref_path = path.parent / ref_path
            refs[m.name] = ReferenceProfile.from_dict(m, json.loads(ref_path.read_text()))
    scope = frozenset(lab.models) if lab is not None and lab.models else None
    cfg = ReplayConfig(monitor, decoder_for_topic(inf) if inf else JsonDecoder(),
                       decoder_for_topic(lab) if lab else JsonDecoder(), horizon, refs, scope)
    if registry is not None:
        from stream.registry import load_public_keys

        cfg.registry_keys = load_public_keys({k: v if Path(v).is_absolute() else str(path.parent / v)
                                              for k, v in registry.public_keys.items()})
        cfg.registry_max_age, cfg.registry_max_future = registry.max_age_seconds, registry.max_future_seconds
    return cfg


def _pick_topic(topics: list[Any], name: str | None, what: str) -> Any:
    if name is None:
        return topics[0] if topics else None
    for t in topics:
        if t.name == name:
            return t
    raise ValueError(f"no {what} topic named {name!r} in the configuration")


# -- input --------------------------------------------------------------------------------------
def _merged_batches(inference: Iterator[list[InferenceEvent]], labels: Iterator[list[LabelEvent]],
                    batch_size: int) -> Iterator[list[InferenceEvent | LabelEvent]]:
    """The merge of two decoded streams (as :func:`_merge`: by ts, each stream's order kept, ties to
    inference) cut into lists of ``batch_size`` items."""
    a: list[Any] = next(inference, [])
    b: list[Any] = next(labels, [])
    i = j = 0
    while True:
        out: list[Any] = []
        room = batch_size
        while room:
            if i == len(a):
                a, i = next(inference, []), 0
                if not a:
                    break
            if j == len(b):
                b, j = next(labels, []), 0
                if not b:
                    break
            x, y = a[i], b[j]
            if y.ts < x.ts:
                out.append(y)
                j += 1
            else:
                out.append(x)
                i += 1
            room -= 1
        # one stream is exhausted (or the batch is full): the other's items follow in order
        while room and (a or b):
            if a and i < len(a):
                take = a[i:i + room]
                i += len(take)
            elif b and j < len(b):
                take = b[j:j + room]
                j += len(take)
            elif a:
                a, i = next(inference, []), 0
                continue
            else:
                b, j = next(labels, []), 0
                continue
            out.extend(take)
            room -= len(take)
        if not out:
            return
        yield out


def _registry_batches(merged: Iterator[tuple], batch_size: int
                      ) -> Iterator[tuple[list[Any], list[Any], float | None]]:
    """The line-by-line merge with registry events cut into batches of ``batch_size`` lines; a batch
    also ends at a registry event (what came before it sees the old manifest). Yields (events and
    labels in order, the registry entry ending the batch if any, the last line's time)."""
    while True:
        order: list[Any] = []
        entries: list[Any] = []
        now = None
        for ts, stream, _, item in merged:
            now = ts
            if stream == REGISTRY:
                entries.append(item)
                break
            order.append(item)
            if len(order) >= batch_size:
                break
        if now is None:
            return
        yield order, entries, now


def _registry_items(fh: IO[bytes], config: ReplayConfig, rejected: Counter,
                    models: frozenset[str]) -> Iterator[tuple[float, int, int, Any]]:
    """(issued_at, REGISTRY, line, entry) for every registry line that verifies; rejects counted by reason."""
    from stream.registry import RegistryError, parse_event, verify_event

    keys = config.registry_keys or {}
    for line_no, line in enumerate(fh, 1):
        if not line or line.isspace():
            rejected["blank_line"] += 1
            continue
        try:
            entry = verify_event(parse_event(line.strip()), keys, max_future=config.registry_max_future)
        except RegistryError as err:
            rejected[err.reason] += 1
            continue
        if entry.model not in models:
            rejected["registry_unknown_model"] += 1
            continue
        yield float(entry.issued_at), REGISTRY, line_no, entry


def _merge(a: Iterator[tuple], b: Iterator[tuple]) -> Iterator[tuple]:
    """Merge two streams by ts, keeping each stream's own order (ties: inference first)."""
    x, y = next(a, None), next(b, None)
    while x is not None and y is not None:
        if y[0] < x[0]:
            yield y
            y = next(b, None)
        else:
            yield x
            x = next(a, None)
    rest, it = (x, a) if x is not None else (y, b)
    if rest is not None:
        yield rest
        yield from it


class LabelJoin:
    """Predictions awaiting labels, by event id and model, forgotten ``horizon`` seconds after their ts.

    As in the worker, models that share request ids each keep their own prediction, and a label
    joins every model that predicted its event (within the label topic's scope). ``pending`` maps
    an event id to its one prediction ``(model, version, deployment, prediction, ts)``, or to
    ``{model: prediction}`` when several models predicted it (the rare case pays for the dict).
    Predictions are forgotten in the order they were remembered (a prediction remembered again
    moves to the end): ``order`` holds (event id, prediction) per remembering, and an entry that is
    no longer its model's held prediction is skipped. The few distinct names (models, versions,
    deployments, classes) are interned, so a remembered prediction keeps none of its event's
    strings but the id alive.
    """

    def __init__(self, horizon: float, scope: frozenset[str] | None = None) -> None:
        self.horizon = horizon
        self.scope = scope
        # event id -> (model, version, deployment, prediction, ts), or model -> that tuple
        self.pending: dict[str, tuple[str, str, str, str, float] | dict[str, tuple[str, str, str, str, float]]] = {}
        self.order: deque[tuple[str, tuple[str, str, str, str, float]]] = deque()
        self.expired: OrderedDict[str, None] = OrderedDict()

    def remember(self, e: InferenceEvent) -> None:
        eid = e.event_id
        value = (intern(e.model), intern(e.model_version), intern(e.deployment), intern(e.prediction), e.ts)
        pending = self.pending
        held = pending.get(eid)
        if held is None or (type(held) is tuple and held[0] == value[0]):
            pending[eid] = value
        elif type(held) is tuple:
            pending[eid] = {held[0]: held, value[0]: value}
        else:
            held[value[0]] = value
        self.order.append((eid, value))

    def expire(self, now: float) -> None:
        limit = now - self.horizon
        pending, expired, order = self.pending, self.expired, self.order
        while order:
            eid, value = order[0]
            held = pending.get(eid)
            shared = type(held) is dict
            if not (held is value or shared and held.get(value[0]) is value):
                order.popleft()  # remembered again later: that entry counts
                continue
            if value[4] >= limit:
                break
            order.popleft()
            if not shared:
                del pending[eid]
            else:
                del held[value[0]]
                if len(held) == 1:
                    pending[eid] = next(iter(held.values()))
            expired[eid] = None
            if len(expired) > EXPIRED_MEMORY:
                expired.popitem(last=False)

    def join(self, lab: LabelEvent) -> list[JoinedLabel] | str:
        """The label joined with each model's prediction of its event, or why it cannot be joined."""
        held = self.pending.get(lab.event_id)
        preds: list[tuple[str, str, str, str, float]] | tuple[tuple[str, str, str, str, float], ...]
        if held is None:
            preds = ()
        elif type(held) is tuple:
            preds = (held,)
        else:
            preds = [held[m] for m in sorted(held)]
        if preds and self.scope is not None:
            preds = [p for p in preds if p[0] in self.scope]
        if not preds:
            return "label_too_late" if lab.event_id in self.expired else "label_unknown_event"
        horizon, ts = self.horizon, lab.ts
        out = [JoinedLabel(lab, m, version, deployment, prediction, pts)
               for m, version, deployment, prediction, pts in preds if ts - pts <= horizon]
        return out or "label_too_late"


# -- replay -------------------------------------------------------------------------------------
def run_replay(config: ReplayConfig | MonitorSpec | str | Path, inference_path: str | Path,
               labels_path: str | Path | None, alerts_out: str | Path | IO[bytes] | None,
               batch_size: int = DEFAULT_BATCH, horizon_seconds: float | None = None,
               collect: bool = False, on_message: Callable[[dict[str, Any]], None] | None = None,
               engine: Engine | None = None,
               on_batch: Callable[[Engine, float], None] | None = None,
               registry_path: str | Path | None = None, decode_processes: int | None = None) -> ReplayReport:
    """Replay the logs through a fresh :class:`~detectors.engine.Engine` (or ``engine``); write control messages.

    ``on_batch(engine, now)`` runs after every micro-batch with its event time (read-only
    observers such as :class:`stream.trace.StatsTrace`). ``registry_path``: signed registry events
    (JSONL) merged in by ``issued_at``; needs ``config.registry_keys``. ``decode_processes``: how
    many other processes decode the inference file (:mod:`stream.decode_process`; 0: this one);
    None decides by the file's size and the spare cores. The results are the same either way.
    """
    if isinstance(config, (str, Path)):
        config = load_replay_config(config)
    elif isinstance(config, MonitorSpec):
        config = ReplayConfig(config)
    horizon = config.horizon_seconds if horizon_seconds is None else horizon_seconds
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    if registry_path is not None and config.registry_keys is None:
        raise ValueError("a registry log needs the registry section (public_keys) in the configuration")
    if decode_processes is None:
        decode_processes = 0 if registry_path is not None else auto_processes(inference_path,
                                                                              config.inference_decoder)
    elif decode_processes and (registry_path is not None or str(inference_path) == "-"
                               or not isinstance(config.inference_decoder, JsonDecoder)
                               or config.inference_decoder.settings() is None):
        raise ValueError("decoding processes need an inference file (not stdin), the JSON decoder and no "
                         "registry log")
    elif not 0 <= decode_processes <= MAX_PROCESSES:
        raise ValueError(f"decoding processes must be between 0 and {MAX_PROCESSES}")
    engine = engine or Engine(config.monitor, registry=config.registry_keys is not None)
    for name, ref in config.references.items():
        engine.monitors[name].set_reference(ref)
    models = frozenset(engine.monitors) if labels_path is not None else frozenset()
    report = ReplayReport()
    join = LabelJoin(horizon, config.label_models)
    clock: float | None = None
    out, close_out = _open_out(alerts_out)
    started = time.perf_counter()
    children: DecodeProcesses | None = None
    inf_fh = open_lines(inference_path)
    lab_fh = open_lines(labels_path) if labels_path is not None else None
    reg_fh = open_lines(registry_path) if registry_path is not None else None
    registry_entries: list[Any] = []
    with fewer_collections():  # stream.collector: collections took a quarter of a replay with labels
        try:
            lab_rejected = report.rejected["labels"]
            # each batch: (inference events and labels in merged order, registry entries, event time)
            alone = None
            batches: Iterator[tuple[list[Any], list[Any], float | None]]
            if reg_fh is None:  # whole decoded lists, merged by index, without a tuple per line
                if decode_processes:
                    inf_fh.close()
                    children = DecodeProcesses(inference_path, config.inference_decoder, batch_size,
                                               report.rejected["inference"], decode_processes)
                    inf_lists = children.batches()
                else:
                    inf_lists = decoded_batches(inf_fh, INFERENCE, config.inference_decoder,
                                                report.rejected["inference"], batch_size)
                if lab_fh is None:
                    alone = inf_lists
                else:
                    batches = ((order, [], order[-1].ts) for order in _merged_batches(
                        inf_lists, decoded_batches(lab_fh, LABELS, config.label_decoder, lab_rejected, batch_size),
                        batch_size))
            else:  # registry events end batches where they fall: merged line by line
                merged = decoded_items(inf_fh, INFERENCE, config.inference_decoder, report.rejected["inference"])
                if lab_fh is not None:
                    merged = _merge(merged, decoded_items(lab_fh, LABELS, config.label_decoder, lab_rejected))
                reg_rejected = report.rejected.setdefault("registry", Counter())
                batches = _registry_batches(_merge(_registry_items(reg_fh, config, reg_rejected,
                                                                   frozenset(engine.monitors)), merged), batch_size)
            remember, join_label = join.remember, join.join
            while True:
                events: list[InferenceEvent] = []
                joined: list[JoinedLabel] = []
                n = 0
                now = None
                if alone is not None:
                    events = next(alone, events)
                    n = len(events)
                    now = events[-1].ts if n else None
                else:
                    order, registry_entries, now = next(batches, ((), [], None))
                    n = len(order) + len(registry_entries)
                    for item in order:
                        if isinstance(item, LabelEvent):
                            j = join_label(item)
                            if isinstance(j, str):
                                lab_rejected[j] += 1
                            else:
                                joined.extend(j)
                        else:
                            events.append(item)
                            if item.model in models:
                                remember(item)
                if n == 0:
                    break
                msgs = engine.process_inference(events) if events else []
                if joined:
                    msgs += engine.process_labels(joined)
                if registry_entries:
                    for entry, reason in zip(registry_entries, engine.apply_registry(registry_entries,
                                                                                     config.registry_max_age)):
                        if reason is None:
                            report.registry_accepted += 1
                        else:
                            reg_rejected[reason] += 1
                report.events += len(events)
                report.labels_joined += len(joined)
                for m in msgs:
                    doc = m.to_dict()
                    pos = doc.get("position", -1)
                    doc["replay"] = {"stream": STREAM_NAMES[pos >> 56] if pos >= 0 else None,
                                     "line": pos & ((1 << 40) - 1) if pos >= 0 else None}
                    report.messages[doc.get("kind", "?")] += 1
                    if out is not None:
                        out.write(orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY, default=str) + b"\n")
                    if collect:
                        report.collected.append(doc)
                    if on_message is not None:
                        on_message(doc)
                if now is not None and join.pending:
                    join.expire(now)
                if on_batch is not None and now is not None:
                    clock = now if clock is None else max(clock, now)
                    on_batch(engine, clock)
        finally:
            inf_fh.close()
            if children is not None:
                children.close()
            if lab_fh is not None:
                lab_fh.close()
            if reg_fh is not None:
                reg_fh.close()
            if close_out and out is not None:
                out.close()
            elif out is not None:
                out.flush()
    report.seconds = time.perf_counter() - started
    report.inference_lines = sum(report.rejected["inference"].values()) + report.events
    report.label_lines = sum(report.rejected["labels"].values()) + report.labels_joined
    if "registry" in report.rejected:
        report.registry_lines = report.registry_accepted + sum(report.rejected["registry"].values())
    report.detections = {name: {k: v for k, v in mon.detections.items() if v}
                         for name, mon in engine.monitors.items()}
    report.unknown_model_events = engine.unknown_model_events
    report.unknown_model_labels = engine.unknown_model_labels
    if engine.unknown_model_events:
        report.rejected["inference"]["unknown_model"] += engine.unknown_model_events
        report.events -= engine.unknown_model_events
    return report


def _open_out(target: str | Path | IO[bytes] | None) -> tuple[IO[bytes] | None, bool]:
    if target is None:
        return None, False
    if not isinstance(target, (str, Path)):
        return target, False
    if str(target) == "-":
        return sys.stdout.buffer, False
    p = Path(target)
    p.parent.mkdir(parents=True, exist_ok=True)
    return (gzip.open(p, "wb") if p.suffix == ".gz" else open(p, "wb")), True


# -- command line -------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``driftline replay``."""
    parser.add_argument("--config", required=True, help="driftline YAML config (its monitor section is used)")
    parser.add_argument("--inference", required=True, help="inference JSONL (.gz accepted, - for stdin)")
    parser.add_argument("--labels", help="label JSONL (.gz accepted)")
    parser.add_argument("--registry", help="signed registry events JSONL (.gz accepted); needs the config's "
                                           "registry section")
    parser.add_argument("--alerts", required=True, help="output JSONL of control messages (- for stdout)")
    parser.add_argument("--report", help="also write the replay counters as JSON here")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH,
                        help="merged lines per micro-batch (the HTML report samples statistics once per batch)")
    parser.add_argument("--horizon", type=float, default=None,
                        help="label-join horizon in seconds (default: redis.pending_ttl_seconds of the config)")
    parser.add_argument("--inference-topic", help="take the field mapping of this inference topic of the config")
    parser.add_argument("--label-topic", help="take the field mapping of this label topic of the config")
    parser.add_argument("--decode-processes", type=int, default=None, metavar="N",
                        help="other processes decoding the inference file (0: none; default: one per spare core "
                             "for files of 32 MiB or more); the results are the same either way")
    parser.add_argument("--quiet", action="store_true", help="no summary on stderr")
    parser.add_argument("--html", metavar="OUT.html",
                        help="also write a self-contained HTML backtest report (statistics against thresholds "
                             "over event time, detections, alerts, input integrity)")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``replay`` on an ``argparse`` subparsers object."""
    p = subparsers.add_parser("replay", help="run the detectors over recorded logs, without Kafka or Redis",
                              description=__doc__.splitlines()[0])
    add_arguments(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Execute ``driftline replay``; 0 on success, 2 on a configuration or input error."""
    try:
        cfg = load_replay_config(args.config, args.inference_topic, args.label_topic)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        print(f"driftline replay: bad configuration: {exc}", file=sys.stderr)
        return 2
    if args.inference == "-" and args.labels == "-":
        print("driftline replay: only one input can be stdin", file=sys.stderr)
        return 2
    trace = engine = None
    messages: list[dict[str, Any]] = []
    if getattr(args, "html", None):
        from stream.trace import StatsTrace

        engine = Engine(cfg.monitor, registry=cfg.registry_keys is not None)
        trace = StatsTrace().attach(engine)
    try:
        report = run_replay(cfg, args.inference, args.labels, args.alerts, batch_size=args.batch_size,
                            horizon_seconds=args.horizon, engine=engine,
                            on_message=messages.append if trace is not None else None,
                            on_batch=trace.sample if trace is not None else None, registry_path=args.registry,
                            decode_processes=args.decode_processes)
    except ValueError as exc:
        print(f"driftline replay: {exc}", file=sys.stderr)
        return 2
    except (OSError, DecodeProcessError) as exc:
        print(f"driftline replay: {exc}", file=sys.stderr)
        return 2
    if trace is not None:
        from stream.backtest_report import write_html

        sources = [f"config {args.config}", f"inference {args.inference}"]
        if args.labels:
            sources.append(f"labels {args.labels}")
        path = write_html(args.html, report, trace, messages, "driftline backtest", sources)
        if not args.quiet:
            print(f"HTML report: {path}", file=sys.stderr)
    if not args.quiet:
        print(report.summary(), file=sys.stderr)
    if args.report:
        Path(args.report).write_text(json.dumps(report.to_dict(), indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point (``python -m stream.replay ...``)."""
    parser = argparse.ArgumentParser(prog="driftline replay", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
