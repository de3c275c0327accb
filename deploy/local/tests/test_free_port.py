"""Ports picked for the stack's processes to listen on."""

import os
import socket
import time
from pathlib import Path

from ferry_local.readiness import (
    CLAIM_TTL,
    LISTEN_PORTS,
    _ephemeral_ports,
    claim_port,
    free_port,
    free_port_run,
)


def test_a_picked_port_is_free_and_outside_the_range_outgoing_connections_take() -> None:
    ephemeral = _ephemeral_ports()
    picked = {free_port() for _ in range(20)}
    assert len(picked) > 1  # random, not the same port for every process
    for port in picked:
        assert port in LISTEN_PORTS
        assert port not in ephemeral
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))  # free


def test_a_run_of_ports_is_free_and_avoids_what_it_is_told() -> None:
    first = free_port_run(4, avoid={free_port()})
    with socket.socket() as a, socket.socket() as b:
        a.bind(("127.0.0.1", first))
        b.bind(("127.0.0.1", first + 3))


def test_no_port_is_handed_out_twice_while_its_claim_lasts() -> None:
    # 300 random picks of ~22,000 ports would repeat one with odds of about 6 in 7 without claims
    picked = [free_port() for _ in range(300)]
    assert len(set(picked)) == len(picked)


def test_a_claim_holds_against_every_other_pick_until_it_is_old(tmp_path: Path) -> None:
    assert claim_port(20001, tmp_path)
    assert not claim_port(20001, tmp_path)  # another process's pick (the claim is a file)
    assert claim_port(20002, tmp_path)
    old = time.time() - CLAIM_TTL - 1
    os.utime(tmp_path / "20001", (old, old))
    assert claim_port(20001, tmp_path)  # its process has long bound it, or never will
    assert not claim_port(20001, tmp_path)
