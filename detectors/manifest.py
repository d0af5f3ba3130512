"""The live version manifest of one model: which versions may serve, and the artifact digest of each.

Fed with registry entries whose signature ``stream/`` has already verified; what is left to decide
here is pure and stateful, so it is part of the model's state and replays identically:

- *replay protection*: an entry is accepted only if its ``sequence`` is newer than the last
  accepted one for the same version (and, for a version no longer held, newer than ``floor``,
  the highest sequence of any entry evicted to keep the manifest bounded);
- *freshness*: an entry issued more than ``max_age`` seconds before the model's event clock is
  stale;
- the *allow-list*: versions whose latest stage is ``staging``, ``canary`` or ``production`` serve;
  ``archived`` ones do not (traffic from them raises ``version_integrity`` again).

>>> m = Manifest("m")
>>> e = RegistryEntry("m", "v7", "sha256:" + "a" * 64, "canary", 100, 1, "k1")
>>> m.apply(e, now=150.0, max_age=3600.0) is None, sorted(m.serving()), m.expected("v7")[:9]
(True, ['v7'], 'sha256:aa')
>>> m.apply(e, now=150.0, max_age=3600.0)
'registry_replayed'
>>> m.apply(RegistryEntry("m", "v7", e.digest, "archived", 200, 2, "k1"), 250.0, None), sorted(m.serving())
(None, [])
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from detectors.errors import StateFormatError
from detectors.state import check_dict, check_int, check_list, check_str

STAGES: tuple[str, ...] = ("staging", "canary", "production", "archived")
SERVING: frozenset[str] = frozenset(("staging", "canary", "production"))
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
MAX_ENTRIES = 256          # versions held per model; archived ones are evicted first (oldest sequence)
MAX_NAME = 200
MAX_SEQUENCE = (1 << 63) - 1
STATE_VERSION = 1


@dataclass(frozen=True, slots=True)
class RegistryEntry:
    """One verified registry event: ``version`` of ``model`` is the artifact ``digest``, at ``stage``."""

    model: str
    version: str
    digest: str
    stage: str
    issued_at: int   # seconds since the epoch, as signed
    sequence: int    # strictly increasing per (model, version): replay protection
    key_id: str
    position: int = -1


@dataclass(slots=True)
class _Held:
    digest: str
    stage: str
    issued_at: int
    sequence: int
    key_id: str
    mismatches: int = 0  # events of this version seen with another digest (since this digest)


class Manifest:
    """Registry entries accepted for one model (see module doc)."""

    def __init__(self, model: str, max_entries: int = MAX_ENTRIES) -> None:
        self.model = model
        self.max_entries = max_entries
        self.entries: dict[str, _Held] = {}
        self.floor = 0
        self.accepted = 0
        self._serving: frozenset[str] = frozenset()
        self._expected: dict[str, str] = {}

    # -- decisions ---------------------------------------------------------------------------
    def check(self, entry: RegistryEntry, now: float, max_age: float | None) -> str | None:
        """Why ``entry`` must be refused (a dead-letter reason), or None when it is acceptable."""
        if entry.model != self.model:
            return "registry_wrong_model"
        if entry.stage not in STAGES or DIGEST.fullmatch(entry.digest) is None or not entry.version \
                or len(entry.version) > MAX_NAME or not 0 < entry.sequence <= MAX_SEQUENCE:
            return "registry_malformed"
        held = self.entries.get(entry.version)
        if entry.sequence <= (held.sequence if held is not None else self.floor):
            return "registry_replayed"
        if max_age is not None and math.isfinite(now) and entry.issued_at < now - max_age:
            return "registry_stale"
        if held is None and len(self.entries) >= self.max_entries and not any(
                h.stage == "archived" for h in self.entries.values()):
            return "registry_manifest_full"
        return None

    def apply(self, entry: RegistryEntry, now: float, max_age: float | None) -> str | None:
        """Accept ``entry`` if :meth:`check` allows it; returns the refusal reason otherwise."""
        reason = self.check(entry, now, max_age)
        if reason is not None:
            return reason
        held = self.entries.get(entry.version)
        mismatches = held.mismatches if held is not None and held.digest == entry.digest else 0
        if held is None and len(self.entries) >= self.max_entries:
            self._evict()
        self.entries[entry.version] = _Held(entry.digest, entry.stage, entry.issued_at, entry.sequence,
                                            entry.key_id, mismatches)
        self.accepted += 1
        self._refresh()
        return None

    def _evict(self) -> None:
        oldest = min((h.sequence, v) for v, h in self.entries.items() if h.stage == "archived")
        self.floor = max(self.floor, oldest[0])
        del self.entries[oldest[1]]

    def _refresh(self) -> None:
        self._serving = frozenset(v for v, h in self.entries.items() if h.stage in SERVING)
        self._expected = {v: h.digest for v, h in self.entries.items() if h.stage in SERVING}

    # -- queries -----------------------------------------------------------------------------
    def serving(self) -> frozenset[str]:
        """Versions allowed to serve traffic."""
        return self._serving

    def known(self) -> frozenset[str]:
        """Every version the registry has spoken about (serving or archived)."""
        return frozenset(self.entries)

    def expected(self, version: str) -> str | None:
        """The registered digest of a serving version (None: not serving, or unknown)."""
        return self._expected.get(version)

    @property
    def expected_digests(self) -> dict[str, str]:
        """Serving version -> registered digest (do not modify)."""
        return self._expected

    def count_mismatches(self, version: str, n: int) -> int:
        """Add ``n`` wrong-digest events of ``version``; returns the count before them."""
        held = self.entries[version]
        before = held.mismatches
        held.mismatches = before + n
        return before

    def describe(self) -> dict[str, Any]:
        """JSON-ready view: each version's digest, stage, issue time, sequence and key id."""
        return {"model": self.model, "floor": self.floor, "accepted": self.accepted,
                "versions": {v: {"digest": h.digest, "stage": h.stage, "issued_at": h.issued_at,
                                 "sequence": h.sequence, "key_id": h.key_id, "digest_mismatches": h.mismatches}
                             for v, h in sorted(self.entries.items())}}

    # -- state -------------------------------------------------------------------------------
    def to_state(self) -> dict[str, Any]:
        """Versioned JSON-able state."""
        return {"v": STATE_VERSION, "floor": self.floor, "accepted": self.accepted,
                "entries": [[v, h.digest, h.stage, h.issued_at, h.sequence, h.key_id, h.mismatches]
                            for v, h in sorted(self.entries.items())]}

    def load_state(self, doc: Any) -> None:
        """Restore :meth:`to_state`; raises :class:`StateFormatError` on anything invalid."""
        doc = check_dict(doc, "manifest")
        if doc.get("v") != STATE_VERSION:
            raise StateFormatError(f"manifest: unsupported state version {doc.get('v')!r}")
        rows = check_list(doc.get("entries"), "manifest entries")
        if len(rows) > self.max_entries:
            raise StateFormatError("manifest: too many entries")
        entries: dict[str, _Held] = {}
        for row in rows:
            v, digest, stage, issued, seq, key_id, mism = check_list(row, "manifest entry", 7)
            if len(check_str(v, "manifest version")) > MAX_NAME or not v:
                raise StateFormatError("manifest: bad version name")
            if DIGEST.fullmatch(check_str(digest, "manifest digest")) is None:
                raise StateFormatError("manifest: bad digest")
            if check_str(stage, "manifest stage") not in STAGES:
                raise StateFormatError(f"manifest: unknown stage {stage!r}")
            entries[v] = _Held(digest, stage, check_int(issued, "issued_at", lo=None),
                               check_int(seq, "sequence", 1, MAX_SEQUENCE), check_str(key_id, "key_id")[:MAX_NAME],
                               check_int(mism, "mismatches"))
        self.entries = entries
        self.floor = check_int(doc.get("floor"), "manifest floor", 0, MAX_SEQUENCE)
        self.accepted = check_int(doc.get("accepted"), "manifest accepted")
        self._refresh()
