"""Start-up checks, without a broker: secrets first, librdkafka errors turned into one line."""
import pytest

from stream import preflight
from stream.config import ConfigError, parse_config
from tests.stream.test_config import ENV, doc


def test_secrets_and_files_are_resolved_before_any_connection():
    cfg = parse_config(doc(kafka__bootstrap_servers="127.0.0.1:1", kafka__startup_timeout_seconds=600))
    with pytest.raises(ConfigError, match="signing.key_env: environment variable DL_SIGNING_KEY is not set"):
        preflight.check(cfg, {})
    cfg = parse_config(doc(kafka__bootstrap_servers="127.0.0.1:1", kafka__startup_timeout_seconds=600,
                           redis__url="rediss://h/0", redis__ssl_ca_location="/nonexistent/ca.pem"))
    with pytest.raises(ConfigError, match="redis.ssl_ca_location: cannot read /nonexistent/ca.pem"):
        preflight.check(cfg, ENV)


def test_librdkafka_errors_become_one_line():
    cfg = parse_config(doc(kafka__security={"protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
                                            "sasl_username": "svc", "sasl_password_env": "DL_SASL",
                                            "ssl_ca_location": "/etc/ca.pem"}))
    auth = ("sasl_ssl://10.0.0.1:9094/bootstrap: SASL authentication error: Authentication failed during "
            "authentication due to invalid credentials with SASL mechanism SCRAM-SHA-512 (after 317ms in state AUTH_REQ)")
    assert preflight._kafka_auth_line(cfg, auth) == (
        "kafka 10.0.0.1:9094: SASL authentication failed for user 'svc' (SCRAM-SHA-512): invalid credentials; "
        "check kafka.security.sasl_username and the password in $DL_SASL")
    tls = ("sasl_ssl://10.0.0.1:9094/bootstrap: SSL handshake failed: error:0A000086:SSL routines::certificate "
           "verify failed: broker certificate could not be verified, verify that ssl.ca.location is correctly "
           "configured (after 3ms in state SSL_HANDSHAKE, 1 identical error(s) suppressed)")
    assert preflight._kafka_tls_line(cfg, tls) == (
        "kafka 10.0.0.1:9094: the broker's TLS certificate is not trusted: certificate verify failed against "
        "the CA in kafka.security.ssl_ca_location (/etc/ca.pem)")
    assert preflight._split_broker("no broker prefix here") == (None, "no broker prefix here")


def test_a_redis_that_comes_up_during_start_up_is_waited_for(tmp_path, monkeypatch):
    """A worker restarted while Redis restarts used to exit at once ('cannot connect')."""
    import socket
    import subprocess
    import threading
    import time

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cfg = parse_config(doc(redis__url=f"redis://127.0.0.1:{port}/0", kafka__startup_timeout_seconds=20))
    monkeypatch.setattr(preflight, "check_kafka", lambda *a, **k: None)  # only Redis is under test here
    servers = []

    def start_later() -> None:
        time.sleep(1.5)
        servers.append(subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                         "--dir", str(tmp_path)], stdout=subprocess.DEVNULL))

    thread = threading.Thread(target=start_later)
    thread.start()
    try:
        started = time.monotonic()
        preflight.check(cfg, ENV)
        assert time.monotonic() - started >= 1.0
    finally:
        thread.join()
        for s in servers:
            s.kill()
            s.wait(10)
    short = parse_config(doc(redis__url=f"redis://127.0.0.1:{port}/0", kafka__startup_timeout_seconds=1))
    with pytest.raises(preflight.StartupError, match="cannot connect"):
        preflight.check(short, ENV)
