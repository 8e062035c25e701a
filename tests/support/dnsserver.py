"""A real authoritative DNS server for tests (dnslib, UDP and TCP, loopback).

keepmail's resolver is pointed at it through configuration (DESIGN.md,
principle 8), so every DNS path -- NXDOMAIN vs. no data, SERVFAIL, timeouts,
truncation and the TCP retry (RFC 1035 4.2.1, RFC 7766), the AD bit
(RFC 4035 3.2.3) for DANE -- runs over real sockets.

Zones are given as Python data or as master-file text::

    {"example.test.": [("MX", "10 mx.example.test."), ("TXT", "v=spf1 -all")],
     "mx.example.test": [("A", "127.0.0.10")]}

A TXT value may be one string (split into 255-byte character-strings as
needed) or a list of character-strings; other types take master-file rdata.
Names are case-insensitive, a trailing dot is optional.

Behaviour switches, all changeable while the server runs:
- `drop(name)`: queries for the name get no answer (client times out);
- `servfail(name)`: answer SERVFAIL;
- `secure(name)`: answers for the name carry AD=1 (as a validating resolver
  would set it); everything else has AD=0;
- UDP answers larger than the client's EDNS payload size (512 without EDNS)
  are sent empty with TC=1, so clients must retry over TCP.

CNAMEs inside the served data are followed (RFC 1034 4.3.2), `*.` wildcard
owners match names below them that do not exist, and a name that exists
only because names below it do (an empty non-terminal) answers NOERROR
with no data, not NXDOMAIN (RFC 8020).
"""

from __future__ import annotations

import socket
import socketserver
import struct
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from dnslib import CLASS, CNAME, MX, NS, PTR, QTYPE, RCODE, RR, TXT, DNSLabel, DNSRecord
from dnslib.server import TCPServer, UDPServer

Record = tuple[str, Any]          # ("MX", "10 mx.example.test.") or ("TXT", ["a", "b"])
ZoneData = Mapping[str, Sequence[Record]] | str

DEFAULT_TTL = 60


def norm(name: str) -> str:
    """Canonical key for a DNS name: lower case, no trailing dot."""
    return str(name).rstrip(".").lower()


def _tname(code: int) -> str:
    """Type mnemonic for a code; unknown codes as "TYPEnnn" (RFC 3597)."""
    try:
        return str(QTYPE[code])
    except Exception:
        return f"TYPE{code}"


def _txt_strings(value: Any) -> list[bytes]:
    """TXT rdata as character-strings of at most 255 bytes (RFC 1035 3.3.14)."""
    parts = [value] if isinstance(value, str | bytes) else list(value)
    out: list[bytes] = []
    for part in parts:
        raw = part.encode() if isinstance(part, str) else bytes(part)
        chunks = [raw[i:i + 255] for i in range(0, len(raw), 255)] or [b""]
        out.extend(chunks)
    # A TXT record has at least one character-string (RFC 1035 3.3.14).
    return out or [b""]


def owner_label(name: str) -> DNSLabel:
    """A DNSLabel built from raw labels, so odd test names (spaces, %) survive."""
    return DNSLabel([label.encode() for label in norm(name).split(".") if label])


def label_key(label: DNSLabel) -> str:
    """The lookup key of a wire name: raw labels joined, lower case."""
    return ".".join(part.decode("latin-1") for part in label.label).lower()


def make_rr(name: str, rtype: str, value: Any, ttl: int = DEFAULT_TTL) -> RR:
    """One resource record from (name, type, value)."""
    rtype = rtype.upper()
    owner = owner_label(name)
    if rtype in ("TXT", "SPF"):
        return RR(owner, QTYPE.reverse[rtype], CLASS.IN, ttl, TXT(_txt_strings(value)))
    if rtype in ("CNAME", "PTR", "NS"):
        rdata = {"CNAME": CNAME, "PTR": PTR, "NS": NS}[rtype](owner_label(str(value)))
        return RR(owner, QTYPE.reverse[rtype], CLASS.IN, ttl, rdata)
    if rtype == "MX":
        pref, exchange = value.split(None, 1) if isinstance(value, str) else value
        return RR(owner, QTYPE.MX, CLASS.IN, ttl, MX(owner_label(str(exchange)), int(pref)))
    text = value if isinstance(value, str) else " ".join(str(v) for v in value)
    rrs = RR.fromZone(f"placeholder. {ttl} IN {rtype} {text}")
    if len(rrs) != 1:
        raise ValueError(f"cannot build {rtype} record for {name!r} from {value!r}")
    return RR(owner, rrs[0].rtype, CLASS.IN, ttl, rrs[0].rdata)


def parse_zone_text(text: str) -> list[RR]:
    """Master-file text; lines are stripped so tests may indent their zones."""
    return RR.fromZone("\n".join(line.strip() for line in text.splitlines()))


def zone_records(zone: ZoneData | None) -> list[RR]:
    if zone is None:
        return []
    if isinstance(zone, str):
        return parse_zone_text(zone)
    return [make_rr(name, rtype, value) for name, recs in zone.items()
            for rtype, value in recs]


class _Quiet:
    """dnslib's servers log through this; tests want silence."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


class _Handler(socketserver.BaseRequestHandler):
    """One query over UDP or TCP (RFC 1035 4.2, 2-byte length prefix on TCP)."""

    def handle(self) -> None:
        server: Any = self.server
        tcp = server.socket_type == socket.SOCK_STREAM
        try:
            if tcp:
                self._handle_tcp(server.owner)
            else:
                data, sock = self.request
                reply = server.owner.answer(data, tcp=False)
                if reply is not None:
                    sock.sendto(reply, self.client_address)
        except (OSError, ValueError, struct.error):
            pass   # a broken query or a client gone: nothing to answer

    def _handle_tcp(self, owner: DnsServer) -> None:
        conn: socket.socket = self.request
        conn.settimeout(5)
        # A client may send several queries on one connection (RFC 7766 6.2.1).
        while True:
            head = self._recv_exact(conn, 2)
            if head is None:
                return
            data = self._recv_exact(conn, struct.unpack("!H", head)[0])
            if data is None:
                return
            reply = owner.answer(data, tcp=True)
            if reply is None:
                return
            conn.sendall(struct.pack("!H", len(reply)) + reply)

    @staticmethod
    def _recv_exact(conn: socket.socket, n: int) -> bytes | None:
        buf = b""
        while len(buf) < n:
            chunk = conn.recv(n - len(buf))
            if not chunk:
                return None
            buf += chunk
        return buf


class DnsServer:
    """Authoritative test DNS server on host:port (UDP and TCP) in background threads."""

    def __init__(self, zone: ZoneData | None = None, host: str = "127.0.0.1", port: int = 0,
                 secure: Iterable[str] | None = None) -> None:
        self.host = host
        self.port = port
        self._lock = threading.Lock()
        self._records: dict[str, list[RR]] = {}
        self._drop: set[tuple[str, str | None]] = set()
        self._servfail: set[tuple[str, str | None]] = set()
        self._secure: set[str] = {norm(n) for n in (secure or ())}
        self.queries: list[tuple[str, str, str]] = []   # (name, type, "udp"/"tcp")
        self._servers: list[socketserver.BaseServer] = []
        self._threads: list[threading.Thread] = []
        self.set_zone(zone)

    # -- life cycle ---------------------------------------------------------
    @property
    def nameserver(self) -> str:
        """The "ip:port" string keepmail's resolver configuration takes."""
        return f"{self.host}:{self.port}"

    def start(self) -> DnsServer:
        udp, tcp = self._bind()
        for srv in (udp, tcp):
            srv.owner = self   # type: ignore[attr-defined]
            srv.logger = _Quiet()   # type: ignore[attr-defined]
            thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05},
                                      daemon=True, name=f"dnsserver-{self.port}")
            thread.start()
            self._servers.append(srv)
            self._threads.append(thread)
        return self

    def _bind(self) -> tuple[UDPServer, TCPServer]:
        # With port 0, UDP picks a port and TCP must get the same one; retry
        # if another process holds that TCP port.
        for _ in range(20):
            udp = UDPServer((self.host, self.port), _Handler)
            port = udp.server_address[1]
            try:
                tcp = TCPServer((self.host, port), _Handler)
            except OSError:
                udp.server_close()
                if self.port:
                    raise
                continue
            self.port = port
            return udp, tcp
        raise OSError(f"no free port for UDP and TCP on {self.host}")

    def stop(self) -> None:
        for srv in self._servers:
            srv.shutdown()
            srv.server_close()
        for thread in self._threads:
            thread.join(timeout=2)
        self._servers.clear()
        self._threads.clear()

    def __enter__(self) -> DnsServer:
        return self.start() if not self._servers else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- data ---------------------------------------------------------------
    def set_zone(self, zone: ZoneData | None, secure: Iterable[str] | None = None) -> None:
        """Replace all records (and the secure names, when given)."""
        records: dict[str, list[RR]] = {}
        for rr in zone_records(zone):
            records.setdefault(label_key(rr.rname), []).append(rr)
        with self._lock:
            self._records = records
            if secure is not None:
                self._secure = {norm(n) for n in secure}

    def add(self, name: str, rtype: str, value: Any, ttl: int = DEFAULT_TTL) -> None:
        """Add one record to those already served for the name."""
        rr = make_rr(name, rtype, value, ttl)
        with self._lock:
            self._records.setdefault(norm(name), []).append(rr)

    def add_empty(self, name: str) -> None:
        """Make a name exist with no records (NOERROR, no data, instead of NXDOMAIN)."""
        with self._lock:
            self._records.setdefault(norm(name), [])

    def replace(self, name: str, rtype: str, values: Sequence[Any] | Any,
                ttl: int = DEFAULT_TTL) -> None:
        """Replace the records of one type at a name (a single value or a list)."""
        if isinstance(values, str | bytes) or (rtype.upper() != "TXT" and not
                                               isinstance(values, list)):
            values = [values]
        new = [make_rr(name, rtype, v, ttl) for v in values]
        code = QTYPE.reverse[rtype.upper()]
        with self._lock:
            kept = [rr for rr in self._records.get(norm(name), []) if rr.rtype != code]
            self._records[norm(name)] = kept + new

    def remove(self, name: str, rtype: str | None = None) -> None:
        """Remove a name (NXDOMAIN afterwards) or only its records of one type."""
        with self._lock:
            if rtype is None:
                self._records.pop(norm(name), None)
                return
            code = QTYPE.reverse[rtype.upper()]
            self._records[norm(name)] = [rr for rr in self._records.get(norm(name), [])
                                         if rr.rtype != code]

    # -- behaviour switches ------------------------------------------------
    def drop(self, name: str, rtype: str | None = None, on: bool = True) -> None:
        """Never answer queries for the name (of one type, or all types)."""
        self._switch(self._drop, name, rtype, on)

    def servfail(self, name: str, rtype: str | None = None, on: bool = True) -> None:
        """Answer SERVFAIL for the name (of one type, or all types)."""
        self._switch(self._servfail, name, rtype, on)

    def secure(self, name: str, on: bool = True) -> None:
        """Set (or clear) the AD flag on answers for the name."""
        with self._lock:
            (self._secure.add if on else self._secure.discard)(norm(name))

    def _switch(self, target: set[tuple[str, str | None]], name: str, rtype: str | None,
                on: bool) -> None:
        key = (norm(name), rtype.upper() if rtype else None)
        with self._lock:
            (target.add if on else target.discard)(key)

    def clear_switches(self) -> None:
        """Forget every drop, SERVFAIL and secure switch."""
        with self._lock:
            self._drop.clear()
            self._servfail.clear()
            self._secure.clear()

    def clear_queries(self) -> None:
        with self._lock:
            self.queries.clear()

    # -- answering ----------------------------------------------------------
    def answer(self, data: bytes, *, tcp: bool) -> bytes | None:
        """Wire-format reply to a wire-format query, or None to stay silent."""
        request = DNSRecord.parse(data)
        qname, qtype = label_key(request.q.qname), _tname(request.q.qtype)
        with self._lock:
            self.queries.append((qname, str(qtype), "tcp" if tcp else "udp"))
            if self._matches(self._drop, qname, str(qtype)):
                return None
            reply = self._reply(request, qname, request.q.qtype)
        packed = reply.pack()
        if not tcp and len(packed) > self._udp_limit(request):
            # Too big for the client's buffer: empty answer with TC set.
            small = request.reply()
            small.header.tc = 1
            small.header.ad = reply.header.ad
            small.header.rcode = reply.header.rcode
            packed = small.pack()
        return packed

    @staticmethod
    def _matches(target: set[tuple[str, str | None]], qname: str, qtype: str) -> bool:
        return (qname, None) in target or (qname, qtype) in target

    @staticmethod
    def _udp_limit(request: DNSRecord) -> int:
        for rr in request.ar:
            if rr.rtype == QTYPE.OPT:
                return max(512, int(rr.rclass))
        return 512

    def _reply(self, request: DNSRecord, qname: str, qtype: int) -> DNSRecord:
        reply = request.reply()
        reply.header.ra = 0
        reply.header.aa = 1
        # reply() copies the query's flags, AD included: set it from our data only.
        reply.header.ad = 1 if qname in self._secure else 0
        if self._matches(self._servfail, qname, _tname(qtype)):
            reply.header.rcode = RCODE.SERVFAIL
            reply.header.aa = 0
            return reply
        name = qname
        for _ in range(8):   # bounded CNAME chain
            rrs = self._lookup(name)
            if rrs is None:
                reply.header.rcode = RCODE.NXDOMAIN
                return reply
            wanted = [rr for rr in rrs if rr.rtype == qtype or qtype == QTYPE.ANY]
            cnames = [rr for rr in rrs if rr.rtype == QTYPE.CNAME]
            if wanted or not cnames or qtype == QTYPE.CNAME:
                for rr in wanted:
                    reply.add_answer(self._owned(rr, name))
                return reply
            reply.add_answer(self._owned(cnames[0], name))
            name = label_key(cnames[0].rdata.label)
            if self._matches(self._servfail, name, _tname(qtype)):
                reply.header.rcode = RCODE.SERVFAIL
                return reply
        return reply

    @staticmethod
    def _owned(rr: RR, name: str) -> RR:
        """The record with the queried owner name (wildcards are synthesized)."""
        if label_key(rr.rname) == name:
            return rr
        return RR(owner_label(name), rr.rtype, rr.rclass, rr.ttl, rr.rdata)

    def _lookup(self, name: str) -> list[RR] | None:
        """Records at a name; [] for an empty non-terminal; None for NXDOMAIN."""
        if name in self._records:
            return self._records[name]
        suffix = "." + name
        if any(owner.endswith(suffix) for owner in self._records):
            return []
        labels = name.split(".")
        for i in range(1, len(labels)):
            wild = "*." + ".".join(labels[i:])
            if wild in self._records:
                return self._records[wild]
        return None


def local_dns(zone: ZoneData | None = None, host: str = "127.0.0.1", port: int = 0,
              secure: Iterable[str] | None = None) -> DnsServer:
    """A started server (convenience for `with local_dns(zone) as dns:`)."""
    return DnsServer(zone, host=host, port=port, secure=secure).start()
