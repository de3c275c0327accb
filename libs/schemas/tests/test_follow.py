"""The follower reads a delivery's stream sequence and pending count off its reply subject."""

from __future__ import annotations

import pytest
from ferry_schemas.runtime.follow import delivery_position
from nats.aio.msg import Msg

REPLIES = [
    "$JS.ACK.FERRY_OBJECTS.ordered-consumer.1.2037.12.1764499200000000000.19963",
    "$JS.ACK._.ACCHASH.FERRY_LOAD.ordered-consumer.1.7.3.1764499200000000000.0.rand0m",
    "$JS.ACK.hub.ACCHASH.FERRY_LOAD.ordered-consumer.1.42.42.1764499200000000000.5",
]


@pytest.mark.parametrize("reply", REPLIES)
def test_the_position_is_what_nats_py_metadata_says(reply: str) -> None:
    metadata = Msg.Metadata._from_reply(reply)
    assert delivery_position(reply) == (metadata.sequence.stream, metadata.num_pending)


@pytest.mark.parametrize("reply", [None, "", "_INBOX.abc.1", "$JS.ACK.S.C.1.x.1.0.0", "$JS.ACK.S.C.1"])
def test_other_messages_have_no_position(reply: str | None) -> None:
    assert delivery_position(reply) is None
