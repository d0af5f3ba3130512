import json
import statistics

from loadtest import bench_detectors


def test_models_mode_reports_both_runs_and_their_ratio(capsys):
    assert bench_detectors.main(["--models", "4", "--events", "400", "--batch", "100", "--repeats", "3"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["mode"] == "models" and out["models"] == 4
    ones, manys = out["one_model_runs"], out["many_models_runs"]
    assert len(ones) == len(manys) == 3 and min(ones + manys) > 0
    assert out["one_model_events_per_s"] == statistics.median(ones)
    assert abs(out["models_ratio"] - statistics.median(m / o for o, m in zip(ones, manys))) < 0.01


def test_default_mode_compares_the_engine_with_the_naive_loop(capsys):
    assert bench_detectors.main(["--events", "300", "--batch", "100", "--repeats", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["engine_events_per_s"] > 0 and out["naive_events_per_s"] > 0
    assert out["ratio"] == round(out["engine_events_per_s"] / out["naive_events_per_s"], 2)
