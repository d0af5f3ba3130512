"""Typed msgspec schemas for the default JSON layout: one C pass parses, type-checks and bounds an event.

The general decoder (:class:`stream.decoding.JsonDecoder`) parses with orjson into dicts, then
checks each field in Python. For the default layout (no field mapping, no constants, seconds),
the same checks are expressed as a msgspec schema built from the topic's :class:`Limits`:
strings non-empty and bounded, features flat and bounded, scores numeric and bounded. A message
the schema accepts becomes an event directly; anything else (NaN literals, integer ids, nested
feature values, a missing field...) returns None and takes the general path, which names the
problem with its documented dead-letter reason. So the fast path only ever accepts what the
general path accepts, with the same result (tests/stream/test_typed_decoding.py checks that).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Literal, Optional, Union

import msgspec

from detectors.events import InferenceEvent, LabelEvent
from detectors.manifest import DIGEST

if TYPE_CHECKING:
    from stream.decoding import Limits

# msgspec nests by recursion: deep documents raise RecursionError, which the general path handles
_ERRORS = (msgspec.DecodeError, msgspec.ValidationError, RecursionError)
_DIGEST_MATCH = DIGEST.fullmatch
_INT = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]  # beyond int64 the general path decides


#: orjson refuses documents nested deeper than this (the general path's malformed_json); msgspec
#: skips unknown fields at any depth, so a message that may nest deeper takes the general path
_MAX_DEPTH = 1024


def _text(raw: bytes) -> bytes | str | None:
    """The message for msgspec, which does not check UTF-8 itself: ASCII as is, else strictly
    decoded; None for the general path (text input, invalid UTF-8, more than ``_MAX_DEPTH``
    opening brackets)."""
    if type(raw) is not bytes:
        if not isinstance(raw, (bytearray, memoryview)):
            return None  # text input (it may hold lone surrogates): the general path
        raw = bytes(raw)
    if len(raw) > 2 * _MAX_DEPTH and raw.count(b"[") + raw.count(b"{") > _MAX_DEPTH:
        return None  # brackets inside strings count too: such a message only loses the fast path
    if raw.isascii():
        return raw
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _inference_schema(limits: "Limits", bound_strings: bool) -> type:
    """The default inference layout; ``bound_strings=False`` for messages too short to hold a long string."""
    meta = {"max_length": limits.max_string} if bound_strings else {}
    name = Annotated[str, msgspec.Meta(min_length=1, **meta)]
    key = Annotated[str, msgspec.Meta(**meta)] if bound_strings else str
    value = Union[float, _INT, key, bool, None]
    features = Annotated[dict[key, value], msgspec.Meta(max_length=limits.max_features)]
    scores = Annotated[dict[key, float], msgspec.Meta(max_length=limits.max_scores)]
    return msgspec.defstruct("Inference", [
        ("event_id", name), ("ts", float), ("model", name), ("model_version", name), ("features", features),
        ("prediction", name), ("deployment", Literal["stable", "canary", "shadow"], "stable"),
        ("scores", Optional[scores], None), ("confidence", Optional[float], None),
        ("artifact_digest", Optional[str], None)])


def inference_reader(limits: "Limits") -> Callable[[bytes], InferenceEvent | None]:
    """A function bytes -> InferenceEvent for well-formed default-layout messages, else None."""
    decode_short = msgspec.json.Decoder(_inference_schema(limits, False)).decode
    decode_long = msgspec.json.Decoder(_inference_schema(limits, True)).decode
    short = limits.max_string  # no string inside a message this short can be longer than the limit

    def read(raw: bytes) -> InferenceEvent | None:
        text = _text(raw)
        if text is None:
            return None
        try:
            s = (decode_short if len(raw) <= short else decode_long)(text)
        except _ERRORS:
            return None
        ts, conf, sc, digest = s.ts, s.confidence, s.scores, s.artifact_digest
        if ts - ts != 0:
            return None
        if conf is None and sc:
            vals = sc.values()
            total = sum(vals)
            if total - total != 0:
                return None  # non-finite scores: the general path picks the finite maximum
            conf = max(vals)
        if digest is not None and (len(digest) != 71 or _DIGEST_MATCH(digest) is None):
            return None  # the general path normalizes it or names the problem
        return InferenceEvent(s.event_id, ts, s.model, s.model_version, s.deployment, s.features, s.prediction,
                              conf, sc, -1, digest)
    return read


def label_reader(limits: "Limits") -> Callable[[bytes], LabelEvent | None]:
    """A function bytes -> LabelEvent for well-formed default-layout label messages, else None."""
    name = Annotated[str, msgspec.Meta(min_length=1, max_length=limits.max_string)]
    schema = msgspec.defstruct("Label", [("event_id", name), ("ts", float), ("label", name),
                                         ("source", Optional[name], None)])
    decode = msgspec.json.Decoder(schema).decode

    def read(raw: bytes) -> LabelEvent | None:
        text = _text(raw)
        if text is None:
            return None
        try:
            s = decode(text)
        except _ERRORS:
            return None
        ts = s.ts
        if ts - ts != 0:
            return None
        return LabelEvent(s.event_id, ts, s.label, "unknown" if s.source is None else s.source)
    return read
