"""Example alerting rules and dashboard: valid for promtool, and only referencing metrics that exist."""
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from stream.metrics import WorkerMetrics, metric_names

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "driftline.json"
METRIC = re.compile(r"\bdriftline_[a-z0-9_]+\b")
KNOWN = metric_names(WorkerMetrics().registry)


def rule_exprs() -> list[str]:
    doc = yaml.safe_load(RULES.read_text())
    return [r["expr"] for g in doc["groups"] for r in g["rules"]]


def dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    exprs += [v["definition"] for v in dash["templating"]["list"] if "definition" in v]
    exprs += [a["expr"] for a in dash["annotations"]["list"] if "expr" in a]
    return exprs


def test_promtool_accepts_the_rules():
    promtool = shutil.which("promtool") or "/usr/bin/promtool"
    if not Path(promtool).exists():
        pytest.fail("promtool is not installed")
    result = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_rules_fire_on_synthetic_series():
    promtool = shutil.which("promtool") or "/usr/bin/promtool"
    unit = Path(__file__).with_name("alerts_test.yml")
    result = subprocess.run([promtool, "test", "rules", unit.name], capture_output=True, text=True, cwd=unit.parent)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("source", ["rules", "dashboard"])
def test_every_referenced_metric_is_exported(source):
    exprs = rule_exprs() if source == "rules" else dashboard_exprs()
    used = {name for e in exprs for name in METRIC.findall(e)}
    assert used, "no driftline metric referenced"
    assert used <= KNOWN, sorted(used - KNOWN)


def test_the_check_can_fail():
    assert not {"driftline_no_such_metric"} <= KNOWN
    assert METRIC.findall("rate(driftline_events_total[5m])") == ["driftline_events_total"]


def test_rules_page_on_rollbacks_and_page_alerts():
    exprs = " ".join(rule_exprs())
    assert "driftline_rollbacks_total" in exprs and 'severity="page"' in exprs


def test_dashboard_shape():
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] == "driftline" and dash["panels"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for p in dash["panels"]:
        assert p["targets"] and all(t["expr"] for t in p["targets"])
