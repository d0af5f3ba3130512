import base64

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.errors import StateFormatError
from detectors.sequential import Adwin, PageHinkley

floats = st.lists(st.floats(-5, 5, allow_nan=False), min_size=1, max_size=300)


@settings(max_examples=60, deadline=None)
@given(floats, st.integers(1, 50))
def test_page_hinkley_vectorized_equals_loop(xs, chunk):
    a, b = PageHinkley(0.2, 3.0, min_instances=5), PageHinkley(0.2, 3.0, min_instances=5)
    loop = [i for i, x in enumerate(xs) if a.update(x)]
    arr = np.asarray(xs)
    vec = []
    for s in range(0, len(xs), chunk):
        vec += [s + i for i in b.update_many(arr[s:s + chunk])]
    assert loop == vec
    assert np.allclose(a.to_state()[:6], b.to_state()[:6], rtol=1e-9, atol=1e-9)


@settings(max_examples=40, deadline=None)
@given(floats, floats)
def test_page_hinkley_round_trip_same_future(past, future):
    a = PageHinkley(0.3, 4.0)
    for x in past:
        a.update(x)
    b = PageHinkley(0.3, 4.0)
    b.load_state(a.to_state())
    assert [a.update(x) for x in future] == [b.update(x) for x in future]


@settings(max_examples=30, deadline=None)
@given(floats, floats)
def test_adwin_round_trip_same_future(past, future):
    a = Adwin(0.05)
    for x in past:
        a.update(x)
    b = Adwin.from_state(a.to_state())
    assert b.width == a.width
    assert [a.update(x) for x in future] == [b.update(x) for x in future]
    assert a.estimation == b.estimation


def test_adwin_detects_shift_and_page_hinkley_too():
    rng = np.random.default_rng(0)
    x = np.r_[rng.standard_normal(3000), rng.standard_normal(1000) + 1.0]
    a, p = Adwin(0.01), PageHinkley(0.5, 10.0)
    ah = [i for i, v in enumerate(x.tolist()) if a.update(v)]
    ph = p.update_many(x)
    assert ah and 3000 <= ah[0] < 3300
    assert ph and 3000 <= ph[0] < 3300


@pytest.mark.parametrize("blob", [b"", b"\x00" * 7, b"\xff" * 300])
def test_adwin_hostile_bytes(blob):
    good = Adwin(0.01).to_state()
    with pytest.raises(StateFormatError):
        Adwin.from_state({"args": good["args"], "blob": base64.b64encode(blob).decode()})


@pytest.mark.parametrize("state", [
    None, {}, {"args": [0.01, 8, 5, 5, 10], "blob": "!!notbase64"},
    {"args": [2.0, 8, 5, 5, 10], "blob": ""}, {"args": [0.01, 0, 5, 5, 10], "blob": ""},
    {"args": [0.01, 8, 5, 5], "blob": ""}, {"args": ["x", 8, 5, 5, 10], "blob": ""},
])
def test_adwin_malformed_state(state):
    with pytest.raises(StateFormatError):
        Adwin.from_state(state)


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=64), st.integers(0, 2000))
def test_adwin_mutated_blob_never_crashes(noise, at):
    a = Adwin(0.01)
    for i in range(300):
        a.update(float(i % 5))
    st_ = a.to_state()
    raw = bytearray(base64.b64decode(st_["blob"]))
    at %= len(raw)
    raw[at:at + len(noise)] = noise
    try:
        b = Adwin.from_state({"args": st_["args"], "blob": base64.b64encode(bytes(raw)).decode()})
    except StateFormatError:
        return
    b.update(0.0)  # whatever decoded is usable
