"""The collector's pace inside fewer_collections: raised, never lowered, always restored."""
from __future__ import annotations

import gc

import pytest

from stream.collector import GC_THRESHOLD, fewer_collections


@pytest.fixture(autouse=True)
def _thresholds():
    saved = gc.get_threshold()
    yield
    gc.set_threshold(*saved)


def test_the_first_generation_waits_longer_inside_and_as_before_after():
    gc.set_threshold(700, 10, 10)
    with fewer_collections():
        assert gc.get_threshold() == (GC_THRESHOLD, 10, 10)
    assert gc.get_threshold() == (700, 10, 10)


def test_a_higher_threshold_is_kept_and_an_error_restores_the_callers():
    gc.set_threshold(GC_THRESHOLD * 2, 5, 3)
    with pytest.raises(ValueError):
        with fewer_collections():
            assert gc.get_threshold() == (GC_THRESHOLD * 2, 5, 3)
            raise ValueError("inside")
    assert gc.get_threshold() == (GC_THRESHOLD * 2, 5, 3)


def test_cyclic_garbage_is_still_collected_inside():
    class Node:
        pass

    with fewer_collections(threshold=1_000):
        gc.collect()
        before = gc.get_stats()[0]["collections"]
        for _ in range(20_000):  # cycles: only the collector frees them
            a, b = Node(), Node()
            a.other, b.other = b, a
        assert gc.get_stats()[0]["collections"] > before
