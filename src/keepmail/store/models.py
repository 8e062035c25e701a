"""Plain records the store hands to its callers."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

# SPECIAL-USE roles (RFC 6154) every new account gets, with their folder names.
DEFAULT_MAILBOXES: list[tuple[str, str | None]] = [
    ("INBOX", "inbox"),
    ("Sent", "sent"),
    ("Drafts", "drafts"),
    ("Junk", "junk"),
    ("Trash", "trash"),
    ("Archive", "archive"),
]


@dataclass(frozen=True)
class Domain:
    id: int
    name: str


@dataclass(frozen=True)
class Account:
    id: int
    address: str
    domain_id: int
    display_name: str
    disabled: bool
    is_admin: bool
    quota_bytes: int

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Account:
        return cls(row["id"], row["address"], row["domain_id"], row["display_name"],
                   bool(row["disabled"]), bool(row["is_admin"]), row["quota_bytes"])


@dataclass(frozen=True)
class Mailbox:
    id: int
    account_id: int
    name: str
    role: str | None
    uidvalidity: int
    uidnext: int
    highestmodseq: int
    subscribed: bool

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Mailbox:
        return cls(row["id"], row["account_id"], row["name"], row["role"], row["uidvalidity"],
                   row["uidnext"], row["highestmodseq"], bool(row["subscribed"]))


@dataclass(frozen=True)
class Message:
    id: int
    mailbox_id: int
    uid: int
    modseq: int
    flags: frozenset[str]
    internaldate: float
    size: int
    blob_id: int
    trace_id: str
    message_id: str

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Message:
        return cls(row["id"], row["mailbox_id"], row["uid"], row["modseq"],
                   parse_flags(row["flags"]), row["internaldate"], row["size"], row["blob_id"],
                   row["trace_id"], row["message_id"])


def parse_flags(text: str) -> frozenset[str]:
    return frozenset(text.split())


def format_flags(flags: frozenset[str] | set[str]) -> str:
    return " ".join(sorted(flags))


@dataclass(frozen=True)
class Placement:
    """Where one delivered copy landed."""

    account_id: int
    mailbox_id: int
    mailbox_name: str
    uid: int
