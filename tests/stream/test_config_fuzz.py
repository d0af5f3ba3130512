"""Fuzzing the configuration loader: any file gives a configuration or a ConfigError naming the problem.

Sources: arbitrary bytes (invalid UTF-8 included), YAML text, and the shipped example broken at
one to three positions (wrong types, NaN, huge integers, lone surrogates, deep nesting, huge
lists, removed or renamed keys). Properties: ``load_config``/``parse_config`` raise only
:class:`ConfigError` with a printable message; a configuration they accept builds its decoders
and client settings.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream.config import ConfigError, DriftlineConfig, consumer_settings, load_config, parse_config
from stream.decoding import build_decoders
from tests.json_strategies import SMALL_MUTANTS, mutated

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "content-filter.yaml"
CONFIGS = st.builds(lambda: yaml.safe_load(EXAMPLE.read_text()))
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))


def check_accepted(cfg: DriftlineConfig) -> None:
    build_decoders(cfg)
    consumer_settings(cfg)


def load_bytes(tmp: Path, raw: bytes) -> DriftlineConfig | None:
    path = tmp / "driftline.yaml"
    path.write_bytes(raw)
    try:
        cfg = load_config(path)
    except ConfigError as err:
        str(err).encode("utf-8", "backslashreplace")
        assert str(err)
        return None
    check_accepted(cfg)
    return cfg


def dump(doc: Any, style: str) -> bytes:
    """YAML of ``doc`` (surrogates written as escapes), or JSON, which YAML also reads."""
    import json

    try:
        if style == "json":
            return json.dumps(doc).encode()
        return yaml.safe_dump(doc, allow_unicode=False).encode()
    except (RecursionError, ValueError, yaml.YAMLError):
        return b"[" * 3000


@FUZZ
@given(raw=st.binary(max_size=400))
def test_arbitrary_bytes(raw: bytes, tmp_path_factory: pytest.TempPathFactory) -> None:
    load_bytes(tmp_path_factory.mktemp("cfg"), raw)


@FUZZ
@given(raw=st.builds(dump, mutated(CONFIGS, values=SMALL_MUTANTS), st.sampled_from(["yaml", "json"])))
def test_mutated_example(raw: bytes, tmp_path_factory: pytest.TempPathFactory) -> None:
    load_bytes(tmp_path_factory.mktemp("cfg"), raw)


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(doc=mutated(CONFIGS, values=SMALL_MUTANTS))
def test_parse_config_of_any_document(doc: Any) -> None:
    try:
        cfg = parse_config(doc)
    except ConfigError as err:
        assert str(err)
        return
    check_accepted(cfg)


@pytest.mark.parametrize("raw", [
    b"[" * 1000, b"a: " + b"[" * 1000, b"{" * 1000, b"- " * 1000 + b"x",
    b"\xff\xfe\x00k\x00a\x00f\x00k\x00a", "kafka: caf\u00e9".encode("latin-1"), b"kafka: !!python/object:os.system x",
    b"kafka: &a [*a]", b"? [a, b]\n: c",
], ids=["deep-flow-list", "deep-value", "deep-flow-map", "deep-block-list", "utf16", "latin1", "python-tag",
        "self-alias", "complex-key"])
def test_hostile_yaml(raw: bytes, tmp_path: Path) -> None:
    assert load_bytes(tmp_path, raw) is None


def test_alias_expansion_stays_cheap(tmp_path: Path) -> None:
    """A billion-laughs document (10 levels of 10 aliases) is refused without expanding it."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 10):
        refs = ", ".join([f"*a{i - 1}"] * 10)
        lines.append(f"a{i}: &a{i} [{refs}]")
    doc = yaml.safe_load(EXAMPLE.read_text())
    body = yaml.safe_dump(doc).replace("classes:\n", "classes: *a9\n_classes:\n", 1)
    started = time.monotonic()
    assert load_bytes(tmp_path, ("\n".join(lines) + "\n" + body).encode()) is None
    assert time.monotonic() - started < 10
