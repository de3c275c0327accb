"""A lean connection to the API server: raw HTTP, objects as plain dicts.

Whole-body requests (:meth:`KubeConnection.send`, every write and read of the services) go through
:mod:`ferry_schemas.runtime.http1`, a minimal keep-alive pool whose request is one buffer and whose
answer httptools parses: half the client CPU of aiohttp's ``ClientSession.request`` per request
(``bench.reconcile.client``). Streams (:meth:`KubeConnection.request`: watches, paged lists) and
every request behind a proxy stay on one aiohttp pool.

``kubernetes_asyncio``'s package imports every generated model and API class on first import
(about 75 MiB of a service's RSS); a service that only needs raw requests uses this instead and
never imports it. Configuration: the in-cluster service account when running in a pod (and no
``$KUBECONFIG``), otherwise the current context of ``$KUBECONFIG`` / ``~/.kube/config`` (server,
CA, client certificate/key inline or as files, bearer token or token file; exec and auth-provider
plugins are refused with a clear error). The proxy environment (``HTTPS_PROXY``/``NO_PROXY``) is
resolved once per connection, never per request (aiohttp's ``trust_env`` reads it and ``~/.netrc`` on
a worker thread for every request). Bodies and answers go through orjson: encoding a ModelServing's
apply body took ~70 µs with ``json.dumps`` and ~1.5 µs with orjson, decoding its answer 25 → 16 µs.
"""

from __future__ import annotations

import base64
import contextlib
import os
import ssl
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
import orjson
import yaml
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

from ferry_schemas.runtime.http1 import Pool

READ_BUFFER = 2**21
"""Read buffer of the HTTP session (watch events of large objects exceed aiohttp's default)."""
POOL_SIZE = 100
REQUEST_POOL_SIZE = 16
"""Connections of a service that holds no watches: each TLS connection costs about 300 KB (asyncio's
256 KiB TLS read buffer and OpenSSL's own), so 100 of them were a quarter of an applier's memory.
At 2000 boosters on a quiet 2-core machine (one run each): 32 → applier peak 106 MiB, 92 s; 16 →
100 MiB, 95 s; 8 → 98 MiB, 102 s. The API server's own CPU bounds the run, not the connections."""
SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
TOKEN_REREAD_SECONDS = 60.0
"""How often a token file is read again (the kubelet rotates a projected service-account token)."""


JSON = dict[str, Any]
APPLY_PATCH = "application/apply-patch+yaml"
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLICATION_JSON = "application/json"
METADATA_ONLY = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"
"""``Accept`` of a write whose caller needs only the stored metadata (resourceVersion, uid,
managedFields): the API server answers with the object's metadata instead of encoding it whole."""
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH"})
IDEMPOTENT_METHODS = frozenset({"GET", "PUT", "DELETE"})
"""Requests sent once more when a reused connection turns out closed before any answer (as aiohttp)."""
UNVALIDATED_FIELDS = ("fieldValidation", "Ignore")
"""Query of every write :meth:`KubeConnection.send` makes. The API server's default (``Warn``)
decodes each body a second time, strictly, only to send warnings about unknown or duplicate fields
that Ferry never reads: what is stored is the same (a POST prunes a field the schema does not know,
a server-side apply refuses it in every mode). Ignore skips that second decode: a server-side apply
body is YAML to the API server, so its second parse was 11 % of kube-apiserver's CPU in a burst of
ModelServing applies."""


def object_path(
    group: str, version: str, plural: str, namespace: str = "", name: str = "", subresource: str = ""
) -> str:
    """The REST path of a collection or one object (core kinds have group ``""``)."""
    path = f"/apis/{group}/{version}" if group else f"/api/{version}"
    if namespace:
        path += f"/namespaces/{namespace}"
    path += f"/{plural}"
    if name:
        path += f"/{name}"
    if subresource:
        path += f"/{subresource}"
    return path


class ApiError(Exception):
    """A non-2xx answer (or an in-stream watch ``ERROR``): its HTTP status and the server's text."""

    def __init__(self, status: int, reason: str = "", body: str = "") -> None:
        super().__init__(f"({status}) {reason}" + (f": {body[:500]}" if body else ""))
        self.status = status
        self.reason = reason
        self.body = body


class ConfigError(Exception):
    """The kubeconfig or the in-cluster environment cannot be used."""


@dataclass
class _Token:
    """A bearer token, literal or read from a file (again every :data:`TOKEN_REREAD_SECONDS`)."""

    value: str = ""
    path: str = ""
    read_at: float = field(default=float("-inf"))

    def current(self) -> str:
        if self.path and time.monotonic() - self.read_at > TOKEN_REREAD_SECONDS:
            self.value = Path(self.path).read_text().strip()
            self.read_at = time.monotonic()
        return self.value


class KubeConnection:
    """The API server's address, credentials and one connection pool."""

    def __init__(
        self,
        host: str,
        ssl_context: ssl.SSLContext | bool,
        token: _Token | None = None,
        *,
        pool_size: int = POOL_SIZE,
    ) -> None:
        self._token = token
        self._ssl_context = ssl_context
        self._pool_size = pool_size
        connector = aiohttp.TCPConnector(limit=pool_size, ssl=ssl_context)
        self.session = aiohttp.ClientSession(connector=connector, trust_env=False, read_bufsize=READ_BUFFER)
        self._pool: Pool | None = None
        """Whole-body requests (:meth:`send`) when no proxy is in the way; streams stay on ``session``."""
        self.host = host

    @property
    def host(self) -> str:
        """The API server's base URL (``https://host:port``)."""
        return self._host

    @host.setter
    def host(self, host: str) -> None:
        """Send every later request to ``host``: its proxy and the lean pool follow it."""
        self._host = host.rstrip("/")
        self._proxy: str | None = None
        self._proxy_headers: dict[str, str] | None = None
        with contextlib.suppress(LookupError):
            proxy, proxy_auth = get_env_proxy_for_url(URL(self._host))
            self._proxy = str(proxy)
            if proxy_auth is not None:
                self._proxy_headers = {"Proxy-Authorization": proxy_auth.encode()}
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        if self._proxy is None:
            url = URL(self._host)
            tls = _tls_context(self._ssl_context) if url.scheme == "https" else None
            self._pool = Pool(url.raw_host or "", url.port or 0, tls, limit=self._pool_size)
            self._host_header = f"Host: {url.raw_authority}\r\nUser-Agent: ferry\r\n"

    async def request(
        self,
        method: str,
        path: str,
        query: list[tuple[str, str]] | None = None,
        *,
        body: bytes | None = None,
        content_type: str = "application/json",
        limits: aiohttp.ClientTimeout | float = 30.0,
        accept: str = APPLICATION_JSON,
    ) -> aiohttp.ClientResponse:
        """Send one request; the response (to read and release) or :class:`ApiError` for non-2xx."""
        headers = {"Accept": accept}
        if body is not None:
            headers["Content-Type"] = content_type
        if self._token is not None and (token := self._token.current()):
            headers["Authorization"] = f"Bearer {token}"
        if not isinstance(limits, aiohttp.ClientTimeout):
            limits = aiohttp.ClientTimeout(total=limits)
        resp = await self.session.request(
            method, self.host + path, params=query or None, data=body, headers=headers,
            proxy=self._proxy, proxy_headers=self._proxy_headers, timeout=limits,
        )  # fmt: skip
        if not 200 <= resp.status <= 299:
            text = (await resp.read()).decode("utf-8", "replace")
            resp.release()
            raise ApiError(resp.status, resp.reason or "", text)
        return resp

    async def send(
        self,
        method: str,
        path: str,
        body: JSON | list[JSON] | None = None,
        *,
        query: list[tuple[str, str]] | None = None,
        content_type: str = "application/json",
        limits: aiohttp.ClientTimeout | float = 30.0,
        accept: str = APPLICATION_JSON,
    ) -> JSON:
        """One request with a JSON body (an apply patch is YAML, JSON a subset of it); the answer, a dict.

        A write skips the API server's strict second decode (:data:`UNVALIDATED_FIELDS`)."""
        if method in WRITE_METHODS:
            query = [*(query or ()), UNVALIDATED_FIELDS]
        payload = orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS) if body is not None else None
        if self._pool is not None:
            return await self._fetch(method, path, query, payload, content_type, limits, accept)
        resp = await self.request(
            method, path, query, body=payload, content_type=content_type, limits=limits, accept=accept
        )
        try:
            raw = await resp.read()
        finally:
            resp.release()
        answer = orjson.loads(raw) if raw else {}
        if not isinstance(answer, dict):
            raise ApiError(resp.status, f"the API server answered {type(answer).__name__}, not an object")
        return answer

    async def _fetch(
        self,
        method: str,
        path: str,
        query: list[tuple[str, str]] | None,
        payload: bytes | None,
        content_type: str,
        limits: aiohttp.ClientTimeout | float,
        accept: str,
    ) -> JSON:
        """:meth:`send` over the lean pool: the request's bytes built at once, the answer whole."""
        assert self._pool is not None
        target = quote(path) + ("?" + urlencode(query, quote_via=quote) if query else "")
        head = f"{method} {target} HTTP/1.1\r\n{self._host_header}Accept: {accept}\r\n"
        if payload is not None:
            head += f"Content-Type: {content_type}\r\nContent-Length: {len(payload)}\r\n"
        elif method in WRITE_METHODS:
            head += "Content-Length: 0\r\n"
        if self._token is not None and (token := self._token.current()):
            head += f"Authorization: Bearer {token}\r\n"
        request = (head + "\r\n").encode()
        if payload:
            request += payload
        timeout = limits.total if isinstance(limits, aiohttp.ClientTimeout) else limits
        status, reason, raw = await self._pool.fetch(
            request, seconds=timeout, idempotent=method in IDEMPOTENT_METHODS
        )
        if not 200 <= status <= 299:
            raise ApiError(status, reason, raw.decode("utf-8", "replace"))
        answer = orjson.loads(raw) if raw else {}
        if not isinstance(answer, dict):
            raise ApiError(status, f"the API server answered {type(answer).__name__}, not an object")
        return answer

    async def apply(
        self,
        path: str,
        body: JSON,
        field_manager: str,
        *,
        limits: aiohttp.ClientTimeout | float = 30.0,
        accept: str = APPLICATION_JSON,
    ) -> JSON:
        """Server-side apply ``body`` at ``path`` (forced: the field manager owns these fields)."""
        query = [("fieldManager", field_manager), ("force", "true")]
        return await self.send(
            "PATCH", path, body, query=query, content_type=APPLY_PATCH, limits=limits, accept=accept
        )

    async def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
        await self.session.close()


def _tls_context(ssl_context: ssl.SSLContext | bool) -> ssl.SSLContext:
    """The context of an ``https`` server as aiohttp reads ``ssl``: ``True`` the default
    verification, ``False`` none."""
    if isinstance(ssl_context, ssl.SSLContext):
        return ssl_context
    context = ssl.create_default_context()
    if not ssl_context:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


async def connect(kubeconfig: str | None = None, *, pool_size: int = POOL_SIZE) -> KubeConnection:
    """In-cluster config in a pod, else ``kubeconfig`` / ``$KUBECONFIG`` / ``~/.kube/config``;
    at most ``pool_size`` connections at once (a watch holds one for as long as it runs)."""
    path = kubeconfig or os.environ.get("KUBECONFIG")
    if not path and os.environ.get("KUBERNETES_SERVICE_HOST"):
        return in_cluster(pool_size=pool_size)
    source = Path(path.split(os.pathsep)[0]) if path else Path.home() / ".kube" / "config"
    return from_kubeconfig(source, pool_size=pool_size)


def in_cluster(*, pool_size: int = POOL_SIZE) -> KubeConnection:
    host, port = os.environ.get("KUBERNETES_SERVICE_HOST", ""), os.environ.get("KUBERNETES_SERVICE_PORT", "")
    if not host or not port:
        raise ConfigError("KUBERNETES_SERVICE_HOST/PORT are not set: not running in a pod")
    if ":" in host:  # IPv6
        host = f"[{host}]"
    context = ssl.create_default_context(cafile=str(SERVICE_ACCOUNT / "ca.crt"))
    token = _Token(path=str(SERVICE_ACCOUNT / "token"))
    return KubeConnection(f"https://{host}:{port}", context, token, pool_size=pool_size)


def _named(entries: list[dict[str, Any]] | None, name: str, what: str, source: Path) -> dict[str, Any]:
    for entry in entries or []:
        if entry.get("name") == name:
            return dict(entry.get(what) or {})
    raise ConfigError(f"{source}: no {what} named {name!r}")


def from_kubeconfig(source: Path, *, pool_size: int = POOL_SIZE) -> KubeConnection:
    """The current context of the kubeconfig at ``source``."""
    try:
        doc = yaml.safe_load(source.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{source}: cannot read the kubeconfig: {exc}") from exc
    context = _named(doc.get("contexts"), doc.get("current-context") or "", "context", source)
    cluster = _named(doc.get("clusters"), context.get("cluster") or "", "cluster", source)
    user = _named(doc.get("users"), context.get("user") or "", "user", source) if context.get("user") else {}
    if "exec" in user or "auth-provider" in user:
        raise ConfigError(
            f"{source}: exec/auth-provider credentials are not supported (use a token or a certificate)"
        )
    base = source.parent

    def file(key: str, entry: dict[str, Any]) -> str | None:
        value = entry.get(key)
        return str(base / value) if value else None

    def data(key: str, entry: dict[str, Any]) -> bytes | None:
        value = entry.get(f"{key}-data")
        return base64.b64decode(value) if value else None

    server = str(cluster.get("server") or "")
    if not server:
        raise ConfigError(f"{source}: the cluster has no server")
    ssl_context: ssl.SSLContext | bool = True
    if server.startswith("https"):
        if cluster.get("tls-server-name"):
            raise ConfigError(f"{source}: tls-server-name is not supported")
        ca_data = data("certificate-authority", cluster)
        ssl_context = ssl.create_default_context(
            cafile=file("certificate-authority", cluster), cadata=ca_data.decode() if ca_data else None
        )
        if cluster.get("insecure-skip-tls-verify"):
            ssl_context.check_hostname = False
            ssl_context.verify_mode = ssl.CERT_NONE
        _load_client_certificate(ssl_context, user, file, data)
    token = None
    if user.get("token") or user.get("tokenFile"):
        token = _Token(value=str(user.get("token") or ""), path=file("tokenFile", user) or "")
    return KubeConnection(server, ssl_context, token, pool_size=pool_size)


def _load_client_certificate(context: ssl.SSLContext, user: dict[str, Any], file: Any, data: Any) -> None:
    cert_file, key_file = file("client-certificate", user), file("client-key", user)
    cert_data, key_data = data("client-certificate", user), data("client-key", user)
    if not (cert_file or cert_data):
        return
    if cert_data or key_data:  # ssl loads a certificate chain only from files
        with tempfile.TemporaryDirectory() as tmp:
            cert_path, key_path = Path(tmp) / "tls.crt", Path(tmp) / "tls.key"
            cert_path.write_bytes(cert_data or Path(cert_file).read_bytes())
            key_path.write_bytes(key_data or Path(key_file).read_bytes())
            context.load_cert_chain(str(cert_path), str(key_path))
    else:
        context.load_cert_chain(cert_file, key_file)
