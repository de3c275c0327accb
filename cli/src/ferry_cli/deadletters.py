"""``ferry dead-letters``: the CLI face of :mod:`ferry_schemas.runtime.redrive` (one mechanism)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import nats
from ferry_schemas.bus import DeadLetter
from ferry_schemas.runtime.redrive import dead_letters, redrive
from nats.errors import NoServersError
from nats.js import JetStreamContext
from rich.table import Table

from ferry_cli.errors import CliError

CONNECT_DEADLINE = 5.0
Letter = tuple[int, DeadLetter | None]


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


async def list_letters(js: JetStreamContext, limit: int) -> list[Letter]:
    """The newest ``limit`` dead letters, oldest first."""
    return (await dead_letters(js))[-limit:]


async def redrive_letters(js: JetStreamContext, sequences: list[int], *, every: bool) -> list[str]:
    wanted = None if every else set(sequences)
    done = await redrive(js, sequences=wanted)
    if wanted is not None and (missing := wanted - {d.letter_sequence for d in done}):
        raise CliError(
            f"no dead letter with sequence {', '.join(map(str, sorted(missing)))} "
            "(already re-driven, or never existed; `ferry dead-letters list`)"
        )
    if not done:
        return ["No dead letters."]
    lines = []
    for item in done:
        what = "re-drove" if item.outcome == "redriven" else f"dropped ({item.outcome})"
        subject = item.letter.subject if item.letter else "?"
        lines.append(f"{what} dead letter {item.letter_sequence}: {subject}")
    return lines


def table(found: list[Letter]) -> Table:
    view = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("SEQ", "SERVICE", "CONSUMER", "SUBJECT", "DELIVERIES", "ERROR"):
        view.add_column(column, no_wrap=column != "ERROR")
    for sequence, letter in found:
        if letter is None:
            view.add_row(str(sequence), "?", "?", "(unreadable)", "?", "-")
            continue
        view.add_row(
            str(sequence),
            letter.service,
            f"{letter.stream}/{letter.consumer}",
            letter.subject or "?",
            str(letter.deliveries),
            letter.error or "-",
        )
    return view
