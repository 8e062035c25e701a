"""The decrypted-header cache (imap/msgcache.py) and the batched SEARCH/FETCH/STORE paths."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest

from keepmail.imap import msgcache, search
from keepmail.imap.parser import RawCommand, Reader
from keepmail.store import Store, blobs, imapq
from keepmail.store import mail as mailq

from .conftest import ImapEnv

CORPUS = [
    b"From: Alice <alice@example.test>\r\nTo: bob@example.test\r\nSubject: plain hello\r\n"
    b"Date: Mon, 1 Jan 2024 10:00:00 +0000\r\n\r\nThe needle is here.\r\n",
    b"From: =?utf-8?q?Andr=C3=A9?= <andre@example.test>\r\nSubject: =?iso-8859-1?q?r=E9sum=E9?=\r\n"
    b"Content-Type: text/plain; charset=iso-8859-1\r\n\r\nCaf\xe9 NEEDLE\r\n",
    b"From: carol@other.test\r\nSubject: base64\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: base64\r\n\r\n"
    + base64.b64encode("prêt: needle, Straße".encode()) + b"\r\n",
    b"From: dave@example.test\r\nSubject: multipart\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: multipart/mixed; boundary=XX\r\n\r\npreamble needle\r\n--XX\r\n"
    b"Content-Type: text/plain\r\n\r\nfirst part\r\n--XX\r\nContent-Type: text/html\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n\r\n<b>nee=\r\ndle</b>\r\n--XX--\r\n",
    b"From: erin@example.test\r\nSubject: attachment\r\n"
    b"Content-Type: application/octet-stream\r\n\r\nneedle in binary\r\n",
    b"Subject: no body at all\r\nX-Folded: one\r\n two needle\r\n",
    b"From: frank@example.test\r\nSubject: Weird CTE\r\nContent-Transfer-Encoding: x-unknown\r\n"
    b"Content-Type: TEXT/Plain; CHARSET=utf-8\r\n\r\nneedle \xc3\x9f\r\n",
    b"From: grace@example.test\r\nSubject: big header\r\nX-Long: "
    + b"a" * (blobs.CHUNK_SIZE + 100) + b"\r\n\r\nneedle after a long header\r\n",
    b"\r\nno header, needle only\r\n",
]

PROGRAMS = [
    "FROM alice", "FROM \"andré\"", "FROM example.test", "TO bob", "SUBJECT \"résumé\"",
    "SUBJECT HELLO", "HEADER X-Folded two", "HEADER X-Long \"\"", "HEADER Subject \"\"",
    "BODY needle", "BODY \"café\"", "BODY \"straße\"", "BODY nee", "TEXT needle", "TEXT \"résumé\"",
    "NOT BODY needle", "OR FROM carol BODY binary", "SENTSINCE 1-Jan-2020", "BODY \"ß\"",
]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    st = Store.open(tmp_path / "data")
    yield st
    st.close()


def _insert(st: Store, corpus: list[bytes]) -> list[tuple[int, int]]:
    sealed = [st.cipher.seal(raw) for raw in corpus]

    def txn(conn):  # type: ignore[no-untyped-def]
        for s in sealed:
            blobs.insert(conn, s, 1, 0.0)
    st.write_sync(txn)
    return [(s.id, s.size) for s in sealed]


def _program(text: str) -> search.Pred:
    ctx = search.Context(100, 100, set, lambda n: n)
    return search.Program(Reader(RawCommand([text.encode()])), ctx).parse_all()


def _run(st: Store, ids: list[tuple[int, int]], pred: search.Pred,
         cache: msgcache.MessageCache | None) -> list[int]:
    conn = st.db.reader()
    if cache is None:
        cands = [search.Candidate(i + 1, i + 1, frozenset(), 0.0, size, 1, False,
                                  load=lambda b=blob_id: blobs.read(conn, st.cipher, b))
                 for i, (blob_id, size) in enumerate(ids)]
    else:
        loader = msgcache.Loader(conn, st.cipher, cache)
        cands = [search.Candidate(i + 1, i + 1, frozenset(), 0.0, size, 1, False,
                                  blob_id=blob_id, loader=loader)
                 for i, (blob_id, size) in enumerate(ids)]
        loader.plan([b for b, _ in ids], [s for _, s in ids])
    return [c.seq for c in cands if pred(c)]


@pytest.mark.parametrize("max_bytes", [64 * 1024 * 1024, 3000, 0])
def test_cached_search_matches_uncached(store: Store, max_bytes: int) -> None:
    ids = _insert(store, CORPUS * 3)
    cache = msgcache.MessageCache(max_bytes)
    for text in PROGRAMS:
        pred = _program(text)
        expected = _run(store, ids, pred, None)
        assert _run(store, ids, pred, cache) == expected, text
        assert _run(store, ids, pred, cache) == expected, text   # warm (or thrashing) cache
        assert cache.bytes <= max(max_bytes, 0)
    if max_bytes > 100_000:
        assert cache.hits > 0


def test_cache_is_bounded_and_evicts_lru() -> None:
    cache = msgcache.MessageCache(20_000)
    header = b"Subject: x\r\nFrom: a@b.test\r\n\r\n"
    for blob_id in range(1, 200):
        cache.put_message(blob_id, header + b"body", len(header) + 4)
        assert cache.bytes <= cache.max_bytes
    assert 0 < len(cache) < 199
    assert 199 in cache and 1 not in cache            # oldest went first
    oldest = min(b for b in range(1, 200) if b in cache)
    assert cache.get(oldest) is not None              # touching it makes it young again
    cache.put_message(500, header, len(header))
    assert oldest in cache
    assert cache.bytes == sum(e.cost for e in cache._entries.values())
    cache.add_fragment(cache.get(500), ("ENVELOPE", False), b"x" * 5000)  # type: ignore[arg-type]
    assert cache.bytes <= cache.max_bytes
    cache.put_message(9999, b"X-Huge: " + b"h" * 20_000 + b"\r\n\r\n", 20_012)
    assert 9999 not in cache                          # never one entry flushing everything
    cache.clear()
    assert len(cache) == 0 and cache.bytes == 0


def test_entry_header_parts() -> None:
    raw = CORPUS[1]
    cache = msgcache.MessageCache()
    entry = cache.put_message(7, raw, len(raw))
    assert raw[entry.body_offset:] == b"Caf\xe9 NEEDLE\r\n"
    assert entry.head.header(b"subject") == b"=?iso-8859-1?q?r=E9sum=E9?="
    assert entry.folded(b"subject") == ["résumé"]
    assert entry.folded(b"from") == ["andré <andre@example.test>"]
    assert entry.plain_charset() == "iso-8859-1"
    assert cache.put_message(8, CORPUS[3], len(CORPUS[3])).plain_charset() == ""


def test_bulk_store_matches_per_message_store(store: Store) -> None:
    def setup(conn):  # type: ignore[no-untyped-def]
        from keepmail.store import accounts
        accounts.add_domain(conn, "example.test")
        acct = accounts.add_account(conn, "x@example.test", "hash")
        return acct
    store.write_sync(setup)
    ids = _insert(store, [CORPUS[0]] * 12)
    boxes = []
    for name in ("A", "B"):
        def mk(conn, name=name):  # type: ignore[no-untyped-def]
            box = mailq.create_mailbox(conn, 1, name)
            for n, (blob_id, size) in enumerate(ids):
                flags = {"\\Seen"} if n % 3 == 0 else ({"$Work", "\\Flagged"} if n % 3 else set())
                mailq.add_message(conn, box.id, blob_id, size, flags=flags)
            return box.id
        boxes.append(store.write_sync(mk))
    cases = [([*range(1, 13)], ["\\Seen"], "add", None),
             ([2, 3, 5, 8, 11], ["\\Seen", "$Work"], "remove", None),
             ([*range(1, 13)], ["\\Deleted"], "set", None),
             ([1, 4, 6, 7, 99], ["$New"], "add", 3),
             ([*range(1, 13)], ["\\Deleted"], "remove", 100),
             ([5], [], "set", None)]
    for uids, flags, mode, since in cases:
        old = store.write_sync(lambda c, u=uids, f=flags, m=mode, s=since: mailq.store_flags(
            c, boxes[0], u, f, m, s))
        new = store.write_sync(lambda c, u=uids, f=flags, m=mode, s=since: imapq.store_flags(
            c, boxes[1], u, f, m, s))
        assert [(m.uid, m.flags) for m in old[0]] == [(r.uid, r.flags) for r in new[0]]
        assert old[1] == new[1]
        a = store.read_now(lambda c: mailq.list_messages(c, boxes[0]))
        b = store.read_now(lambda c: mailq.list_messages(c, boxes[1]))
        assert [(m.uid, m.flags, m.modseq) for m in a] == [(m.uid, m.flags, m.modseq) for m in b]
        current = {r.uid: (r.flags, r.modseq) for r in new[2]}
        assert current == {m.uid: (m.flags, m.modseq) for m in b if m.uid in uids}


def test_server_search_and_fetch_with_tiny_cache(imap: ImapEnv) -> None:
    for srv in imap.servers:
        srv.cache.max_bytes = 1500   # shared by both listeners: forces eviction
        srv.cache.clear()
    for raw_msg in CORPUS[:7]:
        imap.deliver(raw_msg)
    raw = imap.raw()
    raw.login()
    raw.cmd("a SELECT INBOX")
    for _ in range(2):
        reply = raw.cmd("b SEARCH BODY needle")
        assert reply[0] == b"* SEARCH 1 2 3 4 7", reply
        assert raw.cmd('c SEARCH FROM "andré"')[0] == b"* SEARCH 2"
        env = raw.cmd("d FETCH 2 (ENVELOPE BODY.PEEK[HEADER.FIELDS (SUBJECT)] RFC822.TEXT)")
        assert b'"=?iso-8859-1?q?r=E9sum=E9?="' in env[0]
        assert b"RFC822.TEXT {13}\r\nCaf\xe9 NEEDLE\r\n" in env[0]
        assert imap.servers[0].cache.bytes <= 1500
    raw.close()
