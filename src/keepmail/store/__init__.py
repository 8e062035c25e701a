"""Persistent state: accounts, mailboxes, messages, encrypted blobs, queues.

Importing this package registers every component's schema migrations.
"""

from . import contacts, greylist, quarantine, schema, senderlists  # noqa: F401  (migrations)
from .store import Copy, Store

__all__ = ["Copy", "Store"]
