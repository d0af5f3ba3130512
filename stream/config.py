"""The driftline configuration: one YAML file, validated at start-up, unknown keys rejected.

Secrets never live in the file: Kafka and Redis passwords and the signing key are named by
environment variables (``*_env``) or a key file, and :func:`resolve_env` is the only place that
reads the environment. Validation errors name the offending key path::

    models[0].features[3].type: Input should be 'numeric' or 'categorical'

>>> cfg = DriftlineConfig.model_validate({
...     "kafka": {"bootstrap_servers": "127.0.0.1:9092", "inference_topics": [{"name": "preds"}]},
...     "signing": {"key_env": "DRIFTLINE_SIGNING_KEY"},
...     "monitor": {"models": [{"name": "m", "classes": ["a", "b"], "versions": ["v1"]}]}})
>>> consumer_settings(cfg)["isolation.level"]
'read_committed'
"""
from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote, urlsplit

import yaml
from pydantic import (BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator,
                      model_validator)

from detectors.spec import MonitorSpec
from stream.decoding import INFERENCE_FIELDS, LABEL_FIELDS
from stream.signing import DEFAULT_MAX_AGE_SECONDS, DEFAULT_MAX_SKEW_SECONDS, Freshness, SigningKey

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SECRET_WORDS = ("password", "secret", "token", "sasl.oauthbearer")
# librdkafka settings driftline sets itself (exactly-once: transactions, read_committed, manual
# commits; group membership; the connection and its security): kafka.client_options may not touch them
_EXACTLY_ONCE = "exactly-once delivery depends on it"
_DRIFTLINE_SETTINGS = {
    "bootstrap.servers": "is set through kafka.bootstrap_servers",
    "metadata.broker.list": "is set through kafka.bootstrap_servers",
    "group.id": "is set through kafka.group_id",
    "transactional.id": f"is fixed by driftline ({{group_id}}-{{worker id}}): {_EXACTLY_ONCE}",
    "isolation.level": f"is fixed by driftline (read_committed): {_EXACTLY_ONCE}",
    "enable.auto.commit": f"is fixed by driftline (false: offsets commit in transactions): {_EXACTLY_ONCE}",
    "auto.commit.enable": f"is fixed by driftline (false: offsets commit in transactions): {_EXACTLY_ONCE}",
    "enable.auto.offset.store": f"is fixed by driftline (offsets commit in transactions): {_EXACTLY_ONCE}",
    "auto.offset.reset": f"is fixed by driftline (earliest): {_EXACTLY_ONCE}",
    "enable.partition.eof": "is fixed by driftline (false)",
    "enable.idempotence": f"is fixed by driftline (true): {_EXACTLY_ONCE}",
    "acks": f"is fixed by driftline (all): {_EXACTLY_ONCE}",
    "request.required.acks": f"is fixed by driftline (all): {_EXACTLY_ONCE}",
    "security.protocol": "is set through kafka.security.protocol",
    "enable.ssl.certificate.verification": "is fixed by driftline: broker certificates are always verified",
    # the consumer's memory bound (see fetch_settings)
    "fetch.max.bytes": "is set through kafka.fetch_max_bytes (it bounds the worker's memory)",
    "max.partition.fetch.bytes": "derives from kafka.max_message_bytes and kafka.fetch_max_bytes",
    "fetch.message.max.bytes": "derives from kafka.max_message_bytes and kafka.fetch_max_bytes",
    "queued.max.messages.kbytes": "is set through kafka.prefetch_max_bytes (it bounds the worker's memory)",
    "receive.message.max.bytes": "derives from kafka.fetch_max_bytes",
}
_DRIFTLINE_PREFIXES = {"sasl.": "is set through kafka.security.sasl_*", "ssl.": "is set through kafka.security.ssl_*",
                       "ssl_": "is set through kafka.security.ssl_*"}


class ConfigError(ValueError):
    """An invalid configuration; the message names the key path of every problem."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _env_name(v: str | None) -> str | None:
    if v is not None and not _ENV_NAME.fullmatch(v):
        raise ValueError(f"must be the name of an environment variable, not {v[:3]!r}...")
    return v


# -- kafka ---------------------------------------------------------------------------------------
class TopicSpec(_Strict):
    """An input topic and how its JSON messages map onto driftline's event fields."""

    name: str = Field(min_length=1, max_length=249, pattern=r"^[A-Za-z0-9._-]+$")
    decoder: Literal["json"] = "json"
    field_mapping: dict[str, str] = {}  # driftline field -> JSON pointer ("/meta/id") or top-level key
    constants: dict[str, str | int | float] = {}  # fields a topic does not carry, e.g. {"model": "filter"}
    ts_unit: Literal["s", "ms", "us", "ns"] = "s"
    # how far ahead of the worker's clock an event's ts may be; null: no bound (not advised)
    max_future_seconds: float | None = Field(default=300.0, ge=0, le=366 * 86_400)
    max_message_bytes: int | None = Field(default=None, ge=64)  # default: kafka.max_message_bytes
    max_features: int | None = Field(default=None, ge=1, le=100_000)
    max_string: int | None = Field(default=None, ge=16, le=1_000_000)
    max_scores: int | None = Field(default=None, ge=1, le=100_000)
    # label topics: the models whose predictions these labels are for (default: every model that
    # logged a prediction with the label's event id)
    models: list[str] | None = Field(default=None, min_length=1)

    @field_validator("field_mapping", "constants")
    @classmethod
    def _known_fields(cls, v: dict[str, Any]) -> dict[str, Any]:
        known = set(INFERENCE_FIELDS) | set(LABEL_FIELDS)
        bad = sorted(set(v) - known)
        if bad:
            raise ValueError(f"unknown fields {bad}; known: {sorted(known)}")
        return v

    @field_validator("field_mapping")
    @classmethod
    def _paths(cls, v: dict[str, str]) -> dict[str, str]:
        for name, path in v.items():
            if not path or path == "/" or "//" in path or path.endswith("/"):
                raise ValueError(f"{name}: {path!r} is not a JSON pointer (e.g. '/meta/id') or a key")
            if path.startswith("header:") and (name != "artifact_digest" or len(path) == len("header:")):
                raise ValueError(f"{name}: 'header:<name>' maps only artifact_digest, to a Kafka header name")
        return v

    @property
    def fields(self) -> dict[str, str]:
        """Alias read by :func:`stream.decoding.decoder_for_topic`."""
        return self.field_mapping

    @property
    def format(self) -> str:
        """Alias read by :func:`stream.decoding.decoder_for_topic`."""
        return self.decoder


class KafkaSecurity(_Strict):
    """How clients authenticate; the SASL password comes from the variable ``sasl_password_env``."""

    protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    ssl_ca_location: str | None = None
    ssl_certificate_location: str | None = None
    ssl_key_location: str | None = None
    ssl_key_password_env: str | None = None
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password_env: str | None = None

    _check_env = field_validator("sasl_password_env", "ssl_key_password_env")(_env_name)

    @model_validator(mode="after")
    def _consistent(self) -> "KafkaSecurity":
        sasl = self.protocol.startswith("SASL")
        ssl = self.protocol.endswith("SSL")
        if sasl and not (self.sasl_mechanism and self.sasl_username and self.sasl_password_env):
            raise ValueError(f"protocol {self.protocol} needs sasl_mechanism, sasl_username and sasl_password_env")
        if not sasl and (self.sasl_mechanism or self.sasl_username or self.sasl_password_env):
            raise ValueError(f"sasl_* settings need a SASL protocol, not {self.protocol}")
        tls = (self.ssl_ca_location, self.ssl_certificate_location, self.ssl_key_location, self.ssl_key_password_env)
        if not ssl and any(x is not None for x in tls):
            raise ValueError(f"ssl_* settings need protocol SSL or SASL_SSL, not {self.protocol}")
        if (self.ssl_certificate_location is None) != (self.ssl_key_location is None):
            raise ValueError("ssl_certificate_location and ssl_key_location go together")
        return self


class KafkaSpec(_Strict):
    """Brokers, the team's input topics and driftline's own topics."""

    bootstrap_servers: str = Field(min_length=1)
    group_id: str = Field(default="driftline", min_length=1)
    inference_topics: list[TopicSpec] = Field(min_length=1)
    label_topics: list[TopicSpec] = []
    control_topic: str = Field(default="driftline.control", pattern=r"^[A-Za-z0-9._-]+$")
    control_partitions: int = Field(default=1, ge=1, le=1024)
    dead_letter_topic: str = Field(default="driftline.dead-letter", pattern=r"^[A-Za-z0-9._-]+$")
    dead_letter_max_bytes: int = Field(default=16 * 1024, ge=0)  # payload bytes copied into a dead letter
    internal_topic: str = Field(default="driftline.internal", pattern=r"^[A-Za-z0-9._-]+$")
    # signed model-registry events (the live version manifest); None: the static `versions:` lists
    registry_topic: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._-]+$")
    internal_partitions: int = Field(default=8, ge=1, le=4096)  # model ownership: never change on a live topic
    replication_factor: int = Field(default=1, ge=1, le=16)
    security: KafkaSecurity = KafkaSecurity()
    # micro-batch bounds (one transaction each): large batches when there is a backlog, a short
    # window when the worker keeps up (the README's benchmarks run at these defaults)
    batch_size: int = Field(default=5000, ge=1, le=1_000_000)
    batch_timeout_ms: int = Field(default=50, ge=1, le=600_000)
    # with a backlog (batches come back full), how long internal records may wait to be detected in
    # longer per-model runs (stream.batching.DetectionHold); 0: every batch
    detect_hold_ms: int = Field(default=250, ge=0, le=60_000)
    # the same while the worker keeps up: short records (a few events per model and batch) wait at
    # most this long, which bounds what it adds to alert latency; 0: every batch
    detect_hold_caught_up_ms: int = Field(default=100, ge=0, le=60_000)
    max_message_bytes: int = Field(default=256 * 1024, ge=1024, le=100 * 1024 * 1024)
    # the consumer's memory bound (see fetch_settings): bytes one fetch request asks for, message
    # bytes the client may hold fetched ahead, payload bytes of one micro-batch
    fetch_max_bytes: int = Field(default=1024 * 1024, ge=64 * 1024, le=1024 * 1024 * 1024, validate_default=True)
    prefetch_max_bytes: int = Field(default=32 * 1024 * 1024, ge=1024 * 1024, le=2 * 1024 * 1024 * 1024 - 1024)
    batch_max_bytes: int = Field(default=16 * 1024 * 1024, ge=64 * 1024, le=1024 * 1024 * 1024)
    # a batch blocked this long (a client call hung past its timeout) ends the process for a restart
    stall_timeout_seconds: float = Field(default=120.0, ge=5, le=3600)
    # how long a worker waits at start for the brokers to answer (a wrong password or an untrusted
    # certificate fails at once); then it exits with one line naming the problem
    startup_timeout_seconds: float = Field(default=30.0, gt=0, le=3600)
    client_options: dict[str, str | int | float | bool] = {}  # extra librdkafka settings (no secrets)

    @field_validator("client_options")
    @classmethod
    def _no_secrets(cls, v: dict[str, Any]) -> dict[str, Any]:
        problems = []
        for key in sorted(v):
            name = key.strip().lower()
            reason = _DRIFTLINE_SETTINGS.get(name) or next(
                (r for prefix, r in _DRIFTLINE_PREFIXES.items() if name.startswith(prefix)), None)
            if any(w in name for w in _SECRET_WORDS):
                problems.append(f"{key!r} is a secret: secrets do not belong in the file; use kafka.security.*_env")
            elif reason is not None:
                problems.append(f"{key!r} {reason}; remove it")
        if problems:
            raise ValueError("; ".join(problems))
        return v

    @model_validator(mode="after")
    def _distinct_topics(self) -> "KafkaSpec":
        names = [t.name for t in self.inference_topics] + [t.name for t in self.label_topics]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"topics listed twice: {dup}")
        own = {"control_topic": self.control_topic, "dead_letter_topic": self.dead_letter_topic,
               "internal_topic": self.internal_topic}
        if self.registry_topic is not None:
            own["registry_topic"] = self.registry_topic
        if len(set(own.values())) < len(own):
            raise ValueError(f"{', '.join(own)} must differ")
        clash = sorted(k for k, v in own.items() if v in names)
        if clash:
            raise ValueError(f"{clash} must not be an input topic")
        for t in self.inference_topics + self.label_topics:
            if t.max_message_bytes is None:
                t.max_message_bytes = self.max_message_bytes
        return self

    @field_validator("fetch_max_bytes")
    @classmethod
    def _fetch_fits_a_message(cls, v: int, info: ValidationInfo) -> int:
        default = info.data.get("max_message_bytes", 256 * 1024)
        topics = info.data.get("inference_topics", []) + info.data.get("label_topics", [])
        largest = max([default] + [t.max_message_bytes or default for t in topics])
        if v < largest:
            raise ValueError(f"{v} is below the largest max_message_bytes ({largest}): a message at that "
                             f"limit would need a fetch of its own")
        return v

    @field_validator("prefetch_max_bytes")
    @classmethod
    def _prefetch_holds_a_fetch(cls, v: int, info: ValidationInfo) -> int:
        fetch = info.data.get("fetch_max_bytes")
        if fetch is not None and v < fetch:
            raise ValueError(f"{v} must be at least fetch_max_bytes ({fetch}): one fetch fills the prefetch queue")
        return v

    @field_validator("client_options")
    @classmethod
    def _request_size(cls, v: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        fetch, request_max = info.data.get("fetch_max_bytes"), v.get("message.max.bytes")
        if fetch is not None and isinstance(request_max, int) and request_max > fetch:
            raise ValueError(f"'message.max.bytes' ({request_max}) may not exceed fetch_max_bytes ({fetch}): "
                             f"the Kafka client refuses such a consumer")
        return v

    @property
    def largest_message_bytes(self) -> int:
        """The largest message any input topic accepts (larger ones are dead-lettered unparsed)."""
        return max([self.max_message_bytes] + [t.max_message_bytes or self.max_message_bytes
                                               for t in self.inference_topics + self.label_topics])


# -- redis, signing, metrics --------------------------------------------------------------------
class RedisSpec(_Strict):
    """Where detector state, offsets and pending predictions live; TLS when ``tls`` or ``rediss://``."""

    url: str = "redis://127.0.0.1:6379/0"
    tls: bool = False
    username: str | None = None  # an ACL user; grant it only driftline's commands on ~{key_prefix}:*
    password_env: str | None = None
    ssl_ca_location: str | None = None  # CA file the server's certificate must chain to (default: the system's)
    ssl_certificate_location: str | None = None  # client certificate, when the server asks for one
    ssl_key_location: str | None = None
    ssl_key_password_env: str | None = None
    key_prefix: str = Field(default="driftline", pattern=r"^[A-Za-z0-9._-]+$")
    pending_ttl_seconds: int = Field(default=86_400, ge=1, le=90 * 86_400)  # label-join horizon
    # most event ids awaiting a label (about 125 bytes of Redis each); past it new predictions are
    # not remembered (driftline_pending_dropped_total) and their labels arrive as late. None: no bound
    max_pending_predictions: int | None = Field(default=10_000_000, ge=1)
    # longest a label waits for the inference side to route its prediction before it is unmatched
    label_wait_seconds: float = Field(default=30.0, ge=0, le=3600)
    # routed predictions kept in memory to write again after Redis lost its unsynced last writes
    # (at least the fsync interval: appendfsync everysec loses up to about 2 s)
    recent_predictions_seconds: float = Field(default=5.0, ge=0, le=3600)
    # longest a model's state in Redis trails the committed stream while batches flow (it is also
    # saved when the input pauses); recovery replays the internal topic from it. 0: save after every
    # micro-batch
    snapshot_interval_seconds: float = Field(default=5.0, ge=0, le=3600)
    socket_timeout_seconds: float = Field(default=10.0, gt=0, le=600)

    _check_env = field_validator("password_env", "ssl_key_password_env")(_env_name)

    @property
    def uses_tls(self) -> bool:
        """Whether connections are TLS (``tls: true`` or a ``rediss://`` URL)."""
        return self.tls or self.url.startswith("rediss://")

    @model_validator(mode="after")
    def _consistent(self) -> "RedisSpec":
        tls = (self.ssl_ca_location, self.ssl_certificate_location, self.ssl_key_location, self.ssl_key_password_env)
        if not self.uses_tls and any(x is not None for x in tls):
            raise ValueError("ssl_* settings need tls: true or a rediss:// url")
        if (self.ssl_certificate_location is None) != (self.ssl_key_location is None):
            raise ValueError("ssl_certificate_location and ssl_key_location go together")
        if self.ssl_key_password_env is not None and self.ssl_key_location is None:
            raise ValueError("ssl_key_password_env needs ssl_key_location")
        return self

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        m = re.match(r"^(redis|rediss|unix)://([^/@]*@)?", v)
        if m is None:
            raise ValueError("must start with redis://, rediss:// or unix://")
        if m.group(2) and ":" in m.group(2):
            raise ValueError("must not contain a password; use password_env")
        parts = urlsplit(v)
        # the Redis client turns every query parameter into a connection argument (?password=...)
        query = unquote(parts.query + parts.fragment).lower()
        names = [unquote(n).strip().lower() for n, _ in parse_qsl(parts.query, keep_blank_values=True)]
        if any(w in n for n in names for w in _SECRET_WORDS) or any(w in query for w in _SECRET_WORDS):
            raise ValueError("must not contain a password (in its query either); use password_env")
        return v


KEY_ENCODINGS = ("text", "raw", "hex", "base64")
_LITERAL_KEY_WORDS = ("key", "secret", "hmac_key", "signing_key", "value")


class _KeySource(_Strict):
    """Where one HMAC key comes from: ``key_file`` or ``key_env`` (never the file), and how it is encoded.

    ``key_encoding``: ``text`` (default; the file's UTF-8 text minus one trailing ``\\n`` or
    ``\\r\\n``, or the variable's value), ``raw`` (every byte of the file, for binary keys), ``hex``
    or ``base64`` (the decoded bytes of the file's or variable's text, surrounding whitespace ignored).
    """

    key_id: str = Field(default="default", min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$")
    key_file: str | None = None
    key_env: str | None = None
    key_encoding: Literal["text", "raw", "hex", "base64"] = "text"

    _check_env = field_validator("key_env")(_env_name)

    @model_validator(mode="before")
    @classmethod
    def _no_literal(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            literal = sorted(k for k in data if k in _LITERAL_KEY_WORDS)
            if literal:
                raise ValueError(f"{literal[0]}: a literal key is not accepted; use key_file or key_env")
        return data

    @model_validator(mode="after")
    def _one_source(self) -> "_KeySource":
        if (self.key_file is None) == (self.key_env is None):
            raise ValueError("set exactly one of key_file or key_env")
        if self.key_encoding == "raw" and self.key_env is not None:
            raise ValueError("key_encoding raw needs key_file (an environment variable holds text: use hex or base64)")
        return self


class VerificationKeySpec(_KeySource):
    """A key accepted for verification only (a previous or next key during a rotation)."""

    key_id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$")


class SigningSpec(_KeySource):
    """The HMAC key rollback commands are signed with, the keys accepted when verifying, and freshness.

    ``verification_keys`` lists further keys a verifier accepts (rotation: the previous key until
    its last commands have expired, or the next key before the workers switch to it); the signing
    key is always accepted. A command older than ``max_age_seconds`` or dated more than
    ``max_clock_skew_seconds`` ahead of the verifier's clock is refused.
    """

    verification_keys: list[VerificationKeySpec] = Field(default=[], max_length=16)
    max_age_seconds: int = Field(default=DEFAULT_MAX_AGE_SECONDS, ge=1, le=7 * 86_400)
    max_clock_skew_seconds: int = Field(default=DEFAULT_MAX_SKEW_SECONDS, ge=0, le=3600)

    @model_validator(mode="after")
    def _unique_ids(self) -> "SigningSpec":
        ids = [self.key_id] + [k.key_id for k in self.verification_keys]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"key ids must be unique (the signing key's included): {dup} given twice")
        return self

    @property
    def freshness(self) -> Freshness:
        """The freshness window verifiers apply."""
        return Freshness(self.max_age_seconds, self.max_clock_skew_seconds)


# -- actuation (driftline control act) -----------------------------------------------------------
_SECRET_HEADERS = ("authorization", "cookie", "token", "secret", "password", "api-key", "apikey")


class WebhookActionSpec(_Strict):
    """POST each verified rollback command (its bytes as published) to ``url``, retried with backoff."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    url: str = Field(min_length=8, max_length=2048)
    timeout_seconds: float = Field(default=5.0, gt=0, le=120)
    headers: dict[str, str] = {}  # extra request headers, never secrets (see bearer_token_env)
    bearer_token_env: str | None = None  # sent as "Authorization: Bearer <value>"
    tls_ca_file: str | None = None  # CA bundle for an https url signed by a private CA
    models: list[str] | None = Field(default=None, min_length=1)  # default: every model

    _check_env = field_validator("bearer_token_env")(_env_name)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        m = re.match(r"^https?://([^/?#]*)", v)
        if m is None or not m.group(1):
            raise ValueError("must be an http:// or https:// URL")
        if "@" in m.group(1):
            raise ValueError("must not contain credentials; use bearer_token_env")
        return v

    @field_validator("headers")
    @classmethod
    def _no_secret_headers(cls, v: dict[str, str]) -> dict[str, str]:
        bad = sorted(k for k in v if any(w in k.lower() for w in _SECRET_HEADERS))
        if bad:
            raise ValueError(f"{bad}: secrets do not belong in the file; use bearer_token_env")
        bad = sorted(k for k in v if not re.fullmatch(r"[A-Za-z0-9-]{1,64}", k) or "\n" in v[k] or "\r" in v[k])
        if bad:
            raise ValueError(f"{bad}: not a valid header name or value")
        return v


class FlaggerCanarySpec(_Strict):
    """A Flagger canary (namespace/name) that serves a driftline model."""

    model: str = Field(min_length=1)
    namespace: str = Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    canary: str = Field(min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


class FlaggerSpec(_Strict):
    """Flagger rollback webhook: ``POST /rollback/{namespace}/{canary}`` answers 200 while a rollback stands.

    A verified rollback of a model stands for ``hold_seconds`` after its issue time for each
    canary the model maps to; Flagger polls the webhook during analysis and fails the canary on
    a 2xx. If the request's ``metadata`` names ``canary_version``, only a rollback of that
    version answers 200.
    """

    canaries: list[FlaggerCanarySpec] = Field(min_length=1)
    hold_seconds: int = Field(default=900, ge=60, le=7 * 86_400)

    @model_validator(mode="after")
    def _unique(self) -> "FlaggerSpec":
        pairs = [(c.namespace, c.canary) for c in self.canaries]
        dup = sorted({f"{n}/{c}" for n, c in pairs if pairs.count((n, c)) > 1})
        if dup:
            raise ValueError(f"canaries listed twice: {dup}")
        return self


class ActuationSpec(_Strict):
    """``driftline control act``: its consumer group, HTTP endpoint, retries and actions.

    Commands are read from ``kafka.control_topic`` (read_committed) by the group ``group_id``
    (default ``{kafka.group_id}-act``), verified with the ``signing`` section's keys and window,
    and applied once per action and idempotency key: applied keys are remembered in Redis under
    the driftline key prefix for ``acted_ttl_seconds``. The HTTP endpoint on ``host``:``port``
    serves the Flagger webhook, ``/healthz`` and ``/metrics``.
    """

    group_id: str | None = Field(default=None, min_length=1, max_length=249)
    host: str = "127.0.0.1"
    port: int = Field(default=9466, ge=0, le=65535)  # 0: any free port (logged at start)
    acted_ttl_seconds: int = Field(default=7 * 86_400, ge=60, le=366 * 86_400)
    max_attempts: int = Field(default=5, ge=1, le=50)
    backoff_seconds: float = Field(default=0.5, gt=0, le=60)
    max_backoff_seconds: float = Field(default=30.0, gt=0, le=3600)
    dead_letter_topic: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._-]+$")  # default: kafka's
    webhooks: list[WebhookActionSpec] = []
    flagger: FlaggerSpec | None = None

    @model_validator(mode="after")
    def _actions(self) -> "ActuationSpec":
        if not self.webhooks and self.flagger is None:
            raise ValueError("configure at least one action: webhooks or flagger")
        names = [w.name for w in self.webhooks]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"webhooks: names must be unique, {dup} given twice")
        if self.max_backoff_seconds < self.backoff_seconds:
            raise ValueError("max_backoff_seconds must not be below backoff_seconds")
        return self


class RegistrySpec(_Strict):
    """How registry events are verified: Ed25519 public keys by key id (PEM files), freshness bounds."""

    public_keys: dict[str, str] = Field(min_length=1)  # key id -> public key PEM file (never a private key)
    max_age_seconds: float | None = Field(default=30 * 86_400.0, gt=0)  # vs the model's event clock; None: no bound
    max_future_seconds: float = Field(default=300.0, ge=0, le=86_400)  # issued_at ahead of the worker's clock

    @field_validator("public_keys")
    @classmethod
    def _key_ids(cls, v: dict[str, str]) -> dict[str, str]:
        bad = sorted(k for k in v if not re.fullmatch(r"[A-Za-z0-9._:-]{1,128}", k))
        if bad:
            raise ValueError(f"key ids {bad[:3]} must match [A-Za-z0-9._:-]{{1,128}}")
        return v


class MetricsSpec(_Strict):
    """The /metrics, /healthz, /readyz endpoint and the label cardinality bound."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=9464, ge=0, le=65535)  # 0: any free port
    max_label_values: int = Field(default=64, ge=1, le=100_000)  # per label; the rest become "other"
    # the detector statistics of the models batches touched (drift gauges, detection counts, open
    # alerts) are exported for every scrape of /metrics (after the batch in progress, which a scrape
    # waits up to 2 s for), as soon as traffic pauses, and else at most this often; 0: every batch
    stats_interval_seconds: float = Field(default=15.0, ge=0.0, le=60.0)


class ProcessSpec(_Strict):
    """Settings of a worker process itself (see :mod:`stream.allocator`)."""

    # malloc arenas the process may use (glibc): one keeps the resident set lower and flatter over a long run;
    # 0: the C library's default (up to eight per core)
    malloc_arenas: int = Field(default=1, ge=0, le=1024)


class DriftlineConfig(_Strict):
    """The whole configuration: Kafka, Redis, signing, metrics, the worker process and the detection core's spec."""

    kafka: KafkaSpec
    redis: RedisSpec = RedisSpec()
    signing: SigningSpec
    metrics: MetricsSpec = MetricsSpec()
    process: ProcessSpec = ProcessSpec()
    monitor: MonitorSpec
    actuation: ActuationSpec | None = None
    registry: RegistrySpec | None = None  # needed (and only used) with kafka.registry_topic

    @model_validator(mode="after")
    def _names(self) -> "DriftlineConfig":
        names = [m.name for m in self.monitor.models]
        for i, name in enumerate(names):
            if name.startswith("@"):
                raise ValueError(f"monitor.models[{i}].name: {name[:40]!r} must not start with '@' "
                                 f"(reserved for driftline's own Redis keys)")
        for i, t in enumerate(self.kafka.inference_topics):
            if t.models is not None:
                raise ValueError(f"kafka.inference_topics[{i}].models: only label topics take a model scope")
        if (self.kafka.registry_topic is None) != (self.registry is None):
            raise ValueError("kafka.registry_topic and the registry section (public_keys) go together")
        for i, t in enumerate(self.kafka.label_topics):
            unknown = sorted(set(t.models or ()) - set(names))
            if unknown:
                raise ValueError(f"kafka.label_topics[{i}].models: {unknown} are not configured models")
        if self.actuation is not None:
            _check_actuation(self.actuation, set(names), self.signing)
        return self


def _check_actuation(act: ActuationSpec, models: set[str], signing: SigningSpec) -> None:
    """Cross-section checks of ``actuation``: known models, memory longer than the freshness window."""
    for i, w in enumerate(act.webhooks):
        unknown = sorted(set(w.models or ()) - models)
        if unknown:
            raise ValueError(f"actuation.webhooks[{i}].models: {unknown} are not configured models")
    for i, c in enumerate(act.flagger.canaries if act.flagger else ()):
        if c.model not in models:
            raise ValueError(f"actuation.flagger.canaries[{i}].model: {c.model!r} is not a configured model")
    horizon = signing.max_age_seconds + signing.max_clock_skew_seconds
    if act.acted_ttl_seconds <= horizon:
        raise ValueError(f"actuation.acted_ttl_seconds: {act.acted_ttl_seconds} must exceed the freshness window "
                         f"({horizon} s), or a redelivered command could act twice")


# -- loading -------------------------------------------------------------------------------------
def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and "[" in part or part in ("function-after", "function-before"):
            continue  # pydantic's internal validator steps
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def format_validation_error(exc: ValidationError) -> str:
    """One line per problem: ``key.path[i].name: message``."""
    lines = []
    for err in exc.errors():
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"{_loc(err['loc'])}: {msg}")
    return "\n".join(lines)


def parse_config(doc: Any, source: str = "config") -> DriftlineConfig:
    """Validate an already parsed document; raises :class:`ConfigError`."""
    if not isinstance(doc, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    try:
        return DriftlineConfig.model_validate(doc)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from None


def load_config(path: str | Path) -> DriftlineConfig:
    """Read and validate the YAML file at ``path``; raises :class:`ConfigError`."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: not UTF-8 text (byte {exc.start})") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from None
    except RecursionError:  # PyYAML composes nested collections recursively
        raise ConfigError(f"{p}: not valid YAML: nested too deeply") from None
    try:
        cfg = parse_config(doc, str(p))
    except ConfigError as exc:  # every problem on its own line, led by the file: "FILE: key.path: message"
        lines = str(exc).splitlines()
        raise ConfigError("\n".join(x if x.startswith(f"{p}:") else f"{p}: {x}" for x in lines)) from None
    models = [m.model_copy(update={"reference_file": str(p.parent / m.reference_file)})
              if m.reference_file and not Path(m.reference_file).is_absolute() else m
              for m in cfg.monitor.models]  # reference files are relative to the config file
    cfg.monitor = cfg.monitor.model_copy(update={"models": models})
    if cfg.registry is not None:  # key files, too, are relative to the config file
        cfg.registry.public_keys = {k: v if Path(v).is_absolute() else str(p.parent / v)
                                    for k, v in cfg.registry.public_keys.items()}
    return cfg


# -- secrets: the only place the environment is read ---------------------------------------------
def resolve_env(name: str, what: str, environ: Mapping[str, str] | None = None) -> str:
    """The value of environment variable ``name`` (``what`` names the setting in errors)."""
    env = os.environ if environ is None else environ
    value = env.get(name)
    if value is None or value == "":
        raise ConfigError(f"{what}: environment variable {name} is not set")
    return value


def decode_key(data: bytes, encoding: str, what: str) -> bytes:
    """The secret bytes of a key file's (or variable's) ``data`` in ``encoding`` (see :class:`SigningSpec`)."""
    if encoding == "raw":
        return data
    if encoding == "text":
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigError(f"{what}: not UTF-8 text; for a binary key set key_encoding raw, hex or base64") from None
        return data[:-2] if data.endswith(b"\r\n") else data[:-1] if data.endswith(b"\n") else data
    text = data.strip()
    try:
        if encoding == "hex":
            return binascii.unhexlify(text)
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{what}: not valid {encoding}") from None


def read_key(key_id: str, key_file: str | None = None, key_env: str | None = None,
             environ: Mapping[str, str] | None = None, key_encoding: str = "text",
             what: str = "signing") -> SigningKey:
    """A key from a file or an environment variable, decoded per ``key_encoding``.

    ``what`` names the key in errors: a config section (``signing`` gives ``signing.key_file: ...``)
    or a command-line option (``--key-file old=/k`` is used as it is).
    """
    def setting(name: str) -> str:
        return what if what.startswith("--") else f"{what}.{name}"

    if key_encoding not in KEY_ENCODINGS:
        raise ConfigError(f"{setting('key_encoding')}: {key_encoding!r} is not one of {', '.join(KEY_ENCODINGS)}")
    if key_file is not None:
        try:
            data = Path(key_file).read_bytes()
        except OSError as exc:
            raise ConfigError(f"{setting('key_file')}: cannot read {key_file}: {exc.strerror or exc}") from None
        secret = decode_key(data, key_encoding, f"{setting('key_file')} {key_file}")
    elif key_env is not None:
        if key_encoding == "raw":
            raise ConfigError(f"{setting('key_encoding')}: raw needs key_file")
        value = resolve_env(key_env, setting("key_env"), environ).encode("utf-8")
        secret = value if key_encoding == "text" else decode_key(value, key_encoding, f"{setting('key_env')} {key_env}")
    else:
        raise ConfigError(f"{what}: set key_file or key_env")
    try:
        return SigningKey(key_id, secret)
    except ValueError as exc:
        raise ConfigError(f"{what}: {exc}") from None


def signing_key(spec: SigningSpec, environ: Mapping[str, str] | None = None) -> SigningKey:
    """The rollback signing key named by the ``signing`` section."""
    return read_key(spec.key_id, spec.key_file, spec.key_env, environ, spec.key_encoding)


def verification_keys(spec: SigningSpec, environ: Mapping[str, str] | None = None) -> dict[str, SigningKey]:
    """Every key a verifier accepts, by id: the signing key and ``signing.verification_keys``."""
    keys = {spec.key_id: signing_key(spec, environ)}
    for i, k in enumerate(spec.verification_keys):
        keys[k.key_id] = read_key(k.key_id, k.key_file, k.key_env, environ, k.key_encoding,
                                  what=f"signing.verification_keys[{i}]")
    return keys


def client_settings(config: DriftlineConfig, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """librdkafka settings shared by consumers, producers and admin clients."""
    k = config.kafka
    s = k.security
    out: dict[str, Any] = {"bootstrap.servers": k.bootstrap_servers, "security.protocol": s.protocol}
    for key, value in (("ssl.ca.location", s.ssl_ca_location),
                       ("ssl.certificate.location", s.ssl_certificate_location),
                       ("ssl.key.location", s.ssl_key_location),
                       ("sasl.mechanism", s.sasl_mechanism), ("sasl.username", s.sasl_username)):
        if value is not None:
            out[key] = value
    if s.sasl_password_env is not None:
        out["sasl.password"] = resolve_env(s.sasl_password_env, "kafka.security.sasl_password_env", environ)
    if s.ssl_key_password_env is not None:
        out["ssl.key.password"] = resolve_env(s.ssl_key_password_env, "kafka.security.ssl_key_password_env", environ)
    out.update(k.client_options)
    return out


# librdkafka's floor for receive.message.max.bytes above fetch.max.bytes (protocol overhead), and
# its default: a fetch response may exceed fetch.max.bytes by the first record batch (the broker
# returns it whole so that the consumer progresses), which must still be received, or the
# partition would be stuck on it
_RESPONSE_OVERHEAD = 512
_RECEIVE_DEFAULT = 100_000_000
# librdkafka waits this long before fetching again for a partition once the prefetched messages
# reached queued.max.messages.kbytes (its default, 1,000 ms, let a busy worker drain its queue and
# stall for the next fetch); the memory bound is the same, it is only checked more often
FETCH_QUEUE_BACKOFF_MS = 20
# how long the broker may hold a fetch that finds no new data: a label partition resumed after its
# wait, or a partition seeked back, is only fetched by the next request, so librdkafka's default
# (500 ms) held them back that long behind a caught-up partition's long poll
FETCH_WAIT_MAX_MS = 100


def fetch_settings(config: DriftlineConfig) -> dict[str, int]:
    """librdkafka consumer settings that bound the bytes the worker holds, from ``kafka.*_bytes``.

    ``fetch.max.bytes`` (one fetch request, all partitions), ``max.partition.fetch.bytes`` (per
    partition: the largest ``max_message_bytes``, at most ``fetch.max.bytes``; a larger record batch,
    e.g. of the internal topic, is still returned whole, first in its fetch) and ``queued.max.messages.kbytes`` (messages fetched
    ahead, counted by payload after decompression; librdkafka stops fetching above it, which one
    fetch may overshoot, and looks again every ``fetch.queue.backoff.ms``). The bound is documented
    in the README (Operating notes).
    """
    k = config.kafka
    partition = min(k.fetch_max_bytes, k.largest_message_bytes)
    # librdkafka refuses a consumer whose fetch.max.bytes is below message.max.bytes (default
    # 1,000,000; for a consumer it only caps the requests it sends, which are small)
    return {"fetch.max.bytes": k.fetch_max_bytes, "max.partition.fetch.bytes": partition,
            "message.max.bytes": min(k.fetch_max_bytes, int(k.client_options.get("message.max.bytes", 1_000_000))),
            "queued.max.messages.kbytes": max(1, k.prefetch_max_bytes // 1024),
            "fetch.queue.backoff.ms": FETCH_QUEUE_BACKOFF_MS, "fetch.wait.max.ms": FETCH_WAIT_MAX_MS,
            "receive.message.max.bytes": max(k.fetch_max_bytes + _RESPONSE_OVERHEAD, _RECEIVE_DEFAULT)}


def aiokafka_fetch_settings(config: DriftlineConfig) -> dict[str, int]:
    """The same bound as aiokafka consumer arguments (the faust runtime's consumer)."""
    s = fetch_settings(config)
    return {"fetch_max_bytes": s["fetch.max.bytes"], "max_partition_fetch_bytes": s["max.partition.fetch.bytes"]}


def consumer_settings(config: DriftlineConfig, group: bool = True,
                      environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Consumer settings (read_committed, manual commits); ``group=False`` gives the bare client set."""
    out = client_settings(config, environ)
    if not group:
        return out
    k = config.kafka
    out.update({
        "group.id": k.group_id, "enable.auto.commit": False, "auto.offset.reset": "earliest",
        "isolation.level": "read_committed", "enable.partition.eof": False,
        **fetch_settings(config),
    })
    out.update(k.client_options)
    return out


def producer_settings(config: DriftlineConfig, transactional_id: str | None = None,
                      environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Idempotent producer settings; transactional when ``transactional_id`` is given."""
    out = client_settings(config, environ)
    out.update({"enable.idempotence": True, "acks": "all", "linger.ms": 5, "compression.type": "lz4"})
    if transactional_id is not None:
        out["transactional.id"] = transactional_id
    out.update(config.kafka.client_options)
    return out


def redis_client(spec: RedisSpec, environ: Mapping[str, str] | None = None) -> Any:
    """A ``redis.Redis`` for the ``redis`` section (password from ``password_env``)."""
    import redis

    kwargs: dict[str, Any] = {"socket_timeout": spec.socket_timeout_seconds,
                              "socket_connect_timeout": spec.socket_timeout_seconds}
    if spec.username is not None:
        kwargs["username"] = spec.username
    if spec.password_env is not None:
        kwargs["password"] = resolve_env(spec.password_env, "redis.password_env", environ)
    url = spec.url
    if spec.tls and url.startswith("redis://"):
        url = "rediss://" + url.removeprefix("redis://")
    if spec.uses_tls:  # the server's certificate is always verified, host name included
        kwargs.update(ssl_cert_reqs="required", ssl_check_hostname=True, ssl_ca_certs=spec.ssl_ca_location,
                      ssl_certfile=spec.ssl_certificate_location, ssl_keyfile=spec.ssl_key_location)
        if spec.ssl_key_password_env is not None:
            kwargs["ssl_password"] = resolve_env(spec.ssl_key_password_env, "redis.ssl_key_password_env", environ)
    return redis.Redis.from_url(url, **kwargs)


def aiokafka_settings(config: DriftlineConfig, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The ``kafka.security`` section as aiokafka client arguments (the faust runtime's clients)."""
    import ssl

    s = config.kafka.security
    out: dict[str, Any] = {"security_protocol": s.protocol}
    if s.protocol.endswith("SSL"):  # the broker's certificate is always verified, host name included
        password = (resolve_env(s.ssl_key_password_env, "kafka.security.ssl_key_password_env", environ)
                    if s.ssl_key_password_env is not None else None)
        try:
            context = ssl.create_default_context(cafile=s.ssl_ca_location)
            if s.ssl_certificate_location is not None:
                context.load_cert_chain(s.ssl_certificate_location, s.ssl_key_location, password)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"kafka.security: cannot load the TLS files: {exc}") from None
        out["ssl_context"] = context
    if s.protocol.startswith("SASL"):
        out.update(sasl_mechanism=s.sasl_mechanism, sasl_plain_username=s.sasl_username,
                   sasl_plain_password=resolve_env(s.sasl_password_env, "kafka.security.sasl_password_env", environ))
    return out
