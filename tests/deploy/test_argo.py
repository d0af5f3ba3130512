"""The Argo Rollouts AnalysisTemplate: its shape, and its PromQL against the real Prometheus during a drill."""
from __future__ import annotations

import json
import operator
import os
import re
import shutil
import socket
import subprocess
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest
import yaml

from stream.metrics import WorkerMetrics, metric_names

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "deploy" / "argo" / "analysis-template.yaml"
_CONDITION = re.compile(r"result\[0\]\s*(==|!=|>=|<=|>|<)\s*(-?[0-9.]+)")
_OPS = {"==": operator.eq, "!=": operator.ne, ">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}


def template() -> dict:
    return yaml.safe_load(TEMPLATE.read_text())


def metrics_by_name() -> dict[str, dict]:
    return {m["name"]: m for m in template()["spec"]["metrics"]}


def render(text: str, **args: str) -> str:
    """Substitute ``{{args.NAME}}`` as Argo does (given values, else the template's defaults)."""
    values = {a["name"]: a.get("value") for a in template()["spec"]["args"]}
    values.update(args)

    def sub(m: re.Match) -> str:
        value = values.get(m.group(1))
        assert value is not None, f"argument {m.group(1)} has no value"
        return value

    out = re.sub(r"\{\{\s*args\.([A-Za-z0-9_-]+)\s*\}\}", sub, text)
    assert "{{" not in out, out
    return out


def holds(condition: str, result: list[float]) -> bool:
    """Evaluate an Argo condition of the form ``result[0] OP NUMBER`` (the only form the template uses)."""
    m = _CONDITION.fullmatch(condition.strip())
    assert m is not None, f"condition {condition!r} is not of the form result[0] OP NUMBER"
    return _OPS[m.group(1)](result[0], float(m.group(2)))


def test_template_is_an_analysis_template_with_prometheus_metrics():
    doc = template()
    assert (doc["apiVersion"], doc["kind"]) == ("argoproj.io/v1alpha1", "AnalysisTemplate")
    args = {a["name"] for a in doc["spec"]["args"]}
    assert {"model", "prometheus-address", "job", "window"} <= args
    for m in doc["spec"]["metrics"]:
        prom = m["provider"]["prometheus"]
        assert prom["address"] == "{{args.prometheus-address}}"
        assert holds(m["successCondition"], [0.0]) != holds(m["successCondition"], [5.0])
        assert holds(m["failureCondition"], [0.0]) == (not holds(m["successCondition"], [0.0]))
    assert metrics_by_name()["driftline-rollback"]["failureLimit"] == 0


def test_queries_use_exported_metrics_and_pass_promtool(tmp_path):
    known = metric_names(WorkerMetrics().registry)
    exprs = [render(m["provider"]["prometheus"]["query"], model="content-filter").strip()
             for m in template()["spec"]["metrics"]]
    used = {n for e in exprs for n in re.findall(r"\bdriftline_[a-z0-9_]+\b", e)}
    assert used and used <= known, sorted(used - known)
    rules = {"groups": [{"name": "argo", "rules": [{"record": f"argo:q{i}", "expr": e} for i, e in enumerate(exprs)]}]}
    path = tmp_path / "argo-rules.yml"
    path.write_text(yaml.safe_dump(rules))
    promtool = shutil.which("promtool") or "/usr/bin/promtool"
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_conditions_are_evaluated_strictly():
    assert holds("result[0] == 0", [0.0]) and not holds("result[0] > 0", [0.0]) and holds("result[0] >= 1", [1.0])
    with pytest.raises(AssertionError):
        holds("len(result) == 0", [0.0])


# -- the PromQL against the stack's Prometheus scraping a real worker during a drill -------------------
def _scraped_port() -> int:
    """A port the stack's Prometheus scrapes (DRIFTLINE_METRICS_PORTS) that is free right now."""
    for port in reversed(os.environ.get("DRIFTLINE_METRICS_PORTS", "9464 9465 19464").split()):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", int(port)))
            except OSError:
                continue
            return int(port)
    pytest.fail("every metrics port the stack's Prometheus scrapes is taken")


def _query(stack, promql: str) -> list[dict]:
    url = f"{stack.prometheus_url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
    with urllib.request.urlopen(url, timeout=10) as resp:
        body = json.load(resp)
    assert body["status"] == "success", body
    return body["data"]["result"]


def _measure(stack, metric: str, model: str) -> list[float]:
    """What Argo's Prometheus provider hands the conditions: the vector's values."""
    query = render(metrics_by_name()[metric]["provider"]["prometheus"]["query"], model=model)
    return [float(r["value"][1]) for r in _query(stack, query)]


@pytest.mark.integration
def test_rollback_query_flips_from_success_to_failure_when_the_canary_misbehaves(stack, tmp_path):
    from tests.stream.worker_harness import (
        inference_events, make_scenario, model_spec, produce, start_worker, stop_worker, wait_until,
    )

    model = f"argo-{uuid.uuid4().hex[:8]}"
    scenario = make_scenario(tmp_path, stack, models=[model_spec(model)])
    config = yaml.safe_load(scenario.config_path.read_text())
    config["metrics"]["port"] = _scraped_port()
    scenario.config_path.write_text(yaml.safe_dump(config))
    rollback_metric = metrics_by_name()["driftline-rollback"]
    ready_metric = metrics_by_name()["driftline-ready"]

    def interleave(n: int, start: int, backdoor: bool) -> list[dict]:
        stable = inference_events(model, n, seed=40 + start, start=start)
        canary = inference_events(model, n, seed=41 + start, start=start, version="v2", deployment="canary",
                                  backdoor=backdoor)
        return [e for pair in zip(stable, canary) for e in pair]

    produce(stack, scenario.inference_topic, interleave(1500, 0, backdoor=False))
    worker = start_worker(scenario)
    try:
        # healthy canary: the series exists at 0 and the analysis succeeds
        wait_until(lambda: _query(stack, f'driftline_events_total{{model="{model}"}} >= 3000')
                   and _query(stack, f'driftline_rollbacks_total{{model="{model}"}}'),
                   timeout=90, what="Prometheus to scrape the worker's healthy traffic")
        healthy = _measure(stack, "driftline-rollback", model)
        assert healthy == [0.0]
        assert holds(rollback_metric["successCondition"], healthy)
        assert not holds(rollback_metric["failureCondition"], healthy)
        ready = _measure(stack, "driftline-ready", model)
        assert holds(ready_metric["successCondition"], ready), ready

        # the canary starts flagging every image with the backdoor trigger: driftline rolls it back
        produce(stack, scenario.inference_topic, interleave(2000, 1500, backdoor=True))
        failing = wait_until(lambda: [v for v in _measure(stack, "driftline-rollback", model) if v > 0],
                             timeout=120, what="the rollback query to see the drill's rollback")
        assert holds(rollback_metric["failureCondition"], failing)
        assert not holds(rollback_metric["successCondition"], failing)
    finally:
        stop_worker(worker)


def test_rollback_query_counts_a_series_born_with_its_first_rollback(tmp_path):
    """promtool on synthetic series: the rollback query sees every way a rollback shows up."""
    series = {  # model -> values every 15 s ('_': no sample yet)
        "born-at-one": "_x7 1x30",          # a restarted worker's first batch carried the rollback
        "born-at-zero": "0x8 1x30",         # exported at 0, then the rollback
        "after-restart": "1x8 0x2 1x30",    # counter reset by a restart, then a rollback
        "quiet": "0x40",
    }
    expected = {  # (model, eval time) -> does the analysis fail (failureCondition holds)?
        ("born-at-one", "2m30s"): True, ("born-at-one", "6m"): False,
        ("born-at-zero", "2m30s"): True, ("born-at-zero", "6m"): False,
        ("after-restart", "3m30s"): True, ("after-restart", "7m"): False,
        ("quiet", "2m30s"): False, ("absent", "2m30s"): False,
    }
    rollback = metrics_by_name()["driftline-rollback"]
    assert holds(rollback["failureCondition"], [1.0]) and not holds(rollback["failureCondition"], [0.0])
    tests = [{"expr": f"({render(rollback['provider']['prometheus']['query'], model=model).strip()}) > bool 0",
              "eval_time": at, "exp_samples": [{"labels": "{}", "value": int(fails)}]}
             for (model, at), fails in expected.items()]
    ready = render(metrics_by_name()["driftline-ready"]["provider"]["prometheus"]["query"]).strip()
    tests.append({"expr": f"({ready}) >= bool 1", "eval_time": "1m", "exp_samples": [{"labels": "{}", "value": 0}]})
    doc = {"rule_files": [], "evaluation_interval": "15s", "tests": [{
        "interval": "15s",
        "input_series": [{"series": f'driftline_rollbacks_total{{job="driftline", model="{m}", instance="w:9464"}}',
                          "values": v} for m, v in series.items()],
        "promql_expr_test": tests}]}
    path = tmp_path / "argo_test.yml"
    path.write_text(yaml.safe_dump(doc))
    promtool = shutil.which("promtool") or "/usr/bin/promtool"
    result = subprocess.run([promtool, "test", "rules", path.name], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
