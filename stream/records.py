"""Records of the internal topic, where events are rekeyed by model.

Inference logs arrive partitioned however the producing team chose; driftline's sequential
detectors (ADWIN, Page-Hinkley, alert policy) need each model's events as one ordered stream
owned by one worker. The worker therefore re-publishes every valid event to the internal topic,
on the partition that owns its model, and runs detection only from there. A label is joined
with its prediction before being re-published, so it lands beside the model's events.

Records are batches (format 2): one record carries a run of one model's inference events or
joined labels from one micro-batch, in a compact columnar framing (see :func:`encode_inference_batch`),
each event with its source position so ids and exactly-once stay per event. Format 1 (one JSON
object per event, ``"v": 1``) is still read, so a topic written by an earlier release drains.
Both are validated on read like any other input (:func:`decode_batch` raises only
:class:`RecordError`): whoever can write the internal topic can send garbage, never code.
"""
from __future__ import annotations

import hashlib
import math
import struct
import sys
import zlib
from array import array
from dataclasses import dataclass
from itertools import chain, repeat

import numpy as np
import orjson

from detectors.columns import FeatureBlock, FeatureRow
from detectors.events import InferenceEvent, JoinedLabel, LabelEvent

RECORD_VERSION = 1
BATCH_MAGIC = b"DLB"
BATCH_VERSION = 2
MIXED_BATCH_VERSION = 3  # format 2 plus non-float feature columns (an older reader refuses it, never misreads it)
MAX_BATCH_EVENTS = 4096        # events per batch record
MAX_RECORD_BYTES = 768 * 1024  # a batch record above this is split (the broker's default limit is 1 MiB)
_HEAD = struct.Struct("<3sBcI")  # magic, version, kind (b"i" | b"l"), header length
#: Runs up to this many events are encoded at once, without sizing chunks from their first event
#: (a run too long for one record is still split in halves).
UNSIZED_EVENTS = 64
_LITTLE = sys.byteorder == "little"


class RecordError(ValueError):
    """An internal-topic record that does not match the versioned format."""


def partition_for(model: str, partitions: int) -> int:
    """The internal partition owning ``model``: stable across processes and restarts."""
    return zlib.crc32(model.encode()) % partitions


def source_position(topic_index: int, partition: int, offset: int) -> int:
    """A stable integer naming a raw message: the basis of deterministic alert and rollback ids.

    Internal-topic offsets are not stable across a crash (aborted transactions leave gaps), the
    raw message's coordinates are. Coordinates that fit (topic index < 128, partition < 2**16,
    offset < 2**40) are packed below 2**63; larger ones map to a 63-bit hash above 2**63 (still an
    unsigned 64-bit integer), so positions never collide by overflowing into each other's bits.
    """
    if 0 <= topic_index < 128 and 0 <= partition < 1 << 16 and 0 <= offset < 1 << 40:
        return (topic_index << 56) | (partition << 40) | offset
    digest = hashlib.blake2b(f"{topic_index}:{partition}:{offset}".encode(), digest_size=8).digest()
    return (1 << 63) | (int.from_bytes(digest, "big") >> 1)


def encode_inference(event: InferenceEvent) -> bytes:
    doc = {
        "v": RECORD_VERSION,
        "k": "i",
        "pos": event.position,
        "id": event.event_id,
        "ts": event.ts,
        "m": event.model,
        "mv": event.model_version,
        "d": event.deployment,
        "f": _mark_non_finite(_plain(event.features)),
        "p": event.prediction,
        "c": event.confidence,
        "s": event.scores,
    }
    if event.artifact_digest is not None:
        doc["ad"] = event.artifact_digest
    return orjson.dumps(doc)


def encode_label(joined: JoinedLabel) -> bytes:
    lab = joined.label
    return orjson.dumps(
        {
            "v": RECORD_VERSION,
            "k": "l",
            "pos": lab.position,
            "id": lab.event_id,
            "ts": lab.ts,
            "l": lab.label,
            "src": lab.source,
            "m": joined.model,
            "mv": joined.model_version,
            "d": joined.deployment,
            "p": joined.prediction,
            "pts": joined.predicted_ts,
        }
    )


def encode_registry(model: str, position: int, doc: dict) -> bytes:
    """A registry event routed to its model's partition; the signed document travels unchanged
    (it is verified again before it touches the manifest)."""
    return orjson.dumps({"v": RECORD_VERSION, "k": "r", "pos": position, "m": model, "doc": doc})


@dataclass(slots=True)
class DecodedRecord:
    """One internal record: an inference event, a joined label or a registry document."""

    model: str
    inference: InferenceEvent | None
    label: JoinedLabel | None
    registry: dict | None = None


def decode_record(raw: bytes) -> DecodedRecord:
    """Parse and validate an internal record; raise RecordError on anything unexpected."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise RecordError(f"malformed internal record: {exc}") from None
    if not isinstance(obj, dict) or obj.get("v") != RECORD_VERSION:
        raise RecordError("internal record has an unknown version")
    try:
        kind = obj["k"]
        model = _str(obj, "m")
        position = obj["pos"]
        if type(position) is not int:
            raise RecordError("field 'pos' must be an integer")
        if kind == "i":
            features = obj["f"]
            if not isinstance(features, dict):
                raise RecordError("features must be an object")
            features = {k: _restore_non_finite(v) for k, v in features.items()}
            scores = obj.get("s")
            if scores is not None and not isinstance(scores, dict):
                raise RecordError("scores must be an object")
            confidence = obj.get("c")
            if confidence is not None and not isinstance(confidence, (int, float)):
                raise RecordError("confidence must be a number")
            digest = obj.get("ad")
            if digest is not None and not isinstance(digest, str):
                raise RecordError("field 'ad' must be a string")
            event = InferenceEvent(
                event_id=_str(obj, "id"),
                ts=_time(obj, "ts"),
                model=model,
                model_version=_str(obj, "mv"),
                deployment=_str(obj, "d"),
                features=features,
                prediction=_str(obj, "p"),
                confidence=confidence,
                scores=scores,
                position=position,
                artifact_digest=digest,
            )
            return DecodedRecord(model, event, None)
        if kind == "r":
            doc = obj["doc"]
            if not isinstance(doc, dict):
                raise RecordError("registry document must be an object")
            return DecodedRecord(model, None, None, doc)
        if kind == "l":
            label = LabelEvent(
                event_id=_str(obj, "id"), ts=_time(obj, "ts"), label=_str(obj, "l"),
                source=_str(obj, "src"), position=position,
            )
            joined = JoinedLabel(
                label=label, model=model, model_version=_str(obj, "mv"), deployment=_str(obj, "d"),
                prediction=_str(obj, "p"), predicted_ts=_time(obj, "pts"),
            )
            return DecodedRecord(model, None, joined)
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, RecordError):
            raise
        raise RecordError(f"invalid internal record: {exc!r}") from None
    raise RecordError(f"unknown internal record kind {kind!r}")


def _time(obj: dict, key: str) -> float:
    """A timestamp: a finite JSON number (float() would also take "inf" or "nan" strings, and a
    non-finite time would become the model's clock)."""
    value = obj[key]
    if type(value) is not float and type(value) is not int:
        raise RecordError(f"field {key!r} must be a number")
    value = float(value)
    if not math.isfinite(value):
        raise RecordError(f"field {key!r} must be finite")
    return value


def _str(obj: dict, key: str) -> str:
    value = obj[key]
    if not isinstance(value, str):
        raise RecordError(f"field {key!r} must be a string")
    return value


_NON_FINITE = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}


def _mark_non_finite(features: dict[str, object]) -> dict[str, object]:
    # orjson writes NaN/Infinity as null; keep them distinguishable for the integrity signal.
    if not any(type(v) is float and not math.isfinite(v) for v in features.values()):
        return features
    return {
        k: {"$nonfinite": "NaN" if v != v else ("Infinity" if v > 0 else "-Infinity")}
        if type(v) is float and not math.isfinite(v) else v
        for k, v in features.items()
    }


def _plain(features: object) -> object:
    """Features as a dict for orjson (events decoded from a columnar record carry read-only views)."""
    return features if type(features) is dict or not isinstance(features, FeatureRow) else dict(features)


def _restore_non_finite(value: object) -> object:
    if isinstance(value, dict) and len(value) == 1 and "$nonfinite" in value:
        return _NON_FINITE.get(value["$nonfinite"], value)
    return value


@dataclass(slots=True)
class RecordBatch:
    """One internal record decoded: a run of one model's inference events or joined labels, or one
    registry document (single-record format)."""

    model: str
    kind: str  # "i", "l" or "r"
    items: list


def encode_inference_batch(events: list[InferenceEvent]) -> list[bytes]:
    """One model's events as batch records (format 2), split to stay under the size bounds.

    Layout: ``DLB``, version byte, kind byte, header length (uint32 LE), an orjson header (model,
    count, string columns, confidences, and either the names of the float feature
    columns or the per-event feature objects), then little-endian arrays: positions (uint64),
    timestamps (float64) and, when every event has the same features in the same order, the
    matrix of the float ones (float64, events x features; NaN and infinities carried as such).
    When some of those features hold other values (strings, integers, booleans, nulls, finite
    floats among them), the record has version 3 and its header also carries every feature's
    name in order (``names``) and one list per such feature (``x``).

    Class scores are not written (events come back with ``scores`` None): the decoder has already
    derived a missing confidence from them and no detector reads them, while three classes' scores
    cost a tenth of encoding a 20-feature event, a fifth of decoding it and a fifth of its bytes.
    A record that holds them (field ``s``, as earlier releases wrote) is read.
    """
    out: list[bytes] = []
    if not events:
        return out
    if len(events) <= UNSIZED_EVENTS:
        return _split_encode(events, _encode_inference_chunk)
    # chunks sized from the first event's single-event form (larger than its share of a batch record)
    step = max(1, min(MAX_BATCH_EVENTS, MAX_RECORD_BYTES // (len(encode_inference(events[0])) + 64)))
    for i in range(0, len(events), step):
        out.extend(_split_encode(events[i:i + step], _encode_inference_chunk))
    return out


def encode_label_batch(labels: list[JoinedLabel]) -> list[bytes]:
    """One model's joined labels as batch records (format 2); see :func:`encode_inference_batch`."""
    out: list[bytes] = []
    for i in range(0, len(labels), MAX_BATCH_EVENTS):
        out.extend(_split_encode(labels[i:i + MAX_BATCH_EVENTS], _encode_label_chunk))
    return out


def _split_encode(items: list, encode) -> list[bytes]:
    raw = encode(items)
    if len(raw) <= MAX_RECORD_BYTES or len(items) == 1:
        return [raw]
    half = len(items) // 2
    return _split_encode(items[:half], encode) + _split_encode(items[half:], encode)


def _frame(kind: bytes, header: dict, arrays: list[bytes], version: int = BATCH_VERSION) -> bytes:
    head = orjson.dumps(header)
    return b"".join([_HEAD.pack(BATCH_MAGIC, version, kind, len(head)), head, *arrays])


def _packed(code: str, values: object) -> bytes:
    """Values as a little-endian array (``code`` "Q": uint64, "d": float64). For the few events of
    a model's run in a micro-batch, the standard library's array costs a fraction of numpy's."""
    a = array(code, values)
    if not _LITTLE:
        a.byteswap()
    return a.tobytes()


def _unpacked(code: str, body: memoryview, start: int, count: int) -> list:
    """``count`` little-endian values (see :func:`_packed`) from ``body[start:]``, as Python numbers."""
    a = array(code)
    a.frombytes(body[start:start + a.itemsize * count])
    if not _LITTLE:
        a.byteswap()
    return a.tolist()


def _mixed_columns(feats: list[dict], flat: list, names: list[str]
                   ) -> tuple[list[str], list[list], dict[str, list]] | None:
    """Features that all events hold in the same order (``flat``: their values event by event),
    split into float columns and lists of other JSON values (version 3); None when the events
    differ in names or a column holds values only per-event objects carry (non-finite floats
    beside other values, lists, objects)."""
    if not all(map(names.__eq__, map(list, feats))):
        return None
    width = len(names)
    float_names: list[str] = []
    float_cols: list[list] = []
    other: dict[str, list] = {}
    for j, name in enumerate(names):
        col = flat[j::width]
        types = set(map(type, col))
        if types == _FLOAT_TYPE:
            float_names.append(name)
            float_cols.append(col)
        elif types <= _PLAIN_VALUES and (float not in types or all(map(math.isfinite, filter(_is_float, col)))):
            other[name] = col
        else:
            return None
    return float_names, float_cols, other


def _encode_inference_chunk(events: list[InferenceEvent]) -> bytes:
    n = len(events)
    feats = [e.features for e in events]
    if set(map(type, feats)) != _DICT_TYPE:  # views of a decoded record (or odd objects): as dicts
        feats = list(map(_plain, feats))
    names = list(feats[0])
    arrays = [_packed("Q", [e.position for e in events]), _packed("d", [e.ts for e in events])]
    columnar = False
    mixed = None
    width = len(names)
    if names and all(map(width.__eq__, map(len, feats))):
        flat = list(chain.from_iterable(map(dict.values, feats)))  # one list, checked and converted at once
        # a first event with a value other than a float rules the float matrix out: no pass over all values
        if set(map(type, feats[0].values())) == _FLOAT_TYPE and set(map(type, flat)) == _FLOAT_TYPE:
            if all(map(names.__eq__, map(list, feats))):
                arrays.append(_packed("d", flat))  # row-major: the events x features matrix
                columnar = True
        else:
            mixed = _mixed_columns(feats, flat, names)
    header = {"m": events[0].model, "n": n, "id": [e.event_id for e in events],
              "mv": [e.model_version for e in events], "d": [e.deployment for e in events],
              "p": [e.prediction for e in events], "c": [e.confidence for e in events],
              "cols": names if columnar else None,
              "f": None if columnar or mixed is not None else [_mark_non_finite(f) for f in feats]}
    digests = [e.artifact_digest for e in events]
    if digests.count(None) != n:
        header["ad"] = digests
    if mixed is not None:
        float_names, float_cols, other = mixed
        header.update({"names": names, "cols": float_names, "x": other, "f": None})
        matrix = np.array(float_cols, dtype=np.float64).T if float_cols else np.empty((n, 0))
        arrays.append(matrix.astype("<f8", copy=False).tobytes())
        try:
            return _frame(b"i", header, arrays, MIXED_BATCH_VERSION)
        except orjson.JSONEncodeError:  # e.g. an integer beyond 64 bits: the per-event form decides
            del header["names"], header["x"], arrays[-1]
            header.update({"cols": None, "f": [_mark_non_finite(f) for f in feats]})
    return _frame(b"i", header, arrays)


def _encode_label_chunk(labels: list[JoinedLabel]) -> bytes:
    n = len(labels)
    header = {"m": labels[0].model, "n": n, "id": [j.label.event_id for j in labels],
              "l": [j.label.label for j in labels], "src": [j.label.source for j in labels],
              "mv": [j.model_version for j in labels], "d": [j.deployment for j in labels],
              "p": [j.prediction for j in labels]}
    arrays = [_packed("Q", [j.label.position for j in labels]), _packed("d", [j.label.ts for j in labels]),
              _packed("d", [j.predicted_ts for j in labels])]
    return _frame(b"l", header, arrays)


def decode_batch(raw: bytes) -> RecordBatch:
    """Parse and validate an internal record of either format; raise RecordError on anything unexpected."""
    if not isinstance(raw, (bytes, bytearray)):
        raise RecordError("internal record has no value")
    if raw[:3] != BATCH_MAGIC:
        rec = decode_record(raw)
        if rec.inference is not None:
            return RecordBatch(rec.model, "i", [rec.inference])
        if rec.registry is not None:
            return RecordBatch(rec.model, "r", [rec.registry])
        return RecordBatch(rec.model, "l", [rec.label])
    try:
        return _decode_batch(bytes(raw))
    except RecordError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever the bytes, only RecordError leaves
        raise RecordError(f"invalid batch record: {type(exc).__name__}: {str(exc)[:200]}") from None


_STRS = frozenset((str,))


def _strings(header: dict, key: str, n: int) -> list[str]:
    value = header.get(key)
    if type(value) is not list or len(value) != n or not set(map(type, value)) <= _STRS:
        raise RecordError(f"batch field {key!r} must be a list of {n} strings")
    return value


def _decode_batch(raw: bytes) -> RecordBatch:
    if len(raw) < _HEAD.size:
        raise RecordError("batch record is truncated")
    _, version, kind, hlen = _HEAD.unpack_from(raw)
    if version != BATCH_VERSION and version != MIXED_BATCH_VERSION:
        raise RecordError(f"batch record has an unknown version {version}")
    if _HEAD.size + hlen > len(raw):
        raise RecordError("batch record header is truncated")
    try:
        header = orjson.loads(raw[_HEAD.size:_HEAD.size + hlen])
    except orjson.JSONDecodeError as exc:
        raise RecordError(f"malformed batch header: {exc}") from None
    if type(header) is not dict:
        raise RecordError("batch header must be an object")
    model, n = header.get("m"), header.get("n")
    if type(model) is not str or not model or type(n) is not int or not 0 < n <= MAX_BATCH_EVENTS:
        raise RecordError("batch header needs a model name and an event count")
    body = memoryview(raw)[_HEAD.size + hlen:]
    ids = _strings(header, "id", n)
    versions, deployments, preds = _strings(header, "mv", n), _strings(header, "d", n), _strings(header, "p", n)
    if kind == b"l":
        if version != BATCH_VERSION:
            raise RecordError("a label batch record has version 2")
        if len(body) != 24 * n:
            raise RecordError("label batch body has the wrong length")
        pos, ts, pts = _unpacked("Q", body, 0, n), _unpacked("d", body, 8 * n, n), _unpacked("d", body, 16 * n, n)
        labels, sources = _strings(header, "l", n), _strings(header, "src", n)
        items = [JoinedLabel(LabelEvent(ids[i], ts[i], labels[i], sources[i], pos[i]), model, versions[i],
                             deployments[i], preds[i], pts[i]) for i in range(n)]
        return RecordBatch(model, "l", items)
    if kind != b"i":
        raise RecordError(f"unknown batch record kind {kind!r}")
    conf = header.get("c")
    if type(conf) is not list or len(conf) != n or not set(map(type, conf)) <= _CONFIDENCE:
        raise RecordError("batch field 'c' must be a list of numbers or nulls")
    scores = header.get("s")
    if scores is None:
        scores = [None] * n
    elif type(scores) is not list or len(scores) != n or not set(map(type, scores)) <= _SCORES:
        raise RecordError("batch field 's' must be a list of objects or nulls")
    cols, objs = header.get("cols"), header.get("f")
    if len(body) < 16 * n:
        raise RecordError("inference batch body is truncated")
    pos, ts = _unpacked("Q", body, 0, n), _unpacked("d", body, 8 * n, n)
    mixed = version == MIXED_BATCH_VERSION
    if mixed != ("x" in header or "names" in header):
        raise RecordError("only a version 3 batch record carries fields 'names' and 'x'")
    if cols is not None:
        if (type(cols) is not list or not set(map(type, cols)) <= _STRS or len(set(cols)) != len(cols)
                or not (cols or mixed) or objs is not None):
            raise RecordError("batch field 'cols' must be a list of distinct feature names")
        width = len(cols)
        if len(body) != 8 * n * (2 + width):
            raise RecordError("inference batch body has the wrong length")
        matrix = np.frombuffer(body, dtype="<f8", count=n * width, offset=16 * n).reshape(n, width)
        if mixed:
            names, other = _mixed_layout(header, cols, n)
            block = FeatureBlock(names, matrix, other)
        else:
            block = FeatureBlock(cols, matrix)
        feats = list(map(FeatureRow, repeat(block, n), range(n)))  # views: no per-event dicts
    else:
        if mixed:
            raise RecordError("a version 3 batch record needs field 'cols'")
        if type(objs) is not list or len(objs) != n or not set(map(type, objs)) <= _DICTS or len(body) != 16 * n:
            raise RecordError("batch field 'f' must be a list of feature objects")
        feats = [{k: _restore_non_finite(v) for k, v in f.items()} for f in objs]
    digests = header.get("ad")
    if digests is None:
        digests = repeat(None)
    elif type(digests) is not list or len(digests) != n or not set(map(type, digests)) <= _DIGESTS:
        raise RecordError("batch field 'ad' must be a list of strings or nulls")
    items = list(map(InferenceEvent, ids, ts, repeat(model), versions, deployments, feats, preds, conf, scores, pos,
                     digests))
    return RecordBatch(model, "i", items)


def _mixed_layout(header: dict, cols: list[str], n: int) -> tuple[list[str], dict[str, list]]:
    """Feature order and non-float columns of a version 3 record, checked against its float columns."""
    names, other = header.get("names"), header.get("x")
    if (type(names) is not list or not names or not set(map(type, names)) <= _STRS
            or len(set(names)) != len(names)):
        raise RecordError("batch field 'names' must be a list of distinct feature names")
    if type(other) is not dict or not other or not set(other) <= set(names):
        raise RecordError("batch field 'x' must map some of 'names' to their values")
    if [name for name in names if name not in other] != cols:
        raise RecordError("batch fields 'cols' and 'x' must split 'names' between them in order")
    for name, values in other.items():
        if type(values) is not list or len(values) != n or not set(map(type, values)) <= _PLAIN_VALUES:
            raise RecordError(f"batch field 'x' must hold {n} strings, numbers, booleans or nulls per feature")
    # JSON floats are finite, so the values are what the writer's events held
    return names, other


def _is_float(value: object) -> bool:
    return type(value) is float


_PLAIN_VALUES = frozenset((str, int, bool, float, type(None)))
_CONFIDENCE = frozenset((float, int, type(None)))
_SCORES = frozenset((dict, type(None)))
_DICTS = frozenset((dict,))
_DICT_TYPE = {dict}
_FLOAT_TYPE = {float}
_DIGESTS = frozenset((str, type(None)))
