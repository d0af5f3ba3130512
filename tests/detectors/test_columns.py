import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.columns import (INF, NAN, NULL, OUT_OF_RANGE, VALID, WRONG_TYPE, categorical_column, confidence_column,
                               numeric_column, numeric_matrix)
from detectors.spec import FeatureSpec

F = FeatureSpec(name="x", type="numeric", min=-10, max=10)


def test_numeric_classification():
    raw = [1.0, 2, float("nan"), float("inf"), None, "3.5", [1], 11.0, 2**4000, -10.0]
    col = numeric_column(raw, F)
    assert col.kinds.tolist() == [VALID, VALID, NAN, INF, NULL, WRONG_TYPE, WRONG_TYPE, OUT_OF_RANGE, OUT_OF_RANGE,
                                  VALID]
    assert np.isnan(col.values[~col.valid]).all()
    assert col.values[col.valid].tolist() == [1.0, 2.0, -10.0]


def test_categorical_classification():
    col = categorical_column(["a", None, float("nan"), 3, True, {"x": 1}])
    assert col.kinds.tolist() == [VALID, NULL, NAN, VALID, WRONG_TYPE, WRONG_TYPE]
    assert col.values[:4] == ["a", None, None, "3"]


def test_confidence_out_of_bounds_ignored():
    c = confidence_column([0.5, None, 1.5, -0.1, float("nan"), "x"])
    assert c[0] == 0.5 and np.isnan(c[1:]).all()


values = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**30, 10**30), st.none(),
                   st.text(max_size=3), st.booleans())


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(values, values), min_size=1, max_size=30), st.booleans())
def test_matrix_agrees_with_columns(rows, missing):
    feats = [FeatureSpec(name="a", type="numeric", min=-1e6, max=1e6), FeatureSpec(name="b", type="numeric")]
    dicts = [{"a": a, "b": b} for a, b in rows]
    if missing:
        del dicts[0]["b"]
    mat = numeric_matrix(dicts, feats)
    for j, f in enumerate(feats):
        col = numeric_column([d.get(f.name) for d in dicts], f)
        got, want = mat.kinds[:, j].tolist(), col.kinds.tolist()
        # numpy promotion reads booleans mixed with numbers as 0/1 (documented); everything else agrees
        for g, w, d in zip(got, want, dicts):
            if isinstance(d.get(f.name), bool) and g == VALID:
                continue
            assert g == w
        v = mat.valid[:, j]
        assert not np.isnan(mat.values[v, j]).any()
        assert all(math.isnan(x) for x in mat.values[~v, j])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=64), min_size=3, max_size=3),
                min_size=1, max_size=40),
       st.lists(st.integers(0, 39), max_size=12), st.permutations(["a", "b", "c"]), st.booleans(), st.booleans())
def test_feature_rows_give_the_matrix_of_their_dicts(rows, picks, names, missing, bounded):
    """Rows viewed from blocks (split, reordered, picked out of order) extract exactly as their dicts do,
    with the features' layout worked out per call or once (:class:`NumericLayout`)."""
    from detectors.columns import FeatureBlock, FeatureRow, NumericLayout

    half = len(rows) // 2
    blocks = [FeatureBlock(["a", "b", "c"], np.array(part, dtype=np.float64).reshape(-1, 3))
              for part in (rows[:half], rows[half:]) if part]
    views = [FeatureRow(b, i) for b in blocks for i in range(b.matrix.shape[0])]
    views += [views[p % len(views)] for p in picks]  # repeated and out-of-order rows
    spec = [FeatureSpec(name=n, type="numeric", min=-1e300 if bounded else None, max=1e300 if bounded else None)
            for n in names]
    if missing:
        spec.append(FeatureSpec(name="absent", type="numeric"))
    got, want = numeric_matrix(views, NumericLayout(spec)), numeric_matrix([dict(v) for v in views], spec)
    for a, b in ((got.values, want.values), (got.kinds, want.kinds), (got.valid, want.valid)):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
    if not missing:  # every value is a float: the kinds are those of one column at a time
        for j, f in enumerate(spec):
            col = numeric_column([dict(v)[f.name] for v in views], f)
            assert got.kinds[:, j].tolist() == col.kinds.tolist()
    assert views[0] == dict(views[0]) and list(views[0]) == ["a", "b", "c"] and "absent" not in views[0]


CATEGORY = st.one_of(st.sampled_from(["a", "b", "z"]), st.integers(-3, 3), st.none(), st.booleans(),
                     st.floats(-5, 5), st.just(math.nan))
COUNT = st.one_of(st.integers(-10**6, 10**6), st.integers(-10**6, 10**6), st.floats(-100, 100),
                  st.none(), st.booleans(), st.integers(2**62, 2**66), st.just("7"))


CLEAN_COUNT = st.one_of(st.integers(-60, 60), st.floats(-60, 60))  # within the demo model's range, mostly


@settings(max_examples=150, deadline=None)
@given(st.booleans().flatmap(lambda clean: st.lists(
           st.tuples(st.floats(allow_nan=True, allow_infinity=True, width=64), CATEGORY, CATEGORY,
                     CLEAN_COUNT if clean else COUNT), min_size=1, max_size=40)),
       st.lists(st.integers(0, 39), max_size=12))
def test_feature_rows_with_other_columns_extract_as_their_dicts(rows, picks):
    """Blocks holding strings, integers and nulls beside floats (version 3 records) give every
    feature column, trigger mask and the numeric matrix exactly as the events' dicts would, also
    for a numeric feature carried as such a list (integers, floats, and odd values among them)."""
    from detectors.columns import FeatureBlock, FeatureRow, block_columns
    from detectors.profile import extract_features
    from detectors.simulate import demo_model

    spec = demo_model(name="m", n_numeric=2, n_categorical=2, reference_size=100)
    num, cat = [f.name for f in spec.features if f.type == "numeric"], [f.name for f in spec.features
                                                                          if f.type == "categorical"]
    names = [num[0], cat[0], num[1], cat[1]]
    half = len(rows) // 2
    blocks = []
    for part in (rows[:half], rows[half:]):
        if part:
            other = {cat[0]: [r[1] for r in part], num[1]: [r[3] for r in part], cat[1]: [r[2] for r in part]}
            blocks.append(FeatureBlock(names, np.array([[r[0]] for r in part], dtype=np.float64), other))
    views = [FeatureRow(b, i) for b in blocks for i in range(b.matrix.shape[0])]
    views += [views[p % len(views)] for p in picks]
    dicts = [dict(v) for v in views]
    assert [list(d) for d in dicts] == [names] * len(views)
    assert block_columns(views, cat) == [[d[c] for d in dicts] for c in cat]
    assert block_columns(views, [num[0]]) is None and block_columns(dicts, cat) is None

    def events(feats):
        from detectors.events import InferenceEvent
        return [InferenceEvent(f"e{i}", float(i), "m", "v1", "stable", f, "safe", 0.9) for i, f in enumerate(feats)]

    (cols_v, trig_v, mat_v), (cols_d, trig_d, mat_d) = extract_features(spec, events(views)), extract_features(
        spec, events(dicts))
    assert set(cols_v) == set(cols_d) and set(trig_v) == set(trig_d)
    for k in cols_d:
        a, b = cols_v[k], cols_d[k]
        assert list(map(repr, a.values)) == list(map(repr, b.values)) and a.kinds.tobytes() == b.kinds.tobytes()
    for k in trig_d:
        assert trig_v[k].tobytes() == trig_d[k].tobytes()
    assert mat_v.values.tobytes() == mat_d.values.tobytes() and mat_v.kinds.tobytes() == mat_d.kinds.tobytes()


def test_bounds_on_nan_and_infinities_raise_no_floating_point_error():
    """The numeric matrix compares NaN with the bounds without np.errstate: numpy raises nothing."""
    import numpy as np

    from detectors.columns import INF, NAN, OUT_OF_RANGE, VALID, numeric_matrix
    from detectors.spec import FeatureSpec

    feats = [FeatureSpec(name="x", type="numeric", min=0.0, max=1.0)]
    old = np.seterr(all="raise")
    try:
        m = numeric_matrix([{"x": v} for v in (0.5, float("nan"), float("inf"), 2.0)], feats)
    finally:
        np.seterr(**old)
    assert m.kinds[:, 0].tolist() == [VALID, NAN, INF, OUT_OF_RANGE]
