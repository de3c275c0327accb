"""One nats-server with JetStream on 127.0.0.1, restartable on the same port and store (fault tests)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ferry_local.processes import ManagedProcess, spawn
from ferry_local.readiness import free_port, http_ok, say, wait_until_ready


@dataclass
class NatsServer:
    binary: Path
    store: Path
    logs: Path
    port: int = field(default_factory=free_port)
    monitor_port: int = field(default_factory=free_port)
    process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def monitor(self) -> str:
        return f"http://127.0.0.1:{self.monitor_port}"

    def start(self) -> ManagedProcess:
        say(f"starting nats-server (JetStream) on {self.url}")
        self.process = spawn("nats-server", [
            str(self.binary), "-a", "127.0.0.1", "-p", str(self.port), "-m", str(self.monitor_port),
            "-js", "-sd", str(self.store), "-n", f"ferry-{self.port}",
        ], self.logs)  # fmt: skip
        try:
            wait_until_ready("nats-server", self.process, lambda: http_ok(f"{self.monitor}/healthz"), 30)
        except BaseException:
            self.process.stop()
            raise
        return self.process

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def restart(self) -> None:
        """Stop and start again with the same port and JetStream store (state survives)."""
        self.stop()
        self.start()
