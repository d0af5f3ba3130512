"""Reference profiles: what "normal" looks like for one stream.

A profile is learned from the first ``ModelSpec.reference_size`` events of a stream
(:class:`ProfileBuilder`, part of the detector state while it fills) or built offline by
``driftline profile`` with the pure :func:`build_profile` and stored as JSON via
:meth:`ReferenceProfile.to_dict` / :meth:`ReferenceProfile.from_dict` (the file I/O lives in
``stream/``).

>>> from detectors.spec import ModelSpec, FeatureSpec
>>> from detectors.events import InferenceEvent
>>> spec = ModelSpec(name="m", classes=["a", "b"], versions=["v1"], reference_size=100,
...                  features=[FeatureSpec(name="x", type="numeric", bins=4)])
>>> evs = [InferenceEvent(str(i), i, "m", "v1", "stable", {"x": float(i % 10)}, "a", 0.9) for i in range(100)]
>>> p = build_profile(spec, evs)
>>> p.n, ReferenceProfile.from_dict(spec, p.to_dict()).numeric["x"].mean
(100, 4.5)
"""
from __future__ import annotations

import operator
from collections import Counter
from itertools import repeat
from operator import attrgetter, itemgetter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numba
import numpy as np

from detectors.columns import (CategoricalColumn, NumericColumn, NumericLayout, NumericMatrix, block_columns,
                               categorical_column, confidence_column, feature_values, numeric_matrix)
from detectors.errors import ProfileFormatError, StateFormatError
from detectors.events import InferenceEvent
from detectors.spec import ModelSpec, TriggerSpec
from detectors.state import check_float, check_int, check_list, check_str, enc_float

PROFILE_FORMAT = "driftline.profile/v1"
RANK_GRID = 64  # quantile bins of the fine grid that numeric values are ranked on (detectors.numeric)
MIN_CATEGORY_COUNT = 20  # reference occurrences for a category to get its own bucket (else "other")
_PRED = attrgetter("prediction")
OTHER = "<other>"
MAX_COUNT = 1 << 40  # events behind one profile count; sums stay exact in float64 and int64 arithmetic


@dataclass(slots=True)
class NumericProfile:
    edges: list[float]
    counts: list[int]
    mean: float
    std: float
    n: int          # valid values
    invalid: int    # invalid values (input integrity baseline)
    grid: list[float] = field(default_factory=list)        # fine quantile edges (ties get their own bin)
    grid_counts: list[int] = field(default_factory=list)   # reference values per grid bin (len(grid) + 1)

    def __post_init__(self) -> None:
        if not self.grid_counts:  # profiles written before the grid: rank on the histogram bins
            self.grid, self.grid_counts = list(self.edges), list(self.counts)


@dataclass(slots=True)
class CategoricalProfile:
    top: list[str]
    rest: list[str]
    counts: list[int]       # len(top) + 1: top-k then "other"
    unseen_hits: int        # split-half estimate of the never-seen rate: hits ...
    unseen_n: int           # ... out of n
    n: int
    invalid: int


@dataclass(slots=True)
class ReferenceProfile:
    """Reference statistics of one stream (see module doc)."""

    n: int
    numeric: dict[str, NumericProfile] = field(default_factory=dict)
    categorical: dict[str, CategoricalProfile] = field(default_factory=dict)
    predictions: list[int] = field(default_factory=list)  # per spec class, then "<other>"
    confidence: list[float] = field(default_factory=lambda: [0, 0.0, 0.0, 0])  # n, mean, std, low count
    triggers: dict[str, list[int]] = field(default_factory=dict)  # name -> [triggered, per-class counts...]
    # fine quantile grid of the confidence (edges, counts per bin) ranked by the confidence CUSUM
    # (detectors.confidence); empty in profiles written before it (that CUSUM then stays off)
    confidence_grid: list[float] = field(default_factory=list)
    confidence_grid_counts: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": PROFILE_FORMAT, "n": self.n,
            "numeric": {k: {"edges": [float(e) for e in v.edges], "counts": list(v.counts),
                            "mean": enc_float(v.mean), "std": enc_float(v.std), "n": v.n, "invalid": v.invalid,
                            "grid": [float(e) for e in v.grid], "grid_counts": list(v.grid_counts)}
                        for k, v in self.numeric.items()},
            "categorical": {k: {"top": list(v.top), "rest": list(v.rest), "counts": list(v.counts),
                                "unseen": [v.unseen_hits, v.unseen_n], "n": v.n, "invalid": v.invalid}
                            for k, v in self.categorical.items()},
            "predictions": list(self.predictions),
            "confidence": [int(self.confidence[0])] + [enc_float(c) for c in self.confidence[1:3]]
                          + [int(self.confidence[3])],
            "triggers": {k: list(v) for k, v in self.triggers.items()},
            "confidence_grid": [[float(e) for e in self.confidence_grid], list(self.confidence_grid_counts)],
        }

    @classmethod
    def from_dict(cls, spec: ModelSpec, d: Any) -> "ReferenceProfile":
        """Validate a profile dictionary against ``spec``; raises :class:`ProfileFormatError`."""
        try:
            return _profile_from_dict(spec, d)
        except StateFormatError as exc:
            raise ProfileFormatError(str(exc)) from None


def _profile_from_dict(spec: ModelSpec, d: Any) -> ReferenceProfile:
    if not isinstance(d, dict) or d.get("format") != PROFILE_FORMAT:
        raise ProfileFormatError(f"not a {PROFILE_FORMAT} document")
    ncls = len(spec.classes) + 1
    prof = ReferenceProfile(n=check_int(d.get("n"), "profile.n"))
    num = d.get("numeric")
    cat = d.get("categorical")
    if not isinstance(num, dict) or not isinstance(cat, dict):
        raise ProfileFormatError("profile.numeric/categorical must be objects")
    for f in spec.features:
        src = num if f.type == "numeric" else cat
        if f.name not in src or not isinstance(src[f.name], dict):
            raise ProfileFormatError(f"profile has no {f.type} entry for feature {f.name!r}")
        e = src[f.name]
        if f.type == "numeric":
            edges = [check_float(x, "edges", finite=True) for x in check_list(e.get("edges"), "edges")]
            if len(edges) > 4096 or any(b <= a for a, b in zip(edges, edges[1:])):
                raise ProfileFormatError(f"feature {f.name!r}: edges must be strictly increasing")
            counts = _counts(e.get("counts"), "counts", len(edges) + 1)
            grid, grid_counts = edges, counts
            if "grid" in e:
                grid = [check_float(x, "grid", finite=True) for x in check_list(e.get("grid"), "grid")]
                if len(grid) > 4096 or any(b <= a for a, b in zip(grid, grid[1:])):
                    raise ProfileFormatError(f"feature {f.name!r}: grid must be strictly increasing")
                grid_counts = _counts(e.get("grid_counts"), "grid_counts", len(grid) + 1)
                if sum(grid_counts) != sum(counts):
                    raise ProfileFormatError(f"feature {f.name!r}: grid counts disagree with the histogram")
            prof.numeric[f.name] = NumericProfile(edges, counts, check_float(e.get("mean"), "mean", True),
                                                  check_float(e.get("std"), "std", True),
                                                  _count(e.get("n"), "n"), _count(e.get("invalid"), "invalid"),
                                                  grid, grid_counts)
            if sum(counts) != prof.numeric[f.name].n:
                raise ProfileFormatError(f"feature {f.name!r}: bin counts do not add up to n")
        else:
            top = [check_str(x, "top") for x in check_list(e.get("top"), "top")]
            rest = [check_str(x, "rest") for x in check_list(e.get("rest"), "rest")]
            if len(top) > f.top_k or len(rest) > 1_000_000:
                raise ProfileFormatError(f"feature {f.name!r}: too many categories")
            counts = _counts(e.get("counts"), "counts", len(top) + 1)
            unseen = check_list(e.get("unseen"), "unseen", 2)
            prof.categorical[f.name] = CategoricalProfile(
                top, rest, counts, _count(unseen[0], "unseen"), _count(unseen[1], "unseen"),
                _count(e.get("n"), "n"), _count(e.get("invalid"), "invalid"))
    prof.predictions = _counts(d.get("predictions"), "predictions", ncls)
    c = check_list(d.get("confidence"), "confidence", 4)
    prof.confidence = [_count(c[0], "confidence.n"), check_float(c[1], "confidence.mean", True),
                       check_float(c[2], "confidence.std", True), _count(c[3], "confidence.low")]
    if prof.confidence[3] > prof.confidence[0]:
        raise ProfileFormatError("confidence: more low-confidence events than events")
    if d.get("confidence_grid") is not None:  # absent in profiles written before the confidence CUSUM
        g = check_list(d.get("confidence_grid"), "confidence_grid", 2)
        grid = [check_float(x, "confidence_grid", finite=True) for x in check_list(g[0], "confidence_grid")]
        if len(grid) > 4096 or any(b <= a for a, b in zip(grid, grid[1:])):
            raise ProfileFormatError("confidence_grid must be strictly increasing")
        gc = _counts(g[1], "confidence_grid", len(grid) + 1) if grid or g[1] else []
        if gc and sum(gc) != prof.confidence[0]:
            raise ProfileFormatError("confidence_grid counts do not add up to the confidence count")
        prof.confidence_grid, prof.confidence_grid_counts = grid, gc
    trig = d.get("triggers")
    if not isinstance(trig, dict):
        raise ProfileFormatError("profile.triggers must be an object")
    for t in spec.triggers:
        row = trig.get(t.name, [0] + [0] * ncls)
        prof.triggers[t.name] = _counts(row, "triggers", ncls + 1)
    return prof


def _count(v: Any, what: str) -> int:
    return check_int(v, what, 0, MAX_COUNT)


def _counts(v: Any, what: str, length: int) -> list[int]:
    """``length`` event counts whose total stays within :data:`MAX_COUNT`."""
    counts = [_count(c, what) for c in check_list(v, what, length)]
    if sum(counts) > MAX_COUNT:
        raise ProfileFormatError(f"{what}: counts total more than {MAX_COUNT} events")
    return counts


def trigger_mask(t: TriggerSpec, col: NumericColumn | CategoricalColumn) -> np.ndarray:
    """Events (valid values only) on which trigger ``t`` holds."""
    if isinstance(col, NumericColumn):
        x = col.values
        with np.errstate(invalid="ignore"):
            if t.equals is not None:
                try:
                    return x == float(t.equals)
                except ValueError:
                    return np.zeros(x.size, dtype=bool)
            m = np.ones(x.size, dtype=bool) & col.valid
            if t.above is not None:
                m &= x > t.above
            if t.below is not None:
                m &= x < t.below
            return m
    vals = col.values
    n = len(vals)
    if t.one_of is not None:
        return np.fromiter(map(frozenset(t.one_of).__contains__, vals), dtype=bool, count=n)
    return np.fromiter(map(operator.eq, vals, repeat(str(t.equals), n)), dtype=bool, count=n)


def rank_grid(x: np.ndarray, bins: int = RANK_GRID) -> tuple[np.ndarray, np.ndarray]:
    """Fine quantile edges of ``x`` and the counts per bin; a value holding at least one bin's
    share of ``x`` (a tie) gets a bin of its own, ``[v, nextafter(v))``.

    >>> e, c = rank_grid(np.array([0.0] * 50 + list(range(1, 51))), bins=4)
    >>> int(c[np.searchsorted(e, 0.0, side="right")])
    50
    """
    xs = np.sort(np.asarray(x, dtype=np.float64))[None, :]
    edges, size, counts = _grids(xs, sorted_quantiles(xs, np.linspace(0.0, 1.0, bins + 1)[1:-1]), bins, True)
    return edges[0, : size[0]], counts[0, : size[0] + 1]


def sorted_quantiles(XS: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``np.quantile(row, q)`` (its default linear method, bit for bit) of every row of ``XS``, whose
    rows are sorted and hold at least one value: the order statistics are read, not selected again."""
    n = XS.shape[1]
    virtual = (n - 1) * q
    prev = np.floor(virtual)
    top = virtual >= n - 1
    lo = np.where(top, n - 1, prev).astype(np.intp)
    hi = np.where(top, n - 1, prev + 1).astype(np.intp)
    gamma = virtual - np.where(top, -1.0, prev)  # numpy's, with its index -1 for the top
    a, b = XS[:, lo], XS[:, hi]
    diff = b - a
    return np.where(gamma >= 0.5, b - diff * (1 - gamma), a + diff * gamma)


def numeric_summaries(feats: Sequence[Any], values: dict[str, list[float]]
                      ) -> dict[str, tuple[np.ndarray, np.ndarray, float, float, np.ndarray, np.ndarray]]:
    """Per numeric feature of a reference: quantile-bin edges and counts, mean, standard deviation,
    and the rank grid (:func:`rank_grid`). Features with as many values are summarized together
    (one matrix, one sort, quantiles read off the sorted rows): arming costs per model, not per feature.
    """
    out = {}
    by_size: dict[int, list[Any]] = {}
    for f in feats:
        by_size.setdefault(len(values[f.name]), []).append(f)
    for n, group in by_size.items():
        if not n:
            for f in group:
                out[f.name] = (np.empty(0), np.zeros(1, dtype=np.int64), 0.0, 0.0, np.empty(0),
                               np.zeros(1, dtype=np.int64))
            continue
        X = np.array([values[f.name] for f in group], dtype=np.float64)
        mean = X.mean(axis=1)
        std = X.std(axis=1, ddof=1) if n > 1 else np.zeros(len(group))
        X.sort(axis=1)
        grid = _grids(X, sorted_quantiles(X, np.linspace(0.0, 1.0, RANK_GRID + 1)[1:-1]), RANK_GRID, True)
        bins = {b: _grids(X, sorted_quantiles(X, np.linspace(0, 1, b + 1)[1:-1]), b, False)
                for b in {f.bins for f in group}}
        g, gs, gc = grid
        for j, f in enumerate(group):
            e, es, ec = bins[f.bins]
            out[f.name] = (e[j, : es[j]], ec[j, : es[j] + 1], float(mean[j]), float(std[j]), g[j, : gs[j]],
                           gc[j, : gs[j] + 1])
    return out


@numba.njit((numba.float64[:, :], numba.float64[:, :], numba.int64, numba.boolean), cache=True, nogil=True)
def _grids(XS, Q, bins, heavy_ties):  # pragma: no cover - compiled
    """Per sorted row of ``XS``: the distinct values of its quantiles ``Q`` (with ``heavy_ties``
    also every value holding at least one of ``bins`` bins' share of the row and the next float
    above it, non-finite edges dropped: :func:`rank_grid`) as edges, and the row's values per
    bin (``searchsorted`` left), one compiled pass for every feature of a reference. Returns
    (edges, number of edges, counts) padded per row. Of a tie between 0.0 and -0.0 either may be
    kept as the edge."""
    R, n = XS.shape
    m = Q.shape[1]
    cap = m + (2 * (bins + 1) if heavy_ties else 0)
    edges = np.empty((R, max(cap, 1)))
    sizes = np.zeros(R, dtype=np.int64)
    counts = np.zeros((R, cap + 1), dtype=np.int64)
    cand = np.empty(max(cap, 1))
    for r in range(R):
        xs = XS[r]
        k = 0
        for j in range(m):
            cand[k] = Q[r, j]
            k += 1
        if heavy_ties:
            i = 0
            while i < n:
                j = i + 1
                while j < n and xs[j] == xs[i]:
                    j += 1
                if (j - i) * bins >= n:
                    cand[k] = xs[i]
                    cand[k + 1] = np.nextafter(xs[i], np.inf)
                    k += 2
                i = j
        c = np.sort(cand[:k])
        e = 0
        for j in range(k):
            v = c[j]
            if (j > 0 and v == c[j - 1]) or (heavy_ties and not np.isfinite(v)):
                continue
            edges[r, e] = v
            e += 1
        sizes[r] = e
        below = 0
        for j in range(e):
            s = np.searchsorted(xs, edges[r, j])
            counts[r, j] = s - below
            below = s
        counts[r, e] = n - below
    return edges, sizes, counts


class ProfileBuilder:
    """Accumulates the first events of a stream until a profile can be built."""

    def __init__(self, spec: ModelSpec, max_known: int = 4096) -> None:
        self.spec = spec
        self.max_known = max_known
        self.n = 0
        self.numeric: dict[str, list[float]] = {f.name: [] for f in spec.features if f.type == "numeric"}
        self.categorical: dict[str, list[str]] = {f.name: [] for f in spec.features if f.type == "categorical"}
        self.invalid: dict[str, int] = {f.name: 0 for f in spec.features}
        self.pred_codes: list[int] = []
        self.conf: list[float] = []
        self.trig: dict[str, list[int]] = {t.name: [] for t in spec.triggers}  # class codes of triggered events

    def add(self, n: int, cols: dict[str, NumericColumn | CategoricalColumn], pred_codes: np.ndarray,
            conf: np.ndarray, trig: dict[str, np.ndarray]) -> None:
        self.n += n
        for name, col in cols.items():
            self.invalid[name] += int(n - col.valid.sum())
            if isinstance(col, NumericColumn):
                self.numeric[name].extend(col.values[col.valid].tolist())
            else:
                self.categorical[name].extend(v for v in col.values if v is not None)
        self.pred_codes.extend(pred_codes.tolist())
        self.conf.extend(conf[~np.isnan(conf)].tolist())
        for name, m in trig.items():
            self.trig[name].extend(pred_codes[m].tolist())

    def build(self, low_confidence: float) -> ReferenceProfile:
        spec = self.spec
        ncls = len(spec.classes) + 1
        prof = ReferenceProfile(n=self.n)
        summaries = numeric_summaries([f for f in spec.features if f.type == "numeric"], self.numeric)
        for f in spec.features:
            if f.type == "numeric":
                edges, counts, mean, std, grid, gcounts = summaries[f.name]
                prof.numeric[f.name] = NumericProfile(edges.tolist(), counts.tolist(), mean, std,
                                                      len(self.numeric[f.name]),
                                                      self.invalid[f.name], grid.tolist(), gcounts.tolist())
            else:
                vals = self.categorical[f.name]
                freq = Counter(vals)
                ranked = sorted(freq.items(), key=lambda kv: (-kv[1], kv[0]))
                # a tracked category needs enough reference mass for the chi-square approximations
                top = [v for v, c in ranked[: f.top_k] if c >= MIN_CATEGORY_COUNT]
                rest = [v for v, _ in ranked[len(top): self.max_known]]
                counts = [freq[v] for v in top] + [len(vals) - sum(freq[v] for v in top)]
                half = len(vals) // 2
                first = Counter(vals[:half])
                known = {v for v, _ in sorted(first.items(), key=lambda kv: (-kv[1], kv[0]))[: self.max_known]}
                hits = sum(1 for v in vals[half:] if v not in known)
                prof.categorical[f.name] = CategoricalProfile(top, rest, counts, hits, len(vals) - half, len(vals),
                                                              self.invalid[f.name])
        codes = np.asarray(self.pred_codes, dtype=np.int64)
        prof.predictions = np.bincount(codes, minlength=ncls)[:ncls].tolist()
        c = np.asarray(self.conf, dtype=np.float64)
        prof.confidence = [int(c.size), float(c.mean()) if c.size else 0.0,
                           float(c.std(ddof=1)) if c.size > 1 else 0.0, int((c < low_confidence).sum())]
        if c.size:
            cg, cgc = rank_grid(c)
            prof.confidence_grid, prof.confidence_grid_counts = cg.tolist(), cgc.tolist()
        for t in spec.triggers:
            tc = np.asarray(self.trig[t.name], dtype=np.int64)
            prof.triggers[t.name] = [int(tc.size)] + np.bincount(tc, minlength=ncls)[:ncls].tolist()
        return prof

    def to_state(self) -> dict[str, Any]:
        return {"n": self.n, "numeric": self.numeric, "categorical": self.categorical, "invalid": self.invalid,
                "pred": self.pred_codes, "conf": self.conf, "trig": self.trig}

    def load_state(self, st: Any) -> None:
        if not isinstance(st, dict):
            raise StateFormatError("profile builder: expected an object")
        self.n = check_int(st.get("n"), "builder.n", 0, 10_000_000)
        ncls = len(self.spec.classes) + 1
        num, cat, inv = st.get("numeric"), st.get("categorical"), st.get("invalid")
        trig = st.get("trig")
        for d in (num, cat, inv, trig):
            if not isinstance(d, dict):
                raise StateFormatError("profile builder: malformed")
        for name in self.numeric:
            self.numeric[name] = [check_float(v, "builder value", True) for v in check_list(num.get(name), name)]
        for name in self.categorical:
            self.categorical[name] = [check_str(v, "builder value") for v in check_list(cat.get(name), name)]
        for name in self.invalid:
            self.invalid[name] = check_int(inv.get(name), "builder.invalid")
        self.pred_codes = [check_int(c, "builder.pred", 0, ncls - 1) for c in check_list(st.get("pred"), "pred")]
        self.conf = [check_float(c, "builder.conf", True) for c in check_list(st.get("conf"), "conf")]
        for name in self.trig:
            self.trig[name] = [check_int(c, "builder.trig", 0, ncls - 1) for c in check_list(trig.get(name), name)]


class FeatureLayout:
    """A model's features split by type, worked out once per stream rather than per batch."""

    __slots__ = ("numeric", "categorical", "categorical_names", "triggers")

    def __init__(self, spec: ModelSpec) -> None:
        self.numeric = NumericLayout([f for f in spec.features if f.type == "numeric"])
        self.categorical = [f for f in spec.features if f.type == "categorical"]
        self.categorical_names = [f.name for f in self.categorical]
        self.triggers = list(spec.triggers)


class FeatureColumns(Mapping):
    """A batch's columns by feature name. Numeric columns are views of the batch's
    :class:`NumericMatrix`, made when first asked for (an armed stream reads the matrix)."""

    __slots__ = ("matrix", "numeric", "categorical", "_made")

    def __init__(self, matrix: NumericMatrix, numeric: Sequence[str],
                 categorical: dict[str, CategoricalColumn]) -> None:
        self.matrix = matrix
        self.numeric = {name: j for j, name in enumerate(numeric)}
        self.categorical = categorical
        self._made: dict[str, NumericColumn] = {}

    def __getitem__(self, name: str) -> NumericColumn | CategoricalColumn:
        col = self.categorical.get(name)
        if col is not None:
            return col
        col = self._made.get(name)
        if col is None:
            col = self._made[name] = self.matrix.column(self.numeric[name])
        return col

    def __iter__(self) -> Iterator[str]:
        yield from self.numeric
        yield from self.categorical

    def __len__(self) -> int:
        return len(self.numeric) + len(self.categorical)

    def __contains__(self, name: object) -> bool:
        return name in self.numeric or name in self.categorical


def extract_features(spec: ModelSpec, events: Sequence[InferenceEvent], layout: FeatureLayout | None = None
                     ) -> tuple[FeatureColumns, dict[str, np.ndarray], NumericMatrix]:
    """Feature columns, trigger masks and the numeric matrix of a batch of one stream.

    Numeric features are extracted together (:func:`~detectors.columns.numeric_matrix`);
    categorical ones with one ``itemgetter`` call per event transposed by ``zip``. ``layout`` is
    ``FeatureLayout(spec)``, kept by callers that extract many batches.
    """
    layout = FeatureLayout(spec) if layout is None else layout
    fd = [e.features for e in events]
    mat = numeric_matrix(fd, layout.numeric)
    cat_cols: dict[str, CategoricalColumn] = {}
    if layout.categorical:
        names = layout.categorical_names
        raw_cols: list[Sequence[object]] | None = block_columns(fd, names)
        if raw_cols is None and len(names) > 1 and fd:
            try:
                raw_cols = list(zip(*map(itemgetter(*names), fd)))
            except (KeyError, TypeError, AttributeError):
                raw_cols = None
        if raw_cols is None:
            raw_cols = [feature_values(fd, n) for n in names]
        for f, raw in zip(layout.categorical, raw_cols):
            cat_cols[f.name] = categorical_column(raw)
    cols = FeatureColumns(mat, layout.numeric.names, cat_cols)
    trig = {t.name: trigger_mask(t, cols[t.feature]) for t in layout.triggers}
    return cols, trig, mat


def prediction_codes(events: Sequence[InferenceEvent], class_index: dict[str, int]) -> np.ndarray:
    """Class index of each prediction (``len(class_index)`` for a class the spec does not list)."""
    n = len(events)
    return np.fromiter(map(class_index.get, map(_PRED, events), repeat(len(class_index), n)), dtype=np.int64, count=n)


def build_profile(spec: ModelSpec, events: Sequence[InferenceEvent], max_known: int = 4096) -> ReferenceProfile:
    """Pure profile construction from a sequence of events (used by ``driftline profile``)."""
    b = ProfileBuilder(spec, max_known)
    class_index = {c: i for i, c in enumerate(spec.classes)}
    evs = list(events)
    if evs:
        cols, trig, _ = extract_features(spec, evs)
        b.add(len(evs), cols, prediction_codes(evs, class_index),
              confidence_column([e.confidence for e in evs]), trig)
    return b.build(spec.low_confidence)
