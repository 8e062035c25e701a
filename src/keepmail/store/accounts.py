"""Domains, accounts, aliases and app passwords (synchronous SQL functions).

Addresses are stored lower-cased: keepmail treats local parts as
case-insensitive, as nearly every mail system does in practice.
"""

from __future__ import annotations

import sqlite3
import time

from .mail import create_mailbox, set_subscribed
from .models import DEFAULT_MAILBOXES, Account, Domain


class StoreError(Exception):
    """A request the store refuses, with a message for the operator."""


def normalize_address(address: str) -> str:
    address = address.strip()
    if address.startswith("<") and address.endswith(">"):
        address = address[1:-1]
    local, sep, domain = address.rpartition("@")
    if not sep:
        return address.lower()
    return f"{local.lower()}@{domain.lower().rstrip('.')}"


def split_address(address: str) -> tuple[str, str]:
    local, _, domain = address.rpartition("@")
    return local, domain


# -- domains ----------------------------------------------------------------
def add_domain(conn: sqlite3.Connection, name: str) -> Domain:
    name = name.strip().lower().rstrip(".")
    if not name or "@" in name or " " in name:
        raise StoreError(f"{name!r} is not a domain name")
    try:
        cur = conn.execute("INSERT INTO domains(name, created) VALUES (?, ?)", (name, time.time()))
    except sqlite3.IntegrityError:
        raise StoreError(f"domain {name} already exists") from None
    return Domain(int(cur.lastrowid or 0), name)


def list_domains(conn: sqlite3.Connection) -> list[Domain]:
    return [Domain(r["id"], r["name"]) for r in
            conn.execute("SELECT id, name FROM domains ORDER BY name")]


def get_domain(conn: sqlite3.Connection, name: str) -> Domain | None:
    row = conn.execute("SELECT id, name FROM domains WHERE name = ?",
                       (name.lower().rstrip("."),)).fetchone()
    return Domain(row["id"], row["name"]) if row else None


def delete_domain(conn: sqlite3.Connection, name: str) -> None:
    domain = get_domain(conn, name)
    if domain is None:
        raise StoreError(f"no domain {name}")
    users = conn.execute("SELECT COUNT(*) FROM accounts WHERE domain_id = ?",
                         (domain.id,)).fetchone()[0]
    if users:
        raise StoreError(f"domain {name} still has {users} account(s); delete them first")
    conn.execute("DELETE FROM aliases WHERE address LIKE ?", (f"%@{domain.name}",))
    conn.execute("DELETE FROM domains WHERE id = ?", (domain.id,))


# -- accounts ---------------------------------------------------------------
def add_account(conn: sqlite3.Connection, address: str, password_hash: str, *,
                display_name: str = "", is_admin: bool = False) -> Account:
    address = normalize_address(address)
    local, domain_name = split_address(address)
    if not local or not domain_name:
        raise StoreError(f"{address!r} is not an address (want user@domain)")
    domain = get_domain(conn, domain_name)
    if domain is None:
        raise StoreError(f"domain {domain_name} is not served here; add it first "
                         f"(keepmail domain add {domain_name})")
    if "+" in local:
        raise StoreError("'+' is reserved for plus-addressing (user+tag@); choose another name")
    now = time.time()
    try:
        cur = conn.execute(
            "INSERT INTO accounts(address, domain_id, password_hash, display_name, is_admin,"
            " created) VALUES (?, ?, ?, ?, ?, ?)",
            (address, domain.id, password_hash, display_name, int(is_admin), now))
    except sqlite3.IntegrityError:
        raise StoreError(f"account {address} already exists") from None
    account_id = int(cur.lastrowid or 0)
    for name, role in DEFAULT_MAILBOXES:
        create_mailbox(conn, account_id, name, role)
        # Subscribed from the start: many clients (Thunderbird) show only subscribed folders.
        set_subscribed(conn, account_id, name, True)
    return get_account(conn, address) or _missing(address)


def _missing(address: str) -> Account:
    raise StoreError(f"no account {address}")


def get_account(conn: sqlite3.Connection, address: str) -> Account | None:
    row = conn.execute("SELECT * FROM accounts WHERE address = ?",
                       (normalize_address(address),)).fetchone()
    return Account.from_row(row) if row else None


def get_account_by_id(conn: sqlite3.Connection, account_id: int) -> Account | None:
    row = conn.execute("SELECT * FROM accounts WHERE id = ?", (account_id,)).fetchone()
    return Account.from_row(row) if row else None


def password_hashes(conn: sqlite3.Connection, address: str) -> tuple[Account, list[str]] | None:
    """The account and every hash that may log it in (main password, app passwords)."""
    row = conn.execute("SELECT * FROM accounts WHERE address = ?",
                       (normalize_address(address),)).fetchone()
    if row is None:
        return None
    hashes = [row["password_hash"]]
    hashes += [r[0] for r in conn.execute(
        "SELECT password_hash FROM app_passwords WHERE account_id = ?", (row["id"],))]
    return Account.from_row(row), hashes


def list_accounts(conn: sqlite3.Connection, domain: str | None = None) -> list[Account]:
    if domain:
        rows = conn.execute("SELECT a.* FROM accounts a JOIN domains d ON d.id = a.domain_id"
                            " WHERE d.name = ? ORDER BY a.address", (domain.lower(),))
    else:
        rows = conn.execute("SELECT * FROM accounts ORDER BY address")
    return [Account.from_row(r) for r in rows]


def set_password(conn: sqlite3.Connection, address: str, password_hash: str) -> None:
    _update_account(conn, address, "password_hash = ?", (password_hash,))


def set_disabled(conn: sqlite3.Connection, address: str, disabled: bool) -> None:
    _update_account(conn, address, "disabled = ?", (int(disabled),))


def set_admin(conn: sqlite3.Connection, address: str, is_admin: bool) -> None:
    _update_account(conn, address, "is_admin = ?", (int(is_admin),))


def _update_account(conn: sqlite3.Connection, address: str, assignment: str,
                    values: tuple[object, ...]) -> None:
    cur = conn.execute(f"UPDATE accounts SET {assignment} WHERE address = ?",
                       (*values, normalize_address(address)))
    if cur.rowcount == 0:
        raise StoreError(f"no account {address}")


def delete_account(conn: sqlite3.Connection, address: str) -> None:
    """Delete an account with its mailboxes, mail and app passwords."""
    from .mail import delete_mailbox_rows

    account = get_account(conn, address)
    if account is None:
        raise StoreError(f"no account {address}")
    for row in conn.execute("SELECT id FROM mailboxes WHERE account_id = ?",
                            (account.id,)).fetchall():
        delete_mailbox_rows(conn, row[0])
    conn.execute("DELETE FROM app_passwords WHERE account_id = ?", (account.id,))
    conn.execute("DELETE FROM subscriptions WHERE account_id = ?", (account.id,))
    conn.execute("DELETE FROM aliases WHERE target = ?", (account.address,))
    conn.execute("DELETE FROM accounts WHERE id = ?", (account.id,))


# -- app passwords ----------------------------------------------------------
def add_app_password(conn: sqlite3.Connection, address: str, label: str,
                     password_hash: str) -> None:
    account = get_account(conn, address)
    if account is None:
        raise StoreError(f"no account {address}")
    try:
        conn.execute("INSERT INTO app_passwords(account_id, label, password_hash, created)"
                     " VALUES (?, ?, ?, ?)", (account.id, label, password_hash, time.time()))
    except sqlite3.IntegrityError:
        raise StoreError(f"{address} already has an app password named {label!r}") from None


def list_app_passwords(conn: sqlite3.Connection, address: str) -> list[tuple[str, float]]:
    return [(r[0], r[1]) for r in conn.execute(
        "SELECT p.label, p.created FROM app_passwords p JOIN accounts a ON a.id = p.account_id"
        " WHERE a.address = ? ORDER BY p.label", (normalize_address(address),))]


def delete_app_password(conn: sqlite3.Connection, address: str, label: str) -> None:
    cur = conn.execute(
        "DELETE FROM app_passwords WHERE label = ? AND account_id ="
        " (SELECT id FROM accounts WHERE address = ?)", (label, normalize_address(address)))
    if cur.rowcount == 0:
        raise StoreError(f"{address} has no app password named {label!r}")


# -- aliases ----------------------------------------------------------------
def add_alias(conn: sqlite3.Connection, address: str, targets: list[str]) -> None:
    """Map an address (or '@domain' for a catch-all) to local or remote targets."""
    address = normalize_address(address)
    local, domain_name = split_address(address)
    if get_domain(conn, domain_name) is None:
        raise StoreError(f"domain {domain_name} is not served here; aliases must be in a "
                         "local domain")
    if local and get_account(conn, address) is not None:
        raise StoreError(f"{address} is an account; an alias cannot shadow it")
    if not targets:
        raise StoreError("an alias needs at least one target address")
    now = time.time()
    for target in targets:
        target = normalize_address(target)
        if "@" not in target:
            raise StoreError(f"alias target {target!r} is not an address")
        conn.execute("INSERT OR IGNORE INTO aliases(address, target, created) VALUES (?, ?, ?)",
                     (address, target, now))


def alias_targets(conn: sqlite3.Connection, address: str) -> list[str]:
    return [r[0] for r in conn.execute(
        "SELECT target FROM aliases WHERE address = ? ORDER BY target",
        (normalize_address(address),))]


def list_aliases(conn: sqlite3.Connection) -> dict[str, list[str]]:
    result: dict[str, list[str]] = {}
    for row in conn.execute("SELECT address, target FROM aliases ORDER BY address, target"):
        result.setdefault(row[0], []).append(row[1])
    return result


def delete_alias(conn: sqlite3.Connection, address: str, target: str | None = None) -> None:
    if target:
        cur = conn.execute("DELETE FROM aliases WHERE address = ? AND target = ?",
                           (normalize_address(address), normalize_address(target)))
    else:
        cur = conn.execute("DELETE FROM aliases WHERE address = ?", (normalize_address(address),))
    if cur.rowcount == 0:
        raise StoreError(f"no alias {address}" + (f" -> {target}" if target else ""))
