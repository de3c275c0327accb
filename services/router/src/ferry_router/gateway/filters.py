"""HTTPRoute filters: RequestHeaderModifier, ResponseHeaderModifier, RequestRedirect, URLRewrite.

Filters of the matched rule apply first, then those of the chosen backendRef. Unsupported filter
types never reach here: they make the route ``Accepted=False`` (``ferry_schemas.gateway.view``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from ferry_schemas.gateway.objects import RouteMatch
from multidict import CIMultiDict

JSON = dict[str, Any]


def modify_headers(headers: CIMultiDict[str], spec: JSON) -> None:
    """Apply one ``HTTPHeaderFilter`` (set, add, remove) in place."""
    for item in spec.get("set") or []:
        headers[item["name"]] = str(item.get("value", ""))
    for item in spec.get("add") or []:
        name = item["name"]
        current = headers.get(name)
        headers[name] = (
            f"{current},{item.get('value', '')}" if current is not None else str(item.get("value", ""))
        )
    for name in spec.get("remove") or []:
        headers.popall(name, None)


def rewrite_path(path: str, spec: JSON, match: RouteMatch) -> str:
    """``ReplaceFullPath`` or ``ReplacePrefixMatch`` (the matched PathPrefix replaced)."""
    kind = spec.get("type")
    if kind == "ReplaceFullPath":
        return str(spec.get("replaceFullPath") or "/")
    if kind == "ReplacePrefixMatch" and match.path_type == "PathPrefix":
        prefix = match.path.rstrip("/")
        replacement = str(spec.get("replacePrefixMatch") or "/")
        rest = path[len(prefix) :]
        if replacement.endswith("/") and rest.startswith("/"):
            rest = rest[1:]
        joined = replacement + rest if rest else replacement
        return joined or "/"
    return path


@dataclass(slots=True)
class FilterOutcome:
    """What the filters of a rule and backend decided."""

    path: str
    host: str | None = None
    redirect: web.StreamResponse | None = None
    response_filters: tuple[JSON, ...] = ()


def apply_filters(
    filters: Iterable[JSON],
    request: web.Request,
    headers: CIMultiDict[str],
    match: RouteMatch,
    after: FilterOutcome | None = None,
) -> FilterOutcome:
    """Apply ``filters`` in order (``after``: the outcome of the rule's filters, for a backendRef's)."""
    outcome = FilterOutcome(path=after.path, host=after.host) if after else FilterOutcome(path=request.path)
    response_filters: list[JSON] = list(after.response_filters) if after else []
    for spec in filters:
        kind = spec.get("type")
        if kind == "RequestHeaderModifier":
            modify_headers(headers, spec.get("requestHeaderModifier") or {})
        elif kind == "ResponseHeaderModifier":
            response_filters.append(spec.get("responseHeaderModifier") or {})
        elif kind == "URLRewrite":
            rewrite = spec.get("urlRewrite") or {}
            if rewrite.get("hostname"):
                outcome.host = str(rewrite["hostname"])
            if rewrite.get("path"):
                outcome.path = rewrite_path(outcome.path, rewrite["path"], match)
        elif kind == "RequestRedirect":
            outcome.redirect = redirect(request, spec.get("requestRedirect") or {}, match)
            break
    outcome.response_filters = tuple(response_filters)
    return outcome


def redirect(request: web.Request, spec: JSON, match: RouteMatch) -> web.StreamResponse:
    scheme = str(spec.get("scheme") or request.scheme)
    host = str(spec.get("hostname") or request.host.rsplit(":", 1)[0])
    port = spec.get("port")
    if port is None and not spec.get("scheme") and ":" in request.host:
        port = request.host.rsplit(":", 1)[1]
    default_port = {"http": "80", "https": "443"}.get(scheme)
    authority = host if port is None or str(port) == default_port else f"{host}:{port}"
    path = rewrite_path(request.path, spec["path"], match) if spec.get("path") else request.path
    query = f"?{request.query_string}" if request.query_string else ""
    status = int(spec.get("statusCode") or 302)
    return web.Response(status=status, headers={"Location": f"{scheme}://{authority}{path}{query}"})


def edit_response_headers(filters: tuple[JSON, ...]) -> Any:
    """A callback applying ResponseHeaderModifier filters to the relayed answer's headers."""
    if not filters:
        return None

    def edit(headers: CIMultiDict[str]) -> None:
        for spec in filters:
            modify_headers(headers, spec)

    return edit
