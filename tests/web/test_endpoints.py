"""Well-known endpoints, metrics, the DNS assistant, dashboard figures and sender lists."""

from __future__ import annotations

import sqlite3
import time
import xml.etree.ElementTree as ET

import httpx
import pytest

from keepmail.store import migrations, senderlists
from tests.web.conftest import Console


def test_mta_sts_policy(console: Console) -> None:
    r = console.client().get("/.well-known/mta-sts.txt")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert r.text.splitlines() == ["version: STSv1", "mode: testing", "mx: mx.example.test",
                                   "max_age: 604800"]


@pytest.mark.parametrize("path", ["/mail/config-v1.1.xml",
                                  "/.well-known/autoconfig/mail/config-v1.1.xml"])
def test_thunderbird_autoconfig(console: Console, path: str) -> None:
    r = console.client().get(path, params={"emailaddress": "bob@example.test"})
    root = ET.fromstring(r.content)
    incoming = root.find("emailProvider/incomingServer")
    assert root.find("emailProvider/domain").text == "example.test"
    assert incoming.find("hostname").text == "mx.example.test"
    assert incoming.find("username").text == "%EMAILADDRESS%"


def test_outlook_autodiscover(console: Console) -> None:
    body = ('<?xml version="1.0"?><Autodiscover xmlns="http://schemas.microsoft.com/exchange/'
            'autodiscover/outlook/requestschema/2006"><Request><EMailAddress>'
            'bob@example.test</EMailAddress><AcceptableResponseSchema>http://schemas.'
            'microsoft.com/exchange/autodiscover/outlook/responseschema/2006a'
            '</AcceptableResponseSchema></Request></Autodiscover>')
    client = console.client()
    r = client.post("/autodiscover/autodiscover.xml", content=body,
                    headers={"content-type": "text/xml"})
    assert r.status_code == 200
    assert "<LoginName>bob@example.test</LoginName>" in r.text
    assert "<Type>IMAP</Type>" in r.text and "<Type>SMTP</Type>" in r.text
    hostile = body.replace("bob@example.test", "&lt;x&gt;\"'@example.test")
    r = client.post("/Autodiscover/Autodiscover.xml", content=hostile)
    ET.fromstring(r.content)       # still well-formed: the address is escaped
    bomb = '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;</x>'
    assert client.post("/autodiscover/autodiscover.xml", content=bomb).status_code == 400


def test_metrics_from_loopback(console: Console) -> None:
    console.send("m@elsewhere.test", "bob@example.test", "for the metrics")
    wanted = 'keepmail_traces_last_24h{kind="message",status="accepted"}'
    deadline = time.monotonic() + 10
    while True:   # the recorder writes in the background, a fraction of a second later
        r = console.client().get("/metrics")
        assert r.status_code == 200
        if wanted in r.text or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert wanted in r.text
    assert "keepmail_accounts " in r.text
    assert "keepmail_tls_certificate_expiry_timestamp_seconds" in r.text


def test_dns_assistant_flags_wrong_spf(console: Console, admin: httpx.Client) -> None:
    page = admin.get("/admin/dns/example.test").text
    assert "does not include this server&#39;s IP 127.0.0.1" in page
    assert "v=spf1 ip4:192.0.2.1 ip4:127.0.0.1 -all" in page     # the exact fix
    assert "DMARC only monitors" in page
    assert "_mta-sts.example.test." in page
    console.dns.replace("example.test", "TXT", "v=spf1 mx -all")
    try:
        page = admin.get("/admin/dns/example.test").text
        assert "SPF authorizes this server" in page
    finally:
        console.dns.replace("example.test", "TXT", "v=spf1 ip4:192.0.2.1 -all")


def test_dashboard_counts_and_chart(console: Console, admin: httpx.Client) -> None:
    console.send("d@elsewhere.test", "bob@example.test", "dashboard one")
    console.wait_trace(admin, subject="dashboard")
    page = admin.get("/admin").text
    assert "<svg" in page and 'class="s0"' in page
    received = page.split('<th scope="row">Received</th><td class="num">')[1].split("<")[0]
    assert int(received) >= 1


def test_pages_render_for_admin(admin: httpx.Client) -> None:
    for path in ("/admin/users", "/admin/domains", "/admin/aliases", "/admin/dkim",
                 "/admin/queue", "/admin/quarantine", "/admin/held", "/admin/dns",
                 "/admin/health", "/trace?kind=web", "/me", "/me/senders",
                 "/me/app-passwords", "/me/password", "/account/totp"):
        r = admin.get(path)
        assert r.status_code == 200, path


def test_sender_lists() -> None:
    conn = sqlite3.connect(":memory:")
    conn.row_factory = sqlite3.Row
    conn.execute("CREATE TABLE schema_versions (component TEXT PRIMARY KEY, version INTEGER)")
    for statement in migrations._statements(senderlists.SCHEMA[0]):
        conn.execute(statement)
    senderlists.add(conn, 1, "block", "@Example.com")
    senderlists.add(conn, 1, "allow", "<Boss@example.com>")
    senderlists.add(conn, 2, "allow", "@example.com")
    assert senderlists.lookup(conn, 1, "boss@example.com") == "allow"
    assert senderlists.lookup(conn, 1, "spam@news.example.com") == "block"
    assert senderlists.lookup(conn, 1, "x@example.org") is None
    assert senderlists.lookup(conn, 2, "spam@example.com") == "allow"
    senderlists.add(conn, 1, "allow", "example.com")      # moves the domain to "allow"
    assert senderlists.lookup(conn, 1, "x@example.com") == "allow"
    assert senderlists.remove(conn, 1, "@example.com")
    for bad in ("", "no spaces@x.com", "@localhost", "a@b"):
        with pytest.raises(senderlists.SenderListError):
            senderlists.add(conn, 1, "block", bad)
