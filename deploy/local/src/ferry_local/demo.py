"""``make demo``: the whole user story on the local stack, with progress, in a few minutes.

Starts (or reuses) the local stack, the six services and the local node; applies the quick-start
booster and a prefill/decode booster; waits until both are Active; chats with both through the
router using the official ``openai`` client (one answer streamed); shows them with the ``ferry`` CLI
(``get models``, ``get servings``, ``describe model qwen`` with its last reconcile trace); tears
everything down unless ``--keep``, and ends pointing at the CLI. Exits non-zero, saying
which step failed, when anything goes wrong.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ferry_schemas.runtime.spans import read_spans
from openai import OpenAI

from ferry_local.__main__ import bring_up
from ferry_local.paths import repo_root, state_dir
from ferry_local.readiness import StackError, say
from ferry_local.stack import LocalStack, StackInfo, kubectl

NAMESPACE = "ferry-demo"
BOOSTERS = {"qwen": "Qwen2.5-0.5B-Instruct", "deepseek-v2-lite": "deepseek-ai/DeepSeekV2"}
"""Booster name (what clients ask for: the ModelRoute's modelName) → the engine's served model name."""


class DemoFailed(RuntimeError):
    pass


def _conditions(booster: dict[str, Any]) -> dict[str, str]:
    status = booster.get("status") or {}
    return {c["type"]: c["status"] for c in status.get("conditions") or []}


def _failure(booster: dict[str, Any]) -> str | None:
    for condition in (booster.get("status") or {}).get("conditions") or []:
        if condition["type"] == "Failed" and condition["status"] == "True":
            return str(condition.get("message") or condition.get("reason"))
    return None


def wait_active(info: StackInfo, timeout: float) -> None:
    """Print each booster's conditions as they change until every one is Active."""
    deadline = time.monotonic() + timeout
    last: dict[str, str] = {}
    while time.monotonic() < deadline:
        listing = json.loads(kubectl(info, "-n", NAMESPACE, "get", "modelboosters", "-o", "json"))
        active = 0
        for booster in listing["items"]:
            name = booster["metadata"]["name"]
            conditions = _conditions(booster)
            shown = ", ".join(f"{k}={v}" for k, v in sorted(conditions.items())) or "no status yet"
            if last.get(name) != shown:
                say(f"  {name}: {shown}")
                last[name] = shown
            if failure := _failure(booster):
                raise DemoFailed(f"ModelBooster {name} failed: {failure}")
            active += conditions.get("Active") == "True"
        if active == len(BOOSTERS):
            return
        time.sleep(1)
    raise DemoFailed(f"the boosters were not Active after {timeout:.0f}s (last seen: {last})")


def chat(router_url: str) -> None:
    client = OpenAI(base_url=f"{router_url}/v1", api_key="ferry-demo", timeout=30, max_retries=2)
    models = [m.id for m in client.models.list().data]
    say(f"router serves models: {', '.join(sorted(models))}")
    answer = client.chat.completions.create(
        model="qwen", messages=[{"role": "user", "content": "What is Ferry?"}], max_tokens=24
    )
    print(f"\n[qwen → engine model {answer.model}] {answer.choices[0].message.content}")
    print(f"    usage: {answer.usage.model_dump() if answer.usage else 'none'}")
    print("\n[deepseek-v2-lite, streamed via prefill → decode] ", end="", flush=True)
    stream = client.chat.completions.create(
        model="deepseek-v2-lite",
        messages=[{"role": "user", "content": "Where is the capital of China?"}],
        max_tokens=24,
        stream=True,
    )
    chunks = 0
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            print(chunk.choices[0].delta.content, end="", flush=True)
            chunks += 1
    print(f"\n    ({chunks} streamed chunks)\n")
    if chunks == 0:
        raise DemoFailed("the streamed answer was empty")


def ferry(info: StackInfo, *args: str) -> None:
    """Run the ``ferry`` CLI against the stack, as a user would after ``eval "$(ferry-local env)"``."""
    say(f"ferry {' '.join(args)}")
    env = {**os.environ, **info.env(), "FERRY_TRACE_FILE": info.trace_file, "COLUMNS": "130"}
    done = subprocess.run([sys.executable, "-m", "ferry_cli", *args], env=env, text=True, capture_output=True)
    print(done.stdout.rstrip() + "\n")
    if done.returncode != 0:
        raise DemoFailed(f"ferry {' '.join(args)} failed: {done.stderr.strip()}")


def show(info: StackInfo) -> None:
    """The CLI's view: both models, their servings, and one model in detail (with its last trace)."""
    ferry(info, "-n", NAMESPACE, "get", "models")
    ferry(info, "-n", NAMESPACE, "get", "servings")
    ferry(info, "-n", NAMESPACE, "describe", "model", "qwen")
    spans = read_spans(Path(info.trace_file))
    say(f"traces: {len(spans)} spans in {info.trace_file} (OTEL_EXPORTER_OTLP_ENDPOINT sends them elsewhere)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ferry-demo", description=__doc__)
    parser.add_argument("--keep", action="store_true", help="leave everything running (like make up)")
    parser.add_argument("--timeout", type=float, default=240, help="seconds to wait for Active")
    args = parser.parse_args(argv)
    started = time.monotonic()
    directory = state_dir() / "stack"
    was_running = (recorded := StackInfo.load(directory)) is not None and recorded.running()
    step = "starting the local stack and Ferry"
    try:
        say(step)
        info = bring_up(directory, with_services=True)
        step = "applying the demo boosters"
        say(f"{step} (deploy/local/demo/)")
        print(kubectl(info, "apply", "-f", str(repo_root() / "deploy" / "local" / "demo")).strip())
        step = "waiting for both boosters to become Active"
        say(step)
        wait_active(info, args.timeout)
        step = "chatting through the router"
        say(f"{step} at {info.router_url}")
        chat(info.router_url)
        step = "showing the cluster"
        show(info)
    except (DemoFailed, StackError, Exception) as exc:
        print(f"\nerror: the demo failed while {step}: {exc}", file=sys.stderr)
        print(f"logs: {directory / 'logs'}", file=sys.stderr)
        if not args.keep and not was_running:
            LocalStack.stop_recorded(directory)
        return 1
    if args.keep or was_running:
        say(f"left running: KUBECONFIG={info.kubeconfig}, router {info.router_url} (make down stops it)")
    else:
        say("tearing down (make up keeps everything running)")
        kubectl(info, "delete", "namespace", NAMESPACE, "--wait=true", "--timeout=60s")
        LocalStack.stop_recorded(directory)
    say(f"demo finished in {time.monotonic() - started:.0f}s")
    # the last lines point at the CLI, whichever way the demo ends
    if args.keep or was_running:
        say('explore it: eval "$(uv run ferry-local env)"')
    else:
        say('explore it: make up; eval "$(uv run ferry-local env)"; kubectl apply -f deploy/local/demo/')
    say(f"  then: ferry describe model qwen -n {NAMESPACE}; ferry chat qwen 'Hello'")
    return 0


if __name__ == "__main__":
    sys.exit(main())
