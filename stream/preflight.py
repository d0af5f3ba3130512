"""Start-up checks: resolve every secret, then reach Kafka and Redis, before a worker starts.

A worker with a wrong SASL password, a broker or Redis certificate its CA does not sign, or a
Redis ACL user without the rights driftline needs would otherwise retry in the background (the
Kafka clients) or fail deep inside its first batch with a traceback. :func:`check` fails at once
instead, within a bounded time, with one line naming the problem and the setting to look at:

    kafka 127.0.0.1:19094: SASL authentication failed for user 'driftline' (SCRAM-SHA-512): ...

Secrets come first, so a missing variable is reported as the configuration error it is
(:class:`stream.config.ConfigError`); connection problems raise :class:`StartupError`. Kafka
and Redis client libraries are imported only when a check runs.
"""
from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Mapping
from typing import Any

from stream.config import ConfigError, DriftlineConfig, client_settings, redis_client, signing_key


class StartupError(RuntimeError):
    """Kafka or Redis cannot be used as configured; the message is one line naming the problem.

    ``transient`` marks what may pass by itself (nothing listens yet, no answer): retried until
    ``kafka.startup_timeout_seconds``; a wrong password or an untrusted certificate fails at once.
    """

    def __init__(self, message: str, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


def check(config: DriftlineConfig, environ: Mapping[str, str] | None = None) -> None:
    """Resolve the configuration's secrets, then check Kafka and Redis; raises at the first problem."""
    signing_key(config.signing, environ)
    check_files(config)
    settings = client_settings(config, environ)
    client = redis_client(config.redis, environ)
    check_kafka(config, settings, config.kafka.startup_timeout_seconds)
    deadline = time.monotonic() + config.kafka.startup_timeout_seconds
    while True:  # a Redis restarting as the worker starts is waited for, like the broker
        try:
            check_redis(config, client)
            return
        except StartupError as exc:
            if not exc.transient or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def check_files(config: DriftlineConfig) -> None:
    """Every certificate and key file the configuration names must be readable."""
    k, r = config.kafka.security, config.redis
    for where, path in (("kafka.security.ssl_ca_location", k.ssl_ca_location),
                        ("kafka.security.ssl_certificate_location", k.ssl_certificate_location),
                        ("kafka.security.ssl_key_location", k.ssl_key_location),
                        ("redis.ssl_ca_location", r.ssl_ca_location),
                        ("redis.ssl_certificate_location", r.ssl_certificate_location),
                        ("redis.ssl_key_location", r.ssl_key_location)):
        if path is not None:
            try:
                with open(path, "rb"):
                    pass
            except OSError as exc:
                raise ConfigError(f"{where}: cannot read {path}: {exc.strerror or exc}") from None


# -- kafka ---------------------------------------------------------------------------------------
_BROKER = re.compile(r"^\w+://([^/\s]+)/\S*:\s*")
_AFTER = re.compile(r"\s*\(after \d+ms in state \w+[^)]*\)\s*$")


def _split_broker(message: str) -> tuple[str | None, str]:
    """(broker address, message) from a librdkafka error string, without its timing suffix."""
    m = _BROKER.match(message)
    return (m.group(1) if m else None), _AFTER.sub("", message[m.end():] if m else message)


def check_kafka(config: DriftlineConfig, settings: dict[str, Any], timeout: float) -> None:
    """Fetch cluster metadata over the configured security protocol; raises :class:`StartupError`."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient

    errors: list[Any] = []
    quiet = logging.getLogger("driftline.preflight.librdkafka")  # the error is reported once, below
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False
    admin = AdminClient({**settings, "error_cb": errors.append, "logger": quiet})
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        try:
            admin.list_topics(timeout=min(1.0, max(0.1, deadline - time.monotonic())))
            return
        except KafkaException as exc:
            last = exc.args[0].str() if exc.args else str(exc)
        admin.poll(0)  # serves error_cb
        for err in errors:
            if err.code() == KafkaError._AUTHENTICATION:
                raise StartupError(_kafka_auth_line(config, err.str()))
            if err.code() == KafkaError._SSL:
                raise StartupError(_kafka_tls_line(config, err.str()))
            if err.fatal():
                broker, text = _split_broker(err.str())
                raise StartupError(f"kafka {broker or config.kafka.bootstrap_servers}: {text}")
        transport = [e.str() for e in errors if e.code() == KafkaError._TRANSPORT]
        last = transport[-1] if transport else last
        errors.clear()
        if time.monotonic() >= deadline:
            broker, text = _split_broker(last)
            raise StartupError(f"kafka {broker or config.kafka.bootstrap_servers}: no answer within {timeout:g} s "
                               f"(kafka.startup_timeout_seconds): {text or 'no broker reachable'}")


def _kafka_auth_line(config: DriftlineConfig, message: str) -> str:
    s = config.kafka.security
    broker, text = _split_broker(message)
    detail = text.split("SASL authentication error: ", 1)[-1]
    if "invalid credentials" in detail:
        detail = "invalid credentials"
    return (f"kafka {broker or config.kafka.bootstrap_servers}: SASL authentication failed for user "
            f"{s.sasl_username!r} ({s.sasl_mechanism}): {detail}; check kafka.security.sasl_username and "
            f"the password in ${s.sasl_password_env}")


def _kafka_tls_line(config: DriftlineConfig, message: str) -> str:
    ca = config.kafka.security.ssl_ca_location
    broker, text = _split_broker(message)
    where = f"kafka {broker or config.kafka.bootstrap_servers}"
    if "certificate verify failed" in text:
        trusted = f"the CA in kafka.security.ssl_ca_location ({ca})" if ca else "the system's CAs (set kafka.security.ssl_ca_location)"
        return f"{where}: the broker's TLS certificate is not trusted: certificate verify failed against {trusted}"
    return f"{where}: TLS handshake failed: {text.split('SSL handshake failed: ', 1)[-1]}"


# -- redis ---------------------------------------------------------------------------------------
_PROBE_SCRIPT = "redis.call('SET', KEYS[1], ARGV[1], 'EX', 60) redis.call('RENAME', KEYS[1], KEYS[2]) " \
                "return redis.call('EXISTS', KEYS[2])"


def check_redis(config: DriftlineConfig, client: Any) -> None:
    """Authenticate and run, under the key prefix, each kind of command the state store sends."""
    import redis

    spec = config.redis
    where = f"redis {_redis_address(client)}"
    user = spec.username or "default"
    key = f"{spec.key_prefix}:@preflight:{uuid.uuid4().hex}"
    try:
        client.ping()
        client.info("server")  # the state store tells a restarted Redis by its run id
        pipe = client.pipeline(transaction=False)
        pipe.set(key, b"1", ex=60)
        pipe.get(key)
        pipe.mget([key])
        pipe.exists(key)
        pipe.renamenx(key, f"{key}:n")
        pipe.hset(f"{key}:h", mapping={"a": 1, "b": 2})
        pipe.expire(f"{key}:h", 60)
        pipe.hget(f"{key}:h", "a")
        pipe.hmget(f"{key}:h", "a", "b")
        pipe.hgetall(f"{key}:h")
        pipe.hdel(f"{key}:h", "b")
        pipe.delete(f"{key}:n", f"{key}:h")
        pipe.execute()
        # stage, promote and discard are Lua scripts (EVALSHA, SCRIPT LOAD; their commands are checked too)
        client.register_script(_PROBE_SCRIPT)(keys=[f"{key}:s", f"{key}:r"], args=[1])
        client.delete(f"{key}:r")
    except redis.AuthenticationError as exc:
        raise StartupError(f"{where}: authentication of user {user!r} failed: {str(exc).rstrip('.')}; check "
                           f"redis.username and the password in ${spec.password_env}") from None
    except redis.exceptions.NoPermissionError as exc:
        raise StartupError(f"{where}: user {user!r} lacks a right driftline needs on keys "
                           f"{spec.key_prefix}:*: {_strip_pipeline(str(exc))}") from None
    except redis.ConnectionError as exc:
        text = str(exc)
        if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
            ca = spec.ssl_ca_location
            trusted = f"the CA in redis.ssl_ca_location ({ca})" if ca else "the system's CAs (set redis.ssl_ca_location)"
            raise StartupError(f"{where}: the server's TLS certificate is not trusted: certificate verify failed "
                               f"against {trusted}") from None
        raise StartupError(f"{where}: cannot connect: {text}", transient=True) from None
    except redis.TimeoutError as exc:
        raise StartupError(f"{where}: no answer within {spec.socket_timeout_seconds:g} s "
                           f"(redis.socket_timeout_seconds): {exc}", transient=True) from None
    except redis.RedisError as exc:
        raise StartupError(f"{where}: {_strip_pipeline(str(exc))}") from None


def _redis_address(client: Any) -> str:
    kw = client.connection_pool.connection_kwargs
    return kw.get("path") or f"{kw.get('host', '?')}:{kw.get('port', 6379)}"


def _strip_pipeline(message: str) -> str:
    """'Command # 1 (SET k v) of pipeline caused error: X' -> 'X' (the keys and values stay out)."""
    return message.split(" caused error: ", 1)[-1].splitlines()[0] if message else "error"
