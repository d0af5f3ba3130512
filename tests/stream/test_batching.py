"""Micro-batches bounded by count and payload bytes (stream.batching.gather)."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from stream.batching import DetectionHold, gather, model_runs, payload_bytes


class Msg:
    """A fetched message as confluent-kafka shows it: key() and value()."""

    def __init__(self, size: int) -> None:
        self._value = b"x" * size

    def key(self) -> bytes | None:
        return None

    def value(self) -> bytes | None:
        return self._value


class Queue:
    """Messages waiting in the client; ``consume(n, timeout)`` hands out at most n of them."""

    def __init__(self, sizes: list[int]) -> None:
        self.waiting = [Msg(s) for s in sizes]
        self.asked: list[int] = []

    def consume(self, n: int, timeout: float) -> list[Msg]:
        assert n >= 1
        self.asked.append(n)
        out, self.waiting = self.waiting[:n], self.waiting[n:]
        return out


def test_oversized_messages_stop_the_batch_at_the_byte_budget():
    q = Queue([300_000] * 5000)  # a flood of messages beyond the 256 KiB limit
    msgs, full = gather(q.consume, 5000, 16 * 2**20, 256 * 1024, 0.0)
    held = sum(payload_bytes(m) for m in msgs)
    assert full
    assert held >= 16 * 2**20 and held <= 16 * 2**20 + 64 * 300_000
    assert len(msgs) < 70  # not 5,000 messages (1.5 GB) in one batch


def test_small_messages_fill_the_count():
    q = Queue([600] * 12_000)
    msgs, full = gather(q.consume, 5000, 16 * 2**20, 256 * 1024, 0.0)
    assert len(msgs) == 5000 and len(q.waiting) == 7000 and full


def test_an_idle_queue_returns_what_there_is():
    q = Queue([600] * 10)
    msgs, full = gather(q.consume, 5000, 16 * 2**20, 256 * 1024, 0.01)
    assert len(msgs) == 10 and not q.waiting and not full


@given(sizes=st.lists(st.integers(0, 600_000), max_size=400), batch=st.integers(1, 500),
       budget=st.integers(64 * 1024, 8 * 2**20), unit=st.integers(1024, 512 * 1024))
def test_the_budget_is_overshot_by_at_most_one_chunk(sizes, batch, budget, unit):
    q = Queue(sizes)
    msgs, full = gather(q.consume, batch, budget, unit, 0.0)
    assert full == (len(msgs) == batch or sum(payload_bytes(m) for m in msgs) >= budget)
    assert len(msgs) <= batch and [payload_bytes(m) for m in msgs] == sizes[:len(msgs)]
    held_before_last = sum(sizes[:len(msgs) - q.asked[-1]]) if len(msgs) >= q.asked[-1] else 0
    assert held_before_last < budget or len(q.asked) == 1
    # every chunk asked for fits the budget left at the largest accepted size (or is one message)
    held = 0
    taken = 0
    for n in q.asked:
        assert n == 1 or n * unit <= budget - held
        got = sizes[taken:taken + n]
        taken += len(got)
        held += sum(got)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abc"), st.sampled_from("il"), st.integers(0, 3)), max_size=30))
def test_model_runs_keep_each_models_order_in_fewest_runs(shape):
    """Per model, the runs hold its items in record order, alternate kinds (fewest runs), and carry
    each item's source beside it; models come in order of first appearance."""
    records, counter = [], iter(range(10_000))
    for model, kind, size in shape:
        items = [next(counter) for _ in range(size)]
        records.append((model, kind, items, [f"src{i}" for i in items]))
    runs = model_runs(records)
    assert [m for m, *_ in runs] == sorted((m for m, *_ in runs), key=[r[0] for r in records].index)
    for model in {r[0] for r in records}:
        mine = [r for r in runs if r[0] == model]
        want = [(k, i) for m, k, items, _ in records if m == model for i in items]
        assert [(k, i) for _, k, items, _ in mine for i in items] == want
        assert all(a[1] != b[1] for a, b in zip(mine, mine[1:]))
        assert all(src == [f"src{i}" for i in items] for _, _, items, src in mine)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.dictionaries(st.integers(0, 3), st.integers(0, 4), max_size=4), st.booleans(),
                          st.floats(0.0, 0.2)), max_size=40),
       st.sampled_from([0.0, 0.05, 0.25]), st.sampled_from([0.0, 0.1]), st.integers(1, 60), st.sampled_from([1, 2]))
def test_held_records_come_out_once_in_order_and_on_time(steps, seconds, caught_up, max_bytes, long_bytes):
    """Each partition's records come out once, in order; not before their oldest waited ``seconds``
    under a backlog, ``caught_up`` without one (unless the byte cap is reached or its records are
    long; a wait of 0 releases at once); a last short batch that late releases everything."""
    hold = DetectionHold(seconds, max_bytes, size=lambda r: r[2], long_record_bytes=long_bytes,
                         caught_up_seconds=caught_up)
    counter = iter(range(100_000))
    now, fed, out, since = 100.0, {}, {}, {}
    for records, backlog, dt in steps:
        now += dt
        batch = {p: [(p, next(counter), 1) for _ in range(n)] for p, n in records.items()}
        for p, recs in batch.items():
            fed.setdefault(p, []).extend(recs)
            if recs:
                since.setdefault(p, now)
        waiting = sum(len(fed[p]) - len(out.get(p, [])) for p in fed)
        due = hold.take(batch, backlog, now)
        for p, recs in due.items():
            out.setdefault(p, []).extend(recs)
        wait = seconds if backlog else caught_up
        if wait == 0 or waiting >= max_bytes:
            assert not hold and set(due) == set(since)
        else:
            assert set(due) == {p for p, t in since.items() if now - t >= wait or long_bytes == 1}
        assert hold.partitions == set(since) - set(due)
        assert hold.records == sum(len(fed[p]) - len(out.get(p, [])) for p in fed)
        for p in due:
            del since[p]
    out_last = hold.take({}, backlog=False, now=now + 2 * caught_up)
    for p, recs in out_last.items():
        out.setdefault(p, []).extend(recs)
    assert not hold
    assert out == {p: recs for p, recs in fed.items() if recs}


def test_a_worker_that_keeps_up_holds_short_records_for_the_caught_up_wait_only():
    """Without a backlog, short records wait ``caught_up_seconds`` (not the backlog's ``seconds``)
    and long ones not at all; with ``caught_up_seconds`` 0 every batch is detected as it comes."""
    hold = DetectionHold(10.0, 1 << 30, size=len, long_record_bytes=1000, caught_up_seconds=0.1)
    assert hold.take({0: [b"a" * 1500], 1: [b"b" * 10]}, backlog=False, now=0.0) == {0: [b"a" * 1500]}
    assert hold.take({1: [b"c" * 10]}, backlog=False, now=0.05) == {}
    assert hold.take({}, backlog=False, now=0.1) == {1: [b"b" * 10, b"c" * 10]}
    assert not hold
    at_once = DetectionHold(10.0, 1 << 30, size=len, long_record_bytes=1000)
    assert at_once.take({1: [b"b" * 10]}, backlog=False, now=0.0) == {1: [b"b" * 10]}


def test_a_cleared_hold_forgets_its_records():
    hold = DetectionHold(10.0, 1 << 20, size=len)
    assert hold.take({2: [b"abc"]}, backlog=True, now=0.0) == {}
    assert hold.partitions == {2}
    hold.clear()
    assert not hold and hold.take({}, backlog=False, now=1.0) == {}


def test_the_byte_cap_releases_every_partition():
    hold = DetectionHold(10.0, 8, size=len)
    assert hold.take({0: [b"aaaa"]}, backlog=True, now=0.0) == {}
    assert hold.take({1: [b"bbbb"]}, backlog=True, now=0.1) == {0: [b"aaaa"], 1: [b"bbbb"]}
    assert not hold


def test_long_records_are_detected_without_waiting():
    """A partition of long records (one model's whole batch) is not held; short ones are."""
    hold = DetectionHold(10.0, 1 << 30, size=len, long_record_bytes=1000)
    assert hold.take({0: [b"a" * 1500], 1: [b"b" * 10]}, backlog=True, now=0.0) == {0: [b"a" * 1500]}
    assert hold.partitions == {1}
