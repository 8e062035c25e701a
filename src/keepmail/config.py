"""keepmail.toml: typed sections, each key documented where it is defined.

Every field carries its help text in its metadata; `render_default_config`
writes the commented file `keepmail init` produces from these definitions, so
the documentation cannot drift from the code. Loading checks every key and
value and raises ConfigError naming the file, the key, the bad value and
what is allowed — never a traceback.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .abuse.settings import AbuseSection
from .options import opt
from .outbound.settings import OutboundSection
from .web.settings import WebSection

STANDARD_PORTS = {"smtp": 25, "submissions": 465, "submission": 587, "imap": 143,
                  "imaps": 993, "web": 8443}


class ConfigError(Exception):
    """A problem in the configuration, worded for the operator."""




@dataclass
class ServerSection:
    hostname: str = opt("localhost", "This server's name: greeting, Received headers, "
                        "TLS certificate and the MX record point to it.")
    data_dir: str = opt("data", "Folder for the database (mail, encrypted), keys and TLS "
                        "material. Relative paths are relative to this file.")
    key_file: str = opt("", "File holding the 256-bit storage key that encrypts mail at rest. "
                        "Empty: <data_dir>/keys/storage.key. Keep a copy apart from backups "
                        "of data_dir: without it the mail cannot be read.")
    listen: list[str] = opt(lambda: ["127.0.0.1"], "Addresses to listen on, e.g. "
                            '["0.0.0.0", "::"] on a public server.', factory=True)
    domains: list[str] = opt(list, "Mail domains created at start if missing (domains can "
                             "also be managed with `keepmail domain`).", factory=True)


@dataclass
class PortsSection:
    smtp: int = opt(25, "MX: mail from other servers (0 disables).")
    submission: int = opt(587, "Submission with STARTTLS for your users' mail programs.")
    submissions: int = opt(465, "Submission over implicit TLS.")
    imap: int = opt(143, "IMAP with STARTTLS.")
    imaps: int = opt(993, "IMAP over implicit TLS.")
    web: int = opt(8443, "Admin console and self-service (HTTPS).")


@dataclass
class TlsSection:
    cert_file: str = opt("", "PEM certificate chain. Empty: a self-signed certificate is made "
                         "in <data_dir>/tls (fine to start; replace it with a real one).")
    key_file: str = opt("", "PEM private key for cert_file.")


@dataclass
class SmtpSection:
    max_message_size: int = opt(50 * 1024 * 1024, "Largest message accepted, in bytes.")
    max_recipients: int = opt(1000, "Most recipients in one message.")
    max_messages_per_connection: int = opt(
        1000, "Most messages one SMTP connection may send; the next MAIL FROM gets 421 and "
        "the sender reconnects (Exim's default too). Raise it for a busy internal relay.")
    max_connections: int = opt(1000, "Most simultaneous SMTP connections per listener.")
    max_connections_per_ip: int = opt(20, "Most simultaneous SMTP connections from one IP.")
    command_timeout: float = opt(300.0, "Seconds to wait for the next SMTP command.")
    mx_processes: int = opt(1, "Processes serving the MX port (25). Python uses one CPU "
                            "core per process: on a busy MX set this to the number of "
                            "cores (0: that many automatically). The per-IP limits are "
                            "shared out between the processes.")


@dataclass
class DnsSection:
    nameservers: list[str] = opt(list, 'Resolvers as "ip" or "ip:port"; empty: the '
                                 "system's /etc/resolv.conf. Use a validating resolver "
                                 "for DANE.", factory=True)
    timeout: float = opt(5.0, "Seconds before a DNS query counts as a temporary error.")


@dataclass
class RecorderSection:
    retention_days: float = opt(90.0, "Days the flight recorder keeps events and traces.")


@dataclass
class SpamSection:
    classifier: bool = opt(True, "Score incoming mail with the learning classifier (and learn "
                           "from users' Junk moves). Turn off only behind another filter "
                           "or to measure plain acceptance speed.")
    junk_score: float = opt(5.0, "Score from which a message goes to the Junk folder.")
    quarantine_score: float = opt(10.0, "Score from which a message is quarantined.")
    reject_score: float = opt(15.0, "Score from which a message is refused during SMTP.")


@dataclass
class InboundSection:
    greet_delay: float = opt(0.0, "Seconds to wait before the SMTP greeting; a client that "
                             "talks first (an early talker, typical of spam engines) is "
                             "refused. 0 turns the test off; 2 to 5 is usual when on.")
    max_connections_per_minute: int = opt(60, "New SMTP connections one IP may open per "
                                          "minute on the MX (0: no limit).")
    max_messages_per_minute: int = opt(120, "Messages one IP may send per minute to the MX "
                                       "(0: no limit).")
    greylisting: bool = opt(True, "Delay suspicious first contacts with a temporary failure "
                            "(real servers retry, most spam engines do not).")
    greylist_min_score: float = opt(2.0, "Only first contacts scoring at least this much "
                                    "(before content checks) are greylisted; 0 greylists "
                                    "every new sender.")
    greylist_delay: float = opt(300.0, "Seconds before a greylisted retry is accepted.")
    dnsbl_zones: list[str] = opt(list, "DNS block lists to query, e.g. "
                                 '["zen.spamhaus.org"]. Empty by default: keepmail contacts '
                                 "no third party unless you say so.", factory=True)
    dnswl_zones: list[str] = opt(list, "DNS allow lists to query (a listing lowers the "
                                 "score).", factory=True)
    sender_checks: bool = opt(True, "SPF, DKIM, DMARC, ARC, reverse DNS and DNS lists on "
                              "incoming mail. Turn off only behind another filter that "
                              "does them (or to measure plain acceptance speed).")
    quarantine_days: float = opt(30.0, "Days quarantined messages are kept before deletion.")
    authserv_id: str = opt("", "Name in Authentication-Results headers; empty: the "
                           "server hostname.")


@dataclass
class Config:
    server: ServerSection = field(default_factory=ServerSection)
    ports: PortsSection = field(default_factory=PortsSection)
    tls: TlsSection = field(default_factory=TlsSection)
    smtp: SmtpSection = field(default_factory=SmtpSection)
    dns: DnsSection = field(default_factory=DnsSection)
    recorder: RecorderSection = field(default_factory=RecorderSection)
    spam: SpamSection = field(default_factory=SpamSection)
    inbound: InboundSection = field(default_factory=InboundSection)
    outbound: OutboundSection = field(default_factory=OutboundSection)
    abuse: AbuseSection = field(default_factory=AbuseSection)
    web: WebSection = field(default_factory=WebSection)
    path: Path = field(default=Path("keepmail.toml"), metadata={"internal": True})

    # -- derived paths --------------------------------------------------------
    def resolve(self, value: str) -> Path:
        p = Path(value).expanduser()
        return p if p.is_absolute() else (self.path.parent / p).resolve()

    @property
    def mx_processes(self) -> int:
        wanted = self.smtp.mx_processes
        return wanted if wanted > 0 else max(1, min(os.cpu_count() or 1, 8))

    @property
    def data_dir(self) -> Path:
        return self.resolve(self.server.data_dir)

    @property
    def key_file(self) -> Path:
        if self.server.key_file:
            return self.resolve(self.server.key_file)
        return self.data_dir / "keys" / "storage.key"

    def port(self, name: str, offset: int = 0) -> int:
        port = int(getattr(self.ports, name))
        return port + offset if port else 0


def _sections() -> list[dataclasses.Field[Any]]:
    return [f for f in dataclasses.fields(Config) if not f.metadata.get("internal")]


def load(path: Path) -> Config:
    """Read and validate a config file."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file (create one with `keepmail init`)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    return from_dict(data, path)


def from_dict(data: dict[str, Any], path: Path) -> Config:
    config = Config(path=path.resolve())
    sections = {f.name: f for f in _sections()}
    for name, values in data.items():
        if name not in sections:
            raise ConfigError(f"{path}: unknown section [{name}]; allowed sections: "
                              f"{', '.join(sections)}")
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: [{name}] must be a table of keys, like [{name}] ...")
        setattr(config, name, _load_section(path, name, sections[name], values))
    _check(config)
    return config


def _load_section(path: Path, name: str, section: dataclasses.Field[Any],
                  values: dict[str, Any]) -> Any:
    cls = typing.get_type_hints(Config)[section.name]
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(f"{path}: unknown key {key!r} in [{name}]; allowed keys: "
                              f"{', '.join(fields)}")
        kwargs[key] = _coerce(path, f"[{name}] {key}", value, hints[key])
    return cls(**kwargs)


def _coerce(path: Path, where: str, value: Any, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin in (list, types.GenericAlias) or hint is list:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f'{path}: {where} = {value!r}: must be a list of strings, '
                              f'like ["a", "b"]')
        return value
    expected = {int: "a whole number", float: "a number", str: "a string in quotes",
                bool: "true or false"}[hint]
    ok = isinstance(value, hint) and not (hint is int and isinstance(value, bool))
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not ok:
        raise ConfigError(f"{path}: {where} = {value!r}: must be {expected}")
    return value


def _check(config: Config) -> None:
    path = config.path
    for name in STANDARD_PORTS:
        port = getattr(config.ports, name)
        if not 0 <= port <= 65535:
            raise ConfigError(f"{path}: [ports] {name} = {port}: must be 0 (off) to 65535")
    if config.smtp.max_message_size < 1024:
        raise ConfigError(f"{path}: [smtp] max_message_size = {config.smtp.max_message_size}: "
                          "must be at least 1024 bytes")
    for key in ("max_recipients", "max_messages_per_connection"):
        if getattr(config.smtp, key) < 1:
            raise ConfigError(f"{path}: [smtp] {key} = {getattr(config.smtp, key)}: must be "
                              "at least 1")
    if not 0 <= config.smtp.mx_processes <= 64:
        raise ConfigError(f"{path}: [smtp] mx_processes = {config.smtp.mx_processes}: must be "
                          "1 to 64, or 0 for one per CPU core")
    if not config.server.listen:
        raise ConfigError(f'{path}: [server] listen = []: give at least one address, like '
                          '["127.0.0.1"]')
    s = config.spam
    if not s.junk_score <= s.quarantine_score <= s.reject_score:
        raise ConfigError(f"{path}: [spam] scores must satisfy junk_score <= quarantine_score "
                          f"<= reject_score (now {s.junk_score}, {s.quarantine_score}, "
                          f"{s.reject_score})")
    if bool(config.tls.cert_file) != bool(config.tls.key_file):
        raise ConfigError(f"{path}: [tls] cert_file and key_file go together: set both or "
                          "neither")


def render_default_config(overrides: dict[str, dict[str, Any]] | None = None) -> str:
    """The commented keepmail.toml, generated from the field definitions."""
    overrides = overrides or {}
    out = ["# keepmail configuration. Every key is optional; shown values are defaults",
           "# unless `keepmail init` set them for you.", ""]
    hints = typing.get_type_hints(Config)
    for section in _sections():
        cls = hints[section.name]
        out.append(f"[{section.name}]")
        for f in dataclasses.fields(cls):
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING \
                else f.default  # type: ignore[misc]
            value = overrides.get(section.name, {}).get(f.name, default)
            for line in _wrap(f.metadata["help"]):
                out.append(f"# {line}")
            out.append(f"{f.name} = {_toml_value(value)}")
        out.append("")
    return "\n".join(out)


def _wrap(text: str, width: int = 76) -> list[str]:
    lines, current = [], ""
    for word in text.split():
        if current and len(current) + 1 + len(word) > width:
            lines.append(current)
            current = word
        else:
            current = f"{current} {word}".strip()
    return [*lines, current]


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    escaped = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'
