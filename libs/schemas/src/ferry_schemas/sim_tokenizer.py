"""The engine simulator's tokenizer, shared so a router can tokenize a prompt locally exactly as
the simulator's ``/tokenize`` does (the ``kvcache-aware`` plugin's ``localTokenizer: ferry-mock-engine``).

Not a language tokenizer: the prompt is rendered as the simulator renders it (chat messages as
``role: content`` lines joined by newlines; a completion prompt as is) and cut into 4-character
chunks, each one id (CRC-32 of the chunk modulo Qwen2's vocabulary size). So ``len`` agrees with
the router's ``ceil(characters / 4)`` estimate, the same text gives the same ids in every process,
and a 4,096-token prompt takes about a millisecond.
"""

from __future__ import annotations

import json
import zlib
from typing import Any

VOCAB_SIZE = 151_936  # Qwen2's vocabulary size


def chat_text(messages: Any) -> str:
    """Chat messages as one string; ``ValueError`` when they are not a non-empty list of objects."""
    if not isinstance(messages, list) or not messages:
        raise ValueError("'messages' must be a non-empty list")
    parts: list[str] = []
    for message in messages:
        if not isinstance(message, dict):
            raise ValueError("each message must be an object")
        content = message.get("content")
        if isinstance(content, list):  # content parts: keep the text ones
            content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        parts.append(f"{message.get('role', 'user')}: {content if content is not None else ''}")
    return "\n".join(parts)


def completion_text(prompt: Any) -> str:
    """A completion prompt as one string; ``ValueError`` when it is neither a string nor a non-empty list."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and prompt:
        return json.dumps(prompt) if not all(isinstance(p, str) for p in prompt) else "\n".join(prompt)
    raise ValueError("'prompt' must be a string or a non-empty list")


def token_ids(text: str) -> list[int]:
    """One id per 4-character chunk of ``text`` (``[0]`` for the empty text)."""
    if not text:
        return [0]
    crc = zlib.crc32
    return [crc(text[i : i + 4].encode()) % VOCAB_SIZE for i in range(0, len(text), 4)]


def tokenize(body: dict[str, Any]) -> list[int]:
    """The ids the simulator's ``/tokenize`` answers for ``body`` (``messages`` or ``prompt``)."""
    text = chat_text(body["messages"]) if "messages" in body else completion_text(body.get("prompt"))
    return token_ids(text)
