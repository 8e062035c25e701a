"""Child process for the crash test: one organization serving submission and
delivering, until the test kills it with SIGKILL.

usage: python -m tests.outbound.crash_child DIR HOST NAMESERVER REMOTE_PORT CA_CERT CA_KEY
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from .conftest import CA, FAST, Org, with_settings


async def main(argv: list[str]) -> None:
    directory, host, nameserver, port, ca_cert, ca_key = argv
    org = Org("a", host, "a.test", Path(directory),
              with_settings(FAST, remote_port=int(port)), nameserver)
    org.open(["alice@a.test"])
    await org.start(CA(Path(ca_cert), Path(ca_key)))
    print(org.port, flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
