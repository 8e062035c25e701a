"""The [outbound] section of keepmail.toml: queue, delivery and DKIM settings.

Same style as keepmail.config: each field carries its help text, so the
commented file `keepmail init` writes documents itself. Test-only overrides
(remote port, MTA-STS address, CA bundle) are ordinary settings because the
tests run real peers on loopback, where port 25 and public CAs do not exist.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


def opt(default: Any, help: str) -> Any:
    # Same shape as keepmail.config.opt, defined here because config.py imports
    # this module (importing config from here would be circular).
    return field(default=default, metadata={"help": help})


@dataclass
class OutboundSection:
    remote_port: int = opt(25, "TCP port of remote MX hosts (RFC 5321 says 25; change only "
                           "for tests or a smarthost setup).")
    bind_address: str = opt("", "Local address outgoing connections come from; empty: "
                            "chosen by the system. Must match your SPF record.")
    lifetime_hours: float = opt(120.0, "Hours a message stays queued before it bounces "
                                "(RFC 5321 4.5.4.1 suggests 4-5 days).")
    delay_notice_hours: float = opt(4.0, "Hours after which the sender is told a message is "
                                    "delayed (0: never).")
    retry_base: float = opt(300.0, "Seconds before the first retry; each retry waits twice "
                            "as long as the one before.")
    retry_max: float = opt(3600.0, "Longest wait between two attempts, in seconds.")
    max_connections: int = opt(50, "Most outgoing SMTP connections at once.")
    max_per_domain: int = opt(4, "Most connections at once to one destination domain.")
    max_rcpts_per_transaction: int = opt(100, "Recipients per SMTP transaction (RFC 5321 "
                                         "4.5.3.1.8 requires servers to take at least 100).")
    idle_seconds: float = opt(5.0, "Seconds a connection is kept open for more messages to "
                              "the same destination.")
    connect_timeout: float = opt(30.0, "Seconds to wait for a remote server to connect and "
                                 "greet.")
    command_timeout: float = opt(300.0, "Seconds to wait for a reply to one SMTP command "
                                 "(RFC 5321 4.5.3.2 says up to 10 minutes for DATA).")
    ca_file: str = opt("", "CA bundle for verifying remote certificates (MTA-STS, the HTTPS "
                       "policy fetch); empty: the system's trust store.")
    mta_sts: bool = opt(True, "Honour MTA-STS policies (RFC 8461) of destination domains.")
    mta_sts_address: str = opt("", 'Connect here ("ip:port") instead of '
                               "mta-sts.<domain>:443 to fetch policies; for tests only.")
    dane: bool = opt(True, "Honour DANE TLSA records (RFC 7672); needs a validating "
                     "resolver in [dns] nameservers.")
    dkim_sign: bool = opt(True, "DKIM-sign mail submitted for our domains (RSA and Ed25519).")
    dkim_activate_hours: float = opt(0.0, "After `keepmail dkim rotate`, hours before the new "
                                     "key signs (time to publish its DNS record).")
