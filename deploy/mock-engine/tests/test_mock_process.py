"""The mock engine as a process: ``python -m ferry_mock_engine`` with a pod's vLLM command line."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_runs_as_a_process_with_vllm_flags_and_stops_on_sigterm() -> None:
    port = _free_port()
    argv = [
        sys.executable, "-m", "ferry_mock_engine", "python3", "-m", "vllm.entrypoints.openai.api_server",
        "--model", "/cache/x", "--served-model-name", "proc-model",
        "--host", "127.0.0.1", "--port", str(port),
        "--gpu-memory-utilization", "0.9", "--trust-remote-code",
    ]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2) as resp:
                    assert b"proc-model" in resp.read()
                    break
            except OSError:
                assert proc.poll() is None, "engine exited early"
                assert time.monotonic() < deadline, "engine did not answer within 30 s"
                time.sleep(0.1)
        proc.terminate()
        output, _ = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == 0
    assert "ignoring engine flag --gpu-memory-utilization" in output


def test_bad_flag_value_exits_with_a_clear_message() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "ferry_mock_engine", "--kv-transfer-config", "{oops"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert "--kv-transfer-config is not JSON" in proc.stderr
