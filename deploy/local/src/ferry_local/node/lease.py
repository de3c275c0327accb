"""The node's Lease in ``kube-node-lease``, as a kubelet keeps one: one live local node per node name.

Two local nodes of the same name on one cluster would both bind and run every pod (two engines per
pod, two writers of its status). So a node starts only once it holds its Lease: it takes a Lease that
is free, its own, or expired; while another holder's Lease is still fresh it watches it, and refuses
(:class:`NodeTaken`) as soon as that holder renews it — a node that is alive — or takes it over once
it expires (a node that died without releasing it). It renews while it runs and frees it on stop.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

log = logging.getLogger(__name__)

NAMESPACE = "kube-node-lease"


class NodeTaken(RuntimeError):
    """Another live local node holds this node name on this cluster."""


def _now() -> datetime:
    return datetime.now(UTC)


class NodeLease:
    def __init__(
        self, api: client.ApiClient, node: str, holder: str, *, duration: int = 20, renew_every: float = 4.0
    ) -> None:
        self._leases = client.CoordinationV1Api(api)
        self.node = node
        self.holder = holder
        self.duration = duration
        self.renew_every = renew_every
        self._lease: client.V1Lease | None = None

    def _expired(self, spec: client.V1LeaseSpec) -> bool:
        renewed = spec.renew_time or spec.acquire_time
        seconds = spec.lease_duration_seconds or self.duration
        return renewed is None or _now() > renewed + timedelta(seconds=seconds)

    async def acquire(self) -> None:
        """Hold the Lease, or raise :class:`NodeTaken` when a live node of the same name holds it."""
        watched: tuple[str, object] | None = None  # (holder, renewTime) of a fresh foreign lease
        deadline = asyncio.get_running_loop().time() + self.duration + self.renew_every + 5
        while True:
            try:
                lease = await self._leases.read_namespaced_lease(self.node, NAMESPACE)
            except ApiException as exc:
                if exc.status != 404:
                    raise
                if await self._create():
                    return
                continue
            spec = lease.spec or client.V1LeaseSpec()
            holder = spec.holder_identity
            if not holder or holder == self.holder or self._expired(spec):
                if await self._take(lease):
                    return
                continue
            if watched is not None and watched != (holder, spec.renew_time):
                raise NodeTaken(
                    f"another local node named {self.node!r} is running against this cluster (it holds "
                    f"Lease {NAMESPACE}/{self.node} as {holder!r} and renews it): stop it, or give this "
                    f"one another FERRY_NODE_NAME"
                )
            if asyncio.get_running_loop().time() > deadline:
                raise NodeTaken(f"Lease {NAMESPACE}/{self.node} is held by {holder!r} and never expires")
            if watched is None:
                log.info(
                    "Lease %s/%s is held by %s: waiting for a renewal or expiry", NAMESPACE, self.node, holder
                )
            watched = (holder, spec.renew_time)
            await asyncio.sleep(1.0)

    def _spec(self) -> client.V1LeaseSpec:
        now = _now()
        return client.V1LeaseSpec(
            holder_identity=self.holder,
            lease_duration_seconds=self.duration,
            acquire_time=now,
            renew_time=now,
        )

    async def _create(self) -> bool:
        body = client.V1Lease(
            metadata=client.V1ObjectMeta(name=self.node, namespace=NAMESPACE), spec=self._spec()
        )
        try:
            self._lease = await self._leases.create_namespaced_lease(NAMESPACE, body)
        except ApiException as exc:
            if exc.status == 409:  # created by another node a moment ago: look again
                return False
            raise
        return True

    async def _take(self, lease: client.V1Lease) -> bool:
        """Replace ``lease`` (resourceVersion precondition: lost to a concurrent writer → False)."""
        lease.spec = self._spec()
        try:
            self._lease = await self._leases.replace_namespaced_lease(self.node, NAMESPACE, lease)
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
        return True

    async def renew(self) -> None:
        """Renew once; raise :class:`NodeTaken` when another holder took the Lease meanwhile."""
        assert self._lease is not None
        self._lease.spec.renew_time = _now()
        try:
            self._lease = await self._leases.replace_namespaced_lease(self.node, NAMESPACE, self._lease)
            return
        except ApiException as exc:
            if exc.status != 409:
                raise
        current = await self._leases.read_namespaced_lease(self.node, NAMESPACE)
        holder = current.spec.holder_identity if current.spec else None
        if holder != self.holder:
            raise NodeTaken(f"Lease {NAMESPACE}/{self.node} was taken over by {holder!r}")
        self._lease = current  # renewed on the next tick

    async def keep(self, stop: asyncio.Event) -> None:
        """Renew every ``renew_every`` seconds until ``stop``; a failed renewal is retried next time."""
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), self.renew_every)
                return
            except TimeoutError:
                pass
            try:
                await self.renew()
            except NodeTaken:
                raise
            except Exception as exc:
                log.warning("renewing Lease %s/%s failed: %r", NAMESPACE, self.node, exc)

    async def release(self) -> None:
        """Free the Lease so the next node of this name starts at once."""
        if self._lease is None:
            return
        self._lease.spec.holder_identity = None  # type: ignore[assignment]  # null frees the Lease
        try:
            await self._leases.replace_namespaced_lease(self.node, NAMESPACE, self._lease)
        except Exception as exc:  # expired by itself after lease_duration_seconds anyway
            log.warning("releasing Lease %s/%s failed: %r", NAMESPACE, self.node, exc)
        self._lease = None
