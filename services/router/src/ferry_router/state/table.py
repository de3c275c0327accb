"""The routing table: routes by model name, servers, and each server's ready endpoints.

Level-triggered: every event carries a whole object and the table recomputes what depends on it
(a server's endpoint set, a pod's memberships), so applying the same event twice or an old state
after a new one leaves a consistent table. Endpoints are shared per pod across servers, so scraped
metrics and in-flight counts belong to the pod, not to one server.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ferry_schemas.selection import SelectorIndex

from ferry_router.state.observed_latency import ObservedLatency
from ferry_router.state.providers import ProviderTable
from ferry_router.state.resources import Pod, Route, Server, parse_pod, parse_route, parse_server

log = logging.getLogger(__name__)


@dataclass(slots=True)
class EndpointMetrics:
    """One engine's load (spec §2.3): pushed by its runtime sidecar or scraped by the router.

    ``source`` says which ("": none yet), ``updated`` when (``time.monotonic``). Load older than the
    stale limit is cleared to "unknown" (zeros, ``stale``) -- what an engine never measured reads as:
    the load scorers then judge it by the router's own in-flight count alone.
    """

    kv_cache_usage: float = 0.0
    waiting: float = 0.0
    running: float = 0.0
    ttft: float = 0.0  # mean over the last interval that had samples (seconds)
    tpot: float = 0.0
    ttft_load: float = 0.0  # running + waiting at the reading that brought that interval's samples
    tpot_load: float = 0.0
    ttft_hist: tuple[float, float] | None = None  # (sum, count) at the previous scrape
    tpot_hist: tuple[float, float] | None = None
    models: frozenset[str] | None = None  # ids from /v1/models; None = not scraped yet
    base_models: tuple[str, ...] = ()  # the ids that are not LoRA adapters (no ``parent``), in order
    scraped: bool = False
    failures: int = 0  # scrapes failed in a row
    source: str = ""  # "push" (the sidecar on the bus) or "scrape"
    updated: float = 0.0  # time.monotonic() of the reading (0: never)
    pushed: float = 0.0  # time.monotonic() of the newest pushed reading, taken or not (0: never)
    stale: bool = False
    inflight_at_sample: int = 0  # the router's in-flight count there when this reading arrived

    def forget_load(self) -> None:
        """The load is too old to mean anything: unknown, as for an engine never measured."""
        self.kv_cache_usage = self.waiting = self.running = self.ttft = self.tpot = 0.0
        self.ttft_load = self.tpot_load = 0.0
        self.ttft_hist = self.tpot_hist = None
        self.inflight_at_sample = 0
        self.stale = True


@dataclass(slots=True)
class Endpoint:
    """One ready pod as a place to send requests."""

    pod: Pod
    port: int  # scrape port: the first owning server's workload port
    engine: str
    metrics: EndpointMetrics = field(default_factory=EndpointMetrics)
    inflight: int = 0
    servers: set[str] = field(default_factory=set)
    latency: ObservedLatency = field(default_factory=ObservedLatency)  # measured on relayed streams
    key: str = field(init=False, repr=False)  # the pod's ``namespace/name``, read per candidate

    def __post_init__(self) -> None:
        self.key = self.pod.key  # a later ``pod`` is the same pod's next version: the same key

    @property
    def unsampled(self) -> int:
        """Requests this router sent there (net of those it saw end) since the load was read:
        what the engine's gauges cannot show yet. All of ``inflight`` when the load is unknown."""
        return self.inflight - self.metrics.inflight_at_sample

    @property
    def name(self) -> str:
        return self.pod.name


@dataclass(slots=True)
class PDSets:
    """Prefill/decode categorisation of one PD server's endpoints (spec §2.2)."""

    decode: list[Endpoint] = field(default_factory=list)
    prefill_by_group: dict[str, list[Endpoint]] = field(default_factory=dict)
    group_of: dict[str, str] = field(default_factory=dict)  # pod key -> group value

    def prefill_for(self, decode: Endpoint) -> list[Endpoint]:
        group = self.group_of.get(decode.key)
        return self.prefill_by_group.get(group, []) if group is not None else []

    @property
    def prefill(self) -> list[Endpoint]:
        return [e for group in self.prefill_by_group.values() for e in group]


RouteListener = Callable[[str, Route | None], None]
EndpointListener = Callable[[Endpoint], None]


class RoutingTable:
    """Routes, servers, pods and the derived endpoint sets, mutated only by ``apply_*``."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.by_model: dict[str, list[Route]] = {}
        self.by_lora: dict[str, list[Route]] = {}
        self.servers: dict[str, Server] = {}
        self.selectors: SelectorIndex[None] = SelectorIndex()  # the servers' matchLabels, by pod labels
        self.pods: dict[str, Pod] = {}
        self.pods_by_ns: dict[str, dict[str, Pod]] = {}
        # (namespace, label, value) -> pod key -> pod: a server event reads its smallest posting list
        # instead of every pod of the namespace
        self.pods_by_label: dict[tuple[str, str, str], dict[str, Pod]] = {}
        self.endpoints: dict[str, Endpoint] = {}  # pod key -> endpoint
        self.members: dict[str, dict[str, Endpoint]] = {}  # server key -> pod key -> endpoint
        self.pd: dict[str, PDSets] = {}  # server key -> PD sets
        self.invalid: dict[str, str] = {}  # object key -> why it was refused
        self.providers = ProviderTable()  # ExternalModelProviders and their credentials
        self.route_listeners: list[RouteListener] = []
        self.endpoint_added: list[EndpointListener] = []
        self.endpoint_removed: list[EndpointListener] = []

    # ------------------------------------------------------------------ routes

    def apply_route(self, key: str, obj: dict[str, object] | None) -> None:
        """Add, replace (``obj``) or remove (``None``) the ModelRoute ``key`` (``ns/name``)."""
        old = self.routes.pop(key, None)
        if old is not None:
            self._unindex(old)
        self.invalid.pop(f"modelroutes/{key}", None)
        route = None
        if obj is not None:
            try:
                route = parse_route(obj)
            except (ValueError, KeyError, TypeError) as exc:
                self.invalid[f"modelroutes/{key}"] = str(exc)
                log.warning("ModelRoute %s refused: %s", key, exc)
        if route is not None:
            self.routes[key] = route
            self._index(route)
        for listener in self.route_listeners:
            listener(key, route)

    def _index(self, route: Route) -> None:
        names = [(self.by_model, route.model_name)] if route.model_name else []
        names += [(self.by_lora, lora) for lora in route.lora_adapters]
        for index, name in names:
            bucket = index.setdefault(name, [])
            bucket.append(route)
            bucket.sort(key=lambda r: r.age_key)

    def _unindex(self, route: Route) -> None:
        for index, name in [
            (self.by_model, route.model_name),
            *((self.by_lora, x) for x in route.lora_adapters),
        ]:
            bucket = index.get(name)
            if bucket is None:
                continue
            bucket[:] = [r for r in bucket if r.key != route.key]
            if not bucket:
                del index[name]

    def model_names(self) -> list[str]:
        """Every routable name (model names and LoRA adapters), sorted, without duplicates."""
        return sorted(set(self.by_model) | set(self.by_lora))

    def known_model(self, name: str) -> bool:
        return name in self.by_model or name in self.by_lora

    # ------------------------------------------------------------------ servers

    def apply_server(self, key: str, obj: dict[str, object] | None) -> None:
        self.invalid.pop(f"modelservers/{key}", None)
        server = None
        if obj is not None:
            try:
                server = parse_server(obj)
            except (ValueError, KeyError, TypeError) as exc:
                self.invalid[f"modelservers/{key}"] = str(exc)
                log.warning("ModelServer %s refused: %s", key, exc)
        self.set_server(key, server)

    def set_server(self, key: str, server: Server | None) -> None:
        """Add, replace or remove an endpoint group: a ModelServer, or an InferencePool compiled to
        the same record (gateway mode), so both share membership, scraping and PD categorisation."""
        if server is None:
            self.servers.pop(key, None)
            self.selectors.remove(key)
            for endpoint in list(self.members.pop(key, {}).values()):
                self._detach(endpoint, key)
            self.pd.pop(key, None)
            return
        self.servers[key] = server
        self.selectors.put(key, server.namespace, dict(server.match_labels), None)
        wanted = {
            pod.key: pod for pod in self._selectable(server) if pod.ready and server.selects(pod.labels)
        }
        current = self.members.setdefault(key, {})
        for pod_key in [k for k in current if k not in wanted]:
            self._detach(current.pop(pod_key), key)
        for pod_key, pod in wanted.items():
            if pod_key not in current:
                current[pod_key] = self._attach(pod, server)
        self._recategorise(server)

    def _selectable(self, server: Server) -> Iterable[Pod]:
        """A superset of the pods ``server`` selects: those carrying its rarest matchLabel (every pod
        of the namespace for an empty selector), so a server event costs its matches, not the fleet."""
        if not server.match_labels:
            return self.pods_by_ns.get(server.namespace, {}).values()
        postings = [self.pods_by_label.get((server.namespace, k, v), {}) for k, v in server.match_labels]
        return min(postings, key=len).values()

    def _index_pod(self, pod: Pod, add: bool) -> None:
        for label, value in pod.labels.items():
            posting_key = (pod.namespace, label, value)
            if add:
                self.pods_by_label.setdefault(posting_key, {})[pod.key] = pod
            elif (posting := self.pods_by_label.get(posting_key)) is not None:
                posting.pop(pod.key, None)
                if not posting:
                    del self.pods_by_label[posting_key]

    # ------------------------------------------------------------------ pods

    def apply_pod(self, key: str, obj: dict[str, object] | None) -> None:
        pod = None
        if obj is not None:
            try:
                pod = parse_pod(obj)
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("Pod %s ignored: %s", key, exc)
        old = self.pods.pop(key, None)
        if old is not None:
            self.pods_by_ns.get(old.namespace, {}).pop(key, None)
            self._index_pod(old, add=False)
        if pod is not None:
            self.pods[key] = pod
            self.pods_by_ns.setdefault(pod.namespace, {})[key] = pod
            self._index_pod(pod, add=True)
        # the servers that select the pod now, and those that held it before (which may not any more)
        candidates = (
            set() if pod is None else {k for k, _ in self.selectors.matching(pod.namespace, pod.labels)}
        )
        held = self.endpoints.get(key)
        if held is not None:
            candidates |= held.servers
        touched: list[Server] = []
        for server_key in sorted(candidates):
            server = self.servers.get(server_key)
            if server is None:
                continue
            members = self.members.setdefault(server.key, {})
            belongs = pod is not None and pod.ready and server.selects(pod.labels)
            if belongs and pod is not None:
                endpoint = members.get(key)
                if endpoint is None:
                    members[key] = self._attach(pod, server)
                else:
                    endpoint.pod = pod  # labels or IP may have changed; metrics are kept
                touched.append(server)
            elif key in members:
                self._detach(members.pop(key), server.key)
                touched.append(server)
        for server in touched:
            self._recategorise(server)

    def _attach(self, pod: Pod, server: Server) -> Endpoint:
        endpoint = self.endpoints.get(pod.key)
        if endpoint is None:
            endpoint = Endpoint(pod=pod, port=server.port, engine=server.engine)
            self.endpoints[pod.key] = endpoint
            endpoint.servers.add(server.key)
            for listener in self.endpoint_added:
                listener(endpoint)
        else:
            endpoint.pod = pod
            endpoint.servers.add(server.key)
        return endpoint

    def _detach(self, endpoint: Endpoint, server_key: str) -> None:
        endpoint.servers.discard(server_key)
        if not endpoint.servers:
            self.endpoints.pop(endpoint.key, None)
            for listener in self.endpoint_removed:
                listener(endpoint)

    def _recategorise(self, server: Server) -> None:
        if server.pd_group is None:
            self.pd.pop(server.key, None)
            return
        pd = server.pd_group
        sets = PDSets()
        for endpoint in sorted(self.members.get(server.key, {}).values(), key=lambda e: e.key):
            labels = endpoint.pod.labels
            group = labels.get(pd.group_key)
            if group is None:
                continue
            if all(labels.get(k) == v for k, v in pd.decode_labels):
                sets.decode.append(endpoint)
                sets.group_of[endpoint.key] = group
            elif all(labels.get(k) == v for k, v in pd.prefill_labels):
                sets.prefill_by_group.setdefault(group, []).append(endpoint)
                sets.group_of[endpoint.key] = group
        self.pd[server.key] = sets

    # ------------------------------------------------------------------ lookups

    def server_endpoints(self, key: str) -> list[Endpoint]:
        return list(self.members.get(key, {}).values())

    def all_endpoints(self) -> Iterable[Endpoint]:
        return self.endpoints.values()

    def endpoints_copy(self) -> list[Endpoint]:
        """A copy of the endpoints, safe to take from another thread (the scraper's) while the
        request loop mutates the table."""
        while True:
            try:
                return list(self.endpoints.values())
            except RuntimeError:  # the dict changed size during the copy: take it again
                continue
