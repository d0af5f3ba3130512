import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.engine import ModelMonitor
from detectors.errors import ProfileFormatError
from detectors.profile import (RANK_GRID, ReferenceProfile, _grids, build_profile, numeric_summaries, rank_grid,
                               sorted_quantiles)
from detectors.simulate import demo_model, make_events
from detectors.spec import AlertPolicySpec, CalibrationSpec, FeatureSpec

SPEC = demo_model(n_numeric=3, n_categorical=2, reference_size=500)


def test_build_and_round_trip():
    evs = make_events(SPEC, 3000, seed=1)
    p = build_profile(SPEC, evs)
    d = p.to_dict()
    assert d["format"] == "driftline.profile/v1" and p.n == 3000
    assert ReferenceProfile.from_dict(SPEC, d).to_dict() == d
    x0 = p.numeric["x0"]
    assert len(x0.edges) == 9 and abs(x0.mean) < 0.1 and abs(x0.std - 1) < 0.1
    c0 = p.categorical["c0"]
    assert len(c0.top) <= 16 and sum(c0.counts) == c0.n and c0.unseen_n > 0
    assert sum(p.predictions) == 3000
    assert sum(p.confidence_grid_counts) == p.confidence[0] == 3000 and len(p.confidence_grid) >= 32


def test_a_profile_without_a_confidence_grid_loads_and_runs_the_indicator_cusum_only():
    """Profiles written before the confidence CUSUM have no grid: they load, the score CUSUM stays off."""
    from detectors.confidence import ConfidenceDrift
    d = build_profile(SPEC, make_events(SPEC, 2000, seed=2)).to_dict()
    del d["confidence_grid"]
    old = ReferenceProfile.from_dict(SPEC, d)
    assert old.confidence_grid == [] and old.confidence_grid_counts == []
    cd = ConfidenceDrift(old, CalibrationSpec(), SPEC.low_confidence)
    assert not cd.score_on and cd.seq_low.bank.enabled.all()
    assert ConfidenceDrift(build_profile(SPEC, make_events(SPEC, 2000, seed=2)), CalibrationSpec(), 0.5).score_on


@pytest.mark.parametrize("mutate", [
    lambda d: d.update(format="x"),
    lambda d: d["numeric"].pop("x0"),
    lambda d: d["numeric"]["x0"].update(edges=[1.0, 0.0]),
    lambda d: d["numeric"]["x0"].update(counts=[1]),
    lambda d: d.update(predictions=[1, 2]),
    lambda d: d["categorical"]["c0"].update(top=[1, 2]),
    lambda d: d.update(confidence="x"),
    lambda d: d.update(confidence_grid=[[0.5, 0.2], [1, 1, 598]]),
    lambda d: d.update(confidence_grid=[[0.5], [1, 2]]),
])
def test_malformed_profiles_rejected(mutate):
    d = build_profile(SPEC, make_events(SPEC, 600)).to_dict()
    mutate(d)
    with pytest.raises(ProfileFormatError):
        ReferenceProfile.from_dict(SPEC, d)


def test_file_profile_arms_streams_immediately():
    prof = build_profile(SPEC, make_events(SPEC, 3000, seed=1))
    mon = ModelMonitor(SPEC, CalibrationSpec(window=500), AlertPolicySpec())
    mon.process_inference(make_events(SPEC, 10, seed=2))
    assert not mon.streams[("v1", "stable")].armed
    mon.set_reference(prof)
    assert mon.streams[("v1", "stable")].armed and mon.streams[("v1", "stable")].n == 10
    mon.process_inference(make_events(SPEC, 1000, seed=3, start=10, mean_shift={"x0": 1.0}))
    assert mon.detections["numeric_drift"] > 0
    restored = ModelMonitor.from_bytes(SPEC, CalibrationSpec(window=500), AlertPolicySpec(), mon.to_bytes())
    assert restored.reference is not None and restored.reference.to_dict() == prof.to_dict()


def _one_feature(x: np.ndarray, bins: int) -> tuple:
    """One feature's summary computed on its own, value by value (the definition numeric_summaries keeps)."""
    if not x.size:
        return [], [0], 0.0, 0.0, [], [0]
    edges = np.unique(np.quantile(x, np.linspace(0, 1, bins + 1)[1:-1]))
    counts = np.bincount(np.searchsorted(edges, x, side="right"), minlength=edges.size + 1)
    q = np.quantile(x, np.linspace(0.0, 1.0, RANK_GRID + 1)[1:-1])
    vals, cnt = np.unique(x, return_counts=True)
    heavy = vals[cnt * RANK_GRID >= x.size]
    grid = np.unique(np.concatenate((q, heavy, np.nextafter(heavy, np.inf))))
    grid = grid[np.isfinite(grid)]
    gcounts = np.bincount(np.searchsorted(grid, x, side="right"), minlength=grid.size + 1)
    return (edges.tolist(), counts.tolist(), float(x.mean()), float(x.std(ddof=1)) if x.size > 1 else 0.0,
            grid.tolist(), gcounts.tolist())


_values = st.lists(st.one_of(st.integers(-3, 3).map(float), st.floats(-1e9, 1e9, allow_nan=False)),
                   max_size=300)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(_values, st.integers(2, 64)), min_size=1, max_size=5), st.integers(0, 4))
def test_numeric_summaries_equal_each_feature_summarized_alone(columns, same):
    """Grouped by size into one matrix, every feature's summary is bit for bit its own (ties, heavy
    values, empty and unequal columns, mixed bin counts)."""
    columns = [(columns[0][0] if i < same else x, b) for i, (x, b) in enumerate(columns)]
    feats = [FeatureSpec(name=f"x{i}", type="numeric", bins=b) for i, (_, b) in enumerate(columns)]
    values = {f"x{i}": x for i, (x, _) in enumerate(columns)}
    got = numeric_summaries(feats, values)
    for f in feats:
        want = _one_feature(np.asarray(values[f.name], dtype=np.float64), f.bins)
        edges, counts, mean, std, grid, gcounts = got[f.name]
        assert (edges.tolist(), counts.tolist(), grid.tolist(), gcounts.tolist()) == \
            (want[0], want[1], want[4], want[5])
        assert np.float64(mean).tobytes() == np.float64(want[2]).tobytes()
        assert np.float64(std).tobytes() == np.float64(want[3]).tobytes()


@settings(max_examples=80, deadline=None)
@given(st.lists(_values.filter(bool), min_size=1, max_size=3).map(lambda rows: [r[:min(map(len, rows))] for r in rows]),
       st.lists(st.one_of(st.sampled_from([0.0, 0.5, 1.0]), st.floats(0.0, 1.0)), min_size=1, max_size=70))
def test_sorted_quantiles_are_numpy_quantiles_bit_for_bit(rows, q):
    X = np.sort(np.asarray(rows, dtype=np.float64), axis=1)
    qs = np.asarray(q)
    got = sorted_quantiles(X, qs)
    for j, row in enumerate(rows):
        assert got[j].tobytes() == np.quantile(np.asarray(row, dtype=np.float64), qs).tobytes()


def test_feature_columns_read_like_a_dict_of_columns():
    """Numeric columns are made on first use from the batch's matrix; the mapping lists every
    feature (numeric first, as the spec orders them), and an unknown name is a KeyError."""
    from detectors.columns import CategoricalColumn, NumericColumn
    from detectors.events import InferenceEvent
    from detectors.profile import FeatureLayout, extract_features

    spec = demo_model(name="m", n_numeric=3, n_categorical=2, reference_size=100)
    events = [InferenceEvent(f"e{i}", float(i), "m", "v1", "stable",
                             {"x0": float(i), "x1": None, "x2": "bad", "c0": "a", "c1": 7}, "safe", 0.9)
              for i in range(5)]
    cols, _, mat = extract_features(spec, events, FeatureLayout(spec))
    num = [f.name for f in spec.features if f.type == "numeric"]
    cat = [f.name for f in spec.features if f.type == "categorical"]
    assert list(cols) == num + cat and len(cols) == len(spec.features)
    assert all(name in cols for name in num + cat) and "nope" not in cols
    for j, name in enumerate(num):
        col = cols[name]
        assert isinstance(col, NumericColumn) and col is cols[name]
        assert col.kinds.tolist() == mat.kinds[:, j].tolist() and col.values.tobytes() == mat.values[:, j].tobytes()
    assert all(isinstance(cols[name], CategoricalColumn) for name in cat)
    assert dict(cols.items()).keys() == set(num + cat)
    with pytest.raises(KeyError):
        cols["nope"]


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 4), st.integers(1, 300), st.sampled_from(["normal", "ties", "rounded", "zeros"]),
       st.integers(0, 2**31 - 1), st.sampled_from([1, 2, 10, 64]))
def test_the_compiled_grids_match_the_numpy_ones(rows, n, family, seed, bins):
    """Every feature's rank grid and quantile bins from one compiled pass hold the values and
    counts that per-feature numpy steps give (ties, heavy values, signed zeros)."""
    rng = np.random.default_rng(seed)
    X = {"normal": lambda: rng.normal(size=(rows, n)),
         "ties": lambda: rng.poisson(1.5, size=(rows, n)).astype(float),
         "rounded": lambda: np.round(rng.normal(size=(rows, n)), 1),
         "zeros": lambda: np.where(rng.random((rows, n)) < 0.6, 0.0, rng.standard_cauchy((rows, n)))}[family]()
    X.sort(axis=1)
    grid_q = sorted_quantiles(X, np.linspace(0.0, 1.0, RANK_GRID + 1)[1:-1])
    bin_q = sorted_quantiles(X, np.linspace(0.0, 1.0, bins + 1)[1:-1])
    g, gs, gc = _grids(X, grid_q, RANK_GRID, True)
    e, es, ec = _grids(X, bin_q, bins, False)
    for j in range(rows):
        grid, counts = _grid_of_sorted(X[j], grid_q[j], RANK_GRID)
        assert np.array_equal(g[j, : gs[j]], grid) and gc[j, : gs[j] + 1].tolist() == counts.tolist()
        edges = np.unique(bin_q[j])
        assert np.array_equal(e[j, : es[j]], edges) and ec[j, : es[j] + 1].tolist() == _bin_counts(X[j], edges).tolist()


def _bin_counts(xs: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Values of sorted ``xs`` per bin of sorted distinct ``edges`` (left-closed bins), by numpy."""
    return np.diff(np.concatenate(([0], np.searchsorted(xs, edges, side="left"), [xs.size])))


def _grid_of_sorted(xs: np.ndarray, q: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """The rank grid by numpy: quantiles, every value holding a bin's share and the float above it."""
    starts = np.flatnonzero(np.concatenate(([True], xs[1:] != xs[:-1])))
    heavy = xs[starts[np.diff(np.append(starts, xs.size)) * bins >= xs.size]]
    edges = np.unique(np.concatenate((q, heavy, np.nextafter(heavy, np.inf))))
    edges = edges[np.isfinite(edges)]
    return edges, _bin_counts(xs, edges)


def test_a_rank_grid_of_integers_is_the_grid_of_their_floats():
    ints = np.random.default_rng(3).poisson(2.0, size=500)
    (e1, c1), (e2, c2) = rank_grid(ints), rank_grid(ints.astype(np.float64))
    assert e1.tobytes() == e2.tobytes() and c1.tolist() == c2.tolist() and c1.sum() == 500
