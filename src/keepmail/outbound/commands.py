"""`keepmail queue ...` and `keepmail dkim ...`: the operator's outbound tools.

They work on the store directly (SQLite WAL lets them run next to a live
server); a running server picks queue changes up at its next scan (at most
SCAN_INTERVAL seconds).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from .. import config as configmod
from .. import mailmsg
from ..config import Config, ConfigError
from ..store import Store
from ..store import queue as q
from .dkimkeys import DkimError, DkimKeys
from .wiring import settings_of

T = TypeVar("T")
config_option = click.option("--config", "config_path", default="keepmail.toml",
                             show_default=True, type=click.Path(dir_okay=False, path_type=Path),
                             help="The keepmail.toml to use.")


def _config(path: Path) -> Config:
    try:
        return configmod.load(path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _with_store(path: Path, fn: Callable[[Store, Config], T]) -> T:
    cfg = _config(path)
    try:
        store = Store.open(cfg.data_dir, cfg.key_file)
    except (ValueError, OSError) as exc:
        raise click.ClickException(f"cannot open the store in {cfg.data_dir}: {exc}") from None
    try:
        return fn(store, cfg)
    finally:
        store.close()


def _when(ts: float | None) -> str:
    if not ts:
        return "-"
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


# -- queue -----------------------------------------------------------------------
@click.group()
def queue() -> None:
    """Look at and act on the outbound queue."""


@queue.command("list")
@config_option
def queue_list(config_path: Path) -> None:
    def run(store: Store, _cfg: Config) -> None:
        msgs = store.read_now(q.list_messages)
        for m in msgs:
            rcpts = store.read_now(lambda c, i=m.id: q.rcpts_of(c, i))
            held = " HELD" if any(r.held for r in rcpts) else ""
            nxt = min((r.next_attempt for r in rcpts), default=None)
            click.echo(f"{m.id:>6} {_when(m.created)} {m.size:>8}B from <{m.sender}> "
                       f"to {len(rcpts)} rcpt(s), next {_when(nxt)}{held}")
        total = store.read_now(q.count)
        click.echo(f"{total[0]} message(s), {total[1]} recipient(s) queued")

    _with_store(config_path, run)


@queue.command("show")
@config_option
@click.argument("msg_id", type=int)
def queue_show(config_path: Path, msg_id: int) -> None:
    def run(store: Store, _cfg: Config) -> None:
        msg = store.read_now(lambda c: q.get_message(c, msg_id))
        if msg is None:
            raise click.ClickException(f"no queued message {msg_id}")
        head = mailmsg.header_block(store.read_blob_now(msg.blob_id))
        click.echo(f"id {msg.id}  kind {msg.kind}  trace {msg.trace_id}  size {msg.size}")
        click.echo(f"from <{msg.sender}>  queued {_when(msg.created)}")
        for r in store.read_now(lambda c: q.rcpts_of(c, msg_id)):
            state = "held" if r.held else f"next {_when(r.next_attempt)}"
            click.echo(f"  <{r.rcpt}> attempts {r.attempts}, {state}; "
                       f"last: {r.last_error or '-'}")
        click.echo("")
        click.echo(head.decode("utf-8", "replace").rstrip())

    _with_store(config_path, run)


def _change(config_path: Path, fn: Callable[[Any], int], done: str) -> None:
    def run(store: Store, _cfg: Config) -> None:
        changed = store.write_sync(fn)
        if not changed:
            raise click.ClickException("no such queued message (or nothing to change)")
        click.echo(done)

    _with_store(config_path, run)


@queue.command("retry")
@config_option
@click.argument("msg_id", type=int, required=False)
def queue_retry(config_path: Path, msg_id: int | None) -> None:
    """Make a message (or every message) due now."""
    _change(config_path, lambda c: q.retry_now(c, msg_id, time.time()),
            "will be retried at the next queue scan")


@queue.command("hold")
@config_option
@click.argument("msg_id", type=int)
def queue_hold(config_path: Path, msg_id: int) -> None:
    _change(config_path, lambda c: q.set_held(c, msg_id, True), f"held {msg_id}")


@queue.command("release")
@config_option
@click.argument("msg_id", type=int)
def queue_release(config_path: Path, msg_id: int) -> None:
    def release(c: Any) -> int:
        n = q.set_held(c, msg_id, False)
        q.retry_now(c, msg_id, time.time())
        return n

    _change(config_path, release, f"released {msg_id}")


@queue.command("delete")
@config_option
@click.argument("msg_id", type=int)
def queue_delete(config_path: Path, msg_id: int) -> None:
    """Remove a message from the queue without a bounce."""
    _change(config_path, lambda c: int(q.delete_message(c, msg_id)), f"deleted {msg_id}")


# -- dkim ------------------------------------------------------------------------
@click.group()
def dkim() -> None:
    """DKIM keys: list, rotate, retire."""


def _keys(store: Store, cfg: Config) -> DkimKeys:
    return DkimKeys(store, activate_after=settings_of(cfg).dkim_activate_hours * 3600)


@dkim.command("list")
@config_option
@click.argument("domain", required=False)
def dkim_list(config_path: Path, domain: str | None) -> None:
    def run(store: Store, cfg: Config) -> None:
        now = time.time()
        for k in _keys(store, cfg).list(domain):
            state = "retired" if k.retired else "signing" if k.active_from <= now else \
                f"signs from {_when(k.active_from)}"
            click.echo(f"{k.domain} {k.selector} {k.algorithm} created {_when(k.created)} "
                       f"{state}")

    _with_store(config_path, run)


@dkim.command("rotate")
@config_option
@click.argument("domain")
@click.option("--activate-after", type=float, default=None,
              help="Hours before the new keys sign (default: [outbound] dkim_activate_hours).")
def dkim_rotate(config_path: Path, domain: str, activate_after: float | None) -> None:
    """Make a new key pair for DOMAIN and print the DNS records to publish."""
    def run(store: Store, cfg: Config) -> None:
        keys = _keys(store, cfg)
        delay = None if activate_after is None else activate_after * 3600
        made = keys.rotate(domain, activate_after=delay)
        click.echo(f"new DKIM keys for {domain}; publish these TXT records:")
        records = dict((n, v) for n, _t, v in keys.dns_records(domain))
        for info in made:
            click.echo(f"{info.dns_name}. IN TXT \"{records[info.dns_name]}\"")
        click.echo("Older keys stay published and usable until `keepmail dkim retire "
                   f"{domain} SELECTOR`.")

    _with_store(config_path, run)


@dkim.command("retire")
@config_option
@click.argument("domain")
@click.argument("selector")
def dkim_retire(config_path: Path, domain: str, selector: str) -> None:
    """Stop using a key (a selector, or a generation like k20260101)."""
    def run(store: Store, cfg: Config) -> None:
        try:
            gone = _keys(store, cfg).retire(domain, selector)
        except DkimError as exc:
            raise click.ClickException(str(exc)) from None
        for info in gone:
            click.echo(f"retired {info.selector}; remove {info.dns_name} from DNS")

    _with_store(config_path, run)
