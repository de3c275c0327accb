"""Turn an engine command line (vLLM, SGLang, llm-d-inference-sim flags) into an :class:`EngineConfig`.

The mock stands in for a real engine, so it accepts the pod's own command: ``vllm serve <model> …``,
``python3 -m vllm.entrypoints.openai.api_server …``, ``python3 -m sglang.launch_server …`` or bare
flags. Flags it does not model are accepted and logged. ``argv_from_container`` extracts the engine
invocation from a container's ``command``/``args`` (including ``bash -c "a && vllm serve …"``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

from ferry_mock_engine.config import (
    Connector,
    EngineConfig,
    EngineKind,
    LoraModule,
    Role,
    parse_duration,
)
from ferry_mock_engine.identity import ENV_TOKEN
from ferry_mock_engine.kv_events import KVEventsConfig
from ferry_mock_engine.profiles import DEFAULT_PROFILE, profile_named

log = logging.getLogger(__name__)

_VLLM_MODULES = {"vllm.entrypoints.openai.api_server", "vllm.entrypoints.api_server"}
_SGLANG_MODULES = {"sglang.launch_server", "sglang.srt.server"}
_ENGINE_MARKERS = ("vllm", "sglang", "api_server", "ferry-mock-engine", "ferry_mock_engine")

# Environment overrides a local node can set without touching the pod's arguments.
ENV_ROLE = "FERRY_MOCK_ROLE"
ENV_CONNECTOR = "FERRY_MOCK_CONNECTOR"
ENV_TTFT = "FERRY_MOCK_TTFT"
ENV_ITL = "FERRY_MOCK_ITL"
ENV_ID = "FERRY_MOCK_ID"
ENV_HOST = "FERRY_MOCK_HOST"
ENV_PORT = "FERRY_MOCK_PORT"
ENV_PROFILE = "FERRY_MOCK_PROFILE"
ENV_TIME_SCALE = "FERRY_MOCK_TIME_SCALE"
ENV_RUNTIME_PORT = "FERRY_MOCK_RUNTIME_PORT"


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ferry-mock-engine",
        description="A vLLM-compatible mock engine. Accepts vLLM/SGLang/llm-d-sim flags; ignores the rest.",
        allow_abbrev=False,
    )
    # names and address (vLLM, SGLang)
    p.add_argument("--model", "--model-path", dest="model")
    p.add_argument("--served-model-name", dest="served_model_name", nargs="+", default=None)
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--engine", help="vllm or sglang: the metric names to expose")
    # engine shape
    p.add_argument("--tensor-parallel-size", "--tp-size", "--tp", dest="tp", type=int)
    p.add_argument("--max-model-len", "--context-length", dest="max_model_len", type=int)
    p.add_argument("--max-num-seqs", "--max-running-requests", dest="max_num_seqs", type=int)
    p.add_argument("--block-size", "--page-size", dest="block_size", type=int)
    p.add_argument("--kv-cache-size", dest="kv_cache_size", type=int, help="KV cache size in blocks")
    p.add_argument("--enable-kvcache", dest="enable_kvcache", nargs="?", const="true")
    p.add_argument("--max-num-batched-tokens", dest="max_num_batched_tokens", type=int)
    p.add_argument("--enable-prefix-caching", dest="prefix_caching", action="store_true", default=None)
    p.add_argument("--no-enable-prefix-caching", dest="prefix_caching", action="store_false")
    p.add_argument("--kv-events-config", dest="kv_events_config")
    # the simulator
    p.add_argument("--sim-profile", dest="sim_profile", help="performance profile (turns the simulator on)")
    p.add_argument("--time-scale", dest="time_scale", type=float, help="wall seconds per simulated second")
    # LoRA
    p.add_argument("--enable-lora", dest="enable_lora", nargs="?", const="true")
    p.add_argument("--lora-modules", "--lora-paths", dest="lora_modules", nargs="+", default=None)
    p.add_argument("--max-loras", dest="max_loras", type=int)
    # prefill/decode
    p.add_argument("--kv-transfer-config", dest="kv_transfer_config")
    p.add_argument("--disaggregation-mode", dest="disaggregation_mode")
    # timing and text (llm-d-inference-sim names)
    p.add_argument("--time-to-first-token", dest="ttft")
    p.add_argument("--inter-token-latency", dest="itl")
    p.add_argument("--prefill-time-per-token", dest="prefill_per_token")
    p.add_argument("--kv-cache-transfer-latency", dest="kv_transfer_latency")
    p.add_argument("--mode", choices=["hash", "echo", "random"])
    # mock-only
    p.add_argument("--mock-role", dest="mock_role", choices=[r.value for r in Role])
    p.add_argument("--mock-connector", dest="mock_connector", choices=[c.value for c in Connector])
    p.add_argument("--mock-id", dest="mock_id", help="identity reported in answers and /mock/info")
    p.add_argument("--mock-output-tokens", dest="mock_output_tokens", type=int, default=None)
    return p


def strip_launcher(argv: Sequence[str]) -> tuple[list[str], EngineKind | None, str | None]:
    """Drop ``python -m <module>`` / ``vllm serve <model>`` / program paths in front of the flags.

    Returns the flags, the engine kind the launcher implies (if any) and a positional model.
    """
    tokens = list(argv)
    kind: EngineKind | None = None
    positional_model: str | None = None
    while tokens and not tokens[0].startswith("-"):
        word = tokens.pop(0)
        base = os.path.basename(word)
        if base == "vllm":
            kind = EngineKind.VLLM
            if tokens and tokens[0] == "serve":
                tokens.pop(0)
                if tokens and not tokens[0].startswith("-"):
                    positional_model = tokens.pop(0)
        elif base.startswith("python") or base in {"ferry-mock-engine", "uv", "run", "serve"}:
            continue
        else:
            log.info("ignoring positional argument %r", word)
    if tokens[:1] == ["-m"] and len(tokens) >= 2:
        module = tokens[1]
        tokens = tokens[2:]
        if module in _VLLM_MODULES:
            kind = EngineKind.VLLM
        elif module in _SGLANG_MODULES:
            kind = EngineKind.SGLANG
        rest, inner_kind, inner_model = strip_launcher(tokens)
        return rest, inner_kind or kind, inner_model or positional_model
    return tokens, kind, positional_model


def _normalise_flags(tokens: Sequence[str]) -> list[str]:
    """vLLM accepts ``--snake_case`` spellings; argparse does not."""
    out: list[str] = []
    for token in tokens:
        if token.startswith("--"):
            name, sep, value = token.partition("=")
            token = name.replace("_", "-") + sep + value
        out.append(token)
    return out


def _truthy(value: str | None) -> bool:
    return value is not None and value.strip().lower() not in {"false", "0", "no", "off"}


def parse_lora_modules(values: Sequence[str]) -> list[LoraModule]:
    """vLLM ``--lora-modules``: ``name=path`` or JSON ``{"name","path","base_model_name"}``."""
    modules: list[LoraModule] = []
    for value in values:
        text = value.strip()
        if text.startswith("{"):
            data = json.loads(text)
            modules.append(LoraModule(str(data["name"]), str(data["path"]), data.get("base_model_name")))
        elif "=" in text:
            name, path = text.split("=", 1)
            modules.append(LoraModule(name, path))
        elif text:
            modules.append(LoraModule(text, text))  # SGLang --lora-paths may list bare names
    return modules


_CONNECTOR_BY_NAME = (
    ("nixl", Connector.NIXL),
    ("mooncake", Connector.MOONCAKE),
    ("lmcache", Connector.LMCACHE),
)
_ROLE_BY_KV_ROLE = {"kv_producer": Role.PREFILL, "kv_consumer": Role.DECODE, "kv_both": Role.BOTH}


_BARE_WORD = re.compile(r"([{\[,:])\s*([A-Za-z_][\w.\-/]*)\s*(?=[,:}\]])")


def _loads_lenient(text: str) -> Any:
    """JSON, or the shell-unquoted form ``{kv_connector:X,kv_role:kv_producer}`` that a
    ``bash -c "… {\"k\":\"v\"} …"`` command line leaves (Kthena's mooncake golden file does this)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        try:
            data = json.loads(_BARE_WORD.sub(r'\1"\2"', text))
        except json.JSONDecodeError:
            raise ValueError(f"--kv-transfer-config is not JSON: {exc}") from exc
        log.warning("--kv-transfer-config %s is not JSON; read it as a shell-unquoted object", text)
        return data


def pd_from_kv_transfer_config(text: str) -> tuple[Role, Connector]:
    """vLLM ``--kv-transfer-config`` JSON → (role, the router connector that feeds it)."""
    data = _loads_lenient(text)
    if not isinstance(data, dict):
        raise ValueError("--kv-transfer-config must be a JSON object")
    kv_role = str(data.get("kv_role", "kv_both"))
    role = _ROLE_BY_KV_ROLE.get(kv_role)
    if role is None:
        raise ValueError(
            f"--kv-transfer-config kv_role {kv_role!r} is not kv_producer, kv_consumer or kv_both"
        )
    connector_name = str(data.get("kv_connector", "")).lower()
    connector = next((c for key, c in _CONNECTOR_BY_NAME if key in connector_name), Connector.HTTP)
    return role, connector


def config_from_argv(argv: Sequence[str], env: Mapping[str, str] | None = None) -> EngineConfig:
    """Parse an engine command line. Raises ``ValueError``/``SystemExit`` on flags it cannot read."""
    env = os.environ if env is None else env
    flags, launcher_kind, positional_model = strip_launcher(argv)
    ns, unknown = _build_parser().parse_known_args(_normalise_flags(flags))
    cfg = EngineConfig()
    cfg.ignored_flags = [u for u in unknown if u.startswith("-")]
    for flag in cfg.ignored_flags:
        log.info("ignoring engine flag %s (not modelled by the mock engine)", flag)

    engine_flag = (ns.engine or "").lower()
    if engine_flag.startswith(("vllm", "sglang")):
        cfg.engine = EngineKind.SGLANG if engine_flag.startswith("sglang") else EngineKind.VLLM
    else:
        if ns.engine:
            log.info("ignoring --engine %s (not vllm or sglang)", ns.engine)
        if launcher_kind is not None:
            cfg.engine = launcher_kind
    model = ns.model or positional_model or env.get("MODEL_NAME") or cfg.model
    cfg.model = model
    cfg.served_model_names = list(ns.served_model_name or [])
    cfg.host = env.get(ENV_HOST) or ns.host or cfg.host
    port_text = env.get(ENV_PORT)
    cfg.port = int(port_text) if port_text else ns.port
    cfg.tensor_parallel_size = ns.tp or 1
    if ns.max_model_len:
        cfg.max_model_len = ns.max_model_len
    if ns.max_num_seqs:
        cfg.max_num_seqs = ns.max_num_seqs
    if ns.block_size:
        cfg.block_size = ns.block_size
    if ns.kv_cache_size:
        cfg.kv_cache_blocks = ns.kv_cache_size
    _simulator_settings(cfg, ns, env)
    cfg.enable_lora = _truthy(ns.enable_lora) or bool(ns.lora_modules)
    cfg.lora_modules = parse_lora_modules(ns.lora_modules or [])
    if ns.max_loras:
        cfg.max_loras = ns.max_loras

    if ns.kv_transfer_config:
        cfg.role, cfg.connector = pd_from_kv_transfer_config(ns.kv_transfer_config)
    if ns.disaggregation_mode and ns.disaggregation_mode != "null":
        if ns.disaggregation_mode not in {"prefill", "decode"}:
            raise ValueError(
                f"--disaggregation-mode must be prefill, decode or null, not {ns.disaggregation_mode!r}"
            )
        cfg.role = Role(ns.disaggregation_mode)
        cfg.connector = Connector.SGLANG
    role = env.get(ENV_ROLE) or ns.mock_role
    if role:
        cfg.role = Role(role)
    connector = env.get(ENV_CONNECTOR) or ns.mock_connector
    if connector:
        cfg.connector = Connector(connector)

    cfg.ttft = parse_duration(env.get(ENV_TTFT) or ns.ttft or "0")
    cfg.itl = parse_duration(env.get(ENV_ITL) or ns.itl or "0")
    cfg.prefill_per_token = parse_duration(ns.prefill_per_token or "0")
    cfg.kv_transfer_latency = parse_duration(ns.kv_transfer_latency or "0")
    if ns.mode:
        cfg.mode = "echo" if ns.mode == "echo" else "hash"
    if ns.mock_output_tokens is not None:
        cfg.default_output_tokens = ns.mock_output_tokens
    cfg.engine_id = env.get(ENV_ID) or ns.mock_id or ""
    cfg.identity_token = env.get(ENV_TOKEN, "")
    runtime_port = env.get(ENV_RUNTIME_PORT)
    cfg.runtime_port = int(runtime_port) if runtime_port else None
    return cfg


def _simulator_settings(cfg: EngineConfig, ns: argparse.Namespace, env: Mapping[str, str]) -> None:
    """Profile, time scale, prefix caching and KV events; profile defaults for unset shape flags."""
    if ns.kv_events_config:
        KVEventsConfig.parse(ns.kv_events_config)  # refuse a bad config at start, like vLLM
        cfg.kv_events_config = ns.kv_events_config
    if ns.prefix_caching is not None:
        cfg.enable_prefix_caching = ns.prefix_caching
    if ns.max_num_batched_tokens:
        cfg.max_num_batched_tokens = ns.max_num_batched_tokens
    cfg.profile = env.get(ENV_PROFILE) or ns.sim_profile
    if cfg.profile is None and cfg.kv_events_config and KVEventsConfig.parse(cfg.kv_events_config).enable:
        cfg.profile = DEFAULT_PROFILE
    scale = env.get(ENV_TIME_SCALE) or ns.time_scale
    if scale is not None:
        cfg.time_scale = float(scale)
        if not cfg.time_scale > 0:
            raise ValueError(f"--time-scale must be positive, got {scale}")
    if cfg.profile is None:
        return
    profile = profile_named(cfg.profile)
    if not ns.max_num_seqs:
        cfg.max_num_seqs = profile.max_num_seqs
    if not ns.block_size:
        cfg.block_size = profile.block_size
    if not ns.max_num_batched_tokens:
        cfg.max_num_batched_tokens = profile.max_num_batched_tokens
    if not ns.kv_cache_size:  # the pool at the block and step size the engine runs with
        cfg.kv_cache_blocks = profile.kv_blocks(cfg.block_size, cfg.max_num_batched_tokens)


_SHELL_SPLIT = re.compile(r"\s*(?:&&|\|\||;|\n)\s*")
_K8S_VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")
_SHELL_VAR = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?")


def expand_k8s_vars(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes ``$(NAME)`` expansion: known names are replaced, unknown ones kept verbatim."""
    return _K8S_VAR.sub(lambda m: env.get(m.group(1), m.group(0)), text)


def argv_from_container(
    command: Sequence[str] | None, args: Sequence[str] | None, env: Mapping[str, str] | None = None
) -> list[str]:
    """The engine command line inside a container spec, ready for :func:`config_from_argv`.

    ``bash -c "setup && python3 -m vllm… --port 8000" --extra x`` → the vLLM segment's words plus the
    trailing words (Kthena appends flags after the script). ``$(VAR)`` is expanded from ``env``;
    inside a shell script ``$VAR`` too.
    """
    env = env or {}
    words = [expand_k8s_vars(w, env) for w in [*(command or []), *(args or [])]]
    if len(words) >= 3 and os.path.basename(words[0]) in {"bash", "sh"} and words[1] in {"-c", "-ec", "-xc"}:
        script = _SHELL_VAR.sub(lambda m: env.get(m.group(1), m.group(0)), words[2].replace("\\\n", " "))
        segments = [s for s in _SHELL_SPLIT.split(script) if s.strip()]
        chosen = next(
            (s for s in reversed(segments) if any(marker in s for marker in _ENGINE_MARKERS)),
            segments[-1] if segments else "",
        )
        return [*shlex.split(chosen), *words[3:]]
    return words


_ENGINE_IMAGES = (
    "inference-sim", "vllm-openai", "vllm/vllm", "vllm-ascend", "kthena-engine",
    "lmsysorg/sglang", "dynamo-mocker",
)  # fmt: skip


def _launches_engine(argv: Sequence[str]) -> bool:
    words = [os.path.basename(w) for w in argv[:6]]
    for i, word in enumerate(words):
        following = words[i + 1] if i + 1 < len(words) else ""
        if word == "vllm" and following == "serve":
            return True
        if word == "-m" and following.startswith(("vllm.entrypoints", "sglang.", "ferry_mock_engine")):
            return True
        if word == "ferry-mock-engine":
            return True
    return False


def engine_argv(container: Mapping[str, Any], env: Mapping[str, str] | None = None) -> list[str] | None:
    """The engine command line of a pod container, or ``None`` when the container is not an engine
    (Kthena's runtime sidecar, downloaders, Ray workers…). An engine either launches vLLM/SGLang/the
    mock explicitly, or has no command and an engine image (llm-d-inference-sim, vllm-openai…) whose
    entrypoint is the engine, in which case ``args`` are its flags."""
    argv = argv_from_container(container.get("command"), container.get("args"), env)
    if _launches_engine(argv):
        return argv
    image = str(container.get("image") or "")
    if not container.get("command") and any(marker in image for marker in _ENGINE_IMAGES):
        kind = ["python3", "-m", "sglang.launch_server"] if "sglang" in image else ["vllm", "serve"]
        return [*kind, *argv]
    return None
