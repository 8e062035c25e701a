"""`keepmail abuse ...` and `keepmail account ...`: the operator's abuse tools.

They work on the store directly (SQLite WAL lets them run next to a live
server). A running server honours them at once: an unblock leaves a marker
the AuthGuard checks before refusing a try, and the OutboundGuard reads the
hold table at each submission.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from .. import config as configmod
from .. import mailmsg
from ..config import Config, ConfigError
from ..store import Store, accounts
from ..store import abuse as db
from ..store import queue as q
from ..store.models import Account
from .outguard import LIMIT_NAMES

T = TypeVar("T")
config_option = click.option("--config", "config_path", default="keepmail.toml",
                             show_default=True, type=click.Path(dir_okay=False, path_type=Path),
                             help="The keepmail.toml to use.")


def _with_store(path: Path, fn: Callable[[Store], T]) -> T:
    try:
        cfg: Config = configmod.load(path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        store = Store.open(cfg.data_dir, cfg.key_file)
    except (ValueError, OSError) as exc:
        raise click.ClickException(f"cannot open the store in {cfg.data_dir}: {exc}") from None
    try:
        store.ensure_schema()
        return fn(store)
    finally:
        store.close()


def _when(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def _account(store: Store, address: str) -> Account:
    acct = store.read_now(lambda c: accounts.get_account(c, address))
    if acct is None:
        raise click.ClickException(f"no account {address}")
    return acct


# -- keepmail abuse -------------------------------------------------------------------
@click.group()
def abuse() -> None:
    """Login throttles, alerts and sending limits."""


@abuse.command("list")
@config_option
@click.option("--all", "show_all", is_flag=True, help="Also counters not blocking now.")
def abuse_list(config_path: Path, show_all: bool) -> None:
    """Throttled IPs and accounts, held accounts, recent alerts."""
    def run(store: Store) -> None:
        now = time.time()
        rows = [r for r in store.read_now(lambda c: db.list_throttles(c, now))
                if r.kind != "unblock" and (show_all or r.next_ok > now)]
        click.echo("Login throttles:" if rows else "Login throttles: none")
        for r in rows:
            left = f"blocked {int(r.next_ok - now)}s more" if r.next_ok > now else "open"
            click.echo(f"  {r.kind:8} {r.key:40} failures {r.score:5.1f}  {left}")
        holds = store.read_now(db.list_holds)
        click.echo("Held accounts:" if holds else "Held accounts: none")
        for h in holds:
            click.echo(f"  {h.address}  since {_when(h.since)}  ({h.source}) {h.reason}")
        alerts = store.read_now(lambda c: db.list_alerts(c, 20))
        click.echo("Recent alerts:" if alerts else "Recent alerts: none")
        for a in alerts:
            click.echo(f"  {a.id:5} {_when(a.ts)} {a.kind:16} {a.summary}")

    _with_store(config_path, run)


@abuse.command("unblock")
@config_option
@click.argument("key")
def abuse_unblock(config_path: Path, key: str) -> None:
    """Lift login throttles for an IP, an account, or both ('user@dom 192.0.2.1')."""
    key = key.strip().lower()

    def txn(c: Any) -> int:
        parts = key.split()
        found = 0
        rows = c.execute("SELECT kind, key FROM abuse_throttle WHERE kind != 'unblock'")
        for kind, name in list(rows):
            if name == key or (len(parts) == 1 and key in name.split(" ")):
                found += db.delete_throttles(c, kind, name)
        # The marker tells a running server to forget its in-memory counters too.
        for mark in {key, *parts}:
            db.save_throttle(c, db.ThrottleRow("unblock", mark, 0.0, time.time(), 0.0, 0))
        return found

    found = _with_store(config_path, lambda s: s.write_sync(txn))
    click.echo(f"unblocked {key} ({found} counter(s) cleared)")


@abuse.command("alerts")
@config_option
@click.option("--limit", default=50, show_default=True)
@click.option("--ack", "ack", type=int, help="Mark this alert as seen.")
def abuse_alerts(config_path: Path, limit: int, ack: int | None) -> None:
    """Alerts the abuse guard raised (newest first)."""
    def run(store: Store) -> None:
        if ack is not None:
            if not store.write_sync(lambda c: db.acknowledge_alert(c, ack)):
                raise click.ClickException(f"no alert {ack}")
            click.echo(f"alert {ack} acknowledged")
            return
        for a in store.read_now(lambda c: db.list_alerts(c, limit)):
            seen = " " if a.acknowledged else "*"
            click.echo(f"{seen}{a.id:5} {_when(a.ts)} {a.kind:16} {a.account or a.ip}: "
                       f"{a.summary}")

    _with_store(config_path, run)


@abuse.command("limits")
@config_option
@click.argument("scope")
@click.option("--set", "settings", multiple=True, metavar="NAME=N",
              help=f"Override a limit ({', '.join(LIMIT_NAMES)}); 0 means no limit.")
@click.option("--clear", is_flag=True, help="Remove the overrides of this scope.")
def abuse_limits(config_path: Path, scope: str, settings: tuple[str, ...], clear: bool) -> None:
    """Show or override sending limits of an account (user@dom) or domain (@dom)."""
    values: dict[str, int] = {}
    for item in settings:
        name, _, number = item.partition("=")
        if name not in LIMIT_NAMES or not number.isdigit():
            raise click.ClickException(f"--set {item}: use NAME=N with NAME one of "
                                       f"{', '.join(LIMIT_NAMES)}")
        values[name] = int(number)

    def run(store: Store) -> None:
        if clear:
            store.write_sync(lambda c: db.delete_limits(c, scope))
        elif values:
            merged = {**store.read_now(lambda c: db.get_limits(c, scope)), **values}
            store.write_sync(lambda c: db.set_limits(c, scope, merged))
        click.echo(json.dumps(store.read_now(lambda c: db.get_limits(c, scope)) or
                              "no overrides (config defaults apply)"))

    _with_store(config_path, run)


# -- keepmail account -----------------------------------------------------------------
@click.group("account")
def account() -> None:
    """Hold, review and release an account's outgoing mail."""


@account.command("hold")
@config_option
@click.argument("address")
@click.option("--reason", default="held by the administrator", show_default=True)
def account_hold(config_path: Path, address: str, reason: str) -> None:
    """Keep the account's outgoing mail in the queue, undelivered."""
    def run(store: Store) -> None:
        acct = _account(store, address)

        def txn(c: Any) -> int:
            db.set_hold(c, acct.id, acct.address, time.time(), reason, "admin")
            return q.hold_account(c, acct.id, True)

        n = store.write_sync(txn)
        click.echo(f"holding outgoing mail of {acct.address} ({n} queued recipient(s) held)")

    _with_store(config_path, run)


@account.command("release")
@config_option
@click.argument("address")
def account_release(config_path: Path, address: str) -> None:
    """Send the account's held mail and let it send again."""
    def run(store: Store) -> None:
        acct = _account(store, address)

        def txn(c: Any) -> tuple[bool, int]:
            return db.clear_hold(c, acct.id), q.hold_account(c, acct.id, False)

        was, n = store.write_sync(txn)
        if not was and not n:
            raise click.ClickException(f"{acct.address} is not held")
        click.echo(f"released {acct.address}: {n} queued recipient(s) will be delivered")

    _with_store(config_path, run)


def _held_messages(store: Store, acct: Account) -> list[q.QueuedMessage]:
    def read(c: Any) -> list[q.QueuedMessage]:
        rows = c.execute("SELECT DISTINCT m.* FROM queue_messages m JOIN queue_rcpts r"
                         " ON r.msg_id = m.id WHERE m.account_id = ? AND r.held = 1"
                         " ORDER BY m.id", (acct.id,)).fetchall()
        return [q.QueuedMessage.from_row(r) for r in rows]

    return store.read_now(read)


@account.command("held")
@config_option
@click.argument("address")
def account_held(config_path: Path, address: str) -> None:
    """List the account's held messages (recipients and subject)."""
    def run(store: Store) -> None:
        acct = _account(store, address)
        msgs = _held_messages(store, acct)
        hold = [h for h in store.read_now(db.list_holds) if h.account_id == acct.id]
        if hold:
            click.echo(f"{acct.address} held since {_when(hold[0].since)}: {hold[0].reason}")
        click.echo(f"{len(msgs)} held message(s)")
        for m in msgs:
            raw = store.read_blob_now(m.blob_id)
            subject = (mailmsg.header(raw, "Subject") or "").strip()[:60]
            rcpts = [r.rcpt for r in store.read_now(lambda c, i=m.id: q.rcpts_of(c, i))]
            shown = ", ".join(rcpts[:3]) + (f" (+{len(rcpts) - 3})" if len(rcpts) > 3 else "")
            click.echo(f"  {m.id:6} {_when(m.created)} to {shown}  {subject!r}")

    _with_store(config_path, run)


@account.command("discard")
@config_option
@click.argument("address")
@click.argument("msg_ids", type=int, nargs=-1)
def account_discard(config_path: Path, address: str, msg_ids: tuple[int, ...]) -> None:
    """Delete held messages (all of them, or the ids given) without sending them."""
    def run(store: Store) -> None:
        acct = _account(store, address)
        held = {m.id for m in _held_messages(store, acct)}
        chosen = [i for i in msg_ids if i in held] if msg_ids else sorted(held)
        if msg_ids and len(chosen) != len(msg_ids):
            raise click.ClickException("some ids are not held messages of this account")
        store.write_sync(lambda c: [q.delete_message(c, i) for i in chosen])
        click.echo(f"discarded {len(chosen)} held message(s) of {acct.address}")

    _with_store(config_path, run)
