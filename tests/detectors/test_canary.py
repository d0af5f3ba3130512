import numpy as np

from detectors.canary import rollback_key


def mixed(runner, n, canary_p=None, seed=0, canary_share=0.1, conf_ab=(8.0, 2.0)):
    """Interleaved stable (v1) and canary (v2) traffic, in one ordered stream."""
    from detectors.simulate import make_events
    stable = make_events(runner.spec, n, seed=seed, version="v1", deployment="stable", start=runner.pos,
                         t0=runner.pos / 100)
    m = int(n * canary_share)
    canary = make_events(runner.spec, m, seed=seed + 1000, version="v2", deployment="canary",
                         start=runner.pos + n, t0=runner.pos / 100, class_p=canary_p, conf_ab=conf_ab)
    evs = sorted(stable + canary, key=lambda e: (e.ts, e.position))
    for i, e in enumerate(evs):
        e.position = runner.pos + i
    runner.pos += len(evs)
    for i in range(0, len(evs), 300):
        runner.messages += runner.mon.process_inference(evs[i:i + 300])
    return evs


def rollbacks(runner):
    return [m.to_dict() for m in runner.messages if m.to_dict()["kind"] == "rollback"]


def test_diverging_canary_is_rolled_back(runner):
    mixed(runner, 20000, canary_p=np.array([0.6, 0.15, 0.2, 0.05]))
    rb = rollbacks(runner)
    assert len(rb) == 1, runner.counts()
    r = rb[0]
    assert r["canary_version"] == "v2" and r["stable_version"] == "v1"
    assert r["idempotency_key"] == rollback_key("filter", "v2", "v1")
    alert_ids = {m.to_dict()["id"] for m in runner.messages if m.to_dict()["kind"] == "alert"}
    assert r["evidence"] and set(r["evidence"]) <= alert_ids
    mixed(runner, 5000, canary_p=np.array([0.6, 0.15, 0.2, 0.05]), seed=5)
    assert len(rollbacks(runner)) == 1  # decided once per canary version


def test_confidence_divergence(runner):
    mixed(runner, 20000, conf_ab=(4.0, 4.0))
    assert runner.counts("canary_divergence").get("canary_divergence/confidence"), runner.counts()
    assert rollbacks(runner)


def test_healthy_canary_is_left_alone(runner):
    mixed(runner, 30000)
    assert rollbacks(runner) == [] and runner.counts() == {}


def test_error_rate_divergence(runner):
    from detectors.simulate import make_labels
    evs = mixed(runner, 30000)
    stable = [e for e in evs if e.deployment == "stable"]
    canary = [e for e in evs if e.deployment == "canary"]
    labs = make_labels(stable, seed=1, error_rate=0.05, double_label=0) + \
        make_labels(canary, seed=2, error_rate=0.2, double_label=0)
    labs.sort(key=lambda j: j.label.ts)
    for i in range(0, len(labs), 300):
        runner.messages += runner.mon.process_labels(labs[i:i + 300])
    assert runner.counts("canary_divergence").get("canary_divergence/error_rate"), runner.counts()
    assert rollbacks(runner)
