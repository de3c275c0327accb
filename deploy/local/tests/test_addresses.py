"""Pod addresses: distinct per pod, never one that a listener holds or another local node locked."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from ferry_local.node.addresses import AddressPool, answers, listening_addresses


def pool(
    lock_dir: Path, busy: frozenset[str] = frozenset(), answering: frozenset[str] = frozenset()
) -> AddressPool:
    return AddressPool(lock_dir, in_use=lambda: set(busy), probe=lambda ip, _port: ip in answering)


def test_stable_per_owner_and_released_addresses_come_back(tmp_path: Path) -> None:
    addresses = pool(tmp_path)
    a = addresses.acquire("a", 8000)
    assert a == "127.0.0.2"
    assert addresses.acquire("a", 8000) == a
    assert addresses.acquire("b", 8000) == "127.0.0.3"
    addresses.release("a")
    assert addresses.acquire("c", 8000) == a


def test_a_restarted_pods_reported_ip_is_kept_when_usable(tmp_path: Path) -> None:
    addresses = pool(tmp_path)
    assert addresses.acquire("old", 8000, preferred="127.0.0.4") == "127.0.0.4"
    assert addresses.acquire("other", 8000, preferred="127.0.0.4") == "127.0.0.2"
    assert addresses.acquire("outside", 8000, preferred="10.1.2.3") == "127.0.0.3"


def test_addresses_with_a_listener_or_an_answer_are_skipped(tmp_path: Path) -> None:
    addresses = pool(tmp_path, busy=frozenset({"127.0.0.2"}), answering=frozenset({"127.0.0.3"}))
    assert addresses.acquire("a", 8000, preferred="127.0.0.3") == "127.0.0.4"


def test_two_nodes_on_one_machine_never_share_an_address(tmp_path: Path) -> None:
    first, second = pool(tmp_path), pool(tmp_path)
    mine = {first.acquire(f"a{i}", 8000) for i in range(3)}
    theirs = {second.acquire(f"b{i}", 8000) for i in range(3)}
    assert not mine & theirs
    first.close()  # a node that stops (or dies: the kernel drops its locks) frees its addresses
    assert second.acquire("late", 8000) == "127.0.0.2"


@pytest.fixture
def listener() -> Iterator[tuple[str, int]]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.2", 0))
        sock.listen()
        yield sock.getsockname()


def test_real_listeners_are_seen(listener: tuple[str, int], tmp_path: Path) -> None:
    ip, port = listener
    assert ip in listening_addresses()
    assert answers(ip, port)
    assert AddressPool(tmp_path).acquire("pod", port) != ip
