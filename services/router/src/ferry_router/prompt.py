"""The prompt text of a request and the router's input-token estimate (spec §4 steps 7-8).

The prompt feeds prefix-cache scheduling and the input-token estimate used for rate limits,
``tokens_total{input}`` and the access log. The estimate is Kthena's: ceil(code points / 4) of
the ChatML-wrapped conversation, cheap and deterministic (no tokenizer on the request path).
"""

from __future__ import annotations

from typing import Any

from ferry_router import errors

TEXT_BLOCK_TYPES = frozenset({"text", "input_text", "output_text"})


def _text_of(content: Any) -> str | None:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [
            block["text"]
            for block in content
            if isinstance(block, dict)
            and block.get("type", "text") in TEXT_BLOCK_TYPES
            and isinstance(block.get("text"), str)
        ]
        return "\n".join(parts)
    return None


def _chatml(messages: list[tuple[str, str]]) -> str:
    return "".join(f"<|im_start|>{role}\n{content}<|im_end|>\n" for role, content in messages)


def extract_prompt(body: dict[str, Any]) -> str:
    """The prompt string; raises a 400 :class:`RouterError` when the body has none.

    ``prompt`` may be a string or (as OpenAI allows) a list of strings, which are joined.
    """
    if "prompt" in body:
        prompt = body["prompt"]
        if isinstance(prompt, str):
            return prompt
        if isinstance(prompt, list) and all(isinstance(p, str) for p in prompt):
            return "\n".join(prompt)
        if isinstance(prompt, list):
            return ""  # token-id prompts are legal; there is no text to hash or count
        raise errors.missing_prompt("'prompt' must be a string or a list of strings")
    if "messages" in body:
        raw = body["messages"]
        if not isinstance(raw, list):
            raise errors.missing_prompt("'messages' must be a list of messages")
        messages: list[tuple[str, str]] = []
        system = body.get("system")
        if system is not None and (text := _text_of(system)):
            messages.append(("system", text))
        for i, message in enumerate(raw):
            if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                raise errors.missing_prompt(f"messages[{i}] must be an object with a string 'role'")
            text = _text_of(message.get("content"))
            if text:
                messages.append((message["role"], text))
        return _chatml(messages)
    if "input" in body:
        raw = body["input"]
        messages = []
        if isinstance(body.get("instructions"), str):
            messages.append(("developer", body["instructions"]))
        if isinstance(raw, str):
            messages.append(("user", raw))
        elif isinstance(raw, list):
            for item in raw:
                if isinstance(item, dict) and item.get("type", "message") == "message":
                    text = _text_of(item.get("content"))
                    if text and isinstance(item.get("role"), str):
                        messages.append((item["role"], text))
        else:
            raise errors.missing_prompt("'input' must be a string or a list of items")
        return _chatml(messages)
    raise errors.missing_prompt("the request needs 'messages', 'prompt' or 'input'")


def estimate_tokens(prompt: str) -> int:
    """ceil(code points / 4)."""
    return (len(prompt) + 3) // 4
