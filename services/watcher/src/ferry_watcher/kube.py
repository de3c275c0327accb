"""Raw list and watch calls against the API server, objects kept as plain dicts.

The typed kubernetes-asyncio models would drop nothing for core kinds but cost a deserialisation
per event; Ferry needs the object exactly as the API server sent it, so responses are read raw.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

JSON = dict[str, Any]


async def _request(
    api: client.ApiClient, path: str, query: list[tuple[str, str]], limits: aiohttp.ClientTimeout
) -> aiohttp.ClientResponse:
    resp: aiohttp.ClientResponse = await api.call_api(
        path,
        "GET",
        query_params=query,
        header_params={"Accept": "application/json"},
        auth_settings=["BearerToken"],
        _preload_content=False,
        _request_timeout=limits,
    )
    if not 200 <= resp.status <= 299:
        body = await resp.read()
        resp.release()
        raise ApiException(status=resp.status, reason=body.decode("utf-8", "replace")[:500])
    return resp


async def list_objects(
    api: client.ApiClient, path: str, label_selector: str | None, request_timeout: float = 60.0
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
        resp = await _request(api, path, query, aiohttp.ClientTimeout(total=request_timeout))
        body = json.loads(await resp.read())
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
    api: client.ApiClient,
    path: str,
    label_selector: str | None,
    resource_version: str,
    timeout_seconds: int,
) -> AsyncIterator[JSON]:
    """Watch from ``resource_version`` with bookmarks; yields raw events (type, object).

    An in-stream ``ERROR`` event is raised as :class:`ApiException` with its code (410 = Gone).
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
    resp = await _request(api, path, query, timeout)
    try:
        async for raw in resp.content:
            line = raw.strip()
            if not line:
                continue
            event = json.loads(line)
            if event.get("type") == "ERROR":
                status = event.get("object") or {}
                raise ApiException(
                    status=int(status.get("code") or 500),
                    reason=f"{status.get('reason')}: {status.get('message')}",
                )
            yield event
    finally:
        resp.release()
