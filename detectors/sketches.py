"""Mergeable sketches: fixed-bin histograms, bounded category counts, moments.

All sketches here merge exactly: the merge of two partitions' sketches equals the sketch
of the union, and merging is associative and commutative (property-tested). Memory is fixed
at construction: category sketches map values through a vocabulary learned from the
reference (top-k plus an "other" bucket, plus a count of never-seen values), so an
attacker sending endless new values cannot grow them.

>>> h = Histogram([0.0, 1.0])
>>> h.update(np.array([-1.0, 0.5, 2.0, 3.0]))
>>> h.counts.tolist()
[1, 1, 2]
"""
from __future__ import annotations

import math
from itertools import repeat
from collections.abc import Sequence
from typing import Any

import numba
import numpy as np

from detectors.errors import StateFormatError
from detectors.state import check_counts, check_float, check_int, check_list, enc_float


class Histogram:
    """Counts over fixed bins given by sorted interior ``edges`` (``len(edges) + 1`` bins)."""

    __slots__ = ("edges", "counts")

    def __init__(self, edges: Sequence[float]) -> None:
        self.edges = np.asarray(edges, dtype=np.float64)
        self.counts = np.zeros(self.edges.size + 1, dtype=np.int64)

    @property
    def n(self) -> int:
        return int(self.counts.sum())

    def update(self, values: np.ndarray) -> None:
        """Add a batch of finite values (vectorized: searchsorted + bincount)."""
        if values.size:
            self.counts += np.bincount(np.searchsorted(self.edges, values, side="right"),
                                       minlength=self.counts.size)

    def merge(self, other: "Histogram") -> "Histogram":
        if not np.array_equal(self.edges, other.edges):
            raise ValueError("histograms with different edges do not merge")
        out = Histogram(self.edges)
        out.counts = self.counts + other.counts
        return out

    def reset(self) -> None:
        self.counts[:] = 0

    def to_state(self) -> list[int]:
        return self.counts.tolist()

    def load_state(self, st: Any) -> None:
        self.counts = np.array(check_counts(st, "histogram", self.counts.size), dtype=np.int64)


class Counts:
    """A fixed-length vector of counts (class counts, category buckets); merge adds."""

    __slots__ = ("counts",)

    def __init__(self, size: int) -> None:
        self.counts = np.zeros(size, dtype=np.int64)

    @property
    def n(self) -> int:
        return int(self.counts.sum())

    def update_codes(self, codes: np.ndarray) -> None:
        if codes.size:
            self.counts += np.bincount(codes, minlength=self.counts.size)[: self.counts.size]

    def merge(self, other: "Counts") -> "Counts":
        if other.counts.size != self.counts.size:
            raise ValueError("counts of different sizes do not merge")
        out = Counts(self.counts.size)
        out.counts = self.counts + other.counts
        return out

    def reset(self) -> None:
        self.counts[:] = 0

    def to_state(self) -> list[int]:
        return self.counts.tolist()

    def load_state(self, st: Any) -> None:
        self.counts = np.array(check_counts(st, "counts", self.counts.size), dtype=np.int64)


class Vocabulary:
    """Maps categorical values to bucket codes: ``0..k-1`` top-k, ``k`` other, ``k+1`` never seen.

    Known values beyond the top-k (at most ``max_known`` of them, kept from the reference)
    map to "other"; anything else is "never seen" (which the distribution tests also count
    as "other").

    >>> v = Vocabulary(["a", "b"], ["c"])
    >>> v.codes(["a", "c", "zzz"]).tolist()
    [0, 2, 3]
    """

    __slots__ = ("top", "rest", "lut", "k")

    def __init__(self, top: Sequence[str], rest: Sequence[str] = ()) -> None:
        self.top = list(top)
        self.rest = [r for r in rest if r not in set(self.top)]
        self.k = len(self.top)
        self.lut = {v: self.k for v in self.rest}
        self.lut.update({v: i for i, v in enumerate(self.top)})

    def codes(self, values: Sequence[str]) -> np.ndarray:
        n = len(values)
        return np.fromiter(map(self.lut.get, values, repeat(self.k + 1, n)), dtype=np.int64, count=n)


class Moments:
    """Count, mean and sum of squared deviations of a stream of values.

    Kept as sums of ``x - shift`` (``shift`` is the first value seen, for numerical
    stability) added strictly in arrival order (:func:`_moment_sums`), so the result does not
    depend on how the stream was cut into batches. Two sketches merge into the sketch of
    the union (up to float rounding).

    >>> m = Moments(); m.update(np.array([1.0, 2.0])); m.update(np.array([3.0]))
    >>> (m.n, m.mean, m.m2)
    (3, 2.0, 2.0)
    """

    __slots__ = ("n", "shift", "s1", "s2")

    def __init__(self) -> None:
        self.reset()

    @property
    def mean(self) -> float:
        return self.shift + self.s1 / self.n if self.n else 0.0

    @property
    def m2(self) -> float:
        """Sum of squared deviations from the mean."""
        return max(self.s2 - self.s1 * self.s1 / self.n, 0.0) if self.n else 0.0

    @property
    def std(self) -> float:
        return math.sqrt(self.m2 / (self.n - 1)) if self.n > 1 else 0.0

    def update(self, values: np.ndarray) -> None:
        if values.size:
            if self.n == 0:
                self.shift = float(values[0])
            self.s1, self.s2 = _moment_sums(np.asarray(values, dtype=np.float64), self.shift, self.s1, self.s2)
            self.n += int(values.size)

    def merge(self, other: "Moments") -> "Moments":
        out = Moments()
        for part in (self, other):
            if part.n == 0:
                continue
            if out.n == 0:
                out.shift = part.shift
            d = part.shift - out.shift  # re-centre part's sums on out's shift
            out.s1 += part.s1 + part.n * d
            out.s2 += part.s2 + 2.0 * d * part.s1 + part.n * d * d
            out.n += part.n
        return out

    def reset(self) -> None:
        self.n, self.shift, self.s1, self.s2 = 0, 0.0, 0.0, 0.0

    def to_state(self) -> list[Any]:
        return [self.n, enc_float(self.shift), enc_float(self.s1), enc_float(self.s2)]

    def load_state(self, st: Any) -> None:
        st = check_list(st, "moments", 4)
        self.n = check_int(st[0], "moments.n")
        self.shift = check_float(st[1], "moments.shift", finite=True)
        self.s1 = check_float(st[2], "moments.s1", finite=True)
        self.s2 = check_float(st[3], "moments.s2", finite=True)
        if self.s2 < 0:
            raise StateFormatError("moments.s2 negative")


# argument types given: compiled (or loaded from the cache) at import, not in the first batch
@numba.njit(numba.types.UniTuple(numba.float64, 2)(numba.float64[:], numba.float64, numba.float64, numba.float64),
            cache=True, nogil=True)
def _moment_sums(values, shift, s1, s2):  # pragma: no cover - compiled
    """``Moments`` sums after ``values``: deviations from ``shift`` and their squares, added one
    by one in arrival order. ``numpy.sum`` adds pairwise, so a stream summed in two batches would
    differ in the last bits from the same stream summed at once; this loop does not, which keeps
    detector state identical however a consumer cuts its micro-batches."""
    for i in range(values.shape[0]):
        d = values[i] - shift
        s1 += d
        s2 += d * d
    return s1, s2


# -- divergences between a window's counts and reference proportions -------------------------
def smoothed(counts: np.ndarray) -> np.ndarray:
    """Proportions with a half-count added to every bucket (no log of zero)."""
    c = counts.astype(np.float64) + 0.5
    return c / c.sum()


def psi(cur: np.ndarray, ref: np.ndarray) -> float:
    """Population stability index (symmetric KL) of two count vectors."""
    p, q = smoothed(cur), smoothed(ref)
    return float(((p - q) * np.log(p / q)).sum())


def jensen_shannon(cur: np.ndarray, ref: np.ndarray) -> float:
    """Jensen-Shannon divergence (natural log) of two count vectors."""
    p, q = smoothed(cur), smoothed(ref)
    m = (p + q) / 2
    return float(0.5 * (p * np.log(p / m)).sum() + 0.5 * (q * np.log(q / m)).sum())


def chi2_distance(cur: np.ndarray, ref: np.ndarray) -> float:
    """``sum (p - q)^2 / q`` of two count vectors (chi-square statistic divided by n)."""
    p, q = smoothed(cur), smoothed(ref)
    return float(((p - q) ** 2 / q).sum())


def binned_ks(cur: np.ndarray, ref: np.ndarray) -> float:
    """Kolmogorov-Smirnov statistic evaluated at the bin edges (a lower bound of the exact one)."""
    a = np.cumsum(cur) / max(cur.sum(), 1)
    b = np.cumsum(ref) / max(ref.sum(), 1)
    return float(np.abs(a - b).max())


def entropy(counts: np.ndarray) -> float:
    """Shannon entropy (nats) of a count vector."""
    n = counts.sum()
    if n == 0:
        return 0.0
    p = counts[counts > 0] / n
    return float(-(p * np.log(p)).sum())
