"""List-then-watch of one collection into a dict cache, relisting after 410 Gone (plain dicts)."""

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
) -> None:
    """Keep ``cache`` equal to the collection; set ``changed`` after every change."""
    backoff = 0.5
    while not stop.is_set():
        try:
            response = await list_fn(_preload_content=False)
            if response.status >= 300:  # unparsed answers never raise: an error must not empty the cache
                raise ApiException(status=response.status, reason=(await response.text())[:200])
            listing = json.loads(await response.read())
            fresh = {key_of(o): o for o in listing.get("items", [])}
            cache.clear()
            cache.update(fresh)
            changed.set()
            version = listing["metadata"]["resourceVersion"]
            async with watch.Watch() as w:
                async for event in w.stream(
                    list_fn, resource_version=version, allow_watch_bookmarks=True, timeout_seconds=60
                ):
                    if event["type"] == "BOOKMARK":
                        continue
                    obj = event["raw_object"]
                    if event["type"] == "DELETED":
                        cache.pop(key_of(obj), None)
                    else:
                        cache[key_of(obj)] = obj
                    changed.set()
                    if stop.is_set():
                        return
            backoff = 0.5
        except ApiException as exc:
            if exc.status == 410:
                continue
            if exc.status == 404:  # the CRD (e.g. PodGroup) is not installed yet
                await asyncio.sleep(2)
                continue
            log.warning("%s watch failed (%s); retrying in %.1fs", what, exc.status, backoff)
        except Exception as exc:  # a dropped connection, a truncated body...: never let the informer die
            log.warning("%s watch interrupted (%r); retrying in %.1fs", what, exc, backoff)
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, 10.0)
