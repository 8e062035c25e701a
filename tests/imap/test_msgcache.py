"""The decrypted-header cache (imap/msgcache.py) and the batched SEARCH/FETCH/STORE paths."""

from __future__ import annotations

import base64
import random
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
    assert list(entry.folded(b"subject")) == ["résumé"]
    assert list(entry.folded(b"from")) == ["andré <andre@example.test>"]
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


# Headers the regex paths (well-formed check, field index, HEADER.FIELDS pattern, the raw
# pre-check of header SEARCH) must treat exactly as the line parser does.
ODD_HEADERS = [
    b"From: Alice <alice@example.test>\r\nSubject: folded\r\n  over two\r\n\tlines\r\n\r\n",
    b"Subject :spaced name\r\nFROM:UPPER@example.test\r\nX-Empty:\r\n\r\n",
    b"From: (comment) bob(inner)@example.test\r\nTo: \"Quoted, Name\" <q@example.test>\r\n\r\n",
    b"no colon line\r\nFrom: after@example.test\r\n continued\r\n\r\n",
    b" leading continuation: x\r\nFrom: lead@example.test\r\n\r\n",
    b"From: blank@example.test\r\n \r\nSubject: after a blank continuation\r\n\r\n",
    b"Subject: lf only\nFrom: lf@example.test\n\n",
    b"Subject: =?utf-8?q?Stra=C3=9Fe?=\r\nFrom: =?utf-8?b?0JDQu9C40YHQsA==?= <a@example.test>\r\n\r\n",
    b"Subject: \xef\xac\x81ne \xe2\x84\xaaelvin\r\nFrom: ok@example.test\r\n\r\n",
    b"X-Weird\x0b: vt\r\nSubject: Message 77\r\nTo: group: sender7@example.test;\r\n\r\n",
]

ODD_PROGRAMS = [
    "SUBJECT \"over two\"", "SUBJECT \"folded over\"", "SUBJECT spaced", "FROM upper",
    "HEADER X-Empty \"\"", "FROM bobinner", "FROM \"bob@example\"", "TO \"quoted, name\"",
    "FROM continued", "FROM lead", "SUBJECT \"after a blank\"", "SUBJECT lf", "SUBJECT strasse",
    "SUBJECT straße", "FROM \"алиса\"", "SUBJECT fine", "SUBJECT kelvin", "HEADER X-Weird vt",
    "SUBJECT \"message 77\"", "TO sender7", "FROM example", "SUBJECT \"e 7\"",
]


def test_header_fast_paths_match_the_parser() -> None:
    from keepmail.imap import mime
    names = [[b"FROM"], [b"subject", b"To"], [b"X-Empty"], [b"x-weird"], [b"Nope"]]
    for header in ODD_HEADERS:
        entry = msgcache.Entry(header, len(header), len(header))
        part = mime.Part(header, 0, len(header), len(header),
                         mime._parse_headers(header, 0, len(header)))
        for wanted in names:
            assert entry.fields(wanted, False) == part.fields(wanted, False), (header, wanted)
            assert entry.fields(wanted, True) == part.fields(wanted, True), (header, wanted)
        for name in (b"from", b"to", b"subject", b"x-empty", b"x-weird", b"content-type"):
            assert entry.values(name) == [v for k, v, _s, _e in part.headers if k == name]
        assert entry.plain_charset() == (mime.plain_text_charset(part) or "")


@pytest.mark.parametrize("max_bytes", [64 * 1024 * 1024, 0])
def test_header_search_fast_paths_match_uncached(store: Store, max_bytes: int) -> None:
    ids = _insert(store, [h + b"body text\r\n" for h in ODD_HEADERS])
    cache = msgcache.MessageCache(max_bytes)
    for text in ODD_PROGRAMS:
        pred = _program(text)
        expected = _run(store, ids, pred, None)
        assert _run(store, ids, pred, cache) == expected, text
        assert _run(store, ids, pred, cache) == expected, text


def test_small_messages_are_kept_whole_within_their_own_budget() -> None:
    cache = msgcache.MessageCache(40_000)
    assert cache.raw_max_bytes == 20_000
    for blob_id in range(1, 100):
        cache.put_raw(blob_id, b"x" * 1000)
        assert cache.raw_bytes <= cache.raw_max_bytes
    assert cache.get_raw(99) == b"x" * 1000 and cache.get_raw(1) is None   # LRU
    cache.put_raw(500, b"y" * (msgcache.SMALL_RAW + 1))
    assert cache.get_raw(500) is None                                      # too big to keep
    assert cache.bytes == 0            # bodies never count against (or evict) headers
    cache.clear()
    assert cache.raw_bytes == 0 and cache.get_raw(99) is None


def test_fetch_rows_sparse_and_dense(store: Store) -> None:
    def setup(conn):  # type: ignore[no-untyped-def]
        from keepmail.store import accounts
        accounts.add_domain(conn, "example.test")
        accounts.add_account(conn, "x@example.test", "hash")
    store.write_sync(setup)
    ids = _insert(store, [CORPUS[0]] * 30)

    def mk(conn):  # type: ignore[no-untyped-def]
        box = mailq.create_mailbox(conn, 1, "R")
        for n, (blob_id, size) in enumerate(ids):
            mailq.add_message(conn, box.id, blob_id, size, flags={"\\Seen"} if n % 2 else set())
        mailq.expunge(conn, box.id, [3, 4, 17])
        return box.id
    box = store.write_sync(mk)
    for uids in ([*range(1, 31)], [1, 2, 5, 3, 30], [1, 30], [2, 29, 100], [], [17]):
        rows = store.read_now(lambda c, u=uids: imapq.fetch_rows(c, box, u))
        msgs = store.read_now(lambda c, u=uids: mailq.get_messages(c, box, u))
        assert [(r.uid, r.flags, r.internaldate, r.size, r.modseq, r.blob_id) for r in rows] == \
            [(m.uid, m.flags, m.internaldate, m.size, m.modseq, m.blob_id) for m in msgs]


def test_fetch_in_many_batches_keeps_order_and_fails_cleanly(
        imap: ImapEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    from keepmail.imap import cmd_message
    monkeypatch.setattr(cmd_message, "BATCH", 4)   # 23 messages: 6 batches
    for n in range(1, 24):
        cte = b"x-unknown" if n == 17 else b"7bit"
        imap.deliver(b"From: a@example.test\r\nSubject: number %d\r\n"
                     b"Content-Transfer-Encoding: %s\r\n\r\nbody %d\r\n" % (n, cte, n))
    raw = imap.raw()
    raw.login()
    raw.cmd("a SELECT INBOX")
    reply = raw.cmd("b FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert reply[-1].startswith(b"b OK"), reply[-1]
    fetches = [line for line in reply if line.startswith(b"* ") and b" FETCH (" in line]
    assert len(fetches) == 23
    for n, line in enumerate(fetches, 1):
        assert line.startswith(b"* %d FETCH (FLAGS () BODY[HEADER.FIELDS (SUBJECT)] {" % n)
        assert b"Subject: number %d\r\n\r\n)" % n in line, line
    reply = raw.cmd("c FETCH 1:* (BINARY.PEEK[1])")   # message 17: NO midway
    assert reply[-1].startswith(b"c NO [UNKNOWN-CTE]"), reply[-1]
    assert raw.cmd("d NOOP")[-1].startswith(b"d OK")
    raw.close()


def _run_narrowed(st: Store, ids: list[tuple[int, int]], pred: search.Pred,
                  cache: msgcache.MessageCache) -> list[int]:
    """As SEARCH runs it: the text index rules messages out, the predicate decides."""
    conn = st.db.reader()
    loader = msgcache.Loader(conn, st.cipher, cache)
    positions = range(len(ids))
    narrow = search.narrow_of(pred)
    if narrow is not None:
        keep = narrow(cache.text_index(tuple(b for b, _ in ids)))
        if keep is not None:
            positions = sorted(keep)
    cands = [search.Candidate(i + 1, i + 1, frozenset(), 0.0, ids[i][1], 1, False,
                              blob_id=ids[i][0], loader=loader) for i in positions]
    loader.plan([c.blob_id for c in cands], [c.size for c in cands])
    return [c.seq for c in cands if pred(c)]


def _random_message(rng: random.Random) -> bytes:
    words = ["needle", "Needle", "hay", "stack", "sender7", "sender70", "message 77",
             "caf\xe9", "stra\xdfe", "NEE", "dle", "r\xe9sum\xe9", "x(y)", '"q"', "a\\b"]

    def text() -> str:
        return " ".join(rng.choice(words) for _ in range(rng.randint(0, 4)))

    def field_value() -> bytes:
        value = text()
        kind = rng.random()
        if kind < 0.2:   # an encoded word
            return b"=?utf-8?q?" + value.encode().replace(b" ", b"_") + b"?="
        if kind < 0.3:   # raw non-ASCII
            return value.encode("utf-8")
        if kind < 0.4:   # folded
            return value.encode("latin-1", "replace").replace(b" ", b"\r\n ", 1)
        return value.encode("latin-1", "replace")
    head = b"From: " + field_value() + b" <sender%d@example.test>\r\n" % rng.randint(0, 99)
    head += b"Subject: " + field_value() + b"\r\n"
    if rng.random() < 0.3:
        head += b"X-Extra: " + field_value() + b"\r\n"
    body = text().encode(rng.choice(["ascii", "utf-8", "latin-1"]), "replace") + b"\r\n"
    kind = rng.random()
    if kind < 0.2:
        head += b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n"
        body = base64.b64encode(text().encode()) + b"\r\n"
    elif kind < 0.35:
        head += b"Content-Type: multipart/mixed; boundary=ZZ\r\n"
        body = (b"--ZZ\r\nContent-Type: text/plain\r\n\r\n" + body + b"--ZZ\r\n"
                b"Content-Type: text/html\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
                b"nee=\r\ndle " + text().encode("latin-1", "replace") + b"\r\n--ZZ--\r\n")
    elif kind < 0.5:
        head += b"Content-Type: text/plain; charset=" + rng.choice(
            [b"us-ascii", b"utf-8", b"iso-8859-1", b"koi8-r", b"UTF-8"]) + b"\r\n"
    return head + b"\r\n" + body


@pytest.mark.parametrize("seed", range(4))
def test_text_index_never_changes_search_results(store: Store, seed: int) -> None:
    """The bulk pre-check (msgcache.TextIndex) only ever rules out messages the exact
    predicates reject: same results over random messages, as the mailbox changes."""
    rng = random.Random(seed)
    corpus = CORPUS + [h + b"needle body\r\n" for h in ODD_HEADERS]
    corpus += [_random_message(rng) for _ in range(60)]
    ids = _insert(store, corpus)
    programs = PROGRAMS + ODD_PROGRAMS + [
        "FROM sender7", 'SUBJECT "message 77"', "BODY needle", "BODY NEE", "SUBJECT dle",
        "FROM \"x(y)\"", "FROM q", "SUBJECT \"hay stack\"", "BODY \"needle hay\"",
        "SUBJECT needle BODY hay", "OR SUBJECT hay BODY stack", "NOT SUBJECT hay",
        "HEADER X-Extra stack", "TO sender7", "BODY \"caf\xe9\"", "SUBJECT \"r\xe9sum\xe9\"",
        "FROM example.test BODY needle", "BODY dle", "SUBJECT \"\"", "BODY \"\""]
    cache = msgcache.MessageCache(64 * 1024 * 1024)
    current = list(ids)
    for step in range(6):
        if step == 1:   # some cached, some not: the index must keep the unknown ones
            cache.clear()
            _run(store, current[::3], _program("SUBJECT x"), cache)
        elif step >= 2:   # expunges and new deliveries change the set of blobs
            rng.shuffle(current)
            current = sorted(current[: len(current) - rng.randint(0, 10)])
            current += _insert(store, [_random_message(rng) for _ in range(rng.randint(0, 8))])
        for text in programs:
            pred = _program(text)
            expected = _run(store, current, pred, None)
            assert _run_narrowed(store, current, pred, cache) == expected, (step, text)
    assert len(cache._indexes) <= msgcache.MAX_INDEXES


def test_text_index_is_bounded_and_keyed_by_blobs() -> None:
    cache = msgcache.MessageCache(64 * 1024)
    header = b"From: a@b.test\r\nSubject: hello needle\r\n"
    for blob_id in range(1, 200):
        entry = cache.put(blob_id, msgcache.Entry(header, len(header), len(header) + 10))
        cache.put_raw(blob_id, header + b"\r\nneedle\r\n")
        assert entry is not None
    assert 1 not in cache and 199 in cache                  # older ones evicted: bounded
    small = cache.text_index((197, 198, 199))
    assert small.head_candidates((b"needle",), False) == {0, 1, 2}
    assert small.body_candidates(b"needle") == {0, 1, 2}
    assert small.head_candidates((b"absent",), False) == set()
    assert cache.text_index((197, 198, 199)) is small          # kept: same blobs, same index
    assert cache.text_index((198, 199)) is not small          # other blobs: another index
    missing = cache.text_index((199, 10_000))                # one not cached: kept for the check
    assert missing.head_candidates((b"absent",), False) == {1}
    assert cache.text_index((199, 10_000)) is not missing   # ... and not remembered
    assert small.head_candidates((b"a\0b",), False) is None
    first = b"Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    second = b"Content-type: TEXT/plain; charset=utf-8\r\n\r\n"
    for blob_id, header in ((300, first), (301, second), (302, b"X: y\r\n\r\n")):
        cache.put(blob_id, msgcache.Entry(header, len(header), len(header) + 8))
        cache.put_raw(blob_id, header + b"needle\r\n")
    mixed = cache.text_index((300, 301, 302))   # a header starting the joined headers
    assert mixed.body_candidates(b"needle") == {0, 1, 2}
    assert mixed.body_candidates(b"absent") == {0}   # base64: only the exact check can tell
    assert cache.text_index((1, 2)).head_candidates((b"absent",), False) == {0, 1}
    cache.max_bytes = 8 * 40          # an index of more bytes than its share ...
    big = cache.text_index((198, 199))
    assert big.body_candidates(b"needle") == {0, 1}
    assert cache.text_index((198, 199)) is not big   # ... is used once, not kept
