"""Deterministic "generation": which text a request gets and how many tokens it counts.

The answer names the model the request asked for and a hash of its prompt, so a test can tell from
the reply alone which engine (and which LoRA adapter) served it and that the prompt arrived intact.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import zlib
from typing import Any


class BadRequest(ValueError):
    """The body is not a request this engine can serve (answered with 400)."""


def prompt_text(path: str, body: dict[str, Any]) -> str:
    """The prompt as one string: chat messages joined (``role: content``), or the completion prompt."""
    if path.endswith("/chat/completions"):
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequest("'messages' must be a non-empty list")
        parts: list[str] = []
        for message in messages:
            if not isinstance(message, dict):
                raise BadRequest("each message must be an object")
            content = message.get("content")
            if isinstance(content, list):  # content parts: keep the text ones
                content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
            parts.append(f"{message.get('role', 'user')}: {content if content is not None else ''}")
        return "\n".join(parts)
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and prompt:
        return json.dumps(prompt) if not all(isinstance(p, str) for p in prompt) else "\n".join(prompt)
    raise BadRequest("'prompt' must be a string or a non-empty list")


def prompt_hash(prompt: str) -> str:
    """Short stable fingerprint of a prompt (first 12 hex digits of SHA-256)."""
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:12]


def count_tokens(text: str) -> int:
    """Crude token estimate, the same rule the router uses: ceil(characters / 4), at least 1."""
    return max(1, math.ceil(len(text) / 4))


VOCAB_SIZE = 151_936  # Qwen2's vocabulary size


def token_ids(text: str) -> list[int]:
    """Deterministic token ids, one per 4-character chunk (so ``len`` agrees with :func:`count_tokens`).

    The same text gives the same ids in every engine process (CRC-32 of the chunk), which is what
    routing on token prefixes needs; CRC-32 keeps a 4,096-token prompt at about a millisecond.
    """
    if not text:
        return [0]
    crc = zlib.crc32
    return [crc(text[i : i + 4].encode()) % VOCAB_SIZE for i in range(0, len(text), 4)]


def output_token_budget(body: dict[str, Any], default: int) -> int:
    """``max_completion_tokens`` or ``max_tokens`` if given (≥ 0), else ``default``."""
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise BadRequest(f"'{key}' must be a non-negative integer")
        return value
    return default


@functools.lru_cache(maxsize=4096)
def _answer_tokens(model: str, prompt: str, n: int, mode: str, engine_id: str) -> tuple[str, ...]:
    return tuple(answer_tokens_uncached(model, prompt, n, mode=mode, engine_id=engine_id))


def answer_tokens(model: str, prompt: str, n: int, *, mode: str, engine_id: str) -> list[str]:
    """:func:`answer_tokens_uncached`, memoised (benchmarks repeat the same prompt)."""
    return list(_answer_tokens(model, prompt, n, mode, engine_id))


def answer_tokens_uncached(model: str, prompt: str, n: int, *, mode: str, engine_id: str) -> list[str]:
    """``n`` output tokens. ``hash`` mode: ``"<model> answers <hash> via <engine> t3 t4 …"``;
    ``echo`` mode: the prompt's words, repeated as needed."""
    if n <= 0:
        return []
    if mode == "echo":
        words = prompt.split() or [""]
        return [(" " if i else "") + words[i % len(words)] for i in range(n)]
    head = [model, " answers", f" {prompt_hash(prompt)}"]
    if engine_id:
        head += [" via", f" {engine_id}"]
    tokens = head[:n]
    tokens += [f" t{i}" for i in range(len(tokens), n)]
    return tokens
