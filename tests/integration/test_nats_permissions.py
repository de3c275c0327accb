"""Each service's NATS user may do exactly what its table in ``deploy/base/nats/users`` says, on the
real nats-server the suite runs (the same users the local stack and every test run the services as)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import nats
import pytest
from ferry_local.natsauth import NatsUser, render_conf, users, users_dir
from ferry_local.natsd import service_url
from ferry_local.paths import repo_root
from ferry_schemas.bus import (
    APPLIED_GENERATIONS_BUCKET,
    DESIRED_STREAM,
    GATEWAY_LISTENERS_BUCKET,
    LOAD_STREAM,
    OBJECTS_STREAM,
    RATE_LIMIT_BUCKET,
)
from ferry_schemas.runtime.jetstream import connect, declare_streams
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig

pytestmark = pytest.mark.integration

EXPECTED: dict[str, NatsUser] = {
    "watcher": NatsUser("watcher", publish=("ferry.obj.>",), streams={
        "FERRY_OBJECTS": ("declare", "consume"), "FERRY_DESIRED": ("declare",),
        "FERRY_RESULTS": ("declare",), "FERRY_DEAD_LETTERS": ("declare",), "FERRY_KV": ("declare",),
        "FERRY_LOAD": ("declare",),
    }),
    "converter": NatsUser("converter", publish=("ferry.desired.>",), streams={
        "FERRY_OBJECTS": ("consume",), "FERRY_DESIRED": ("read",),
    }, kv=("ferry_converter_members",)),
    "applier": NatsUser("applier", publish=("ferry.applied.>", "ferry.dlq.ferry-applier.>"), streams={
        "FERRY_DESIRED": ("consume",), "FERRY_OBJECTS": ("consume",), "FERRY_RESULTS": ("read",),
    }, kv=(APPLIED_GENERATIONS_BUCKET, "ferry_applier_leases", "ferry_applier_members")),
    "status": NatsUser("status", streams={
        "FERRY_OBJECTS": ("consume",), "FERRY_RESULTS": ("consume",), "FERRY_DESIRED": ("consume",),
    }, kv=(GATEWAY_LISTENERS_BUCKET, "ferry_status_members")),
    "router": NatsUser("router", publish=("ferry.demand.>", "ferry.fairness.>", "ferry.sessionboost.>"),
                       subscribe=("ferry.fairness.>", "ferry.sessionboost.>"),
                       streams={"FERRY_OBJECTS": ("consume",), "FERRY_KV": ("consume",),
                                "FERRY_LOAD": ("consume",)},
                       kv=(RATE_LIMIT_BUCKET, GATEWAY_LISTENERS_BUCKET)),
    "autoscaler": NatsUser("autoscaler", subscribe=("ferry.demand.>",), streams={
        "FERRY_OBJECTS": ("consume",), "FERRY_LOAD": ("consume",),
    }, kv=("ferry_autoscaler_leases",)),
    "runtime": NatsUser("runtime", publish=("ferry.kv.>", "ferry.load.>")),
    "admin": NatsUser("admin", publish=(">",), subscribe=(">",)),
}  # fmt: skip
"""What each user needs, written down a second time: widening a user's table fails here."""


def test_every_user_has_exactly_the_permissions_it_needs() -> None:
    assert users() == EXPECTED


def test_deploy_and_compose_use_the_config_generated_from_the_tables() -> None:
    shipped = (repo_root() / "deploy" / "base" / "nats" / "auth.conf").read_text()
    assert shipped == render_conf(), "deploy/base/nats/auth.conf is stale: python -m ferry_local.natsauth"
    assert {p.stem for p in users_dir().glob("*.yaml")} == set(EXPECTED)


@asynccontextmanager
async def as_user(nats_url: str, user: str) -> AsyncIterator[tuple[Client, list[str]]]:
    """A connection as ``user``; the second value collects the server's permission errors."""
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    url = service_url(user, nats_url)
    assert f"//{user}:" in url, "the suite's nats-server must run with the service users"
    nc = await nats.connect(url, error_cb=on_error, inbox_prefix=f"_INBOX_{user}", max_reconnect_attempts=0)
    try:
        yield nc, errors
    finally:
        await nc.close()


def violations(errors: list[str]) -> int:
    return sum("permissions violation" in e.lower() for e in errors)


async def until(check: Callable[[], bool], what: str) -> None:
    deadline = asyncio.get_running_loop().time() + 5.0
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def last_stored(js: JetStreamContext, stream: str, subject: str) -> bytes | None:
    """The subject's last message in ``stream``, polled for up to 5 s."""
    deadline = asyncio.get_running_loop().time() + 5.0
    while True:
        try:
            return (await js.get_last_msg(stream, subject)).data
        except nats.js.errors.NotFoundError:
            if asyncio.get_running_loop().time() > deadline:
                pytest.fail(f"nothing stored on {subject} in {stream}")
            await asyncio.sleep(0.05)


async def test_the_router_cannot_publish_desired_sets(nats_url: str, nc: Client) -> None:
    js = nc.jetstream()
    await declare_streams(js)
    subject = f"ferry.desired.modelservings.perm-{uuid.uuid4().hex[:8]}.evil"
    async with as_user(nats_url, "router") as (router, errors):
        await router.publish(subject, b'{"forged": true}')
        await until(
            lambda: any("permissions violation" in e.lower() for e in errors), "a permissions violation"
        )
        with pytest.raises((nats.errors.TimeoutError, nats.js.errors.Error)):  # no ack: it never got stored
            await router.jetstream().publish(subject, b"{}", timeout=1.0)
        # what it may do works: read the objects stream
        info = await router.jetstream().stream_info(OBJECTS_STREAM)
        assert info.config.name == OBJECTS_STREAM
    with pytest.raises(nats.js.errors.NotFoundError):
        await js.get_last_msg(DESIRED_STREAM, subject)
    async with as_user(nats_url, "converter") as (converter, errors):  # the converter may
        ack = await converter.jetstream().publish(subject, b"{}")
        assert ack.stream == DESIRED_STREAM
        assert not errors
    await js.purge_stream(DESIRED_STREAM, subject=subject)


async def test_the_watcher_cannot_touch_kv_buckets_it_does_not_own(nats_url: str, nc: Client) -> None:
    js = nc.jetstream()
    owned = await js.create_key_value(KeyValueConfig(bucket=APPLIED_GENERATIONS_BUCKET))
    key = f"perm.{uuid.uuid4().hex[:8]}"
    await owned.put(key, b"7")
    async with as_user(nats_url, "watcher") as (watcher, errors):
        wjs = watcher.jetstream()
        with pytest.raises((nats.errors.TimeoutError, nats.js.errors.Error)):  # cannot even look at it
            await wjs.key_value(APPLIED_GENERATIONS_BUCKET)
        with pytest.raises((nats.errors.TimeoutError, nats.js.errors.Error)):
            await wjs.create_key_value(KeyValueConfig(bucket=f"watcher_{uuid.uuid4().hex[:6]}"))
        await watcher.publish(f"$KV.{APPLIED_GENERATIONS_BUCKET}.{key}", b"0")  # a write goes nowhere
        await until(
            lambda: sum("permissions violation" in e.lower() for e in errors) >= 3, "three violations"
        )
        # what it may do works: declare the streams and publish objects
        await declare_streams(wjs)
        ack = await wjs.publish(f"ferry.obj.pods.perm.{key.replace('.', '_')}", b"{}")
        assert ack.stream == OBJECTS_STREAM
    assert (await owned.get(key)).value == b"7"
    async with as_user(nats_url, "applier") as (applier, errors):  # its owner may
        mine = await applier.jetstream().key_value(APPLIED_GENERATIONS_BUCKET)
        assert (await mine.get(key)).value == b"7"
        await mine.delete(key)
        assert not errors


async def test_services_connect_with_their_own_user_and_inbox(nats_url: str) -> None:
    client = await connect(service_url("status", nats_url), "perm-test")
    try:
        assert client.is_connected
        reply = await client.jetstream().stream_info(OBJECTS_STREAM)  # a request: its inbox works
        assert reply.config.name == OBJECTS_STREAM
    finally:
        await client.close()


async def test_only_the_sidecar_publishes_engine_load(nats_url: str, nc: Client) -> None:
    js = nc.jetstream()
    await declare_streams(js)
    subject = f"ferry.load.perm-{uuid.uuid4().hex[:8]}.model.pod"
    async with as_user(nats_url, "router") as (router, errors):  # a consumer cannot forge load
        await router.publish(subject, b'{"forged": true}')
        await until(lambda: violations(errors) >= 1, "a permissions violation")
    with pytest.raises(nats.js.errors.NotFoundError):
        await js.get_last_msg(LOAD_STREAM, subject)
    async with as_user(nats_url, "runtime") as (runtime, errors):
        await runtime.publish(subject, b"{}")  # core publish, kept by the stream
        await runtime.flush()
        assert not errors
    # a core publish is stored by the stream after the server read it, not before flush() returns
    assert await last_stored(js, LOAD_STREAM, subject) == b"{}"
    async with as_user(nats_url, "router") as (router, errors):  # and it may read it
        info = await router.jetstream().stream_info(LOAD_STREAM)
        assert info.config.name == LOAD_STREAM
        assert not errors
    await js.purge_stream(LOAD_STREAM, subject=subject)
