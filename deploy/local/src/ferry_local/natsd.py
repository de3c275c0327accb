"""nats-server with JetStream on 127.0.0.1: one node, or a 3-node cluster (fault tests), with a NATS
user per service (``deploy/base/nats/users``, :mod:`ferry_local.natsauth`); restartable on the same
ports and store.

``url`` carries the admin user (tests and operators inspect everything); :func:`service_url` turns
it into the URL of one service's own user, which is how every service is started here.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from ferry_local.natsauth import issue_passwords, render_conf, with_user
from ferry_local.processes import ManagedProcess, spawn
from ferry_local.readiness import free_port, http_ok, say, wait_until_ready

ADMIN = "admin"
_PASSWORDS: dict[str, dict[str, str]] = {}
"""Per ``127.0.0.1:port`` of every server started by this process: the users' passwords."""


def _address(url: str) -> str:
    parts = urlsplit(url.split(",")[0].strip())
    return f"{parts.hostname}:{parts.port}"


def service_url(service: str, url: str) -> str:
    """``url`` with ``service``'s own user, when this process started that server and the service
    has a user; otherwise ``url`` unchanged (a server someone else runs: its URL says who we are)."""
    passwords = _PASSWORDS.get(_address(url)) if url else None
    if not passwords or service not in passwords:
        return url
    return with_user(url, service, passwords[service])


@dataclass
class NatsServer:
    binary: Path
    store: Path
    logs: Path
    port: int = field(default_factory=free_port)
    monitor_port: int = field(default_factory=free_port)
    process: ManagedProcess | None = None
    passwords: dict[str, str] = field(default_factory=issue_passwords)
    name: str = ""
    cluster_port: int | None = None
    routes: list[int] = field(default_factory=list)

    @property
    def plain_url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The admin's URL."""
        return with_user(self.plain_url, ADMIN, self.passwords[ADMIN])

    def url_for(self, service: str) -> str:
        return with_user(self.plain_url, service, self.passwords[service])

    @property
    def monitor(self) -> str:
        return f"http://127.0.0.1:{self.monitor_port}"

    def config(self) -> str:
        name = self.name or f"ferry-{self.port}"
        lines = [
            f"server_name: {json.dumps(name)}",
            f"listen: 127.0.0.1:{self.port}",
            f"http: 127.0.0.1:{self.monitor_port}",
            f"jetstream {{ store_dir: {json.dumps(str(self.store))} }}",
        ]
        if self.cluster_port is not None:
            routes = ", ".join(json.dumps(f"nats://127.0.0.1:{p}") for p in self.routes)
            lines.append(
                f"cluster {{ name: ferry, listen: 127.0.0.1:{self.cluster_port}, routes: [{routes}] }}"
            )
        return "\n".join([*lines, render_conf(self.passwords.__getitem__)])

    def spawn(self) -> ManagedProcess:
        say(f"starting nats-server (JetStream) {self.name or ''} on {self.plain_url}".replace("  ", " "))
        self.store.mkdir(parents=True, exist_ok=True)
        conf = self.store.parent / f"{self.store.name}.conf"
        conf.write_text(self.config())
        conf.chmod(0o600)
        _PASSWORDS[_address(self.plain_url)] = self.passwords
        self.process = spawn(f"nats-server{'-' + self.name if self.name else ''}", [
            str(self.binary), "-c", str(conf),
        ], self.logs)  # fmt: skip
        return self.process

    def wait_ready(self, timeout: float = 30) -> None:
        assert self.process is not None
        try:
            wait_until_ready("nats-server", self.process, lambda: http_ok(f"{self.monitor}/healthz"), timeout)
        except BaseException:
            self.process.stop()
            raise

    def start(self) -> ManagedProcess:
        process = self.spawn()
        self.wait_ready()
        return process

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def kill(self) -> None:
        """SIGKILL: what a crashed node looks like."""
        if self.process is not None and self.process.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGKILL)

    def restart(self) -> None:
        """Stop and start again with the same port and JetStream store (state survives)."""
        self.stop()
        self.start()


@dataclass
class NatsCluster:
    """Three JetStream nodes routed to each other (``FERRY_NATS_CLUSTER=3`` / the fault tests)."""

    nodes: list[NatsServer]

    @classmethod
    def create(cls, binary: Path, directory: Path, logs: Path, size: int = 3) -> NatsCluster:
        passwords = issue_passwords()
        cluster_ports = [free_port() for _ in range(size)]
        nodes = [
            NatsServer(
                binary,
                directory / f"n{i}",
                logs,
                passwords=passwords,
                name=f"n{i}",
                cluster_port=cluster_ports[i],
                routes=[p for j, p in enumerate(cluster_ports) if j != i],
            )
            for i in range(size)
        ]
        return cls(nodes)

    @property
    def url(self) -> str:
        return ",".join(node.url for node in self.nodes)

    @property
    def monitor(self) -> str:
        return self.nodes[0].monitor

    def start(self) -> list[ManagedProcess]:
        processes = [node.spawn() for node in self.nodes]
        try:
            for node in self.nodes:  # each is healthy only once the cluster has a meta leader
                node.wait_ready(60)
        except BaseException:
            self.stop()
            raise
        return processes

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
