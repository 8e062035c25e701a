"""Two organizations on loopback: a user of a.test submits (587, STARTTLS, AUTH) to
bob@b.test; A's agent finds B through a real DNS server and delivers to B's MX;
B's mailbox has it, and Debian's own DKIM verifiers (python3-dkim's dkimverify,
opendkim-testmsg) accept both of A's signatures (RSA and Ed25519)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from keepmail.outbound.dkimkeys import DkimKeys
from tests.support.postfix import free_port

from .conftest import CA, FAST, asubmit, make_org, message, run, wait_for, with_settings
from .peers import LocalDns

A_HOST, B_HOST = "127.0.0.61", "127.0.0.62"
VERIFIER_DNS = "127.0.0.153"   # port 53 here, for tools that only read resolv.conf


def txt(value: str) -> str:
    """A TXT rdata split in 255-byte strings (RFC 1035 3.3.14)."""
    return " ".join(f'"{value[i:i + 250]}"' for i in range(0, len(value), 250))


def zone_for(domain: str, host: str, keys: DkimKeys) -> str:
    lines = [f"{domain}. 60 IN MX 10 mail.{domain}.",
             f"mail.{domain}. 60 IN A {host}",
             f'{domain}. 60 IN TXT "v=spf1 ip4:{host} -all"',
             f'_dmarc.{domain}. 60 IN TXT "v=DMARC1; p=reject; adkim=s; aspf=s"']
    lines += [f"{name}. 60 IN TXT {txt(value)}" for name, _t, value in keys.dns_records(domain)]
    return "\n".join(lines) + "\n"


def in_namespace(command: list[str], resolv: Path, stdin: bytes) -> subprocess.CompletedProcess[
        bytes]:
    """Run command with /etc/resolv.conf pointing at our DNS (private mount namespace)."""
    script = f'mount --bind "{resolv}" /etc/resolv.conf && exec "$@"'
    return subprocess.run(["unshare", "--mount", "--", "sh", "-c", script, "sh", *command],
                          input=stdin, capture_output=True, timeout=60)


def namespaces_work() -> bool:
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "--mount", "true"], capture_output=True)
    return probe.returncode == 0


def test_two_organizations_dkim_verified_by_debian_tools(tmp_path: Path, ca: CA) -> None:
    mx_port = free_port(A_HOST)
    dns = LocalDns("").start()
    settings = with_settings(FAST, remote_port=mx_port)
    a = make_org(tmp_path, "a", A_HOST, "a.test", dns.nameserver, ["alice@a.test"],
                 settings=with_settings(settings, bind_address=A_HOST))
    b = make_org(tmp_path, "b", B_HOST, "b.test", dns.nameserver, ["bob@b.test"],
                 settings=with_settings(settings, bind_address=B_HOST))
    zone = zone_for("a.test", A_HOST, a.dkim) + zone_for("b.test", B_HOST, b.dkim)
    dns.set_zone(zone)

    async def go() -> bytes:
        await a.start(ca, mx_port=mx_port)
        await b.start(ca, mx_port=mx_port)
        try:
            await asubmit(A_HOST, a.port, "alice@a.test", "alice@a.test", ["bob@b.test"],
                          message("Alice <alice@a.test>", "Bob <bob@b.test>",
                                  subject="across the street",
                                  body="Hello Bob,\r\n\r\nlunch?  \r\n"))
            await wait_for(lambda: len(b.inbox("bob@b.test")) == 1, what="B received it")
            await wait_for(lambda: a.queue_size() == (0, 0), what="A's queue empty")
            [got] = b.inbox("bob@b.test")
            conns = [e[2] for e in a.events("connection")]
            assert any('"tls": "TLSv1.3"' in c and '"policy": "opportunistic"' in c
                       for c in conns), conns
            received = [e[2] for e in b.events("connect")]
            assert any(A_HOST in e for e in received)   # came from A's bind address
            return got
        finally:
            await a.stop()
            await b.stop()

    try:
        got = run(go())
    finally:
        dns.stop()
    assert b"Subject: across the street" in got
    assert got.count(b"DKIM-Signature:") == 2
    check_with_debian_verifiers(tmp_path, zone, got)


def check_with_debian_verifiers(tmp_path: Path, zone: str, signed: bytes) -> None:
    if not namespaces_work():
        pytest.skip("needs root and unshare to point the verifiers' resolv.conf at test DNS")
    try:
        verifier_dns = LocalDns(zone, host=VERIFIER_DNS, port=53).start()
    except OSError as exc:
        pytest.skip(f"cannot serve DNS on {VERIFIER_DNS}:53: {exc}")
    resolv = tmp_path / "resolv.conf"
    resolv.write_text(f"nameserver {VERIFIER_DNS}\n")
    try:
        for index in (0, 1):
            result = in_namespace(["/usr/bin/dkimverify", "--index", str(index)], resolv,
                                  signed.replace(b"\r\n", b"\n"))
            assert result.returncode == 0, result
            assert b"signature ok" in result.stdout
        if shutil.which("opendkim-testmsg"):
            # libopendkim knows RSA only; it verifies the first RSA signature it meets.
            result = in_namespace(["opendkim-testmsg"], resolv, signed.replace(b"\r\n", b"\n"))
            assert result.returncode == 0, result
        tampered = signed.replace(b"lunch?", b"dinner?")
        for tool in (["/usr/bin/dkimverify"], ["opendkim-testmsg"]):
            result = in_namespace(tool, resolv, tampered.replace(b"\r\n", b"\n"))
            assert result.returncode != 0, (tool, result)
    finally:
        verifier_dns.stop()
