"""Deterministic "generation": which text a request gets and how many tokens it counts.

The answer names the model the request asked for and a hash of its prompt, so a test can tell from
the reply alone which engine (and which LoRA adapter) served it and that the prompt arrived intact.
"""

from __future__ import annotations

import functools
import hashlib
import math
from typing import Any

from ferry_schemas.sim_tokenizer import chat_text, completion_text, token_ids

__all__ = ["BadRequest", "count_tokens", "prompt_hash", "prompt_text", "token_ids"]


class BadRequest(ValueError):
    """The body is not a request this engine can serve (answered with 400)."""


def prompt_text(path: str, body: dict[str, Any]) -> str:
    """The prompt as one string: chat messages joined (``role: content``), or the completion prompt."""
    try:
        if path.endswith("/chat/completions"):
            return chat_text(body.get("messages"))
        return completion_text(body.get("prompt"))
    except ValueError as exc:
        raise BadRequest(str(exc)) from None


def prompt_hash(prompt: str) -> str:
    """Short stable fingerprint of a prompt (first 12 hex digits of SHA-256)."""
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:12]


def count_tokens(text: str) -> int:
    """Crude token estimate, the same rule the router uses: ceil(characters / 4), at least 1."""
    return max(1, math.ceil(len(text) / 4))


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
