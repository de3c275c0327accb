"""Membership on a real nats-server (:mod:`ferry_schemas.runtime.members`): replicas see each other,
split the keys, and a member that leaves or dies hands its keys to the others."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
from ferry_schemas.runtime.jetstream import connect
from ferry_schemas.runtime.members import ALL, Members
from nats.aio.client import Client

pytestmark = pytest.mark.integration
TTL = 1.5
KEYS = [f"modelservings/ns/s-{i}" for i in range(200)]


async def within(seconds: float, check: Callable[[], bool], what: str) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not within {seconds}s: {what}")
        await asyncio.sleep(0.05)


@pytest.fixture
async def connections(nats_url: str) -> AsyncIterator[list[Client]]:
    made: list[Client] = []
    yield made
    for nc in made:
        if not nc.is_closed:
            await nc.close()


async def member(
    nats_url: str, connections: list[Client], bucket: str, name: str, scope: str = ALL, mark: bytes = b""
) -> Members:
    nc = await connect(nats_url, name)
    connections.append(nc)
    members = Members(nc.jetstream(), bucket, name, ttl=TTL, scope=scope, mark=mark)
    await members.start()
    await members.wait_known()
    return members


def owned(members: Members) -> set[str]:
    return {key for key in KEYS if members.owns(key)}


async def test_members_split_the_keys_and_take_over_when_one_leaves_or_dies(
    nats_url: str, connections: list[Client]
) -> None:
    bucket = f"test_members_{uuid.uuid4().hex[:8]}"
    a = await member(nats_url, connections, bucket, "a/1")
    assert owned(a) == set(KEYS)  # alone: everything
    changes: list[frozenset[str]] = []
    a.on_change(lambda: changes.append(a.live))
    b = await member(nats_url, connections, bucket, "b/2")
    c = await member(nats_url, connections, bucket, "c/3")
    elsewhere = await member(nats_url, connections, bucket, "d/4", scope="other-namespace")
    everyone = {"a/1", "b/2", "c/3"}
    for m in (a, b, c):
        await within(5, lambda m=m: m.live == everyone, f"{m.member_id} sees every member")  # type: ignore[misc]
    assert elsewhere.live == {"d/4"}  # another scope: neither sees the other
    assert owned(elsewhere) == set(KEYS)
    await elsewhere.stop()
    assert changes[-1:] == [everyone]
    shares = [owned(m) for m in (a, b, c)]
    assert set().union(*shares) == set(KEYS)
    assert sum(len(s) for s in shares) == len(KEYS)  # disjoint: each key handled by one replica
    assert all(shares), "every member owns some keys"

    # a member that leaves deletes its key: the others take its keys over at once
    await c.stop()
    await within(1.0, lambda: a.live == b.live == {"a/1", "b/2"}, "c's leaving seen")
    assert owned(a) | owned(b) == set(KEYS)
    assert not owned(a) & owned(b)
    assert owned(a) >= shares[0]  # nobody lost a key of its own
    assert owned(b) >= shares[1]

    # a member that dies (no leave) is dropped once its last heartbeat is older than the TTL
    await connections[1].close()  # b's connection: b's heartbeats stop, its key stays until max_age
    await within(TTL * 3, lambda: a.live == {"a/1"}, "b's expiry seen")
    assert owned(a) == set(KEYS)
    assert changes[-1] == {"a/1"}
    await b.stop()  # its heartbeat task, which kept failing meanwhile
    await a.stop()


async def test_members_tell_whether_every_live_member_carries_a_mark_and_whether_one_is_alone(
    nats_url: str, connections: list[Client]
) -> None:
    """What the applier's rolling upgrade reads: a replica of the previous release (no mark) is seen
    while it runs, and its leaving is seen at once."""
    bucket = f"test_members_{uuid.uuid4().hex[:8]}"
    new = await member(nats_url, connections, bucket, "new/1", mark=b"record-lease")
    assert new.alone
    assert new.all_marked(b"record-lease")
    old = await member(nats_url, connections, bucket, "old/2")
    await within(5, lambda: not new.alone, "the previous release's replica seen")
    assert not new.all_marked(b"record-lease")
    other = await member(nats_url, connections, bucket, "new/3", mark=b"record-lease")
    await within(5, lambda: len(new.live) == 3, "the third replica seen")
    assert not new.all_marked(b"record-lease")
    await old.stop()
    await within(1.0, lambda: new.all_marked(b"record-lease"), "the unmarked replica's leaving seen")
    assert not new.alone
    await other.stop()
    await within(1.0, lambda: new.alone, "alone again")
    # a member of another scope (an applier limited to a namespace) acts on some of the same keys
    others_seen: list[bool] = []
    new.on_others(lambda: others_seen.append(new.alone))
    elsewhere = await member(nats_url, connections, bucket, "old/4", scope="some-namespace")
    await within(5, lambda: not new.alone, "the other scope's member seen")
    assert new.live == {"new/1"}  # it splits no keys with it
    assert not new.all_marked(b"record-lease")
    await elsewhere.stop()
    await within(1.0, lambda: new.alone, "its leaving seen")
    assert others_seen == [False, True]
    await new.stop()
