"""HTTPRoute matching on one Gateway listener (Gateway API's precedence rules).

Every (route, rule, match, effective hostname) attached to a listener becomes one
:class:`Candidate`, compiled once per change of the Gateway objects and sorted by the API's
precedence: most specific hostname, then Exact path, then the longest PathPrefix (regular
expressions last), then a method match, then more header matches, then more query matches, then
the oldest route (ties by namespace/name), then rule and match order. A request takes the first
candidate whose hostname, path, method, headers and query parameters all match.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from ferry_schemas.gateway.objects import RouteMatch, RouteRule
from ferry_schemas.gateway.view import (
    ListenerState,
    Resolution,
    RouteState,
    hostname_matches,
    intersect_hostnames,
)


@dataclass(frozen=True, slots=True)
class ValueMatch:
    name: str
    exact: str | None
    regex: re.Pattern[str] | None

    def matches(self, value: str | None) -> bool:
        if value is None:
            return False
        if self.regex is not None:
            return self.regex.fullmatch(value) is not None
        return value == self.exact


@dataclass(frozen=True, slots=True)
class Candidate:
    route: RouteState
    rule: RouteRule
    match: RouteMatch
    hostname: str | None  # None = any host
    path_regex: re.Pattern[str] | None
    headers: tuple[ValueMatch, ...]
    query: tuple[ValueMatch, ...]

    @property
    def route_key(self) -> str:
        return self.route.route.ref.key

    def path_matches(self, path: str) -> bool:
        kind, value = self.match.path_type, self.match.path
        if kind == "Exact":
            return path == value
        if kind == "RegularExpression":
            return self.path_regex is not None and self.path_regex.fullmatch(path) is not None
        prefix = value.rstrip("/")
        return not prefix or path == prefix or path.startswith(prefix + "/")

    def matches(
        self, host: str, method: str, path: str, headers: Mapping[str, str], query: Mapping[str, str]
    ) -> bool:
        if self.hostname is not None and not hostname_matches(self.hostname, host):
            return False
        if self.match.method is not None and method != self.match.method:
            return False
        if not self.path_matches(path):
            return False
        if not all(h.matches(headers.get(h.name)) for h in self.headers):
            return False
        return all(q.matches(query.get(q.name)) for q in self.query)

    def precedence(self) -> tuple[object, ...]:
        host = self.hostname
        host_rank = (
            (2, 0) if host is None else ((1, -len(host)) if host.startswith("*.") else (0, -len(host)))
        )
        path_rank = {"Exact": 0, "PathPrefix": 1}.get(self.match.path_type, 2)
        ref = self.route.route.ref
        return (
            host_rank,
            path_rank,
            -len(self.match.path),
            0 if self.match.method else 1,
            -len(self.headers),
            -len(self.query),
            ref.age_key,
            self.rule.index,
            self.rule.matches.index(self.match),
        )


def _value_match(kind: str, name: str, value: str) -> ValueMatch:
    if kind == "RegularExpression":
        return ValueMatch(name, None, re.compile(value))
    return ValueMatch(name, value, None)


def compile_listener(resolution: Resolution, listener: ListenerState) -> list[Candidate]:
    """The sorted candidates of every accepted HTTPRoute attached to ``listener``."""
    out: list[Candidate] = []
    for state in resolution.routes.values():
        if not any(p.accepted.ok and listener in p.listeners for p in state.parents):
            continue
        hostnames = intersect_hostnames(listener.listener.hostname, state.route.hostnames)
        if hostnames is None:
            continue
        for rule in state.route.rules:
            for match in rule.matches:
                try:
                    path_regex = re.compile(match.path) if match.path_type == "RegularExpression" else None
                    headers = tuple(_value_match(k, n, v) for k, n, v in match.headers)
                    query = tuple(_value_match(k, n, v) for k, n, v in match.query)
                except re.error:
                    continue  # an invalid expression never matches
                for hostname in hostnames or (None,):
                    out.append(Candidate(state, rule, match, hostname, path_regex, headers, query))
    out.sort(key=Candidate.precedence)
    return out


class HTTPRouteIndex:
    """Compiled candidates per listener for one :class:`Resolution` (rebuilt when it changes)."""

    def __init__(self, resolution: Resolution) -> None:
        self.resolution = resolution
        self._by_listener: dict[tuple[str, str], list[Candidate]] = {}

    def candidates(self, listener: ListenerState) -> list[Candidate]:
        key = (listener.gateway, listener.listener.name)
        found = self._by_listener.get(key)
        if found is None:
            found = self._by_listener[key] = compile_listener(self.resolution, listener)
        return found

    def match(
        self,
        listener: ListenerState,
        host: str,
        method: str,
        path: str,
        headers: Mapping[str, str],
        query: Mapping[str, str],
    ) -> Candidate | None:
        for candidate in self.candidates(listener):
            if candidate.matches(host, method, path, headers, query):
                return candidate
        return None


def select_listener(listeners: list[ListenerState], host: str) -> ListenerState | None:
    """Kthena's listener selection on a shared port: exact hostname, then the longest matching
    wildcard, then a listener without hostname (``listeners`` is sorted that way)."""
    return next((x for x in listeners if x.host_matches(host)), None)
