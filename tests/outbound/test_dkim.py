"""DKIM signing (RFC 6376 relaxed/relaxed, RFC 8463 Ed25519), key rotation, and the
`keepmail dkim` / `keepmail queue` commands."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import dkim as dkimpy
from click.testing import CliRunner

from keepmail.config import render_default_config
from keepmail.mailauth import dkim_sign
from keepmail.outbound import commands
from keepmail.outbound.dkimkeys import DkimError, DkimKeys
from keepmail.store import Store

MSG = (b"From: Alice <alice@a.test>\r\nTo: bob@b.test\r\nSubject:  Hello \t there \r\n"
       b"\tfolded\r\nDate: Mon, 30 Nov 2026 10:00:00 +0000\r\n\r\n"
       b"Hi  Bob \t\r\n\r\n\r\n")


def test_relaxed_canonicalization() -> None:
    assert dkim_sign.relaxed_header(b"SubJect : A  b\t \r\n\tc \r\n") == b"subject:A b c\r\n"
    assert dkim_sign.relaxed_body(b" C \r\nD \t E\r\n\r\n\r\n") == b" C\r\nD E\r\n"
    assert dkim_sign.relaxed_body(b"") == b""


def test_signatures_verify_with_debian_dkimpy(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "data")
    try:
        keys = DkimKeys(store)
        keys.ensure("a.test")
        signing = keys.signing_keys("a.test")
        assert sorted(k.algorithm for k in signing) == ["ed25519-sha256", "rsa-sha256"]
        signed = dkim_sign.sign(MSG, signing) + MSG
        records = {n: v for n, _t, v in keys.dns_records("a.test")}
        # pip's dkimpy (RSA; it lacks PyNaCl here) in process...
        rsa_index = 0 if b"a=rsa-sha256" in signed.split(b"DKIM-Signature")[1] else 1
        assert dkimpy.DKIM(signed).verify(
            idx=rsa_index, dnsfunc=lambda name, timeout=5: records[
                name.decode().rstrip(".")].encode())
        # ...and Debian's python3-dkim for both signatures, and against oversigning.
        added_from = b"From: mallory@evil.test\r\n" + signed
        script = (
            "import dkim, json, sys\n"
            "recs = json.load(open(sys.argv[1]))\n"
            "f = lambda n, timeout=5: recs[n.decode().rstrip('.')].encode()\n"
            "for path in sys.argv[2:]:\n"
            "    m = open(path, 'rb').read()\n"
            "    print(dkim.DKIM(m).verify(idx=0, dnsfunc=f), dkim.DKIM(m).verify(idx=1,"
            " dnsfunc=f))\n")
        (tmp_path / "recs.json").write_text(json.dumps(records))
        (tmp_path / "good.eml").write_bytes(signed)
        (tmp_path / "bad.eml").write_bytes(added_from)
        out = subprocess.run(["/usr/bin/python3", "-c", script, str(tmp_path / "recs.json"),
                              str(tmp_path / "good.eml"), str(tmp_path / "bad.eml")],
                             capture_output=True, text=True, check=True).stdout.split("\n")
        assert out[0] == "True True"
        assert out[1] == "False False"
    finally:
        store.close()


def test_rotation_and_retirement(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "data")
    try:
        keys = DkimKeys(store)
        first = keys.ensure("a.test")
        now = time.time()
        second = keys.rotate("a.test", activate_after=3600, now=now)
        assert {k.selector for k in second} != {k.selector for k in first}
        # The new generation is published at once but signs only after an hour.
        assert len(keys.dns_records("a.test")) == 4
        old = {k.selector for k in first}
        assert {k.selector for k in keys.signing_keys("a.test", now)} == old
        keys._cache.clear()
        assert {k.selector for k in keys.signing_keys("a.test", now + 3601)} == \
            {k.selector for k in second}
        for info in second:
            path = store.data_dir / "keys" / "dkim" / "a.test" / f"{info.selector}.pem"
            assert path.stat().st_mode & 0o777 == 0o600
        keys.retire("a.test", first[0].generation)
        assert len(keys.dns_records("a.test")) == 2
        try:
            keys.retire("a.test", second[0].selector)
            keys.retire("a.test", second[1].selector)
            raise AssertionError("retiring the last key must be refused")
        except DkimError as exc:
            assert "last key" in str(exc)
    finally:
        store.close()


def test_commands(tmp_path: Path) -> None:
    config = tmp_path / "keepmail.toml"
    config.write_text(render_default_config({"server": {"data_dir": "data",
                                                        "domains": ["a.test"]}}))
    runner = CliRunner()
    rotated = runner.invoke(commands.dkim, ["rotate", "--config", str(config), "a.test"])
    assert rotated.exit_code == 0, rotated.output
    assert "._domainkey.a.test. IN TXT \"v=DKIM1; k=rsa; p=" in rotated.output
    assert "k=ed25519" in rotated.output
    listed = runner.invoke(commands.dkim, ["list", "--config", str(config)])
    assert listed.output.count("signing") == 2
    refused = runner.invoke(commands.dkim, ["retire", "--config", str(config), "a.test",
                                            listed.output.split()[1]])
    assert refused.exit_code != 0 and "last key" in refused.output
    queue = runner.invoke(commands.queue, ["list", "--config", str(config)])
    assert queue.exit_code == 0 and "0 message(s)" in queue.output
    missing = runner.invoke(commands.queue, ["hold", "--config", str(config), "42"])
    assert missing.exit_code != 0 and "no such queued message" in missing.output
