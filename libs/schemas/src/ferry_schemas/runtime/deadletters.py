"""Reading and re-driving dead letters (``FERRY_DEAD_LETTERS``), the one mechanism for both.

A dead letter records the stream, subject and sequence of a message a consumer gave up on. The
message itself stays in its stream (the consumer only stopped redelivering it). Re-driving puts
the subject's *current* message (the last one on that subject, which every Ferry stream keeps) back
on the subject under a fresh message id, so the consumer receives it again; consumers are
level-triggered, so re-processing the current state is always safe, and re-driving an older
payload could roll a newer object back. The dead letter is then removed from the DLQ stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from ferry_schemas.bus import DEAD_LETTER_STREAM, MSG_ID_HEADER, DeadLetter

REDRIVE_HEADER = "Ferry-Redriven-From"
"""Set on a re-driven message: ``<DLQ sequence>`` of the dead letter it answers."""


class RedriveError(RuntimeError):
    """A dead letter that cannot be re-driven; the message says why."""


@dataclass(frozen=True)
class StoredDeadLetter:
    """A dead letter and where it sits in the DLQ stream."""

    sequence: int
    letter: DeadLetter
    stored_at: datetime | None = None


async def list_dead_letters(js: JetStreamContext, *, limit: int = 100) -> list[StoredDeadLetter]:
    """The newest ``limit`` dead letters, oldest first."""
    try:
        info = await js.stream_info(DEAD_LETTER_STREAM)
    except NotFoundError:
        return []
    first, last = info.state.first_seq, info.state.last_seq
    found: list[StoredDeadLetter] = []
    seq = last
    while seq >= first and seq > 0 and len(found) < limit:
        stored = await _get(js, seq)
        if stored is not None:
            found.append(stored)
        seq -= 1
    return list(reversed(found))


async def _get(js: JetStreamContext, sequence: int) -> StoredDeadLetter | None:
    try:
        raw = await js.get_msg(DEAD_LETTER_STREAM, sequence)
    except NotFoundError:
        return None  # deleted (re-driven) or never there
    letter = DeadLetter.model_validate_json(raw.data or b"{}")
    return StoredDeadLetter(sequence=sequence, letter=letter, stored_at=getattr(raw, "time", None))


async def get_dead_letter(js: JetStreamContext, sequence: int) -> StoredDeadLetter:
    stored = await _get(js, sequence)
    if stored is None:
        raise RedriveError(f"no dead letter with sequence {sequence} (already re-driven, or never existed)")
    return stored


async def redrive(js: JetStreamContext, sequence: int) -> int:
    """Re-drive the dead letter at ``sequence``; returns the stream sequence of the re-published message."""
    stored = await get_dead_letter(js, sequence)
    letter = stored.letter
    if not letter.subject:
        raise RedriveError(
            f"dead letter {sequence} does not name its subject (the original message had already been "
            "replaced when it was recorded); nothing to re-drive"
        )
    try:
        current = await js.get_last_msg(letter.stream, letter.subject)
        data, headers = current.data or b"", dict(current.headers or {})
    except NotFoundError:  # the subject was purged: the recorded payload is all there is
        data, headers = letter.data.encode(), {}
    headers[MSG_ID_HEADER] = f"redrive/{letter.stream}/{letter.stream_sequence}/{sequence}"
    headers[REDRIVE_HEADER] = str(sequence)
    ack = await js.publish(letter.subject, data, stream=letter.stream, headers=headers)
    await js.delete_msg(DEAD_LETTER_STREAM, sequence)
    return int(ack.seq)
