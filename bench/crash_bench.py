"""Crash endurance: SIGKILL keepmail under load many times; nothing acknowledged is lost.

Senders deliver as fast as they can over several connections while the server is
killed with SIGKILL and restarted, again and again. At the end every Message-ID
that got a 250 must be in the mailbox exactly once. Prints the counts.

    python bench/crash_bench.py [--kills 20] [--senders 8]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.e2e.test_crash import Sender, message_ids, start_server  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--senders", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--mx-processes", type=int, default=1,
                        help="[smtp] mx_processes (SIGKILL hits the main process; its "
                        "workers must stop and their acknowledged mail must be there)")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="crash-bench-") as tmp:
        server, cfg = start_server(Path(tmp), args.mx_processes)
        senders = [Sender(server.host, 25 + server.port_offset, f"s{i}")
                   for i in range(args.senders)]
        for s in senders:
            s.start()
        started = time.monotonic()
        for _ in range(args.kills):
            time.sleep(rng.uniform(0.2, 1.5))
            server.kill()
            server.start()
        time.sleep(1)
        for s in senders:
            s.stop.set()
        for s in senders:
            s.join(10)
        server.terminate()
        elapsed = time.monotonic() - started
        acked = [mid for s in senders for mid in s.acked]
        stored = message_ids(cfg)
        counts: dict[str, int] = {}
        for mid in stored:
            counts[mid] = counts.get(mid, 0) + 1
        lost = sum(1 for mid in acked if counts.get(mid, 0) == 0)
        duplicated = sum(1 for n in counts.values() if n > 1)
        print(f"{args.kills} SIGKILLs in {elapsed:.1f} s, {args.senders} senders, "
              f"mx_processes = {args.mx_processes}")
        print(f"acknowledged: {len(acked)}  stored: {len(stored)}  "
              f"stored without ack (crash between commit and reply): {len(stored) - len(acked) + lost}")
        print(f"LOST: {lost}  DUPLICATED: {duplicated}")
        sys.exit(1 if lost or duplicated else 0)


if __name__ == "__main__":
    main()
