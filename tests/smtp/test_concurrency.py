"""Many clients at once: 500 concurrent connections each deliver a message."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.smtp.conftest import make_server
from tests.support.server import mailbox_messages


async def _client(host: str, port: int, n: int, start: asyncio.Event) -> int:
    reader, writer = await asyncio.open_connection(host, port)
    await start.wait()

    async def reply() -> int:
        line = await reader.readline()
        while line[3:4] == b"-":
            line = await reader.readline()
        return int(line[:3])

    codes = [await reply()]
    writer.write(b"EHLO c%d.test\r\n" % n)
    codes.append(await reply())
    writer.write(b"MAIL FROM:<c%d@remote.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n" % n)
    codes += [await reply() for _ in range(3)]
    writer.write(b"Message-ID: <%d@remote.test>\r\n\r\nhi\r\n.\r\nQUIT\r\n" % n)
    codes += [await reply(), await reply()]
    writer.close()
    assert codes == [220, 250, 250, 250, 354, 250, 221], codes
    return n


def test_500_concurrent_connections(tmp_path: Path) -> None:
    srv = make_server(tmp_path, smtp={"max_connections_per_ip": 1000})
    try:
        async def main() -> list[int]:
            start = asyncio.Event()
            tasks = [asyncio.create_task(_client(srv.host, srv.port("smtp"), n, start))
                     for n in range(500)]
            await asyncio.sleep(0.5)
            start.set()
            return await asyncio.gather(*tasks)

        done = asyncio.run(main())
        assert len(done) == 500
        stored = mailbox_messages(srv.store, "bob@example.test")
        ids = {m.split(b"Message-ID: ")[1].split(b"\r\n")[0] for m in stored}
        assert len(stored) == 500 and len(ids) == 500
        # Group commit: far fewer commits than messages.
        db = srv.store.db
        assert db.commits < db.writes
    finally:
        srv.stop()


def test_per_ip_connection_limit(tmp_path: Path) -> None:
    import socket

    srv = make_server(tmp_path, smtp={"max_connections_per_ip": 3})
    try:
        socks = [socket.create_connection((srv.host, srv.port("smtp"))) for _ in range(3)]
        for s in socks:
            assert s.recv(100).startswith(b"220")
        extra = socket.create_connection((srv.host, srv.port("smtp")))
        assert extra.recv(100).startswith(b"421 4.7.0")
        for s in [*socks, extra]:
            s.close()
    finally:
        srv.stop()
