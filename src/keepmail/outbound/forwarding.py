"""Forwarding for the MX: aliases that point outside go out through the queue.

The envelope sender is rewritten with SRS (keepmail.mailauth.srs) in the
alias's domain, so the next hop's SPF check (RFC 7208) sees our servers
rather than failing the original sender's domain, and a bounce comes back to
us; the agent turns a DSN for an SRS address into one for the original
sender. The SRS secret lives in <data_dir>/keys/srs.key (mode 0600).
TODO(arc): ARC-seal forwarded mail (RFC 8617) with keepmail.mailauth.arc at
delivery time; it needs the MX's Authentication-Results and an async
resolver, which the forwarder (running inside the store's transaction) has not.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

from ..mailauth.srs import Srs, SrsError
from ..store import blobs
from ..store import queue as q

if TYPE_CHECKING:
    from ..inbound.mx import CheckContext, Forwarder
    from .agent import DeliveryAgent


def srs_secret(data_dir: Path) -> bytes:
    """The SRS HMAC key, created (0600) on first use."""
    path = data_dir / "keys" / "srs.key"
    if path.exists():
        return bytes.fromhex(path.read_text().strip())
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = secrets.token_bytes(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:          # another process made it first
        return bytes.fromhex(path.read_text().strip())
    with os.fdopen(fd, "w") as f:
        f.write(key.hex() + "\n")
        f.flush()
        os.fsync(f.fileno())
    return key


def is_srs(address: str) -> bool:
    return address[:5].upper() in ("SRS0=", "SRS1=")


def reverse(secret: bytes, address: str) -> str | None:
    """The original sender behind one of our SRS addresses, or None."""
    if not is_srs(address):
        return None
    try:
        return Srs(secret, address.rpartition("@")[2]).reverse(address)
    except SrsError:
        return None


def make_forwarder(agent: DeliveryAgent, secret: bytes | None = None) -> Forwarder:
    """The MX's Forwarder: queue a received message for remote alias targets.

    Runs in the store's writer thread inside the delivery transaction, so it
    only writes rows; the agent is told on the event loop once they are visible.
    """
    def forward(conn: sqlite3.Connection, blob_id: int, ctx: CheckContext,
                targets: list[str]) -> None:
        env = ctx.envelope
        sender = env.sender.address
        if secret is not None and sender and env.rcpts:
            try:
                sender = Srs(secret, env.rcpts[0].domain.lower()).forward(sender)
            except SrsError:
                pass                 # not rewritable: forward with the original sender
        msg_id = q.enqueue(conn, blob_id, blobs.size(conn, blob_id), sender, targets,
                           kind="forward", trace_id=env.trace_id,
                           smtputf8=env.smtputf8 or not all(t.isascii() for t in targets),
                           body_8bit=not ctx.message.isascii())
        # Until the agent runs, the next queue scan after start picks the rows up.
        agent.notify_threadsafe(msg_id)

    return forward
