"""SRS rewriting and reversal; Authentication-Results building and byte-exact removal."""

from __future__ import annotations

import pytest

from keepmail.mailauth.authresults import MethodResult, authserv_id_of, header_field, remove_ours
from keepmail.mailauth.srs import Srs, SrsError

NOW = 1_700_000_000.0


def test_srs0_roundtrip_case_insensitive_and_expiry() -> None:
    srs = Srs(b"secret", "fwd.test")
    addr = srs.forward("Alice@Example.com", now=NOW)
    assert addr.startswith("SRS0=") and addr.endswith("@fwd.test")
    assert srs.reverse(addr, now=NOW) == "Alice@Example.com"
    assert srs.reverse(addr.lower(), now=NOW).lower() == "alice@example.com"
    with pytest.raises(SrsError, match="days old"):
        srs.reverse(addr, now=NOW + 30 * 86400)
    with pytest.raises(SrsError, match="hash"):
        Srs(b"other", "fwd.test").reverse(addr, now=NOW)
    with pytest.raises(SrsError):
        srs.reverse(addr.replace("Alice", "Mallory"), now=NOW)
    assert srs.forward("", now=NOW) == ""


def test_srs1_chain() -> None:
    first, second = Srs(b"a", "one.test"), Srs(b"b", "two.test")
    srs0 = first.forward("u@origin.test", now=NOW)
    srs1 = second.forward(srs0, now=NOW)
    assert srs1.startswith("SRS1=") and "one.test==" in srs1
    assert second.reverse(srs1, now=NOW) == srs0
    assert first.reverse(second.reverse(srs1, now=NOW), now=NOW) == "u@origin.test"
    assert Srs(b"c", "three.test").forward(srs1, now=NOW).count("one.test==") == 1


def test_header_building_quotes_values() -> None:
    f = header_field("mx.ours.test", [MethodResult("dkim", "fail", "body hash mismatch",
                                                   [("header.d", "x.test"), ("header.b", "ab/c+=")])])
    assert f == (b'Authentication-Results: mx.ours.test;\r\n\tdkim=fail reason="body hash mismatch"'
                 b' header.d=x.test header.b="ab/c+="\r\n')
    assert header_field("mx.ours.test", []) == b"Authentication-Results: mx.ours.test; none\r\n"


def test_removal_is_byte_exact() -> None:
    raw = (b"Received: from x\r\n"
           b"Authentication-Results: (forged) MX.ours.test;\r\n  spf=pass\r\n"
           b"Authentication-Results: other.test; spf=fail\r\n"
           b"authentication-results:\"mx.ours.test\" 1; dkim=pass\r\n"
           b"X-Authentication-Results: mx.ours.test; keep\r\n"
           b"Subject: hi  \r\n\r\nAuthentication-Results: mx.ours.test; body stays\r\n")
    out = remove_ours(raw, "mx.ours.test")
    assert out == (b"Received: from x\r\nAuthentication-Results: other.test; spf=fail\r\n"
                   b"X-Authentication-Results: mx.ours.test; keep\r\nSubject: hi  \r\n\r\n"
                   b"Authentication-Results: mx.ours.test; body stays\r\n")
    assert remove_ours(out, "mx.ours.test") is out
    assert authserv_id_of(b"Authentication-Results: (a (nested) c) Host.Test; x") == "host.test"
