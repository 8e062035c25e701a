"""First-run setup: `keepmail init` for a real domain and `keepmail demo`.

`init` leaves everything a newcomer needs: a commented config, the storage
key, TLS material, an admin account and the DNS records to paste.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import config as configmod
from .config import Config
from .store import Store, accounts
from .store.passwords import hash_password
from .tls import ensure_self_signed


@dataclass(frozen=True)
class InitResult:
    config_path: Path
    admin: str
    dns_text: str


def initialize(domain: str, hostname: str, data_dir: Path, admin: str,
               password: str) -> InitResult:
    domain, hostname = domain.lower().rstrip("."), hostname.lower().rstrip(".")
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    config_path = data_dir / "keepmail.toml"
    if config_path.exists():
        raise ValueError(f"{config_path} already exists; remove it or choose another --data")
    text = configmod.render_default_config({"server": {
        "hostname": hostname, "data_dir": ".", "listen": ["0.0.0.0"], "domains": [domain]}})
    config_path.write_text(text, encoding="utf-8")
    cfg = configmod.load(config_path)
    ensure_self_signed(hostname, cfg.data_dir / "tls")
    store = Store.open(cfg.data_dir, cfg.key_file)
    try:
        _create_admin(store, domain, admin, password)
        _ensure_dkim(store, domain)
        text = dns_records_text(cfg, store, domain)
    finally:
        store.close()
    return InitResult(config_path, admin, text)


def _create_admin(store: Store, domain: str, admin: str, password: str) -> None:
    pw_hash = hash_password(password)

    def txn(conn: Any) -> None:
        if accounts.get_domain(conn, domain) is None:
            accounts.add_domain(conn, domain)
        accounts.add_account(conn, admin, pw_hash, is_admin=True)

    store.write_sync(txn)


def _ensure_dkim(store: Store, domain: str) -> None:
    try:
        from .outbound import dkimkeys  # the signing keys live with outbound mail
    except ImportError:
        return
    store.ensure_schema()
    dkimkeys.ensure_keys(store, domain)


def dns_records(cfg: Config, store: Store, domain: str) -> list[tuple[str, str, str]]:
    """(name, type, value) of every record to publish for domain."""
    host = cfg.server.hostname
    records = [
        (f"{domain}.", "MX", f"10 {host}."),
        (f"{domain}.", "TXT", '"v=spf1 mx -all"'),
        (f"_dmarc.{domain}.", "TXT", f'"v=DMARC1; p=quarantine; rua=mailto:postmaster@{domain}"'),
    ]
    records += dkim_records(store, domain)
    return records


def dkim_records(store: Store, domain: str) -> list[tuple[str, str, str]]:
    try:
        from .outbound import dkimkeys
    except ImportError:
        return []
    return dkimkeys.dns_records(store, domain)


def dns_records_text(cfg: Config, store: Store, domain: str) -> str:
    return "\n".join(f"{name:<32} IN {rtype:<5} {value}"
                     for name, rtype, value in dns_records(cfg, store, domain))


# -- demo ---------------------------------------------------------------------------
DEMO_DOMAIN = "example.test"


def demo_config(data_dir: Path, nameservers: list[str] | None = None,
                ) -> tuple[Config, dict[str, str]]:
    """A config for a local demo with two accounts; returns it and their passwords."""
    config_path = data_dir / "keepmail.toml"
    if not config_path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        config_path.write_text(configmod.render_default_config({
            "server": {"hostname": "mail.example.test", "data_dir": ".",
                       "listen": ["127.0.0.1"], "domains": [DEMO_DOMAIN]},
            # A demo on one machine has no reverse DNS to speak of: don't greylist.
            "inbound": {"greylisting": False},
            "dns": {"nameservers": nameservers or []}}), encoding="utf-8")
    cfg = configmod.load(config_path)
    users = _demo_users(cfg)
    return cfg, users


def _demo_users(cfg: Config) -> dict[str, str]:
    secrets_file = cfg.data_dir / "demo-passwords.txt"
    if secrets_file.exists():
        pairs = [line.split(" ", 1) for line in secrets_file.read_text().splitlines() if line]
        return {a: p for a, p in pairs}
    users = {f"{name}@{DEMO_DOMAIN}": secrets.token_urlsafe(9) for name in ("alice", "bob")}
    store = Store.open(cfg.data_dir, cfg.key_file)
    try:
        hashes = {a: hash_password(p) for a, p in users.items()}

        def txn(conn: Any) -> None:
            if accounts.get_domain(conn, DEMO_DOMAIN) is None:
                accounts.add_domain(conn, DEMO_DOMAIN)
            for address, pw_hash in hashes.items():
                accounts.add_account(conn, address, pw_hash, is_admin=address.startswith("a"))

        store.write_sync(txn)
    finally:
        store.close()
    secrets_file.write_text("".join(f"{a} {p}\n" for a, p in users.items()))
    secrets_file.chmod(0o600)
    return users


def demo_text(app: Any, users: dict[str, str]) -> str:
    ports = {name: port for name, port, _ in app.services if port}
    cfg: Config = app.config
    (alice, alice_pw), (bob, bob_pw) = list(users.items())
    lines = ["", "keepmail demo is running on 127.0.0.1 (Ctrl-C stops it).",
             f"  data folder:   {cfg.data_dir}", f"  config:        {cfg.path}", "",
             "Accounts (alice is an admin):"]
    lines += [f"  {address:<22} password: {password}" for address, password in users.items()]
    lines += ["", "Listeners:"]
    lines += [f"  {name:<15} 127.0.0.1:{port}" for name, port in ports.items()]
    lines += ["", "Try it:"]
    if "submission" in ports:
        lines += ["  # alice sends to bob as a mail program would (submission, STARTTLS, AUTH)",
                  f"  swaks --server 127.0.0.1:{ports['submission']} --tls --auth-user {alice} "
                  f"--auth-password '{alice_pw}' --from {alice} --to {bob} "
                  "--header 'Subject: hello'"]
    if "smtp" in ports:
        lines += ["  # mail from another server arrives through the MX",
                  f"  swaks --server 127.0.0.1:{ports['smtp']} --helo mail.elsewhere.test "
                  f"--from someone@elsewhere.test --to {bob}",
                  "  # the same with Python",
                  f"  python3 -c \"import smtplib; smtplib.SMTP('127.0.0.1', {ports['smtp']}, "
                  f"local_hostname='mail.elsewhere.test').sendmail('someone@elsewhere.test', "
                  f"['{bob}'], b'Subject: hi\\r\\n\\r\\nHello Bob')\""]
    lines += ["  # see what happened to it: every command, reply and check",
              f"  keepmail log search --config {cfg.path} --to {bob}",
              f"  keepmail log show --config {cfg.path} TRACE_ID"]
    if "imaps" in ports:
        lines += ["  # read bob's mail over IMAP (the certificate is self-signed)",
                  f"  python3 -c \"import imaplib, ssl; c = imaplib.IMAP4_SSL('127.0.0.1', "
                  f"{ports['imaps']}, ssl_context=ssl._create_unverified_context()); "
                  f"c.login('{bob}', '{bob_pw}'); c.select(); "
                  f"print(c.fetch('1:*', '(BODY[HEADER.FIELDS (FROM SUBJECT)])'))\""]
    if "web" in ports:
        lines += ["  # the admin console (log in as alice; admins set up a second factor)",
                  f"  https://127.0.0.1:{ports['web']}/"]
    return "\n".join(lines) + "\n"
