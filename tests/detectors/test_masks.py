"""Whole-mask tests answer exactly what ndarray.all() and ndarray.any() answer."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from detectors.masks import all_true, any_true


@settings(max_examples=300, deadline=None)
@given(hnp.arrays(np.bool_, hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=6)), st.booleans())
def test_masks_agree_with_numpy_reductions(mask: np.ndarray, strided: bool) -> None:
    view = mask[::2] if strided else mask  # views with strides as the detectors pass them (column slices)
    assert all_true(view) is bool(view.all())
    assert any_true(view) is bool(view.any())
