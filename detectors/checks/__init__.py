"""Contract checks every sequential (``cusum``) detector of driftline must pass, in the style of
``river.checks``: :func:`yield_checks` yields check functions for one :class:`Harness`, and
:data:`HARNESSES` names one harness per signal that has a ``cusum`` detector, so the test suite
(``tests/detectors/test_checks.py``) runs every check on every such signal and a new signal with a
``cusum`` detector cannot be added without a harness.

The contracts:

- **batch invariance**: the state after a stream is the same (byte for byte, as JSON) however
  the stream is cut into batches;
- **serialization round trip**: a state written to JSON and read back gives the same future
  (detections and state);
- **false-alarm budget**: on stationary streams of several distribution families, detections per
  key and million updates stay within twice the budget (plus Poisson slack) at a raised budget
  a short run can resolve;
- **detection delay**: a change is detected, and the delay (updates after the change) is recorded.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import orjson

from detectors.checks.harnesses import HARNESSES, Harness

__all__ = ["HARNESSES", "Harness", "check_batch_invariance", "check_round_trip", "check_false_alarm_budget",
           "check_detection_delay", "yield_checks"]

CHECK_BUDGET = 2000.0  # false alarms per million updates per key used by the rate check


def _json(st: Any) -> bytes:
    return orjson.dumps(st, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_SORT_KEYS)


def _run(h: Harness, family: str, n: int, cuts: list[int], seed: int, shift_at: int | None = None,
         per_million: float = 0.01) -> tuple[list[int], bytes]:
    h.build(family, per_million, np.random.default_rng([seed, 1]))
    data = h.draw(family, n, np.random.default_rng([seed, 2]), shift_at)
    bounds = [0] + sorted({c for c in cuts if 0 < c < n}) + [n]
    hits: list[int] = []
    for lo, hi in zip(bounds, bounds[1:]):
        hits += [lo + i for i in h.feed(h.slice(data, lo, hi))]
    return hits, _json(h.state())


def check_batch_invariance(h: Harness) -> None:
    """Same detections and the same state bytes for three different batch cuttings."""
    n = 3000
    base = _run(h, h.families[0], n, [], 7, shift_at=n // 2, per_million=CHECK_BUDGET)
    for cuts in ([1, 2, 999, 1000, 2047], list(range(0, n, 97)), [1500]):
        got = _run(h, h.families[0], n, cuts, 7, shift_at=n // 2, per_million=CHECK_BUDGET)
        assert got == base, f"{h.signal}: state or detections depend on batch cuts {cuts[:5]}"


def check_round_trip(h: Harness) -> None:
    """State through JSON text and back: identical future."""
    n = 3000
    rng = np.random.default_rng(11)
    h.build(h.families[0], CHECK_BUDGET, rng)
    data = h.draw(h.families[0], n, np.random.default_rng(12), n // 2)
    h.feed(h.slice(data, 0, 1234))
    st = orjson.loads(_json(h.state()))
    twin = h.clone()
    twin.load(st)
    assert _json(twin.state()) == _json(h.state()), f"{h.signal}: state changes through JSON"
    rest = h.slice(data, 1234, n)
    assert h.feed(rest) == twin.feed(rest), f"{h.signal}: a restored detector sees another future"
    assert _json(twin.state()) == _json(h.state())


def check_false_alarm_budget(h: Harness, n: int = 40_000, budget: float = CHECK_BUDGET) -> dict[str, Any]:
    """Stationary streams of every family: detections per key and million updates within budget."""
    report: dict[str, Any] = {}
    for i, fam in enumerate(h.families):
        hits, _ = _run(h, fam, n, [n // 3], 100 + i, None, budget)
        armed = max(n - h.warmup, 1)
        expected = budget * h.share * h.keys(fam) * armed / 1e6
        report[fam] = {"observed": len(hits), "expected": round(expected, 2)}
        assert len(hits) <= 2 * expected + 3 * np.sqrt(expected) + 1, (h.signal, fam, report[fam])
    return report


def check_detection_delay(h: Harness, n: int | None = None) -> dict[str, Any]:
    """A change half-way is detected at the default budget; the delay (updates) is recorded."""
    n = n or h.delay_n
    report: dict[str, Any] = {}
    for i, fam in enumerate(h.families):
        if fam in h.no_shift:
            continue
        at = n // 2
        hits, _ = _run(h, fam, n, [], 200 + i, shift_at=at)
        after = [x for x in hits if x >= at]
        report[fam] = None if not after else after[0] - at
        assert after, f"{h.signal}/{fam}: change not detected in {n - at} updates"
    return report


def yield_checks(h: Harness) -> Iterator[Callable[[Harness], Any]]:
    """The checks a detector must pass (as ``river.checks.yield_checks``)."""
    yield check_batch_invariance
    yield check_round_trip
    yield check_false_alarm_budget
    yield check_detection_delay
