"""Ferry services as separate OS processes, for end-to-end tests and benchmarks.

Each service runs exactly as in production (its ``main()``), configured by environment
variables only, under its own ServiceAccount (``KUBECONFIG`` is switched from the admin's to the
service's own, :mod:`ferry_local.identities`), with its own probe port and log file; tests kill,
restart and measure them.
"""

from __future__ import annotations

import os
import signal
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ferry_local.identities import with_identity
from ferry_local.processes import ManagedProcess, spawn, tail
from ferry_local.readiness import free_port

ENTRY_POINTS: dict[str, str] = {
    "watcher": "ferry_watcher",
    "converter": "ferry_converter",
    "applier": "ferry_applier",
    "status": "ferry_status",
    "autoscaler": "ferry_autoscaler",
}
PIPELINE = ("watcher", "converter", "applier", "status")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` so far (from ``/proc/<pid>/stat``); 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


class ServiceError(RuntimeError):
    """A service died or never became ready; the message carries the end of its log."""


@dataclass
class ServiceProcess:
    """One service process: start, wait for ``/readyz``, kill (SIGKILL) or stop (SIGTERM), restart."""

    name: str
    log_dir: Path
    env: dict[str, str]
    instance: int = 0
    probe_port: int = field(default_factory=free_port)
    process: ManagedProcess | None = None
    peak_rss_kib: int = 0
    cpu_seconds_before: float = 0.0
    """CPU time of earlier incarnations (restarts), so totals cover the whole test."""

    @property
    def label(self) -> str:
        return f"{self.name}-{self.instance}" if self.instance else self.name

    @property
    def argv(self) -> list[str]:
        module = ENTRY_POINTS[self.name]
        return [sys.executable, "-c", f"from {module}.__main__ import main; main()"]

    def start(self) -> None:
        env = {
            **self.env,
            "FERRY_PROBE_PORT": str(self.probe_port),
            "OTEL_SERVICE_NAME": f"ferry-{self.name}",
        }
        self.process = spawn(self.label, self.argv, self.log_dir, env)

    def alive(self) -> bool:
        return self.process is not None and self.process.alive()

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.probe_port}/readyz", timeout=2) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise ServiceError(f"{self.label} exited:\n{self.log_tail()}")
            if self.ready():
                return
            self.sample()
            time.sleep(0.2)
        raise ServiceError(f"{self.label} not ready after {timeout:.0f}s:\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL: no graceful shutdown, in-flight work is lost (what a crash looks like)."""
        if self.process is not None and self.alive():
            self.sample()
            self.cpu_seconds_before += self._cpu_seconds_now()
            os.kill(self.process.pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while self.alive() and time.monotonic() < deadline:
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.alive():
            self.sample()
            self.cpu_seconds_before += self._cpu_seconds_now()
            self.process.stop()

    def restart(self, *, kill: bool = True) -> None:
        self.kill() if kill else self.stop()
        self.start()

    def log_tail(self, lines: int = 40) -> str:
        return tail(self.process.log, lines) if self.process else "(not started)"

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.probe_port}/metrics", timeout=5) as resp:
            body: bytes = resp.read()
        return body.decode()

    # ------------------------------------------------------------------ resource usage from /proc

    def sample(self) -> None:
        """Record the peak resident set size (call periodically; VmHWM covers between calls)."""
        if self.process is None:
            return
        try:
            for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    self.peak_rss_kib = max(self.peak_rss_kib, int(line.split()[1]))
        except OSError:
            pass

    def _cpu_seconds_now(self) -> float:
        return 0.0 if self.process is None else process_cpu_seconds(self.process.pid)

    def cpu_seconds(self) -> float:
        """User + system CPU of every incarnation so far."""
        return self.cpu_seconds_before + (self._cpu_seconds_now() if self.alive() else 0.0)


@dataclass
class ServiceSet:
    """The pipeline's services sharing one environment (kube, NATS, trace file)."""

    log_dir: Path
    env: dict[str, str]
    services: dict[str, ServiceProcess] = field(default_factory=dict)

    def add(self, name: str, *, instance: int = 0, env: dict[str, str] | None = None) -> ServiceProcess:
        own_env = with_identity(name, {**self.env, **(env or {})})
        proc = ServiceProcess(name, self.log_dir, own_env, instance=instance)
        self.services[proc.label] = proc
        return proc

    def start(self, names: Iterable[str] = PIPELINE, timeout: float = 90.0) -> None:
        started = []
        for name in names:
            proc = self.services.get(name) or self.add(name)
            proc.start()
            started.append(proc)
            if name == "watcher":
                proc.wait_ready(timeout)  # it declares the streams the others bind to
        for proc in started:
            proc.wait_ready(timeout)

    def __getitem__(self, label: str) -> ServiceProcess:
        return self.services[label]

    def sample(self) -> None:
        for proc in self.services.values():
            proc.sample()

    def check_alive(self) -> None:
        dead = [p for p in self.services.values() if p.process is not None and not p.alive()]
        if dead:
            raise ServiceError("\n".join(f"{p.label} died:\n{p.log_tail()}" for p in dead))

    def stop(self) -> None:
        for proc in reversed(list(self.services.values())):
            proc.stop()

    def logs(self, lines: int = 25) -> str:
        return "\n".join(f"--- {p.label}\n{p.log_tail(lines)}" for p in self.services.values())
