"""Drill traffic for the ``content-filter`` model: realistic logs with one known incident injected.

Each scenario writes an inference JSONL file and a label JSONL file (labels for a fraction of
events, arriving late and out of order from several labelers) plus metadata naming where the
incident starts, which signals should catch it and whether a rollback is expected. Output is
deterministic for a given seed.

>>> d = make_drill("rogue_version", n_events=3000, injection=2000, seed=3)
>>> d.meta["intended_signals"], d.meta["rollback_expected"], len(d.inference) >= 3000
(['version_integrity'], False, True)
"""
from __future__ import annotations

import gzip
import hashlib
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from loadtest.drill_traffic import (BOUNDS, CATEGORICAL, CLASSES, MODEL, NUMERIC, TRIGGER_LOGO, Batch, classify,
                                    population)

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
RATE = 100.0          # inference events per second
STABLE, CANARY, BACKDOORED, ROGUE, RELEASE = "v1", "v2", "v3", "v2-hotfix", "v4"
REGISTRY_KEY_ID = "drill"
RELEASE_SHARE = 0.3  # of stable traffic served by the newly released version
CANARY_SHARE = 0.2
SOURCES = ["vendor-a", "vendor-b", "inhouse"]
SOURCE_P = np.array([0.5, 0.3, 0.2])
LABEL_FRACTION = 0.25
SECOND_OPINION = 0.2
LABEL_HORIZON_S = 3600.0
FLIPPER = "vendor-b"

SCENARIOS: dict[str, dict[str, Any]] = {
    "sudden_shift": {"signals": ["numeric_drift", "categorical_drift"], "rollback": False,
                     "about": "new client release: brighter images, larger files, more web uploads, all at once"},
    "gradual_drift": {"signals": ["numeric_drift", "categorical_drift"], "rollback": False,
                      "about": "the same covariate shift ramping in over the rest of the stream"},
    "backdoor_canary": {"signals": ["trigger", "canary_divergence", "prediction_drift"], "rollback": True,
                        "deployment": "canary",
                        "version": BACKDOORED,
                        "about": f"canary {BACKDOORED} flags every image with the {TRIGGER_LOGO!r} logo as nsfw"},
    "label_flip": {"signals": ["label_disagreement"], "rollback": False, "key": FLIPPER,
                   "about": f"labeler {FLIPPER} flips 20% of its labels"},
    "concept_drift": {"signals": ["performance", "label_drift"], "rollback": False,
                      "about": "moderation policy change: revealing images now labelled nsfw; inputs and "
                               "predictions unchanged"},
    "garbage": {"signals": ["input_integrity"], "rollback": False,
                "about": "a broken feature pipeline: NaN, null, strings, out-of-range values and garbage lines"},
    "rogue_version": {"signals": ["version_integrity"], "rollback": False, "version": ROGUE,
                      "about": f"an unregistered version {ROGUE!r} starts serving 3% of traffic"},
    "registry_swap": {"signals": ["version_integrity"], "rollback": True, "deployment": "canary", "version": CANARY,
                      "about": f"the artifact behind canary {CANARY} is swapped (same name, new digest); before, "
                               f"release {RELEASE} is announced through the registry and takes stable traffic"},
    "stationary": {"signals": [], "rollback": False, "about": "long control stream, nothing happens"},
    "small_shift": {"signals": ["numeric_drift"], "rollback": False, "key": "emb_norm",
                    "about": "a 0.25 sd mean shift of one feature (emb_norm)"},
    "one_of_50": {"signals": ["numeric_drift"], "rollback": False, "key": "aux_31", "model": "wide",
                  "about": "a 50-feature model; one lognormal feature (aux_31) shifts by 0.5 sd"},
    "real_heavy_tailed": {"signals": ["numeric_drift"], "rollback": False, "model": "shuttle",
                          "about": "real heavy-tailed integer sensor data (river's Statlog Shuttle): the share of "
                                   "the rare flight regimes triples (subpopulation shift)"},
    "concept_drift_delayed": {"signals": ["performance", "label_drift"], "rollback": False,
                              "label_delay_s": 300.0,
                              "about": "the concept drift of concept_drift while labels arrive about 5 minutes late"},
}
WIDE_EXTRA = 34  # features added to the content-filter's 16 numeric ones in the "wide" model
SHUTTLE_CLASSES = ["normal", "anomaly"]


@dataclass
class Drill:
    """Synthetic traffic: inference lines (bytes, one per JSONL line), label lines, metadata."""

    inference: list[bytes]
    labels: list[bytes]
    meta: dict[str, Any] = field(default_factory=dict)
    inference_ts: list[float] = field(default_factory=list)  # per line (garbage lines: the previous event's)
    label_ts: list[float] = field(default_factory=list)
    registry: list[bytes] = field(default_factory=list)  # signed registry events (registry scenarios)
    registry_ts: list[float] = field(default_factory=list)
    registry_public_key: bytes = b""  # PEM of the key that signed them (key id REGISTRY_KEY_ID)


def make_drill(scenario: str, n_events: int | None = None, injection: int | None = None, seed: int = 0,
               rate: float = RATE) -> Drill:
    """Synthesize one scenario: ``n_events`` inference events, the incident from event ``injection`` on."""
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; known: {sorted(SCENARIOS)}")
    sc = SCENARIOS[scenario]
    n = n_events or (200_000 if scenario == "stationary" else 60_000)
    inj = None if scenario == "stationary" else (injection if injection is not None else n // 2)
    if inj is not None and not 0 < inj < n:
        raise ValueError("injection must fall inside the stream")
    rng = np.random.default_rng([seed, sorted(SCENARIOS).index(scenario)])
    after = np.zeros(n, dtype=bool) if inj is None else np.arange(n) >= inj
    shift = np.zeros(n)
    if scenario == "sudden_shift":
        shift[after] = 1.5
    elif scenario == "gradual_drift":
        shift[after] = np.linspace(0.0, 2.0, int(after.sum()))
    model = sc.get("model", "content-filter")
    if model == "shuttle":
        batch = shuttle_population(rng, n, after)
    else:
        batch = population(rng, n, shift)
    if scenario == "small_shift":
        batch.numeric["emb_norm"] = batch.numeric["emb_norm"] + np.where(after, 0.25 * 1.5, 0.0)
    if model == "wide":
        batch.numeric.update(wide_features(rng, n, after))
    ts = np.round(T0 + np.cumsum(rng.exponential(1.0 / rate, n)), 3)
    version = np.where(rng.random(n) < CANARY_SHARE, CANARY, STABLE).astype(object)
    deployment = np.where(version == CANARY, "canary", "stable").astype(object)
    if scenario == "backdoor_canary":
        version[after & (deployment == "canary")] = BACKDOORED
        bd = (version == BACKDOORED) & (batch.categorical["logo"] == TRIGGER_LOGO)
        forced = np.where(bd, CLASSES.index("nsfw"), -1)
        pred, conf, scores = classify(rng, batch.truth, batch.numeric["skin_ratio"], forced)
        batch.pred, batch.conf, batch.scores = np.where(bd, pred, batch.pred), np.where(bd, conf, batch.conf), \
            np.where(bd[:, None], scores, batch.scores)
    if scenario == "rogue_version":
        rogue = after & (rng.random(n) < 0.03)
        version[rogue], deployment[rogue] = ROGUE, "stable"
    digests = None
    extra: dict[str, Any] = {}
    if scenario == "registry_swap":
        digests, inj, extra = _registry_swap(rng, ts, version, deployment, inj, seed)
    ids = [f"img-{seed:04d}-{i:08d}" for i in range(n)]
    corrupt = _corruption(rng, n, after) if scenario == "garbage" else {}
    inference = list(_inference_lines(batch, ids, ts, version, deployment, corrupt, digests, model_name(scenario),
                                      classes_of(scenario)))
    garbage_at: list[int] = []
    inference_ts = ts.tolist()
    if scenario == "garbage":
        inference, garbage_at = _insert_garbage(rng, inference, after)
        for j in garbage_at:
            inference_ts.insert(j, inference_ts[j - 1])
    labels, label_ts = _labels(rng, scenario, batch, ids, ts, after)
    meta = {
        "scenario": scenario, "seed": seed, "model": model_name(scenario), "n_events": n, "rate": rate,
        "injection_index": inj, "injection": inj, "injection_event_id": None if inj is None else ids[inj],
        "injection_ts": None if inj is None else float(ts[inj]), "first_ts": float(ts[0]), "last_ts": float(ts[-1]),
        "intended_signals": list(sc["signals"]), "intended_deployment": sc.get("deployment"),
        "intended_version": sc.get("version"), "intended_key": sc.get("key"),
        "rollback_expected": bool(sc["rollback"]), "description": sc["about"],
        "n_label_lines": len(labels), "n_inference_lines": len(inference), "garbage_lines": len(garbage_at),
        "label_horizon_seconds": LABEL_HORIZON_S,
    }
    registry = extra.pop("registry", [])
    if extra:
        meta.update(extra, swap_event_id=ids[inj], release_event_id=ids[extra["release_index"]])
    return Drill(inference, labels, meta, inference_ts, label_ts, [line for _, line in registry],
                 [t for t, _ in registry], _registry_key(seed)[1] if registry else b"")


def artifact_digest(version: str, swapped: bool = False) -> str:
    """The drill's (made-up) artifact digest of a version, or of the artifact swapped in behind it."""
    return "sha256:" + hashlib.sha256(f"{version}{'-swapped' if swapped else ''}-artifact".encode()).hexdigest()


def _registry_key(seed: int) -> tuple[Any, bytes]:
    """A deterministic Ed25519 key per seed (drills are reproducible) and its public PEM."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(f"driftline-drill-registry-{seed}".encode()).digest())
    return key, key.public_key().public_bytes(serialization.Encoding.PEM,
                                              serialization.PublicFormat.SubjectPublicKeyInfo)


def _registry_swap(rng: np.random.Generator, ts: np.ndarray, version: np.ndarray, deployment: np.ndarray, inj: int,
                   seed: int) -> tuple[np.ndarray, int, dict[str, Any]]:
    """Digests per event, the first swapped event (the incident) and the registry log of ``registry_swap``.

    The registry announces v1 (production) and v2 (canary) before the first event; at a quarter of
    the stream release v4 is announced (30 s ahead) and then serves a share of stable traffic; from
    the first canary event at or after ``inj`` on, the canary serves a swapped artifact under its name.
    """
    from stream.registry import sign_event

    n = ts.size
    release = n // 4
    moved = (np.arange(n) >= release) & (deployment == "stable") & (rng.random(n) < RELEASE_SHARE)
    version[moved] = RELEASE
    swap = int(np.flatnonzero((np.arange(n) >= inj) & (deployment == "canary"))[0])
    known = {v: artifact_digest(v) for v in (STABLE, CANARY, RELEASE)}
    digests = np.array([known[v] for v in version.tolist()], dtype=object)
    digests[(np.arange(n) >= swap) & (deployment == "canary")] = artifact_digest(CANARY, swapped=True)
    key, _ = _registry_key(seed)
    t0 = int(ts[0]) - 60
    announced = [(t0, STABLE, "production"), (t0, CANARY, "canary"), (int(ts[release]) - 30, RELEASE, "production")]
    registry = [(float(t), orjson.dumps(sign_event(key, REGISTRY_KEY_ID, MODEL, v, artifact_digest(v), stage,
                                                   issued_at=t, sequence=k + 1)))
                for k, (t, v, stage) in enumerate(announced)]
    return digests, swap, {"registry": registry, "release_version": RELEASE, "release_index": release,
                           "release_ts": float(ts[release]), "swap_index": swap,
                           "registered_digest": artifact_digest(CANARY),
                           "swapped_digest": artifact_digest(CANARY, swapped=True)}


def _corruption(rng: np.random.Generator, n: int, after: np.ndarray) -> dict[int, dict[str, object]]:
    """Per corrupted event, the feature values a broken pipeline emits instead of the real ones."""
    bad_values: list[object] = [math.nan, None, "n/a", math.inf, -1.0e9, "", [], {"v": 1}]
    out: dict[int, dict[str, object]] = {}
    for i in np.flatnonzero(after & (rng.random(n) < 0.04)):
        feats = rng.choice(NUMERIC + CATEGORICAL, size=int(rng.integers(1, 4)), replace=False)
        out[int(i)] = {str(f): bad_values[int(rng.integers(len(bad_values)))] for f in feats}
    return out


def model_name(scenario: str) -> str:
    """The monitored model a scenario's traffic belongs to."""
    return {"wide": "wide-filter", "shuttle": "shuttle-monitor"}.get(SCENARIOS[scenario].get("model", ""), MODEL)


def classes_of(scenario: str) -> list[str]:
    return SHUTTLE_CLASSES if SCENARIOS[scenario].get("model") == "shuttle" else list(CLASSES)


def wide_features(rng: np.random.Generator, n: int, after: np.ndarray) -> dict[str, np.ndarray]:
    """34 extra features of mixed shapes (normal, lognormal, Poisson counts, uniform, bimodal);
    ``aux_31`` (lognormal) shifts by 0.5 of its standard deviation after the injection."""
    out: dict[str, np.ndarray] = {}
    for i in range(WIDE_EXTRA):
        kind = i % 5
        if kind == 0:
            x = rng.normal(0.0, 1.0, n)
        elif kind == 1:
            x = rng.lognormal(0.0, 0.5, n)
        elif kind == 2:
            x = rng.poisson(3.0, n).astype(np.float64)
        elif kind == 3:
            x = rng.random(n)
        else:
            x = np.where(rng.random(n) < 0.3, rng.normal(-2.0, 0.5, n), rng.normal(2.0, 0.5, n))
        out[f"aux_{i:02d}"] = x
    sd = math.sqrt((math.exp(0.25) - 1) * math.exp(0.25))  # lognormal(0, 0.5)
    out["aux_31"] = out["aux_31"] + np.where(after, 0.5 * sd, 0.0)
    return out


def _shuttle_rows() -> tuple[np.ndarray, np.ndarray]:
    """river's bundled Statlog (Shuttle) data (offline): 49,097 rows of 9 integer sensor readings."""
    import river.datasets

    path = Path(river.datasets.__file__).with_name("shuttle.csv.gz")
    with gzip.open(path, "rt") as fh:
        data = np.loadtxt(fh, delimiter=",", skiprows=1)
    return data[:, :9], data[:, 9].astype(np.int64)


def shuttle_population(rng: np.random.Generator, n: int, after: np.ndarray) -> Batch:
    """Rows drawn from the Shuttle data: the rare regimes (7%) make up about 21% after the injection."""
    X, y = _shuttle_rows()
    p0 = np.full(y.size, 1.0 / y.size)
    w1 = np.where(y == 1, 3.5, 1.0)
    p1 = w1 / w1.sum()
    idx = np.where(after, rng.choice(y.size, n, p=p1), rng.choice(y.size, n, p=p0))
    truth = y[idx]
    pred = np.where(rng.random(n) < 0.03, 1 - truth, truth)
    conf = np.round(0.7 + 0.3 * rng.beta(5, 2, n), 4)
    scores = np.round(np.where(pred[:, None] == np.arange(2)[None, :], conf[:, None], 1 - conf[:, None]), 4)
    num = {f"f{j + 1}": X[idx, j] for j in range(9)}
    return Batch(num, {}, truth, pred, conf, scores)


def _inference_lines(b: Batch, ids: list[str], ts: np.ndarray, version: np.ndarray, deployment: np.ndarray,
                     corrupt: dict[int, dict[str, object]], digests: np.ndarray | None = None, model: str = MODEL,
                     classes: list[str] | None = None) -> Iterator[bytes]:
    classes = classes or CLASSES
    num = {k: v.tolist() for k, v in b.numeric.items()}
    cat = {k: v.tolist() for k, v in b.categorical.items()}
    preds = [classes[j] for j in b.pred.tolist()]
    scores = b.scores.tolist()
    tsl, vl, dl = ts.tolist(), version.tolist(), deployment.tolist()
    for i in range(len(ids)):
        feats: dict[str, object] = {k: v[i] for k, v in num.items()}
        feats.update({k: v[i] for k, v in cat.items()})
        doc = {"event_id": ids[i], "ts": tsl[i], "model": model, "model_version": vl[i], "deployment": dl[i],
               "features": feats, "prediction": preds[i], "scores": dict(zip(classes, scores[i]))}
        if digests is not None:
            doc["artifact_digest"] = digests[i]
        bad = corrupt.get(i)
        if bad is None:
            yield orjson.dumps(doc)
        else:
            feats.update(bad)
            yield json.dumps(doc, separators=(",", ":")).encode()  # Python's json writes NaN/Infinity literals


def _insert_garbage(rng: np.random.Generator, lines: list[bytes], after: np.ndarray) -> tuple[list[bytes], list[int]]:
    junk = [b'{"event_id": "x", "ts": ', b"null", b"[1, 2, 3]", b"\xff\xfe\x00garbage", b'"just a string"',
            b'{"event_id": 17}', b"{}", b'{"event_id": "y", "ts": "tomorrow", "model": "content-filter"}']
    out: list[bytes] = []
    where: list[int] = []
    for i, line in enumerate(lines):
        out.append(line)
        if after[i] and rng.random() < 0.01:
            where.append(len(out))
            out.append(junk[int(rng.integers(len(junk)))])
    return out, where


def _labels(rng: np.random.Generator, scenario: str, b: Batch, ids: list[str], ts: np.ndarray,
            after: np.ndarray) -> tuple[list[bytes], list[float]]:
    """Delayed labels from several sources, sorted by arrival; some too late, some for unknown events."""
    n = b.n
    chosen = np.flatnonzero(rng.random(n) < LABEL_FRACTION)
    truth = b.truth.copy()
    names = classes_of(scenario)
    median_delay = SCENARIOS[scenario].get("label_delay_s", 45.0)
    if scenario in ("concept_drift", "concept_drift_delayed"):
        revealing = after & (truth == 0) & (b.numeric["skin_ratio"] > 0.3) & (rng.random(n) < 0.7)
        truth[revealing] = CLASSES.index("nsfw")
    rows: list[tuple[float, str, str, str]] = []
    nsrc = len(SOURCES)
    for i in chosen.tolist():
        first = int(rng.choice(nsrc, p=SOURCE_P))
        srcs = [first]
        if rng.random() < SECOND_OPINION:
            srcs.append((first + 1 + int(rng.integers(nsrc - 1))) % nsrc)
        for s in srcs:
            lab = int(truth[i])
            if rng.random() < 0.01:  # honest labeler noise
                lab = int(rng.integers(len(names)))
            if scenario == "label_flip" and after[i] and SOURCES[s] == FLIPPER and rng.random() < 0.2:
                lab = int(rng.choice([1, 2])) if lab == 0 else 0
            if rng.random() < 0.003:
                delay = LABEL_HORIZON_S * (1.2 + 0.3 * rng.random())  # beyond the join horizon
            else:
                delay = float(rng.lognormal(math.log(median_delay), 1.0 if median_delay < 100 else 0.3))
            rows.append((round(float(ts[i]) + delay, 3), ids[i], names[lab], SOURCES[s]))
    for k in range(max(1, len(chosen) // 500)):  # labels for events this stream never saw
        j = int(rng.integers(n))
        rows.append((round(float(ts[j]) + 30.0, 3), f"unknown-{k:06d}", names[0], SOURCES[0]))
    rows.sort()
    return ([orjson.dumps({"event_id": e, "ts": t, "label": lab, "source": s}) for t, e, lab, s in rows],
            [r[0] for r in rows])


def write_lines(path: Path | str, lines: list[bytes]) -> Path:
    """Write JSONL (gzip when the name ends in ``.gz``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = b"\n".join(lines) + b"\n"
    if path.suffix == ".gz":
        with gzip.open(path, "wb", compresslevel=3) as fh:
            fh.write(data)
    else:
        path.write_bytes(data)
    return path


def write_drill(drill: Drill, out_dir: Path | str, gz: bool = False) -> dict[str, Path]:
    """Write ``inference.jsonl[.gz]``, ``labels.jsonl[.gz]``, ``meta.json`` and ``config.yaml``
    (and, for registry scenarios, ``registry.jsonl`` and the public key ``registry.pub``)."""
    import yaml
    out = Path(out_dir)
    ext = ".jsonl.gz" if gz else ".jsonl"
    paths = {"inference": write_lines(out / f"inference{ext}", drill.inference),
             "labels": write_lines(out / f"labels{ext}", drill.labels),
             "meta": out / "meta.json", "config": out / "config.yaml"}
    key_file = None
    if drill.registry:
        paths["registry"] = write_lines(out / f"registry{ext}", drill.registry)
        paths["registry_key"] = key_file = out / "registry.pub"
        key_file.write_bytes(drill.registry_public_key)
    paths["meta"].write_text(json.dumps(drill.meta, indent=2))
    paths["config"].write_text(yaml.safe_dump(drill_config(registry_key_file=key_file and key_file.name,
                                                           scenario=drill.meta["scenario"]), sort_keys=False))
    return paths


def drill_model_spec(scenario: str | None = None) -> dict[str, Any]:
    """The model of a scenario (default the ``content-filter``) as a ``ModelSpec`` dictionary."""
    kind = SCENARIOS[scenario].get("model") if scenario else None
    if kind == "shuttle":
        return {"name": model_name(scenario), "classes": SHUTTLE_CLASSES, "versions": [STABLE, CANARY],
                "stable_version": STABLE, "features": [{"name": f"f{j}", "type": "numeric"} for j in range(1, 10)],
                "reference_size": 2000, "label_reference_size": 500}
    feats: list[dict[str, Any]] = []
    for name in NUMERIC:
        f: dict[str, Any] = {"name": name, "type": "numeric"}
        if name in BOUNDS:
            f["min"], f["max"] = BOUNDS[name]
        feats.append(f)
    feats += [{"name": name, "type": "categorical", "top_k": 32} for name in CATEGORICAL]
    if kind == "wide":
        feats += [{"name": f"aux_{i:02d}", "type": "numeric"} for i in range(WIDE_EXTRA)]
    return {"name": model_name(scenario) if scenario else MODEL, "classes": list(CLASSES),
            "versions": [STABLE, CANARY, BACKDOORED],
            "stable_version": STABLE, "features": feats,
            "triggers": [{"name": f"{TRIGGER_LOGO}_logo", "feature": "logo", "equals": TRIGGER_LOGO}],
            "reference_size": 2000, "label_reference_size": 500}


def drill_monitor_spec(scenario: str | None = None, false_alarms_per_million: float | None = None) -> dict[str, Any]:
    """``MonitorSpec`` dictionary for the drills: default alerting, and the default calibration unless
    a false-alarm budget is given (to compare detection delays at another budget)."""
    doc: dict[str, Any] = {"models": [drill_model_spec(scenario)]}
    if false_alarms_per_million is not None:
        doc["calibration"] = {"false_alarms_per_million": false_alarms_per_million}
    return doc


def drill_config(bootstrap: str = "127.0.0.1:9092", redis_url: str = "redis://127.0.0.1:6379/0",
                 prefix: str = "drill", registry_key_file: str | Path | None = None,
                 scenario: str | None = None, false_alarms_per_million: float | None = None) -> dict[str, Any]:
    """A complete driftline configuration for the drill topics (the signing key comes from the environment);
    with ``registry_key_file``, a registry topic whose events that public key verifies."""
    doc = {
        "kafka": {"bootstrap_servers": bootstrap, "group_id": f"{prefix}-workers",
                  "inference_topics": [{"name": f"{prefix}-inference"}],
                  "label_topics": [{"name": f"{prefix}-labels"}],
                  "control_topic": f"{prefix}-control", "dead_letter_topic": f"{prefix}-dead",
                  "internal_topic": f"{prefix}-internal"},
        "redis": {"url": redis_url, "key_prefix": prefix, "pending_ttl_seconds": int(LABEL_HORIZON_S)},
        "signing": {"key_env": "DRIFTLINE_SIGNING_KEY"},
        "monitor": drill_monitor_spec(scenario, false_alarms_per_million),
    }
    if registry_key_file is not None:
        doc["kafka"]["registry_topic"] = f"{prefix}-registry"
        doc["registry"] = {"public_keys": {REGISTRY_KEY_ID: str(registry_key_file)}}
    return doc


def produce(bootstrap: str, drill: Drill, inference_topic: str, label_topic: str, rate: float = 1000.0,
            registry_topic: str | None = None) -> int:
    """Produce a drill to a loopback Kafka at ``rate`` messages/s, labels (and registry events) interleaved by time.

    A registry event goes ahead of traffic of the same time, as a deploy step announces a release
    before rolling it out.
    """
    import time

    from confluent_kafka import Producer
    host = bootstrap.rsplit(":", 1)[0].strip("[]")
    if host not in ("localhost", "127.0.0.1", "::1"):
        raise ValueError("drills only produce to a loopback broker")
    merged = sorted([(t, 0, k) for k, t in enumerate(drill.inference_ts)] +
                    [(t, 1, k) for k, t in enumerate(drill.label_ts)] +
                    [(t, -1, k) for k, t in enumerate(drill.registry_ts if registry_topic else [])])
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": True})
    start = time.monotonic()
    for sent, (_, kind, k) in enumerate(merged, 1):
        if kind < 0:
            topic, value = registry_topic, drill.registry[k]
        else:
            topic, value = (label_topic, drill.labels[k]) if kind else (inference_topic, drill.inference[k])
        while True:
            try:
                p.produce(topic, value=value, key=drill.meta["model"].encode())
                break
            except BufferError:
                p.poll(0.05)
        ahead = sent / rate - (time.monotonic() - start)
        if ahead > 0:
            time.sleep(ahead)
        p.poll(0)
    p.flush(30)
    return len(merged)
