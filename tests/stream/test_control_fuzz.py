"""Fuzzing ``control verify``: whatever a file holds, the verdict is a VerifyResult, never a traceback.

Properties: ``read_documents`` turns any bytes into documents or per-line errors; ``check`` and
``verify`` return a :class:`VerifyResult` for any document; a signed rollback with any field
broken verifies only if its signed bytes did not change; the command itself exits 0 only when
every message verifies, and never with a traceback.
"""
from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream.cli import main
from stream.control import check, read_documents
from stream.signing import SCHEMA, SigningKey, VerifyResult, canonical_bytes, sign, verify
from tests.json_strategies import HOSTILE_TEXT, hostile_bytes, mutated, serialize

KEY = SigningKey("k1", b"control-fuzz-signing-key-0123")
OTHER = SigningKey("k2", b"another-signing-key-45678901")
ROLLBACK = {"schema": SCHEMA, "kind": "rollback", "id": "r-1", "model": "content-filter", "canary_version": "v2",
            "stable_version": "v1", "reason": "trigger", "idempotency_key": "ik-1", "ts": 1767225600.5,
            "evidence": [{"alert_id": "a-1", "signal": "trigger", "statistic": 31.5, "threshold": 12.0}]}
SIGNED = st.builds(lambda: sign(dict(ROLLBACK), KEY))
DOCUMENTS = st.one_of(SIGNED, st.just({"schema": SCHEMA, "kind": "alert", "id": "a-1", "model": "m"}),
                      st.fixed_dictionaries({"schema": st.just(SCHEMA) | HOSTILE_TEXT,
                                             "kind": st.sampled_from(["alert", "resolve", "rollback"]) | HOSTILE_TEXT}))
FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))


def items(raw: bytes) -> list[Any]:
    out = list(read_documents(io.BytesIO(raw), "f"))
    for item in out:
        assert item.where.startswith("f")
        assert (item.error == "") or item.doc is None
    return out


@FUZZ
@given(raw=hostile_bytes(DOCUMENTS).map(lambda r: r or b""))
def test_any_bytes_give_documents_or_errors(raw: bytes) -> None:
    for item in items(raw):
        if not item.error:
            result = check(item.doc, KEY)
            assert isinstance(result, VerifyResult)
            assert result.ok or result.reason
            if result.ok and isinstance(item.doc, dict) and item.doc.get("kind") == "rollback":
                # signed at its own issue time: the clock may have ticked since the document was made
                resigned = sign(dict(ROLLBACK), KEY, issued_at=item.doc["issued_at"])
                assert canonical_bytes(item.doc) == canonical_bytes(resigned)


@FUZZ
@given(doc=mutated(SIGNED), style=st.sampled_from(["orjson", "json_ascii", "json_raw"]))
def test_a_broken_rollback_never_verifies(doc: Any, style: str) -> None:
    for item in items(serialize(doc, style)):
        if item.error:
            continue
        result = check(item.doc, KEY)
        assert isinstance(result, VerifyResult)
        if result.ok and isinstance(item.doc, dict) and item.doc.get("kind") == "rollback":
            original = sign(dict(ROLLBACK), KEY, issued_at=item.doc["issued_at"])  # the MAC covers issued_at
            assert canonical_bytes(item.doc) == canonical_bytes(original), "a changed rollback verified"
        assert isinstance(verify(item.doc, [KEY, OTHER]), VerifyResult)


@settings(max_examples=200, deadline=None)
@given(doc=st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | HOSTILE_TEXT,
                        lambda c: st.lists(c, max_size=3) | st.dictionaries(HOSTILE_TEXT, c, max_size=3),
                        max_leaves=10))
def test_python_objects_give_a_verdict(doc: Any) -> None:
    """Documents that did not come from JSON (a controller's own objects): still a verdict."""
    signed = {**ROLLBACK, "extra": doc, "key_id": KEY.key_id, "signature": "0" * 64}
    for candidate in (doc, signed):
        assert isinstance(check(candidate, KEY), VerifyResult)
        assert not verify(candidate, KEY).ok


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(raw=hostile_bytes(DOCUMENTS).map(lambda r: r or b""))
def test_the_command_never_tracebacks(raw: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "msgs.jsonl"
        path.write_bytes(raw)
        out, err = io.StringIO(), io.StringIO()
        os.environ["DRIFTLINE_FUZZ_KEY"] = KEY.secret.decode()
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = main(["control", "verify", "--key-env", "DRIFTLINE_FUZZ_KEY", "--key-id", "k1", str(path)])
        finally:
            del os.environ["DRIFTLINE_FUZZ_KEY"]
    docs = items(raw)
    all_ok = bool(docs) and all(not i.error and check(i.doc, KEY).ok for i in docs)
    assert code == (0 if all_ok else 1)
    assert "Traceback" not in err.getvalue()
    out.getvalue().encode("utf-8")
