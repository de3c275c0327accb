"""The engine command (``buildCommands``, ``spec/booster.md`` §3.6)."""

from __future__ import annotations

from typing import Any

from ferry_schemas.quantity import parse_quantity, quantity_ceil

from ferry_converter.booster.workers import engine_args, kv_connector_name

RAY_SCRIPT = "examples/online_serving/multi-node-serving.sh"
DEVICE_RESOURCES = ("nvidia.com/gpu", "huawei.com/ascend-1980")
GPU_RESOURCE = "nvidia.com/gpu"
DEPENDENCY_INSTALL = {
    "MooncakeConnector": "pip install mooncake-transfer-engine",
    "NixlConnector": "PIP_DISABLE_PIP_VERSION_CHECK=1 pip install -U --no-cache-dir nixl",
}


def limits(worker: dict[str, Any]) -> dict[str, Any]:
    resources = worker.get("resources") or {}
    value = resources.get("limits") if isinstance(resources, dict) else None
    return value if isinstance(value, dict) else {}


def device_count(worker: dict[str, Any]) -> int:
    """Sum of the worker's GPU/NPU **limits**, each rounded up (requests are ignored)."""
    worker_limits = limits(worker)
    return sum(quantity_ceil(worker_limits.get(name)) for name in DEVICE_RESOURCES)


def uses_gpu(workers: list[dict[str, Any]]) -> bool:
    for worker in workers:
        amount = parse_quantity(limits(worker).get(GPU_RESOURCE))
        if amount is not None and amount > 0:
            return True
    return False


def ray_leader_prefix(pods: int, devices: int) -> str:
    return f"chmod u+x {RAY_SCRIPT} && {RAY_SCRIPT} leader --ray_cluster_size={pods} --num-gpus={devices} && "


def ray_worker_command() -> list[str]:
    return ["bash", "-c", f"chmod u+x {RAY_SCRIPT} && {RAY_SCRIPT} worker --ray_address=$(ENTRY_ADDRESS)"]


def build_command(
    *,
    model_path: str,
    config: Any,
    extra_args: list[str],
    ray: tuple[int, int] | None,
    install_dependencies: bool,
) -> list[str]:
    """``python3 -m vllm...`` + args; wrapped for Ray (``ray=(pods, devices)``) and the pip install.

    ``extra_args`` (LoRA modules) go before the wrappers so they stay part of the engine command.
    """
    cmd = ["python3", "-m", "vllm.entrypoints.openai.api_server", "--model", model_path]
    cmd += engine_args(config)
    cmd += extra_args
    prefix = ""
    if ray is not None:
        pods, devices = ray
        cmd += ["--distributed_executor_backend", "ray"]
        prefix = ray_leader_prefix(pods, devices)
    install = DEPENDENCY_INSTALL.get(kv_connector_name(config)) if install_dependencies else None
    if install is not None:
        # Kthena wraps twice here (``bash -c bash -c …``); one script with both steps is what works.
        prefix = f"{install} && {prefix}"
    if not prefix:
        return cmd
    # Plain space-joining, as Kthena does (the golden files encode it).
    return ["bash", "-c", prefix + " ".join(cmd)]
