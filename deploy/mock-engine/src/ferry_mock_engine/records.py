"""What the engine saw: one record per inference request, served at ``GET /mock/requests``."""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class RequestRecord:
    id: str
    time: float
    method: str
    path: str
    headers: dict[str, str]
    model: str | None = None
    role: str | None = None  # aggregated / prefill / decode, as this engine treated the request
    stream: bool = False
    status: int | None = None  # filled in when the answer starts (or the request is refused)
    error: str | None = None
    lora: str | None = None  # the adapter that served it, if any
    prompt_hash: str | None = None
    prompt_tokens: int = 0
    output_tokens: int = 0
    kv_transfer_params: Any = None
    bootstrap_room: int | None = None
    bootstrap_host: str | None = None
    body: Any = None
    finished: bool = False

    @property
    def traceparent(self) -> str | None:
        return self.headers.get("traceparent")

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["traceparent"] = self.traceparent
        return data


@dataclass
class RequestLog:
    """The last ``limit`` records, oldest first."""

    limit: int = 10000
    _records: deque[RequestRecord] = field(default_factory=deque)

    def add(self, record: RequestRecord) -> None:
        self._records.append(record)
        while len(self._records) > self.limit:
            self._records.popleft()

    def all(self) -> list[RequestRecord]:
        return list(self._records)

    def clear(self) -> None:
        self._records.clear()
