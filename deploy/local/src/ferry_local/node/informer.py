"""List-then-watch of one collection into a dict cache (plain dicts); relists only on 410 Gone or an error."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from kubernetes_asyncio import watch
from kubernetes_asyncio.client.exceptions import ApiException

log = logging.getLogger(__name__)
ListFn = Callable[..., Awaitable[Any]]


def key_of(obj: dict[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace", "")), str(meta["name"])


async def informer(
    list_fn: ListFn,
    cache: dict[tuple[str, str], dict[str, Any]],
    changed: asyncio.Event,
    stop: asyncio.Event,
    *,
    what: str,
    watch_seconds: int = 60,
) -> None:
    """Keep ``cache`` equal to the collection; set ``changed`` after every change.

    Like client-go's reflector: one LIST, then watches resumed from the last resourceVersion seen
    (bookmarks included) each time the server ends one after ``watch_seconds``. Only 410 Gone or an
    error relists, so a steady node costs the API server no LIST."""
    backoff = 0.5
    version: str | None = None
    while not stop.is_set():
        try:
            if version is None:
                version = await _relist(list_fn, cache)
                changed.set()
            async with watch.Watch() as w:
                ends = {"timeout_seconds": watch_seconds, "allow_watch_bookmarks": True}
                stream = w.stream(list_fn, resource_version=version, **ends)
                async for event in stream:
                    if event["type"] != "BOOKMARK":
                        obj = event["raw_object"]
                        if event["type"] == "DELETED":
                            cache.pop(key_of(obj), None)
                        else:
                            cache[key_of(obj)] = obj
                        changed.set()
                    version = w.resource_version or version
                    if stop.is_set():
                        return
            backoff = 0.5
            continue  # the server ended the watch: resume it from ``version``
        except ApiException as exc:
            version = None
            if exc.status == 410:
                continue
            if exc.status == 404:  # the CRD (e.g. PodGroup) is not installed yet
                await asyncio.sleep(2)
                continue
            log.warning("%s watch failed (%s); retrying in %.1fs", what, exc.status, backoff)
        except Exception as exc:  # a dropped connection, a truncated body...: never let the informer die
            version = None
            log.warning("%s watch interrupted (%r); retrying in %.1fs", what, exc, backoff)
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, 10.0)


async def _relist(list_fn: ListFn, cache: dict[tuple[str, str], dict[str, Any]]) -> str:
    """Replace ``cache`` with a fresh LIST; return the list's resourceVersion."""
    response = await list_fn(_preload_content=False)
    if response.status >= 300:  # unparsed answers never raise: an error must not empty the cache
        raise ApiException(status=response.status, reason=(await response.text())[:200])
    listing = json.loads(await response.read())
    fresh = {key_of(o): o for o in listing.get("items", [])}
    cache.clear()
    cache.update(fresh)
    return str(listing["metadata"]["resourceVersion"])
