"""Prometheus metrics of a worker, in a dedicated registry, served on /metrics with /healthz and /readyz.

Label values that come from traffic (model, version, reason, topic) are bounded: past
``max_label_values`` distinct values per label name, new values are reported as ``other`` so a
hostile or buggy producer cannot explode the series count.

>>> m = WorkerMetrics(max_label_values=2)
>>> m.processed("a", "i", 3); m.processed("b", "i", 1); m.processed("c", "i", 5)
>>> m.value("driftline_events_total", model="other")
5.0
"""
from __future__ import annotations

import math
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

OTHER = "other"
_BATCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_CHECKPOINT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)


class LabelBound:
    """Keeps at most ``limit`` distinct values per label name; later ones map to ``other``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._seen: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    def __call__(self, label: str, value: object) -> str:
        v = str(value)
        if not v.isascii():
            v = v.encode("utf-8", "backslashreplace").decode("utf-8")  # a lone surrogate would break every scrape
        with self._lock:
            seen = self._seen.setdefault(label, set())
            if v in seen:
                return v
            if len(seen) < self.limit:
                seen.add(v)
                return v
        return OTHER


class ScrapeRequests:
    """Scrapes waiting for fresh detector statistics, answered by the batch loop between two batches.

    Statistics are read from the models' monitors on the batch loop's thread only (never while a
    batch updates them). A scrape takes a ticket and waits until the loop has exported after it
    took it, or ``wait_seconds`` (a long batch in progress); it is then served what the registry
    holds. So the export costs per scrape, not per second of traffic, and a scrape sees its values fresh.

    >>> requests = ScrapeRequests(wait_seconds=0.01)
    >>> requests.waiting()
    0
    >>> requests.ask()  # nobody answers: served what there is after the wait
    False
    >>> ticket = requests.waiting(); requests.answer(ticket); requests.waiting()
    0
    """

    def __init__(self, wait_seconds: float = 2.0) -> None:
        self.wait_seconds = wait_seconds
        self._cond = threading.Condition()
        self._asked = 0     # tickets handed out
        self._answered = 0  # every ticket up to this one has its export

    def ask(self) -> bool:
        """Wait for an export that starts after this call; False when ``wait_seconds`` ran out first."""
        with self._cond:
            self._asked += 1
            ticket = self._asked
            return self._cond.wait_for(lambda: self._answered >= ticket, self.wait_seconds)

    def waiting(self) -> int:
        """The newest ticket still waiting (pass it to :meth:`answer` once exported), else 0."""
        asked = self._asked  # one int read: no lock on the batch loop's path
        return asked if asked > self._answered else 0

    def answer(self, ticket: int) -> None:
        """The statistics were exported after ``ticket`` was taken: release it and every earlier one."""
        with self._cond:
            if ticket > self._answered:
                self._answered = ticket
                self._cond.notify_all()


MAX_CACHED_CHILDREN = 100_000  # drift gauge children kept for reuse (label values are bounded as well)
_STR = {str}


def _float(x: Any) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


class WorkerMetrics:
    """Every driftline metric, registered in ``self.registry`` (never the global registry)."""

    def __init__(self, spec: Any = None, registry: CollectorRegistry | None = None,
                 max_label_values: int | None = None) -> None:
        limit = max_label_values if max_label_values is not None else getattr(spec, "max_label_values", 64)
        self.bound = LabelBound(limit)
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self.events = Counter("driftline_events", "Inference events run through detection.", ["model"], registry=r)
        self.labels = Counter("driftline_labels", "Joined labels run through detection.", ["model"], registry=r)
        self.dead_letters = Counter("driftline_dead_letters", "Messages sent to the dead-letter topic.",
                                    ["reason"], registry=r)
        self.late_labels = Counter("driftline_late_labels", "Labels without a prediction inside the join horizon.",
                                   ["reason"], registry=r)
        self.unknown_models = Counter("driftline_unknown_models", "Events naming a model the configuration lacks.",
                                      ["model"], registry=r)
        self.pending_dropped_total = Counter(
            "driftline_pending_dropped", "Predictions not remembered for the label join: "
            "redis.max_pending_predictions event ids were pending.", registry=r)
        self.retries = Counter("driftline_retries", "Batches aborted by a transient Kafka or Redis error and retried.",
                               ["kind"], registry=r)
        self.refetched_batches = Counter(
            "driftline_refetched_batches", "Batches dropped unprocessed because the group took partitions away "
            "(revoked) or the consumer had no membership (no_member) while they were fetched; whoever owns the "
            "partitions reads them again from the committed offsets.", ["reason"], registry=r)
        self.state_rebuilds = Counter("driftline_state_rebuilds", "Committed model states that could not be used "
                                      "as they were (changed spec, unreadable, clock clamped).",
                                      ["model", "reason"], registry=r)
        self.detections = Counter("driftline_detections", "Detector threshold crossings (before alert dedup).",
                                  ["model", "version", "deployment", "signal"], registry=r)
        self.alerts = Counter("driftline_alerts", "Control messages published, by kind and severity.",
                              ["model", "kind", "severity"], registry=r)
        self.rollbacks = Counter("driftline_rollbacks", "Signed rollback commands published.", ["model"], registry=r)
        self.registry_events = Counter("driftline_registry_events", "Model-registry events by model and outcome "
                                       "(accepted, or the reason they were dead-lettered).", ["model", "outcome"],
                                       registry=r)
        drift_labels = ["model", "version", "deployment", "signal", "detector", "key"]
        self.drift_statistic = Gauge("driftline_drift_statistic", "Latest value of a detector statistic.",
                                     drift_labels, registry=r)
        self.drift_threshold = Gauge("driftline_drift_threshold", "Calibrated threshold of a detector statistic.",
                                     drift_labels, registry=r)
        self.open_alerts = Gauge("driftline_open_alerts", "Alerts raised and not yet resolved.", ["model"], registry=r)
        self.reference_ready = Gauge("driftline_reference_ready",
                                     "1 once a (version, deployment) stream has its reference and detectors armed.",
                                     ["model", "version", "deployment"], registry=r)
        self.consumer_lag_gauge = Gauge("driftline_consumer_lag", "Messages between the consumer and the log end.",
                                        ["topic", "partition"], registry=r)
        self.held_records = Gauge("driftline_held_records", "Internal records held back, waiting to be detected "
                                  "in longer runs (kafka.detect_hold_ms, kafka.detect_hold_caught_up_ms).",
                                  registry=r)
        self.batch_duration = Histogram("driftline_batch_duration_seconds", "Wall time of one micro-batch.",
                                        buckets=_BATCH_BUCKETS, registry=r)
        self.checkpoint_duration = Histogram("driftline_checkpoint_duration_seconds",
                                             "Wall time of committing a batch (Kafka transaction + state promotion).",
                                             buckets=_CHECKPOINT_BUCKETS, registry=r)
        self.ready_gauge = Gauge("driftline_ready", "1 when state is restored and the worker consumes.", registry=r)
        self._detections_seen: dict[tuple[str, str, str], int] = {}
        self._drift_children: dict[tuple[str, ...], tuple[Any, Any]] = {}
        self._ready = threading.Event()
        # set by a batch loop that exports detector statistics when scraped (see ScrapeRequests)
        self.scrapes: ScrapeRequests | None = None

    # -- readiness ----------------------------------------------------------------------------
    def set_ready(self, ready: bool) -> None:
        """Flip /readyz (set by the worker once its state is restored)."""
        (self._ready.set if ready else self._ready.clear)()
        self.ready_gauge.set(1 if ready else 0)

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    # -- events -------------------------------------------------------------------------------
    def processed(self, model: str, kind: str, n: int) -> None:
        """``n`` inference events (``kind="i"``) or joined labels (``"l"``) of ``model`` detected on."""
        counter = self.events if kind == "i" else self.labels
        counter.labels(model=self.bound("model", model)).inc(n)

    def dead_letter(self, reason: str) -> None:
        self.dead_letters.labels(reason=self.bound("reason", reason)).inc()

    def registry_event(self, model: str, outcome: str) -> None:
        """One registry event accepted into a model's manifest (``accepted``) or refused (the reason)."""
        self.registry_events.labels(model=self.bound("model", model), outcome=self.bound("outcome", outcome)).inc()

    def late_label(self, reason: str) -> None:
        self.late_labels.labels(reason=self.bound("late_reason", reason)).inc()

    def pending_dropped(self, n: int) -> None:
        """Count predictions the bound on pending event ids kept out of the label join."""
        if n:
            self.pending_dropped_total.inc(n)

    def retry(self, kind: str) -> None:
        self.retries.labels(kind=kind).inc()

    def refetched(self, reason: str) -> None:
        self.refetched_batches.labels(reason=reason).inc()

    def state_rebuilt(self, model: str, reason: str) -> None:
        self.state_rebuilds.labels(model=self.bound("model", model), reason=reason).inc()

    def unknown_model(self, model: str) -> None:
        self.unknown_models.labels(model=self.bound("unknown_model", model)).inc()

    def consumer_lag(self, topic: str, partition: int, lag: int) -> None:
        self.consumer_lag_gauge.labels(topic=self.bound("topic", topic), partition=str(partition)).set(lag)

    def observe_batch(self, seconds: float, outcome: Any = None) -> None:
        self.batch_duration.observe(seconds)

    def observe_checkpoint(self, seconds: float) -> None:
        self.checkpoint_duration.observe(seconds)

    # -- control messages and detector statistics --------------------------------------------
    def control_message(self, doc: Mapping[str, Any]) -> None:
        """Count a published control message; an alert also updates its statistic gauges."""
        b = self.bound
        model = b("model", doc.get("model", ""))
        kind = str(doc.get("kind", "unknown"))
        severity = str(doc.get("severity", "page" if kind == "rollback" else "none"))
        self.alerts.labels(model=model, kind=b("kind", kind), severity=b("severity", severity)).inc()
        if kind == "rollback":
            self.rollbacks.labels(model=model).inc()
        elif kind == "alert":
            self._drift(model, doc.get("version", ""), doc.get("deployment", ""), doc.get("signal", ""),
                        doc.get("detector", ""), doc.get("key", ""), doc.get("statistic"), doc.get("threshold"))

    def _drift(self, model: str, version: Any, deployment: Any, signal: Any, detector: Any, key: Any,
               statistic: Any, threshold: Any) -> None:
        raw: tuple | None = (model, version, deployment, signal, detector, key)
        pair = None
        if set(map(type, raw)) == _STR:  # only strings: 1, 1.0 and True are one dict key but three labels
            pair = self._drift_children.get(raw)
        else:
            raw = None
        if pair is None:
            # bounding and labels() lock and validate on every call; a value's bound label never
            # changes once given (LabelBound), so the children are kept per raw label values
            b = self.bound
            labels = (model, b("version", version), b("deployment", deployment), b("signal", signal),
                      b("detector", detector), b("key", key))
            pair = self.drift_statistic.labels(*labels), self.drift_threshold.labels(*labels)
            if raw is not None and len(self._drift_children) < MAX_CACHED_CHILDREN:
                self._drift_children[raw] = pair
        pair[0].set(_float(statistic))
        if threshold is not None:
            pair[1].set(_float(threshold))

    def export_model_stats(self, model: str, stats: Mapping[str, Any]) -> None:
        """Mirror a ``ModelMonitor.stats`` snapshot: detections, open alerts, readiness, sequential statistics."""
        b = self.bound
        m = b("model", model)
        self.rollbacks.labels(model=m)  # exported at 0 before the first rollback, so increase() sees it
        if "detections_by_stream" in stats:
            rows = [(stream, signal, total) for stream, per in (stats["detections_by_stream"] or {}).items()
                    for signal, total in per.items()]
        else:
            rows = [("/", signal, total) for signal, total in (stats.get("detections") or {}).items()]
        for stream, signal, total in rows:
            version, _, deployment = str(stream).rpartition("/")
            seen = self._detections_seen.get((model, stream, signal), 0)
            if total > seen:
                self.detections.labels(model=m, version=b("version", version), deployment=b("deployment", deployment),
                                       signal=b("signal", signal)).inc(total - seen)
            self._detections_seen[(model, stream, signal)] = max(seen, int(total))
        alerts = stats.get("alerts") or {}
        if "open" in alerts:
            self.open_alerts.labels(model=m).set(alerts["open"])
        for stream, st in (stats.get("streams") or {}).items():
            version, _, deployment = str(stream).rpartition("/")
            self.reference_ready.labels(model=m, version=b("version", version),
                                        deployment=b("deployment", deployment)).set(1 if st.get("armed") else 0)
            for feature, f in (st.get("numeric") or {}).items():
                if "cusum_statistic" in f:
                    self._drift(m, version, deployment, "numeric_drift", "cusum", feature,
                                f["cusum_statistic"], f.get("cusum_threshold"))
            for signal, per_key in (st.get("cusum") or {}).items():
                for key, (stat, thr) in per_key.items():
                    self._drift(m, version, deployment, signal, "cusum", key, stat, thr)

    # -- reading (tests, CLI) -----------------------------------------------------------------
    def value(self, name: str, **labels: str) -> float | None:
        """Current value of one sample, or None when it does not exist."""
        return self.registry.get_sample_value(name, labels)

    def render(self) -> bytes:
        """The Prometheus text exposition of this registry, after the batch loop (if one answers
        scrapes) has exported fresh detector statistics."""
        if self.scrapes is not None:
            self.scrapes.ask()
        return generate_latest(self.registry)


def metric_names(registry: CollectorRegistry) -> set[str]:
    """Every sample name the registry can expose (``_total``, ``_bucket``... included)."""
    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
                "summary": ("_sum", "_count", "_created"), "gauge": ("",), "info": ("_info",)}
    out: set[str] = set()
    for family in registry.collect():
        for suffix in suffixes.get(family.type, ("",)):
            out.add(family.name + suffix)
    return out


class MetricsServer:
    """A loopback HTTP server in a daemon thread: /metrics, /healthz (alive), /readyz (ready flag)."""

    def __init__(self, metrics: WorkerMetrics, host: str = "127.0.0.1", port: int = 9464,
                 handler: type[BaseHTTPRequestHandler] | None = None) -> None:
        self.metrics = metrics
        self._httpd = ThreadingHTTPServer((host, port), handler or endpoint_handler(metrics))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="driftline-metrics", daemon=True)

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        host = self._httpd.server_address[0]
        return f"http://{host}:{self.port}"

    def start(self) -> "MetricsServer":
        self._thread.start()
        return self

    def shutdown(self) -> None:
        """Stop serving and close the socket."""
        if self._thread.is_alive():
            self._httpd.shutdown()
            self._thread.join(10)
        self._httpd.server_close()


class _NoServer:
    port = 0
    url = ""

    def shutdown(self) -> None:
        pass


def endpoint_handler(metrics: Any) -> type[BaseHTTPRequestHandler]:
    """Request handler of /metrics, /healthz and /readyz for anything with ``render()`` and ``ready``."""
    class Handler(BaseHTTPRequestHandler):
        server_version = "driftline"

        def do_GET(self) -> None:  # noqa: N802 (http.server naming)
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, metrics.render(), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                self._send(200, b"ok\n")
            elif path == "/readyz":
                ready = metrics.ready
                self._send(200 if ready else 503, b"ready\n" if ready else b"not ready\n")
            else:
                self._send(404, b"not found\n")

        def _send(self, status: int, body: bytes, ctype: str = "text/plain; charset=utf-8") -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # scrapes are not worth a log line
            pass

    return Handler


def serve_metrics(spec: Any, metrics: WorkerMetrics) -> MetricsServer | _NoServer:
    """Start the metrics endpoint described by a ``metrics`` config section (no-op when disabled)."""
    if not getattr(spec, "enabled", True):
        return _NoServer()
    return MetricsServer(metrics, getattr(spec, "host", "127.0.0.1"), getattr(spec, "port", 9464)).start()
