"""Cache path, model path and the cache volume (``spec/booster.md`` §3.3)."""

from __future__ import annotations

import hashlib
import re
from typing import Any
from urllib.parse import unquote

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*$")
_PORT = re.compile(r"^[0-9]*$")


def cache_path(uri: str) -> str:
    """``GetCachePath``: ``/`` + (host + path) with slashes trimmed, or "" when it cannot be parsed.

    Follows Go's ``url.ParseRequestURI``: ``pvc://my-cache-path////`` → ``/my-cache-path``,
    ``pvc:///x`` → ``/x``, ``hostpath://cache`` → ``/cache``, ``invalidpath`` → "".
    """
    if not uri:
        return ""
    scheme, sep, rest = uri.partition(":")
    if not sep or not scheme or not _SCHEME.match(scheme):
        return ""
    host, path = "", rest
    if rest.startswith("//"):
        authority, slash, tail = rest[2:].partition("/")
        host, path = authority, slash + tail
        if "@" in host:
            host = host.rsplit("@", 1)[1]
        if ":" in host and not host.startswith("["):
            port = host.rsplit(":", 1)[1]
            if not _PORT.match(port):
                return ""
    elif not rest.startswith("/"):
        return ""  # opaque URIs are rejected by ParseRequestURI
    if "%" in path:
        try:
            path = unquote(path, errors="strict")
        except UnicodeDecodeError:
            return ""
    trimmed = (host + path).strip("/")
    return "/" + trimmed if trimmed else ""


def mount_path(model_uri: str) -> str:
    """``/`` + md5 hex of the model URI: the directory the weights are downloaded into."""
    return "/" + hashlib.md5(model_uri.encode()).hexdigest()


def model_download_path(cache_uri: str, model_uri: str) -> str:
    return cache_path(cache_uri) + mount_path(model_uri)


def pvc_claim_name(uri: str) -> str:
    """``pvc://my-pvc/`` → ``my-pvc``."""
    return uri.removeprefix("pvc://").strip("/")


def volume_name(backend_name: str) -> str:
    return f"{backend_name}-weights"


class CacheVolumeError(ValueError):
    """The cacheURI cannot be turned into a volume."""


def cache_volume(backend_name: str, cache_uri: str) -> dict[str, Any]:
    """The ``<backend>-weights`` volume for a cacheURI (emptyDir, PVC or hostPath)."""
    name = volume_name(backend_name)
    if not cache_uri:
        return {"name": name, "emptyDir": {}}
    if cache_uri.startswith("pvc://"):
        claim = pvc_claim_name(cache_uri)
        if not claim:
            raise CacheVolumeError(f'invalid cacheURI "{cache_uri}": must include a PVC claim name')
        return {"name": name, "persistentVolumeClaim": {"claimName": claim}}
    if cache_uri.startswith("hostpath://"):
        path = cache_path(cache_uri)
        if not path:
            raise CacheVolumeError(f'invalid cacheURI "{cache_uri}": must include a host path')
        return {"name": name, "hostPath": {"path": path, "type": "DirectoryOrCreate"}}
    raise CacheVolumeError(f"not support prefix in CacheURI: {cache_uri}")


def cache_mount(backend_name: str, cache_uri: str) -> dict[str, Any]:
    return {"name": volume_name(backend_name), "mountPath": cache_path(cache_uri)}
