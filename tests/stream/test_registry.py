"""Registry events: signatures, keys, the deploy-step CLI, digests on events, and replay with a registry log."""
from __future__ import annotations

import json
import os
import stat

import orjson
import pytest
import yaml

from detectors.events import InferenceEvent
from loadtest.drills import make_drill, write_drill
from stream.cli import main as cli
from stream.config import ConfigError, parse_config
from stream.decoding import DecodeError, JsonDecoder
from stream.records import decode_record, encode_inference, encode_registry
from stream.registry import (RegistryError, canonical_bytes, generate_key, load_private_key, load_public_key,
                             parse_event, sign_event, verify_event, write_keypair)
from stream.replay import load_replay_config, run_replay

DIG = "sha256:" + "ab" * 32


@pytest.fixture(scope="module")
def key():
    return generate_key()


@pytest.fixture(scope="module")
def keys(key):
    return {"deploy": key.public_key()}


def signed(key, **kw):
    args = dict(key_id="deploy", model="m", version="v7", digest=DIG, stage="canary", issued_at=1_000, sequence=5)
    args.update(kw)
    return sign_event(key, **args)


def reason(doc, keys, **kw) -> str:
    with pytest.raises(RegistryError) as err:
        verify_event(doc, keys, **kw)
    return err.value.reason


def test_a_signed_event_verifies_into_its_entry(key, keys) -> None:
    e = verify_event(signed(key), keys, now=2_000)
    assert (e.model, e.version, e.digest, e.stage, e.issued_at, e.sequence, e.key_id) == \
        ("m", "v7", DIG, "canary", 1_000, 5, "deploy")
    assert b" " not in canonical_bytes(signed(key)) and b"signature" not in canonical_bytes(signed(key))


@pytest.mark.parametrize("field,value", [("version", "v8"), ("stage", "production"), ("digest", "sha256:" + "cd" * 32),
                                         ("sequence", 6), ("model", "n"), ("issued_at", 999), ("key_id", "other")])
def test_any_tampered_field_breaks_the_signature(key, field, value) -> None:
    keys = {"deploy": key.public_key(), "other": key.public_key()}
    assert reason(dict(signed(key), **{field: value}), keys) == "registry_bad_signature"


def test_forged_unknown_unsigned_and_malformed_events_are_refused(key, keys) -> None:
    forger = generate_key()
    assert reason(signed(forger), keys) == "registry_bad_signature", "a key the workers do not hold, same key id"
    assert reason(signed(key, key_id="nobody"), keys) == "registry_unknown_key"
    doc = signed(key)
    assert reason({k: v for k, v in doc.items() if k != "signature"}, keys) == "registry_unsigned"
    assert reason(dict(doc, signature=""), keys) == "registry_unsigned"
    assert reason(dict(doc, signature="00" * 63), keys) == "registry_bad_signature"
    assert reason(dict(doc, extra=1), keys) == "registry_malformed"
    assert reason(dict(doc, schema="driftline.control/v1"), keys) == "registry_malformed"
    assert reason(dict(doc, issued_at=1000.0), keys) == "registry_malformed", "floats have no single encoding"
    assert reason([doc], keys) == "registry_malformed"
    with pytest.raises(ValueError):
        signed(key, digest="sha256:xyz")
    with pytest.raises(RegistryError):
        signed(key, stage="retired")
    for raw in (b"{", b"[1]", None, b"x" * 5000):
        with pytest.raises(RegistryError) as err:
            parse_event(raw)
        assert err.value.reason == "registry_malformed"


def test_events_issued_in_the_future_are_refused(key, keys) -> None:
    doc = signed(key, issued_at=10_000)
    assert reason(doc, keys, now=9_000, max_future=300) == "registry_future"
    assert verify_event(doc, keys, now=9_800, max_future=300).issued_at == 10_000


def test_keygen_writes_a_private_key_only_its_owner_reads(tmp_path, capsys) -> None:
    assert cli(["registry", "keygen", "--key-id", "deploy-1", "--out-dir", str(tmp_path)]) == 0
    private, public = tmp_path / "deploy-1.key", tmp_path / "deploy-1.pub"
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o600
    assert "deploy-1:" in capsys.readouterr().out
    assert cli(["registry", "keygen", "--key-id", "deploy-1", "--out-dir", str(tmp_path)]) == 2, "never overwrites"
    with pytest.raises(ValueError, match="private key"):
        load_public_key(private)
    assert cli(["registry", "publish", "--key-file", str(private), "--model", "m", "--version", "v1",
                "--digest", "AB" * 32, "--stage", "production", "--sequence", "3", "--print"]) == 0
    doc = json.loads(capsys.readouterr().out)
    entry = verify_event(doc, {"deploy-1": load_public_key(public)})
    assert entry.digest == DIG and entry.sequence == 3 and entry.key_id == "deploy-1"
    assert cli(["registry", "publish", "--key-file", str(public), "--model", "m", "--version", "v1",
                "--digest", DIG, "--stage", "canary", "--print"]) == 2, "a public key cannot sign"
    assert cli(["registry", "publish", "--key-file", str(private), "--model", "m", "--version", "v1",
                "--digest", DIG, "--stage", "canary"]) == 2, "producing needs a configuration"


def test_write_keypair_refuses_to_overwrite(tmp_path, key) -> None:
    write_keypair(key, tmp_path / "a.key", tmp_path / "a.pub")
    with pytest.raises(FileExistsError):
        write_keypair(key, tmp_path / "a.key", tmp_path / "b.pub")
    assert load_private_key(tmp_path / "a.key").public_key() == load_public_key(tmp_path / "a.pub")


# -- digests on events --------------------------------------------------------------------------------------
def _event(**kw) -> bytes:
    doc = {"event_id": "e1", "ts": 5.0, "model": "m", "model_version": "v1", "features": {"x": 1.0},
           "prediction": "a"}
    doc.update(kw)
    return orjson.dumps(doc)


def test_artifact_digest_is_decoded_normalized_and_carried_on_the_internal_record() -> None:
    dec = JsonDecoder(max_future_seconds=None)
    assert dec.decode_inference(_event()).artifact_digest is None
    assert dec.decode_inference(_event(artifact_digest=DIG)).artifact_digest == DIG, "fast path"
    assert dec.decode_inference(_event(artifact_digest="AB" * 32)).artifact_digest == DIG, "bare, upper-case hex"
    for bad, why in (("sha256:123", "bad_value:artifact_digest"), (7, "wrong_type:artifact_digest")):
        with pytest.raises(DecodeError) as err:
            dec.decode_inference(_event(artifact_digest=bad))
        assert err.value.reason == why
    mapped = JsonDecoder({"artifact_digest": "/meta/artifact"}, max_future_seconds=None)
    assert mapped.decode_inference(_event(meta={"artifact": DIG})).artifact_digest == DIG
    header = JsonDecoder({"artifact_digest": "header:x-artifact"}, max_future_seconds=None)
    assert header.digest_header == "x-artifact" and header.decode_inference(_event(artifact_digest=DIG)) \
        .artifact_digest is None, "mapped to a header, the body's field is not read"
    e = InferenceEvent("e1", 5.0, "m", "v1", "stable", {"x": 1.0}, "a", position=3, artifact_digest=DIG)
    assert decode_record(encode_inference(e)).inference == e
    e.artifact_digest = None
    assert b'"ad"' not in encode_inference(e) and decode_record(encode_inference(e)).inference == e
    rec = decode_record(encode_registry("m", 9, {"a": 1}))
    assert rec.registry == {"a": 1} and rec.inference is None and rec.label is None


def _config(**registry) -> dict:
    doc = {"kafka": {"bootstrap_servers": "127.0.0.1:1", "inference_topics": [{"name": "p"}]},
           "signing": {"key_env": "K"}, "monitor": {"models": [{"name": "m", "classes": ["a"], "versions": ["v1"]}]}}
    doc.update(registry)
    return doc


def test_registry_configuration() -> None:
    cfg = parse_config(_config(kafka=dict(_config()["kafka"], registry_topic="reg"),
                               registry={"public_keys": {"deploy": "/k.pub"}}))
    assert cfg.kafka.registry_topic == "reg" and cfg.registry.max_age_seconds == 30 * 86_400
    with pytest.raises(ConfigError, match="go together"):
        parse_config(_config(kafka=dict(_config()["kafka"], registry_topic="reg")))
    with pytest.raises(ConfigError, match="must differ"):
        parse_config(_config(kafka=dict(_config()["kafka"], registry_topic="driftline.control"),
                             registry={"public_keys": {"deploy": "/k.pub"}}))
    with pytest.raises(ConfigError, match="header"):
        parse_config(_config(kafka=dict(_config()["kafka"], inference_topics=[
            {"name": "p", "field_mapping": {"model": "header:x-model"}}])))


# -- replay with a registry log -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def swap_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("swap")
    drill = make_drill("registry_swap", n_events=8000, injection=6000, seed=2)
    paths = write_drill(drill, out)
    return drill, paths


def _alerts(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_replay_with_a_registry_log_is_exact_at_any_batch_size(swap_dir, tmp_path) -> None:
    drill, paths = swap_dir
    cfg = load_replay_config(paths["config"])
    reports = []
    for batch in (61, 8192):
        out = tmp_path / f"alerts-{batch}.jsonl"
        reports.append(run_replay(cfg, paths["inference"], paths["labels"], out, batch_size=batch,
                                  registry_path=paths["registry"]))
        assert _alerts(out) == _alerts(tmp_path / "alerts-61.jsonl")
    alerts = _alerts(tmp_path / "alerts-61.jsonl")
    assert [(a["kind"], a.get("detector")) for a in alerts if a["kind"] != "resolve"] == [
        ("alert", "digest_mismatch"), ("rollback", None)]
    assert alerts[0]["event_id"] == drill.meta["swap_event_id"]
    assert alerts[0]["replay"]["stream"] == "inference"
    assert reports[0].registry_accepted == 3 and reports[0].to_dict()["registry_lines"] == 3


def test_replay_counts_forged_tampered_and_replayed_registry_lines(swap_dir, tmp_path, capsys) -> None:
    drill, paths = swap_dir
    lines = [json.loads(x) for x in drill.registry]
    forged = sign_event(generate_key(), "drill", "content-filter", "v2", DIG, "canary", issued_at=lines[1]["issued_at"],
                        sequence=99)
    tampered = dict(lines[1], digest=drill.meta["swapped_digest"])  # "legitimize" the swapped artifact
    archive = dict(lines[2], stage="archived")  # unsigned change
    reg = tmp_path / "registry.jsonl"
    reg.write_text("\n".join(json.dumps(d) for d in lines + [forged, tampered, archive, lines[1]]) + "\nnot json\n")
    out = tmp_path / "alerts.jsonl"
    report = tmp_path / "report.json"
    code = cli(["replay", "--config", str(paths["config"]), "--inference", str(paths["inference"]),
                "--registry", str(reg), "--alerts", str(out), "--report", str(report), "--quiet"])
    assert code == 0
    rep = json.loads(report.read_text())
    assert rep["rejected"]["registry"] == {"registry_bad_signature": 3, "registry_replayed": 1,
                                           "registry_malformed": 1}
    assert rep["registry_accepted"] == 3
    assert _alerts(out)[0]["event_id"] == drill.meta["swap_event_id"], "the manifest did not change"
    no_keys = tmp_path / "plain.yaml"
    doc = yaml.safe_load(paths["config"].read_text())
    del doc["registry"], doc["kafka"]["registry_topic"]
    no_keys.write_text(yaml.safe_dump(doc))
    assert cli(["replay", "--config", str(no_keys), "--inference", str(paths["inference"]), "--registry", str(reg),
                "--alerts", str(out), "--quiet"]) == 2
    assert "registry section" in capsys.readouterr().err


def test_cli_refuses_missing_keys_and_registryless_configs(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("K", "x" * 32)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(_config(kafka=dict(_config()["kafka"], registry_topic="reg"),
                                          registry={"public_keys": {"deploy": "missing.pub"}})))
    assert cli(["check-config", "--config", str(cfg)]) == 2
    assert "registry.public_keys.deploy: cannot read" in capsys.readouterr().err
    assert cli(["run", "--config", str(cfg)]) == 2, "a worker without its registry keys does not start"
    plain = tmp_path / "p.yaml"
    plain.write_text(yaml.safe_dump(_config()))
    assert cli(["registry", "show", "--config", str(plain)]) == 2
    assert "static `versions:`" in capsys.readouterr().err


def test_registry_outcomes_are_counted() -> None:
    from stream.metrics import WorkerMetrics

    m = WorkerMetrics()
    m.registry_event("m", "accepted")
    m.registry_event("m", "registry_bad_signature")
    m.registry_event("m", "registry_bad_signature")
    assert m.value("driftline_registry_events_total", model="m", outcome="registry_bad_signature") == 2
    assert m.value("driftline_registry_events_total", model="m", outcome="accepted") == 1
