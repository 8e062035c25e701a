"""Keys, signed messages and resolvers shared by the mailauth tests."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Coroutine
from functools import lru_cache
from typing import Any, TypeVar

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from keepmail.dnsx.resolver import Resolver
from tests.support.dnsserver import DnsServer

T = TypeVar("T")

MESSAGE = (b"From: Alice <alice@example.test>\r\nTo: bob@dest.test\r\n"
           b"Subject:  hello   there\r\n\tfolded\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n"
           b"Message-ID: <1@example.test>\r\n\r\nHello  Bob \r\n\r\nBye.\r\n\r\n\r\n")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def resolver(server: DnsServer, **kw: Any) -> Resolver:
    kw.setdefault("timeout", 0.5)
    kw.setdefault("lifetime", 1.5)
    kw.setdefault("cache", False)
    return Resolver([server.nameserver], **kw)


def rsa_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    return _rsa_key(bits)   # one cache key per size, however the size is passed


@lru_cache(maxsize=4)
def _rsa_key(bits: int) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


@lru_cache(maxsize=1)
def ed_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


def rsa_pem(bits: int = 2048) -> bytes:
    return rsa_key(bits).private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.TraditionalOpenSSL,
                                       serialization.NoEncryption())


def rsa_record(bits: int = 2048, extra: str = "") -> str:
    der = rsa_key(bits).public_key().public_bytes(serialization.Encoding.DER,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo)
    return f"v=DKIM1; k=rsa; {extra}p={base64.b64encode(der).decode()}"


def ed_record(extra: str = "") -> str:
    raw = ed_key().public_key().public_bytes(serialization.Encoding.Raw,
                                             serialization.PublicFormat.Raw)
    return f"v=DKIM1; k=ed25519; {extra}p={base64.b64encode(raw).decode()}"


def sign_rsa(msg: bytes, selector: str = "r", domain: str = "example.test",
             **kw: Any) -> bytes:
    """`msg` with a dkimpy rsa-sha256 signature prepended."""
    kw.setdefault("include_headers", [b"from", b"to", b"subject", b"date"])
    return dkim.sign(msg, selector.encode(), domain.encode(), rsa_pem(), **kw) + msg


def sign_ed(msg: bytes, selector: str = "e", domain: str = "example.test") -> bytes:
    """`msg` with an ed25519-sha256 signature: dkimpy when PyNaCl is there, else ours."""
    try:
        import nacl.signing  # noqa: F401  (dkimpy needs it for ed25519)
    except ImportError:
        from keepmail.mailauth.dkim_sign import SigningKey, sign
        return sign(msg, [SigningKey(domain, selector, ed_key())]) + msg
    seed = ed_key().private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                  serialization.NoEncryption())
    return dkim.sign(msg, selector.encode(), domain.encode(), base64.b64encode(seed),
                     signature_algorithm=b"ed25519-sha256",
                     include_headers=[b"from", b"to", b"subject"]) + msg


def key_zone(domain: str = "example.test") -> dict[str, list[tuple[str, Any]]]:
    return {f"r._domainkey.{domain}": [("TXT", rsa_record())],
            f"e._domainkey.{domain}": [("TXT", ed_record())]}
