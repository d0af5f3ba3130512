"""`driftline replay --html`: a self-contained page with the plots, drawn without changing detection."""
from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from loadtest.drills import make_drill, write_drill
from stream.replay import main as replay
from stream.trace import MAX_POINTS, Series

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def garbage(tmp_path_factory):
    """A broken feature pipeline: invalid values and junk lines from the middle on."""
    root = tmp_path_factory.mktemp("garbage")
    return write_drill(make_drill("garbage", n_events=12_000, seed=0), root)


@pytest.fixture(scope="module")
def page(garbage, tmp_path_factory):
    """The replay's alerts with and without --html, and the report."""
    root = tmp_path_factory.mktemp("report")
    common = ["--config", str(garbage["config"]), "--inference", str(garbage["inference"]),
              "--labels", str(garbage["labels"]), "--quiet", "--batch-size", "1000"]
    assert replay(common + ["--alerts", str(root / "plain.jsonl")]) == 0
    assert replay(common + ["--alerts", str(root / "traced.jsonl"), "--html", str(root / "report.html")]) == 0
    return root


def test_tracing_leaves_detection_unchanged(page) -> None:
    plain = (page / "plain.jsonl").read_bytes()
    assert plain and plain == (page / "traced.jsonl").read_bytes()


def test_page_is_self_contained(page) -> None:
    text = (page / "report.html").read_text()
    assert not re.search(r"https?://", text), "nothing may be fetched at view time"
    assert not re.search(r"<(script|link|img|iframe)\b|\bsrc=|@import|url\((?!#)", text)
    assert text.count("<svg") >= 2
    for section in ("Summary", "Input integrity", "input_integrity", "numeric_drift", "cusum",
                    "malformed_json", "wrong_type", "Alerts and rollbacks"):
        assert section in text, section


def _ink(png) -> int:
    """Pixels of saturated colour (plot lines and markers; the page itself is black, grey and white)."""
    from matplotlib.image import imread

    img = imread(str(png))[:, :, :3]
    return int(((img.max(axis=2) - img.min(axis=2)) > 0.25).sum())


def _screenshot(html, png, profile) -> None:
    chromium = shutil.which("chromium")
    assert chromium, "chromium is not installed: scripts/stack start installs it (Debian package chromium)"
    cmd = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={png}",
           "--window-size=1280,2600", html.as_uri()]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and png.exists(), res.stderr[-2000:]


@pytest.mark.integration
def test_chromium_shows_the_plots(page, tmp_path) -> None:
    html = page / "report.html"
    _screenshot(html, tmp_path / "report.png", tmp_path / "profile-a")
    stripped = tmp_path / "no-plots.html"
    stripped.write_text(re.sub(r"<svg.*?</svg>", "", html.read_text(), flags=re.S))
    _screenshot(stripped, tmp_path / "no-plots.png", tmp_path / "profile-b")
    with_plots, without = _ink(tmp_path / "report.png"), _ink(tmp_path / "no-plots.png")
    assert with_plots > 5000 and with_plots > 10 * max(without, 1), (with_plots, without)


def test_series_stays_bounded_and_keeps_peaks() -> None:
    s = Series()
    for i in range(100_000):
        s.add(float(i), 50.0 if i == 77_777 else 1.0, 10.0)
    assert MAX_POINTS // 2 <= len(s.t) <= MAX_POINTS and s.t == sorted(s.t)
    assert max(s.stat) == 50.0 and s.peak == 5.0
