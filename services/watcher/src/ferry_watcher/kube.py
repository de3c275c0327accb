"""Raw list and watch calls against the API server, objects kept as plain dicts.

Ferry needs the object exactly as the API server sent it, so responses are read raw over the lean
:class:`~ferry_schemas.runtime.kubeconn.KubeConnection` (the watcher never imports kubernetes_asyncio
and its generated models).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgspec
from ferry_schemas.runtime.kubeconn import ApiError, KubeConnection

JSON = dict[str, Any]


async def list_objects(
    api: KubeConnection, path: str, label_selector: str | None, request_timeout: float = 60.0
) -> tuple[list[JSON], str]:
    """One consistent list (paged): the items (with apiVersion/kind filled in) and the list's RV."""
    items: list[JSON] = []
    cont = ""
    while True:
        query = [("limit", "500")]
        if label_selector:
            query.append(("labelSelector", label_selector))
        if cont:
            query.append(("continue", cont))
        resp = await api.request("GET", path, query, limits=aiohttp.ClientTimeout(total=request_timeout))
        body = msgspec.json.decode(await resp.read())
        resp.release()
        api_version = body.get("apiVersion", "")
        kind = str(body.get("kind", "")).removesuffix("List")
        for item in body.get("items") or []:
            item.setdefault("apiVersion", api_version)
            item.setdefault("kind", kind)
            items.append(item)
        meta = body.get("metadata") or {}
        cont = meta.get("continue") or ""
        if not cont:
            return items, str(meta.get("resourceVersion") or "")


async def watch_events(
    api: KubeConnection,
    path: str,
    label_selector: str | None,
    resource_version: str,
    timeout_seconds: int,
) -> AsyncIterator[JSON]:
    """Watch from ``resource_version`` with bookmarks; yields raw events (type, object).

    An in-stream ``ERROR`` event is raised as :class:`ApiError` with its code (410 = Gone).
    The iterator ends when the server closes the watch (``timeoutSeconds``).
    """
    query = [
        ("watch", "true"),
        ("allowWatchBookmarks", "true"),
        ("resourceVersion", resource_version),
        ("timeoutSeconds", str(timeout_seconds)),
    ]
    if label_selector:
        query.append(("labelSelector", label_selector))
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=timeout_seconds + 30)
    resp = await api.request("GET", path, query, limits=timeout)
    try:
        async for raw in resp.content:
            line = raw.strip()
            if not line:
                continue
            event = msgspec.json.decode(line)
            if event.get("type") == "ERROR":
                status = event.get("object") or {}
                reason = f"{status.get('reason')}: {status.get('message')}"
                raise ApiError(int(status.get("code") or 500), reason)
            yield event
    finally:
        resp.release()
