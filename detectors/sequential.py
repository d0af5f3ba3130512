"""Sequential change detectors: ADWIN and Page-Hinkley on standardized block means.

These detectors are *order dependent* and therefore **not mergeable**: two partitions'
states cannot be combined into the state of the union. driftline handles this by
ownership, not merging: the worker rekeys events by model into an internal topic, so each
model's sequential detectors see one ordered stream owned by exactly one worker.

driftline feeds them standardized block means (:mod:`detectors.numeric`): ``k`` times
fewer updates than raw values, and close to N(0, 1) for any feature distribution, which is
what the thresholds of :mod:`detectors.calibration` are calibrated for.
"""
from __future__ import annotations

import base64
import math
import struct
from typing import Any

import numpy as np
from river._river_rust.drift import AdaptiveWindowing

from detectors.errors import StateFormatError
from detectors.state import check_float, check_int, check_list, check_str, enc_float

MAX_ADWIN_STATE = 1 << 20  # bytes; a real ADWIN state is a few KiB
# river 0.26's helper state (bincode of its AdaptiveWindowing struct): delta, clock, max_buckets,
# min_window_length, grace_period; total, variance, width, total_width; n_buckets, max_n_buckets,
# tick, n_detections; the bucket list (each: max_size, current_idx, totals, variances); then the
# binding's own copy of the constructor arguments (28 bytes)
_ADWIN_HEAD = struct.Struct("<diQdd4d4i")
_ADWIN_TAIL = 28
_U64 = struct.Struct("<Q")
_MAX_SUM, _MAX_VARIANCE = 1e100, 1e250  # NaN fails these too


def _check_adwin_blob(blob: bytes, args: tuple[float, int, int, int, int]) -> None:
    """Refuse a helper state the compiled code would index out of bounds or divide by zero on.

    The decoder accepts any bytes of the right shape, and a bucket list with short arrays, an
    overfull bucket or a width that disagrees with the buckets loads fine and panics on a later
    update. Raises :class:`StateFormatError`.
    """
    delta, clock, max_buckets, min_len, grace = args
    if len(blob) < _ADWIN_HEAD.size + _U64.size + _ADWIN_TAIL:
        raise StateFormatError("adwin.blob too short")
    head = _ADWIN_HEAD.unpack_from(blob)
    if head[:5] != (delta, clock, max_buckets, float(min_len), float(grace)):
        raise StateFormatError("adwin.blob parameters differ from adwin.args")
    total, variance, width, total_width, tick, detections = head[5], head[6], head[7], head[8], head[11], head[12]
    # magnitudes far from overflow: a sum near the float range loads, then turns infinite on update
    if not (abs(total) <= _MAX_SUM and abs(variance) <= _MAX_VARIANCE and 0 <= width <= 2.0**62
            and 0 <= total_width <= 1e300 and tick >= 0 and detections >= 0):
        raise StateFormatError("adwin.blob totals or counters out of range")
    (n_rows,) = _U64.unpack_from(blob, _ADWIN_HEAD.size)
    if not 1 <= n_rows <= 62:
        raise StateFormatError("adwin.blob bucket list out of range")
    pos, end, cap, covered = _ADWIN_HEAD.size + _U64.size, len(blob) - _ADWIN_TAIL, max_buckets + 1, 0
    row = struct.Struct(f"<QQQ{cap}dQ{cap}d")
    for i in range(n_rows):
        if pos + row.size > end:
            raise StateFormatError("adwin.blob bucket list truncated")
        size, used, n_totals, *rest = row.unpack_from(blob, pos)
        if size != max_buckets or used > max_buckets or n_totals != cap or rest[cap] != cap:
            raise StateFormatError("adwin.blob bucket shape differs from max_buckets")
        if used == 0 and i == n_rows - 1 and n_rows > 1:
            raise StateFormatError("adwin.blob ends with an empty bucket")
        if not (all(abs(x) <= _MAX_SUM for x in rest[:cap])
                and all(abs(x) <= _MAX_VARIANCE for x in rest[cap + 1:])):
            raise StateFormatError("adwin.blob bucket values out of range")
        covered += used << i
        pos += row.size
    if pos != end or width != covered:
        raise StateFormatError("adwin.blob width disagrees with its buckets")


def _scan(start: float, x: np.ndarray) -> np.ndarray:
    """Running sums ``start + x[0]``, ``start + x[0] + x[1]``, ... added left to right.

    The same additions in the same order as the one-value :meth:`PageHinkley.update`, so
    the state after a stream does not depend on how the stream was cut into batches.
    """
    return np.add.accumulate(np.concatenate(([start], x)))[1:]


class PageHinkley:
    """Two-sided Page-Hinkley test against the running mean since the last detection.

    Same recursion as river's ``PageHinkley`` with ``alpha=1`` (no fading: fading turns the
    statistic into a slowly mean-reverting walk and inflates false alarms). The state is
    six plain numbers, serialized explicitly.

    >>> ph = PageHinkley(delta=0.5, threshold=5.0)
    >>> [i for i, x in enumerate([0.0] * 50 + [3.0] * 20) if ph.update(x)][:1]
    [52]
    """

    __slots__ = ("delta", "threshold", "min_instances", "n", "total", "up", "up_min", "down", "down_max",
                 "detections")

    def __init__(self, delta: float, threshold: float, min_instances: int = 30) -> None:
        self.delta = float(delta)
        self.threshold = float(threshold)
        self.min_instances = int(min_instances)
        self.detections = 0
        self._reset()

    def _reset(self) -> None:
        self.n = 0
        self.total = 0.0
        self.up = 0.0
        self.up_min = 0.0
        self.down = 0.0
        self.down_max = 0.0

    @property
    def mean(self) -> float:
        """Running mean since the last detection."""
        return self.total / self.n if self.n else 0.0

    @property
    def statistic(self) -> float:
        """Current test statistic (largest of the upward and downward cumulative deviations)."""
        return max(self.up - self.up_min, self.down_max - self.down)

    def update(self, x: float) -> bool:
        """Add one value; True when a change is detected (the detector then restarts)."""
        self.n += 1
        self.total += x
        dev = x - self.total / self.n
        self.up += dev - self.delta
        if self.up < self.up_min:
            self.up_min = self.up
        self.down += dev + self.delta
        if self.down > self.down_max:
            self.down_max = self.down
        if self.n >= self.min_instances and (self.up - self.up_min > self.threshold
                                             or self.down_max - self.down > self.threshold):
            self.detections += 1
            self._reset()
            return True
        return False

    def update_many(self, x: np.ndarray) -> list[int]:
        """Vectorized :meth:`update` over an array; returns the indices that raised a detection.

        Running mean, cumulative sums and their running extremes are prefix operations
        (``cumsum``, ``minimum.accumulate``), so a batch costs a handful of numpy calls; the
        loop only restarts after a detection (rare).
        """
        out: list[int] = []
        start, m = 0, x.size
        d, h = self.delta, self.threshold
        while start < m:
            v = x[start:]
            t = self.n + np.arange(1, v.size + 1, dtype=np.float64)
            total = _scan(self.total, v)
            dev = v - total / t
            up = _scan(self.up, dev - d)
            up_min = np.minimum(np.minimum.accumulate(up), self.up_min)
            down = _scan(self.down, dev + d)
            down_max = np.maximum(np.maximum.accumulate(down), self.down_max)
            alarm = ((up - up_min > h) | (down_max - down > h)) & (t >= self.min_instances)
            if alarm.any():
                i = int(alarm.argmax())
                out.append(start + i)
                self.detections += 1
                self._reset()
                start += i + 1
                continue
            self.n += v.size
            self.total = float(total[-1])
            self.up, self.up_min = float(up[-1]), float(up_min[-1])
            self.down, self.down_max = float(down[-1]), float(down_max[-1])
            break
        return out

    def to_state(self) -> list[Any]:
        return [self.n, enc_float(self.total), enc_float(self.up), enc_float(self.up_min),
                enc_float(self.down), enc_float(self.down_max), self.detections]

    def load_state(self, st: Any) -> None:
        st = check_list(st, "page_hinkley", 7)
        self.n = check_int(st[0], "page_hinkley.n")
        self.total, self.up, self.up_min, self.down, self.down_max = (
            check_float(v, "page_hinkley", finite=True) for v in st[1:6])
        self.detections = check_int(st[6], "page_hinkley.detections")


class Adwin:
    """ADWIN (adaptive windowing) on river's compiled implementation.

    State is the helper's own byte serialization (``__getstate__``/``__setstate__``) plus
    its constructor arguments; restoring validates the arguments and the size, and turns
    any failure of the compiled decoder into :class:`StateFormatError`.

    >>> a = Adwin(delta=0.01)
    >>> [i for i, x in enumerate([0.0] * 400 + [4.0] * 100) if a.update(x)][:1]
    [407]
    """

    __slots__ = ("delta", "_h", "update")

    def __init__(self, delta: float, clock: int = 8) -> None:
        self.delta = float(delta)
        self._h = AdaptiveWindowing(self.delta, clock, 5, 5, 10)
        self.update = self._h.update  # bound once: the hot path calls it directly

    @property
    def width(self) -> int:
        return int(self._h.get_width())

    @property
    def estimation(self) -> float:
        w = self._h.get_width()
        return float(self._h.get_total() / w) if w else 0.0

    @property
    def detections(self) -> int:
        return int(self._h.get_n_detections())

    def to_state(self) -> dict[str, Any]:
        args = list(self._h.__getnewargs__())
        return {"args": [enc_float(args[0])] + [int(a) for a in args[1:]],
                "blob": base64.b64encode(bytes(self._h.__getstate__())).decode("ascii")}

    @classmethod
    def from_state(cls, st: Any) -> "Adwin":
        if not isinstance(st, dict):
            raise StateFormatError("adwin: expected an object")
        args = check_list(st.get("args"), "adwin.args", 5)
        delta = check_float(args[0], "adwin.delta", finite=True)
        if not 0 < delta < 1:
            raise StateFormatError("adwin.delta out of (0, 1)")
        clock, max_buckets, min_len, grace = (check_int(a, "adwin.args", 1, 1 << 20) for a in args[1:])
        blob_txt = check_str(st.get("blob"), "adwin.blob")
        if len(blob_txt) > MAX_ADWIN_STATE * 4 // 3 + 4:
            raise StateFormatError("adwin.blob too large")
        try:
            blob = base64.b64decode(blob_txt, validate=True)
        except ValueError:
            raise StateFormatError("adwin.blob is not base64") from None
        _check_adwin_blob(blob, (delta, clock, max_buckets, min_len, grace))
        obj = cls.__new__(cls)
        obj.delta = delta
        try:
            h = AdaptiveWindowing(delta, clock, max_buckets, min_len, grace)
            h.__setstate__(blob)
            # a damaged length shifts what the decoder reads: the state must read back exactly as stored
            if tuple(h.__getnewargs__()) != (delta, clock, max_buckets, min_len, grace):
                raise ValueError("constructor arguments differ from adwin.args")
            if bytes(h.__getstate__()) != blob:
                raise ValueError("blob does not re-encode to itself")
            # exercise the restored structure once on a copy so a malformed blob fails here
            probe = AdaptiveWindowing(delta, clock, max_buckets, min_len, grace)
            probe.__setstate__(blob)
            probe.update(0.0)
            w = h.get_width()
            if not (math.isfinite(h.get_total()) and w >= 0):
                raise ValueError("non-finite ADWIN totals")
        except BaseException as exc:  # the compiled decoder raises PanicException (a BaseException)
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            raise StateFormatError(f"adwin.blob rejected by the decoder: {type(exc).__name__}") from None
        obj._h = h
        obj.update = h.update
        return obj
