"""The load reader's NATS protocol parser (``Wire.data_received``): frames cut at any byte boundary
come out whole, control lines are answered (PING, flow control, a stalled consumer), and replies
and heartbeats are not taken for load."""

from __future__ import annotations

import asyncio

from ferry_router.state.load_wire import Wire


class Transport:
    """What the wire writes (a stand-in for the socket)."""

    def __init__(self) -> None:
        self.written = b""

    def write(self, data: bytes) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return False


def hmsg(sid_reply: bytes, headers: bytes, payload: bytes = b"") -> bytes:
    size = len(headers) + len(payload)
    return b"HMSG _INBOX_router.t.d %s %d %d\r\n%s%s\r\n" % (sid_reply, len(headers), size, headers, payload)


STREAM = (
    b'INFO {"server_id":"x","headers":true}\r\n'
    b"MSG _INBOX_router.t.d 1 $JS.ACK.FERRY_LOAD.c.1.1.1.1.0 5\r\nfirst\r\n"
    b"PING\r\n"
    + hmsg(b"1 $JS.FC.FERRY_LOAD.abc", b"NATS/1.0 100 FlowControl Request\r\n\r\n")
    + hmsg(b"1", b"NATS/1.0 100 Idle Heartbeat\r\nNats-Consumer-Stalled: $JS.FC.s\r\n\r\n")
    # nats-server 2.9 writes a heartbeat's missing reply as an empty field: two spaces, nothing to answer
    + hmsg(b"1 ", b"NATS/1.0 100 Idle Heartbeat\r\nNats-Last-Consumer: 0\r\nNats-Last-Stream: 0\r\n\r\n")
    + b"MSG _INBOX_router.t.d 1 $JS.ACK.FERRY_LOAD.c.1.2.2.1.0 12\r\nsecond\r\nline\r\n"
    + hmsg(b"1 $JS.ACK.FERRY_LOAD.c.1.3.3.1.0", b"NATS/1.0\r\nX-Trace: 1\r\n\r\n", b"third")
    + b"MSG _INBOX_router.t.r 2 6\r\nreply!\r\n"  # the consumer-create answer: no one waits here
    + b"+OK\r\nPONG\r\n"
)


async def parse(chunk: int) -> tuple[Wire, list[bytes], bytes]:
    got: list[bytes] = []
    wire = Wire(got.append)
    transport = Transport()
    wire.connection_made(transport)  # type: ignore[arg-type]
    wire.outstanding_pings = 1
    for at in range(0, len(STREAM), chunk):
        wire.data_received(STREAM[at : at + chunk])
    return wire, got, transport.written


def test_frames_split_anywhere_come_out_whole_and_control_lines_are_answered() -> None:
    for chunk in (1, 2, 3, 7, 64, len(STREAM)):
        wire, got, written = asyncio.run(parse(chunk))
        assert got == [b"first", b"second\r\nline", b"third"], chunk
        assert written == (b"PONG\r\nPUB $JS.FC.FERRY_LOAD.abc 0\r\n\r\nPUB $JS.FC.s 0\r\n\r\n"), (
            chunk
        )  # PING answered, flow control and the stalled consumer released
        assert wire.info.result() == {"server_id": "x", "headers": True}
        assert wire.outstanding_pings == 0  # the server's PONG
