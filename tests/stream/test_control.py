"""Control messages: the core's real output matches the published JSON Schema once prepared."""
import io

import jsonschema
import numpy as np
import orjson
import pytest

from detectors.engine import ModelMonitor
from detectors.simulate import demo_model, make_events, make_labels
from detectors.spec import AlertPolicySpec, CalibrationSpec
from stream.control import SCHEMA_PATH, check, describe, encode, load_schema, prepare, read_documents
from stream.signing import SigningKey

KEY = SigningKey("k1", b"control-test-signing-key")
SPEC = demo_model(n_numeric=3, n_categorical=2, reference_size=400, label_reference_size=200)
CAL = CalibrationSpec(window=300, label_window=200, block_size=16)
AL = AlertPolicySpec(resolve_after_quiet_seconds=20, cooldown_seconds=5)


@pytest.fixture(scope="module")
def messages():
    """Prepared control documents from drift, a rogue version, a diverging canary and a quiet period."""
    evs = make_events(SPEC, 1500, seed=1)
    evs += make_events(SPEC, 1500, seed=2, start=1500, t0=15, mean_shift={"x0": 0.8},
                       class_p=np.array([0.6, 0.2, 0.15, 0.05]))
    evs += make_events(SPEC, 20, seed=3, start=3000, t0=30, version="vX")
    # the canary starts once stable's drift alerts resolved, so its divergence is on the canary alone
    evs += make_events(SPEC, 800, seed=4, start=3020, t0=55, version="v2", deployment="canary",
                       class_p=np.array([0.3, 0.3, 0.3, 0.1]))
    evs += make_events(SPEC, 800, seed=5, start=3820, t0=80)
    labs = make_labels(evs[:3000], seed=6, error_rate=0.05)
    mon = ModelMonitor(SPEC, CAL, AL)
    out = mon.process_inference(evs) + mon.process_labels(labs)
    return [orjson.loads(encode(prepare(m, KEY))) for m in out]


@pytest.fixture(scope="module")
def validator():
    schema = load_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_schema_file_is_packaged_beside_the_module():
    assert SCHEMA_PATH.name == "control-v1.schema.json" and SCHEMA_PATH.is_file()


def test_every_kind_of_core_message_matches_the_schema(messages, validator):
    assert {m["kind"] for m in messages} == {"alert", "rollback", "resolve"}
    for m in messages:
        errors = sorted(validator.iter_errors(m), key=str)
        assert not errors, (m["kind"], [e.message for e in errors][:3])


def test_rollbacks_are_signed_and_others_are_not(messages):
    for m in messages:
        assert ("signature" in m) == (m["kind"] == "rollback")
        assert check(m, KEY).ok, check(m, KEY).reason


def test_schema_rejects_unsigned_rollback_and_unknown_fields(messages, validator):
    rollback = next(m for m in messages if m["kind"] == "rollback")
    unsigned = {k: v for k, v in rollback.items() if k != "signature"}
    assert not validator.is_valid(unsigned)
    alert = next(m for m in messages if m["kind"] == "alert")
    assert not validator.is_valid(dict(alert, surprise=1))
    assert not validator.is_valid(dict(alert, severity="urgent"))
    assert not validator.is_valid(dict(alert, kind="rollback"))
    assert not validator.is_valid(dict(alert, schema="driftline.control/v2"))


def test_schema_matches_core_fields_exactly(messages, validator):
    schema = load_schema()
    for m in messages:
        props = schema["$defs"][m["kind"]]["properties"]
        assert set(m) == set(props), (m["kind"], set(m) ^ set(props))


def test_tampered_rollback_fails_check(messages):
    rollback = next(m for m in messages if m["kind"] == "rollback")
    result = check(dict(rollback, canary_version=rollback["stable_version"]), KEY)
    assert not result.ok and result.reason == "bad signature"


def test_check_without_key_and_bad_kinds(messages):
    rollback = next(m for m in messages if m["kind"] == "rollback")
    assert "no signing key" in check(rollback, None).reason
    assert check({"schema": "driftline.control/v1", "kind": "reboot"}, KEY).reason == "unknown kind 'reboot'"
    assert check({"kind": "alert"}, KEY).reason.startswith("wrong schema")


def test_read_documents_accepts_lines_arrays_and_objects(messages):
    lines = b"\n".join(orjson.dumps(m) for m in messages[:3]) + b"\n\n{broken\n"
    items = list(read_documents(io.BytesIO(lines), "f"))
    assert [i.where for i in items] == ["f:1", "f:2", "f:3", "f:5"]
    assert items[-1].error.startswith("malformed JSON")
    arr = list(read_documents(io.BytesIO(orjson.dumps(messages[:2])), "a"))
    assert [i.doc for i in arr] == messages[:2]
    one = list(read_documents(io.BytesIO(orjson.dumps(messages[0], option=orjson.OPT_INDENT_2)), "o"))
    assert len(one) == 1 and one[0].doc == messages[0]


def test_describe_each_kind(messages):
    text = {m["kind"]: describe(m) for m in messages}
    assert text["alert"].startswith("ALERT") and text["rollback"].startswith("ROLLBACK")
    assert text["resolve"].startswith("RESOLVE")
