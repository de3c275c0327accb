"""``ferry dead-letters list|redrive`` against a real nats-server with JetStream.

A durable consumer with ``max_deliver=2`` naks one desired set twice; the server's MAX_DELIVERIES
advisory reaches the real :class:`DeadLetterForwarder`, which records the dead letter. The CLI lists
it; ``redrive`` puts the subject's current message back on the stream, the consumer receives it
again (marked as re-driven), and the dead letter is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from typing import Any

import nats.errors
import pytest
from ferry_cli.app import app
from ferry_schemas.bus import DESIRED_STREAM, MSG_ID_HEADER, desired_subject
from ferry_schemas.runtime.jetstream import DeadLetterForwarder, declare_streams
from ferry_schemas.runtime.redrive import dead_letters
from nats.aio.client import Client
from nats.js.api import AckPolicy, ConsumerConfig
from typer.testing import CliRunner

pytestmark = [pytest.mark.integration]


async def ferry(*args: str) -> Any:
    """The CLI in a worker thread (it runs its own event loop), as a user would call it."""
    return await asyncio.to_thread(CliRunner().invoke, app, list(args), env={"COLUMNS": "250"})


async def test_list_and_redrive_a_real_dead_letter(nc: Client, nats_url: str) -> None:
    js = nc.jetstream()
    await declare_streams(js)
    name = f"dl-{uuid.uuid4().hex[:8]}"
    subject = desired_subject("modelservings", "cli-test", name)
    durable = f"cli-test-{name}"
    await js.add_consumer(
        DESIRED_STREAM,
        config=ConsumerConfig(
            durable_name=durable, filter_subject=subject, ack_policy=AckPolicy.EXPLICIT,
            max_deliver=2, ack_wait=30,
        ),
    )  # fmt: skip
    forwarder = DeadLetterForwarder(nc, js, "cli-test", DESIRED_STREAM, durable)
    await forwarder.start()
    try:
        await js.publish(subject, b'{"version": 1}', stream=DESIRED_STREAM)
        await js.publish(subject, b'{"version": 2}', stream=DESIRED_STREAM)  # the subject's current state
        sub = await js.pull_subscribe_bind(durable, DESIRED_STREAM)
        for _ in range(2):  # both deliveries fail
            [msg] = await sub.fetch(1, timeout=5)
            await msg.nak()
        with contextlib.suppress(nats.errors.TimeoutError):  # the next pull makes the server give up
            await sub.fetch(1, timeout=1)

        async def letter_seq() -> int:
            for _ in range(100):
                mine = [seq for seq, letter in await dead_letters(js) if letter and letter.subject == subject]
                if mine:
                    return mine[0]
                await asyncio.sleep(0.1)
            raise AssertionError("the dead letter never appeared")

        seq = await letter_seq()
        listed = await ferry("dead-letters", "list", "--nats", nats_url, "--limit", "1000")
        assert listed.exit_code == 0, listed.output
        row = next(line for line in listed.output.splitlines() if subject in line)
        assert row.split()[:3] == [str(seq), "cli-test", f"{DESIRED_STREAM}/{durable}"]
        assert row.split()[4] == "2"  # deliveries

        redriven = await ferry("dead-letters", "redrive", str(seq), "--nats", nats_url)
        assert redriven.exit_code == 0, redriven.output
        assert f"re-drove dead letter {seq}: {subject}" in redriven.output

        [again] = await sub.fetch(1, timeout=5)
        assert again.data == b'{"version": 2}', "re-drive must deliver the subject's current message"
        assert (again.headers or {}).get(MSG_ID_HEADER, "").startswith("redrive/")
        await again.ack()
        assert all(letter_seq != seq for letter_seq, _ in await dead_letters(js))

        twice = await ferry("dead-letters", "redrive", str(seq), "--nats", nats_url)
        assert twice.exit_code == 1
        assert f"no dead letter with sequence {seq}" in twice.output
    finally:
        await forwarder.stop()
        await js.delete_consumer(DESIRED_STREAM, durable)


async def test_unreachable_nats_is_a_clear_error() -> None:
    result = await ferry("dead-letters", "list", "--nats", "nats://127.0.0.1:1")
    assert result.exit_code == 1
    assert "cannot reach NATS at nats://127.0.0.1:1" in result.output
    assert "Traceback" not in result.output


async def test_a_message_replaced_before_it_could_be_read_is_not_a_dead_letter(nc: Client) -> None:
    """A MAX_DELIVERIES advisory can name a message a newer revision of its subject has replaced since
    (seen when a NATS node and then the meta leader were killed): nothing is lost — the newer revision
    is delivered on its own — and a letter without subject or data could never be re-driven."""
    js = nc.jetstream()
    await declare_streams(js)
    name = f"dl-{uuid.uuid4().hex[:8]}"
    subject = desired_subject("modelservings", "dl-test", name)
    durable = f"dl-test-{name}"
    forwarder = DeadLetterForwarder(nc, js, "dl-test", DESIRED_STREAM, durable)
    await forwarder.start()
    try:
        replaced = await js.publish(subject, b'{"version": 1}', stream=DESIRED_STREAM)
        current = await js.publish(subject, b'{"version": 2}', stream=DESIRED_STREAM)
        for seq in (replaced.seq, current.seq):  # the advisories as the server raises them, in order
            advisory = {"stream": DESIRED_STREAM, "consumer": durable, "stream_seq": seq, "deliveries": 8}
            await nc.publish(forwarder.advisory_subject, json.dumps(advisory).encode())

        async def mine() -> list[int]:
            for _ in range(100):  # one subscription handles its advisories in order
                letters = [
                    letter for _, letter in await dead_letters(js) if letter and letter.consumer == durable
                ]
                if letters:
                    return [letter.stream_sequence for letter in letters]
                await asyncio.sleep(0.1)
            raise AssertionError("the current message's dead letter never appeared")

        assert await mine() == [current.seq]
    finally:
        await forwarder.stop()
