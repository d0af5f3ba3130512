"""The worker's raw decoding: one batch call per run of a topic's messages, results in message order."""
from __future__ import annotations

import orjson

from detectors.events import InferenceEvent, LabelEvent
from stream.decoding import DecodeError, JsonDecoder
from stream.worker import _decode_runs


class _Fetched:
    """What ``_decode_runs`` reads of a fetched message: its topic and its value."""

    def __init__(self, topic: str, value: bytes | None) -> None:
        self._topic, self._value = topic, value

    def topic(self) -> str:
        return self._topic

    def value(self) -> bytes | None:
        return self._value


class _Counting(JsonDecoder):
    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.calls: list[int] = []

    def decode_inference_many(self, raws):
        self.calls.append(len(raws))
        return super().decode_inference_many(raws)


class _Broken(JsonDecoder):
    def decode_inference_many(self, raws):
        raise RuntimeError("decoder bug")


def _doc(i: int, **kw) -> bytes:
    return orjson.dumps({"event_id": f"e{i}", "ts": 1.0 + i, "model": "m", "model_version": "v1",
                         "features": {"x": 0.5}, "prediction": "a", **kw})


def test_each_run_of_a_topic_is_one_call_and_results_keep_the_message_order() -> None:
    a, b = _Counting(), _Counting(fields={"event_id": "/id"})
    mapped = orjson.dumps({**orjson.loads(_doc(1)), "id": "x1"})
    msgs = [_Fetched("a", _doc(0)), _Fetched("a", b"{not json"), _Fetched("b", mapped), _Fetched("a", _doc(2)),
            _Fetched("a", None), _Fetched("a", _doc(3))]
    got = _decode_runs(msgs, {"a": a, "b": b})
    assert a.calls == [2, 3] and b.calls == [1]
    assert [g.event_id if isinstance(g, InferenceEvent) else g.reason for g in got] == \
        ["e0", "malformed_json", "x1", "e2", "null_value", "e3"]


def test_a_decoder_that_fails_leaves_an_error_for_each_message_of_its_run_only() -> None:
    msgs = [_Fetched("a", _doc(0)), _Fetched("bad", _doc(1)), _Fetched("bad", _doc(2)), _Fetched("a", _doc(3)),
            _Fetched("unknown", _doc(4))]
    got = _decode_runs(msgs, {"a": JsonDecoder(), "bad": _Broken()})
    assert [type(g) for g in got] == [InferenceEvent, RuntimeError, RuntimeError, InferenceEvent, KeyError]


def test_labels_take_the_label_decoder() -> None:
    msgs = [_Fetched("l", orjson.dumps({"event_id": "e1", "ts": 2.0, "label": "a"})), _Fetched("l", b"[]")]
    got = _decode_runs(msgs, {"l": JsonDecoder()}, labels=True)
    assert isinstance(got[0], LabelEvent) and got[0].source == "unknown"
    assert isinstance(got[1], DecodeError) and got[1].reason == "not_an_object"


def test_a_failed_run_leaves_no_reference_cycle() -> None:
    """The exception standing for a failed run carries no frames (they would reach the results and
    the batch's messages again); its traceback survives as text for the log."""
    import gc

    msgs = [_Fetched("bad", _doc(1)), _Fetched("bad", _doc(2)), _Fetched("unknown", _doc(3))]
    decoders = {"bad": _Broken()}  # built before: a decoder's schema classes are cycles of their own
    gc.collect()
    gc.disable()
    try:
        got = _decode_runs(msgs, decoders)
        assert all(g.__traceback__ is None for g in got)
        assert "decode_inference_many" in "".join(got[0].__notes__)
        del got
        assert gc.collect() == 0
    finally:
        gc.enable()
