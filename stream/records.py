"""Records of the internal topic, where events are rekeyed by model.

Inference logs arrive partitioned however the producing team chose; driftline's sequential
detectors (ADWIN, Page-Hinkley, alert policy) need each model's events as one ordered stream
owned by one worker. The worker therefore re-publishes every valid event to the internal topic,
on the partition that owns its model, and runs detection only from there. A label is joined
with its prediction before being re-published, so it lands beside the model's events.

The format is versioned JSON (``"v": 1``), validated on read like any other input: whoever can
write the internal topic can send garbage, never code.
"""
from __future__ import annotations

import hashlib
import math
import zlib
from dataclasses import dataclass

import orjson

from detectors.events import InferenceEvent, JoinedLabel, LabelEvent

RECORD_VERSION = 1


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
        "f": _mark_non_finite(event.features),
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


def _restore_non_finite(value: object) -> object:
    if isinstance(value, dict) and len(value) == 1 and "$nonfinite" in value:
        return _NON_FINITE.get(value["$nonfinite"], value)
    return value
