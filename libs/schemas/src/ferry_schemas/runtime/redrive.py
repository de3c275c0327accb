"""Re-drive dead letters: put the *current* message of each dead-lettered subject back on its stream.

    uv run python -m ferry_schemas.runtime.redrive              # every dead letter
    uv run python -m ferry_schemas.runtime.redrive --service ferry-applier --dry-run
    uv run ferry dead-letters list / uv run ferry dead-letters redrive SEQ... | --all   (the same, in the CLI)

For each :class:`~ferry_schemas.bus.DeadLetter` on ``FERRY_DEAD_LETTERS`` it reads the last message
its subject holds *now* on the original stream (not the possibly outdated copy in the letter) and
publishes it again, so every consumer of that subject handles it once more. That is safe because
every consumer is level-triggered and idempotent (design rule 1). A subject that holds nothing any
more (its object was deleted since) needs nothing. The letter is then removed from the dead-letter
stream. ``FERRY_NATS_URL`` (or ``--nats``) says where NATS is.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy
from nats.js.errors import NotFoundError
from pydantic import ValidationError

from ferry_schemas.bus import DEAD_LETTER_PREFIX, DEAD_LETTER_STREAM, MSG_ID_HEADER, DeadLetter
from ferry_schemas.runtime.jetstream import connect


@dataclass
class Redriven:
    letter_sequence: int
    letter: DeadLetter | None
    outcome: str
    """``redriven``, ``gone`` (the subject holds nothing now), ``unreadable`` or ``would redrive``."""


async def dead_letters(js: JetStreamContext, service: str = "") -> list[tuple[int, DeadLetter | None]]:
    """Every letter on the dead-letter stream (of one service), with its stream sequence."""
    subject = f"{DEAD_LETTER_PREFIX}.{service}.>" if service else f"{DEAD_LETTER_PREFIX}.>"
    letters: list[tuple[int, DeadLetter | None]] = []
    try:
        info = await js.stream_info(DEAD_LETTER_STREAM)
    except NotFoundError:
        return letters
    if not info.state.messages:
        return letters
    sub = await js.subscribe(subject, stream=DEAD_LETTER_STREAM, ordered_consumer=True,
                             deliver_policy=DeliverPolicy.ALL)  # fmt: skip
    try:
        while True:
            consumer = await sub.consumer_info()
            if consumer.num_pending == 0 and sub.pending_msgs == 0:
                break
            msg = await sub.next_msg(timeout=5.0)
            try:
                letter: DeadLetter | None = DeadLetter.model_validate_json(msg.data)
            except ValidationError:
                letter = None
            letters.append((msg.metadata.sequence.stream, letter))
    finally:
        await sub.unsubscribe()
    return letters


async def redrive(
    js: JetStreamContext, *, service: str = "", dry_run: bool = False, sequences: set[int] | None = None
) -> list[Redriven]:
    """Re-drive every letter (of ``service``; only those at ``sequences`` when given)."""
    done: list[Redriven] = []
    for sequence, letter in await dead_letters(js, service):
        if sequences is not None and sequence not in sequences:
            continue
        if letter is None:
            done.append(Redriven(sequence, None, "unreadable"))
            continue
        try:
            current = await js.get_last_msg(letter.stream, letter.subject)
        except NotFoundError:
            current = None
        if dry_run:
            done.append(Redriven(sequence, letter, "would redrive" if current else "gone"))
            continue
        if current is not None:
            headers = {k: v for k, v in (current.headers or {}).items() if not k.startswith("Nats-")}
            headers[MSG_ID_HEADER] = f"redrive/{letter.stream}/{current.seq}/{sequence}"
            await js.publish(letter.subject, current.data or b"", stream=letter.stream, headers=headers)
        await js.delete_msg(DEAD_LETTER_STREAM, sequence)
        done.append(Redriven(sequence, letter, "redriven" if current else "gone"))
    return done


async def amain(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ferry_schemas.runtime.redrive", description=__doc__)
    parser.add_argument("--nats", default=os.environ.get("FERRY_NATS_URL") or os.environ.get("NATS_URL")
                        or "nats://127.0.0.1:4222")  # fmt: skip
    parser.add_argument("--service", default="", help="only this service's letters (e.g. ferry-applier)")
    parser.add_argument("--dry-run", action="store_true", help="list what would be re-driven")
    args = parser.parse_args(argv)
    nc = await connect(args.nats, "ferry-redrive")
    try:
        results = await redrive(nc.jetstream(), service=args.service, dry_run=args.dry_run)
    finally:
        await nc.drain()
    for item in results:
        where = f"{item.letter.consumer} {item.letter.subject}" if item.letter else "?"
        print(f"{item.letter_sequence:>8}  {item.outcome:<14} {where}")
    print(f"{len(results)} dead letter(s)")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(amain()))
