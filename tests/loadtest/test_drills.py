"""Drill traffic: deterministic, decodable, incidents only after the injection point."""
from __future__ import annotations

import gzip
import math

import orjson
import pytest

from detectors.spec import MonitorSpec
from loadtest.drills import (BACKDOORED, ROGUE, SCENARIOS, drill_config, drill_monitor_spec, make_drill,
                             model_name, write_drill)
from loadtest.drill_traffic import CATEGORICAL, MODEL, NUMERIC, TRIGGER_LOGO
from stream.config import parse_config
from stream.decoding import DecodeError, JsonDecoder

N, INJ = 6000, 4000


@pytest.fixture(scope="module")
def drills():
    return {s: make_drill(s, n_events=N, injection=None if s == "stationary" else INJ, seed=5) for s in SCENARIOS}


def decoded(lines):
    dec = JsonDecoder()
    out = []
    for line in lines:
        try:
            out.append(dec.decode_inference(line))
        except DecodeError:
            out.append(None)
    return out


def test_deterministic_per_seed() -> None:
    a, b = make_drill("label_flip", n_events=3000, injection=2000, seed=1), \
        make_drill("label_flip", n_events=3000, injection=2000, seed=1)
    assert a.inference == b.inference and a.labels == b.labels and a.meta == b.meta
    c = make_drill("label_flip", n_events=3000, injection=2000, seed=2)
    assert c.inference != a.inference


def test_metadata(drills) -> None:
    for name, d in drills.items():
        m = d.meta
        assert m["scenario"] == name and m["model"] == model_name(name)
        assert (m["model"] == MODEL) == ("model" not in SCENARIOS[name])
        assert m["intended_signals"] == SCENARIOS[name]["signals"]
        if name == "stationary":
            assert m["injection_ts"] is None and m["intended_signals"] == []
        else:
            # registry_swap starts at the first canary event at or after the injection point
            assert (m["injection_index"] == INJ or name == "registry_swap" and INJ <= m["injection_index"] < INJ + 50)
            assert m["first_ts"] < m["injection_ts"] < m["last_ts"]
    assert drills["backdoor_canary"].meta["rollback_expected"] is True
    assert {n for n, d in drills.items() if d.meta["rollback_expected"]} == {"backdoor_canary", "registry_swap"}


def test_events_decode_and_carry_20_features(drills) -> None:
    events = decoded(drills["stationary"].inference)
    assert all(e is not None for e in events)
    assert set(events[0].features) == set(NUMERIC) | set(CATEGORICAL) and len(events[0].features) == 20
    preds = [e.prediction for e in events]
    assert 0.97 < preds.count("safe") / len(preds) < 1.0
    assert {e.deployment for e in events} == {"stable", "canary"}
    assert all(e.confidence == max(e.scores.values()) for e in events[:100])
    ts = [e.ts for e in events]
    assert ts == sorted(ts)


def test_labels_arrive_late_out_of_order_from_several_sources(drills) -> None:
    d = drills["stationary"]
    labs = [JsonDecoder().decode_label(x) for x in d.labels]
    assert [lab.ts for lab in labs] == sorted(lab.ts for lab in labs)
    order = {f"img-0005-{i:08d}": i for i in range(N)}
    idx = [order[lab.event_id] for lab in labs if lab.event_id in order]
    assert idx != sorted(idx)
    assert {lab.source for lab in labs} == {"vendor-a", "vendor-b", "inhouse"}
    assert 0.2 < len(idx) / N < 0.4
    assert any(not lab.event_id.startswith("img-") for lab in labs)


def test_backdoor_only_on_the_canary_after_injection(drills) -> None:
    events = decoded(drills["backdoor_canary"].inference)
    v3 = [i for i, e in enumerate(events) if e.model_version == BACKDOORED]
    assert v3 and min(v3) >= INJ and all(events[i].deployment == "canary" for i in v3)
    trig = [events[i] for i in v3 if events[i].features["logo"] == TRIGGER_LOGO]
    assert trig and all(e.prediction == "nsfw" for e in trig)
    stable_trig = [e for e in events if e.deployment == "stable" and e.features["logo"] == TRIGGER_LOGO]
    assert sum(e.prediction == "nsfw" for e in stable_trig) / len(stable_trig) < 0.05


def test_rogue_version_only_after_injection(drills) -> None:
    events = decoded(drills["rogue_version"].inference)
    rogue = [i for i, e in enumerate(events) if e.model_version == ROGUE]
    assert rogue and min(rogue) >= INJ


def test_garbage_after_injection_only(drills) -> None:
    d = drills["garbage"]
    events = decoded(d.inference)
    bad_lines = [i for i, e in enumerate(events) if e is None]
    assert bad_lines and min(bad_lines) > INJ and len(bad_lines) == d.meta["garbage_lines"]
    odd = [i for i, e in enumerate(events) if e is not None and any(
        v is None or isinstance(v, (list, dict)) or (isinstance(v, float) and not math.isfinite(v))
        for v in e.features.values())]
    assert odd and min(odd) >= INJ


def test_shift_moves_covariates_after_injection(drills) -> None:
    events = decoded(drills["sudden_shift"].inference)
    before = [e.features["brightness"] for e in events[:INJ]]
    after = [e.features["brightness"] for e in events[INJ:]]
    assert sum(after) / len(after) > sum(before) / len(before) + 0.1


def test_files_and_config(drills, tmp_path) -> None:
    paths = write_drill(drills["label_flip"], tmp_path, gz=True)
    lines = gzip.decompress(paths["inference"].read_bytes()).splitlines()
    assert lines == drills["label_flip"].inference
    assert orjson.loads(paths["meta"].read_text())["scenario"] == "label_flip"
    spec = MonitorSpec.model_validate(drill_monitor_spec())
    assert len(spec.models[0].features) == 20 and spec.models[0].triggers[0].equals == TRIGGER_LOGO
    assert parse_config(drill_config()).monitor == spec


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        make_drill("nope")
    with pytest.raises(ValueError):
        make_drill("garbage", n_events=100, injection=100)


def test_new_scenario_models_validate_and_decode(drills) -> None:
    """The 50-feature and the real-data (river's bundled Shuttle) scenarios carry their own models."""
    for name, width in (("one_of_50", 54), ("real_heavy_tailed", 9)):
        spec = MonitorSpec.model_validate(drill_monitor_spec(name))
        assert len(spec.models[0].features) == width and spec.models[0].name == drills[name].meta["model"]
        ev = decoded(drills[name].inference[:5])[0]
        assert ev is not None and set(ev.features) == {f.name for f in spec.models[0].features}
    shuttle = decoded(drills["real_heavy_tailed"].inference)
    assert all(float(v).is_integer() for e in shuttle[:200] for v in e.features.values())


def test_small_shift_moves_one_feature_by_a_quarter_sd(drills) -> None:
    ev = decoded(drills["small_shift"].inference)
    before = [e.features["emb_norm"] for e in ev[:INJ]]
    after = [e.features["emb_norm"] for e in ev[INJ:]]
    assert 0.2 < (sum(after) / len(after) - sum(before) / len(before)) / 1.5 < 0.35 + 0.15
