"""Which JSON pointers of a team's log messages hold driftline's fields, learned from a sample.

Every parsed message is walked (bounded depth, keys and number of paths); per pointer the kinds of
values, a bounded set of distinct values, the numeric range and ISO-8601 strings are counted
(:class:`ShapeProfile`). Each driftline field then takes the pointer that fits its name hints and
value shape best (:func:`inference_layout`, :func:`label_layout`); what could not be decided
(rival candidates, missing fields, values driftline cannot read) is returned as notes for the
generated configuration.

>>> prof = ShapeProfile()
>>> for i in range(50):
...     prof.add({"meta": {"rid": f"r{i}", "time_ms": 1767225600000 + i}, "m": {"name": "fraud", "version": "7"},
...               "input": {"amount": i * 1.5, "country": "DE"}, "out": {"label": "ok", "probs": {"ok": 0.9, "bad": 0.1}}})
>>> lay = inference_layout(prof)
>>> lay.ts_unit, lay.chosen["ts"], lay.chosen["features"], lay.chosen["scores"], lay.chosen["prediction"]
('ms', '/meta/time_ms', '/input', '/out/probs', '/out/label')
"""
from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from detectors.events import DEPLOYMENTS

MAX_DEPTH = 5            # pointer segments walked
MAX_KEYS_WALKED = 64     # keys per object whose values are walked further
MAX_PATHS = 2048         # distinct pointers profiled; later ones are counted, not profiled
MAX_DISTINCT = 1024      # distinct scalar values remembered per pointer
MAX_OBJECT_KEYS = 1024   # distinct keys remembered per object pointer
ISO_CHECKS = 64          # distinct strings per pointer tried as ISO-8601 times
# epoch ranges (2000-01-01 .. 2100-01-01) per unit of a numeric timestamp
_EPOCH = (946_684_800.0, 4_102_444_800.0)
UNITS: dict[str, float] = {"s": 1.0, "ms": 1e3, "us": 1e6, "ns": 1e9}

_HINTS: dict[str, tuple[str, ...]] = {
    "event_id": ("event_id", "eventid", "request_id", "requestid", "prediction_id", "inference_id", "message_id",
                 "correlation_id", "trace_id", "uuid", "id", "rid", "req_id"),
    "ts": ("ts", "timestamp", "time", "event_time", "eventtime", "event_ts", "created_at", "createdat", "created",
           "datetime", "logged_at", "served_at", "when", "time_ms", "ts_ms", "timestamp_ms", "time_us", "time_ns", "at"),
    "model": ("model", "model_name", "modelname", "model_id", "model_name", "name", "model_key"),
    "model_version": ("model_version", "modelversion", "version", "model_ver", "ver", "revision", "model_revision",
                      "model_tag", "tag"),
    "deployment": ("deployment", "deploy", "track", "stage", "slot", "variant", "channel", "rollout", "role",
                   "traffic", "deployment_type"),
    "features": ("features", "feature", "input", "inputs", "x", "payload", "attributes", "feature_values",
                 "request", "data", "columns"),
    "prediction": ("prediction", "predicted", "predicted_label", "predicted_class", "pred", "label", "class",
                   "output", "decision", "result", "verdict", "predicted_category", "category", "y_pred"),
    "scores": ("scores", "score", "probabilities", "probability", "probs", "proba", "class_scores",
               "confidences", "distribution", "likelihoods"),
    "confidence": ("confidence", "conf", "score", "probability", "prob", "certainty", "top_score", "max_score"),
    "label": ("label", "true_label", "truth", "ground_truth", "y", "y_true", "class", "annotation", "verdict",
              "category", "decision", "gold"),
    "source": ("source", "labeler", "labeller", "annotator", "vendor", "rater", "reviewer", "origin", "provider"),
}
# a segment of the parent object completes a generic leaf name: /model/name -> model_name
_PARENT_FIELDS = {"name": "model", "id": None, "version": "model"}


def escape(key: str) -> str:
    """One JSON-pointer segment (RFC 6901: ``~`` -> ``~0``, ``/`` -> ``~1``)."""
    return key.replace("~", "~0").replace("/", "~1")


def _segments(pointer: str) -> list[str]:
    return [p.replace("~1", "/").replace("~0", "~") for p in pointer[1:].split("/")] if pointer else []


def _norm(name: str) -> str:
    s = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)  # camelCase -> camel_case
    return re.sub(r"[^a-z0-9]+", "_", s.lower()).strip("_")


def name_score(pointer: str, fld: str) -> int:
    """How well a pointer's last segments name ``fld``: 3 exact, 2 with the parent, 1 a partial match, else 0."""
    segs = [_norm(s) for s in _segments(pointer)]
    if not segs:
        return 0
    leaf = segs[-1]
    hints = _HINTS[fld]
    parent = segs[-2] if len(segs) > 1 else ""
    joined = f"{parent}_{leaf}" if parent else leaf
    if leaf in hints and not (fld == "model" and leaf == "name" and parent != "model"):
        if fld == "model_version" and leaf == "version" and parent and parent != "model":
            return 2
        return 3
    if joined in hints:
        return 2
    tokens = set(leaf.split("_"))
    if fld == "ts" and (tokens & {"time", "timestamp", "ts", "at", "date"}):
        return 1
    if fld == "event_id" and (tokens & {"id", "uuid"}) and len(tokens) <= 3:
        return 1
    if any(h in tokens for h in hints if len(h) > 2):
        return 1
    return 0


class PathStats:
    """What one pointer held across the sample."""

    __slots__ = ("present", "kinds", "distinct", "overflow", "lo", "hi", "iso", "iso_tried", "keys", "scalar_objects",
                 "unit_objects", "key_total", "numeric_strings")

    def __init__(self) -> None:
        self.present = 0
        self.kinds: Counter = Counter()
        self.distinct: Counter = Counter()   # str(value) -> count, bounded
        self.overflow = False
        self.lo = math.inf
        self.hi = -math.inf
        self.iso = 0
        self.iso_tried = 0
        self.keys: Counter = Counter()       # object pointers: key -> objects holding it, bounded
        self.scalar_objects = 0              # objects whose values are all scalars
        self.unit_objects = 0                # objects whose values are all numbers within [0, 1]
        self.key_total = 0
        self.numeric_strings = 0

    def share(self, *kinds: str) -> float:
        """Share of occurrences with one of these value kinds."""
        return sum(self.kinds[k] for k in kinds) / self.present if self.present else 0.0

    @property
    def values(self) -> set[str]:
        return set(self.distinct)

    @property
    def unique(self) -> bool:
        """Every value seen once (or too many to remember)."""
        return self.overflow or (len(self.distinct) == self.present and self.present > 1)

    def unit(self) -> str | None:
        """The epoch unit of numeric values, when every one is a plausible time in that unit."""
        if not math.isfinite(self.lo):
            return None
        for unit, scale in UNITS.items():
            if _EPOCH[0] * scale <= self.lo and self.hi <= _EPOCH[1] * scale:
                return unit
        return None


def _kind(v: Any) -> str:
    t = type(v)
    if t is str:
        return "str"
    if t is bool:
        return "bool"
    if t is int:
        return "int"
    if t is float:
        return "float"
    if v is None:
        return "null"
    if t is dict:
        return "obj"
    if t is list:
        return "list"
    return "other"


class ShapeProfile:
    """Per JSON pointer statistics of a sample of parsed messages (see module doc)."""

    def __init__(self) -> None:
        self.paths: dict[str, PathStats] = {}
        self.objects = 0
        self.dropped_paths = 0

    def add(self, obj: Any) -> None:
        """Profile one parsed message (non-objects are counted by the caller)."""
        self.objects += 1
        self._walk(obj, "", 0)

    def _stats(self, pointer: str) -> PathStats | None:
        st = self.paths.get(pointer)
        if st is None:
            if len(self.paths) >= MAX_PATHS:
                self.dropped_paths += 1
                return None
            st = self.paths[pointer] = PathStats()
        return st

    def _walk(self, v: Any, pointer: str, depth: int) -> None:
        kind = _kind(v)
        st = self._stats(pointer) if pointer else None
        if st is not None:
            st.present += 1
            st.kinds[kind] += 1
            if kind in ("str", "int", "float"):
                self._scalar(st, v, kind)
            elif kind == "obj":
                self._object(st, v)
        if depth >= MAX_DEPTH:
            return
        if kind == "obj":
            for i, (k, sub) in enumerate(v.items()):
                if i >= MAX_KEYS_WALKED:
                    break
                self._walk(sub, f"{pointer}/{escape(k)}", depth + 1)
        elif kind == "list" and v:
            self._walk(v[0], f"{pointer}/0", depth + 1)

    @staticmethod
    def _scalar(st: PathStats, v: Any, kind: str) -> None:
        if kind == "str":
            key = v[:200]
            if key not in st.distinct and st.iso_tried < ISO_CHECKS:
                st.iso_tried += 1
                if 8 <= len(v) <= 64 and v[:1].isdigit() and _is_iso(v):
                    st.iso += 1
                elif _is_number_text(v):
                    st.numeric_strings += 1
        else:
            f = float(v) if kind == "int" and abs(v) < 1 << 63 else v
            if isinstance(f, float) and math.isfinite(f):
                st.lo = min(st.lo, f)
                st.hi = max(st.hi, f)
            key = str(v)[:200]
        if key in st.distinct:
            st.distinct[key] += 1
        elif len(st.distinct) < MAX_DISTINCT:
            st.distinct[key] = 1
        else:
            st.overflow = True

    @staticmethod
    def _object(st: PathStats, v: dict) -> None:
        st.key_total += len(v)
        scalar = unit = bool(v)
        for k, x in v.items():
            t = type(x)
            if t is dict or t is list:
                scalar = unit = False
                break
            if unit and not ((t is float or t is int) and 0.0 <= x <= 1.0):
                unit = False
        st.scalar_objects += scalar
        st.unit_objects += unit
        keys = st.keys
        for k in v:
            if k in keys:
                keys[k] += 1
            elif len(keys) < MAX_OBJECT_KEYS:
                keys[k] = 1


def _is_iso(v: str) -> bool:
    try:
        datetime.fromisoformat(v)
        return True
    except ValueError:
        return False


def _is_number_text(v: str) -> bool:
    try:
        float(v)
        return True
    except ValueError:
        return False


@dataclass
class Layout:
    """Where driftline's fields are: pointers, constants for absent fields, the timestamp unit, notes."""

    chosen: dict[str, str] = field(default_factory=dict)      # field -> pointer (every field found)
    constants: dict[str, str | int | float] = field(default_factory=dict)  # fields the logs do not carry
    ts_unit: str = "s"
    notes: list[tuple[str, str]] = field(default_factory=list)  # (field, what could not be decided)

    @property
    def mapping(self) -> dict[str, str]:
        """``field_mapping`` entries: only pointers other than the default top-level key."""
        return {f: p for f, p in self.chosen.items() if p != f"/{escape(f)}"}

    def note(self, fld: str, text: str) -> None:
        self.notes.append((fld, text))


def _inside(pointer: str, parents: list[str]) -> bool:
    return any(pointer == p or pointer.startswith(p + "/") for p in parents if p)


def _frequent(st: PathStats, n: int) -> float:
    return st.present / n if n else 0.0


def _rank(cands: list[tuple[tuple, str]]) -> list[str]:
    return [p for _, p in sorted(cands, key=lambda c: c[0], reverse=True)]


def _pick(layout: Layout, fld: str, cands: list[tuple[tuple, str]], what: str) -> str | None:
    """Take the best candidate; a runner-up with the same name score is reported as a note."""
    ranked = sorted(cands, key=lambda c: c[0], reverse=True)
    if not ranked:
        return None
    best = ranked[0][1]
    layout.chosen[fld] = best
    rivals = [p for key, p in ranked[1:4] if key[0] == ranked[0][0][0]]
    if rivals:
        layout.note(fld, f"{len(rivals) + 1} candidate {what} fields: {best} (chosen), {', '.join(rivals)}")
    return best


def _ts(layout: Layout, prof: ShapeProfile, exclude: list[str]) -> None:
    n = prof.objects
    cands = []
    digit_strings = []
    for p, st in prof.paths.items():
        if _inside(p, exclude) or _frequent(st, n) < 0.9:
            continue
        ns = name_score(p, "ts")
        if st.share("int", "float") >= 0.99 and st.unit() is not None:
            cands.append(((ns, st.present, st.kinds["float"] > 0), p))
        elif st.share("str") >= 0.99 and st.iso_tried and st.iso == st.iso_tried:
            cands.append(((ns, st.present, False), p))
        elif ns and st.share("str") >= 0.99 and st.numeric_strings == st.iso_tried and st.iso_tried:
            digit_strings.append(p)
    # a time without a time-like name competes only when nothing is named like one
    named = [c for c in cands if c[0][0] > 0]
    best = _pick(layout, "ts", named or cands, "timestamp")
    if best is None:
        layout.constants["ts"] = 0
        extra = f" ({', '.join(digit_strings)} holds numbers written as strings)" if digit_strings else ""
        layout.note("ts", "no timestamp field found (epoch s/ms/us/ns or ISO-8601): event time stands "
                          f"still, so alerts never resolve{extra}")
        return
    st = prof.paths[best]
    unit = st.unit() if st.share("int", "float") >= 0.99 else None
    layout.ts_unit = unit or "s"
    if unit is None:
        layout.note("ts", f"{best} holds ISO-8601 times")


def _holds_ids(prof: ShapeProfile, obj: str) -> bool:
    """Whether the object ``obj`` directly holds both an id (a string unique per event) and a time
    (a time-named epoch number): request metadata, not features, however the object is named.
    (Feature objects often carry an id-like field, which the learner leaves out, but not both.)"""
    has_id = has_time = False
    for q, st in prof.paths.items():
        if not q.startswith(obj + "/") or "/" in q[len(obj) + 1:]:
            continue
        has_id = has_id or (st.share("str") >= 0.99 and st.unique)
        has_time = has_time or (name_score(q, "ts") > 0 and st.share("int", "float") >= 0.99
                                and st.unit() is not None)
    return has_id and has_time


def inference_layout(prof: ShapeProfile, model_name: str = "model") -> Layout:
    """The field mapping of inference messages; ``model_name`` is used when no field names the model."""
    lay = Layout()
    n = prof.objects
    if n == 0:
        lay.note("*", "no JSON object in the sample")
        return lay
    paths = prof.paths
    label_like = [(p, st) for p, st in paths.items()
                  if st.share("str", "int") >= 0.9 and not st.overflow and 0 < len(st.distinct) <= 256]
    # scores: objects of numbers within [0, 1] whose keys are the values of some class-like field
    scores_cands = []
    for p, st in paths.items():
        if st.present < 0.5 * n or st.unit_objects < 0.9 * st.present or not st.keys or len(st.keys) > 256:
            continue
        keys = set(st.keys)
        covers = any(q != p and not q.startswith(p + "/") and st2.values <= keys and len(st2.values) >= 1
                     for q, st2 in label_like if st2.present >= 0.5 * n)
        ns = name_score(p, "scores")
        if covers or ns >= 2:
            cands_key = (covers, ns, st.present)
            scores_cands.append((cands_key, p))
    scores = _rank(scores_cands)[0] if scores_cands else None
    if scores:
        lay.chosen["scores"] = scores
    # features: the object of scalar values with the best name, then the most keys
    feat_cands = []
    for p, st in paths.items():
        if p == scores or _inside(p, [scores] if scores else []) or st.kinds["obj"] < 0.5 * n:
            continue
        if st.scalar_objects < 0.9 * st.kinds["obj"]:
            continue
        feat_cands.append(((not _holds_ids(prof, p), name_score(p, "features") > 0,
                            st.key_total / max(st.kinds["obj"], 1)), p))
    ranked = _rank(feat_cands)
    if ranked:
        lay.chosen["features"] = ranked[0]
    else:
        lay.note("features", "no object of scalar values found: driftline reads the features from one JSON "
                             "object (nested under a key); events will be rejected until the logs carry one")
    exclude = [p for p in (lay.chosen.get("features"), scores) if p]
    _ts(lay, prof, exclude)
    exclude.append(lay.chosen.get("ts", ""))
    # prediction: a class-like field, the scores' keys when there are scores
    skeys = set(paths[scores].keys) if scores else set()
    cands = []
    for p, st in label_like:
        if _inside(p, exclude) or _frequent(st, n) < 0.9:
            continue
        ns = name_score(p, "prediction")
        fits = bool(skeys) and st.values <= skeys
        if ns or fits:
            cands.append(((fits, ns, st.present), p))
    pred = _pick(lay, "prediction", cands, "prediction")
    if pred is None:
        lay.note("prediction", "no prediction field found (a class name per event): events will be rejected")
    exclude.append(pred or "")
    _simple(lay, prof, "event_id", exclude, lambda st: st.share("str", "int") >= 0.99 and st.unique,
            require_name=False, what="id")
    if "event_id" not in lay.chosen:
        lay.constants["event_id"] = "-"
        lay.note("event_id", "no unique id field found: every event gets the id '-' (labels cannot be joined)")
    exclude.append(lay.chosen.get("event_id", ""))
    low_card = lambda st: st.share("str", "int") >= 0.99 and not st.overflow and len(st.distinct) <= 256  # noqa: E731
    _simple(lay, prof, "model", exclude, lambda st: st.share("str") >= 0.99 and len(st.distinct) <= 64,
            require_name=True, what="model name")
    if "model" not in lay.chosen:
        lay.constants["model"] = model_name
        lay.note("model", f"no field names the model: every event is given the model name {model_name!r} "
                          "(constants.model)")
    exclude.append(lay.chosen.get("model", ""))
    _simple(lay, prof, "model_version", exclude, low_card, require_name=True, what="version")
    if "model_version" not in lay.chosen:
        lay.constants["model_version"] = "v1"
        lay.note("model_version", "no version field found: every event is given version 'v1' "
                                  "(constants.model_version)")
    exclude.append(lay.chosen.get("model_version", ""))
    _deployment(lay, prof, exclude)
    if pred is not None:
        exclude.append(lay.chosen.get("deployment", ""))
        _confidence(lay, prof, exclude)
    _other_objects(lay, prof, ranked[1:])
    return lay


def _other_objects(lay: Layout, prof: ShapeProfile, objects: list[str]) -> None:
    """Note objects of scalars, besides the features, whose fields are mostly not mapped to anything."""
    used = set(lay.chosen.values())
    feats = lay.chosen.get("features")
    noted = 0
    for p in objects:
        if feats is None or _inside(p, [feats]) or noted >= 3:
            continue
        unused = [k for k in prof.paths[p].keys if f"{p}/{escape(k)}" not in used]
        if len(unused) >= 2:
            noted += 1
            lay.note("features", f"object {p} also holds scalar fields ({', '.join(unused[:4])}); only one "
                                 f"features object is read ({feats}): they are not monitored")


def _simple(lay: Layout, prof: ShapeProfile, fld: str, exclude: list[str], fits: Any, require_name: bool,
            what: str) -> None:
    n = prof.objects
    cands = []
    for p, st in prof.paths.items():
        if _inside(p, exclude) or _frequent(st, n) < 0.9:
            continue
        ns = name_score(p, fld)
        if not (fits(st) or (ns == 3 and st.share("str", "int") >= 0.99)):  # an exact name needs only the type
            continue
        if require_name and ns == 0:
            continue
        cands.append(((ns, st.present), p))
    named = [c for c in cands if c[0][0] > 0]
    if not named and len(cands) > 1:
        lay.note(fld, f"no field is named like an {what}; {len(cands)} fields could be one: "
                      f"{', '.join(p for _, p in cands[:4])}; none chosen")
        return
    _pick(lay, fld, named or cands, what)


def _deployment(lay: Layout, prof: ShapeProfile, exclude: list[str]) -> None:
    n = prof.objects
    good, bad = [], []
    allowed = set(DEPLOYMENTS)
    for p, st in prof.paths.items():
        if _inside(p, exclude) or st.share("str", "null") < 0.99 or st.overflow or not st.distinct:
            continue
        if st.values <= allowed and (name_score(p, "deployment") or "canary" in st.values or "shadow" in st.values):
            good.append(((name_score(p, "deployment"), st.present), p))
        elif name_score(p, "deployment") >= 2 and len(st.distinct) <= 16 and _frequent(st, n) >= 0.5:
            bad.append(p)
    best = _pick(lay, "deployment", good, "deployment")
    for p in bad:
        vals = sorted(prof.paths[p].values)[:4]
        lay.note("deployment", f"{p} looks like a deployment field but holds {vals}; driftline reads "
                               f"{'/'.join(DEPLOYMENTS)}: not mapped")
    if best is None and "deployment" in prof.paths:  # the default top-level key would be read and rejected
        lay.constants["deployment"] = "stable"
        lay.note("deployment", "every event counts as the stable deployment (constants.deployment)")


def _confidence(lay: Layout, prof: ShapeProfile, exclude: list[str]) -> None:
    n = prof.objects
    cands = []
    for p, st in prof.paths.items():
        if _inside(p, exclude) or _frequent(st, n) < 0.9 or st.share("float", "int") < 0.99:
            continue
        if not (0.0 <= st.lo and st.hi <= 1.0):
            continue
        ns = name_score(p, "confidence")
        if ns:
            cands.append(((ns, st.present), p))
    if _pick(lay, "confidence", cands, "confidence") is None and "confidence" in prof.paths:
        lay.note("confidence", "the top-level 'confidence' field is not a number within [0, 1]: "
                               "events with it will be rejected")


def label_layout(prof: ShapeProfile, inference_ids: set[str] | None = None) -> Layout:
    """The field mapping of labeling messages; ``inference_ids`` (a sample's event ids) finds the id field."""
    lay = Layout()
    n = prof.objects
    if n == 0:
        lay.note("*", "no JSON object in the label sample")
        return lay
    _ts(lay, prof, [])
    exclude = [lay.chosen.get("ts", "")]
    ids = inference_ids or set()
    cands = []
    for p, st in prof.paths.items():
        if _inside(p, exclude) or _frequent(st, n) < 0.9 or st.share("str", "int") < 0.99:
            continue
        overlap = len(st.values & ids)
        ns = name_score(p, "event_id")
        if overlap or ns:
            cands.append(((overlap > 0, ns, overlap), p))
    if _pick(lay, "event_id", cands, "id") is None:
        lay.note("event_id", "no field of the labels holds the inference events' ids: labels cannot be joined")
        lay.constants["event_id"] = "-"
    exclude.append(lay.chosen.get("event_id", ""))
    low_card = lambda st: st.share("str", "int") >= 0.99 and not st.overflow and len(st.distinct) <= 256  # noqa: E731
    _simple(lay, prof, "label", exclude, low_card, require_name=True, what="label")
    if "label" not in lay.chosen:
        lay.note("label", "no label field found: every label will be rejected")
    exclude.append(lay.chosen.get("label", ""))
    _simple(lay, prof, "source", exclude, lambda st: st.share("str") >= 0.99 and len(st.distinct) <= 256,
            require_name=True, what="source")
    return lay
