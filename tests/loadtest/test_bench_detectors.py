import json
import statistics

from loadtest import bench_detectors


def test_models_mode_reports_both_runs_and_their_ratio(capsys):
    assert bench_detectors.main(["--models", "4", "--events", "400", "--batch", "100", "--repeats", "3"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["mode"] == "models" and out["models"] == 4
    ones, manys = out["one_model_runs"], out["many_models_runs"]
    assert len(ones) == len(manys) == 3 and min(ones + manys) > 0
    assert out["one_model_events_per_s"] == round(statistics.median(ones))
    assert out["models_ratio"] == round(statistics.median(m / o for o, m in zip(ones, manys)), 3)


def test_default_mode_compares_the_engine_with_the_naive_loop(capsys):
    assert bench_detectors.main(["--events", "300", "--batch", "100", "--repeats", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["engine_events_per_s"] > 0 and out["naive_events_per_s"] > 0
    assert out["ratio"] == round(out["engine_events_per_s"] / out["naive_events_per_s"], 2)


def test_arm_mode_times_new_monitors_against_armed_ones(capsys):
    assert bench_detectors.main(["--arm", "3", "--reference", "100", "--repeats", "3"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["mode"] == "arm" and out["models"] == 3 and out["reference"] == 100
    arms, armed = out["arm_runs"], out["armed_runs"]
    assert len(arms) == len(armed) == 3 and min(arms + armed) > 0
    assert out["arm_ms_per_model"] == round(statistics.median(arms), 3)
    assert out["arm_ratio"] == round(statistics.median(a / b for a, b in zip(arms, armed)), 3)
