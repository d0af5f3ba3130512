"""Deterministic identifiers: a replay after a crash produces the same ids as the live run."""
from __future__ import annotations

import hashlib

SCHEMA = "driftline.control/v1"


def stable_id(*parts: object) -> str:
    """sha256 over the ``|``-joined parts, first 32 hex digits.

    >>> stable_id("m", "v1", "trigger", "logo", 42) == stable_id("m", "v1", "trigger", "logo", 42)
    True
    """
    text = "|".join(str(p).replace("\\", "\\\\").replace("|", "\\|") for p in parts)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]
