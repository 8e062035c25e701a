"""The MX port served by several processes (`[smtp] mx_processes`).

Why: Python runs one CPU core per process, and a busy MX is CPU-bound in
the SMTP dialogue itself (bench/mx_bench.py; docs/architecture.md has the
figures). As in Postfix, where a master process starts many smtpd processes,
the main process (`keepmail serve`) runs every service, its own MX listener
included, and starts N-1 MX workers (`keepmail mx-worker`). Each serves the
same port (SO_REUSEPORT: the kernel spreads new connections between them) with
the same checks, its own connection to the store (the store orders writers of
several processes with its file lock and group-commits in each) and its own
connection to the flight recorder.

What only the main process can act on travels back over a socket pair, one
JSON line per fact:

    {"mailboxes": [ids]}              new mail there: IDLE sessions wake
    {"inbox": [account_id, sender]}   a correspondent, for the abuse guard
    {"queued": msg_id}                a forward for the delivery agent

None of them carries mail: the mail is in the store before the 250, and the
agent's queue scan would find a forward without the hint.

The main process restarts a worker that dies. A worker whose main process is
gone, even killed, stops accepting and finishes the sessions it has.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import App

log = logging.getLogger("keepmail.mxworkers")

# How often a worker looks for a newer spam model saved by the main process's learner.
MODEL_CHECK_SECONDS = 15.0
RESTART_DELAY = 1.0


def share(limit: int, processes: int) -> int:
    """One process's part of a limit that holds for all of them together."""
    return max(1, math.ceil(limit / processes)) if limit > 0 else limit


# -- the main process's side --------------------------------------------------
class MxWorkers:
    """Starts, watches and stops the extra MX processes (an App service)."""

    def __init__(self, config_path: Path, port_offset: int, count: int, *,
                 on_mailboxes: Callable[[list[int]], None],
                 on_inbox: Callable[[int, str], None],
                 on_queued: Callable[[int], None]) -> None:
        self.config_path = config_path
        self.port_offset = port_offset
        self.count = count
        self.handlers: dict[str, Callable[[Any], None]] = {
            "mailboxes": lambda v: on_mailboxes([int(i) for i in v]),
            "inbox": lambda v: on_inbox(int(v[0]), str(v[1])),
            "queued": lambda v: on_queued(int(v)),
        }
        self._closing = False
        self._procs: dict[int, asyncio.subprocess.Process] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        for index in range(self.count):
            await self._spawn(index)

    async def _spawn(self, index: int) -> None:
        ours, theirs = socket.socketpair()
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "keepmail.cli", "mx-worker",
                "--config", str(self.config_path), "--port-offset", str(self.port_offset),
                "--parent-fd", str(theirs.fileno()), pass_fds=(theirs.fileno(),))
        finally:
            theirs.close()
        self._procs[index] = proc
        reader, writer = await asyncio.open_connection(sock=ours)
        self._track(self._listen(reader, writer))
        self._track(self._watch(index, proc))

    def _track(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _listen(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                self._handle(line)
        finally:
            writer.close()

    def _handle(self, line: bytes) -> None:
        try:
            fact = json.loads(line)
            for key, value in fact.items():
                self.handlers[key](value)
        except Exception as exc:  # a hint lost is a hint lost; never the listener
            log.warning("bad message from an MX worker: %r (%s)", line[:200], exc)

    async def _watch(self, index: int, proc: asyncio.subprocess.Process) -> None:
        code = await proc.wait()
        if self._closing:
            return
        log.warning("MX worker %d (pid %d) exited with %s; starting a new one", index,
                    proc.pid, code)
        await asyncio.sleep(RESTART_DELAY)
        if not self._closing:
            await self._spawn(index)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs.values() if p.returncode is None]

    async def close(self) -> None:
        """SIGTERM every worker and wait while they finish their sessions."""
        self._closing = True
        for proc in self._procs.values():
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        for proc in self._procs.values():
            try:
                await asyncio.wait_for(proc.wait(), 90)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        for task in list(self._tasks):
            task.cancel()


# -- a worker's side -------------------------------------------------------------
class ParentLink:
    """The worker's end of the socket pair: tells the main process what it must know.

    Stands in for the store's change hub (publish) and for the delivery agent
    as far as the MX forwarder needs one (notify_threadsafe).
    """

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        # Facts of one loop turn, sent together in one write: a busy worker would
        # otherwise write (and wake the main process) twice for every message.
        self._mailboxes: set[int] = set()
        self._others: dict[str, Any] = {}  # JSON line -> None, ordered, without repeats
        self._flush_scheduled = False

    def _add(self, mailbox_ids: tuple[int, ...] = (), line: str = "") -> None:
        """On the loop thread: queue facts for the end of this loop turn."""
        self._mailboxes.update(mailbox_ids)
        if line:
            self._others[line] = None
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _queue(self, mailbox_ids: tuple[int, ...] = (), line: str = "") -> None:
        if threading.get_ident() == self._loop_thread:
            self._add(mailbox_ids, line)
        else:
            self.loop.call_soon_threadsafe(self._add, mailbox_ids, line)

    def _flush(self) -> None:
        self._flush_scheduled = False
        lines = list(self._others)
        if self._mailboxes:
            lines.insert(0, json.dumps({"mailboxes": sorted(self._mailboxes)}))
        self._mailboxes.clear()
        self._others.clear()
        if lines and not self.writer.is_closing():
            self.writer.write("".join(f"{line}\n" for line in lines).encode())

    def publish(self, *mailbox_ids: int) -> None:
        if mailbox_ids:
            self._queue(mailbox_ids)

    def inbox(self, account_id: int, sender: str) -> None:
        self._queue(line=json.dumps({"inbox": [account_id, sender]}))

    def notify_threadsafe(self, msg_id: int) -> None:
        self._queue(line=json.dumps({"queued": msg_id}))


class ReloadingClassifier:
    """The spam model as the main process's learner last saved it."""

    def __init__(self, path: Path) -> None:
        from .spam.classifier import Classifier

        self._open = Classifier.open
        self.path = path
        self.current = Classifier.open(path)
        self._stamp = self._mtime()
        self._checked = time.monotonic()

    def _mtime(self) -> float:
        try:
            return self.path.stat().st_mtime
        except OSError:
            return 0.0

    def refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked < MODEL_CHECK_SECONDS:
            return
        self._checked = now
        stamp = self._mtime()
        if stamp != self._stamp:
            self._stamp = stamp
            self.current = self._open(self.path)

    def __getattr__(self, name: str) -> Any:
        self.refresh()
        return getattr(self.current, name)


async def serve_worker(app: App, parent_fd: int) -> None:
    """Run one MX worker until its main process goes or it is told to stop."""
    from .outbound.forwarding import make_forwarder, srs_secret
    from .smtp.server import SmtpServer

    reader, writer = await asyncio.open_connection(sock=socket.socket(fileno=parent_fd))
    link = ParentLink(writer)
    cfg = app.config
    app.store.ensure_schema()
    app.store.hub = link  # type: ignore[assignment]
    app.classifier = ReloadingClassifier(cfg.data_dir / "spam" / "model.bin")
    app.forwarder = make_forwarder(link, srs_secret(app.store.data_dir))  # type: ignore[arg-type]
    port = cfg.port("smtp", app.port_offset)
    handler = app.mx_handler()
    handler.on_inbox = link.inbox
    app.add("smtp", port, SmtpServer(app.mx_listener(port), handler,
                                     hostname=cfg.server.hostname, recorder=app.recorder,
                                     tls_context=app.tls_context))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async def parent_gone() -> None:
        try:
            while await reader.read(4096):
                pass
        except OSError:
            # A main process killed with our facts unread resets the socket pair
            # (ECONNRESET): gone all the same. Left uncaught, the worker ran on alone.
            pass
        finally:
            stop.set()

    watcher = loop.create_task(parent_gone())
    await app.start()
    try:
        await stop.wait()
    finally:
        watcher.cancel()
        await app.stop()
        writer.close()
