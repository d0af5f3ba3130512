"""Control-topic messages: prepare (sign rollbacks), encode, read back, describe, check.

The core emits ``Alert`` / ``RollbackDecision`` / ``Resolution`` objects; everything that leaves
the process goes through :func:`prepare` so a rollback is never published unsigned. The message
format is published as JSON Schema in ``stream/schemas/control-v1.schema.json``.

>>> from stream.signing import SigningKey
>>> key = SigningKey("k1", b"0123456789abcdef")
>>> doc = prepare({"schema": SCHEMA, "kind": "rollback", "id": "r"}, key)
>>> check(doc, key).ok
True
>>> parse_message(b"[1]", "control:0:7").error
'not a JSON object'
"""
from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

import orjson

from stream.signing import DEFAULT_FRESHNESS, SCHEMA, Freshness, Keys, SigningKey, VerifyResult, sign, verify

SCHEMA_PATH = Path(__file__).with_name("schemas") / "control-v1.schema.json"
KINDS = ("alert", "rollback", "resolve")
SIGNED_KINDS = frozenset({"rollback"})


class ControlLike(Protocol):
    """What the core's control messages provide."""

    def to_dict(self) -> dict[str, Any]: ...


def load_schema() -> dict[str, Any]:
    """The control message JSON Schema (draft 2020-12)."""
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def prepare(message: ControlLike | Mapping[str, Any], key: SigningKey) -> dict[str, Any]:
    """The JSON-ready document of a control message, signed when it is a rollback."""
    doc = message.to_dict() if hasattr(message, "to_dict") else dict(message)
    if doc.get("kind") in SIGNED_KINDS:
        doc = sign(doc, key)
    return doc


def encode(doc: Mapping[str, Any]) -> bytes:
    """Wire bytes of a control document (compact JSON)."""
    return orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)


def check(doc: Any, keys: Keys | None, freshness: Freshness | None = DEFAULT_FRESHNESS,
          now: float | None = None) -> VerifyResult:
    """Verify a document as a controller should: schema and kind always; key id, signature and
    freshness (unless ``freshness`` is None) for rollbacks."""
    if not isinstance(doc, Mapping):
        return VerifyResult(False, "not a JSON object")
    if doc.get("schema") != SCHEMA:
        return VerifyResult(False, f"wrong schema {doc.get('schema')!r} (expected {SCHEMA!r})")
    kind = doc.get("kind")
    if kind not in KINDS:
        return VerifyResult(False, f"unknown kind {kind!r}")
    if kind not in SIGNED_KINDS:
        return VerifyResult(True, "")
    if keys is None:
        return VerifyResult(False, "no signing key to verify the signature with")
    return verify(doc, keys, freshness, now)


@dataclass(slots=True)
class ReadItem:
    """One document read from a control dump, or the reason it could not be parsed."""

    where: str
    doc: Any = None
    error: str = ""


def parse_message(value: bytes | None, where: str = "-") -> ReadItem:
    """One control-topic message value as a JSON object, or why it is not one (never raises)."""
    if value is None:
        return ReadItem(where, error="empty value (tombstone)")
    if not value.strip():
        return ReadItem(where, error="empty value")
    try:
        value.decode("utf-8")
    except UnicodeDecodeError as exc:
        return ReadItem(where, error=f"not UTF-8 (byte {exc.start})")
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        return ReadItem(where, error=f"malformed JSON: {exc}")
    if not isinstance(doc, dict):
        return ReadItem(where, error="not a JSON object")
    return ReadItem(where, doc)


def read_documents(stream: IO[bytes], name: str = "-") -> Iterator[ReadItem]:
    """Control documents from JSON lines, one JSON array or one (pretty-printed) JSON object."""
    data = stream.read()
    text = data.lstrip()
    if text[:1] in (b"[", b"{"):
        try:
            whole = orjson.loads(data)
        except orjson.JSONDecodeError:
            whole = None
        if isinstance(whole, list):
            for i, doc in enumerate(whole):
                yield ReadItem(f"{name}[{i}]", doc)
            return
        if isinstance(whole, dict):
            yield ReadItem(name, whole)
            return
    for lineno, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield ReadItem(f"{name}:{lineno}", orjson.loads(line))
        except orjson.JSONDecodeError as exc:
            yield ReadItem(f"{name}:{lineno}", error=f"malformed JSON: {exc}")


def describe(doc: Any) -> str:
    """One human-readable line for a control document."""
    if not isinstance(doc, Mapping):
        return f"INVALID  {str(doc)[:200]}"
    kind = doc.get("kind")
    if kind == "alert":
        return (f"ALERT    [{doc.get('severity')}] {doc.get('model')} {doc.get('version')}/{doc.get('deployment')} "
                f"{doc.get('signal')}:{doc.get('key') or '-'} {doc.get('detector')}={doc.get('statistic')} "
                f"(threshold {doc.get('threshold')}) id={doc.get('id')} incident={doc.get('incident_id')}")
    if kind == "rollback":
        evidence = doc.get("evidence") or []
        return (f"ROLLBACK {doc.get('model')}: {doc.get('canary_version')} -> {doc.get('stable_version')} "
                f"reason={doc.get('reason')!r} evidence={len(evidence)} alert(s) "
                f"idempotency_key={doc.get('idempotency_key')}")
    if kind == "resolve":
        return (f"RESOLVE  {doc.get('model')} {doc.get('version')}/{doc.get('deployment')} {doc.get('signal')}:"
                f"{doc.get('key') or '-'} alert={doc.get('alert_id')} incident={doc.get('incident_id')} "
                f"after {doc.get('detections')} detection(s)")
    return f"UNKNOWN  {str(dict(doc))[:200]}"
