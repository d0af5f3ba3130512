"""Column extraction: one pass turning a micro-batch of events into numpy columns.

This is the hot path's entry: per feature one list comprehension over the batch, a type
check on the set of value types (C speed) and, when every value has the expected type, a
single vectorized conversion. Only batches containing odd values take the per-value slow
path. Every value is classified for input integrity; invalid values are counted here and
kept out of every other sketch.

Numeric columns go through ``np.array`` type inference: a float or integer dtype means every
value is a number; anything else (None, strings, objects, a column of only booleans) takes
the classifying slow path. One caveat of numpy's promotion: booleans *mixed with numbers*
are read as 0/1 rather than counted as wrong types.

>>> from detectors.spec import FeatureSpec
>>> col = numeric_column([1.0, float("nan"), None, "x", 99.0], FeatureSpec(name="f", type="numeric", max=10))
>>> col.kinds.tolist()
[0, 1, 3, 4, 5]
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from operator import attrgetter, itemgetter
from typing import TYPE_CHECKING

import numpy as np

from detectors.masks import all_true, any_true

if TYPE_CHECKING:  # annotations only: decoding processes import this module without pydantic
    from detectors.spec import FeatureSpec

VALID, NAN, INF, NULL, WRONG_TYPE, OUT_OF_RANGE = range(6)
INVALID_KINDS: tuple[str, ...] = ("nan", "inf", "null", "wrong_type", "out_of_range")
_NUMERIC_TYPES = frozenset((float, int))
_MISSING = object()


class FeatureBlock:
    """Features of a run of events as columns (a decoded columnar record): rows are events.

    Float features form one matrix; features of other values (strings, integers, booleans,
    nulls, or floats mixed with those) keep one list each in ``other``. Events decoded from it
    carry :class:`FeatureRow` views instead of dicts, so the per-event dicts are never built on
    the hot path: :func:`numeric_matrix` slices the matrix and :func:`block_columns` the lists.
    """

    __slots__ = ("names", "index", "matrix", "other", "_rows", "_numbers")

    def __init__(self, names: list[str], matrix: np.ndarray, other: dict[str, list] | None = None) -> None:
        self.names = names  # every feature, in the events' order
        self.other = other or {}
        floats = [name for name in names if name not in other] if other else names
        self.index = {name: j for j, name in enumerate(floats)}
        self.matrix = matrix
        self._rows: list[list[float]] | None = None
        self._numbers: dict[tuple[str, ...], np.ndarray | None] | None = None

    def numbers(self, names: tuple[str, ...]) -> np.ndarray | None:
        """All rows of ``names`` as one float64 matrix, when every value is an integer or a float
        (read as numpy reads such values in a matrix of dicts' values); None otherwise. Cached."""
        if self._numbers is None:
            self._numbers = {}
        if names not in self._numbers:
            self._numbers[names] = self._numeric(names)
        return self._numbers[names]

    def _numeric(self, names: tuple[str, ...]) -> np.ndarray | None:
        idx = [self.index.get(name) for name in names]
        if idx == list(range(self.matrix.shape[1])):
            return self.matrix
        if None not in idx:
            return self.matrix[:, idx]
        cols: list[np.ndarray] = []
        for name, j in zip(names, idx):
            if j is not None:
                cols.append(self.matrix[:, j])
                continue
            col = self.other.get(name)
            if col is None or not set(map(type, col)) <= _NUMERIC_TYPES:
                return None
            try:
                arr = np.array(col)
            except (ValueError, OverflowError):
                return None
            if arr.dtype.kind not in "fi":  # beyond int64
                return None
            cols.append(arr.astype(np.float64))
        return np.column_stack(cols)

    def rows(self) -> list[list[float]]:
        """The matrix as Python floats (made once, for per-event access)."""
        if self._rows is None:
            self._rows = self.matrix.tolist()
        return self._rows


class FeatureRow(Mapping):
    """One event's features: a read-only mapping onto row ``i`` of a :class:`FeatureBlock`."""

    __slots__ = ("block", "i")

    def __init__(self, block: FeatureBlock, i: int) -> None:
        self.block, self.i = block, i

    def __getitem__(self, name: str) -> object:
        block = self.block
        j = block.index.get(name)
        if j is None:
            return block.other[name][self.i]
        return block.rows()[self.i][j]

    def __iter__(self) -> Iterator[str]:
        return iter(self.block.names)

    def __len__(self) -> int:
        return len(self.block.names)

    def __contains__(self, name: object) -> bool:
        return name in self.block.index or name in self.block.other

    def __repr__(self) -> str:
        return repr(dict(self))


def _block_segments(feature_dicts: list) -> list[tuple[FeatureBlock, list[int]]] | None:
    """``(block, rows)`` per stretch of events viewing one block when every event's features are
    :class:`FeatureRow` views; None otherwise."""
    if not feature_dicts or not all(type(d) is FeatureRow for d in feature_dicts):
        return None
    blocks, rows = list(map(_BLOCK, feature_dicts)), list(map(_ROW, feature_dicts))
    n = len(blocks)
    if blocks.count(blocks[0]) == n:
        return [(blocks[0], rows)]
    segments: list[tuple[FeatureBlock, list[int]]] = []
    start = 0
    for k in range(1, n + 1):
        if k == n or blocks[k] is not blocks[start]:
            segments.append((blocks[start], rows[start:k]))
            start = k
    return segments


def _block_matrix(feature_dicts: list, names: Sequence[str]) -> np.ndarray | None:
    """A fresh matrix of ``names`` when every event's features are :class:`FeatureRow` views
    holding them all as numbers (taken from the blocks' matrices); None otherwise."""
    segments = _block_segments(feature_dicts)
    if segments is None:
        return None
    key = names if type(names) is tuple else tuple(names)
    parts: list[np.ndarray] = []
    for blk, rows in segments:
        numbers = blk.numbers(key)
        if numbers is None:
            return None
        first = rows[0]
        if rows == list(range(first, first + len(rows))):  # a run of the block: slice, no index array
            parts.append(numbers[first:first + len(rows)].copy())
        else:
            parts.append(numbers[rows])
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def block_columns(feature_dicts: list, names: list[str]) -> list[list] | None:
    """Per name, its values across the batch when every event's features are :class:`FeatureRow`
    views holding it as a non-float column (taken from the blocks' lists); None otherwise."""
    segments = _block_segments(feature_dicts)
    if segments is None:
        return None
    out: list[list] = [[] for _ in names]
    for blk, rows in segments:
        try:
            cols = [blk.other[name] for name in names]
        except KeyError:
            return None
        for acc, col in zip(out, cols):
            acc.extend(map(col.__getitem__, rows))
    return out


_BLOCK, _ROW = attrgetter("block"), attrgetter("i")


@dataclass(slots=True)
class NumericColumn:
    values: np.ndarray  # float64, NaN where invalid
    kinds: np.ndarray   # int8 integrity code per event
    valid: np.ndarray   # bool mask

    def invalid_counts(self) -> np.ndarray:
        return np.bincount(self.kinds, minlength=6)[1:6]


@dataclass(slots=True)
class CategoricalColumn:
    values: Sequence      # str, or None where invalid
    kinds: np.ndarray
    valid: np.ndarray

    def invalid_counts(self) -> np.ndarray:
        return np.bincount(self.kinds, minlength=6)[1:6]


def _classify_numeric(v: object) -> tuple[float, int]:
    if v is None or v is _MISSING:
        return math.nan, NULL
    t = type(v)
    if t is float or (t is int):
        try:
            f = float(v)
        except OverflowError:
            return math.nan, OUT_OF_RANGE
        if f != f:
            return math.nan, NAN
        if f in (math.inf, -math.inf):
            return math.nan, INF
        return f, VALID
    return math.nan, WRONG_TYPE


def numeric_column(raw: Sequence[object], spec: FeatureSpec) -> NumericColumn:
    """Classify and convert one numeric feature's raw values."""
    n = len(raw)
    arr = None
    try:
        arr = np.array(raw)  # dtype inference: float/int only when every value is a number
    except (OverflowError, ValueError):
        arr = None
    if arr is not None and arr.dtype.kind in "fi" and arr.ndim == 1:
        if arr.dtype.kind == "i":
            arr = arr.astype(np.float64)
        finite = np.isfinite(arr)
        if finite.all():
            kinds = np.zeros(n, dtype=np.int8)
        else:
            kinds = np.where(np.isnan(arr), NAN, np.where(finite, VALID, INF)).astype(np.int8)
            arr = np.where(finite, arr, np.nan)
    else:
        pairs = [_classify_numeric(v) for v in raw]
        arr = np.fromiter((p[0] for p in pairs), dtype=np.float64, count=n)
        kinds = np.fromiter((p[1] for p in pairs), dtype=np.int8, count=n)
    if spec.min is not None or spec.max is not None:
        with np.errstate(invalid="ignore"):
            oor = np.zeros(n, dtype=bool)
            if spec.min is not None:
                oor |= arr < spec.min
            if spec.max is not None:
                oor |= arr > spec.max
        if oor.any():
            kinds = kinds.copy()
            kinds[oor] = OUT_OF_RANGE
            arr = np.where(oor, np.nan, arr)
    return NumericColumn(arr, kinds, kinds == VALID)


def _classify_categorical(v: object) -> tuple[str | None, int]:
    t = type(v)
    if t is str:
        return v, VALID  # type: ignore[return-value]
    if v is None or v is _MISSING:
        return None, NULL
    if t is int:
        return str(v), VALID
    if t is float:
        if v != v:
            return None, NAN
        if v in (math.inf, -math.inf):
            return None, INF
    return None, WRONG_TYPE


def categorical_column(raw: Sequence[object]) -> CategoricalColumn:
    """Classify one categorical feature's raw values (strings; integers are read as their text)."""
    n = len(raw)
    if set(map(type, raw)) == {str}:
        return CategoricalColumn(raw, np.zeros(n, dtype=np.int8), np.ones(n, dtype=bool))
    pairs = [_classify_categorical(v) for v in raw]
    kinds = np.fromiter((p[1] for p in pairs), dtype=np.int8, count=n)
    return CategoricalColumn([p[0] for p in pairs], kinds, kinds == VALID)


def feature_values(feature_dicts: list, name: str) -> list:
    """Raw values of one feature across the batch (a missing key or a non-dict counts as null)."""
    try:
        return [d.get(name, _MISSING) for d in feature_dicts]
    except AttributeError:
        return [d.get(name, _MISSING) if isinstance(d, dict) else _MISSING for d in feature_dicts]


def confidence_column(raw: list) -> np.ndarray:
    """Confidences as float64 with NaN for missing/invalid values (which are then ignored)."""
    if set(map(type, raw)) <= _NUMERIC_TYPES:
        arr = np.array(raw, dtype=np.float64)
    else:
        arr = np.fromiter((_classify_numeric(v)[0] for v in raw), dtype=np.float64, count=len(raw))
    ok = (arr >= 0) & (arr <= 1)  # False for NaN and infinities too
    if not all_true(ok):
        arr = np.where(ok, arr, np.nan)
    return arr


@dataclass(slots=True)
class NumericMatrix:
    """All numeric features of a batch: ``values`` (events x features, NaN where invalid), ``kinds``, ``valid``."""

    values: np.ndarray
    kinds: np.ndarray
    valid: np.ndarray

    def column(self, j: int) -> NumericColumn:
        return NumericColumn(self.values[:, j], self.kinds[:, j], self.valid[:, j])


class NumericLayout:
    """What :func:`numeric_matrix` needs to know of a model's numeric features, worked out once
    (names, a getter, the bounds as arrays) instead of on every batch."""

    __slots__ = ("feats", "names", "getter", "lo", "hi", "bounded")

    def __init__(self, feats: Sequence[FeatureSpec]) -> None:
        self.feats = list(feats)
        self.names = tuple(f.name for f in self.feats)
        self.getter = itemgetter(*self.names) if self.names else None
        self.lo = np.array([-np.inf if f.min is None else f.min for f in self.feats], dtype=np.float64)
        self.hi = np.array([np.inf if f.max is None else f.max for f in self.feats], dtype=np.float64)
        self.bounded = bool(np.isfinite(self.lo).any() or np.isfinite(self.hi).any())


def numeric_matrix(feature_dicts: list, feats: Sequence[FeatureSpec] | NumericLayout) -> NumericMatrix:
    """Extract and classify every numeric feature at once.

    Fastest path: events decoded from a columnar record (:class:`FeatureRow`) are sliced from
    their block's matrix. Fast path: one ``itemgetter`` call per event and one ``np.array`` over
    the rows; when numpy infers a float/integer matrix every value is a number. Otherwise each column goes
    through :func:`numeric_column`. Pass a :class:`NumericLayout` to skip working out the features' layout.
    """
    layout = feats if isinstance(feats, NumericLayout) else NumericLayout(feats)
    n, F = len(feature_dicts), len(layout.names)
    X = _block_matrix(feature_dicts, layout.names) if n and F else None  # a fresh array
    rows = None
    if X is None:
        try:
            get = layout.getter
            rows = list(map(get, feature_dicts)) if F > 1 else [(get(d),) for d in feature_dicts]
        except (KeyError, TypeError, AttributeError):
            rows = None
    if rows is not None and n:
        try:
            A = np.array(rows)
        except (ValueError, OverflowError):
            A = None
        if A is not None and A.ndim == 2 and A.shape == (n, F) and A.dtype.kind in "fi":
            X = A.astype(np.float64, copy=False)
    if X is not None:
        finite = np.isfinite(X)
        if all_true(finite):
            kinds = np.zeros((n, F), dtype=np.int8)
        else:
            kinds = np.where(np.isnan(X), NAN, np.where(finite, VALID, INF)).astype(np.int8)
            X = np.where(finite, X, np.nan)
        if layout.bounded:  # unbounded: no finite value is out of range, and NaN compares False
            # (comparing with NaN raises no floating-point error, so no np.errstate, which costs 1.5 us)
            oor = (X < layout.lo) | (X > layout.hi)
            if any_true(oor):
                kinds = np.where(oor, OUT_OF_RANGE, kinds).astype(np.int8)
                X = np.where(oor, np.nan, X)
        return NumericMatrix(X, kinds, kinds == VALID)
    feats = layout.feats
    raw_cols = list(zip(*rows)) if rows is not None and n else [feature_values(feature_dicts, nm) for nm in layout.names]
    cols = [numeric_column(list(r), f) for r, f in zip(raw_cols, feats)]
    if not cols:
        return NumericMatrix(np.empty((n, 0)), np.empty((n, 0), dtype=np.int8), np.empty((n, 0), dtype=bool))
    return NumericMatrix(np.column_stack([c.values for c in cols]), np.column_stack([c.kinds for c in cols]),
                         np.column_stack([c.valid for c in cols]))
