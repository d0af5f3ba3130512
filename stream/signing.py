"""HMAC-SHA256 signatures on control messages (rollback commands).

A deployment controller must only act on rollbacks driftline actually issued. ``sign`` adds
``key_id`` and ``signature`` to a message; the signature is HMAC-SHA256 (lowercase hex) over the
canonical encoding of the message without its ``signature`` field: UTF-8 JSON, keys sorted at
every level, no whitespace, floats in shortest round-trip form, non-finite floats as ``null``.
``key_id`` is inside the signed bytes, so it cannot be swapped either.

>>> key = SigningKey("k1", b"0123456789abcdef0123")
>>> doc = sign({"schema": "driftline.control/v1", "kind": "rollback", "id": "r1"}, key)
>>> verify(doc, key).ok
True
>>> verify(dict(doc, id="r2"), key).reason
'bad signature'
"""
from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

SCHEMA = "driftline.control/v1"
ALGORITHM = "HMAC-SHA256"
MIN_KEY_BYTES = 16
_HEX = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A named HMAC secret; ``key_id`` travels with signatures so keys can be rotated."""

    key_id: str
    secret: bytes

    def __post_init__(self) -> None:
        if not self.key_id:
            raise ValueError("signing key id must not be empty")
        if len(self.secret) < MIN_KEY_BYTES:
            raise ValueError(f"signing key must be at least {MIN_KEY_BYTES} bytes long")

    def __repr__(self) -> str:  # never print the secret
        return f"SigningKey(key_id={self.key_id!r}, secret=<{len(self.secret)} bytes>)"


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """Outcome of a verification; ``reason`` says why it failed (empty when ``ok``)."""

    ok: bool
    reason: str = ""
    key_id: str | None = None

    def __bool__(self) -> bool:
        return self.ok


Keys = SigningKey | Mapping[str, SigningKey] | Iterable[SigningKey]


def canonical_bytes(msg: Mapping[str, Any]) -> bytes:
    """The bytes a signature covers: sorted-key compact JSON of ``msg`` minus ``signature``."""
    body = {k: v for k, v in msg.items() if k != "signature"}
    return orjson.dumps(body, option=orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY)


def _mac(secret: bytes, payload: bytes) -> str:
    return hmac.new(secret, payload, hashlib.sha256).hexdigest()


def sign(msg: Mapping[str, Any], key: SigningKey) -> dict[str, Any]:
    """A copy of ``msg`` carrying ``key_id`` and its HMAC-SHA256 ``signature``."""
    out = {k: v for k, v in msg.items() if k != "signature"}
    out["key_id"] = key.key_id
    out["signature"] = _mac(key.secret, canonical_bytes(out))
    return out


def _keyring(keys: Keys) -> dict[str, SigningKey]:
    if isinstance(keys, SigningKey):
        return {keys.key_id: keys}
    if isinstance(keys, Mapping):
        return dict(keys)
    return {k.key_id: k for k in keys}


def verify(msg: Any, keys: Keys) -> VerifyResult:
    """Check schema, key id and signature of ``msg`` (constant-time comparison)."""
    if not isinstance(msg, Mapping):
        return VerifyResult(False, "not a JSON object")
    schema = msg.get("schema")
    if schema != SCHEMA:
        return VerifyResult(False, f"wrong schema {schema!r} (expected {SCHEMA!r})")
    signature = msg.get("signature")
    if signature is None:
        return VerifyResult(False, "missing signature")
    key_id = msg.get("key_id")
    if not isinstance(key_id, str) or not key_id:
        return VerifyResult(False, "missing key id")
    key = _keyring(keys).get(key_id)
    if key is None:
        return VerifyResult(False, f"unknown key id {key_id!r}", key_id)
    if not isinstance(signature, str) or _HEX.fullmatch(signature) is None:
        return VerifyResult(False, "malformed signature (expected 64 lowercase hex digits)", key_id)
    try:
        expected = _mac(key.secret, canonical_bytes(msg))
    except (TypeError, orjson.JSONEncodeError):
        return VerifyResult(False, "message cannot be canonically encoded", key_id)
    if not hmac.compare_digest(expected, signature):
        return VerifyResult(False, "bad signature", key_id)
    return VerifyResult(True, "", key_id)


def load_signing_key(spec: Any) -> SigningKey:
    """The key named by a config ``signing`` section (resolved by :mod:`stream.config`)."""
    from stream.config import signing_key

    return signing_key(spec)
