"""The ``driftline`` command: run a worker, check a config, read and verify control messages.

Subcommands import their heavy dependencies (Kafka, Redis, the detection core) only when run, so
``driftline check-config`` and ``driftline control verify`` work on a machine without brokers.
Exit codes: 0 success, 1 a check failed (bad signature, missing state, Kafka or Redis unusable at a
worker's start), 2 bad usage or configuration (one line per problem: ``key.path: message``).
"""
from __future__ import annotations

import argparse
import contextlib
import gzip
import importlib
import json
import logging
import re
import sys
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from stream.config import ConfigError, DriftlineConfig, load_config
from stream.preflight import StartupError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
_DELEGATED = {  # subcommand -> (module, help)
    "replay": ("stream.replay", "run the detectors over recorded JSONL logs, without Kafka or Redis"),
    "drill": ("stream.drill", "replay a synthetic incident scenario and score detection"),
    "demo": ("stream.demo", "poisoned canary on the local stack, from first event to verified rollback"),
    "init": ("stream.starter", "write a starter config from a sample of your logs (JSONL file or Kafka topic)"),
    "registry": ("stream.registry_cli", "model-registry keys, signed release announcements, the live manifest"),
}


def _err(msg: str) -> None:
    print(f"driftline: {msg}", file=sys.stderr)


def _config_error(exc: ConfigError) -> int:
    """Report a configuration error, one line per problem (``key.path: message``); exit code 2."""
    for line in str(exc).splitlines() or ["invalid configuration"]:
        _err(line)
    return EXIT_USAGE


def _load(path: str) -> DriftlineConfig | None:
    try:
        return load_config(path)
    except ConfigError as exc:
        _config_error(exc)
        return None


def _start_service(args: argparse.Namespace) -> DriftlineConfig | None:
    """Load the configuration, set up logging and the process's malloc arenas for a long-running
    command (None: config refused).

    A ConfigError raised later, where a secret or file is resolved, reaches :func:`main`, which
    prints it as one line per problem and exits 2."""
    config = _load(args.config)
    if config is not None:
        logging.basicConfig(level=getattr(logging, args.log_level),
                            format="%(asctime)s %(levelname)s %(name)s %(message)s")
        from stream.allocator import limit_arenas

        limit_arenas(config.process.malloc_arenas)  # before the Kafka client and the server start threads
    return config


# -- run / check-config ---------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    """Run one worker until SIGTERM."""
    config = _start_service(args)
    if config is None:
        return EXIT_USAGE
    from stream.worker import run

    return int(run(config, worker_id=args.worker_id) or 0)


def cmd_faust_worker(args: argparse.Namespace) -> int:
    """Run one worker of the faust-streaming runtime until SIGTERM."""
    config = _start_service(args)
    if config is None:
        return EXIT_USAGE
    from stream.faust_app import run

    return int(run(config, worker_id=args.worker_id, log_level=args.log_level) or 0)


def check_secrets(config: DriftlineConfig) -> list[str]:
    """Problems resolving the secrets and files the configuration names (empty when all resolve)."""
    from stream.config import client_settings, redis_client, resolve_env, verification_keys
    from stream.preflight import check_files

    problems = []
    checks: list[tuple[str, Any]] = [("signing", lambda: verification_keys(config.signing)),
                                     ("files", lambda: check_files(config)),
                                     ("kafka", lambda: client_settings(config)),
                                     ("redis", lambda: redis_client(config.redis))]
    for i, hook in enumerate(config.actuation.webhooks if config.actuation else ()):
        if hook.bearer_token_env:
            checks.append(("actuation", lambda env=hook.bearer_token_env, i=i: resolve_env(
                env, f"actuation.webhooks[{i}].bearer_token_env")))
    for what, resolve in checks:
        try:
            resolve()
        except ConfigError as exc:
            problems.append(str(exc))
        except Exception as exc:  # noqa: BLE001 - a client library refusing the settings
            problems.append(f"{what}: {exc}")
    if config.registry is not None:
        from stream.registry import load_public_keys

        try:
            load_public_keys(config.registry.public_keys)
        except ValueError as exc:
            problems.append(str(exc))
    for i, m in enumerate(config.monitor.models):
        if m.reference_file:
            problems.extend(f"monitor.models[{i}].reference_file: {p}" for p in _check_profile(m))
    return problems


def _check_profile(spec: Any) -> list[str]:
    from detectors.errors import ProfileFormatError
    from detectors.profile import ReferenceProfile

    try:
        ReferenceProfile.from_dict(spec, json.loads(Path(spec.reference_file).read_text(encoding="utf-8")))
    except OSError as exc:
        return [f"cannot read {spec.reference_file}: {exc.strerror or exc}"]
    except (ValueError, ProfileFormatError) as exc:
        return [f"{spec.reference_file}: {exc}"]
    return []


def cmd_check_config(args: argparse.Namespace) -> int:
    """Validate the configuration (and, unless told not to, resolve its secrets)."""
    config = _load(args.config)
    if config is None:
        return EXIT_USAGE
    problems = [] if args.no_secrets else check_secrets(config)
    if problems:
        for problem in problems:
            _err(f"{args.config}: {problem}")
        return EXIT_USAGE
    k = config.kafka
    print(f"{args.config}: OK ({len(config.monitor.models)} model(s), "
          f"{len(k.inference_topics)} inference topic(s), {len(k.label_topics)} label topic(s), "
          f"control topic {k.control_topic})")
    return EXIT_OK


# -- control ----------------------------------------------------------------------------------------
_KEY_REF = re.compile(r"([A-Za-z0-9._:-]{1,128})=(.+)")


def _cli_keys(args: argparse.Namespace) -> dict[str, Any]:
    """Keys given as repeatable ``--key-file [ID=]PATH`` / ``--key-env [ID=]VAR``; raises ConfigError."""
    from stream.config import read_key

    keys: dict[str, Any] = {}
    for option, refs in (("--key-file", args.key_file), ("--key-env", args.key_env)):
        for ref in refs:
            m = _KEY_REF.fullmatch(ref)
            key_id, source = (m.group(1), m.group(2)) if m else (args.key_id or "default", ref)
            if key_id in keys:
                raise ConfigError(f"{option} {ref}: key id {key_id!r} is given twice")
            where = {"key_file": source} if option == "--key-file" else {"key_env": source}
            keys[key_id] = read_key(key_id, key_encoding=args.key_encoding, what=f"{option} {ref}", **where)
    return keys


def _keys(args: argparse.Namespace, config: DriftlineConfig | None = None) -> tuple[dict[str, Any], Any]:
    """The verification keyring and freshness window from the command line or the configuration.

    Keys: every ``--key-file`` / ``--key-env`` given, else the configuration's signing key and
    ``signing.verification_keys``. Freshness: ``--max-age`` / ``--max-skew``, else the
    configuration's ``signing`` window, else 300 s / 30 s; ``--any-age`` checks signatures only.
    Raises ConfigError.
    """
    from stream.config import verification_keys
    from stream.signing import DEFAULT_MAX_AGE_SECONDS, DEFAULT_MAX_SKEW_SECONDS, Freshness

    if config is None and args.config:
        config = load_config(args.config)
    if args.key_file or args.key_env:
        keys = _cli_keys(args)
    elif config is not None:
        spec = config.signing if not args.key_id else config.signing.model_copy(update={"key_id": args.key_id})
        keys = verification_keys(spec)
    else:
        raise ConfigError("give the verification key with --key-env, --key-file or --config")
    if args.any_age:
        return keys, None
    signing = config.signing if config is not None else None
    max_age = args.max_age if args.max_age is not None else (
        signing.max_age_seconds if signing else DEFAULT_MAX_AGE_SECONDS)
    max_skew = args.max_skew if args.max_skew is not None else (
        signing.max_clock_skew_seconds if signing else DEFAULT_MAX_SKEW_SECONDS)
    if max_age <= 0 or max_skew < 0:
        raise ConfigError("--max-age must be positive and --max-skew not negative")
    return keys, Freshness(max_age, max_skew)


def _open_input(name: str) -> IO[bytes]:
    return sys.stdin.buffer if name == "-" else open(name, "rb")


def cmd_control_verify(args: argparse.Namespace) -> int:
    """Verify control messages from files or stdin; 0 only if every rollback signature verifies."""
    from stream.control import check, read_documents

    try:
        keys, freshness = _keys(args)
    except ConfigError as exc:
        _err(str(exc))
        return EXIT_USAGE
    failed = total = rollbacks = 0
    for name in args.files or ["-"]:
        try:
            fh = _open_input(name)
        except OSError as exc:
            _err(f"cannot read {name}: {exc.strerror or exc}")
            return EXIT_USAGE
        with fh if name != "-" else contextlib.nullcontext(fh):
            for item in read_documents(fh, name):
                total += 1
                result = check(item.doc, keys, freshness) if not item.error else None
                kind = item.doc.get("kind") if isinstance(item.doc, dict) else None
                rollbacks += kind == "rollback"
                ident = item.doc.get("id") if isinstance(item.doc, dict) else None
                if result is not None and result.ok:
                    if not args.quiet:
                        status = ("signature verified" + ("" if freshness is None else ", fresh")
                                  if kind == "rollback" else "well-formed (unsigned kind)")
                        print(f"OK    {item.where} {kind} {ident}: {status}")
                else:
                    failed += 1
                    reason = item.error or (result.reason if result is not None else "unreadable")
                    print(f"FAIL  {item.where} {kind or '-'} {ident or '-'}: {reason}")
    if total == 0:
        _err("no control messages in the input")
        return EXIT_FAILED
    if not args.quiet:
        print(f"{total} message(s), {rollbacks} rollback(s), {failed} failed", file=sys.stderr)
    return EXIT_FAILED if failed else EXIT_OK


def cmd_control_tail(args: argparse.Namespace) -> int:
    """Print control-topic messages (read_committed) and verify rollback signatures inline."""
    config = _load(args.config)
    if config is None:
        return EXIT_USAGE
    from confluent_kafka import Consumer

    from stream.config import consumer_settings
    from stream.control import check, describe, parse_message

    try:
        keys, freshness = _keys(args, config)
        settings = consumer_settings(config, group=False)
    except ConfigError as exc:
        _err(str(exc))
        return EXIT_USAGE
    settings.update({"group.id": f"{config.kafka.group_id}-tail-{uuid.uuid4().hex[:12]}",
                     "enable.auto.commit": False, "isolation.level": "read_committed",
                     "auto.offset.reset": "earliest" if args.from_beginning else "latest"})
    consumer = Consumer(settings)
    consumer.subscribe([config.kafka.control_topic])
    seen = bad = 0
    idle = 0.0
    try:
        while args.max is None or seen < args.max:
            msgs = consumer.consume(min(100, args.max - seen) if args.max else 100, 0.5)
            if not msgs:
                idle += 0.5
                if args.idle_timeout is not None and idle >= args.idle_timeout:
                    break
                continue
            idle = 0.0
            for msg in msgs:
                if msg.error() is not None:
                    continue
                seen += 1
                item = parse_message(msg.value(), f"{msg.partition()}:{msg.offset()}")
                if item.error:
                    bad += 1
                    print(f"# {item.where} invalid: {item.error}", file=sys.stderr, flush=True)
                    continue
                doc = item.doc
                result = check(doc, keys, freshness)
                bad += not result.ok
                if args.json:
                    print(json.dumps(doc, sort_keys=True), flush=True)
                else:
                    print(describe(doc), flush=True)
                if doc.get("kind") == "rollback" or not result.ok:
                    status = "signature verified" if result.ok else f"REJECTED: {result.reason}"
                    print(f"# {doc.get('kind')} {doc.get('id')}: {status}", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    return EXIT_FAILED if bad else EXIT_OK


def cmd_control_act(args: argparse.Namespace) -> int:
    """Apply verified rollback commands from the control topic through the configured actions."""
    config = _start_service(args)
    if config is None:
        return EXIT_USAGE
    from stream.actuation import main

    try:
        return main(config)
    except OSError as exc:  # the HTTP endpoint's address is taken or not local
        _err(f"actuation: cannot serve on {config.actuation.host}:{config.actuation.port}: {exc.strerror or exc}")
        return EXIT_USAGE


# -- state ------------------------------------------------------------------------------------------
def cmd_state_show(args: argparse.Namespace) -> int:
    """Print the committed detector state of one model as JSON statistics."""
    config = _load(args.config)
    if config is None:
        return EXIT_USAGE
    spec = next((m for m in config.monitor.models if m.name == args.model), None)
    if spec is None:
        _err(f"model {args.model!r} is not in the configuration "
             f"(configured: {', '.join(m.name for m in config.monitor.models)})")
        return EXIT_USAGE
    from detectors.engine import ModelMonitor
    from detectors.errors import StateFormatError
    from stream.config import redis_client
    from stream.state import StateStore

    try:
        store = StateStore(redis_client(config.redis), config.redis.key_prefix, config.kafka.group_id)
        blob = store.load_model(args.model)
    except ConfigError as exc:
        _err(str(exc))
        return EXIT_USAGE
    if blob is None:
        _err(f"no committed state for model {args.model!r} under prefix {config.redis.key_prefix!r}")
        return EXIT_FAILED
    mon = config.monitor
    try:
        monitor = ModelMonitor.from_bytes(spec, mon.calibration, mon.alerts, blob, mon.max_tracked_versions,
                                          registry=config.registry is not None)
    except StateFormatError as exc:
        _err(f"state of {args.model!r} is unreadable: {exc}")
        return EXIT_FAILED
    out = {"model": args.model, "state_bytes": len(blob), "stats": monitor.stats}
    print(json.dumps(out, indent=2, sort_keys=True, default=str))
    return EXIT_OK


# -- profile ----------------------------------------------------------------------------------------
def _lines(path: str) -> Iterator[bytes]:
    raw = sys.stdin.buffer if path == "-" else open(path, "rb")
    head = raw.peek(2)[:2] if hasattr(raw, "peek") else b""
    fh = gzip.GzipFile(fileobj=raw) if head == b"\x1f\x8b" else raw
    try:
        yield from fh
    finally:
        if path != "-":
            raw.close()


def cmd_profile(args: argparse.Namespace) -> int:
    """Build a reference profile of one model from an inference JSONL log."""
    config = _load(args.config)
    if config is None:
        return EXIT_USAGE
    spec = next((m for m in config.monitor.models if m.name == args.model), None)
    if spec is None:
        _err(f"model {args.model!r} is not in the configuration")
        return EXIT_USAGE
    topics = config.kafka.inference_topics
    topic = next((t for t in topics if t.name == args.inference_topic), None) if args.inference_topic else topics[0]
    if topic is None:
        _err(f"no inference topic named {args.inference_topic!r} in the configuration")
        return EXIT_USAGE
    from detectors.profile import build_profile
    from stream.decoding import DecodeError, decoder_for_topic

    decoder = decoder_for_topic(topic)
    version = args.version or spec.stable_version
    limit = args.limit or spec.reference_size
    events, skipped, lines = [], 0, 0
    try:
        for line in _lines(args.inference):
            if not line.strip():
                continue
            lines += 1
            try:
                e = decoder.decode_inference(line)
            except DecodeError:
                skipped += 1
                continue
            if e.model == spec.name and e.deployment == args.deployment and (version is None or e.model_version == version):
                events.append(e)
                if len(events) >= limit:
                    break
    except OSError as exc:
        _err(f"cannot read {args.inference}: {exc.strerror or exc}")
        return EXIT_USAGE
    if not events:
        _err(f"no {args.deployment} events of model {spec.name!r}"
             f"{f' version {version!r}' if version else ''} in {lines} line(s)")
        return EXIT_FAILED
    profile = build_profile(spec, events)
    text = json.dumps(profile.to_dict(), indent=1, sort_keys=True)
    if args.out == "-":
        print(text)
    else:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    print(f"profile of {spec.name} from {len(events)} event(s) ({skipped} undecodable line(s) skipped)"
          f"{'' if len(events) >= limit else f'; fewer than the {limit} wanted'}", file=sys.stderr)
    return EXIT_OK


# -- parser -----------------------------------------------------------------------------------------
def _add_key_options(p: argparse.ArgumentParser) -> None:
    """Verification keys (several during a rotation) and the freshness window of rollback commands."""
    from stream.config import KEY_ENCODINGS

    p.add_argument("--key-file", action="append", default=[], metavar="[ID=]PATH",
                   help="file holding an HMAC key; repeatable, ID= names its key id (write ./PATH for a path with '=')")
    p.add_argument("--key-env", action="append", default=[], metavar="[ID=]VAR",
                   help="environment variable holding an HMAC key; repeatable, ID= names its key id")
    p.add_argument("--key-id", default=None,
                   help="key id of keys given without ID= (default: 'default'), or of the config's signing key")
    p.add_argument("--key-encoding", default="text", choices=KEY_ENCODINGS,
                   help="how --key-file/--key-env keys are encoded (default: text)")
    p.add_argument("--max-age", type=float, default=None, metavar="SECONDS",
                   help="refuse rollbacks issued longer ago (default: the config's signing.max_age_seconds, else 300)")
    p.add_argument("--max-skew", type=float, default=None, metavar="SECONDS",
                   help="refuse rollbacks dated further ahead of this clock (default: the config's, else 30)")
    p.add_argument("--any-age", action="store_true", help="check signatures only, not freshness (audit of old dumps)")


def build_parser() -> argparse.ArgumentParser:
    """The ``driftline`` argument parser (delegated subcommands are listed, parsed by their module)."""
    parser = argparse.ArgumentParser(prog="driftline", description="Integrity monitor for production ML models.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run a worker (Kafka in, control messages out)")
    p.add_argument("--config", required=True, help="driftline YAML configuration")
    p.add_argument("--worker-id", default="0", help="unique per process of the group (transactional id)")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("faust-worker", help="run a worker of the faust-streaming runtime (same topics and state)")
    p.add_argument("--config", required=True, help="driftline YAML configuration")
    p.add_argument("--worker-id", default="0", help="unique per process of the group (transactional id)")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.set_defaults(func=cmd_faust_worker)

    p = sub.add_parser("check-config", help="validate a configuration; exit 2 with the offending key path")
    p.add_argument("--config", required=True)
    p.add_argument("--no-secrets", action="store_true", help="do not resolve *_env variables and key files")
    p.set_defaults(func=cmd_check_config)

    control = sub.add_parser("control", help="read and verify control-topic messages")
    csub = control.add_subparsers(dest="control_command", required=True, metavar="ACTION")
    p = csub.add_parser("tail", help="print control-topic messages, verifying rollback signatures")
    p.add_argument("--config", required=True)
    p.add_argument("--from-beginning", action="store_true")
    p.add_argument("--max", type=int, default=None, help="stop after N messages")
    p.add_argument("--idle-timeout", type=float, default=None, help="stop after this many idle seconds")
    p.add_argument("--json", action="store_true", help="print the raw JSON documents")
    _add_key_options(p)
    p.set_defaults(func=cmd_control_tail)
    p = csub.add_parser("verify", help="verify control messages (JSON lines, array or object) from files or stdin")
    p.add_argument("files", nargs="*", metavar="FILE", help="input files, - for stdin (default)")
    p.add_argument("--config", help="take the keys and freshness window from this configuration's signing section")
    _add_key_options(p)
    p.add_argument("--quiet", action="store_true", help="print failures only")
    p.set_defaults(func=cmd_control_verify)

    p = csub.add_parser("act", help="apply verified rollback commands (webhooks, Flagger) once each")
    p.add_argument("--config", required=True, help="driftline YAML configuration with an actuation section")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.set_defaults(func=cmd_control_act)

    state = sub.add_parser("state", help="inspect detector state in Redis")
    ssub = state.add_subparsers(dest="state_command", required=True, metavar="ACTION")
    p = ssub.add_parser("show", help="print a model's committed detector statistics")
    p.add_argument("--config", required=True)
    p.add_argument("--model", required=True)
    p.set_defaults(func=cmd_state_show)

    p = sub.add_parser("profile", help="build a reference profile file from an inference JSONL log")
    p.add_argument("--config", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--inference", required=True, help="inference JSONL (.gz accepted, - for stdin)")
    p.add_argument("--out", required=True, help="profile JSON to write (- for stdout)")
    p.add_argument("--version", help="model version (default: the model's stable_version)")
    p.add_argument("--deployment", default="stable", choices=["stable", "canary", "shadow"])
    p.add_argument("--limit", type=int, default=None, help="events to use (default: the model's reference_size)")
    p.add_argument("--inference-topic", help="use this inference topic's field mapping (default: the first)")
    p.set_defaults(func=cmd_profile)

    for name, (_, help_text) in _DELEGATED.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def _delegate(name: str, argv: Sequence[str]) -> int:
    module = importlib.import_module(_DELEGATED[name][0])
    parser = argparse.ArgumentParser(prog=f"driftline {name}", description=_DELEGATED[name][1])
    module.add_arguments(parser)
    return int(module.run(parser.parse_args(list(argv))) or 0)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``driftline`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] in _DELEGATED:
            return _delegate(argv[0], argv[1:])
        args = build_parser().parse_args(argv)
        return int(args.func(args))
    except ConfigError as exc:  # raised where a secret or file is resolved, e.g. at worker start
        return _config_error(exc)
    except StartupError as exc:  # a worker's start-up check: Kafka or Redis unusable as configured
        _err(str(exc))
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
