"""The HTML backtest report of ``driftline replay --html OUT.html``: one self-contained file.

Per model and signal, a plot of each detector's statistic against its threshold over event time
(sampled series from :class:`~stream.trace.StatsTrace`; for window tests that only report when they
fire, each detection's statistic and threshold), with detections, alerts, resolutions and rollbacks
marked; the input-integrity counts (lines skipped by reason, invalid feature values by kind); and a
summary table. Plots are inline SVG drawn by matplotlib; the page loads nothing at view time (no
scripts, fonts, styles or images from elsewhere).
"""
from __future__ import annotations

import html
import io
import math
import re
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from detectors.detection import SIGNALS
from stream.trace import Series, StatsTrace

MAX_KEYS_DRAWN = 8          # lines per detector panel (the keys furthest past their threshold)
MAX_MESSAGE_ROWS = 200
INVALID_KINDS = ("nan", "inf", "null", "wrong_type", "out_of_range")
_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#1d2330;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #d8dce4}
h3{font-size:15px;margin:18px 0 4px}p.meta{color:#5b6475;margin:2px 0}
table{border-collapse:collapse;font-size:13px;margin:6px 0}td,th{border:1px solid #d8dce4;padding:3px 8px;text-align:right}
th{background:#f2f4f8}td.l,th.l{text-align:left}figure{margin:6px 0}figcaption{font-size:12px;color:#5b6475}
svg{max-width:100%;height:auto}.page{color:#b3261e;font-weight:600}.none{color:#5b6475}
"""


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _utc(ts: float) -> str:
    try:
        return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    except (OverflowError, OSError, ValueError):
        return str(ts)


def _svg(fig: Any) -> str:
    """The figure as inline SVG markup, with no external reference (namespaces and DTD stripped)."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Creator": None, "Date": None, "Format": None, "Type": None})
    text = buf.getvalue()
    text = text[text.index("<svg"):]
    text = re.sub(r'\s+xmlns(:\w+)?="[^"]*"', "", text)
    return text


def _dates(ts: list[float]) -> list[datetime]:
    out = []
    for t in ts:
        try:
            out.append(datetime.fromtimestamp(t, tz=timezone.utc))
        except (OverflowError, OSError, ValueError):
            out.append(datetime.fromtimestamp(0, tz=timezone.utc))
    return out


class _Marks:
    """Event times of the control messages of one model, by kind and signal."""

    def __init__(self, messages: list[dict[str, Any]]) -> None:
        self.alerts: dict[str, list[dict[str, Any]]] = {}
        self.resolves: dict[str, list[float]] = {}
        self.rollbacks: list[float] = []
        for m in messages:
            kind = m.get("kind")
            if kind == "alert":
                self.alerts.setdefault(str(m.get("signal")), []).append(m)
            elif kind == "resolve":
                self.resolves.setdefault(str(m.get("signal")), []).append(float(m.get("ts", 0.0)))
            elif kind == "rollback":
                self.rollbacks.append(float(m.get("ts", 0.0)))


def _panel(ax: Any, detector: str, series: dict[tuple[str, str], Series], dets: list[dict[str, Any]],
           marks: _Marks, signal: str) -> str:
    """Draw one detector: statistic lines and thresholds, detections, alerts; returns a caption note."""
    import matplotlib.dates as mdates

    ranked = sorted(series.items(), key=lambda kv: -kv[1].peak)
    shown = ranked[:MAX_KEYS_DRAWN]
    colours = [f"C{i}" for i in range(10)]
    for i, ((stream, key), s) in enumerate(shown):
        c = colours[i % 10]
        x = _dates(s.t)
        ax.plot(x, s.stat, color=c, lw=1.2, label=f"{key or 'overall'} ({stream})")
        ax.plot(x, s.thr, color=c, lw=0.9, ls="--", alpha=0.8)
    if dets:
        pts = sorted(dets, key=lambda d: d["ts"])
        ax.scatter(_dates([d["ts"] for d in pts]), [d["statistic"] for d in pts], marker="x", s=26,
                   color="#b3261e", zorder=5, label=f"detection ({len(dets)})")
        ax.scatter(_dates([d["ts"] for d in pts]), [d["threshold"] for d in pts], marker="_", s=70,
                   color="black", zorder=4, label="threshold at detection")
    for j, a in enumerate(marks.alerts.get(signal, [])):
        if a.get("detector") == detector or not series:
            ax.axvline(_dates([float(a.get("ts", 0.0))])[0], color="#b3261e", lw=1.4,
                       label="alert" if j == 0 else None)
    for j, t in enumerate(marks.resolves.get(signal, [])):
        ax.axvline(_dates([t])[0], color="#2e7d32", lw=1.0, ls=":", label="resolved" if j == 0 else None)
    for j, t in enumerate(marks.rollbacks):
        ax.axvline(_dates([t])[0], color="#6a1b9a", lw=1.2, ls="-.", label="rollback" if j == 0 else None)
    vals = [v for _, s in shown for v in s.stat + s.thr if math.isfinite(v) and v > 0]
    vals += [d[k] for d in dets for k in ("statistic", "threshold") if math.isfinite(d[k]) and d[k] > 0]
    if vals and max(vals) / min(vals) > 1e3 and all(v > 0 for _, s in shown for v in s.stat if math.isfinite(v)):
        ax.set_yscale("log")
    ax.set_title(f"{signal} / {detector}", fontsize=10, loc="left")
    ax.set_ylabel("statistic", fontsize=8)
    ax.tick_params(labelsize=7)
    loc = mdates.AutoDateLocator()
    ax.xaxis.set_major_locator(loc)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(loc))
    ax.legend(fontsize=7, loc="upper left", ncol=2, framealpha=0.85)
    ax.grid(alpha=0.25)
    hidden = len(ranked) - len(shown)
    return f"{detector}: {hidden} more key(s) stay further below their thresholds" if hidden > 0 else ""


def _signal_figure(model: str, signal: str, trace: StatsTrace, marks: _Marks) -> tuple[str, str] | None:
    """(SVG, caption) of one signal of one model, or None when it has nothing to draw."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels: dict[str, tuple[dict[tuple[str, str], Series], list[dict[str, Any]]]] = {}
    for (stream, sig, det, key), s in (trace.series.get(model) or {}).items():
        if sig == signal and s.t:
            panels.setdefault(det, ({}, []))[0][(stream, key)] = s
    for (sig, det), rows in (trace.detections.get(model) or {}).items():
        if sig == signal:
            panels.setdefault(det, ({}, []))[1].extend(rows)
    if signal == "input_integrity" and any(max(s.stat, default=0) > 0 for s in (trace.invalid.get(model) or {}).values()):
        panels.setdefault("invalid values (cumulative)", ({}, []))
    if not panels and not marks.alerts.get(signal):
        return None
    if not panels:
        panels["alerts"] = ({}, [])
    plt.rcParams["svg.fonttype"] = "none"
    fig, axes = plt.subplots(len(panels), 1, figsize=(11, 2.9 * len(panels)), squeeze=False)
    notes = []
    for ax, (det, (series, dets)) in zip(axes[:, 0], sorted(panels.items())):
        if det == "invalid values (cumulative)":
            for i, (stream, s) in enumerate(sorted(trace.invalid[model].items())[:MAX_KEYS_DRAWN]):
                ax.plot(_dates(s.t), s.stat, color=f"C{i}", lw=1.2, label=stream)
            ax.set_title(f"{signal} / invalid values seen (cumulative, per stream)", fontsize=10, loc="left")
            ax.legend(fontsize=7, loc="upper left")
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.25)
            continue
        note = _panel(ax, det, series, dets, marks, signal)
        if note:
            notes.append(note)
    if trace.first is not None and trace.last is not None:
        # the span of the inference events and of every alert (late labels alone do not stretch it)
        end = max([trace.last_event or trace.first] + [float(a.get("ts", 0.0)) for al in marks.alerts.values()
                                                       for a in al] + marks.rollbacks)
        pad = max((end - trace.first) * 0.02, 1.0)
        for ax in axes[:, 0]:
            ax.set_xlim(*_dates([trace.first - pad, min(end, trace.last) + pad]))
    fig.tight_layout()
    svg = _svg(fig)
    plt.close(fig)
    caption = ("Solid lines: statistic sampled per micro-batch; dashed: its threshold. "
               "Crosses: detections (statistic), bars: their thresholds; red lines: alerts, "
               "green dotted: resolutions, purple: rollbacks. ") + " ".join(notes)
    return svg, caption


def _table(head: list[str], rows: list[list[Any]], left: int = 1) -> str:
    th = "".join(f'<th class="{"l" if i < left else ""}">{_e(h)}</th>' for i, h in enumerate(head))
    body = "".join("<tr>" + "".join(f'<td class="{"l" if i < left else ""}">{c}</td>' for i, c in enumerate(r))
                   + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def render_html(report: Any, trace: StatsTrace, messages: list[dict[str, Any]], title: str,
                sources: list[str]) -> str:
    """The report page (see module doc); ``report`` is a :class:`~stream.replay.ReplayReport`."""
    by_model: dict[str, list[dict[str, Any]]] = {}
    for m in messages:
        by_model.setdefault(str(m.get("model")), []).append(m)
    parts = [f"<h1>{_e(title)}</h1>"]
    parts += [f'<p class="meta">{_e(s)}</p>' for s in sources]
    parts.append(f'<p class="meta">{report.events} events from {report.inference_lines} inference lines, '
                 f"{report.labels_joined} labels joined from {report.label_lines} label lines</p>")
    # summary
    rows = []
    models = sorted(set(trace.stats) | set(by_model))
    for name in models:
        msgs = by_model.get(name, [])
        st = trace.stats.get(name, {})
        kinds = Counter(m.get("kind") for m in msgs)
        dets = st.get("detections") or {}
        firsts: dict[str, float] = {}
        for m in msgs:
            if m.get("kind") == "alert":
                firsts.setdefault(str(m.get("signal")), float(m.get("ts", 0.0)))
        alerted = ", ".join(f'<span class="{"page" if any(a.get("severity") == "page" and a.get("signal") == s for a in msgs) else ""}">'
                            f"{_e(s)}</span> at {_e(_utc(t))}" for s, t in sorted(firsts.items(), key=lambda kv: kv[1]))
        rows.append([_e(name), st.get("events", 0), st.get("labels", 0), sum(dets.values()),
                     kinds.get("alert", 0), kinds.get("resolve", 0), kinds.get("rollback", 0),
                     alerted or '<span class="none">none</span>'])
    parts.append("<h2>Summary</h2>")
    parts.append(_table(["model", "events", "labels", "detections", "alerts", "resolved", "rollbacks",
                         "first alert per signal (UTC)"], rows))
    det_rows = []
    for name in models:
        dets = (trace.stats.get(name) or {}).get("detections") or {}
        for s in SIGNALS:
            if dets.get(s) or any(m.get("signal") == s for m in by_model.get(name, [])):
                det_rows.append([_e(name), _e(s), dets.get(s, 0),
                                 sum(1 for m in by_model.get(name, []) if m.get("kind") == "alert" and m.get("signal") == s)])
    if det_rows:
        parts.append(_table(["model", "signal", "detections", "alerts"], det_rows, left=2))
    # input integrity
    parts.append("<h2>Input integrity</h2>")
    skipped = [[_e(stream), _e(reason), n] for stream, c in report.rejected.items() for reason, n in c.most_common()]
    parts.append(_table(["log", "skipped because", "lines"], skipped, left=2) if skipped
                 else '<p class="none">No line was skipped.</p>')
    inv_rows = []
    for name, streams in sorted(trace.invalid_final.items()):
        for stream, feats in sorted(streams.items()):
            for feat, counts in sorted(feats.items(), key=lambda kv: -sum(kv[1])):
                if sum(counts):
                    inv_rows.append([_e(name), _e(stream), _e(feat), *counts, sum(counts)])
    inv_rows.sort(key=lambda r: -r[-1])
    parts.append(_table(["model", "stream", "feature", *INVALID_KINDS, "total"], inv_rows[:100], left=3)
                 if inv_rows else '<p class="none">No invalid feature value.</p>')
    # plots
    for name in models:
        marks = _Marks(by_model.get(name, []))
        parts.append(f'<h2 id="model-{_e(name)}">Model {_e(name)}</h2>')
        drawn = 0
        for signal in SIGNALS:
            fig = _signal_figure(name, signal, trace, marks)
            if fig is None:
                continue
            drawn += 1
            svg, caption = fig
            parts.append(f'<section class="signal"><h3>{_e(signal)}</h3><figure class="plot">{svg}'
                         f"<figcaption>{_e(caption)}</figcaption></figure></section>")
        if trace.dropped_series.get(name):
            parts.append(f'<p class="meta">{trace.dropped_series[name]} series samples beyond the bound were not kept.</p>')
        if not drawn:
            parts.append('<p class="none">No statistic and no detection to draw.</p>')
    # control messages
    shown = [m for m in messages if m.get("kind") in ("alert", "rollback")][:MAX_MESSAGE_ROWS]
    if shown:
        parts.append("<h2>Alerts and rollbacks</h2>")
        parts.append(_table(["time (UTC)", "model", "kind", "signal / reason", "version", "deployment", "key",
                             "statistic", "threshold", "line"],
                            [[_e(_utc(float(m.get("ts", 0.0)))), _e(m.get("model")), _e(m.get("kind")),
                              _e(m.get("signal") or m.get("reason", "")), _e(m.get("version") or m.get("canary_version")),
                              _e(m.get("deployment", "")), _e(m.get("key", "")), _e(m.get("statistic", "")),
                              _e(m.get("threshold", "")), _e((m.get("replay") or {}).get("line", ""))]
                             for m in shown], left=7))
    body = "\n".join(parts)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
            f"<style>{_CSS}</style></head><body>\n{body}\n</body></html>\n")


def write_html(path: str | Path, report: Any, trace: StatsTrace, messages: list[dict[str, Any]], title: str,
               sources: list[str]) -> Path:
    """Write the report page to ``path``."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(render_html(report, trace, messages, title, sources), encoding="utf-8")
    return p

