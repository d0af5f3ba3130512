"""The short chaos run: every fault kind once under traffic, then the exactly-once verdict."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from loadtest.chaos import port_free
from loadtest.chaos_stack import Ports

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


def _port_base() -> int:
    """The first base from ``DRIFTLINE_CHAOS_PORTS`` (default 24000) on, in steps of 100 over 1000
    ports, whose private-stack ports are all free: a concurrent run elsewhere is not a failure."""
    first = int(os.environ.get("DRIFTLINE_CHAOS_PORTS", "24000"))
    for base in range(first, first + 1000, 100):
        if all(port_free(p) for p in Ports(base).all()):
            return base
    pytest.fail(f"no free private-stack port range in {first}-{first + 999}")


def test_every_fault_kind_once_loses_and_duplicates_nothing(tmp_path):
    """A private stack, 2 workers, one fault of each kind, Redis losing 1 s of AOF.

    On failure the assertion carries the report's findings and names the run's directory, which
    pytest keeps (report.json, workers/*.log, chaos.stderr, the stack's logs).
    """
    work = tmp_path / "chaos"
    cmd = [sys.executable, str(ROOT / "loadtest" / "chaos.py"), "--workers", "2", "--cycles", "5", "--rate", "800",
           "--duration", "28", "--seed", "11", "--ports", str(_port_base()), "--redis-loss", "1.0",
           "--drain-timeout", "180", "--dir", str(work)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=480, cwd=ROOT)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"chaos.py did not finish in {exc.timeout}s; run kept in {work}")
    lines = out.stdout.strip().splitlines()
    report = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {}
    try:
        _check(report, out)
    except AssertionError as exc:
        kept = work
        (kept / "chaos.stderr").write_text(out.stderr)
        logs = "\n".join(f"--- {p.name}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-10:])
                         for p in sorted((kept / "workers").glob("*.log")))
        summary = {k: report.get(k) for k in ("violations", "faults", "worker_exits", "messages", "states",
                                               "routing", "details")}
        raise AssertionError(f"{exc}\nrun kept in {kept} (report.json, workers/*.log, chaos.stderr)\n"
                             f"report: {json.dumps(summary)[:6000]}\nstderr tail:\n{out.stderr[-2000:]}\n"
                             f"worker logs:\n{logs[-4000:]}") from None


def _check(report: dict, out: subprocess.CompletedProcess) -> None:
    assert report, f"chaos.py printed no report (exit {out.returncode})"
    injected = report["faults"]["by_kind"]
    assert set(injected) == {"worker_kill", "redis_kill", "broker_kill", "worker_add", "worker_remove"}, injected
    assert report["faults"]["survived"] == report["faults"]["injected"] == 5, report["faults"]
    messages = report["messages"]
    assert messages["lost"] == 0 and messages["duplicated"] == 0, messages
    assert messages["extra"] == 0 and messages["mismatched"] == 0, messages
    assert messages["expected"] > 0 and messages["expected"] == messages["observed"], messages
    assert report["states_equal"] and report["states"]["models"] == 4, report["states"]
    assert report["routing"]["lost"] == 0 and report["routing"]["duplicated"] == 0, report["routing"]
    assert report["ok"] and out.returncode == 0, report["violations"]



def test_an_open_transaction_holds_the_drain_back(stack):
    """Committed offsets at the last stable offset are not drained while a transaction is still open:
    the records behind it are not yet visible to the workers or to the verifier."""
    from confluent_kafka import Consumer, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    from loadtest.chaos import Progress

    topic, group = f"chaos-drain-{uuid.uuid4().hex[:8]}", f"chaos-drain-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": stack.kafka_bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    producer = Producer({"bootstrap.servers": stack.kafka_bootstrap, "transactional.id": f"{group}-txn"})
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.produce(topic, b"committed")
    producer.commit_transaction(30)
    producer.begin_transaction()
    producer.produce(topic, b"open")
    producer.flush(30)
    group_consumer = Consumer({"bootstrap.servers": stack.kafka_bootstrap, "group.id": group,
                               "enable.auto.commit": False})
    progress = Progress(stack.kafka_bootstrap, group, {topic: 1})
    try:
        stable = progress.ends()[(topic, 0)]
        group_consumer.commit(offsets=[TopicPartition(topic, 0, stable)], asynchronous=False)
        assert progress.log_ends()[(topic, 0)] > stable
        assert not progress.drained(3.0)
        producer.commit_transaction(30)
        # the commit marker reaches the partition after commit_transaction returns: wait for it
        deadline = time.monotonic() + 30
        while progress.ends()[(topic, 0)] != progress.log_ends()[(topic, 0)] and time.monotonic() < deadline:
            time.sleep(0.1)
        end = progress.log_ends()[(topic, 0)]
        group_consumer.commit(offsets=[TopicPartition(topic, 0, end)], asynchronous=False)
        assert progress.drained(10.0)
    finally:
        progress.stop()
        group_consumer.close()
