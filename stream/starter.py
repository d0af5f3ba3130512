"""`driftline init`: a starter configuration learned from a sample of a team's own logs.

The sample (the start of a JSONL file, plain or gzip, or of a Kafka topic; :mod:`stream.log_sample`)
is profiled to find the field mapping (:mod:`stream.layout`), then decoded with it exactly as the
worker and replay will decode it. From the decoded events come the models, their versions (and
the one that looks stable: the most traffic on the ``stable`` deployment), classes (predictions,
score keys, labels) and features: numeric or categorical, with integrity bounds implied by the
observed range (``[0, 1]`` for shares, ``min: 0`` for counts). The YAML carries a comment on
every choice it could not make for sure (``# REVIEW:``), on features left out (booleans, ids,
values of no usable type) and on the malformed lines skipped. The written file is validated
with the worker's own configuration model before it is written, so ``driftline check-config``
and ``driftline replay`` accept it as is.

Hostile samples are bounded: lines, bytes, models (:data:`MAX_MODELS`), versions, classes,
features per model and distinct values per feature.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from stream.decoding import DecodeError, JsonDecoder, Limits, parse_json
from stream.layout import Layout, ShapeProfile, inference_layout, label_layout, name_score
from stream.log_sample import DEFAULT_LINES, Sample, sample_file, sample_topic

MAX_MODELS = 32
MAX_VERSIONS = 64
MAX_CLASSES = 256
MAX_FEATURES = 512          # decoding.Limits.max_features
MAX_DISTINCT = 1024         # distinct values remembered per feature
MAX_NAME = 256              # longer feature, model, version or class names are left out
TOP_K = 32                  # FeatureSpec.top_k default
MAX_IDS = 200_000           # inference event ids remembered to find the labels' id field
_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_YAML_WORDS = {"y", "n", "yes", "no", "on", "off", "true", "false", "null", "none", "~"}


# -- statistics of decoded events ----------------------------------------------------------------
class FeatureStats:
    """The values one feature of one model took in the sample."""

    __slots__ = ("n", "kinds", "distinct", "overflow", "repeats", "lo", "hi", "increasing", "last")

    def __init__(self) -> None:
        self.n = 0
        self.kinds: Counter = Counter()   # int, float, str, bool, null, nan, inf, other
        self.distinct: set[Any] = set()
        self.overflow = False
        self.repeats = 0     # values already among the remembered ones (an id column has none)
        self.lo = math.inf
        self.hi = -math.inf
        self.increasing = True
        self.last = -math.inf

    def add(self, v: Any) -> None:
        self.n += 1
        t = type(v)
        if t is float or t is int:
            f = float(v) if t is float or abs(v) < 1 << 1000 else math.inf
            if f != f:
                self.kinds["nan"] += 1
                return
            if f in (math.inf, -math.inf):
                self.kinds["inf"] += 1
                return
            self.kinds["int" if t is int else "float"] += 1
            self.lo, self.hi = min(self.lo, f), max(self.hi, f)
            if f <= self.last:
                self.increasing = False
            self.last = f
            self._remember(v)
        elif t is str:
            self.kinds["str"] += 1
            self._remember(v[:MAX_NAME])
        elif t is bool:
            self.kinds["bool"] += 1
        elif v is None:
            self.kinds["null"] += 1
        else:
            self.kinds["other"] += 1

    def _remember(self, v: Any) -> None:
        if v in self.distinct:
            self.repeats += 1
        else:
            if len(self.distinct) < MAX_DISTINCT:
                self.distinct.add(v)
            else:
                self.overflow = True

    @property
    def numbers(self) -> int:
        return self.kinds["int"] + self.kinds["float"]

    def id_like(self, count: int) -> bool:
        """Almost every value differs from every other (with enough values to tell)."""
        return count >= 50 and self.repeats <= 0.01 * count


@dataclass
class ModelStats:
    """What one model's events showed: versions per deployment, classes, features."""

    name: str
    events: int = 0
    versions: Counter = field(default_factory=Counter)
    stable: Counter = field(default_factory=Counter)      # version -> events on the stable deployment
    deployments: dict[str, Counter] = field(default_factory=dict)  # version -> deployment -> events
    first_seen: dict[str, int] = field(default_factory=dict)       # version -> index of its first event
    versions_dropped: int = 0
    classes: Counter = field(default_factory=Counter)
    classes_dropped: int = 0
    features: dict[str, FeatureStats] = field(default_factory=dict)
    features_dropped: set[str] = field(default_factory=set)

    def add(self, e: Any, index: int) -> None:
        self.events += 1
        v = e.model_version
        if v in self.versions or len(self.versions) < MAX_VERSIONS:
            self.versions[v] += 1
            self.first_seen.setdefault(v, index)
            self.deployments.setdefault(v, Counter())[e.deployment] += 1
            if e.deployment == "stable":
                self.stable[v] += 1
        else:
            self.versions_dropped += 1
        for c in (e.prediction, *(e.scores or ())):
            if c in self.classes or len(self.classes) < MAX_CLASSES:
                self.classes[c] += 1
            else:
                self.classes_dropped += 1
        feats = self.features
        for k, val in e.features.items():
            fs = feats.get(k)
            if fs is None:
                if len(feats) >= MAX_FEATURES:
                    if len(self.features_dropped) < 16:
                        self.features_dropped.add(k[:40])
                    continue
                fs = feats[k] = FeatureStats()
            fs.add(val)


@dataclass
class Learned:
    """Everything ``init`` learned: layouts, per-model statistics, skipped lines, notes."""

    inference: Sample
    layout: Layout
    models: dict[str, ModelStats]
    rejected: Counter
    models_dropped: Counter
    labels: Sample | None = None
    label_layout: Layout | None = None
    label_rejected: Counter = field(default_factory=Counter)
    label_classes: Counter = field(default_factory=Counter)
    labels_decoded: int = 0


def _profile(sample: Sample, rejected: Counter) -> ShapeProfile:
    prof = ShapeProfile()
    limit = Limits().max_bytes
    for raw in sample.lines:
        try:
            obj = parse_json(raw, limit)
        except DecodeError as err:
            rejected[err.reason] += 1
            continue
        if type(obj) is not dict:
            rejected["not_an_object"] += 1
            continue
        prof.add(obj)
    return prof


def learn(inference: Sample, labels: Sample | None = None, model_name: str = "model") -> Learned:
    """Profile and decode the samples; no I/O."""
    pre: Counter = Counter()
    prof = _profile(inference, pre)
    lay = inference_layout(prof, model_name)
    decoder = JsonDecoder(lay.mapping, lay.constants, ts_unit=lay.ts_unit)
    rejected: Counter = Counter()
    models: dict[str, ModelStats] = {}
    dropped: Counter = Counter()
    ids: set[str] = set()
    for i, raw in enumerate(inference.lines):
        try:
            e = decoder.decode_inference(raw)
        except DecodeError as err:
            rejected[err.reason] += 1
            continue
        st = models.get(e.model)
        if st is None:
            if len(models) >= MAX_MODELS or len(e.model) > MAX_NAME:
                dropped[e.model[:60]] += 1
                continue
            st = models[e.model] = ModelStats(e.model)
        st.add(e, i)
        if len(ids) < MAX_IDS:
            ids.add(e.event_id)
    out = Learned(inference, lay, models, rejected, dropped)
    if labels is not None:
        lprof = _profile(labels, Counter())
        llay = label_layout(lprof, ids)
        ldec = JsonDecoder(llay.mapping, llay.constants, ts_unit=llay.ts_unit)
        for raw in labels.lines:
            try:
                lab = ldec.decode_label(raw)
            except DecodeError as err:
                out.label_rejected[err.reason] += 1
                continue
            out.labels_decoded += 1
            if lab.label in out.label_classes or len(out.label_classes) < MAX_CLASSES:
                out.label_classes[lab.label] += 1
        out.labels, out.label_layout = labels, llay
    return out


# -- decisions ----------------------------------------------------------------------------------
def _fmt(x: float) -> str:
    return f"{x:.6g}"


def feature_spec(name: str, fs: FeatureStats, events: int) -> tuple[dict[str, Any] | None, str]:
    """A ``FeatureSpec`` dictionary (or None: left out) and the comment explaining it."""
    if not name or len(name) > MAX_NAME:
        return None, "name empty or too long"
    valid = fs.numbers + fs.kinds["str"]
    usable = valid + fs.kinds["bool"] + fs.kinds["other"] + fs.kinds["nan"] + fs.kinds["inf"]
    if usable == 0:
        return None, "no value in the sample (only null)"
    if fs.kinds["bool"] >= 0.5 * usable:
        return None, "booleans (driftline counts them as a wrong type; send 0/1 or strings to monitor it)"
    notes = []
    missing = events - fs.n + fs.kinds["null"]
    if missing:
        notes.append(f"missing or null in {missing / events:.1%} of events")
    numeric = fs.numbers + fs.kinds["nan"] + fs.kinds["inf"]
    if numeric >= 0.9 * usable:
        count = fs.numbers
        if fs.kinds["float"] == 0 and fs.id_like(count) and (fs.increasing or name_score(f"/{name}", "event_id")):
            return None, f"looks like an id (integers, {count - fs.repeats} of {count} distinct" \
                         f"{', increasing' if fs.increasing else ''})"
        spec: dict[str, Any] = {"name": name, "type": "numeric"}
        if count:
            integers = fs.kinds["float"] == 0
            if fs.lo >= 0.0 and fs.hi <= 1.0 and fs.hi - fs.lo >= 0.5 and not integers:
                spec["min"], spec["max"] = 0.0, 1.0  # a share or a probability
            elif fs.lo >= 0.0 and fs.hi > 0.0 and (integers or fs.lo < 0.1 * fs.hi):
                spec["min"] = 0.0  # a count or a size: never negative
            rng = f"observed {_fmt(fs.lo)} .. {_fmt(fs.hi)}"
            if fs.kinds["float"] == 0:
                rng += f", integers ({'>' if fs.overflow else ''}{len(fs.distinct)} distinct)"
            notes.insert(0, rng)
            if len(fs.distinct) == 1:
                notes.append("constant in the sample")
        odd = usable - numeric
        if odd:
            notes.append(f"{odd / usable:.1%} of values are not numbers (counted as wrong type)")
        bad = fs.kinds["nan"] + fs.kinds["inf"]
        if bad:
            notes.append(f"{bad / usable:.1%} NaN/Infinity")
        return spec, "; ".join(notes)
    if fs.kinds["str"] + fs.kinds["int"] >= 0.9 * usable:
        count = fs.kinds["str"] + fs.kinds["int"]
        if fs.id_like(count):
            return None, f"looks like an id ({count - fs.repeats} of {count} values distinct)"
        spec = {"name": name, "type": "categorical"}
        k = len(fs.distinct)
        notes.insert(0, f"{'over ' if fs.overflow else ''}{k} distinct value{'s' if k != 1 else ''}"
                        + (f"; the {TOP_K} most frequent are tracked, the rest pooled" if k > TOP_K else ""))
        odd = usable - count
        if odd:
            notes.append(f"{odd / usable:.1%} of values are not strings (counted as wrong type)")
        return spec, "; ".join(notes)
    kinds = ", ".join(f"{k} {v / usable:.0%}" for k, v in fs.kinds.most_common() if k != "null")
    return None, f"mixed value types ({kinds})"


def stable_version(st: ModelStats) -> tuple[str, str]:
    """The version that looks stable and why: the most stable-deployment traffic, else the most traffic."""
    if st.stable:
        v, n = st.stable.most_common(1)[0]
        why = f"the most events on the stable deployment ({n / st.events:.0%} of the model's events)"
        if any(d != "stable" for c in st.deployments.values() for d in c):
            return v, why
        return v, f"the most events ({n / st.events:.0%}); the logs name no deployment"
    v, n = st.versions.most_common(1)[0]
    return v, f"the most events ({n / st.events:.0%}), none on the stable deployment"


# -- YAML ---------------------------------------------------------------------------------------
def _q(v: Any) -> str:
    """A YAML scalar: plain when unambiguous, else JSON-quoted (JSON strings are valid YAML)."""
    if isinstance(v, bool) or v is None:
        return json.dumps(v)
    if isinstance(v, (int, float)):
        return repr(float(v)) if isinstance(v, float) else str(v)
    s = str(v)
    if _PLAIN.match(s) and s.lower() not in _YAML_WORDS:
        return s
    return json.dumps(s, ensure_ascii=False)


def _c(text: str) -> str:
    """Text safe inside a YAML comment: one line, printable, bounded."""
    text = "".join(ch if ch.isprintable() else "?" for ch in text)
    return text if len(text) <= 300 else text[:297] + "..."


class _Doc:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def comment(self, indent: int, text: str) -> None:
        self.lines.append(" " * indent + "# " + _c(text))

    def line(self, indent: int, text: str, comment: str | None = None) -> None:
        self.lines.append(" " * indent + text + (f"  # {_c(comment)}" if comment else ""))

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _counts(c: Counter) -> str:
    return ", ".join(f"{k}={v}" for k, v in c.most_common())


def _topic(doc: _Doc, name: str, lay: Layout, what: str) -> None:
    doc.line(2, f"- name: {_q(name)}", f"the topic these {what} are written to")
    for fld, note in lay.notes:
        doc.comment(4, f"REVIEW: {fld}: {note}")
    if lay.mapping:
        doc.line(4, "field_mapping:")
        for fld, ptr in lay.mapping.items():
            doc.line(6, f"{fld}: {_q(ptr)}")
    if lay.constants:
        doc.line(4, "constants:", "fields these logs do not carry")
        for fld, val in lay.constants.items():
            doc.line(6, f"{fld}: {_q(val)}")
    if lay.ts_unit != "s":
        doc.line(4, f"ts_unit: {lay.ts_unit}", "numeric timestamps are epoch " + {
            "ms": "milliseconds", "us": "microseconds", "ns": "nanoseconds"}[lay.ts_unit])


def render(learned: Learned, bootstrap: str, inference_topic: str, label_topic: str | None,
           redis_url: str) -> tuple[str, dict[str, int]]:
    """The starter YAML text and a summary (models, features kept and left out, notes)."""
    s = learned.inference
    doc = _Doc()
    summary = {"models": 0, "features": 0, "left_out": 0, "review": 0}
    doc.comment(0, f"driftline starter configuration, written by `driftline init` from {s.read} line(s) of "
                   f"{s.source}{'' if s.exhausted else ' (the first lines only)'}.")
    decoded = sum(m.events for m in learned.models.values())
    skipped = learned.rejected + s.skipped
    doc.comment(0, f"{decoded} event(s) decoded" + (f"; skipped: {_counts(skipped)}" if skipped else ""))
    if learned.labels is not None:
        doc.comment(0, f"labels: {learned.labels_decoded} of {learned.labels.read} line(s) of "
                       f"{learned.labels.source} decoded" +
                       (f"; skipped: {_counts(learned.label_rejected + learned.labels.skipped)}"
                        if learned.label_rejected or learned.labels.skipped else ""))
    doc.comment(0, "Lines marked REVIEW name what the sample could not decide. Check with "
                   "`driftline check-config --config FILE`.")
    doc.line(0, "kafka:")
    doc.line(2, f"bootstrap_servers: {_q(bootstrap)}")
    doc.line(2, "inference_topics:")
    _topic(doc, inference_topic, learned.layout, "inference logs")
    if learned.label_layout is not None and label_topic:
        doc.line(2, "label_topics:")
        _topic(doc, label_topic, learned.label_layout, "labels")
    doc.line(0, "redis:")
    doc.line(2, f"url: {_q(redis_url)}")
    doc.line(0, "signing:", "HMAC key of rollback commands: export it before `driftline run`, never in this file")
    doc.line(2, "key_env: DRIFTLINE_SIGNING_KEY")
    doc.line(0, "monitor:")
    doc.line(2, "models:")
    if learned.models_dropped:
        doc.comment(2, f"REVIEW: more than {MAX_MODELS} models; left out: {_counts(learned.models_dropped)}")
    models = sorted(learned.models.values(), key=lambda m: -m.events)
    if not models:
        doc.comment(2, "REVIEW: no event of the sample could be decoded; a placeholder model follows")
        models = [ModelStats(str(learned.layout.constants.get("model", "model")))]
    for st in models:
        summary["models"] += 1
        _model(doc, st, learned, summary)
    summary["review"] = sum("# REVIEW:" in line for line in doc.lines)
    return doc.text(), summary


def _model(doc: _Doc, st: ModelStats, learned: Learned, summary: dict[str, int]) -> None:
    doc.line(2, f"- name: {_q(st.name)}", f"{st.events} event(s) in the sample")
    classes = [c for c, _ in st.classes.most_common() if len(c) <= MAX_NAME]
    extra = [c for c, _ in learned.label_classes.most_common() if c not in st.classes and len(c) <= MAX_NAME]
    classes += extra[:max(0, MAX_CLASSES - len(classes))]
    if not classes:
        classes = ["unknown"]
        doc.comment(4, "REVIEW: no class seen in the sample")
    doc.line(4, "classes: [" + ", ".join(_q(c) for c in classes) + "]",
             "from predictions and score keys" + (", and labels" if extra else ""))
    if st.classes_dropped:
        doc.comment(4, f"REVIEW: over {MAX_CLASSES} classes; the rarest were left out")
    versions = [v for v, _ in st.versions.most_common() if len(v) <= MAX_NAME] or ["v1"]
    doc.line(4, "versions: [" + ", ".join(_q(v) for v in versions) + "]",
             ", ".join(f"{v}: {n / max(st.events, 1):.0%}" for v, n in st.versions.most_common(6)))
    if st.versions_dropped:
        doc.comment(4, f"REVIEW: over {MAX_VERSIONS} versions; {st.versions_dropped} event(s) of the others "
                       "will raise version_integrity")
    late = [v for v in versions if st.versions[v] < 0.05 * st.events
            and st.first_seen.get(v, 0) > 0.5 * learned.inference.read]
    if late:
        doc.comment(4, f"REVIEW: {len(late)} version(s) serve under 5% of the traffic and first appear late in the "
                       f"sample ({', '.join(map(repr, late[:4]))}{', ...' if len(late) > 4 else ''}): keep them "
                       "listed only if you deployed them (an unlisted version raises version_integrity)")
    if st.events:
        stable, why = stable_version(st)
        if stable in versions:
            doc.line(4, f"stable_version: {_q(stable)}", why)
    doc.line(4, "features:" if st.features else "features: []",
             None if st.features else "REVIEW: no features seen")
    left_out = []
    for name, fs in st.features.items():
        spec, note = feature_spec(name, fs, st.events)
        if spec is None:
            left_out.append((name, note))
            continue
        summary["features"] += 1
        body = ", ".join(f"{k}: {_q(v)}" for k, v in spec.items())
        doc.line(4, f"- {{{body}}}", note or None)
    for name, note in left_out:
        summary["left_out"] += 1
        doc.comment(4, f"left out: {name[:60]!r}: {note}")
    if st.features_dropped:
        doc.comment(4, f"REVIEW: over {MAX_FEATURES} features; left out e.g. {sorted(st.features_dropped)[:5]}")
    doc.comment(4, "triggers: predicates on features whose events are watched for backdoors, e.g.")
    doc.comment(4, "  - {name: partner_logo, feature: logo, equals: partner}")


# -- command line -------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``driftline init``."""
    parser.add_argument("--inference", help="inference JSONL sample (.gz accepted, - for stdin); "
                                            "without it, read --inference-topic from --bootstrap")
    parser.add_argument("--labels", help="label JSONL sample (.gz accepted)")
    parser.add_argument("--inference-topic", default=None,
                        help="inference topic: read from Kafka when --inference is not given; written to the config")
    parser.add_argument("--label-topic", default=None,
                        help="label topic: read from Kafka when --labels is not given; written to the config")
    parser.add_argument("--bootstrap", default=None, help="Kafka bootstrap servers (PLAINTEXT), also written to the "
                                                          "config (default 127.0.0.1:9092)")
    parser.add_argument("--sample", type=int, default=DEFAULT_LINES, help="lines or messages read per source "
                                                                         "(0: all)")
    parser.add_argument("--timeout", type=float, default=15.0, help="seconds to read a Kafka topic")
    parser.add_argument("--model-name", default="model", help="model name when the logs name none")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0", help="written to the config")
    parser.add_argument("--out", default="driftline.yaml", help="config to write (- for stdout)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing --out file")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``init`` on an ``argparse`` subparsers object."""
    p = subparsers.add_parser("init", help="write a starter config from a sample of your logs",
                              description=__doc__.splitlines()[0])
    add_arguments(p)
    p.set_defaults(func=run)
    return p


def _read(path: str | None, topic: str | None, args: argparse.Namespace, what: str) -> Sample | None:
    if path is not None:
        return sample_file(path, args.sample)
    if topic is None:
        return None
    if args.bootstrap is None:
        raise ValueError(f"reading {what} from topic {topic!r} needs --bootstrap")
    return sample_topic(args.bootstrap, topic, args.sample, args.timeout)


def run(args: argparse.Namespace) -> int:
    """Execute ``driftline init``; 0 written, 1 nothing usable in the sample, 2 bad usage or input."""
    from stream.config import ConfigError, parse_config

    if args.inference is None and args.inference_topic is None:
        print("driftline init: give --inference FILE or --inference-topic TOPIC with --bootstrap", file=sys.stderr)
        return 2
    out = Path(args.out)
    if args.out != "-" and out.exists() and not args.force:
        print(f"driftline init: {out} exists (use --force to overwrite)", file=sys.stderr)
        return 2
    try:
        inf = _read(args.inference, args.inference_topic, args, "inference logs")
        lab = _read(args.labels, args.label_topic, args, "labels")
    except (OSError, ValueError) as exc:
        print(f"driftline init: {exc}", file=sys.stderr)
        return 2
    assert inf is not None
    learned = learn(inf, lab, args.model_name)
    text, summary = render(learned, args.bootstrap or "127.0.0.1:9092", args.inference_topic or "ml.inference",
                           (args.label_topic or "ml.labels") if lab is not None else None, args.redis_url)
    try:
        parse_config(yaml.safe_load(text), "generated configuration")
    except (ConfigError, yaml.YAMLError) as exc:  # a bug: the generated file must always validate
        print(f"driftline init: the generated configuration does not validate:\n{exc}", file=sys.stderr)
        return 1
    if args.out == "-":
        sys.stdout.write(text)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
    decoded = sum(m.events for m in learned.models.values())
    print(f"driftline init: {'stdout' if args.out == '-' else out}: {summary['models']} model(s), "
          f"{summary['features']} feature(s) ({summary['left_out']} left out) from {decoded} of {inf.read} "
          f"line(s); {summary['review']} point(s) to REVIEW", file=sys.stderr)
    return 0 if decoded else 1


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point (``python -m stream.starter ...``)."""
    parser = argparse.ArgumentParser(prog="driftline init", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
