"""Connecting to NATS as a Ferry service (servers, user, inbox prefix, TLS, reconnects).

Apart from :mod:`ferry_schemas.runtime.jetstream` (streams, consumers, dead letters) so that a small
process that only reads a stream (the router's load reader) connects the same way without
importing the bus contracts (pydantic) and the rest of the runtime.
"""

from __future__ import annotations

import logging
import os
import ssl
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:  # nats-py is imported by connect(): the load reader needs nats_options alone
    from nats.aio.client import Client

log = logging.getLogger(__name__)


def nats_options(url: str) -> dict[str, Any]:
    """How to reach NATS as this service: the servers (``url`` may list several, comma-separated),
    its user (in the URL, or ``FERRY_NATS_USER``/``FERRY_NATS_PASSWORD``), an inbox prefix of its own
    (``_INBOX_<user>``: its NATS permissions let it read only its own replies), and TLS when
    ``FERRY_NATS_CA`` names the CA (``FERRY_NATS_CERT``/``FERRY_NATS_KEY`` add a client certificate)."""
    servers = [u.strip() for u in url.split(",") if u.strip()]
    options: dict[str, Any] = {"servers": servers}
    user = os.environ.get("FERRY_NATS_USER")
    if user:
        options.update(user=user, password=os.environ.get("FERRY_NATS_PASSWORD", ""))
    else:
        user = urlsplit(servers[0]).username if servers else None
    if user:
        options["inbox_prefix"] = f"_INBOX_{user}"
    if ca := os.environ.get("FERRY_NATS_CA"):
        context = ssl.create_default_context(cafile=ca)
        if cert := os.environ.get("FERRY_NATS_CERT"):
            context.load_cert_chain(cert, os.environ.get("FERRY_NATS_KEY") or None)
        options["tls"] = context
    return options


Listener = Callable[[], None]
_RECONNECT_LISTENERS: weakref.WeakKeyDictionary[Client, list[Listener]] = weakref.WeakKeyDictionary()


def on_reconnect(nc: Client, listener: Listener) -> Callable[[], None]:
    """Call ``listener()`` each time ``nc`` (a connection made by :func:`connect`) is connected again;
    returns the function that removes it. What lived only in the server's memory -- ephemeral
    (ordered) consumers -- may be gone then: a restarted server keeps streams and durables only."""
    listeners = _RECONNECT_LISTENERS.setdefault(nc, [])
    listeners.append(listener)
    return lambda: listeners.remove(listener) if listener in listeners else None


async def connect(url: str, name: str) -> Client:
    """Connect with unlimited reconnects (a NATS restart must not kill a service); listeners added
    with :func:`on_reconnect` hear of every reconnect."""
    import nats

    connected: list[Client] = []

    async def reconnected() -> None:
        for listener in list(_RECONNECT_LISTENERS.get(connected[0], ())):
            try:
                listener()
            except Exception:
                log.exception("reconnect listener failed")

    nc = await nats.connect(
        **nats_options(url),
        name=name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        connect_timeout=5,
        allow_reconnect=True,
        reconnected_cb=reconnected,
    )
    connected.append(nc)
    return nc
