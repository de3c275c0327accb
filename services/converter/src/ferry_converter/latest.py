"""What FERRY_DESIRED already holds for an owner.

Read before publishing so that a redelivered older generation never overwrites a newer desired
set, and an unchanged one is not published again (a status-only change of the owner converts
to the same content). The publish then expects that same last sequence on the subject
(``Nats-Expected-Last-Subject-Sequence``), so two replicas racing on one owner cannot reorder
generations: the loser is rejected, nacked, and re-reads on redelivery.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ferry_schemas.bus import DESIRED_STREAM, MSG_ID_HEADER, DesiredSet
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

log = logging.getLogger(__name__)


EXPECTED_LAST_SUBJECT_SEQUENCE = "Nats-Expected-Last-Subject-Sequence"
WRONG_LAST_SEQUENCE = 10071
"""JetStream's error code when the subject's last sequence is not the expected one."""


class WrongLastSequence(Exception):
    """The publish expected another last message on the subject than the one stored."""


@dataclass(frozen=True)
class StoredDesired:
    """The last message on an owner's desired subject (``sequence`` 0: there is none)."""

    sequence: int = 0
    uid: str = ""
    generation: int = 0
    msg_id: str = ""
    deleted: bool = False

    @classmethod
    def of(cls, desired: DesiredSet, sequence: int, msg_id: str) -> StoredDesired:
        """What the subject holds once ``desired`` was stored at ``sequence`` with ``msg_id``."""
        owner = desired.owner
        return cls(sequence, owner.uid, owner.generation, msg_id, desired.deleted)

    def same_owner(self, desired: DesiredSet) -> bool:
        return self.sequence > 0 and self.uid == desired.owner.uid

    def holds(self, msg_id: str) -> bool:
        """The stored message is the desired set whose id is ``msg_id`` (stored as ``<msg_id>`` or
        ``<msg_id>/<sequence>``)."""
        return self.msg_id == msg_id or self.msg_id.startswith(f"{msg_id}/")


LatestDesired = Callable[[DesiredSet], Awaitable[StoredDesired]]


def stored_desired(js: JetStreamContext) -> LatestDesired:
    """A ``LatestDesired`` reading the last message on the owner's desired subject."""

    async def latest(desired: DesiredSet) -> StoredDesired:
        try:
            raw = await js.get_last_msg(DESIRED_STREAM, desired.subject)
        except NotFoundError:
            return StoredDesired()
        sequence = int(raw.seq or 0)
        try:
            stored = json.loads(raw.data or b"{}")
            owner = stored.get("owner") or {}
            return StoredDesired(
                sequence=sequence,
                uid=str(owner.get("uid") or ""),
                generation=int(owner.get("generation") or 0),
                msg_id=(raw.headers or {}).get(MSG_ID_HEADER, ""),
                deleted=bool(stored.get("deleted")),
            )
        except (ValueError, TypeError, AttributeError):
            log.warning("unreadable desired set on %s; publishing over it", desired.subject)
            return StoredDesired(sequence=sequence)

    return latest
