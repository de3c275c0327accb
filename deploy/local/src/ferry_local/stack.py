"""The local stack: etcd, kube-apiserver, kube-controller-manager and nats-server on 127.0.0.1.

``LocalStack(state).start()`` starts everything on free ports (nats-server as one node, or a 3-node
JetStream cluster with ``nats_nodes=3`` / ``FERRY_NATS_CLUSTER=3`` / ``ferry-local up --nats-cluster``,
streams then kept in three copies), waits until each part answers,
writes ``<state>/kubeconfig`` and ``<state>/stack.json`` and returns a :class:`StackInfo`;
``stop()`` (or ``LocalStack.stop_recorded(state)``) stops exactly the processes it recorded.
``FERRY_APISERVER_PROFILING=1`` switches kube-apiserver's ``/debug/pprof`` on.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ferry_local.binaries import Binaries, fetched_crds, find_binaries
from ferry_local.natsd import NatsCluster, NatsServer
from ferry_local.paths import repo_root
from ferry_local.pki import ensure_pki, write_kubeconfig
from ferry_local.processes import ManagedProcess, spawn, tail
from ferry_local.readiness import StackError, free_port, http_ok, say, wait_until_ready

PROFILING_ENV = "FERRY_APISERVER_PROFILING"
"""Set (to anything) to have kube-apiserver serve ``/debug/pprof`` for a measurement; off by default."""

# deployment and replicaset: ModelServers select pods of any owner, tested with a Deployment;
# horizontalpodautoscaling: an HPA on a ModelServing's scale subresource (no metrics API here, but an
# HPA still moves replicas into its min..max range, which shows whether the applier fights it)
GC_CONTROLLERS = "garbagecollector,namespace,serviceaccount,deployment,replicaset,horizontalpodautoscaling"


@dataclass
class StackInfo:
    """Everything a client needs to use a running stack (also saved as ``stack.json``)."""

    state_dir: str
    kubeconfig: str
    kubectl: str
    server: str
    nats_url: str
    nats_monitor: str
    etcd_url: str
    processes: list[ManagedProcess] = field(default_factory=list)
    router_url: str = ""
    trace_file: str = ""
    stream_replicas: int = 1

    def env(self) -> dict[str, str]:
        """Environment for a process that should talk to this stack."""
        return {
            "KUBECONFIG": self.kubeconfig,
            "FERRY_NATS_URL": self.nats_url,
            "NATS_URL": self.nats_url,
            "FERRY_STREAM_REPLICAS": str(self.stream_replicas),
        }

    def save(self) -> None:
        data = asdict(self)
        Path(self.state_dir, "stack.json").write_text(json.dumps(data, indent=2))

    @classmethod
    def load(cls, state_dir: Path) -> StackInfo | None:
        path = state_dir / "stack.json"
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        data["processes"] = [ManagedProcess(**p) for p in data.get("processes", [])]
        return cls(**data)

    def running(self) -> bool:
        return bool(self.processes) and all(p.alive() for p in self.processes)


class LocalStack:
    """Starts and stops one stack whose files all live under ``state_dir``."""

    def __init__(
        self,
        state_dir: Path,
        binaries: Binaries | None = None,
        *,
        with_nats: bool = True,
        nats_nodes: int = 0,
    ) -> None:
        self.state_dir = state_dir.resolve()
        self.with_nats = with_nats
        self.nats_nodes = nats_nodes or int(os.environ.get("FERRY_NATS_CLUSTER") or 1)
        self._binaries = binaries
        self.info: StackInfo | None = None

    def start(self) -> StackInfo:
        existing = StackInfo.load(self.state_dir)
        if existing and existing.running():
            say(f"local stack already running (state {self.state_dir})")
            self.info = existing
            return existing
        if existing:
            self.stop_recorded(self.state_dir)
        if not os.environ.get("FERRY_KEEP_DATA"):  # a new stack starts empty, like a new cluster
            for data in ("etcd", "nats"):
                shutil.rmtree(self.state_dir / data, ignore_errors=True)
        bins = self._binaries or find_binaries()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        logs = self.state_dir / "logs"
        pki = ensure_pki(self.state_dir / "pki")
        started: list[ManagedProcess] = []
        try:
            etcd_port, etcd_peer = free_port(), free_port()
            etcd_url = f"http://127.0.0.1:{etcd_port}"
            say(f"starting etcd on {etcd_url}")
            etcd = spawn("etcd", [
                str(bins.etcd), "--name", "ferry", "--data-dir", str(self.state_dir / "etcd"),
                "--listen-client-urls", etcd_url, "--advertise-client-urls", etcd_url,
                "--listen-peer-urls", f"http://127.0.0.1:{etcd_peer}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{etcd_peer}",
                "--initial-cluster", f"ferry=http://127.0.0.1:{etcd_peer}",
                "--quota-backend-bytes", str(2 * 1024**3), "--log-level", "warn",
            ], logs)  # fmt: skip
            started.append(etcd)
            wait_until_ready("etcd", etcd, lambda: http_ok(f"{etcd_url}/health"), 30)

            nats_url, nats_monitor = "", ""
            if self.with_nats and self.nats_nodes > 1:
                cluster = NatsCluster.create(bins.nats_server, self.state_dir / "nats", logs, self.nats_nodes)
                started.extend(cluster.start())
                nats_url, nats_monitor = cluster.url, cluster.monitor
            elif self.with_nats:
                nats = NatsServer(bins.nats_server, self.state_dir / "nats" / "n0", logs)
                started.append(nats.start())
                nats_url, nats_monitor = nats.url, nats.monitor

            api_port = free_port()
            server = f"https://127.0.0.1:{api_port}"
            say(f"starting kube-apiserver on {server}")
            apiserver = spawn("kube-apiserver", [
                str(bins.kube_apiserver), "--etcd-servers", etcd_url,
                "--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1",
                "--secure-port", str(api_port),
                "--cert-dir", str(self.state_dir / "pki"),
                "--tls-cert-file", str(pki.server_crt), "--tls-private-key-file", str(pki.server_key),
                "--client-ca-file", str(pki.ca_crt),
                "--service-account-issuer", "https://kubernetes.default.svc",
                "--service-account-key-file", str(pki.sa_pub),
                "--service-account-signing-key-file", str(pki.sa_key),
                "--service-cluster-ip-range", "10.0.0.0/24",
                "--authorization-mode", "RBAC", "--allow-privileged=true",
                "--disable-admission-plugins", "ServiceAccount",
                "--enable-priority-and-fairness=false",
                f"--profiling={str(bool(os.environ.get(PROFILING_ENV))).lower()}",
                "--endpoint-reconciler-type", "none",
                # compact etcd often so watches really expire (410 Gone) and relists get exercised
                "--etcd-compaction-interval", "20s",
            ], logs)  # fmt: skip
            started.append(apiserver)
            kubeconfig = write_kubeconfig(self.state_dir / "kubeconfig", server, pki)
            context = ssl.create_default_context(cafile=str(pki.ca_crt))
            context.load_cert_chain(str(pki.admin_crt), str(pki.admin_key))
            wait_until_ready("kube-apiserver", apiserver, lambda: http_ok(f"{server}/readyz", context), 90)

            say("starting kube-controller-manager (garbage collector, namespace controller)")
            kcm = spawn("kube-controller-manager", [
                str(bins.kube_controller_manager), "--kubeconfig", str(kubeconfig),
                "--controllers", GC_CONTROLLERS, "--leader-elect=false",
                "--secure-port", "0", "--use-service-account-credentials=false",
                "--service-account-private-key-file", str(pki.sa_key), "--root-ca-file", str(pki.ca_crt),
                "--concurrent-gc-syncs", "10", "--profiling=false",
                "--horizontal-pod-autoscaler-sync-period", "2s",
                "--kube-api-qps", "200", "--kube-api-burst", "400",
            ], logs)  # fmt: skip
            started.append(kcm)
            time.sleep(0.5)
            if not kcm.alive():
                raise StackError(f"kube-controller-manager exited; last lines:\n{tail(kcm.log)}")
        except BaseException:
            for proc in reversed(started):
                proc.stop()
            raise
        self.info = StackInfo(
            state_dir=str(self.state_dir),
            kubeconfig=str(kubeconfig),
            kubectl=str(bins.kubectl),
            server=server,
            nats_url=nats_url,
            nats_monitor=nats_monitor,
            etcd_url=etcd_url,
            processes=started,
            stream_replicas=3 if self.with_nats and self.nats_nodes >= 3 else 1,
        )
        self.info.save()
        say(f"local stack ready: KUBECONFIG={kubeconfig} NATS_URL={nats_url}")
        return self.info

    def install_crds(self, crd_dir: Path | None = None) -> None:
        """Server-side apply every CRD under ``deploy/crds`` and wait until they are Established."""
        assert self.info is not None, "start() first"
        install_crds(self.info, crd_dir)

    def stop(self) -> None:
        self.stop_recorded(self.state_dir)
        self.info = None

    @staticmethod
    def stop_recorded(state_dir: Path) -> bool:
        """Stop exactly the processes recorded in ``stack.json``; returns whether any were recorded."""
        info = StackInfo.load(state_dir)
        if info is None:
            return False
        for proc in reversed(info.processes):
            proc.stop()
        (state_dir / "stack.json").unlink(missing_ok=True)
        return True


def kubectl(info: StackInfo, *args: str, input: str | None = None, timeout: float = 120) -> str:
    """Run kubectl against the stack; raises with kubectl's own message on failure."""
    done = subprocess.run(
        [info.kubectl, "--kubeconfig", info.kubeconfig, *args],
        input=input, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    if done.returncode != 0:
        raise StackError(f"kubectl {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def install_crds(info: StackInfo, crd_dir: Path | None = None) -> None:
    """The CRDs of ``crd_dir``; by default Ferry's (``deploy/crds``), the Gateway API and Inference
    Extension CRDs (gateway mode) and LeaderWorkerSet's, both from their Go modules (``fetch-crds.sh``).

    The local stack serves LeaderWorkerSets like a cluster with LWS installed (Kthena's e2e setup),
    so Ferry's LWS support is enabled there.
    """
    if crd_dir is None:
        install_crds(info, repo_root() / "deploy" / "crds")
        install_crds(info, fetched_crds("gateway"))
        crd_dir = fetched_crds("lws")
    files = sorted(crd_dir.glob("*.yaml"))
    if not files:
        say(f"no CRDs in {crd_dir} yet (make crds)")
        return
    say(f"installing {len(files)} CRDs from {crd_dir}")
    kubectl(info, "apply", "--server-side", "--force-conflicts", "-f", str(crd_dir))
    deadline = time.monotonic() + 60
    while True:
        try:
            kubectl(info, "wait", "--for", "condition=Established", "--timeout", "60s", "-f", str(crd_dir))
            return
        except StackError as exc:
            # a just-created CRD may have no status.conditions yet, which kubectl wait refuses
            if "accessor error" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.2)
