"""The `keepmail` command: demo, init, serve, and the admin commands.

Admin commands open the same store as a running server (SQLite in WAL mode
lets both work at once), so an operator can add users without a restart.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import secrets
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from . import config as configmod
from .config import Config, ConfigError
from .store import Store, accounts
from .store.accounts import StoreError
from .store.passwords import hash_password

T = TypeVar("T")
DEFAULT_CONFIG = "keepmail.toml"
config_option = click.option("--config", "config_path", default=DEFAULT_CONFIG,
                             show_default=True, type=click.Path(dir_okay=False, path_type=Path),
                             help="The keepmail.toml to use.")


def load_config(path: Path) -> Config:
    try:
        return configmod.load(path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def open_store(cfg: Config) -> Store:
    try:
        return Store.open(cfg.data_dir, cfg.key_file)
    except (ValueError, OSError) as exc:
        raise click.ClickException(f"cannot open the store in {cfg.data_dir}: {exc}") from None


def with_store(path: Path, fn: Callable[[Any], T]) -> T:
    """Run fn(conn) as one write on the configured store; StoreError becomes a CLI error."""
    store = open_store(load_config(path))
    try:
        return store.write_sync(fn)
    except (StoreError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        store.close()


def read_password(password_stdin: bool, prompt: str = "Password") -> str:
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt(prompt, hide_input=True, confirmation_prompt=True)
    if len(password) < 8:
        raise click.ClickException("password too short: use at least 8 characters")
    return password


def generate_password() -> str:
    return secrets.token_urlsafe(12)


@click.group()
@click.version_option(package_name="keepmail")
def main() -> None:
    """keepmail: your organization's own mail server, in one program."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")


# -- running ---------------------------------------------------------------------
@main.command()
@config_option
@click.option("--port-offset", default=0, show_default=True,
              help="Move every listener from its port P to P+N (25 → 25+N, …).")
def serve(config_path: Path, port_offset: int) -> None:
    """Run the server until SIGTERM/SIGINT (sessions in flight are finished)."""

    cfg = load_config(config_path)
    run_app(cfg, port_offset)


@main.command("mx-worker", hidden=True)
@config_option
@click.option("--port-offset", default=0)
@click.option("--parent-fd", type=int, required=True)
def mx_worker(config_path: Path, port_offset: int, parent_fd: int) -> None:
    """One extra MX process, started by `keepmail serve` ([smtp] mx_processes)."""
    from .app import App
    from .mxworkers import serve_worker

    cfg = load_config(config_path)

    async def go() -> None:
        await serve_worker(App(cfg, port_offset), parent_fd)

    _run(go())


def run_app(cfg: Config, port_offset: int, banner: Callable[[Any], None] | None = None) -> None:
    from .app import App

    async def go() -> None:
        app = App(cfg, port_offset)
        app.build()
        if banner is not None:
            banner(app)
        await app.run_until_signal()

    try:
        _run(go())
    except OSError as exc:
        raise click.ClickException(f"cannot start: {exc} (is another server using the port? "
                                   "try --port-offset)") from None


def _run(coro: Any) -> None:
    try:
        import uvloop  # optional: faster event loop when installed
        uvloop.run(coro)
    except ImportError:
        asyncio.run(coro)


@main.command()
@click.option("--domain", required=True, help="Your mail domain, e.g. example.org.")
@click.option("--hostname", required=True, help="This server's name, e.g. mail.example.org.")
@click.option("--data", "data_dir", required=True, type=click.Path(path_type=Path),
              help="Folder for keepmail.toml, the database and keys.")
@click.option("--admin", default="", help="Admin address (default postmaster@DOMAIN).")
@click.option("--password-stdin", is_flag=True, help="Read the admin password from stdin.")
def init(domain: str, hostname: str, data_dir: Path, admin: str, password_stdin: bool) -> None:
    """Write keepmail.toml, keys, TLS material and an admin account; print DNS records."""
    from .setup import initialize

    password = read_password(True) if password_stdin else generate_password()
    try:
        result = initialize(domain, hostname, data_dir, admin or f"postmaster@{domain}",
                            password)
    except (StoreError, ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"Wrote {result.config_path}")
    click.echo(f"Admin account: {result.admin}" +
               ("" if password_stdin else f"  password: {password}"))
    click.echo("\nPublish these DNS records:\n")
    click.echo(result.dns_text)
    click.echo(f"\nStart the server with: keepmail serve --config {result.config_path}")


@main.command()
@click.option("--data", "data_dir", type=click.Path(path_type=Path), default=None,
              help="Folder for the demo's data (default: a fresh temporary folder).")
@click.option("--port-offset", default=10000, show_default=True,
              help="Move every listener from its port P to P+N (default: 25 → 10025, …).")
@click.option("--dns", "nameservers", multiple=True, hidden=True,
              help="Resolver ip[:port] to use instead of the system's (tests).")
def demo(data_dir: Path | None, port_offset: int, nameservers: tuple[str, ...]) -> None:
    """A complete server on 127.0.0.1 for example.test, with two accounts."""
    from .setup import demo_config, demo_text

    data_dir = data_dir or Path(tempfile.mkdtemp(prefix="keepmail-demo-"))
    cfg, users = demo_config(data_dir, list(nameservers))
    run_app(cfg, port_offset, banner=lambda app: click.echo(demo_text(app, users)))


@main.command()
@config_option
def check(config_path: Path) -> None:
    """Check the config file and the store; exit non-zero on problems."""
    cfg = load_config(config_path)
    store = open_store(cfg)
    try:
        domains = store.read_now(accounts.list_domains)
        users = store.read_now(accounts.list_accounts)
    finally:
        store.close()
    click.echo(f"{config_path}: OK; {len(domains)} domain(s), {len(users)} account(s), "
               f"data in {cfg.data_dir}")


# -- domains ---------------------------------------------------------------------
@main.group()
def domain() -> None:
    """Manage the mail domains served here."""


@domain.command("add")
@config_option
@click.argument("name")
def domain_add(config_path: Path, name: str) -> None:
    d = with_store(config_path, lambda c: accounts.add_domain(c, name))
    click.echo(f"added domain {d.name}")


@domain.command("list")
@config_option
def domain_list(config_path: Path) -> None:
    for d in with_store(config_path, accounts.list_domains):
        click.echo(d.name)


@domain.command("del")
@config_option
@click.argument("name")
def domain_del(config_path: Path, name: str) -> None:
    with_store(config_path, lambda c: accounts.delete_domain(c, name))
    click.echo(f"deleted domain {name}")


# -- users -----------------------------------------------------------------------
@main.group()
def user() -> None:
    """Manage accounts (the address is the login name)."""


@user.command("add")
@config_option
@click.argument("address")
@click.option("--name", default="", help="Display name.")
@click.option("--admin", is_flag=True, help="May use the admin console.")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin.")
def user_add(config_path: Path, address: str, name: str, admin: bool,
             password_stdin: bool) -> None:
    pw_hash = hash_password(read_password(password_stdin))
    acct = with_store(config_path, lambda c: accounts.add_account(
        c, address, pw_hash, display_name=name, is_admin=admin))
    click.echo(f"added {acct.address}")


@user.command("list")
@config_option
@click.option("--domain", "domain_name", default=None)
def user_list(config_path: Path, domain_name: str | None) -> None:
    for a in with_store(config_path, lambda c: accounts.list_accounts(c, domain_name)):
        flags = [f for f, on in (("admin", a.is_admin), ("disabled", a.disabled)) if on]
        click.echo(a.address + (f"  ({', '.join(flags)})" if flags else ""))


@user.command("passwd")
@config_option
@click.argument("address")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin.")
def user_passwd(config_path: Path, address: str, password_stdin: bool) -> None:
    pw_hash = hash_password(read_password(password_stdin, "New password"))
    with_store(config_path, lambda c: accounts.set_password(c, address, pw_hash))
    click.echo(f"password changed for {address}")


@user.command("disable")
@config_option
@click.argument("address")
@click.option("--enable", is_flag=True, help="Enable again instead.")
def user_disable(config_path: Path, address: str, enable: bool) -> None:
    with_store(config_path, lambda c: accounts.set_disabled(c, address, not enable))
    click.echo(f"{address} {'enabled' if enable else 'disabled'}")


@user.command("del")
@config_option
@click.argument("address")
@click.confirmation_option(prompt="Delete the account and all its mail?")
def user_del(config_path: Path, address: str) -> None:
    with_store(config_path, lambda c: accounts.delete_account(c, address))
    click.echo(f"deleted {address}")


@user.group("app-password")
def app_password() -> None:
    """Per-device passwords (revocable without changing the main password)."""


@app_password.command("add")
@config_option
@click.argument("address")
@click.argument("label")
def app_password_add(config_path: Path, address: str, label: str) -> None:
    password = generate_password()
    pw_hash = hash_password(password)
    with_store(config_path, lambda c: accounts.add_app_password(c, address, label, pw_hash))
    click.echo(f"app password {label!r} for {address}: {password}")


@app_password.command("list")
@config_option
@click.argument("address")
def app_password_list(config_path: Path, address: str) -> None:
    for label, created in with_store(config_path,
                                     lambda c: accounts.list_app_passwords(c, address)):
        click.echo(f"{label}  created {_when(created)}")


@app_password.command("del")
@config_option
@click.argument("address")
@click.argument("label")
def app_password_del(config_path: Path, address: str, label: str) -> None:
    with_store(config_path, lambda c: accounts.delete_app_password(c, address, label))
    click.echo(f"deleted app password {label!r} of {address}")


# -- aliases ---------------------------------------------------------------------
@main.group()
def alias() -> None:
    """Addresses that deliver to other addresses ('@domain' is the catch-all)."""


@alias.command("add")
@config_option
@click.argument("address")
@click.argument("targets", nargs=-1, required=True)
def alias_add(config_path: Path, address: str, targets: tuple[str, ...]) -> None:
    with_store(config_path, lambda c: accounts.add_alias(c, address, list(targets)))
    click.echo(f"{address} -> {', '.join(targets)}")


@alias.command("list")
@config_option
def alias_list(config_path: Path) -> None:
    for address, targets in with_store(config_path, accounts.list_aliases).items():
        click.echo(f"{address} -> {', '.join(targets)}")


@alias.command("del")
@config_option
@click.argument("address")
@click.argument("target", required=False)
def alias_del(config_path: Path, address: str, target: str | None) -> None:
    with_store(config_path, lambda c: accounts.delete_alias(c, address, target))
    click.echo(f"deleted alias {address}" + (f" -> {target}" if target else ""))


# -- sender lists ----------------------------------------------------------------
@main.group()
def senders() -> None:
    """Allowed and blocked senders, for one user or a whole domain."""


def _owner(conn: Any, user: str | None, domain_name: str | None) -> int:
    from .store import senderlists

    if bool(user) == bool(domain_name):
        raise StoreError("give exactly one of --user ADDRESS or --domain DOMAIN")
    if user:
        acct = accounts.get_account(conn, user)
        if acct is None:
            raise StoreError(f"no account {user}")
        return acct.id
    dom = accounts.get_domain(conn, domain_name or "")
    if dom is None:
        raise StoreError(f"no domain {domain_name}")
    return senderlists.domain_owner(dom.id)


owner_options = [click.option("--user", default=None, help="An account's own list."),
                 click.option("--domain", "domain_name", default=None,
                              help="The list for every account of a domain.")]


def _with_owner(f: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(owner_options):
        f = option(f)
    return f


@senders.command("add")
@config_option
@_with_owner
@click.argument("kind", type=click.Choice(["allow", "block"]))
@click.argument("pattern")
def senders_add(config_path: Path, user: str | None, domain_name: str | None, kind: str,
                pattern: str) -> None:
    """PATTERN is an address or @domain (which covers its subdomains)."""
    from .store import senderlists

    entry = with_store(config_path, lambda c: senderlists.add(
        c, _owner(c, user, domain_name), kind, pattern))
    click.echo(f"{entry.kind} {entry.pattern}")


@senders.command("list")
@config_option
@_with_owner
def senders_list(config_path: Path, user: str | None, domain_name: str | None) -> None:
    from .store import senderlists

    for e in with_store(config_path, lambda c: senderlists.list_for(
            c, _owner(c, user, domain_name))):
        click.echo(f"{e.kind:<6} {e.pattern}")


@senders.command("del")
@config_option
@_with_owner
@click.argument("pattern")
def senders_del(config_path: Path, user: str | None, domain_name: str | None,
                pattern: str) -> None:
    from .store import senderlists

    if not with_store(config_path, lambda c: senderlists.remove(
            c, _owner(c, user, domain_name), pattern)):
        raise click.ClickException(f"{pattern} is not on that list")
    click.echo(f"removed {pattern}")


# -- quarantine ------------------------------------------------------------------
@main.group()
def quarantine() -> None:
    """Messages held back as probable spam: look, release or delete."""


@quarantine.command("list")
@config_option
@click.option("--all", "include_released", is_flag=True, help="Include released messages.")
def quarantine_list(config_path: Path, include_released: bool) -> None:
    from .store import quarantine as qstore

    for e in with_store(config_path, lambda c: qstore.list_entries(
            c, include_released=include_released)):
        state = f"released {_when(e.released)}" if e.released else "held"
        click.echo(f"{e.id:>6}  {_when(e.created)}  {state:<8} {e.sender or '<>'}  "
                   f"{e.subject[:60]}  [{e.verdict}]")


@quarantine.command("show")
@config_option
@click.argument("entry_id", type=int)
@click.option("--raw", is_flag=True, help="Print the whole message.")
def quarantine_show(config_path: Path, entry_id: int, raw: bool) -> None:
    from .store import quarantine as qstore

    store = open_store(load_config(config_path))
    try:
        entry = store.read_now(lambda c: qstore.get(c, entry_id))
        if entry is None:
            raise click.ClickException(f"no quarantined message {entry_id}")
        click.echo(f"from: {entry.sender}\nsubject: {entry.subject}\n"
                   f"message-id: {entry.message_id}\nclient: {entry.client_ip}\n"
                   f"trace: {entry.trace_id}\nverdict: {entry.verdict}")
        for reason in entry.reasons:
            click.echo(f"  {reason.get('rule')}: {reason.get('points')}  {reason.get('reason')}")
        if raw and entry.released is None:
            click.echo("")
            click.echo(store.read_blob_now(entry.blob_id).decode("utf-8", "replace"))
    finally:
        store.close()


@quarantine.command("release")
@config_option
@click.argument("entry_id", type=int)
def quarantine_release(config_path: Path, entry_id: int) -> None:
    """Deliver to the recipients' Inboxes (and learn that it was not spam)."""
    from .inbound.quarantine import QuarantineError, release

    store = open_store(load_config(config_path))
    try:
        accounts_done = asyncio.run(release(store, entry_id, by="cli"))
    except QuarantineError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        store.close()
    click.echo(f"released {entry_id} to {len(accounts_done)} mailbox(es)")


@quarantine.command("delete")
@config_option
@click.argument("entry_id", type=int)
def quarantine_delete(config_path: Path, entry_id: int) -> None:
    from .store import quarantine as qstore

    if not with_store(config_path, lambda c: qstore.delete(c, entry_id)):
        raise click.ClickException(f"no quarantined message {entry_id}")
    click.echo(f"deleted {entry_id}")


# -- flight recorder ---------------------------------------------------------------
@main.group()
def log() -> None:
    """Search the flight recorder: what happened to a message?"""


def _parse_time(value: str | None) -> float | None:
    if not value:
        return None
    try:
        if value.endswith(("h", "d", "m")) and value[:-1].isdigit():
            unit = {"m": 60, "h": 3600, "d": 86400}[value[-1]]
            return dt.datetime.now().timestamp() - int(value[:-1]) * unit
        return dt.datetime.fromisoformat(value).timestamp()
    except ValueError:
        raise click.BadParameter(f"{value!r}: use ISO time (2026-11-30T10:00) or an age "
                                 "like 2h, 3d") from None


def _when(ts: float | None) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


def _recorder_conn(config_path: Path) -> Any:
    from .recorder.query import open_readonly

    cfg = load_config(config_path)
    path = cfg.data_dir / "recorder.db"
    if not path.exists():
        raise click.ClickException(f"no flight recorder data yet in {cfg.data_dir}")
    conn = open_readonly(path)
    if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'events'").fetchone():
        # Written by an older keepmail: opening it for writing regroups its events.
        from .recorder import Recorder

        conn.close()
        Recorder(path).close()
        conn = open_readonly(path)
    return conn


@log.command("search")
@config_option
@click.option("--from", "sender", help="Envelope sender contains.")
@click.option("--to", "rcpt", help="A recipient contains.")
@click.option("--ip", help="Client IP.")
@click.option("--message-id", help="Message-ID.")
@click.option("--since", help="ISO time or age (2h, 3d).")
@click.option("--until", help="ISO time or age.")
@click.option("--kind", help="session, message, delivery, login …")
@click.option("--limit", default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.argument("text", required=False)
def log_search(config_path: Path, sender: str | None, rcpt: str | None, ip: str | None,
               message_id: str | None, since: str | None, until: str | None,
               kind: str | None, limit: int, as_json: bool, text: str | None) -> None:
    """List traces matching all given conditions, newest first."""
    from .recorder.query import TraceFilter, search

    f = TraceFilter(sender=sender, rcpt=rcpt, ip=ip, message_id=message_id,
                    since=_parse_time(since), until=_parse_time(until), text=text, kind=kind,
                    limit=limit)
    rows = search(_recorder_conn(config_path), f)
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    for t in rows:
        click.echo(f"{t['id']}  {_when(t['started'])}  {t['kind']:<8} {t['status'] or '-':<9} "
                   f"{t['ip'] or '-':<15} {t['mail_from'] or '-'} -> {t['rcpts'] or '-'}  "
                   f"{t['subject'] or ''}")


@log.command("show")
@config_option
@click.argument("trace_id")
def log_show(config_path: Path, trace_id: str) -> None:
    """Print one trace's whole timeline (with its session and deliveries)."""
    from .recorder.query import get_trace, timeline

    conn = _recorder_conn(config_path)
    trace = get_trace(conn, trace_id)
    if trace is None:
        raise click.ClickException(f"no trace {trace_id}")
    for key in ("id", "kind", "parent", "status", "ip", "helo", "account", "mail_from",
                "rcpts", "message_id", "subject", "detail"):
        if trace.get(key):
            click.echo(f"{key:>10}: {trace[key]}")
    click.echo("")
    for ev in timeline(conn, trace_id):
        data = " ".join(f"{k}={v}" for k, v in ev["data"].items() if v is not None)
        data = data.replace("\r", "").replace("\n", " | ")
        # The id's end: its start is the time, the same for a session and its first message.
        click.echo(f"{_when(ev['ts'])}.{int(ev['ts'] * 1000) % 1000:03d} {ev['trace_id'][-8:]} "
                   f"{ev['kind']:<10} {data}")


@log.command("prune")
@config_option
def log_prune(config_path: Path) -> None:
    """Delete traces older than the retention period now (the server also does daily)."""
    from .recorder import Recorder

    cfg = load_config(config_path)
    rec = Recorder(cfg.data_dir / "recorder.db", cfg.recorder.retention_days)
    try:
        click.echo(f"pruned {rec.prune()} trace(s)")
    finally:
        rec.close()


def _add_package_commands() -> None:
    """Command groups defined next to the code they drive."""
    from .abuse.commands import abuse, account
    from .outbound.commands import dkim, queue
    from .spam.commands import spam

    for group in (queue, dkim, spam, abuse, account):
        main.add_command(group)


_add_package_commands()

if __name__ == "__main__":
    main()
