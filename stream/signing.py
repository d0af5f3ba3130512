"""HMAC-SHA256 signatures on control messages (rollback commands), with an issue time.

A deployment controller must only act on rollbacks driftline actually issued, and only while they
are fresh. ``sign`` adds ``canonicalization`` (``"rfc8785"``), ``issued_at`` (wall clock, integer
epoch seconds), ``key_id`` and ``signature`` to a message; the signature is HMAC-SHA256 (lowercase
hex) over the RFC 8785 canonical bytes (:mod:`stream.canonical`) of the message without its
``signature`` field, so a controller in any language can recompute them with a JCS library.
JSON has no NaN or Infinity, so the canonical form has none either: ``sign`` writes a non-finite
float as the string ``"nan"``, ``"inf"`` or ``"-inf"`` (the control schema's convention for
numbers), and a message that still carries a raw non-finite number never verifies (null, NaN and
Infinity can no longer share one form). ``canonicalization``, ``key_id`` and ``issued_at`` are
inside the signed bytes, so none can be swapped. ``verify`` checks the signature against a
keyring (several key ids during a rotation), then freshness: a command older than
``max_age_seconds`` is ``expired``, one dated more than ``max_skew_seconds`` ahead of the
verifier's clock is ``issued in the future``.

The fields ``sign`` adds are transport fields: they are absent from a replay's output and
``issued_at`` differs between runs, while ids and every other field are deterministic.

>>> key = SigningKey("k1", b"0123456789abcdef0123")
>>> doc = sign({"schema": "driftline.control/v1", "kind": "rollback", "id": "r1"}, key, issued_at=1_800_000_000)
>>> verify(doc, key, now=1_800_000_010).ok
True
>>> verify(dict(doc, id="r2"), key, now=1_800_000_010).reason
'bad signature'
>>> verify(doc, key, now=1_800_000_400).reason
'expired: issued 400 s ago (max age 300 s)'
"""
from __future__ import annotations

import hashlib
import hmac
import math
import numbers
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from stream.canonical import jcs

SCHEMA = "driftline.control/v1"
ALGORITHM = "HMAC-SHA256"
MIN_KEY_BYTES = 16
DEFAULT_MAX_AGE_SECONDS = 300
DEFAULT_MAX_SKEW_SECONDS = 30
CANONICALIZATION = "rfc8785"  # the version of the signed bytes; a new form gets a new name
TRANSPORT_FIELDS = ("canonicalization", "issued_at", "key_id", "signature")  # outside the deterministic content
_HEX = re.compile(r"[0-9a-f]{64}")
_NON_FINITE = {math.inf: "inf", -math.inf: "-inf"}


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


@dataclass(frozen=True, slots=True)
class Freshness:
    """How old (and how far ahead of the verifier's clock) a command's ``issued_at`` may be."""

    max_age_seconds: float = DEFAULT_MAX_AGE_SECONDS
    max_skew_seconds: float = DEFAULT_MAX_SKEW_SECONDS

    def check(self, msg: Mapping[str, Any], now: float | None = None) -> VerifyResult:
        """``ok`` when ``msg['issued_at']`` lies within [now - max age, now + max skew]."""
        key_id = msg.get("key_id") if isinstance(msg.get("key_id"), str) else None
        issued = msg.get("issued_at")
        if issued is None:
            return VerifyResult(False, "missing issue time (issued_at)", key_id)
        if not isinstance(issued, int) or isinstance(issued, bool):
            return VerifyResult(False, "malformed issue time (issued_at must be integer epoch seconds)", key_id)
        now = time.time() if now is None else now
        age = now - issued
        if age > self.max_age_seconds:
            return VerifyResult(False, f"expired: issued {age:.0f} s ago (max age {self.max_age_seconds:g} s)", key_id)
        if -age > self.max_skew_seconds:
            return VerifyResult(False, f"issued in the future: {-age:.0f} s ahead of this clock "
                                       f"(max skew {self.max_skew_seconds:g} s)", key_id)
        return VerifyResult(True, "", key_id)


DEFAULT_FRESHNESS = Freshness()
Keys = SigningKey | Mapping[str, SigningKey] | Iterable[SigningKey]


def canonical_bytes(msg: Mapping[str, Any]) -> bytes:
    """The bytes a signature covers: the RFC 8785 (JCS) form of ``msg`` minus ``signature``.

    Raises ``ValueError`` naming the path of a non-finite number (JSON has none; see
    :func:`finite_json`), an integer beyond the range of a double or a lone surrogate.
    """
    return jcs({k: v for k, v in msg.items() if k != "signature"})


def finite_json(value: Any) -> Any:
    """``value`` with every non-finite float written as ``"nan"``, ``"inf"`` or ``"-inf"``."""
    if isinstance(value, Mapping):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, numbers.Number):  # numpy arrays
        return finite_json(value.tolist())
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        f = float(value)
        if not math.isfinite(f):
            return "nan" if math.isnan(f) else _NON_FINITE[f]
    return value


def _mac(secret: bytes, payload: bytes) -> str:
    return hmac.new(secret, payload, hashlib.sha256).hexdigest()


def sign(msg: Mapping[str, Any], key: SigningKey, issued_at: int | None = None) -> dict[str, Any]:
    """A copy of ``msg`` carrying ``issued_at`` (now by default), ``key_id`` and its ``signature``."""
    out = finite_json({k: v for k, v in msg.items() if k not in TRANSPORT_FIELDS})
    out["canonicalization"] = CANONICALIZATION
    out["issued_at"] = int(time.time()) if issued_at is None else int(issued_at)
    out["key_id"] = key.key_id
    out["signature"] = _mac(key.secret, canonical_bytes(out))
    return out


def keyring(keys: Keys) -> dict[str, SigningKey]:
    """Keys by id, from one key, a mapping or an iterable of keys."""
    if isinstance(keys, SigningKey):
        return {keys.key_id: keys}
    if isinstance(keys, Mapping):
        return dict(keys)
    return {k.key_id: k for k in keys}


def verify(msg: Any, keys: Keys, freshness: Freshness | None = DEFAULT_FRESHNESS,
           now: float | None = None) -> VerifyResult:
    """Check schema, key id, signature (constant-time) and, unless ``freshness`` is None, issue time."""
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
    key = keyring(keys).get(key_id)
    if key is None:
        return VerifyResult(False, f"unknown key id {key_id[:128]!r}", key_id)
    if not isinstance(signature, str) or _HEX.fullmatch(signature) is None:
        return VerifyResult(False, "malformed signature (expected 64 lowercase hex digits)", key_id)
    form = msg.get("canonicalization")
    if form != CANONICALIZATION:
        return VerifyResult(False, f"unsupported canonicalization {str(form)[:32]!r} (expected {CANONICALIZATION!r})"
                            if form is not None else "missing canonicalization", key_id)
    try:
        expected = _mac(key.secret, canonical_bytes(msg))
    except ValueError as exc:
        return VerifyResult(False, f"message cannot be canonically encoded: {exc}", key_id)
    if not hmac.compare_digest(expected, signature):
        return VerifyResult(False, "bad signature", key_id)
    if freshness is not None:
        return freshness.check(msg, now)
    return VerifyResult(True, "", key_id)
