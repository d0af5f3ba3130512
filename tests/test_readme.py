"""README stays true: its quick start commands exist, CI runs its test command, its metrics exist."""
from __future__ import annotations

import re
from pathlib import Path

from stream.metrics import WorkerMetrics, metric_names

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _quick_start() -> list[str]:
    block = README.split("## Quick start", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    return [line.split("#", 1)[0].strip() for line in block.strip().splitlines()]


def test_quick_start_is_two_make_targets_that_exist():
    commands = _quick_start()
    assert commands == ["make demo", "make test"]
    makefile = (ROOT / "Makefile").read_text()
    for command in commands:
        assert re.search(rf"^{command.split()[1]}:", makefile, re.M), f"Makefile lacks target for {command}"


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert _quick_start()[1] in [line.strip() for line in ci]


def test_every_metric_in_the_readme_exists():
    from stream.actuation import ActuationMetrics

    names = metric_names(WorkerMetrics().registry) | metric_names(ActuationMetrics().registry)
    mentioned = set(re.findall(r"`(driftline_[a-z_]+)`", README))
    assert mentioned, "README lists no metrics"
    missing = sorted(m for m in mentioned if m not in names and f"{m}_bucket" not in names)
    assert not missing, f"README names metrics the worker does not export: {missing}"


def test_rollback_check_example_is_exact():
    import json

    from stream.signing import SigningKey, canonical_bytes, sign, verify

    section = README.split("### Checking a rollback command", 1)[1].split("\n## ", 1)[0]
    command = json.loads(section.split("```json", 1)[1].split("```", 1)[0])
    canonical = section.split("```text", 1)[1].split("```", 1)[0].strip().encode()
    key = SigningKey("2026-11", b"demo-only-signing-key-change-me")
    assert canonical_bytes(command) == canonical
    assert verify(command, key, now=command["issued_at"] + 10).ok
    assert verify(command, key, now=command["issued_at"] + 301).reason.startswith("expired")
    assert sign(command, key, issued_at=command["issued_at"]) == command
    assert f"is\n`{command['signature']}`" in section


def test_actuation_example_is_accepted_with_the_example_config():
    import yaml

    from stream.config import parse_config

    section = README.split("## Closing the rollback loop", 1)[1].split("\n## ", 1)[0]
    example = yaml.safe_load(section.split("```yaml", 1)[1].split("```", 1)[0])
    doc = yaml.safe_load((ROOT / "examples" / "content-filter.yaml").read_text())
    doc.update(example)
    act = parse_config(doc).actuation
    assert act.webhooks[0].name == "deploy-bot" and act.flagger.canaries[0].model == "content-filter"
    flagger_url = section.split("type: rollback", 1)[1].split("url:", 1)[1].split()[0]
    assert flagger_url.endswith("/rollback/prod/content-filter") and f":{act.port}/" in flagger_url
