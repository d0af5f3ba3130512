"""The faust runtime's security settings, without a broker."""
import faust
import pytest

from stream.config import ConfigError, parse_config
from stream.faust_app import _check_supported, _credentials
from tests.stream.test_config import ENV, doc


def test_sasl_ssl_scram_becomes_faust_credentials_with_a_verifying_context(tmp_path, monkeypatch):
    import subprocess
    from pathlib import Path

    subprocess.run([str(Path(__file__).resolve().parents[2] / "scripts" / "make-certs"), str(tmp_path)], check=True)
    monkeypatch.setenv("DL_SASL", ENV["DL_SASL"])
    cfg = parse_config(doc(kafka__security={"protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
                                            "sasl_username": "svc", "sasl_password_env": "DL_SASL",
                                            "ssl_ca_location": str(tmp_path / "ca.pem")}))
    _check_supported(cfg)
    creds = _credentials(cfg)
    assert isinstance(creds, faust.SASLCredentials)
    assert (creds.protocol.value, creds.mechanism.value, creds.username, creds.password) == (
        "SASL_SSL", "SCRAM-SHA-512", "svc", "sasl-pw")
    assert creds.ssl_context.check_hostname
    assert _credentials(parse_config(doc())) is None


def test_librdkafka_client_options_are_refused():
    with pytest.raises(ConfigError, match="kafka.client_options: librdkafka settings have no aiokafka equivalent"):
        _check_supported(parse_config(doc(kafka__client_options={"fetch.wait.max.ms": 50})))


def test_the_aiokafka_consumer_takes_the_fetch_bounds(monkeypatch):
    import asyncio

    from stream.faust_app import FETCH_WAIT_MS, _BoundedFetchThread, build_app

    monkeypatch.setenv("DL_SIGNING_KEY", ENV["DL_SIGNING_KEY"])
    cfg = parse_config(doc(kafka__fetch_max_bytes=3 * 2**20, kafka__prefetch_max_bytes=8 * 2**20))
    app = build_app(cfg)

    async def consumer_bounds() -> tuple[int, int, int]:
        thread = app.consumer._new_consumer_thread()
        assert isinstance(thread, _BoundedFetchThread)
        consumer = thread._create_worker_consumer(app.transport)  # built, never started: no broker needed
        try:
            return consumer._fetch_max_bytes, consumer._max_partition_fetch_bytes, consumer._fetch_max_wait_ms
        finally:
            await consumer.stop()

    # aiokafka's defaults are 50 MiB a fetch request and 1 MiB a partition; Faust waits 1.5 s for data
    assert asyncio.run(consumer_bounds()) == (3 * 2**20, 256 * 1024, FETCH_WAIT_MS)
    assert FETCH_WAIT_MS <= 50
