"""Raw message bytes -> :class:`~detectors.events.InferenceEvent` / :class:`~detectors.events.LabelEvent`.

Teams log predictions in their own JSON layout; a per-topic field mapping (JSON-pointer paths
such as ``{"event_id": "/meta/id", "prediction": "/output/label"}``) maps it onto driftline's
fields. Anything unusable raises :class:`DecodeError` with a short machine ``reason`` (used for
dead-letter records and replay counters) and a human message. Values the core can judge (NaN,
null or wrongly typed *feature values*, unknown models) pass through: they are counted there.

Default inference layout: ``event_id``, ``ts`` (epoch seconds or ISO-8601), ``model``,
``model_version``, ``deployment`` (stable|canary|shadow, default stable), ``features`` (object),
``prediction``, optional ``scores`` (class -> probability), ``confidence`` (default: the
highest score) and ``artifact_digest`` (``sha256:<64 hex>`` of the serving artifact; bare hex and
upper case are normalized; mapped to ``header:<name>``, it is read from that Kafka header). Default label layout: ``event_id``, ``ts``, ``label``, ``source``.

>>> d = JsonDecoder({"event_id": "/meta/id"})
>>> e = d.decode_inference(b'{"meta": {"id": "a1"}, "ts": 5, "model": "m", "model_version": "v1",'
...                        b' "features": {"x": NaN}, "prediction": "safe", "scores": {"safe": 0.9, "nsfw": 0.1}}')
>>> (e.event_id, e.deployment, e.confidence, e.features["x"] != e.features["x"])
('a1', 'stable', 0.9, True)
>>> try:
...     d.decode_inference(b'[1, 2]')
... except DecodeError as err:
...     err.reason
'not_an_object'
"""
from __future__ import annotations

import json
import math
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from dataclasses import fields as dataclass_fields
from datetime import datetime, timezone
from typing import Any, Protocol

import orjson

from detectors.events import DEPLOYMENTS, InferenceEvent, LabelEvent
from detectors.manifest import DIGEST
from stream.typed_decoding import inference_reader, label_reader

INFERENCE_FIELDS: tuple[str, ...] = ("event_id", "ts", "model", "model_version", "deployment", "features",
                                     "prediction", "scores", "confidence", "artifact_digest")
LABEL_FIELDS: tuple[str, ...] = ("event_id", "ts", "label", "source")
DEFAULT_SOURCE = "unknown"
_TS_SCALE = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}
_MISSING: Any = object()
_PLAIN = frozenset((float, int, bool, type(None)))
_FLOAT = frozenset((float,))
_FLAT = frozenset((float, int, str, bool, type(None)))
_NUMBER = frozenset((float, int))


class DecodeError(ValueError):
    """A message that cannot become an event; ``reason`` is short and machine-readable."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds that keep hostile messages (huge, high-cardinality) out of the core."""

    max_bytes: int = 256 * 1024      # whole message, checked before parsing
    max_features: int = 512          # keys in the features object
    max_string: int = 1024           # any id, name, label or string feature value (characters)
    max_scores: int = 256            # classes in the scores object


class Decoder(Protocol):
    """What the worker and replay need from a decoder (JSON today; Avro/Protobuf fit the same seam)."""

    def decode_inference(self, raw: bytes) -> InferenceEvent: ...

    def decode_label(self, raw: bytes) -> LabelEvent: ...

    def decode_inference_many(self, raws: Sequence[bytes | None]) -> list[InferenceEvent | Exception]: ...

    def decode_label_many(self, raws: Sequence[bytes | None]) -> list[LabelEvent | Exception]: ...


def without_frames(exc: Exception) -> Exception:
    """``exc`` without its traceback and chained exceptions, to be kept in a list of results.

    Their frames reach the list (and every message of the batch) again: a reference cycle that
    only the collector frees, which kept batches of oversized messages alive. An error other than
    :class:`DecodeError` keeps its traceback as text, in a note.
    """
    if not isinstance(exc, DecodeError):
        exc.add_note("".join(traceback.format_exception(exc)).rstrip())
    exc.__context__ = exc.__cause__ = None
    return exc.with_traceback(None)


def parse_json(raw: bytes | bytearray | memoryview | str | None, max_bytes: int) -> Any:
    """Size check, then orjson; NaN/Infinity literals (written by Python's json) fall back to json.

    The fallback accepts what orjson would not write back (lone surrogates, integers beyond 64
    bits); such documents are refused here, so every decoded event can be re-encoded.
    """
    if raw is None:
        raise DecodeError("null_value", "message has no value (a tombstone)")
    if len(raw) > max_bytes:
        raise DecodeError("oversized", f"message of {len(raw)} bytes exceeds the limit of {max_bytes}")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        first = str(exc)  # not the exception: its traceback holds this frame, which would hold it (a cycle)
    if isinstance(raw, (bytes, bytearray, memoryview)):
        raw = bytes(raw)
        if b"NaN" not in raw and b"Infinity" not in raw:
            raise DecodeError("malformed_json", f"malformed JSON: {first}") from None
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise DecodeError("malformed_json", "message is not valid UTF-8") from None
    elif "NaN" not in raw and "Infinity" not in raw:
        raise DecodeError("malformed_json", f"malformed JSON: {first}") from None
    try:
        obj = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise DecodeError("malformed_json", f"malformed JSON: {str(exc)[:200]}") from None
    try:
        orjson.dumps(obj)
    except orjson.JSONEncodeError as exc:
        text = str(exc)
        if "surrogates" in text or "UTF-8" in text:
            raise DecodeError("invalid_unicode", "message holds a lone UTF-16 surrogate (\\ud800-\\udfff)") from None
        if "64-bit" in text:
            raise DecodeError("integer_out_of_range", "message holds an integer beyond 64 bits") from None
    return obj  # too deep to re-encode: the field checks name the nested value


def compile_path(path: str) -> Callable[[Any], Any]:
    """A getter for an RFC 6901 JSON pointer (``/a/b/0``); a bare name means a top-level key."""
    if not path.startswith("/"):
        return lambda obj: obj.get(path, _MISSING)
    parts = [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]
    if len(parts) == 1:
        key = parts[0]
        return lambda obj: obj.get(key, _MISSING)

    def get(obj: Any) -> Any:
        for p in parts:
            if isinstance(obj, dict):
                obj = obj.get(p, _MISSING)
                if obj is _MISSING:
                    return obj
            elif isinstance(obj, list) and p.isdigit() and int(p) < len(obj):
                obj = obj[int(p)]
            else:
                return _MISSING
        return obj
    return get


class JsonDecoder:
    """JSON messages in any layout, mapped onto driftline's fields by JSON pointers.

    ``fields`` maps a driftline field to a pointer (unmapped fields use their own name at the top
    level); ``constants`` fixes fields a topic does not carry (e.g. ``{"model": "content-filter"}``);
    ``ts_unit`` says how numeric timestamps are expressed (``s``, ``ms``, ``us``, ``ns``).
    ``max_future_seconds`` bounds how far ahead of ``clock()`` a timestamp may be (None: no bound):
    event time only moves forward, so one far-future timestamp would resolve every open alert
    and hold its cooldown for good.
    """

    def __init__(self, fields: Mapping[str, str] | None = None, constants: Mapping[str, Any] | None = None,
                 limits: Limits | None = None, ts_unit: str = "s", max_future_seconds: float | None = 300.0,
                 clock: Callable[[], float] = time.time) -> None:
        fields = dict(fields or {})
        constants = dict(constants or {})
        known = set(INFERENCE_FIELDS) | set(LABEL_FIELDS)
        bad = sorted((set(fields) | set(constants)) - known)
        if bad:
            raise ValueError(f"unknown fields in mapping: {bad}; known: {sorted(known)}")
        if ts_unit not in _TS_SCALE:
            raise ValueError(f"ts_unit must be one of {sorted(_TS_SCALE)}, not {ts_unit!r}")
        for name, path in fields.items():
            if not isinstance(path, str) or not path:
                raise ValueError(f"mapping for {name!r} must be a non-empty path string")
        self.limits = limits or Limits()
        self._settings = {"fields": fields, "constants": constants, "ts_unit": ts_unit,
                          "max_future_seconds": max_future_seconds}
        self.ts_scale = _TS_SCALE[ts_unit]
        if max_future_seconds is not None and not max_future_seconds >= 0:
            raise ValueError("max_future_seconds must be a non-negative number or None")
        self.max_future = max_future_seconds
        self.clock = clock
        self._get = {f: (lambda obj, c=constants[f]: c) if f in constants else compile_path(fields.get(f, f))
                     for f in known}
        mapped = fields.get("artifact_digest", "")
        self.digest_header: str | None = mapped[len("header:"):] if mapped.startswith("header:") else None
        if self.digest_header is not None:
            self._get["artifact_digest"] = lambda obj: _MISSING  # the worker reads the header
        self._plain = not fields and not constants and ts_unit == "s"
        self._read_inference = inference_reader(self.limits) if self._plain else None
        self._read_label = label_reader(self.limits) if self._plain else None

    # -- public ---------------------------------------------------------------------------
    def settings(self) -> dict[str, Any] | None:
        """The constructor's arguments as plain JSON values, to build the same decoder in another
        process (:meth:`from_settings`); None when its clock is not the wall clock or a value does
        not survive JSON unchanged (say a tuple among the constants)."""
        if self.clock is not time.time:
            return None
        out = {**self._settings, "limits": asdict(self.limits)}
        try:
            same = orjson.loads(orjson.dumps(out)) == out
        except (TypeError, orjson.JSONEncodeError):
            same = False
        return out if same else None

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> JsonDecoder:
        """The decoder :meth:`settings` describes; ValueError names what does not fit."""
        known = {"fields", "constants", "ts_unit", "max_future_seconds", "limits"}
        if not isinstance(settings, Mapping) or set(settings) != known:
            raise ValueError(f"decoder settings need exactly the keys {sorted(known)}")
        limits, future = settings["limits"], settings["max_future_seconds"]
        names = {f.name for f in dataclass_fields(Limits)}
        if not isinstance(limits, Mapping) or set(limits) != names or not all(
                type(v) is int and v > 0 for v in limits.values()):
            raise ValueError(f"decoder settings: 'limits' needs positive integers {sorted(names)}")
        if future is not None and type(future) not in (int, float):
            raise ValueError("decoder settings: 'max_future_seconds' must be a number or null")
        if not isinstance(settings["fields"], Mapping) or not isinstance(settings["constants"], Mapping):
            raise ValueError("decoder settings: 'fields' and 'constants' must be objects")
        return cls(fields=settings["fields"], constants=settings["constants"], limits=Limits(**limits),
                   ts_unit=settings["ts_unit"], max_future_seconds=future)  # the constructor checks the rest

    def decode_inference(self, raw: bytes) -> InferenceEvent:
        """Parse and validate one inference message."""
        read = self._read_inference
        if read is not None and raw is not None and len(raw) <= self.limits.max_bytes:
            event = read(raw)  # the default layout, well formed: one typed pass
            if event is not None:
                if self.max_future is not None:
                    self._check_future(event.ts)
                return event
        obj = parse_json(raw, self.limits.max_bytes)
        if self._plain and type(obj) is dict:
            event = _fast_inference(obj, self.limits, len(raw) > self.limits.max_string)
            if event is not None:
                if self.max_future is not None:
                    self._check_future(event.ts)
                return event
        return self.inference_from_obj(obj, len(raw))

    def decode_label(self, raw: bytes) -> LabelEvent:
        """Parse and validate one label message."""
        read = self._read_label
        if read is not None and raw is not None and len(raw) <= self.limits.max_bytes:
            label = read(raw)
            if label is not None:
                if self.max_future is not None:
                    self._check_future(label.ts)
                return label
        return self.label_from_obj(parse_json(raw, self.limits.max_bytes))

    def decode_inference_many(self, raws: Sequence[bytes | None]) -> list[InferenceEvent | Exception]:
        """:meth:`decode_inference` over a batch, in order: each message's event, or the exception it raised.

        The results are those of one call per message, without the per-call overhead: one clock
        reading bounds the batch's timestamps, and a message beyond it is decoded again alone.
        """
        return self._many(raws, self._read_inference, self.decode_inference)

    def decode_label_many(self, raws: Sequence[bytes | None]) -> list[LabelEvent | Exception]:
        """:meth:`decode_label` over a batch, in order: each message's label, or the exception it raised."""
        return self._many(raws, self._read_label, self.decode_label)

    def _many(self, raws: Sequence[bytes | None], read: Callable[[bytes], Any] | None,
              decode: Callable[[bytes], Any]) -> list[Any]:
        out: list[Any] = []
        append = out.append
        max_bytes = self.limits.max_bytes
        limit = math.inf if self.max_future is None else self.clock() + self.max_future
        for raw in raws:
            try:
                if read is not None and raw is not None and len(raw) <= max_bytes:
                    item = read(raw)
                    if item is not None and item.ts <= limit:
                        append(item)
                        continue
                append(decode(raw))  # the general path, or a time past the batch's bound checked afresh
            except Exception as exc:  # noqa: BLE001 - handed back in order; the caller decides by its kind
                append(without_frames(exc))
        return out

    def inference_from_obj(self, obj: Any, size: int | None = None) -> InferenceEvent:
        """Validate an already parsed message; ``size`` (its length in bytes) lets short ones skip length checks."""
        if type(obj) is not dict:
            raise DecodeError("not_an_object", f"expected a JSON object, got {_kind(obj)}")
        g = self._get
        deployment = g["deployment"](obj)
        if deployment is _MISSING or deployment is None:
            deployment = "stable"
        elif deployment not in DEPLOYMENTS:
            raise DecodeError("bad_deployment", f"deployment must be one of {list(DEPLOYMENTS)}, "
                                                f"got {_short(deployment)}")
        features = g["features"](obj)
        if type(features) is not dict:
            raise self._absent_or_wrong("features", features, "an object")
        short = size is not None and size <= self.limits.max_string  # no string can be longer than the message
        self._check_features(features, short)
        scores = g["scores"](obj)
        if scores is _MISSING or scores is None:
            scores = None
        else:
            scores = self._scores(scores, short)
        confidence = g["confidence"](obj)
        if confidence is _MISSING or confidence is None:
            confidence = _max_score(scores) if scores else None
        elif type(confidence) is float or type(confidence) is int:
            confidence = _float(confidence)
        else:
            raise DecodeError("wrong_type:confidence", f"confidence must be a number, got {_kind(confidence)}")
        digest = g["artifact_digest"](obj)
        return InferenceEvent(
            event_id=self._name(obj, "event_id"), ts=self._ts(obj), model=self._name(obj, "model"),
            model_version=self._name(obj, "model_version"), deployment=deployment, features=features,
            prediction=self._name(obj, "prediction"), confidence=confidence, scores=scores,
            artifact_digest=None if digest is _MISSING or digest is None else artifact_digest(digest))

    def label_from_obj(self, obj: Any) -> LabelEvent:
        """Validate an already parsed label message."""
        if type(obj) is not dict:
            raise DecodeError("not_an_object", f"expected a JSON object, got {_kind(obj)}")
        source = self._get["source"](obj)
        if source is _MISSING or source is None:
            source = DEFAULT_SOURCE
        else:
            source = self._name(obj, "source")
        return LabelEvent(event_id=self._name(obj, "event_id"), ts=self._ts(obj), label=self._name(obj, "label"),
                          source=source)

    # -- fields ---------------------------------------------------------------------------
    def _name(self, obj: dict, field: str) -> str:
        """An id, name or class: a string, or an integer (class indices, numeric versions)."""
        v = self._get[field](obj)
        t = type(v)
        if t is int:
            v, t = str(v), str  # as text it obeys the same length bound (a 70-bit integer has 22 digits)
        if t is str:
            if not v:
                raise DecodeError(f"empty_field:{field}", f"field {field!r} is empty")
            if len(v) > self.limits.max_string:
                raise DecodeError(f"string_too_long:{field}", f"field {field!r} is longer than "
                                                             f"{self.limits.max_string} characters")
            return v
        raise self._absent_or_wrong(field, v, "a string")

    def _check_future(self, ts: float) -> float:
        limit = self.clock() + self.max_future
        if ts > limit:
            raise DecodeError("ts_in_future", f"ts {ts:.6g} is more than {self.max_future:g} s ahead of the "
                                              f"worker's clock (wrong ts_unit, or a forged time)")
        return ts

    def _ts(self, obj: dict) -> float:
        ts = self._ts_value(obj)
        return ts if self.max_future is None else self._check_future(ts)

    def _ts_value(self, obj: dict) -> float:
        v = self._get["ts"](obj)
        t = type(v)
        if t is float or t is int:
            ts = _float(v) * self.ts_scale
            if not math.isfinite(ts):
                raise DecodeError("bad_value:ts", "ts must be a finite number")
            return ts
        if t is str:
            if len(v) > 64:
                raise DecodeError("bad_value:ts", "ts string is too long for an ISO-8601 time")
            try:
                dt = datetime.fromisoformat(v)
                if dt.tzinfo is None:
                    dt = dt.replace(tzinfo=timezone.utc)
                return dt.timestamp()
            except (ValueError, OverflowError):
                raise DecodeError("bad_value:ts", f"ts is not ISO-8601: {_short(v)}") from None
        raise self._absent_or_wrong("ts", v, "a number or an ISO-8601 string")

    def _check_features(self, features: dict, short: bool) -> None:
        lim = self.limits
        if len(features) > lim.max_features:
            raise DecodeError("too_many_features", f"{len(features)} features exceed the limit of {lim.max_features}")
        if not features:
            return
        types = set(map(type, features.values()))
        if short and not (dict in types or list in types):
            return
        m = lim.max_string
        if max(map(len, features)) > m:
            raise DecodeError("string_too_long:features", f"a feature name is longer than {m} characters")
        if types <= _PLAIN:
            return
        if str in types and max(len(v) for v in features.values() if type(v) is str) > m:
            raise DecodeError("string_too_long:features", f"a feature value is longer than {m} characters")
        if dict in types or list in types:
            for k, v in features.items():
                if type(v) is dict or type(v) is list:
                    try:  # nested values are the core's "wrong type"; bound them so they can be re-encoded
                        size = len(orjson.dumps(v))
                    except orjson.JSONEncodeError:
                        size = m + 1
                    if size > m:
                        raise DecodeError("nested_too_large:features", f"feature {_short(k)} holds a large "
                                                                       f"or deeply nested value")

    def _scores(self, scores: Any, short: bool = False) -> dict[str, float]:
        if type(scores) is not dict:
            raise DecodeError("wrong_type:scores", f"scores must be an object, got {_kind(scores)}")
        if len(scores) > self.limits.max_scores:
            raise DecodeError("too_many_scores", f"{len(scores)} score classes exceed the limit of "
                                                 f"{self.limits.max_scores}")
        if not short and scores and max(map(len, scores)) > self.limits.max_string:
            raise DecodeError("string_too_long:scores", "a score class name is too long")
        types = set(map(type, scores.values()))
        if types <= _FLOAT:
            return scores
        if not types <= _NUMBER:
            bad = next(k for k, v in scores.items() if type(v) is not float and type(v) is not int)
            raise DecodeError("wrong_type:scores", f"score of {_short(bad)} must be a number, "
                                                   f"got {_kind(scores[bad])}")
        return {k: _float(v) for k, v in scores.items()}

    @staticmethod
    def _absent_or_wrong(field: str, v: Any, want: str) -> DecodeError:
        if v is _MISSING:
            return DecodeError(f"missing_field:{field}", f"field {field!r} is missing")
        if v is None:
            return DecodeError(f"null_field:{field}", f"field {field!r} is null")
        return DecodeError(f"wrong_type:{field}", f"field {field!r} must be {want}, got {_kind(v)}")


def artifact_digest(value: Any) -> str:
    """An event's artifact digest as ``sha256:<64 lowercase hex>`` (bare hex accepted); DecodeError otherwise."""
    if type(value) is bytes:
        value = value.decode("ascii", "replace")
    if type(value) is not str:
        raise DecodeError("wrong_type:artifact_digest", f"artifact_digest must be a string, got {_kind(value)}")
    if len(value) == 71 and DIGEST.fullmatch(value) is not None:
        return value
    text = value.strip().lower()
    if not text.startswith("sha256:"):
        text = "sha256:" + text
    if DIGEST.fullmatch(text) is None:
        raise DecodeError("bad_value:artifact_digest", f"artifact_digest is not sha256:<64 hex>: {_short(value)}")
    return text


def _fast_inference(obj: dict, lim: Limits, check_lengths: bool) -> InferenceEvent | None:
    """The default layout with every field well typed and within limits (the common case), else None.

    Anything unusual returns None and takes the general path, which names the problem. String
    lengths are only checked for messages longer than ``max_string`` (no string inside a shorter
    message can exceed it).
    """
    get = obj.get
    eid, ts, model, ver, pred = get("event_id"), get("ts"), get("model"), get("model_version"), get("prediction")
    feats, dep = get("features"), get("deployment", "stable")
    if not (type(eid) is str and type(model) is str and type(ver) is str and type(pred) is str
            and eid and model and ver and pred and type(feats) is dict and type(ts) is float
            and ts - ts == 0 and (dep == "stable" or dep == "canary" or dep == "shadow")
            and len(feats) <= lim.max_features):
        return None
    types = set(map(type, feats.values()))
    if not types <= _FLAT:
        return None
    scores, conf = get("scores"), get("confidence")
    if scores is not None:
        if type(scores) is not dict or not set(map(type, scores.values())) <= _FLOAT or len(scores) > lim.max_scores:
            return None
    if check_lengths:
        m = lim.max_string
        if (max(len(eid), len(model), len(ver), len(pred)) > m or (feats and max(map(len, feats)) > m)
                or (str in types and max(len(v) for v in feats.values() if type(v) is str) > m)
                or (scores and max(map(len, scores)) > m)):
            return None
    if conf is None:
        conf = _max_score(scores) if scores else None
    elif type(conf) is not float:
        return None
    digest = get("artifact_digest")
    if digest is not None and (type(digest) is not str or len(digest) != 71 or DIGEST.fullmatch(digest) is None):
        return None  # the general path normalizes it or names the problem
    return InferenceEvent(eid, ts, model, ver, dep, feats, pred, conf, scores, -1, digest)


def _float(v: float | int) -> float:
    """float() that maps integers too large for a double to infinity instead of raising."""
    try:
        return float(v)
    except OverflowError:
        return math.inf if v > 0 else -math.inf


def _max_score(scores: dict[str, float]) -> float:
    vals = scores.values()
    total = sum(vals)
    if total - total == 0:  # every score finite (the common case)
        return max(vals)
    finite = [s for s in vals if math.isfinite(s)]
    return max(finite) if finite else math.nan


def _kind(v: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null",
            int: "an integer", float: "a number"}.get(type(v), type(v).__name__)


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def decoder_for_topic(topic: Any) -> Decoder:
    """A decoder for one topic entry of the configuration (attribute or dict access).

    Recognized keys: ``decoder`` (only ``json``), ``field_mapping`` (pointer mapping), ``constants``,
    ``ts_unit``, ``max_future_seconds`` (None: no bound), ``max_message_bytes``, ``max_features``,
    ``max_string``, ``max_scores``.
    """
    def opt(name: str, default: Any = None) -> Any:
        if isinstance(topic, Mapping):
            v = topic.get(name, default)
        else:
            v = getattr(topic, name, default)
        return default if v is None else v

    fmt = opt("format", None) or opt("decoder", "json")
    if fmt != "json":
        raise ValueError(f"topic {opt('name', '?')!r}: unsupported format {fmt!r} (supported: json)")
    base = Limits()
    limits = Limits(max_bytes=int(opt("max_message_bytes", base.max_bytes)),
                    max_features=int(opt("max_features", base.max_features)),
                    max_string=int(opt("max_string", base.max_string)),
                    max_scores=int(opt("max_scores", base.max_scores)))
    fields = opt("fields", None) or opt("field_mapping", None) or {}
    if isinstance(topic, Mapping):
        future = topic.get("max_future_seconds", 300.0)
    else:
        future = getattr(topic, "max_future_seconds", 300.0)
    return JsonDecoder(fields=dict(fields), constants=dict(opt("constants", {}) or {}), limits=limits,
                       ts_unit=str(opt("ts_unit", "s")), max_future_seconds=None if future is None else float(future))


def build_decoders(config: Any) -> dict[str, Decoder]:
    """Topic name -> decoder for every inference and label topic of a ``DriftlineConfig``."""
    k = config.kafka
    out: dict[str, Decoder] = {}
    for topic in list(k.inference_topics) + list(k.label_topics):
        name = topic["name"] if isinstance(topic, Mapping) else topic.name
        out[name] = decoder_for_topic(topic)
    return out
