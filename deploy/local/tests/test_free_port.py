"""Ports picked for the stack's processes to listen on."""

import socket

from ferry_local.readiness import LISTEN_PORTS, _ephemeral_ports, free_port, free_port_run


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
