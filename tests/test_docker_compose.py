"""The Docker Compose stack is valid and every command it runs exists in the project."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

import argparse
import importlib

from stream.cli import _DELEGATED, build_parser

ROOT = Path(__file__).resolve().parents[1]


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_file_validates_with_docker_compose():
    exe = shutil.which("docker-compose")
    assert exe, "docker-compose (Debian package) is required to validate docker-compose.yml"
    result = subprocess.run([exe, "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr


def test_compose_has_the_whole_stack():
    services = _compose()["services"]
    assert {"kafka", "redis", "prometheus", "alertmanager", "driftline", "control-act", "drill"} <= set(services)


@pytest.mark.parametrize("service", ["driftline", "control-act", "drill"])
def test_driftline_commands_in_compose_parse_with_the_real_cli(service):
    command = _compose()["services"][service]["command"]
    if command[0] in _DELEGATED:
        parser = argparse.ArgumentParser()
        importlib.import_module(_DELEGATED[command[0]][0]).add_arguments(parser)
        parser.parse_args(command[1:])
    else:
        args = build_parser().parse_args(command)
        assert callable(getattr(args, "func", None)), f"{command!r} does not name a driftline subcommand"


def test_files_mounted_by_compose_exist():
    for name, service in _compose()["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
    assert (ROOT / "Dockerfile").exists()


def test_dockerfile_copies_only_existing_paths():
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY "):
            for src in line.split()[1:-1]:
                assert (ROOT / src).exists(), f"Dockerfile copies missing {src}"


def test_compose_ports_bind_loopback_only():
    for name, service in _compose()["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"


# -- security: the compose stack and the local stack grant the Redis ACL user the same commands,
# and those are every command driftline's state store and start-up check send
_METHOD_COMMANDS = {"delete": ["del"], "execute": [], "pipeline": [], "acl_whoami": ["acl|whoami"],
                    "register_script": ["evalsha", "script|load"]}
_REDIS_MODULES = ("stream/state.py", "stream/actuation.py", "stream/flagger.py", "stream/preflight.py")


def _commands_sent() -> set[str]:
    """Redis commands of every client call and Lua ``redis.call`` in the modules that talk to Redis."""
    sent = {"auth", "hello"}  # the client's handshake
    for module in _REDIS_MODULES:
        text = (ROOT / module).read_text()
        for call in re.findall(r"\b(?:self\._r|pipe|client)\.([a-z_]+)\(", text):
            sent.update(_METHOD_COMMANDS.get(call, [call]))
        sent.update(c.lower() for c in re.findall(r"redis\.call\('([A-Za-z]+)'", text))
        if "transaction=True" in text:
            sent.update({"multi", "exec"})
    return sent


def _stack_acl() -> set[str]:
    stack = (ROOT / "scripts" / "stack").read_text()
    return set(re.search(r'^REDIS_USER_COMMANDS="([^"]+)"', stack, re.M).group(1).split())


def _compose_acl() -> set[str]:
    command = _compose()["services"]["redis"]["command"][0]
    return {t.strip("'").removeprefix("+") for t in command.split() if t.strip("'").startswith("+")}


def test_redis_acl_user_may_run_every_command_driftline_sends():
    missing = sorted(_commands_sent() - _stack_acl())
    assert not missing, f"add {missing} to REDIS_USER_COMMANDS in scripts/stack, docker-compose.yml and README"
    assert _compose_acl() == _stack_acl()
    readme = (ROOT / "README.md").read_text().split("ACL SETUSER driftline", 1)[1].split("```", 1)[0]
    assert {t.removeprefix("+") for t in readme.split() if t.startswith("+")} == _stack_acl()


def test_compose_worker_uses_sasl_ssl_and_tls_redis_with_secrets_from_the_environment():
    from stream.config import load_config

    config = load_config(ROOT / "deploy" / "compose" / "driftline.yaml")
    assert config.kafka.security.protocol == "SASL_SSL" and config.kafka.security.sasl_mechanism == "SCRAM-SHA-512"
    assert config.redis.uses_tls and config.redis.username and config.redis.ssl_ca_location
    env = _compose()["services"]["driftline"]["environment"]
    assert {config.kafka.security.sasl_password_env, config.redis.password_env, config.signing.key_env} <= set(env)
