"""``ferry-local up|down|status|env|kubectl``: drive the local stack from the Makefile or a shell.

``ferry-local pki|bootstrap`` are the one-shot steps of ``docker-compose.yml``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ferry_local.binaries import MissingBinary, kubernetes_bin_dir
from ferry_local.compose import bootstrap, write_pki
from ferry_local.paths import state_dir
from ferry_local.readiness import StackError
from ferry_local.stack import LocalStack, StackInfo, install_crds
from ferry_local.system import start_system


def _stack_dir(args: argparse.Namespace) -> Path:
    return Path(args.state) if args.state else state_dir() / "stack"


def bring_up(directory: Path, *, with_services: bool, nats_nodes: int = 0) -> StackInfo:
    """Start (or reuse) the stack, install the CRDs and, unless told not to, Ferry itself."""
    info = LocalStack(directory, nats_nodes=nats_nodes).start()
    install_crds(info)
    if with_services and not info.router_url:
        traces = directory / "traces.jsonl"
        traces.unlink(missing_ok=True)  # spans of this run only
        system = start_system(info.env(), directory / "logs", traces)
        info.processes.extend(system.processes)
        info.router_url, info.trace_file = system.router_url, system.trace_file
        info.save()
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ferry-local", description=__doc__)
    parser.add_argument("--state", help="state directory (default: <repo>/.state/stack)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("build", help="build (once) and print the Kubernetes binaries directory")
    up = sub.add_parser("up", help="start the stack, install CRDs, start the services and the local node")
    up.add_argument("--stack-only", action="store_true", help="only etcd, apiserver, kcm and nats-server")
    up.add_argument(
        "--nats-cluster", action="store_true", help="a 3-node nats-server cluster, 3 stream copies"
    )
    sub.add_parser("down", help="stop exactly the processes 'up' started")
    sub.add_parser("status", help="say whether the stack is running and where")
    sub.add_parser("env", help='print shell exports (eval "$(ferry-local env)")')
    kubectl = sub.add_parser("kubectl", help="run the stack's kubectl with its kubeconfig")
    kubectl.add_argument("args", nargs=argparse.REMAINDER)
    pki = sub.add_parser("pki", help="compose: write the cluster PKI and kubeconfigs into a directory")
    pki.add_argument("directory", type=Path)
    pki.add_argument("--server", required=True, help="API server URL as the containers reach it")
    pki.add_argument("--host-server", required=True, help="API server URL as the host reaches it")
    pki.add_argument("--san", action="append", default=[], help="another DNS name for the serving cert")
    boot = sub.add_parser("bootstrap", help="compose: wait for the API server and NATS, install the CRDs")
    boot.add_argument("--kubeconfig", type=Path, required=True)
    boot.add_argument("--crds", type=Path, required=True)
    boot.add_argument("--nats", required=True, help="host:port of NATS")
    args = parser.parse_args(argv)
    try:
        if args.command in ("pki", "bootstrap"):  # inside a container: no repository, no state dir
            if args.command == "pki":
                write_pki(args.directory, args.server, args.host_server, tuple(args.san))
            else:
                bootstrap(args.kubeconfig, args.crds, args.nats)
            return 0
        directory = _stack_dir(args)
        if args.command == "build":
            print(kubernetes_bin_dir())
        elif args.command == "up":
            nodes = 3 if args.nats_cluster else 0
            started = bring_up(directory, with_services=not args.stack_only, nats_nodes=nodes)
            print(f"export KUBECONFIG={started.kubeconfig}\nexport FERRY_NATS_URL={started.nats_url}")
            if started.router_url:
                print(f"# router: {started.router_url}  traces: {started.trace_file}")
            print(
                '# use it: eval "$(uv run ferry-local env)", then kubectl, `ferry get models -n NS`,'
                " `ferry chat MODEL`; `make down` stops it"
            )
        elif args.command == "down":
            stopped = LocalStack.stop_recorded(directory)
            print("local stack stopped" if stopped else "local stack was not running")
        elif args.command in ("status", "env", "kubectl"):
            recorded = StackInfo.load(directory)
            if recorded is None or not recorded.running():
                print("local stack is not running (make up)", file=sys.stderr)
                return 1
            info = recorded
            if args.command == "status":
                for proc in info.processes:
                    print(f"{proc.name:26} pid {proc.pid:<8} log {proc.log}")
                print(f"KUBECONFIG={info.kubeconfig}\nNATS_URL={info.nats_url}")
                if info.router_url:
                    print(f"ROUTER_URL={info.router_url}\nTRACES={info.trace_file}")
                else:
                    print("ROUTER_URL= (not started: ferry-local up --stack-only)")
            elif args.command == "env":
                for key, value in info.env().items():
                    print(f"export {key}={value}")
                if info.router_url:  # for `ferry chat` and `ferry describe` (its last reconcile trace)
                    print(f"export FERRY_ROUTER_URL={info.router_url}")
                    print(f"export FERRY_TRACE_FILE={info.trace_file}")
                # kubectl, and the workspace's scripts (`ferry`, `ferry-local`)
                print(f"export PATH={Path(info.kubectl).parent}:{Path(sys.executable).parent}:$PATH")
            else:
                os.execv(info.kubectl, [info.kubectl, "--kubeconfig", info.kubeconfig, *args.args])
    except (StackError, MissingBinary) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
