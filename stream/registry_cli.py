"""``driftline registry``: make deploy keys, announce a release, show the manifest driftline holds.

    driftline registry keygen --key-id deploy-2026 --out-dir keys/
    driftline registry publish --config driftline.yaml --key-file keys/deploy-2026.key \\
        --model content-filter --version v8 --digest sha256:<64 hex> --stage canary
    driftline registry show --config driftline.yaml [--model content-filter]

``publish`` signs with the private key (the deploy step holds it; workers hold only the public
key) and produces to ``kafka.registry_topic``; ``--print`` writes the signed line to stdout instead
(for a registry log to replay, or another producer). Exit codes: 0 success, 1 failed, 2 bad usage.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _err(msg: str) -> None:
    print(f"driftline registry: {msg}", file=sys.stderr)


def cmd_keygen(args: argparse.Namespace) -> int:
    """Write ``KEY_ID.key`` (private, 0600) and ``KEY_ID.pub`` (public) into ``--out-dir``."""
    from stream.registry import generate_key, write_keypair

    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    private, public = out / f"{args.key_id}.key", out / f"{args.key_id}.pub"
    if private.exists() or public.exists():
        _err(f"{private} or {public} exists; not overwriting a key")
        return EXIT_USAGE
    write_keypair(generate_key(), private, public)
    print(f"private key (deploy step only, mode 0600): {private}\npublic key (workers): {public}\n"
          f"worker configuration:\n  registry:\n    public_keys:\n      {args.key_id}: {public}")
    return EXIT_OK


def cmd_publish(args: argparse.Namespace) -> int:
    """Sign one registry event and produce it to the registry topic (or print it)."""
    from stream.registry import RegistryError, load_private_key, normalize_digest, sign_event

    try:
        key = load_private_key(args.key_file)
    except (OSError, ValueError) as exc:
        _err(f"cannot load the private key {args.key_file}: {exc}")
        return EXIT_USAGE
    config = None
    if not args.print:
        if not args.config:
            _err("publish needs --config (brokers and kafka.registry_topic) or --print")
            return EXIT_USAGE
        from stream.config import ConfigError, load_config

        try:
            config = load_config(args.config)
        except ConfigError as exc:
            _err(f"invalid configuration {args.config}:\n{exc}")
            return EXIT_USAGE
        if not config.kafka.registry_topic:
            _err(f"{args.config} sets no kafka.registry_topic")
            return EXIT_USAGE
        if args.model not in {m.name for m in config.monitor.models}:
            _err(f"model {args.model!r} is not in {args.config}")
            return EXIT_USAGE
    try:
        doc = sign_event(key, args.key_id or Path(args.key_file).stem, args.model, args.version,
                         normalize_digest(args.digest), args.stage, issued_at=args.issued_at, sequence=args.sequence)
    except (ValueError, RegistryError) as exc:
        _err(str(exc))
        return EXIT_USAGE
    line = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    if config is None:
        print(line)
        return EXIT_OK
    return _produce(config, doc["model"], line.encode())


def _produce(config: Any, model: str, value: bytes) -> int:
    from confluent_kafka import KafkaException, Producer

    from stream.config import ConfigError, client_settings

    try:
        settings = client_settings(config)
    except ConfigError as exc:
        _err(str(exc))
        return EXIT_USAGE
    settings.update({"enable.idempotence": True, "acks": "all"})
    failures: list[str] = []
    try:
        producer = Producer(settings)
        producer.produce(config.kafka.registry_topic, value=value, key=model.encode(),
                         on_delivery=lambda err, _msg: failures.append(str(err)) if err else None)
        left = producer.flush(30)
    except (KafkaException, BufferError) as exc:
        _err(f"cannot produce to {config.kafka.registry_topic}: {exc}")
        return EXIT_FAILED
    if left or failures:
        _err(f"not delivered to {config.kafka.registry_topic}: {failures[0] if failures else 'timed out'}")
        return EXIT_FAILED
    print(value.decode())
    return EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    """Print each model's manifest as committed in Redis (JSON)."""
    from stream.config import ConfigError, load_config

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        _err(f"invalid configuration {args.config}:\n{exc}")
        return EXIT_USAGE
    specs = [m for m in config.monitor.models if args.model is None or m.name == args.model]
    if not specs:
        _err(f"model {args.model!r} is not in {args.config}")
        return EXIT_USAGE
    if config.registry is None:
        _err(f"{args.config} has no registry: the allowed versions are the static `versions:` lists")
        return EXIT_USAGE
    from detectors.engine import ModelMonitor
    from detectors.errors import StateFormatError
    from stream.config import redis_client
    from stream.state import StateStore

    try:
        store = StateStore(redis_client(config.redis), config.redis.key_prefix, config.kafka.group_id)
        blobs = store.load_models([m.name for m in specs])
    except ConfigError as exc:
        _err(str(exc))
        return EXIT_USAGE
    mon = config.monitor
    out: dict[str, Any] = {}
    code = EXIT_OK
    for spec in specs:
        blob = blobs.get(spec.name)
        if blob is None:
            out[spec.name] = {"state": "none committed yet", "allowed": sorted(spec.versions)}
            continue
        try:
            monitor = ModelMonitor.from_bytes(spec, mon.calibration, mon.alerts, blob, mon.max_tracked_versions,
                                              registry=True)
        except StateFormatError as exc:
            out[spec.name] = {"state": f"unreadable: {exc}"}
            code = EXIT_FAILED
            continue
        out[spec.name] = dict(monitor.manifest.describe(), allowed=sorted(monitor.listed))
    print(json.dumps(out, indent=2, sort_keys=True))
    return code


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``driftline registry``."""
    from detectors.manifest import STAGES

    sub = parser.add_subparsers(dest="registry_command", required=True, metavar="ACTION")
    p = sub.add_parser("keygen", help="write an Ed25519 key pair: KEY_ID.key (private, 0600) and KEY_ID.pub")
    p.add_argument("--key-id", required=True, help="name the workers know the public key by")
    p.add_argument("--out-dir", default=".", help="directory for the key files")
    p.set_defaults(func=cmd_keygen)
    p = sub.add_parser("publish", help="sign a release and produce it to the registry topic")
    p.add_argument("--config", help="driftline configuration (brokers, kafka.registry_topic)")
    p.add_argument("--key-file", required=True, help="Ed25519 private key (PEM) from keygen")
    p.add_argument("--key-id", help="key id (default: the key file's name without extension)")
    p.add_argument("--model", required=True)
    p.add_argument("--version", required=True)
    p.add_argument("--digest", required=True, help="artifact digest, sha256:<64 hex>")
    p.add_argument("--stage", required=True, choices=list(STAGES))
    p.add_argument("--sequence", type=int, default=None,
                   help="strictly increasing per model version (default: now in milliseconds)")
    p.add_argument("--issued-at", type=int, default=None, help="seconds since the epoch (default: now)")
    p.add_argument("--print", action="store_true", help="print the signed event instead of producing it")
    p.set_defaults(func=cmd_publish)
    p = sub.add_parser("show", help="print the manifest each model's committed state holds")
    p.add_argument("--config", required=True)
    p.add_argument("--model", default=None)
    p.set_defaults(func=cmd_show)


def run(args: argparse.Namespace) -> int:
    """Execute ``driftline registry ACTION``."""
    return int(args.func(args))


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point (``python -m stream.registry_cli ...``)."""
    parser = argparse.ArgumentParser(prog="driftline registry", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
