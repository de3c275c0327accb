"""Engine command lines → config: the flags Ferry's pods carry (Kthena golden files and examples)."""

from __future__ import annotations

import json

import pytest
from ferry_mock_engine import Connector, EngineKind, Role, argv_from_container, config_from_argv, engine_argv
from ferry_mock_engine.config import parse_duration
from ferry_mock_engine.profiles import DEFAULT_PROFILE, profile_named


def test_python_module_launcher_with_golden_pd_flags() -> None:
    kv = {"kv_connector": "MooncakeConnector", "kv_role": "kv_producer", "kv_connector_extra_config": {}}
    cfg = config_from_argv(
        [
            "python3", "-m", "vllm.entrypoints.openai.api_server",
            "--model", "/cache/568a", "--disable-frontend-multiprocessing",
            "--gpu-memory-utilization", "0.99", "--kv-transfer-config", json.dumps(kv),
            "--max-model-len", "2048", "--quantization", "ascend",
            "--served-model-name", "ds-r1-qwen-7b-pd", "--tensor-parallel-size", "16", "--trust-remote-code",
        ],
        env={},
    )  # fmt: skip
    assert cfg.engine is EngineKind.VLLM
    assert cfg.model == "/cache/568a"
    assert cfg.names == ["ds-r1-qwen-7b-pd"]
    assert (cfg.role, cfg.connector) == (Role.PREFILL, Connector.MOONCAKE)
    assert cfg.max_model_len == 2048
    assert cfg.tensor_parallel_size == 16
    assert cfg.bind_port == 8000
    assert "--quantization" in cfg.ignored_flags
    assert "--trust-remote-code" in cfg.ignored_flags


def test_vllm_serve_positional_model_and_snake_case_flags() -> None:
    cfg = config_from_argv(
        ["vllm", "serve", "Qwen/Qwen3-0.6B", "--port", "7100", "--distributed_executor_backend", "ray"],
        env={},
    )
    assert cfg.names == ["Qwen/Qwen3-0.6B"]
    assert cfg.port == 7100
    assert "--distributed-executor-backend" in cfg.ignored_flags


@pytest.mark.parametrize(
    ("connector_name", "kv_role", "role", "connector"),
    [
        ("NixlConnector", "kv_consumer", Role.DECODE, Connector.NIXL),
        ("MooncakeConnectorV1", "kv_producer", Role.PREFILL, Connector.MOONCAKE),
        ("LMCacheConnectorV1", "kv_consumer", Role.DECODE, Connector.LMCACHE),
        ("P2pNcclConnector", "kv_both", Role.BOTH, Connector.HTTP),
    ],
)
def test_kv_transfer_config_roles(
    connector_name: str, kv_role: str, role: Role, connector: Connector
) -> None:
    kv = json.dumps({"kv_connector": connector_name, "kv_role": kv_role})
    cfg = config_from_argv(["--kv-transfer-config", kv], env={})
    assert (cfg.role, cfg.connector) == (role, connector)


def test_sglang_launcher_and_disaggregation_mode() -> None:
    cfg = config_from_argv(
        [
            "python3", "-m", "sglang.launch_server", "--model-path", "Qwen/Qwen3-0.6B",
            "--disaggregation-mode", "decode", "--disaggregation-transfer-backend", "mooncake",
        ],
        env={},
    )  # fmt: skip
    assert cfg.engine is EngineKind.SGLANG
    assert cfg.bind_port == 30000
    assert (cfg.role, cfg.connector) == (Role.DECODE, Connector.SGLANG)


def test_lora_modules_both_syntaxes() -> None:
    cfg = config_from_argv(
        [
            "--enable-lora",
            "--lora-modules",
            "lora-sql=/tmp/a",
            '{"name": "b", "path": "/tmp/b"}',
            "--port",
            "1",
        ],
        env={},
    )
    assert cfg.enable_lora
    assert [(m.name, m.path) for m in cfg.lora_modules] == [("lora-sql", "/tmp/a"), ("b", "/tmp/b")]
    assert cfg.port == 1


def test_llm_d_sim_timing_flags_and_env_overrides() -> None:
    cfg = config_from_argv(
        ["--model=m", "--time-to-first-token=20ms", "--inter-token-latency=5", "--mode=echo"], env={}
    )
    assert cfg.ttft == pytest.approx(0.020)
    assert cfg.itl == pytest.approx(0.005)
    assert cfg.mode == "echo"
    env = {
        "FERRY_MOCK_ROLE": "decode",
        "FERRY_MOCK_CONNECTOR": "nixl",
        "FERRY_MOCK_TTFT": "1s",
        "FERRY_MOCK_ID": "e1",
    }
    cfg = config_from_argv(["--model", "m"], env=env)
    assert (cfg.role, cfg.connector, cfg.ttft, cfg.engine_id) == (Role.DECODE, Connector.NIXL, 1.0, "e1")


def test_bad_values_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("soon")
    with pytest.raises(ValueError, match="kv_role"):
        config_from_argv(["--kv-transfer-config", '{"kv_role": "kv_sideways"}'], env={})
    with pytest.raises(ValueError, match="not JSON"):
        config_from_argv(["--kv-transfer-config", "{nope"], env={})


def test_argv_from_bash_wrapped_container_keeps_trailing_flags() -> None:
    command = [
        "bash",
        "-c",
        "chmod u+x /w/multi-node-serving.sh && /w/multi-node-serving.sh leader --ray_cluster_size=2 "
        "&& python -m vllm.entrypoints.openai.api_server --model /tmp/m --served-model-name deepseek-v3 "
        "--port $(PORT)",
    ]
    argv = argv_from_container(
        command, ["--enable-lora", "--lora-modules", "lora-sql=/tmp/l"], {"PORT": "8123"}
    )
    cfg = config_from_argv(argv, env={})
    assert cfg.names == ["deepseek-v3"]
    assert cfg.port == 8123
    assert [m.name for m in cfg.lora_modules] == ["lora-sql"]


def test_argv_from_plain_container() -> None:
    argv = argv_from_container(["python3", "-m", "sglang.launch_server"], ["--port", "$(P)"], {"P": "30001"})
    assert argv == ["python3", "-m", "sglang.launch_server", "--port", "30001"]


def test_shell_unquoted_kv_transfer_config_is_read() -> None:
    """``bash -c "… --kv-transfer-config {\\"k\\":\\"v\\"} …"`` reaches the engine without quotes."""
    cfg = config_from_argv(
        ["--kv-transfer-config", "{kv_connector:MooncakeConnector,kv_role:kv_consumer}"], env={}
    )
    assert (cfg.role, cfg.connector) == (Role.DECODE, Connector.MOONCAKE)


def test_engine_argv_picks_engines_only() -> None:
    sim = {"image": "ghcr.io/llm-d/llm-d-inference-sim:latest", "args": ["--model=m", "--port=8000"]}
    argv = engine_argv(sim)
    assert argv is not None
    assert config_from_argv(argv, env={}).names == ["m"]
    sglang = {"image": "lmsysorg/sglang:latest", "args": ["--model-path", "q"]}
    argv = engine_argv(sglang)
    assert argv is not None
    assert config_from_argv(argv, env={}).engine is EngineKind.SGLANG
    assert engine_argv({"image": "ferry:dev", "command": ["ferry-mock-engine", "vllm", "serve", "m"]})
    assert engine_argv({"image": "kthena/runtime:latest", "args": ["--engine", "vllmdisaggregated"]}) is None
    assert (
        engine_argv({"image": "vllm-server:latest", "command": ["bash", "-c", "worker.sh --ray_address=x"]})
        is None
    )
    assert engine_argv({"image": "nginx"}) is None


def test_a_profile_sizes_the_pool_at_the_block_and_step_size_given() -> None:
    """Kthena's engines run blocks of 128 and 64k-token steps: the pool is counted in those."""
    profile = profile_named(DEFAULT_PROFILE)
    base = ["vllm", "serve", "m", "--sim-profile", DEFAULT_PROFILE]
    cfg = config_from_argv([*base, "--block-size", "128", "--max-num-batched-tokens", "65536"], env={})
    assert (cfg.block_size, cfg.max_num_batched_tokens) == (128, 65536)
    assert cfg.kv_cache_blocks == profile.kv_blocks(128, 65536)
    assert config_from_argv(base, env={}).kv_cache_blocks == profile.kv_cache_blocks
    assert config_from_argv([*base, "--kv-cache-size", "100"], env={}).kv_cache_blocks == 100


def test_a_step_too_large_for_the_gpu_is_refused_as_vllm_refuses_it() -> None:
    base = ["vllm", "serve", "m", "--sim-profile", "deepseek-r1-distill-qwen-7b-a100-40gb"]
    with pytest.raises(ValueError, match=r"no memory left for KV cache blocks .* 1000000-token step"):
        config_from_argv([*base, "--max-num-batched-tokens", "1000000"], env={})
    cfg = config_from_argv([*base, "--max-num-batched-tokens", "1000000", "--kv-cache-size", "64"], env={})
    assert cfg.kv_cache_blocks == 64  # a pool given outright needs no sizing
