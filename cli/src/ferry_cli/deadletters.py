"""``ferry dead-letters``: the CLI face of :mod:`ferry_schemas.runtime.deadletters`."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import nats
from ferry_schemas.runtime.deadletters import (
    RedriveError,
    StoredDeadLetter,
    list_dead_letters,
    redrive,
)
from nats.errors import NoServersError
from nats.js import JetStreamContext
from rich.table import Table

from ferry_cli.errors import CliError

CONNECT_DEADLINE = 5.0


def nats_url(explicit: str | None) -> str:
    url = explicit or os.environ.get("FERRY_NATS_URL") or os.environ.get("NATS_URL")
    if not url:
        raise CliError(
            "no NATS URL: pass --nats or set FERRY_NATS_URL "
            "(in a cluster: `kubectl -n ferry-system port-forward svc/nats 4222`, then nats://127.0.0.1:4222)"
        )
    return url


@asynccontextmanager
async def connect(explicit: str | None) -> AsyncIterator[JetStreamContext]:
    url = nats_url(explicit)
    failures: list[BaseException] = []

    async def remember(exc: Exception) -> None:  # instead of nats-py's logged tracebacks
        failures.append(exc)

    try:  # nats-py retries a refused first connect forever; the deadline makes it an answer
        nc = await asyncio.wait_for(
            nats.connect(url, name="ferry-cli", connect_timeout=3, allow_reconnect=False, error_cb=remember),
            CONNECT_DEADLINE,
        )
    except (NoServersError, OSError, TimeoutError) as exc:
        cause = failures[-1] if failures else exc
        raise CliError(f"cannot reach NATS at {url} ({cause or type(cause).__name__})") from exc
    try:
        yield nc.jetstream()
    finally:
        await nc.close()


async def list_letters(js: JetStreamContext, limit: int) -> list[StoredDeadLetter]:
    return await list_dead_letters(js, limit=limit)


async def redrive_letters(js: JetStreamContext, sequences: list[int], *, every: bool) -> list[str]:
    if every:
        sequences = [stored.sequence for stored in await list_dead_letters(js, limit=10_000)]
        if not sequences:
            return ["No dead letters."]
    lines = []
    for sequence in sequences:
        try:
            stored_at = await redrive(js, sequence)
        except RedriveError as exc:
            raise CliError(str(exc)) from exc
        lines.append(f"re-drove dead letter {sequence} (re-published as stream sequence {stored_at})")
    return lines


def table(found: list[StoredDeadLetter]) -> Table:
    view = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("SEQ", "SERVICE", "CONSUMER", "SUBJECT", "DELIVERIES", "ERROR"):
        view.add_column(column, no_wrap=column != "ERROR")
    for stored in found:
        letter = stored.letter
        view.add_row(
            str(stored.sequence),
            letter.service,
            f"{letter.stream}/{letter.consumer}",
            letter.subject or "?",
            str(letter.deliveries),
            letter.error or "-",
        )
    return view
