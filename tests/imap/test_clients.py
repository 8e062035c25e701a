"""Real IMAP clients from Debian against keepmail: mbsync (isync), fetchmail, neomutt.

Each test skips with a clear reason if its program is not installed (CI installs
isync, fetchmail and neomutt).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from keepmail.store import mail as mailq
from tests.support.server import PASSWORD

from .conftest import ALICE, ImapEnv, message


def _need(program: str) -> str:
    path = shutil.which(program)
    if path is None:
        pytest.skip(f"{program} is not installed (apt-get install isync fetchmail neomutt)")
    return path


def _bulk_deliver(imap: ImapEnv, count: int) -> None:
    box = imap.mailbox("INBOX")
    raws = [message(f"bulk {i}", body=f"message number {i}\r\n", msgid=f"<bulk{i}@x>")
            for i in range(count)]

    async def go() -> None:
        import asyncio

        from keepmail.store import Copy
        copy = Copy(box.account_id, box.id, box.name)
        await asyncio.gather(*(imap.store.deliver(r, [copy]) for r in raws))
    imap.call(go(), timeout=120)


def _mbsync_config(imap: ImapEnv, tmp: Path) -> Path:
    maildir = tmp / "Maildir"
    maildir.mkdir()
    conf = tmp / "mbsyncrc"
    conf.write_text(f"""
IMAPAccount km
Host 127.0.0.1
Port {imap.tls_port}
User {ALICE}
Pass "{PASSWORD}"
SSLType IMAPS
CertificateFile {imap.ca_file}

IMAPStore remote
Account km

MaildirStore local
Path {maildir}/
Inbox {maildir}/INBOX
SubFolders Verbatim

Channel c
Far :remote:
Near :local:
Patterns INBOX Archive
Create Both
Expunge Both
SyncState *
""")
    return conf


def _mbsync(conf: Path) -> None:
    proc = subprocess.run([_need("mbsync"), "-c", str(conf), "-a"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.timeout(180)
def test_mbsync_full_sync_both_ways(imap: ImapEnv, tmp_path: Path) -> None:
    _need("mbsync")
    _bulk_deliver(imap, 1000)
    conf = _mbsync_config(imap, tmp_path)
    _mbsync(conf)
    new = list((tmp_path / "Maildir" / "INBOX" / "new").iterdir()) + list(
        (tmp_path / "Maildir" / "INBOX" / "cur").iterdir())
    assert len(new) == 1000
    # Local changes: flag 10 messages seen, delete 5, add one to Archive.
    cur = tmp_path / "Maildir" / "INBOX" / "cur"
    cur.mkdir(exist_ok=True)
    for i, path in enumerate(sorted(new)[:15]):
        base = path.name.split(":2,")[0]
        suffix = ":2,S" if i < 10 else ":2,T"
        path.rename(cur / (base + suffix))
    archive_new = tmp_path / "Maildir" / "Archive" / "new"
    archive_new.mkdir(parents=True, exist_ok=True)
    (archive_new / "1700000000.local.test").write_bytes(message("local one"))
    _mbsync(conf)
    inbox = imap.mailbox("INBOX")
    msgs = imap.store.read_now(lambda c: mailq.list_messages(c, inbox.id))
    assert len(msgs) == 995
    assert sum("\\Seen" in m.flags for m in msgs) == 10
    archive = imap.mailbox("Archive")
    assert len(imap.store.read_now(lambda c: mailq.list_messages(c, archive.id))) == 1
    # Server-side change flows back: flag a message on the server, sync again.
    imap.store.write_sync(lambda c: mailq.store_flags(c, inbox.id, [msgs[-1].uid],
                                                      {"\\Flagged"}, "add"))
    _mbsync(conf)
    flagged = [p for p in cur.iterdir() if ":2," in p.name and "F" in p.name.split(":2,")[1]]
    assert len(flagged) == 1


def test_fetchmail(imap: ImapEnv, tmp_path: Path) -> None:
    program = _need("fetchmail")
    for i in range(5):
        imap.deliver(message(f"fm {i}"))
    rc = tmp_path / "fetchmailrc"
    out = tmp_path / "out.mbox"
    rc.write_text(f"""
poll 127.0.0.1 with proto IMAP port {imap.tls_port}
  user "{ALICE}" there with password "{PASSWORD}" is "local" here
  ssl sslcertck sslcertfile "{imap.ca_file}" sslcommonname localhost
  keep
  mda "/bin/sh -c 'cat >> {out}'"
""")
    rc.chmod(0o600)
    env = dict(os.environ, HOME=str(tmp_path), FETCHMAILHOME=str(tmp_path))
    proc = subprocess.run([program, "-f", str(rc), "--nodetach", "--nosyslog"],
                          capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert out.read_bytes().count(b"Subject: fm ") == 5


def test_neomutt_batch(imap: ImapEnv, tmp_path: Path) -> None:
    program = _need("neomutt")
    _need("script")
    imap.deliver(message("for neomutt"))
    muttrc = tmp_path / "muttrc"
    muttrc.write_text(f"""
set imap_pass = "{PASSWORD}"
set ssl_ca_certificates_file = "{imap.ca_file}"
set header_cache = ""
set message_cachedir = ""
set mbox_type = mbox
set confirmappend = no
set confirmcreate = no
set wait_key = no
""")
    save = tmp_path / "saved.mbox"
    url = f"imaps://{ALICE.replace('@', '%40')}@localhost:{imap.tls_port}/INBOX"
    # neomutt wants a terminal: run it under script(1) with keys pushed from the command
    # line: tag all, copy the tagged messages to a local mbox, quit.
    keys = f"<tag-pattern>~A<enter><tag-prefix><copy-message>{save}<enter><quit>"
    cmd = [program, "-n", "-F", str(muttrc), "-f", url, "-e", f"push '{keys}'"]
    env = dict(os.environ, HOME=str(tmp_path), TERM="xterm")
    proc = subprocess.run(["script", "-qec", shlex.join(cmd), "/dev/null"], capture_output=True,
                          timeout=60, env=env, stdin=subprocess.DEVNULL)
    assert save.exists(), proc.stdout[-2000:]
    assert b"Subject: for neomutt" in save.read_bytes()
