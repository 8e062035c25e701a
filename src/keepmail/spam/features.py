"""Mail-aware tokenization of raw messages into hashed binary feature ids.

The classifier (model.py) sees a message as a *set* of integer feature ids in
``[0, 2**bits)``.  This module turns raw RFC 5322 bytes into that set:

* header fields by name: Subject words, From display name / address shape /
  domain, Reply-To mismatch, Received-chain hints (relay domains, networks,
  protocols, hop count), X-Mailer/User-Agent, Message-ID domain, Date zone,
  Content-Type and charset, the names of all fields present;
* the body after MIME walking (RFC 2045/2046), transfer decoding (base64,
  quoted-printable) and charset decoding, HTML turned to text plus tokens for
  its tags/attributes, URL hosts, e-mail domains, attachment types;
* words, orthogonal sparse bigrams (word pairs up to 4 apart with their
  distance, OSB) and character 4-grams of the first few KB of body text;
* authentication results (SPF/DKIM/DMARC) and reputation tokens handed in by
  the caller.

Input is bounded everywhere (first ``MAX_PARSE`` bytes of the message, first
``PART_MAX`` bytes of each part, first ``TEXT_MAX`` characters of text), so a
20 MB message costs about what a 500 KB one does.  Nothing in here may raise
on hostile input: each part is handled inside its own ``try``, and a message
the stdlib parser chokes on is tokenized as plain text.

Hashing must be stable across processes and versions of Python (models are
saved to disk), so ``hash()`` is out: string tokens use CRC-32, 4-grams their
32-bit value, word pairs a multiplicative mix of two CRCs, each taken modulo
the largest prime below ``2**bits``.  The 4-grams and word pairs (most of a
message's few thousand ids) are hashed with numpy array operations, and the
feature set is a sorted numpy array of unique ids, ready for fancy indexing
into the model's weight table.
"""

from __future__ import annotations

import binascii
import codecs
import email
import email.header
import email.message
import functools
import math
import re
import string
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from email import policy as _policy

import numpy as np

DEFAULT_BITS = 22
# Bump when tokens or hashing change: models trained on other ids are then refused.
FEATURES_VERSION = 1
MAX_PARSE = 512 * 1024      # bytes of the raw message handed to the MIME parser
PART_MAX = 96 * 1024        # encoded bytes of one part that are decoded
TEXT_MAX = 24 * 1024        # characters of decoded text that are tokenized into words
GRAM_BYTES = 3000           # bytes of body text cut into character 4-grams
OSB_WORDS = 400             # words of body text paired into sparse bigrams
OSB_WINDOW = 4
MAX_PARTS = 64
MAX_DEPTH = 16
MAX_BOUNDARIES = 64
MAX_RECEIVED = 8

# Fields whose value is noise (ids, timestamps) or a verdict someone else wrote
# (forgeable, and on public corpora a label leak): never tokenized by value.
_SKIP_VALUE = frozenset({
    "received", "date", "message-id", "references", "in-reply-to", "subject", "from",
    "to", "cc", "reply-to", "return-path", "delivered-to", "x-mailer", "user-agent",
    "content-type", "content-transfer-encoding", "mime-version", "x-original-to",
    "sender", "list-unsubscribe", "list-archive", "list-help", "list-post",
    "list-subscribe", "errors-to", "x-beenthere", "content-disposition", "dkim-signature",
    "authentication-results", "arc-seal", "arc-message-signature",
    "arc-authentication-results", "x-uidl", "status", "thread-index", "x-mimeole", "x-ms-tnef-correlator", "x-status", "content-length", "lines",
})
_IGNORED_FIELD_PREFIXES = ("x-spam", "x-keepmail", "x-bogosity", "x-virus")

_WORD = re.compile(r"[^\W_](?:[\w'’.,$€£%-]{0,38}[^\W_])?")
_TAG = re.compile(r"<\s*(/?)([a-zA-Z][a-zA-Z0-9]{0,15})([^>]{0,2000})>", re.S)
# A whole run of letters before "=" (its last 20 are the attribute name): the same names
# as r"([a-zA-Z-]{1,20})\s*=" finds, without retrying from every letter of every run.
_ATTR = re.compile(r"(?<![a-zA-Z-])([a-zA-Z-]+)\s*=")
_HTML_DROP = re.compile(r"<(script|style)\b.*?</\1\s*>|<!--.*?-->", re.S | re.I)
_HTML_ANY_TAG = re.compile(r"<[^>]{0,2000}>")
_ENTITY = re.compile(r"&(#?[a-zA-Z0-9]{1,8});")
_URL = re.compile(r"(?i)\b(?:https?|ftp)://([^/\s\"'<>:?#]{1,255})")
# Searched in lower-cased text: without (?i) the engine skips to [hs] (~3x faster).
_HREF_HOST = re.compile(r"(?:href|src)\s*=\s*[\"']?\s*(?:https?:)?//([^/\s\"'<>:?#]{1,255})")
# One local-part character before the "@" is all a match needs (a longer local part
# only moved the match start): anchoring on it avoids trying 64 characters at every
# position of the text.
_EMAIL = re.compile(r"[\w.+-]@([a-zA-Z0-9-]{1,63}(?:\.[a-zA-Z0-9-]{1,63})+)")
_HOST = re.compile(r"\b([a-zA-Z0-9-]{1,63}(?:\.[a-zA-Z0-9-]{1,63})+)\b")
_IPV4 = re.compile(r"\b(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\b")
_WITH = re.compile(r"(?i)\bwith\s+([a-z0-9/_-]{2,20})")
_ADDR = re.compile(r"<?([^<>\s@]{0,64})@([^<>\s@]{1,255})>?\s*$")
_DIGITS = re.compile(r"\d")
_BOUNDARY = re.compile(rb"(?i)boundary\s*=")
_ENTITIES = {"nbsp": " ", "amp": "&", "lt": "<", "gt": ">", "quot": '"', "apos": "'"}


@dataclass
class Features:
    """The hashed feature set of one message, plus names to explain scores.

    ``ids``: the distinct feature ids, sorted - a numpy int64 array from
    ``extract`` (any sequence of ints is accepted by the models).
    """

    ids: Sequence[int] | np.ndarray
    names: dict[int, str] = field(default_factory=dict)
    sender: str = ""            # envelope or header sender address (lower case)
    sender_domain: str = ""
    client_net: str = ""        # /24 of the connecting client, "" when unknown


class _Sink:
    """Collects string tokens and 4-gram texts, hashes them once at the end."""

    def __init__(self, bits: int) -> None:
        self.bits = bits
        self.tokens: set[str] = set()
        self.blobs: list[bytes] = []   # folded text whose 4-byte windows are 4-grams
        self.words: list[str] = []   # body words in order, for OSB
        self.add: Callable[[str], None] = self.tokens.add   # no Python frame per token

    def extend(self, prefix: str, words: Iterable[str]) -> None:
        self.tokens.update(map(prefix.__add__, words))


@functools.cache
def table_prime(bits: int) -> int:
    """The largest prime below 2**bits: ids are hash % prime, which spreads any input."""
    n = (1 << bits) - 1
    while any(n % d == 0 for d in range(2, math.isqrt(n) + 1)):
        n -= 1
    return n


def _utf8(text: str) -> bytes:
    # Header values parsed from bytes carry undecodable bytes as lone surrogates.
    return text.encode("utf-8", "surrogatepass")


def _crcs(strings: Iterable[str]) -> list[int]:
    """CRC-32 of each string's UTF-8 (surrogates passed through), in C where possible.

    ``map(str.encode, ...)`` is ~20x cheaper per call than a bound partial with
    keyword arguments; only a list holding a lone surrogate takes the slow path.
    """
    try:
        return list(map(zlib.crc32, map(str.encode, strings)))
    except UnicodeEncodeError:
        return list(map(zlib.crc32, map(_utf8, strings)))


def token_id(token: str, bits: int = DEFAULT_BITS) -> int:
    """Stable id of a string token: CRC-32 of its UTF-8, modulo the table prime."""
    return zlib.crc32(_utf8(token)) % table_prime(bits)


# -- decoding helpers ---------------------------------------------------------

def _charset(name: str | None) -> str:
    """A codec name Python knows; latin-1 when the label is missing or bogus."""
    if not name:
        return "latin-1"
    name = name.strip().strip('"').lower()
    try:
        return codecs.lookup(name).name
    except (LookupError, ValueError):
        return "latin-1"


def decode_header_value(value: str) -> str:
    """RFC 2047 encoded-words decoded; never raises (bad charsets fall back)."""
    if "=?" not in value:
        return value
    try:
        chunks = email.header.decode_header(value)
    except Exception:
        return value
    out = []
    for chunk, cs in chunks:
        if isinstance(chunk, bytes):
            out.append(chunk.decode(_charset(cs), "replace"))
        else:
            out.append(chunk)
    return " ".join(out) if len(out) > 1 else "".join(out)


_NOT_BASE64 = bytes(sorted(set(range(256)) - set(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")))


def _payload_bytes(part: email.message.Message) -> tuple[bytes, str]:
    """The first PART_MAX bytes of a leaf part, transfer-decoded, and the encoding used."""
    payload = part.get_payload()
    if not isinstance(payload, str):
        return b"", ""
    raw = payload[:PART_MAX]
    cte = str(part.get("content-transfer-encoding", "")).strip().lower()
    data = raw.encode("latin-1", "surrogateescape")
    if cte == "base64":
        # Cut at a 4-char boundary of the non-whitespace stream so truncation decodes.
        data = data.translate(None, _NOT_BASE64)   # drop all but the alphabet, in C
        data = data[: len(data) - len(data) % 4]
        try:
            return binascii.a2b_base64(data), cte
        except (binascii.Error, ValueError):
            return b"", "base64-broken"
    if cte == "quoted-printable":
        return binascii.a2b_qp(data), cte
    return data, cte


def html_to_text(html: str, sink: _Sink | None = None) -> str:
    """Visible text of an HTML body; tag and attribute names go to `sink` as tokens."""
    html = _HTML_DROP.sub(" ", html)
    if sink is not None:
        add = sink.add
        # Markup repeats itself (every <td class="x">): each distinct tag once, and
        # one attribute search per tag name over its tags joined by NUL (which no
        # attribute match can span).
        attrs: dict[str, list[str]] = {}
        for _, tag, rest in set(_TAG.findall(html)):
            rests = attrs.setdefault(tag.lower(), [])
            if "=" in rest:     # no attribute without one
                rests.append(rest)
        for tag, rests in attrs.items():
            add("tag:" + tag)
            if rests:
                for attr in set(_ATTR.findall("\0".join(rests))):
                    add(f"attr:{tag}.{attr[-20:].lower()}")
    text = _HTML_ANY_TAG.sub(" ", html)
    return _ENTITY.sub(_entity, text)


def _entity(m: re.Match[str]) -> str:
    name = m.group(1)
    if name.startswith("#"):
        try:
            num = int(name[2:], 16) if name[1:2] in "xX" else int(name[1:])
            return chr(num) if 0 < num < 0x110000 else " "
        except ValueError:
            return " "
    return _ENTITIES.get(name.lower(), " ")


# -- small shape helpers ------------------------------------------------------

def _bucket(n: int) -> int:
    """log2-ish bucket so counts generalize: 0, 1, 2-3, 4-7, ... capped."""
    return min(n.bit_length(), 10)


@functools.lru_cache(maxsize=16384)   # ~27 calls a message, mostly the same relays
def _reg_domain(host: str) -> str:
    """Last two labels (three under a two-letter ccTLD with a short 2nd label)."""
    labels = host.lower().strip(".").split(".")
    if len(labels) >= 3 and len(labels[-1]) == 2 and len(labels[-2]) <= 3:
        return ".".join(labels[-3:])
    return ".".join(labels[-2:])


_SHAPE_ASCII = str.maketrans({**dict.fromkeys("0123456789", "d"),
                              **dict.fromkeys(string.ascii_letters, "a")})
_RUN = re.compile(r"(.)\1*", re.S)


def _shape(s: str) -> str:
    """Character classes of a short string: 'abc123' -> 'a3d3' (runs capped at 9)."""
    s = s[:32]
    if s.isascii():
        classes = s.translate(_SHAPE_ASCII)
    else:
        classes = "".join("d" if ch.isdigit() else "a" if ch.isalpha() else ch for ch in s)
    return "".join(m[1] if len(m[0]) == 1 else m[1] + str(min(len(m[0]), 9))
                   for m in _RUN.finditer(classes))


def split_address(value: str) -> tuple[str, str, str]:
    """(display name, local part, domain) of a From-like field, all lower case."""
    value = value[:400].strip()   # the address regex backtracks: keep its input short
    name, _, rest = value.rpartition("<") if "<" in value else ("", "", value)
    m = _ADDR.search(("<" + rest) if "<" in value else value)
    if not m:
        return value.lower(), "", ""
    local, domain = m.group(1).lower(), m.group(2).lower().rstrip(">").strip(".")
    if "<" not in value and "(" in domain:
        domain, _, comment = domain.partition("(")
        name = comment.rstrip(")")
    return name.strip().strip('"').lower(), local, domain.strip()


def first_ip(value: str) -> str:
    m = _IPV4.search(value)
    return ".".join(m.groups()) if m else ""


def _is_private(ip: str) -> bool:
    return ip.startswith(("10.", "127.", "192.168.", "169.254.", "0.")) or (
        ip.startswith("172.") and 16 <= int(ip.split(".")[1]) <= 31)


def net24(ip: str) -> str:
    parts = ip.split(".")
    return ".".join(parts[:3]) if len(parts) == 4 else ""


# -- header features ----------------------------------------------------------

def _words(text: str, limit: int = TEXT_MAX) -> list[str]:
    return _WORD.findall(text[:limit].lower())


def _header_features(msg: email.message.Message, sink: _Sink,
                     received: list[str]) -> dict[str, str]:
    """Tokens from the header section; returns a few values the caller reuses.

    The Received values (first 200 fields) are appended to `received`.
    """
    seen: dict[str, str] = {}
    names: list[str] = []
    items = msg.items()[:200]
    # An 8-bit field comes back as a Header object: its str() is the text to use.
    received.extend(v if isinstance(v, str) else str(v)
                    for k, v in items if k.lower() == "received")
    for key, value in items:
        name = key.strip().lower()
        if name.startswith(_IGNORED_FIELD_PREFIXES):
            continue
        names.append(name)
        text = (value if isinstance(value, str) else str(value))[:4000]
        seen.setdefault(name, text)
        sink.add("hdr:" + name)
        if name not in _SKIP_VALUE and len(text) <= 60:
            sink.add(f"hv:{name}:{_DIGITS.sub('0', text.strip().lower())}")
    sink.add(f"nhdr:{_bucket(len(names))}")
    _subject(decode_header_value(seen.get("subject", "")), sink)
    _from(seen, sink)
    _received(received, sink)
    for name in ("x-mailer", "user-agent"):
        if name in seen:
            agent = decode_header_value(seen[name]).lower()
            sink.add(f"{name}:{_DIGITS.sub('0', agent[:60])}")
            sink.extend("agent:", _words(agent, 200))
    _misc_headers(seen, sink)
    return seen


def _subject(subject: str, sink: _Sink) -> None:
    if not subject:
        sink.add("subj:none")
        return
    sink.extend("s:", _words(subject, 400))
    letters = [c for c in subject if c.isalpha()]
    if letters:
        caps = sum(map(str.isupper, letters)) / len(letters)
        sink.add(f"subj:caps{int(caps * 4)}")
    if subject.lower().startswith(("re:", "aw:", "fwd:", "fw:")):
        sink.add("subj:reply")
    if "!" in subject:
        sink.add("subj:bang")
    if "=?" in subject:
        sink.add("subj:encoded")


def _from(seen: Mapping[str, str], sink: _Sink) -> None:
    raw = seen.get("from")
    if raw is None:
        sink.add("from:none")
        return
    name, local, domain = split_address(decode_header_value(raw))
    sink.extend("fn:", _words(name, 200))
    if domain:
        sink.add("fd:" + domain)
        sink.add("fr:" + _reg_domain(domain))
        sink.add("ftld:" + domain.rsplit(".", 1)[-1])
    sink.add("fl:" + _shape(local))
    if "@" in name:
        sink.add("fn:has-at")
    reply = seen.get("reply-to")
    if reply is not None:
        rdomain = split_address(decode_header_value(reply))[2]
        sink.add("replyto:same" if _reg_domain(rdomain) == _reg_domain(domain) else "replyto:other")
    to = seen.get("to", "")
    sink.add(f"nto:{_bucket(to.count('@'))}")
    if "undisclosed" in to.lower() or not to:
        sink.add("to:undisclosed")


def _received(chain: list[str], sink: _Sink) -> None:
    sink.add(f"nrcvd:{_bucket(len(chain))}")
    # Hop position matters little; hosts and networks that relay matter a lot.
    heads = [value[:400] for value in chain[:MAX_RECEIVED]]
    if heads:
        # One search per pattern over all hops: no pattern matches NUL, so none spans two
        # hops and each hop's matches are what searching it alone would find.
        text = "\0".join(heads)
        add = sink.add
        for host in set(_HOST.findall(text)):
            if not _IPV4.fullmatch(host):
                add("rcv:" + _reg_domain(host))
        for ip in set(_IPV4.findall(text)):
            add("rnet:" + ip[0] + "." + ip[1])
        for proto in set(_WITH.findall(text)):
            add("rwith:" + proto.lower())
        if "helo=" in heads[0].lower():
            add("rcv:helo-given")


def _misc_headers(seen: Mapping[str, str], sink: _Sink) -> None:
    mid = seen.get("message-id", "")
    if "@" in mid:
        host = mid.rsplit("@", 1)[1].strip("<> \t").lower()
        sink.add("mid:" + _reg_domain(host))
        sink.add("midshape:" + _shape(mid.split("@", 1)[0].strip("<>"))[:12])
    elif "message-id" not in seen:
        sink.add("mid:none")
    date = seen.get("date", "")
    zone = date.strip().rsplit(" ", 1)[-1] if date else "none"
    sink.add("tz:" + zone[:8])
    ctype = seen.get("content-type", "text/plain").lower()
    sink.add("ct:" + ctype.split(";", 1)[0].strip()[:40])


# -- body features ------------------------------------------------------------

def _walk(msg: email.message.Message) -> Iterator[tuple[email.message.Message, str, str]]:
    """Leaf parts with their MIME path and type, depth- and count-limited, no recursion."""
    stack: list[tuple[email.message.Message, str, int]] = [(msg, "", 0)]
    count = 0
    while stack and count < MAX_PARTS:
        part, path, depth = stack.pop()
        count += 1
        ctype = part.get_content_type()
        here = f"{path}>{ctype}" if path else ctype
        payload = part.get_payload()
        if isinstance(payload, list):
            if depth >= MAX_DEPTH:
                yield part, here + ">too-deep", ctype
                continue
            stack.extend((sub, here, depth + 1) for sub in reversed(payload)
                         if isinstance(sub, email.message.Message))
        else:
            yield part, here, ctype


def _part_features(part: email.message.Message, path: str, ctype: str, sink: _Sink,
                   texts: list[str]) -> None:
    sink.add("mime:" + path[-80:])
    sink.add("ctype:" + ctype)
    params: dict[str, object] = {}
    for key, value in part.get_params() or ():   # parse Content-Type once, not per get_param
        params.setdefault(key.lower(), value)
    cs = params.get("charset")
    if isinstance(cs, str):
        sink.add("cs:" + cs.lower()[:30])
    filename = params.get("name") or part.get_param("filename", header="content-disposition")
    if isinstance(filename, str) and filename:
        sink.add("attach:" + filename.rsplit(".", 1)[-1].lower()[:10])
    if not ctype.startswith("text/") and ctype != "message/rfc822":
        return
    data, cte = _payload_bytes(part)
    sink.add("cte:" + (cte or "none"))
    text = data.decode(_charset(cs if isinstance(cs, str) else None), "replace")
    if ctype == "text/html":
        sink.add("body:html")
        for host in _HREF_HOST.findall(text[:TEXT_MAX * 2].lower()):   # hosts: lower case anyway
            _url_host(host, sink)
        text = html_to_text(text[: TEXT_MAX * 2], sink)
    texts.append(text[:TEXT_MAX])


def _url_host(host: str, sink: _Sink) -> None:
    host = host.lower().rstrip(".").rsplit("@", 1)[-1]
    if _IPV4.fullmatch(host):
        sink.add("url:ip")
        return
    sink.add("url:" + _reg_domain(host))
    sink.add("urlhost:" + host[:80])
    sink.add("urltld:" + host.rsplit(".", 1)[-1])


def _text_features(text: str, sink: _Sink) -> None:
    hosts = _URL.findall(text) if "://" in text else []   # every match holds "://"
    for host in hosts:
        _url_host(host, sink)
    sink.add(f"nurl:{_bucket(len(hosts))}")
    if "@" in text:   # the pattern tries every position: skip texts that cannot match
        for domain in _EMAIL.findall(text):
            sink.add("edom:" + _reg_domain(domain))
    words = _WORD.findall(text.lower())
    sink.extend("w:", words)
    sink.words.extend(words[:OSB_WORDS])
    sink.add(f"nwords:{_bucket(len(words))}")
    letters, upper = _letter_counts(text[:4000])
    if letters:
        sink.add(f"caps:{int(upper / letters * 5)}")
    sink.blobs.append(_gram_blob(text))


_ASCII_NOT_LETTER = bytes(c for c in range(256) if not chr(c).isalpha() or c > 127)
_ASCII_NOT_UPPER = bytes(c for c in range(256) if not chr(c).isupper() or c > 127)


def _letter_counts(sample: str) -> tuple[int, int]:
    """(letters, upper-case letters) in `sample`, as str.isalpha/isupper count them.

    ASCII text (most mail) is counted with bytes.translate, in C; other text
    one character at a time.
    """
    if sample.isascii():
        data = sample.encode("ascii")
        return (len(data.translate(None, _ASCII_NOT_LETTER)),
                len(data.translate(None, _ASCII_NOT_UPPER)))
    letters = sum(map(str.isalpha, sample))
    return letters, (sum(map(str.isupper, sample)) if letters else 0)


def _gram_blob(text: str) -> bytes:
    """The first GRAM_BYTES of `text`, lower case, whitespace folded, as UTF-8."""
    return " ".join(text[:GRAM_BYTES].lower().split()).encode("utf-8", "replace")[:GRAM_BYTES]


_NO_IDS = np.zeros(0, np.int64)


def _gram_codes(blob: bytes) -> np.ndarray:
    """Every 4-byte window of `blob` as its little-endian uint32 value (with repeats).

    The windows starting at offsets 0, 4, 8, ... are the buffer read as uint32;
    those at 1, 5, 9, ... the buffer read from byte 1; and so on: four zero-copy
    views cover each window exactly once.
    """
    views = [np.frombuffer(blob, "<u4", (len(blob) - offset) >> 2, offset)
             for offset in range(min(4, len(blob) - 3))]
    return np.concatenate(views) if views else np.zeros(0, np.uint32)


def _grams(text: str) -> set[int]:
    """The 4-gram codes of `text` as a set (the ids are these modulo the table prime)."""
    return set(_gram_codes(_gram_blob(text)).tolist())


_K1 = np.uint64(0x01000193)
_K2 = [np.uint64(0x9E3779B1 + 2 * d) for d in range(OSB_WINDOW + 1)]


def _osb_ids(words: list[str], prime: int) -> np.ndarray:
    """Orthogonal sparse bigrams: (w[i], w[i+d]) for d = 1..OSB_WINDOW, keyed by d.

    id = (crc(w[i]) * K1 xor crc(w[i+d]) * K2[d]) % prime: the odd multipliers
    make pairs order- and distance-sensitive.  CRCs are 32 bits and the
    multipliers at most 32, so every product fits in uint64 exactly and the
    array arithmetic gives the same ids as Python integers (~1,600 pairs for a
    typical message, with repeats).
    """
    if len(words) < 2:
        return _NO_IDS
    crcs = np.array(_crcs(words), np.uint64)
    left = crcs * _K1
    pairs = [left[: len(crcs) - d] ^ (crcs[d:] * _K2[d])
             for d in range(1, min(OSB_WINDOW, len(crcs) - 1) + 1)]
    return (np.concatenate(pairs) % np.uint64(prime)).astype(np.int64)


def _osb(words: list[str], bits: int) -> set[int]:
    """The word-pair ids of `words` as a set."""
    return set(_osb_ids(words, table_prime(bits)).tolist())


# -- entry point --------------------------------------------------------------

def parse(raw: bytes) -> email.message.Message | None:
    """The message parsed leniently from its first MAX_PARSE bytes, or None."""
    try:
        data = _cut_nesting(raw[:MAX_PARSE])
        return _parse_single_part(data) or email.message_from_bytes(
            data, _class=_Message, policy=_policy.compat32)
    except Exception:
        return None


class _Message(email.message.Message):
    """A compat32 message whose ``get`` finds a field through a dict.

    ``Message.get`` lower-cases every field name on every call, and each of
    get_content_type, get_params, get_payload... calls it: a few dozen names,
    a dozen calls per message.  Here the first occurrence of each name is
    indexed once (again whenever fields were added).  The classifier only reads
    the messages it parses; in-place edits of fields are not tracked.
    """

    _index: dict[str, tuple[str, str]] | None = None
    _indexed = -1

    def get(self, name: str, failobj: object = None) -> object:
        headers = self._headers
        index = self._index
        if index is None or self._indexed != len(headers):
            index = {}
            for item in reversed(headers):      # the first occurrence wins
                index[item[0].lower()] = item
            self._index, self._indexed = index, len(headers)
        hit = index.get(name.lower())
        return failobj if hit is None else self.policy.header_fetch_parse(*hit)


# The first empty line: two line breaks in a row, each as the stdlib parser splits
# lines (CRLF, CR or LF; atomic groups so that one CRLF never counts as two).
_BLANK_LINE = re.compile(rb"(?>\r\n|\r|\n)(?>\r\n|\r|\n)")
# email.feedparser's test for a line of the header section (field, continuation, envelope).
_HEADER_LINE = re.compile(r"From |[\041-\071\073-\176]*:|[\t ]")
_LINE_BREAKS = ("\n", "\r\n", "\r")


def _parse_single_part(data: bytes) -> email.message.Message | None:
    """What ``message_from_bytes`` gives for a single-part message, or None otherwise.

    The stdlib parser splits the whole message into lines and feeds them one by
    one through Python code, even a body it then stores as one string.  Here
    only the header block is parsed (``_parse_head``); the body is attached as
    the parser would attach it (the rest of the input, ASCII with surrogate
    escapes).  None - parse the whole message - when the header block does not
    end in an empty line, holds a line that is not a header field (the stdlib
    parser would start the body there), or announces a multipart or message/*
    body.
    """
    head_end = _header_end(data)
    if head_end < 0:
        return None
    msg = _parse_head(data[:head_end])
    if msg is None or msg.get_content_maintype() in ("multipart", "message"):
        return None
    msg.set_payload(data[head_end:].decode("ascii", "surrogateescape"))
    return msg


def _parse_head(block: bytes) -> email.message.Message | None:
    """The header section `block` (ending with its first empty line) read exactly as
    ``email.feedparser`` reads it under the compat32 policy, or None when that parser
    would start the body before the empty line.

    Same line splitting (CR, LF, CRLF), same test for header lines, same handling
    of continuation lines, a leading envelope ("From ") line and malformed lines
    (those the stdlib parser records as defects are skipped here too; defects
    are not recorded), same raw values - a few times cheaper than the generic
    parser, which is built to be fed a whole message in chunks.
    """
    lines = [line.decode("ascii", "surrogateescape") for line in block.splitlines(True)]
    end = next((n for n, line in enumerate(lines) if not _HEADER_LINE.match(line)), -1)
    if end != len(lines) - 1 or lines[end] not in _LINE_BREAKS:
        return None          # the body would start at a non-header line, or hold lines
    fields = lines[:end]
    msg = _Message()
    value: list[str] = []
    for n, line in enumerate(fields):
        if line[0] in " \t":
            if value:        # (a continuation before any field is dropped)
                value.append(line)
            continue
        if value:
            _set_raw(msg, value)
            value = []
        if line.startswith("From "):
            if n == 0:
                msg.set_unixfrom(line.rstrip("\r\n"))
            elif n == len(fields) - 1:
                return None  # taken as the first line of the body
            continue         # a misplaced envelope line is dropped
        if line[0] != ":":   # (no field name: dropped)
            value = [line]
    if value:
        _set_raw(msg, value)
    return msg


def _set_raw(msg: email.message.Message, lines: list[str]) -> None:
    """Add a field from its source lines, as compat32's header_source_parse does."""
    name, value = lines[0].split(":", 1)
    value = value.lstrip(" \t") + "".join(lines[1:])
    msg.set_raw(name, value.rstrip("\r\n"))


def _header_end(data: bytes) -> int:
    """Where the body starts (just after the first empty line), or -1 if none.

    Mail with LF line ends only (no CR in the header block) needs no regex:
    ``bytes.find`` gives the same answer several times faster.
    """
    i = data.find(b"\n\n")
    if b"\r" not in (data if i < 0 else data[:i]):
        return -1 if i < 0 else i + 2
    m = _BLANK_LINE.search(data)
    return -1 if m is None else m.end()


def _cut_nesting(raw: bytes) -> bytes:
    """Cut the message before its MAX_BOUNDARIES-th boundary parameter.

    The stdlib parser recurses once per multipart level; a few thousand levels
    hit the recursion limit after seconds of work.  Real mail nests a handful.
    """
    if raw.lower().count(b"boundary") < MAX_BOUNDARIES:
        return raw      # every match holds the word: fewer words, fewer matches (fast path)
    for n, match in enumerate(_BOUNDARY.finditer(raw)):
        if n >= MAX_BOUNDARIES:
            return raw[: match.start()]
    return raw


def extract(raw: bytes, *, bits: int = DEFAULT_BITS, auth: Mapping[str, str] | None = None,
            sender: str | None = None, client_ip: str | None = None,
            extra: Iterable[str] = (), names: bool = False, received_ip: bool = False,
            reputation: Callable[[Features], Iterable[str]] | None = None) -> Features:
    """Hashed features of `raw`; `extra` adds caller tokens.

    `received_ip`: when no `client_ip` is given, take it from the Received chain
    (``received_client_ip``, from the already parsed header).  `reputation`: called
    with the sender identity filled in, returns more tokens (the classifier's
    reputation tokens), hashed with the rest.
    """
    sink = _Sink(bits)
    texts: list[str] = []
    seen: dict[str, str] = {}
    received: list[str] = []
    msg = parse(raw)
    if msg is None:
        sink.add("mime:unparsable")
        texts.append(raw[:TEXT_MAX].decode("latin-1"))
    else:
        try:
            seen = _header_features(msg, sink, received)
        except Exception:
            sink.add("hdr:broken")
            received = []
        _body(msg, raw, sink, texts)
    if received_ip and not client_ip:
        client_ip = (_client_ip(received) if received else received_client_ip(raw)) or None
    for text in texts:
        try:
            _text_features(text, sink)
        except Exception:
            sink.add("body:broken")
    for key, value in (auth or {}).items():
        sink.add(f"auth:{key.lower()}={str(value).lower()}")
    sink.tokens.update(extra)
    feats = Features(ids=[])
    _identity(feats, seen, sender, client_ip)
    if reputation is not None:
        sink.tokens.update(reputation(feats))
    _finish(sink, bits, names, feats)
    return feats


def _body(msg: email.message.Message, raw: bytes, sink: _Sink, texts: list[str]) -> None:
    try:
        parts = list(_walk(msg))
    except Exception:
        sink.add("mime:broken")
        parts = []
    sink.add(f"nparts:{_bucket(len(parts))}")
    if len(raw) > MAX_PARSE:
        sink.add("size:huge")
    sink.add(f"size:{_bucket(len(raw) >> 10)}")
    for part, path, ctype in parts:
        try:
            _part_features(part, path, ctype, sink, texts)
        except Exception:
            sink.add("part:broken")
    ctypes = {ctype for _, _, ctype in parts}
    if "text/html" in ctypes and "text/plain" not in ctypes:
        sink.add("body:html-only")


def _finish(sink: _Sink, bits: int, want_names: bool, feats: Features) -> None:
    prime = table_prime(bits)
    tokens = list(sink.tokens)
    ids = list(map(prime.__rmod__, _crcs(tokens)))
    parts = [np.array(ids, np.int64), _osb_ids(sink.words, prime)]
    # A 4-gram's id is its 32-bit value modulo the prime.
    parts += [(_gram_codes(blob) % np.uint32(prime)).astype(np.int64) for blob in sink.blobs]
    # Names of string tokens only: 4-grams and word pairs are not shown as reasons
    # (see Classifier._reasons), and naming 3,000 of them would double scoring time.
    feats.names = dict(zip(ids, tokens, strict=True)) if want_names else {}
    feats.ids = _distinct(np.concatenate(parts))


def _distinct(ids: np.ndarray) -> np.ndarray:
    """The distinct values of `ids`, sorted (np.unique, several times cheaper here)."""
    ids.sort()
    if len(ids) < 2:
        return ids
    keep = np.empty(len(ids), bool)
    keep[0] = True
    np.not_equal(ids[1:], ids[:-1], out=keep[1:])
    return ids[keep]


def _identity(feats: Features, seen: Mapping[str, str], sender: str | None,
              client_ip: str | None) -> None:
    """Who sent it, for reputation: envelope sender, else Return-Path, else From."""
    addr = sender
    if not addr:
        for name in ("return-path", "from"):
            if name in seen:
                _, local, domain = split_address(decode_header_value(seen[name]))
                if domain:
                    addr = f"{local}@{domain}"
                    break
    set_sender(feats, addr or "")
    feats.client_net = net24(client_ip) if client_ip else ""


def set_sender(feats: Features, addr: str) -> None:
    """Set the sender address (lower case, no brackets) and its registered domain."""
    addr = addr.strip("<> ").lower()
    feats.sender = addr
    feats.sender_domain = _reg_domain(addr.rsplit("@", 1)[1]) if "@" in addr else ""


def received_client_ip(raw: bytes) -> str:
    """The first public IPv4 address in the Received chain (top down), or ""."""
    head = raw[:64 * 1024]
    end = min((i for i in (head.find(b"\n\n"), head.find(b"\r\n\r\n")) if i >= 0),
              default=len(head))
    msg_head = head[:end].decode("latin-1")
    return _client_ip(m.group(1) for m in _RECEIVED_FIELD.finditer(msg_head))


_RECEIVED_FIELD = re.compile(r"(?im)^received:(.*(?:\r?\n[ \t].*)*)")


def _client_ip(received: Iterable[str]) -> str:
    """The first public IPv4 address in these Received values (top down), or ""."""
    for value in received:
        for ip in _IPV4.findall(str(value)):
            text = ".".join(ip)
            if all(int(x) < 256 for x in ip) and not _is_private(text):
                return text
    return ""
