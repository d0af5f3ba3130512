"""Signed model-registry events: Ed25519 keys, canonical bytes, signing and verification.

The deploy step (or a registry webhook) announces each release on the registry topic::

    {"schema": "driftline.registry/v1", "model": "content-filter", "version": "v7",
     "digest": "sha256:<64 hex>", "stage": "canary", "issued_at": 1767225600,
     "sequence": 1767225600123, "key_id": "deploy-2026", "signature": "<128 hex>"}

``signature`` is Ed25519 over the canonical bytes of the document without ``signature``: UTF-8
JSON, keys sorted, no whitespace (every signed value is a string or an integer, so there is one
encoding). ``key_id`` is inside the signed bytes. Workers hold public keys only (by key id): they
can check a release but never forge one; the private key stays with the deploy step.

Stateless checks live here (schema, fields, key id, signature, issue time not in the future);
replay protection and staleness need the model's manifest and event clock and are decided by
:class:`detectors.manifest.Manifest`.

>>> key = generate_key()
>>> doc = sign_event(key, "k1", "m", "v7", "sha256:" + "0" * 64, "canary", issued_at=100, sequence=1)
>>> keys = {"k1": key.public_key()}
>>> verify_event(doc, keys).version
'v7'
>>> try:
...     verify_event(dict(doc, stage="production"), keys)
... except RegistryError as err:
...     err.reason
'registry_bad_signature'
"""
from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from detectors.manifest import DIGEST, MAX_NAME, MAX_SEQUENCE, STAGES, RegistryEntry

SCHEMA = "driftline.registry/v1"
FIELDS = frozenset(("schema", "model", "version", "digest", "stage", "issued_at", "sequence", "key_id", "signature"))
MAX_EVENT_BYTES = 4096
MAX_FUTURE_SECONDS = 300.0
_SIG = re.compile(r"[0-9a-f]{128}")
_KEY_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
PublicKeys = Mapping[str, Ed25519PublicKey]


class RegistryError(ValueError):
    """A registry event that must not touch any manifest; ``reason`` is its dead-letter reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


# -- keys ------------------------------------------------------------------------------------------
def generate_key() -> Ed25519PrivateKey:
    """A new Ed25519 private key."""
    return Ed25519PrivateKey.generate()


def write_keypair(key: Ed25519PrivateKey, private_path: str | Path, public_path: str | Path) -> None:
    """Write the private key (PKCS#8 PEM, mode 0600, never overwritten) and its public key (PEM)."""
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    Path(public_path).write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                                serialization.PublicFormat.SubjectPublicKeyInfo))


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    """An Ed25519 private key from a PEM file; raises ValueError when it is not one."""
    key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path}: not an Ed25519 private key")
    return key


def load_public_key(path: str | Path) -> Ed25519PublicKey:
    """An Ed25519 public key from a PEM file; raises ValueError when it is not one (or is a private key)."""
    data = Path(path).read_bytes()
    if b"PRIVATE KEY" in data:
        raise ValueError(f"{path}: holds a private key; workers take public keys only")
    key = serialization.load_pem_public_key(data)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path}: not an Ed25519 public key")
    return key


def load_public_keys(files: Mapping[str, str]) -> dict[str, Ed25519PublicKey]:
    """Key id -> public key, from the ``registry.public_keys`` files; raises ValueError naming the bad one."""
    out = {}
    for key_id, path in files.items():
        try:
            out[key_id] = load_public_key(path)
        except OSError as exc:
            raise ValueError(f"registry.public_keys.{key_id}: cannot read {path}: {exc.strerror or exc}") from None
        except ValueError as exc:
            raise ValueError(f"registry.public_keys.{key_id}: {exc}") from None
    return out


# -- signing ---------------------------------------------------------------------------------------
def canonical_bytes(doc: Mapping[str, Any]) -> bytes:
    """The bytes a signature covers: sorted-key compact JSON of ``doc`` without ``signature``."""
    return orjson.dumps({k: v for k, v in doc.items() if k != "signature"}, option=orjson.OPT_SORT_KEYS)


def sign_event(key: Ed25519PrivateKey, key_id: str, model: str, version: str, digest: str, stage: str,
               issued_at: int | None = None, sequence: int | None = None) -> dict[str, Any]:
    """A signed registry event (``issued_at`` defaults to now, ``sequence`` to now in milliseconds)."""
    now = time.time()
    doc: dict[str, Any] = {
        "schema": SCHEMA, "model": model, "version": version, "digest": normalize_digest(digest), "stage": stage,
        "issued_at": int(now) if issued_at is None else int(issued_at),
        "sequence": int(now * 1000) if sequence is None else int(sequence), "key_id": key_id}
    _check_fields(doc)
    doc["signature"] = key.sign(canonical_bytes(doc)).hex()
    return doc


def normalize_digest(value: str) -> str:
    """``sha256:<64 lowercase hex>`` from that form or bare hex (any case); ValueError otherwise."""
    text = value.strip().lower()
    if not text.startswith("sha256:"):
        text = "sha256:" + text
    if DIGEST.fullmatch(text) is None:
        raise ValueError(f"not a sha256 digest: {value[:80]!r} (expected sha256:<64 hex>)")
    return text


# -- verification ----------------------------------------------------------------------------------
def parse_event(raw: bytes | None) -> dict[str, Any]:
    """The JSON object of a registry message; RegistryError(registry_malformed) otherwise."""
    if raw is None or len(raw) > MAX_EVENT_BYTES:
        raise RegistryError("registry_malformed", "registry event is empty or larger than "
                                                  f"{MAX_EVENT_BYTES} bytes")
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise RegistryError("registry_malformed", f"registry event is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise RegistryError("registry_malformed", "registry event is not a JSON object")
    return doc


def verify_event(doc: Any, keys: PublicKeys, now: float | None = None,
                 max_future: float = MAX_FUTURE_SECONDS) -> RegistryEntry:
    """Check a registry event's schema, fields, key id and Ed25519 signature; the entry it announces.

    ``now`` (default: the wall clock) bounds ``issued_at`` from above by ``max_future`` seconds.
    Raises :class:`RegistryError` with reason ``registry_malformed``, ``registry_unsigned``,
    ``registry_unknown_key``, ``registry_bad_signature`` or ``registry_future``.
    """
    if not isinstance(doc, Mapping):
        raise RegistryError("registry_malformed", "registry event is not a JSON object")
    if doc.get("schema") != SCHEMA:
        raise RegistryError("registry_malformed", f"schema must be {SCHEMA!r}")
    extra = sorted(set(doc) - FIELDS)
    if extra:
        raise RegistryError("registry_malformed", f"unexpected fields {extra[:5]}")
    signature = doc.get("signature")
    if signature is None or signature == "":
        raise RegistryError("registry_unsigned", "registry event carries no signature")
    _check_fields(doc)
    key = keys.get(doc["key_id"])
    if key is None:
        raise RegistryError("registry_unknown_key", f"unknown registry key id {doc['key_id']!r}")
    if not isinstance(signature, str) or _SIG.fullmatch(signature) is None:
        raise RegistryError("registry_bad_signature", "signature must be 128 lowercase hex digits")
    try:
        key.verify(bytes.fromhex(signature), canonical_bytes(doc))
    except InvalidSignature:
        raise RegistryError("registry_bad_signature", "signature does not verify (tampered or forged)") from None
    limit = (time.time() if now is None else now) + max_future
    if doc["issued_at"] > limit:
        raise RegistryError("registry_future", f"issued_at {doc['issued_at']} is more than {max_future:g} s "
                                               f"in the future")
    return RegistryEntry(doc["model"], doc["version"], doc["digest"], doc["stage"], doc["issued_at"],
                         doc["sequence"], doc["key_id"])


def _check_fields(doc: Mapping[str, Any]) -> None:
    for name in ("model", "version", "digest", "stage", "key_id"):
        v = doc.get(name)
        if not isinstance(v, str) or not v or len(v) > MAX_NAME:
            raise RegistryError("registry_malformed", f"field {name!r} must be a non-empty string "
                                                      f"of at most {MAX_NAME} characters")
    for name in ("issued_at", "sequence"):
        v = doc.get(name)
        if type(v) is not int or not 0 < v <= MAX_SEQUENCE:
            raise RegistryError("registry_malformed", f"field {name!r} must be a positive integer")
    if DIGEST.fullmatch(doc["digest"]) is None:
        raise RegistryError("registry_malformed", "digest must be sha256:<64 lowercase hex>")
    if doc["stage"] not in STAGES:
        raise RegistryError("registry_malformed", f"stage must be one of {list(STAGES)}")
    if _KEY_ID.fullmatch(doc["key_id"]) is None:
        raise RegistryError("registry_malformed", "key_id must match [A-Za-z0-9._:-]{1,128}")
