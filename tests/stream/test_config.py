"""Configuration: one YAML file, precise error paths, secrets only from the environment or files."""
import base64
import copy

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from stream.config import (ConfigError, aiokafka_fetch_settings, aiokafka_settings, client_settings,
                           consumer_settings, fetch_settings, load_config, parse_config, producer_settings,
                           redis_client, resolve_env, signing_key, verification_keys)
from stream.decoding import decoder_for_topic

BASE = {
    "kafka": {
        "bootstrap_servers": "127.0.0.1:9092",
        "group_id": "dl",
        "inference_topics": [{"name": "preds", "field_mapping": {"event_id": "/meta/id", "prediction": "/out/label"},
                              "constants": {"model": "filter"}}],
        "label_topics": [{"name": "labels"}],
        "internal_partitions": 4,
    },
    "redis": {"url": "redis://127.0.0.1:6379/0", "pending_ttl_seconds": 3600},
    "signing": {"key_env": "DL_SIGNING_KEY", "key_id": "prod-1"},
    "metrics": {"port": 0, "max_label_values": 10},
    "monitor": {"models": [{"name": "filter", "classes": ["safe", "nsfw"], "versions": ["v1", "v2"],
                            "stable_version": "v1",
                            "features": [{"name": "x", "type": "numeric"}, {"name": "y", "type": "numeric"},
                                         {"name": "z", "type": "numeric"}, {"name": "logo", "type": "categorical"}]}]},
}
ENV = {"DL_SIGNING_KEY": "0123456789abcdef-signing", "DL_SASL": "sasl-pw", "DL_REDIS": "redis-pw"}


def doc(**changes):
    d = copy.deepcopy(BASE)
    for path, value in changes.items():
        node = d
        parts = path.split("__")
        for p in parts[:-1]:
            node = node[int(p)] if p.isdigit() else node[p]
        last = parts[-1]
        if value is _DELETE:
            del node[last]
        elif last.isdigit():
            node[int(last)] = value
        else:
            node[last] = value
    return d


_DELETE = object()


def error_of(d) -> str:
    with pytest.raises(ConfigError) as exc:
        parse_config(d)
    return str(exc.value)


def test_valid_config_and_defaults():
    cfg = parse_config(doc())
    assert cfg.kafka.control_topic == "driftline.control"
    assert cfg.redis.key_prefix == "driftline"
    assert cfg.metrics.host == "127.0.0.1"
    assert cfg.kafka.inference_topics[0].max_message_bytes == cfg.kafka.max_message_bytes
    assert cfg.monitor.models[0].name == "filter"


def test_error_names_key_path_of_bad_feature_type():
    msg = error_of(doc(monitor__models__0__features__3__type="text"))
    assert msg == "monitor.models[0].features[3].type: Input should be 'numeric' or 'categorical'"


def test_unknown_keys_rejected_with_path():
    assert "kafka.inference_topics[0].nope: Extra inputs are not permitted" in error_of(
        doc(kafka__inference_topics__0__nope=1))
    assert "bogus: Extra inputs are not permitted" in error_of(dict(doc(), bogus=1))


def test_every_problem_reported():
    msg = error_of(doc(kafka__batch_size=0, redis__pending_ttl_seconds=-1))
    assert "kafka.batch_size:" in msg and "redis.pending_ttl_seconds:" in msg


def test_core_validation_errors_surface_with_path():
    msg = error_of(doc(monitor__models__0__stable_version="v9"))
    assert msg.startswith("monitor.models[0]:") and "stable_version 'v9'" in msg


def test_literal_signing_key_rejected():
    assert "literal key is not accepted" in error_of(doc(signing={"key": "s3cr3t-s3cr3t-s3cr3t"}))
    assert "exactly one of key_file or key_env" in error_of(doc(signing={"key_env": "A", "key_file": "/k"}))
    assert "exactly one of key_file or key_env" in error_of(doc(signing={}))


def test_env_references_must_be_names():
    assert "signing.key_env" in error_of(doc(signing={"key_env": "not a name = secret"}))


def test_passwords_never_in_file():
    assert "redis.url: must not contain a password" in error_of(doc(redis__url="redis://u:pw@h:6379/0"))
    assert "secrets do not belong" in error_of(doc(kafka__client_options={"sasl.password": "x"}))


# librdkafka settings driftline's exactly-once, group and security depend on
EXACTLY_ONCE_KEYS = ["isolation.level", "enable.auto.commit", "auto.commit.enable", "enable.auto.offset.store",
                     "transactional.id", "enable.idempotence", "acks", "request.required.acks", "group.id",
                     "auto.offset.reset", "enable.partition.eof", "bootstrap.servers", "metadata.broker.list",
                     # the consumer's memory bound
                     "fetch.max.bytes", "max.partition.fetch.bytes", "fetch.message.max.bytes",
                     "queued.max.messages.kbytes", "receive.message.max.bytes"]
SECURITY_KEYS = ["security.protocol", "sasl.mechanism", "sasl.mechanisms", "sasl.username", "sasl.password",
                 "ssl.ca.location", "ssl.key.location", "ssl.key.password", "ssl.keystore.password",
                 "ssl.endpoint.identification.algorithm", "enable.ssl.certificate.verification"]


@pytest.mark.parametrize("key", EXACTLY_ONCE_KEYS + SECURITY_KEYS)
def test_client_options_cannot_override_what_driftline_sets(key):
    msg = error_of(doc(kafka__client_options={"session.timeout.ms": 30000, key: "x"}))
    assert msg.startswith(f"kafka.client_options: {key!r} ") and "session.timeout.ms" not in msg


@given(key=st.sampled_from(EXACTLY_ONCE_KEYS + SECURITY_KEYS),
       flips=st.lists(st.booleans(), min_size=40, max_size=40), pad=st.sampled_from(["", " ", "\t"]))
def test_client_options_refused_in_any_case_or_padding(key, flips, pad):
    spelled = pad + "".join(c.upper() if f else c for c, f in zip(key, flips)) + pad
    assert "kafka.client_options:" in error_of(doc(kafka__client_options={spelled: 1}))


def test_client_options_tuning_keys_pass():
    cfg = parse_config(doc(kafka__client_options={"session.timeout.ms": 30000, "fetch.wait.max.ms": 50,
                                                   "transaction.timeout.ms": 60000, "client.id": "dl"}))
    assert cfg.kafka.client_options["fetch.wait.max.ms"] == 50


@pytest.mark.parametrize("url", [
    "redis://h:6379/0?password=secret", "redis://h:6379/0?db=0&password=secret", "rediss://h/0?PASSWORD=secret",
    "redis://h/0?pass%77ord=secret", "unix:///run/redis.sock?password=secret", "redis://h/0?ssl_password=secret",
    "redis://h/0?password=", "redis://h/0?a=1;password=secret", "redis://h/0?password=s#frag",
])
def test_redis_url_refuses_a_password_in_the_query(url):
    assert error_of(doc(redis__url=url)).startswith("redis.url: must not contain a password")


def test_redis_url_with_plain_query_passes():
    assert parse_config(doc(redis__url="redis://h:6379/0?socket_keepalive=true&db=1")).redis.url.endswith("db=1")


def test_field_mapping_checked():
    assert "unknown fields ['bogus']" in error_of(doc(kafka__inference_topics__0__field_mapping={"bogus": "/x"}))
    assert "is not a JSON pointer" in error_of(doc(kafka__inference_topics__0__field_mapping={"ts": "/a//b"}))


def test_topic_names_distinct():
    assert "topics listed twice" in error_of(doc(kafka__label_topics=[{"name": "preds"}]))
    assert "must not be an input topic" in error_of(doc(kafka__control_topic="labels"))
    assert "must differ" in error_of(doc(kafka__dead_letter_topic="driftline.control"))


def test_sasl_requires_mechanism_user_and_password_env():
    msg = error_of(doc(kafka__security={"protocol": "SASL_SSL", "sasl_mechanism": "PLAIN"}))
    assert msg.startswith("kafka.security:") and "sasl_password_env" in msg
    assert "need protocol SSL" in error_of(doc(kafka__security={"ssl_ca_location": "/ca.pem"}))


def test_load_config_from_yaml(tmp_path):
    p = tmp_path / "driftline.yaml"
    d = doc()
    d["monitor"]["models"][0]["reference_file"] = "refs/filter.json"
    p.write_text(yaml.safe_dump(d))
    cfg = load_config(p)
    assert cfg.monitor.models[0].reference_file == str(tmp_path / "refs" / "filter.json")


def test_load_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("kafka: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("- a list")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(bad)


def test_resolve_env_names_the_setting():
    assert resolve_env("DL_SIGNING_KEY", "signing.key_env", ENV) == ENV["DL_SIGNING_KEY"]
    with pytest.raises(ConfigError, match="signing.key_env: environment variable NOPE is not set"):
        resolve_env("NOPE", "signing.key_env", ENV)


def test_signing_key_from_env_and_file(tmp_path):
    cfg = parse_config(doc())
    key = signing_key(cfg.signing, ENV)
    assert key.key_id == "prod-1" and key.secret == ENV["DL_SIGNING_KEY"].encode()
    f = tmp_path / "key"
    f.write_bytes(b"file-held-key-0123456789\n")
    cfg = parse_config(doc(signing={"key_file": str(f)}))
    assert signing_key(cfg.signing).secret == b"file-held-key-0123456789"
    with pytest.raises(ConfigError, match="at least 16 bytes"):
        signing_key(cfg.signing.model_copy(update={"key_file": None, "key_env": "SHORT"}), {"SHORT": "abc"})
    with pytest.raises(ConfigError, match="cannot read"):
        signing_key(cfg.signing.model_copy(update={"key_file": str(tmp_path / "none")}))


def test_librdkafka_settings():
    cfg = parse_config(doc(kafka__security={"protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
                                            "sasl_username": "svc", "sasl_password_env": "DL_SASL",
                                            "ssl_ca_location": "/ca.pem"},
                           kafka__client_options={"session.timeout.ms": 30000}))
    c = consumer_settings(cfg, environ=ENV)
    assert c["bootstrap.servers"] == "127.0.0.1:9092" and c["group.id"] == "dl"
    assert c["enable.auto.commit"] is False and c["isolation.level"] == "read_committed"
    assert c["security.protocol"] == "SASL_SSL" and c["sasl.password"] == "sasl-pw"
    assert c["ssl.ca.location"] == "/ca.pem" and c["session.timeout.ms"] == 30000
    bare = consumer_settings(cfg, group=False, environ=ENV)
    assert "group.id" not in bare and bare == client_settings(cfg, ENV)
    p = producer_settings(cfg, transactional_id="dl-0", environ=ENV)
    assert p["transactional.id"] == "dl-0" and p["enable.idempotence"] is True and p["acks"] == "all"
    assert "transactional.id" not in producer_settings(cfg, environ=ENV)
    with pytest.raises(ConfigError, match="kafka.security.sasl_password_env: environment variable DL_SASL"):
        client_settings(cfg, {})


def test_settings_accepted_by_librdkafka():
    from confluent_kafka import Consumer, Producer

    cfg = parse_config(doc())
    Consumer(consumer_settings(cfg, environ=ENV)).close()
    Producer(producer_settings(cfg, transactional_id="t", environ=ENV)).flush(0)


MiB = 1024 * 1024


def test_fetch_settings_derive_from_the_config():
    cfg = parse_config(doc())  # defaults: 256 KiB messages, 1 MiB fetches, 32 MiB prefetch
    c = consumer_settings(cfg, environ=ENV)
    assert c["fetch.max.bytes"] == MiB and c["max.partition.fetch.bytes"] == 256 * 1024
    assert c["queued.max.messages.kbytes"] == 32 * 1024 and c["receive.message.max.bytes"] == 100_000_000
    assert c["message.max.bytes"] == 1_000_000
    # a drained queue is refilled after 20 ms, not librdkafka's 1,000 ms; client_options may change it
    assert c["fetch.queue.backoff.ms"] == 20
    assert consumer_settings(parse_config(doc(kafka__client_options={"fetch.queue.backoff.ms": 100})),
                             environ=ENV)["fetch.queue.backoff.ms"] == 100
    # the broker holds an empty fetch 100 ms, not 500: a resumed or seeked partition waits no longer
    assert c["fetch.wait.max.ms"] == 100
    assert consumer_settings(parse_config(doc(kafka__client_options={"fetch.wait.max.ms": 500})),
                             environ=ENV)["fetch.wait.max.ms"] == 500
    cfg = parse_config(doc(kafka__max_message_bytes=4 * MiB, kafka__fetch_max_bytes=128 * MiB,
                           kafka__prefetch_max_bytes=256 * MiB,
                           kafka__label_topics=[{"name": "labels", "max_message_bytes": 6 * MiB}]))
    s = fetch_settings(cfg)
    # per partition: the largest message any input topic accepts; responses: fetch.max.bytes + overhead
    assert s["max.partition.fetch.bytes"] == 6 * MiB and s["fetch.max.bytes"] == 128 * MiB
    assert s["queued.max.messages.kbytes"] == 256 * 1024 and s["receive.message.max.bytes"] == 128 * MiB + 512
    assert consumer_settings(cfg, environ=ENV)["max.partition.fetch.bytes"] == 6 * MiB
    assert aiokafka_fetch_settings(cfg) == {"fetch_max_bytes": 128 * MiB, "max_partition_fetch_bytes": 6 * MiB}
    # the admin client and producers take no consumer settings
    assert "fetch.max.bytes" not in consumer_settings(cfg, group=False, environ=ENV)
    assert "queued.max.messages.kbytes" not in producer_settings(cfg, environ=ENV)


@pytest.mark.parametrize("changes, error", [
    ({"kafka__fetch_max_bytes": 128 * 1024}, "kafka.fetch_max_bytes: 131072 is below the largest max_message_bytes"),
    ({"kafka__inference_topics": [{"name": "preds", "max_message_bytes": 2 * 1024 * 1024}]},
     "kafka.fetch_max_bytes: 1048576 is below the largest max_message_bytes (2097152)"),
    ({"kafka__prefetch_max_bytes": 2 * 1024 * 1024, "kafka__fetch_max_bytes": 4 * 1024 * 1024},
     "kafka.prefetch_max_bytes: 2097152 must be at least fetch_max_bytes"),
    ({"kafka__client_options": {"message.max.bytes": 2_000_000}},
     "kafka.client_options: 'message.max.bytes' (2000000) may not exceed fetch_max_bytes"),
    ({"kafka__batch_max_bytes": 1000}, "kafka.batch_max_bytes: Input should be greater than or equal to 65536"),
])
def test_memory_bound_errors_name_the_key(changes, error):
    assert error in error_of(doc(**changes))


@pytest.mark.parametrize("changes", [{}, {"kafka__fetch_max_bytes": 64 * 1024, "kafka__max_message_bytes": 64 * 1024},
                                     {"kafka__fetch_max_bytes": 500 * 1024 * 1024,
                                      "kafka__prefetch_max_bytes": 2 * 1024 * 1024 * 1024 - 1024}])
def test_fetch_settings_accepted_by_librdkafka(changes):
    from confluent_kafka import Consumer

    cfg = parse_config(doc(**changes))
    Consumer(consumer_settings(cfg, environ=ENV)).close()  # librdkafka checks ranges and their relations


def test_redis_client_password_from_env():
    cfg = parse_config(doc(redis__password_env="DL_REDIS", redis__username="svc", redis__tls=True))
    client = redis_client(cfg.redis, ENV)
    kwargs = client.connection_pool.connection_kwargs
    assert kwargs["password"] == "redis-pw" and kwargs["username"] == "svc"
    assert "SSL" in client.connection_pool.connection_class.__name__
    with pytest.raises(ConfigError, match="redis.password_env"):
        redis_client(cfg.redis, {})


SASL_SSL = {"protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512", "sasl_username": "svc",
            "sasl_password_env": "DL_SASL"}


def test_aiokafka_settings_verify_the_broker(tmp_path):
    import ssl
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    subprocess.run([str(root / "scripts" / "make-certs"), str(tmp_path)], check=True)
    cfg = parse_config(doc(kafka__security=dict(SASL_SSL, ssl_ca_location=str(tmp_path / "ca.pem"))))
    a = aiokafka_settings(cfg, ENV)
    assert (a["security_protocol"], a["sasl_mechanism"], a["sasl_plain_username"], a["sasl_plain_password"]) == (
        "SASL_SSL", "SCRAM-SHA-512", "svc", "sasl-pw")
    assert a["ssl_context"].verify_mode == ssl.CERT_REQUIRED and a["ssl_context"].check_hostname
    assert aiokafka_settings(parse_config(doc()), ENV) == {"security_protocol": "PLAINTEXT"}
    cfg = parse_config(doc(kafka__security=dict(SASL_SSL, ssl_ca_location=str(tmp_path / "none.pem"))))
    with pytest.raises(ConfigError, match="kafka.security: cannot load the TLS files"):
        aiokafka_settings(cfg, ENV)


def test_redis_tls_settings():
    cfg = parse_config(doc(redis__url="rediss://h:6380/0", redis__username="svc", redis__password_env="DL_REDIS",
                           redis__ssl_ca_location="/ca.pem"))
    kwargs = redis_client(cfg.redis, ENV).connection_pool.connection_kwargs
    assert kwargs["ssl_ca_certs"] == "/ca.pem" and kwargs["ssl_cert_reqs"] == "required" and kwargs["ssl_check_hostname"]
    assert "need tls: true or a rediss:// url" in error_of(doc(redis__ssl_ca_location="/ca.pem"))
    assert "go together" in error_of(doc(redis__tls=True, redis__ssl_certificate_location="/c.pem"))
    assert "needs ssl_key_location" in error_of(doc(redis__tls=True, redis__ssl_key_password_env="DL_REDIS"))


def test_topic_feeds_the_decoder():
    cfg = parse_config(doc())
    dec = decoder_for_topic(cfg.kafka.inference_topics[0])
    e = dec.decode_inference(b'{"meta": {"id": "a1"}, "ts": 1, "model_version": "v1", "features": {"x": 1},'
                             b' "out": {"label": "safe"}}')
    assert (e.event_id, e.model, e.prediction) == ("a1", "filter", "safe")


# -- defect: a key file's trailing CR/LF bytes were stripped even from binary keys ------------------
def test_text_key_file_loses_exactly_one_trailing_newline(tmp_path):
    from stream.config import read_key

    p = tmp_path / "key"
    p.write_bytes(b"text-key-of-sufficient-length\n\n")
    assert read_key("k", key_file=str(p)).secret == b"text-key-of-sufficient-length\n"
    p.write_bytes(b"text-key-of-sufficient-length\r\n")
    assert read_key("k", key_file=str(p)).secret == b"text-key-of-sufficient-length"


def test_raw_binary_key_file_keeps_every_byte(tmp_path):
    from stream.config import SigningSpec, signing_key

    raw = bytes(range(200, 230)) + b"\r\n\r\n"
    p = tmp_path / "key.bin"
    p.write_bytes(raw)
    spec = SigningSpec(key_id="bin", key_file=str(p), key_encoding="raw")
    assert signing_key(spec).secret == raw


@pytest.mark.parametrize("encoding,content", [("hex", b"  " + bytes(range(20)).hex().encode() + b"\n"),
                                              ("base64", base64.b64encode(bytes(range(20))) + b"\r\n")])
def test_encoded_binary_key_files(tmp_path, encoding, content):
    p = tmp_path / "key"
    p.write_bytes(content)
    cfg = parse_config(doc(signing={"key_file": str(p), "key_encoding": encoding}))
    assert signing_key(cfg.signing).secret == bytes(range(20))
    p.write_bytes(b"zz-not-" + encoding.encode())
    with pytest.raises(ConfigError, match=f"signing.key_file {p}: not valid {encoding}"):
        signing_key(cfg.signing)


def test_key_encoding_errors_are_precise(tmp_path):
    p = tmp_path / "key"
    p.write_bytes(b"\xff\xfe-binary-key-bytes-here")
    with pytest.raises(ConfigError, match="not UTF-8 text; for a binary key set key_encoding raw, hex or base64"):
        signing_key(parse_config(doc(signing={"key_file": str(p)})).signing)
    assert "raw needs key_file" in error_of(doc(signing={"key_env": "A", "key_encoding": "raw"}))
    assert "signing.key_encoding" in error_of(doc(signing={"key_env": "A", "key_encoding": "rot13"}))
    env_hex = parse_config(doc(signing={"key_env": "HEXKEY", "key_encoding": "hex"})).signing
    assert signing_key(env_hex, {"HEXKEY": "ab" * 16}).secret == b"\xab" * 16


def test_verification_keys_for_rotation(tmp_path):
    old = tmp_path / "old.key"
    old.write_text("the-previous-signing-key-000\n")
    cfg = parse_config(doc(signing={"key_env": "DL_SIGNING_KEY", "key_id": "2026-11",
                                    "verification_keys": [{"key_id": "2026-10", "key_file": str(old)}],
                                    "max_age_seconds": 120, "max_clock_skew_seconds": 5}))
    ring = verification_keys(cfg.signing, ENV)
    assert sorted(ring) == ["2026-10", "2026-11"]
    assert ring["2026-10"].secret == b"the-previous-signing-key-000"
    assert ring["2026-11"] == signing_key(cfg.signing, ENV)
    assert (cfg.signing.freshness.max_age_seconds, cfg.signing.freshness.max_skew_seconds) == (120, 5)
    assert parse_config(doc()).signing.freshness.max_age_seconds == 300


def test_verification_key_errors_name_their_entry(tmp_path):
    assert "given twice" in error_of(doc(signing={"key_env": "A", "key_id": "k",
                                                  "verification_keys": [{"key_id": "k", "key_env": "B"}]}))
    err = error_of(doc(signing={"key_env": "A", "verification_keys": [{"key_env": "B"}]}))
    assert "signing.verification_keys[0].key_id: Field required" in err
    err = error_of(doc(signing={"key_env": "A", "verification_keys": [{"key_id": "o", "secret": "xyz"}]}))
    assert "signing.verification_keys[0]: secret: a literal key is not accepted" in err
    assert "signing.max_age_seconds" in error_of(doc(signing={"key_env": "A", "max_age_seconds": 0}))
    cfg = parse_config(doc(signing={"key_env": "DL_SIGNING_KEY",
                                    "verification_keys": [{"key_id": "o", "key_file": str(tmp_path / "none")}]}))
    with pytest.raises(ConfigError, match=r"signing.verification_keys\[0\].key_file: cannot read"):
        verification_keys(cfg.signing, ENV)


# -- actuation ------------------------------------------------------------------------------------
ACT = {"webhooks": [{"name": "ops", "url": "https://deploy.example.internal/hooks/rollback"}],
       "flagger": {"canaries": [{"model": "filter", "namespace": "prod", "canary": "filter-canary"}]}}


def test_actuation_section_defaults():
    act = parse_config(doc(actuation=ACT)).actuation
    assert (act.group_id, act.port, act.acted_ttl_seconds, act.max_attempts) == (None, 9466, 7 * 86_400, 5)
    assert act.flagger.hold_seconds == 900 and act.webhooks[0].timeout_seconds == 5.0
    assert parse_config(doc()).actuation is None


@pytest.mark.parametrize("change,message", [
    ({}, "actuation: configure at least one action: webhooks or flagger"),
    ({"webhooks": [{"name": "a", "url": "ftp://x/y"}]}, "actuation.webhooks[0].url: must be an http:// or https:// URL"),
    ({"webhooks": [{"name": "a", "url": "https://u:pw@x/y"}]}, "actuation.webhooks[0].url: must not contain credentials"),
    ({"webhooks": [{"name": "a", "url": "http://x/y", "headers": {"X-Api-Key": "k"}}]},
     "actuation.webhooks[0].headers: ['X-Api-Key']: secrets do not belong in the file"),
    ({"webhooks": [{"name": "a", "url": "http://x/y"}, {"name": "a", "url": "http://z/y"}]}, "['a'] given twice"),
    ({"webhooks": [{"name": "a", "url": "http://x/y", "models": ["nope"]}]},
     "actuation.webhooks[0].models: ['nope'] are not configured models"),
    ({"flagger": {"canaries": [{"model": "nope", "namespace": "prod", "canary": "c"}]}},
     "actuation.flagger.canaries[0].model: 'nope' is not a configured model"),
    ({"flagger": {"canaries": [{"model": "filter", "namespace": "Prod", "canary": "c"}]}},
     "actuation.flagger.canaries[0].namespace: String should match pattern"),
    ({"flagger": {"canaries": [{"model": "filter", "namespace": "p", "canary": "c"}] * 2}},
     "canaries listed twice: ['p/c']"),
    ({"flagger": {"hold_seconds": 5, "canaries": [{"model": "filter", "namespace": "p", "canary": "c"}]}},
     "actuation.flagger.hold_seconds: Input should be greater than or equal to 60"),
    (dict(ACT, acted_ttl_seconds=300), "actuation.acted_ttl_seconds: 300 must exceed the freshness window (330 s)"),
    (dict(ACT, backoff_seconds=5, max_backoff_seconds=1), "max_backoff_seconds must not be below backoff_seconds"),
    (dict(ACT, surprise=1), "actuation.surprise: Extra inputs are not permitted"),
])
def test_actuation_errors_name_the_key(change, message):
    assert message in error_of(doc(actuation=change))
