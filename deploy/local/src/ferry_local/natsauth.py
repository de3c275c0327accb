"""NATS users with exact permissions, one table per service: ``deploy/base/nats/users/<user>.yaml``.

Each table names what the user publishes on Ferry's subjects, the streams it may use and how, and
the KV buckets it owns; :func:`permissions` expands that into the exact publish/subscribe subjects,
JetStream API calls included:

* every user: ``$JS.API.INFO``, and replies on its own inbox ``_INBOX_<user>.>`` only
  (``ferry_schemas.runtime.jetstream.nats_options`` sets that prefix);
* ``read`` a stream: its info and single-message get (``STREAM.MSG.GET``, ``DIRECT.GET``);
* ``consume`` a stream: ``read`` plus creating/binding consumers on it, pulling, acking
  (``$JS.ACK``), flow control (``$JS.FC``) and its consumers' MAX_DELIVERIES advisories;
* ``declare`` a stream: create and update it (only the watcher declares Ferry's streams);
* a KV bucket it owns: its stream ``KV_<bucket>`` declared, read and watched, and ``$KV.<bucket>.>``.

The same tables configure every stack: :func:`render_conf` writes the ``authorization`` block of
nats.conf — with the passwords inline for the local stack, or as ``$FERRY_NATS_PASSWORD_<USER>``
environment references for ``deploy/base/nats/auth.conf`` and compose (``python -m
ferry_local.natsauth > deploy/base/nats/auth.conf``; a test fails when the file is stale).
"""

from __future__ import annotations

import json
import secrets
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import yaml

from ferry_local.paths import repo_root

API = "$JS.API"


@dataclass(frozen=True)
class NatsUser:
    user: str
    publish: tuple[str, ...] = ()
    subscribe: tuple[str, ...] = ()
    streams: dict[str, tuple[str, ...]] = field(default_factory=dict)
    kv: tuple[str, ...] = ()

    @classmethod
    def load(cls, path: Path) -> NatsUser:
        data = yaml.safe_load(path.read_text()) or {}
        unknown = set(data) - {"user", "publish", "subscribe", "streams", "kv"}
        if unknown or data.get("user") != path.stem:
            raise ValueError(f"{path}: user must be {path.stem!r}; unknown keys {sorted(unknown)}")
        streams = {str(k): tuple(v) for k, v in (data.get("streams") or {}).items()}
        for stream, uses in streams.items():
            if bad := set(uses) - {"read", "consume", "declare"}:
                raise ValueError(f"{path}: stream {stream}: unknown uses {sorted(bad)}")
        return cls(
            user=data["user"],
            publish=tuple(data.get("publish") or ()),
            subscribe=tuple(data.get("subscribe") or ()),
            streams=streams,
            kv=tuple(data.get("kv") or ()),
        )


def users_dir() -> Path:
    return repo_root() / "deploy" / "base" / "nats" / "users"


def users() -> dict[str, NatsUser]:
    return {path.stem: NatsUser.load(path) for path in sorted(users_dir().glob("*.yaml"))}


def _stream_subjects(stream: str, uses: tuple[str, ...]) -> tuple[list[str], list[str]]:
    publish: list[str] = []
    subscribe: list[str] = []
    if {"read", "consume", "declare"} & set(uses):
        publish += [f"{API}.STREAM.INFO.{stream}"]
    if {"read", "consume"} & set(uses):
        publish += [
            f"{API}.STREAM.MSG.GET.{stream}",
            f"{API}.DIRECT.GET.{stream}",
            f"{API}.DIRECT.GET.{stream}.>",
        ]
    if "consume" in uses:
        publish += [
            f"{API}.CONSUMER.CREATE.{stream}",
            f"{API}.CONSUMER.CREATE.{stream}.>",
            f"{API}.CONSUMER.DURABLE.CREATE.{stream}.*",
            f"{API}.CONSUMER.INFO.{stream}.*",
            f"{API}.CONSUMER.DELETE.{stream}.*",
            f"{API}.CONSUMER.MSG.NEXT.{stream}.*",
            f"$JS.ACK.{stream}.>",
            f"$JS.FC.{stream}.>",
        ]
        subscribe += [f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{stream}.*"]
    if "declare" in uses:
        publish += [f"{API}.STREAM.CREATE.{stream}", f"{API}.STREAM.UPDATE.{stream}"]
    return publish, subscribe


def permissions(user: NatsUser) -> tuple[list[str], list[str]]:
    """The exact (publish, subscribe) allow lists of ``user``."""
    if user.publish == (">",) and user.subscribe == (">",):
        return [">"], [">"]
    publish = [f"{API}.INFO", *user.publish]
    subscribe = [f"_INBOX_{user.user}.>", *user.subscribe]
    uses = dict(user.streams)
    for bucket in user.kv:
        uses[f"KV_{bucket}"] = ("declare", "consume")
        publish.append(f"$KV.{bucket}.>")
    for stream, stream_uses in uses.items():
        pub, sub = _stream_subjects(stream, stream_uses)
        publish += pub
        subscribe += sub
    return list(dict.fromkeys(publish)), list(dict.fromkeys(subscribe))


def password_variable(user: str) -> str:
    return f"FERRY_NATS_PASSWORD_{user.upper().replace('-', '_')}"


def render_conf(password: Callable[[str], str] | None = None) -> str:
    """The ``authorization`` block: passwords from ``password(user)`` (quoted, inline), or else
    ``$FERRY_NATS_PASSWORD_<USER>`` references that nats-server resolves from its environment."""
    lines = [
        "# Generated from deploy/base/nats/users/*.yaml by `python -m ferry_local.natsauth`; do not edit.",
        "authorization {",
        "  users = [",
    ]
    for name, user in users().items():
        publish, subscribe = permissions(user)
        secret = json.dumps(password(name)) if password else f"${password_variable(name)}"
        lines += [
            f"    {{user: {json.dumps(name)}, password: {secret}, permissions: {{",
            "      publish: {allow: [",
            *(f"        {json.dumps(subject)}" for subject in publish),
            "      ]}",
            "      subscribe: {allow: [",
            *(f"        {json.dumps(subject)}" for subject in subscribe),
            "      ]}",
            "    }}",
        ]
    return "\n".join([*lines, "  ]", "}", ""])


def issue_passwords() -> dict[str, str]:
    return {name: secrets.token_urlsafe(24) for name in users()}


def with_user(url: str, user: str, password: str) -> str:
    """``url`` (one or several, comma-separated) with ``user``'s credentials in each."""
    out = []
    for one in url.split(","):
        parts = urlsplit(one.strip())
        host = parts.hostname or "127.0.0.1"
        netloc = f"{user}:{password}@{host}" + (f":{parts.port}" if parts.port else "")
        out.append(urlunsplit((parts.scheme, netloc, parts.path, "", "")))
    return ",".join(out)


def main() -> None:
    sys.stdout.write(render_conf())


if __name__ == "__main__":
    main()
