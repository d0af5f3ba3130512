"""The driftline command: argument parsing, check-config exit codes, control verify, profile."""
import json
import subprocess
import sys

import pytest
import yaml

from stream import cli
from stream.signing import SigningKey, sign

KEY = "cli-test-signing-key-0123456789"
CONFIG = {
    "kafka": {"bootstrap_servers": "127.0.0.1:9092", "inference_topics": [{"name": "preds"}]},
    "signing": {"key_env": "DL_CLI_KEY"},
    "monitor": {"models": [{"name": "filter", "classes": ["safe", "nsfw"], "versions": ["v1", "v2"],
                            "stable_version": "v1", "reference_size": 100,
                            "features": [{"name": "x", "type": "numeric"}, {"name": "c", "type": "categorical"}]}]},
}
ROLLBACK = {"schema": "driftline.control/v1", "kind": "rollback", "id": "a" * 32, "idempotency_key": "b" * 32,
            "model": "filter", "canary_version": "v2", "stable_version": "v1", "reason": "canary diverges",
            "evidence": ["c" * 32], "details": {}, "event_id": "e1", "position": 1, "ts": 1.0}


@pytest.fixture
def env(monkeypatch):
    monkeypatch.setenv("DL_CLI_KEY", KEY)


@pytest.fixture
def config_file(tmp_path):
    p = tmp_path / "driftline.yaml"
    p.write_text(yaml.safe_dump(CONFIG))
    return p


def signed(issued_at=None, key_id="default", secret=KEY, **kw):
    return sign(dict(ROLLBACK, **kw), SigningKey(key_id, secret.encode()), issued_at=issued_at)


def test_parser_accepts_documented_commands():
    p = cli.build_parser()
    a = p.parse_args(["run", "--config", "c.yaml", "--worker-id", "w1"])
    assert (a.func, a.config, a.worker_id) == (cli.cmd_run, "c.yaml", "w1")
    a = p.parse_args(["control", "tail", "--config", "c.yaml", "--from-beginning", "--max", "5"])
    assert (a.func, a.from_beginning, a.max) == (cli.cmd_control_tail, True, 5)
    a = p.parse_args(["control", "verify", "--key-env", "K", "a.json", "-"])
    assert (a.func, a.files, a.key_env) == (cli.cmd_control_verify, ["a.json", "-"], ["K"])
    a = p.parse_args(["state", "show", "--config", "c.yaml", "--model", "m"])
    assert (a.func, a.model) == (cli.cmd_state_show, "m")
    a = p.parse_args(["check-config", "--config", "c.yaml"])
    assert a.func is cli.cmd_check_config
    a = p.parse_args(["control", "verify", "--key-env", "new=K", "--key-file", "old=f", "--key-env", "K2"])
    assert (a.key_env, a.key_file) == (["new=K", "K2"], ["old=f"])
    a = p.parse_args(["control", "tail", "--config", "c.yaml", "--key-file", "a=f", "--max-age", "60"])
    assert (a.key_file, a.max_age, a.any_age) == (["a=f"], 60.0, False)
    with pytest.raises(SystemExit):
        p.parse_args(["control", "verify", "--key-encoding", "rot13"])
    with pytest.raises(SystemExit):
        p.parse_args(["run"])


def test_check_config_ok(config_file, env, capsys):
    assert cli.main(["check-config", "--config", str(config_file)]) == 0
    assert "OK (1 model(s)" in capsys.readouterr().out


def test_check_config_names_the_bad_key(tmp_path, env, capsys):
    bad = json.loads(json.dumps(CONFIG))
    bad["monitor"]["models"][0]["features"][1]["type"] = "text"
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(bad))
    assert cli.main(["check-config", "--config", str(p)]) == 2
    assert "monitor.models[0].features[1].type: Input should be 'numeric' or 'categorical'" in capsys.readouterr().err


def test_check_config_reports_missing_secret(config_file, monkeypatch, capsys):
    monkeypatch.delenv("DL_CLI_KEY", raising=False)
    assert cli.main(["check-config", "--config", str(config_file)]) == 2
    assert "signing.key_env: environment variable DL_CLI_KEY is not set" in capsys.readouterr().err
    assert cli.main(["check-config", "--config", str(config_file), "--no-secrets"]) == 0


def test_check_config_missing_file(tmp_path, capsys):
    assert cli.main(["check-config", "--config", str(tmp_path / "none.yaml")]) == 2
    assert "cannot read" in capsys.readouterr().err


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("command", ["run", "faust-worker"])
def test_worker_configuration_error_is_one_line_and_exit_2(config_file, command):
    env = {"PATH": "/usr/bin:/bin"}  # DL_CLI_KEY, the signing key's variable, is not set
    res = subprocess.run([sys.executable, "-m", "stream.cli", command, "--config", str(config_file)],
                         capture_output=True, text=True, env=env, timeout=60)
    assert res.returncode == 2
    assert "signing.key_env: environment variable DL_CLI_KEY is not set" in _one_line(res.stderr)


@pytest.mark.parametrize("argv", [
    ["run"], ["faust-worker"], ["check-config"], ["control", "tail"], ["state", "show", "--model", "filter"],
    ["profile", "--model", "filter", "--inference", "-", "--out", "-"], ["demo"],
])
def test_invalid_file_is_one_line_naming_the_key(tmp_path, env, capsys, argv):
    bad = json.loads(json.dumps(CONFIG))
    bad["kafka"]["batch_size"] = 0
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(bad))
    assert cli.main(argv + ["--config", str(p)]) == 2
    assert f"{p}: kafka.batch_size: Input should be greater than or equal to 1" in _one_line(capsys.readouterr().err)


def test_missing_secret_at_state_show_is_one_line(tmp_path, env, capsys):
    cfg = json.loads(json.dumps(CONFIG))
    cfg["redis"] = {"username": "svc", "password_env": "DL_CLI_REDIS_PW"}
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(cfg))
    assert cli.main(["state", "show", "--config", str(p), "--model", "filter"]) == 2
    assert "redis.password_env: environment variable DL_CLI_REDIS_PW is not set" in _one_line(capsys.readouterr().err)


def test_check_config_reads_certificate_files(tmp_path, env, capsys):
    cfg = json.loads(json.dumps(CONFIG))
    cfg["kafka"]["security"] = {"protocol": "SSL", "ssl_ca_location": str(tmp_path / "missing-ca.pem")}
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(cfg))
    assert cli.main(["check-config", "--config", str(p)]) == 2
    assert f"kafka.security.ssl_ca_location: cannot read {tmp_path / 'missing-ca.pem'}" in _one_line(
        capsys.readouterr().err)


def test_control_verify_good_and_tampered(tmp_path, env, capsys):
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps(signed()) + "\n" + json.dumps({"schema": "driftline.control/v1", "kind": "resolve"})
                    + "\n")
    assert cli.main(["control", "verify", "--key-env", "DL_CLI_KEY", str(good)]) == 0
    assert "signature verified" in capsys.readouterr().out
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(dict(signed(), canary_version="v1")))
    assert cli.main(["control", "verify", "--key-env", "DL_CLI_KEY", str(bad)]) == 1
    assert "bad signature" in capsys.readouterr().out


def test_control_verify_reasons_and_key_sources(tmp_path, config_file, env, capsys):
    unsigned = tmp_path / "unsigned.json"
    unsigned.write_text(json.dumps(ROLLBACK))
    assert cli.main(["control", "verify", "--config", str(config_file), str(unsigned)]) == 1
    assert "missing signature" in capsys.readouterr().out
    other_id = tmp_path / "other.json"
    other_id.write_text(json.dumps(sign(ROLLBACK, SigningKey("k2", KEY.encode()))))
    assert cli.main(["control", "verify", "--key-env", "DL_CLI_KEY", str(other_id)]) == 1
    assert "unknown key id 'k2'" in capsys.readouterr().out
    assert cli.main(["control", "verify", "--key-env", "DL_CLI_KEY", "--key-id", "k2", str(other_id)]) == 0
    keyfile = tmp_path / "key"
    keyfile.write_text(KEY + "\n")
    good = tmp_path / "good.json"
    good.write_text(json.dumps([signed(), signed(id="d" * 32)]))
    assert cli.main(["control", "verify", "--key-file", str(keyfile), str(good)]) == 0


def test_control_verify_needs_a_key_and_input(tmp_path, env, capsys):
    f = tmp_path / "m.json"
    f.write_text(json.dumps(signed()))
    assert cli.main(["control", "verify", str(f)]) == 2
    assert "--key-env" in capsys.readouterr().err
    empty = tmp_path / "empty.json"
    empty.write_text("")
    assert cli.main(["control", "verify", "--key-env", "DL_CLI_KEY", str(empty)]) == 1
    assert "no control messages" in capsys.readouterr().err


def test_control_verify_from_stdin_as_a_subprocess(tmp_path):
    env = {"DL_CLI_KEY": KEY, "PATH": "/usr/bin:/bin"}
    cmd = [sys.executable, "-m", "stream.cli", "control", "verify", "--key-env", "DL_CLI_KEY", "-"]
    ok = subprocess.run(cmd, input=json.dumps(signed()), capture_output=True, text=True, env=env)
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run(cmd, input=json.dumps(dict(signed(), reason="benign")), capture_output=True, text=True,
                         env=env)
    assert bad.returncode == 1 and "bad signature" in bad.stdout


def test_profile_builds_a_loadable_reference(tmp_path, config_file, capsys):
    from detectors.profile import ReferenceProfile
    from stream.config import load_config

    lines = []
    for i in range(150):
        lines.append(json.dumps({"event_id": f"e{i}", "ts": i, "model": "filter", "model_version": "v1",
                                 "features": {"x": i % 17 / 3, "c": "abc"[i % 3]}, "prediction": "safe",
                                 "confidence": 0.9}))
    lines.append("{broken")
    log = tmp_path / "log.jsonl"
    log.write_text("\n".join(lines) + "\n")
    out = tmp_path / "ref.json"
    assert cli.main(["profile", "--config", str(config_file), "--model", "filter", "--inference", str(log),
                     "--out", str(out)]) == 0
    spec = load_config(config_file).monitor.models[0]
    profile = ReferenceProfile.from_dict(spec, json.loads(out.read_text()))
    assert profile.n == 100
    assert "from 100 event(s)" in capsys.readouterr().err
    assert cli.main(["profile", "--config", str(config_file), "--model", "filter", "--inference", str(log),
                     "--out", str(out), "--version", "v9"]) == 1
    assert cli.main(["profile", "--config", str(config_file), "--model", "nope", "--inference", str(log),
                     "--out", str(out)]) == 2


def test_state_show_unknown_model(config_file, capsys):
    assert cli.main(["state", "show", "--config", str(config_file), "--model", "nope"]) == 2
    assert "not in the configuration" in capsys.readouterr().err


def test_delegated_commands_parse_with_their_module(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["replay", "--help"])
    assert exc.value.code == 0
    assert "--inference" in capsys.readouterr().out


def test_control_verify_refuses_expired_and_future_commands(tmp_path, env, capsys):
    import time

    now = int(time.time())
    f = tmp_path / "old.jsonl"
    f.write_text(json.dumps(signed(issued_at=now - 400)) + "\n")
    assert cli.main(["control", "verify", "--key-env", "DL_CLI_KEY", str(f)]) == 1
    assert "expired: issued 4" in capsys.readouterr().out
    assert cli.main(["control", "verify", "--key-env", "DL_CLI_KEY", "--max-age", "600", str(f)]) == 0
    assert "signature verified, fresh" in capsys.readouterr().out
    assert cli.main(["control", "verify", "--key-env", "DL_CLI_KEY", "--any-age", str(f)]) == 0
    f.write_text(json.dumps(signed(issued_at=now + 120)) + "\n")
    assert cli.main(["control", "verify", "--key-env", "DL_CLI_KEY", str(f)]) == 1
    assert "issued in the future" in capsys.readouterr().out
    assert cli.main(["control", "verify", "--key-env", "DL_CLI_KEY", "--max-skew", "300", str(f)]) == 0


def test_control_verify_with_several_keys_during_a_rotation(tmp_path, monkeypatch, capsys):
    old_key, new_key = "the-old-rotation-key-0123456", "the-new-rotation-key-6543210"
    monkeypatch.setenv("DL_NEW_KEY", new_key)
    old_file = tmp_path / "old.key"
    old_file.write_text(old_key + "\n")
    msgs = tmp_path / "m.jsonl"
    msgs.write_text(json.dumps(signed(key_id="old", secret=old_key)) + "\n"
                    + json.dumps(signed(key_id="new", secret=new_key, id="d" * 32)) + "\n")
    both = ["control", "verify", "--key-file", f"old={old_file}", "--key-env", "new=DL_NEW_KEY"]
    assert cli.main(both + [str(msgs)]) == 0
    assert capsys.readouterr().out.count("signature verified") == 2
    assert cli.main(["control", "verify", "--key-env", "new=DL_NEW_KEY", str(msgs)]) == 1
    assert "unknown key id 'old'" in capsys.readouterr().out
    stranger = tmp_path / "s.json"
    stranger.write_text(json.dumps(signed(key_id="other", secret=new_key)))
    assert cli.main(both + [str(stranger)]) == 1
    assert "unknown key id 'other'" in capsys.readouterr().out
    assert cli.main(["control", "verify", "--key-env", "new=DL_NEW_KEY", "--key-file", f"new={old_file}",
                     str(msgs)]) == 2
    assert "given twice" in capsys.readouterr().err


def test_control_verify_takes_rotation_keys_and_window_from_the_config(tmp_path, monkeypatch, capsys):
    import time

    monkeypatch.setenv("DL_CLI_KEY", "the-new-rotation-key-6543210")
    old_file = tmp_path / "old.key"
    old_file.write_text("the-old-rotation-key-0123456\n")
    cfg = json.loads(json.dumps(CONFIG))
    cfg["signing"] = {"key_env": "DL_CLI_KEY", "key_id": "new", "max_age_seconds": 60,
                      "verification_keys": [{"key_id": "old", "key_file": str(old_file)}]}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    msgs = tmp_path / "m.jsonl"
    now = int(time.time())
    msgs.write_text(json.dumps(signed(key_id="old", secret="the-old-rotation-key-0123456", issued_at=now - 30)) + "\n"
                    + json.dumps(signed(key_id="new", secret="the-new-rotation-key-6543210", issued_at=now)) + "\n")
    assert cli.main(["control", "verify", "--config", str(path), str(msgs)]) == 0
    msgs.write_text(json.dumps(signed(key_id="old", secret="the-old-rotation-key-0123456", issued_at=now - 90)))
    assert cli.main(["control", "verify", "--config", str(path), str(msgs)]) == 1
    assert "max age 60 s" in capsys.readouterr().out


# -- defect: control tail crashed on a non-object message ---------------------------------------
@pytest.mark.integration
def test_control_tail_counts_non_object_messages_as_invalid_and_goes_on(stack, tmp_path, env, capsys):
    import uuid

    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    topic = f"cli-tail-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": stack.kafka_bootstrap})
    for fut in admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)]).values():
        fut.result(30)
    bad = [b"[1]", b'"x"', b"null", b"\xff\xfe{", b"", None]
    producer = Producer({"bootstrap.servers": stack.kafka_bootstrap})
    for value in bad + [json.dumps(signed()).encode()]:
        producer.produce(topic, value=value)
    assert producer.flush(30) == 0
    cfg = json.loads(json.dumps(CONFIG))
    cfg["kafka"].update(bootstrap_servers=stack.kafka_bootstrap, control_topic=topic)
    path = tmp_path / "tail.yaml"
    path.write_text(yaml.safe_dump(cfg))
    code = cli.main(["control", "tail", "--config", str(path), "--from-beginning", "--max", str(len(bad) + 1),
                     "--idle-timeout", "20"])
    out, err = capsys.readouterr()
    assert code == 1, "invalid messages make the exit code 1"
    assert out.count("ROLLBACK filter: v2 -> v1") == 1, out
    assert "signature verified" in err
    assert err.count("invalid") == len(bad), err


def test_check_config_resolves_rotation_keys_and_webhook_tokens(tmp_path, env, capsys):
    cfg = json.loads(json.dumps(CONFIG))
    cfg["signing"]["verification_keys"] = [{"key_id": "old", "key_file": str(tmp_path / "missing.key")}]
    cfg["actuation"] = {"webhooks": [{"name": "ops", "url": "http://127.0.0.1:1/x", "bearer_token_env": "DL_NO_TOKEN"}]}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert cli.main(["check-config", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "signing.verification_keys[0].key_file: cannot read" in err
    assert "actuation.webhooks[0].bearer_token_env: environment variable DL_NO_TOKEN is not set" in err
