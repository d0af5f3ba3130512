"""A private Kafka + Redis (+ Prometheus) stack that chaos runs may SIGKILL and restart at will.

It is ``scripts/stack`` with its own state directory and ports, so the shared stack is never
touched. Redis keeps its append-only file under the state directory; :meth:`PrivateStack.kill_redis`
can cut the file back to what it held ``lose_seconds`` earlier before restarting, which is what an
operating-system crash does to writes that ``appendfsync everysec`` had not yet synced (a killed
*process* loses nothing: its writes are already in the page cache).
"""
from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STACK = ROOT / "scripts" / "stack"


@dataclass(frozen=True)
class Ports:
    """The ports of one private stack, all within ``base`` .. ``base + 99`` (a range of 100 assigned to its user)."""

    base: int

    @property
    def kafka(self) -> int:
        return self.base + 92

    @property
    def controller(self) -> int:
        return self.base + 93

    @property
    def redis(self) -> int:
        return self.base + 79

    @property
    def prometheus(self) -> int:
        return self.base + 90

    @property
    def metrics(self) -> int:
        return self.base + 64

    def all(self) -> list[int]:
        """Every port the stack may open (the free-port check of a run)."""
        return [self.kafka, self.controller, self.redis, self.prometheus, self.metrics, self.base + 94,
                self.base + 80, self.base + 95, self.base + 96]


class PrivateStack:
    """Start, kill and restart the components of a private stack in ``state_dir``."""

    def __init__(self, state_dir: Path, ports: Ports) -> None:
        self.dir = Path(state_dir)
        self.ports = ports
        self._aof_sizes: deque[tuple[float, str, int]] = deque(maxlen=600)
        self._tracking = threading.Event()
        self._tracker: threading.Thread | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.ports.kafka}"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.ports.redis}/0"

    def _env(self) -> dict[str, str]:
        p = self.ports
        # every port the stack opens is moved into the private range, so nothing clashes with the default stack
        return dict(os.environ, DRIFTLINE_STACK_DIR=str(self.dir), DRIFTLINE_KAFKA_PORT=str(p.kafka),
                    DRIFTLINE_KAFKA_CONTROLLER_PORT=str(p.controller), DRIFTLINE_REDIS_PORT=str(p.redis),
                    DRIFTLINE_PROMETHEUS_PORT=str(p.prometheus), DRIFTLINE_METRICS_PORTS=str(p.metrics),
                    DRIFTLINE_KAFKA_SASL_PORT=str(p.base + 94), DRIFTLINE_REDIS_TLS_PORT=str(p.base + 80),
                    DRIFTLINE_ALERTMANAGER_PORT=str(p.base + 95), DRIFTLINE_ALERT_WEBHOOK_PORT=str(p.base + 96))

    def _stack(self, command: str, timeout: float = 180.0) -> None:
        out = subprocess.run([str(STACK), command], env=self._env(), capture_output=True, text=True, timeout=timeout)
        if out.returncode != 0:
            raise RuntimeError(f"scripts/stack {command} failed:\n{out.stderr[-3000:]}")

    def start(self) -> None:
        """Start whatever component is not running (idempotent, waits until healthy)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self._stack("start")

    def stop(self) -> None:
        self.stop_tracking()
        self._stack("stop", timeout=120)

    def pid(self, component: str) -> int | None:
        try:
            return int((self.dir / f"{component}.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def kill(self, component: str) -> None:
        """SIGKILL ``kafka`` or ``redis`` and wait until the process is gone."""
        pid = self.pid(component)
        if pid is None:
            raise RuntimeError(f"{component} has no pid file in {self.dir}")
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        raise RuntimeError(f"{component} (pid {pid}) survived SIGKILL")

    # -- redis's append-only file -------------------------------------------------------------
    def _incr_aof(self) -> Path | None:
        """The incremental AOF file Redis appends to now (from the manifest of ``appendonlydir``)."""
        manifest = self.dir / "redis" / "appendonlydir" / "appendonly.aof.manifest"
        try:
            lines = manifest.read_text().splitlines()
        except OSError:
            return None
        incr = [ln.split()[1] for ln in lines if ln.split()[-1:] == ["i"]]
        return manifest.parent / incr[-1] if incr else None

    def start_tracking(self, interval: float = 0.05) -> None:
        """Sample the AOF's size every ``interval`` seconds, so a later crash can lose a suffix."""
        if self._tracker is not None:
            return
        self._tracking.set()

        def loop() -> None:
            while self._tracking.is_set():
                path = self._incr_aof()
                if path is not None:
                    try:
                        self._aof_sizes.append((time.monotonic(), path.name, path.stat().st_size))
                    except OSError:
                        pass
                time.sleep(interval)

        self._tracker = threading.Thread(target=loop, name="aof-tracker", daemon=True)
        self._tracker.start()

    def stop_tracking(self) -> None:
        self._tracking.clear()
        if self._tracker is not None:
            self._tracker.join(5)
            self._tracker = None

    def kill_redis(self, lose_seconds: float = 0.0, down_seconds: float = 0.0) -> int:
        """SIGKILL Redis, drop the AOF writes of its last ``lose_seconds``, restart it.

        Returns the bytes of AOF cut away (0 when nothing was lost).
        """
        cut_to: int | None = None
        path = self._incr_aof()
        if lose_seconds > 0 and path is not None:
            limit = time.monotonic() - lose_seconds
            older = [size for t, name, size in self._aof_sizes if t <= limit and name == path.name]
            cut_to = older[-1] if older else 0
        self.kill("redis")
        cut = 0
        if cut_to is not None and path is not None and path.exists():
            size = path.stat().st_size
            if cut_to < size:
                os.truncate(path, cut_to)
                cut = size - cut_to
        self._aof_sizes.clear()
        if down_seconds > 0:
            time.sleep(down_seconds)
        self.start()
        return cut

    def kill_kafka(self, down_seconds: float = 0.0) -> None:
        """SIGKILL the broker and restart it (the restart waits until it serves metadata)."""
        self.kill("kafka")
        if down_seconds > 0:
            time.sleep(down_seconds)
        self.start()
