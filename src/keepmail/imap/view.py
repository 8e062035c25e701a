"""A session's view of its selected mailbox (RFC 9051 sections 2.3.1, 7.4.1, 7.5.1).

Sequence numbers are per session: they change only when this session tells
its client (EXISTS, EXPUNGE, VANISHED). The view keeps the UIDs the client
knows, the MODSEQ up to which it has been told about changes, and the
expunges it has learned of but may not announce yet (never during FETCH,
STORE or SEARCH by sequence number).

UIDs are kept as runs of consecutive numbers: a 100,000-message mailbox
that was filled in order costs a few bytes per session, which is what keeps
idle IMAP connections cheap.
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from collections.abc import Iterable, Iterator


class UidMap:
    """Sorted UIDs as runs; seq n is the n-th UID (1-based)."""

    __slots__ = ("_cum", "_lens", "_starts")

    def __init__(self, uids: Iterable[int] = ()) -> None:
        self._starts = array("Q")
        self._lens = array("Q")
        self._cum = array("Q")   # UIDs before run i
        for uid in uids:
            self.append(uid)

    def __len__(self) -> int:
        return self._cum[-1] + self._lens[-1] if self._starts else 0

    def __iter__(self) -> Iterator[int]:
        for start, length in zip(self._starts, self._lens, strict=True):
            yield from range(start, start + length)

    @property
    def last(self) -> int:
        return self._starts[-1] + self._lens[-1] - 1 if self._starts else 0

    def append(self, uid: int) -> None:
        if self._starts:
            end = self._starts[-1] + self._lens[-1]
            if uid < end:
                raise ValueError("UIDs must grow")
            if uid == end:
                self._lens[-1] += 1
                return
            self._cum.append(self._cum[-1] + self._lens[-1])
        else:
            self._cum.append(0)
        self._starts.append(uid)
        self._lens.append(1)

    def seq_of(self, uid: int) -> int:
        """Sequence number of a UID, or 0 if the view does not hold it."""
        i = bisect_right(self._starts, uid) - 1
        if i < 0 or uid >= self._starts[i] + self._lens[i]:
            return 0
        return self._cum[i] + uid - self._starts[i] + 1

    def uid_of(self, seq: int) -> int:
        if not 1 <= seq <= len(self):
            raise IndexError(seq)
        i = bisect_right(self._cum, seq - 1) - 1
        return self._starts[i] + (seq - 1 - self._cum[i])

    def __contains__(self, uid: int) -> bool:
        return self.seq_of(uid) > 0

    def remove(self, uids: Iterable[int]) -> None:
        gone = set(uids)
        if not gone:
            return
        kept = [u for u in self if u not in gone]
        self._starts, self._lens, self._cum = array("Q"), array("Q"), array("Q")
        for u in kept:
            self.append(u)

    def uids_in(self, lo: int, hi: int) -> Iterator[int]:
        """UIDs between lo and hi inclusive, ascending."""
        for start, length in zip(self._starts, self._lens, strict=True):
            end = start + length - 1
            if end < lo or start > hi:
                continue
            yield from range(max(start, lo), min(end, hi) + 1)


class SelectedView:
    """The selected mailbox as one session's client knows it."""

    def __init__(self, mailbox_id: int, name: str, readonly: bool, uidvalidity: int,
                 uids: UidMap, modseq: int, uidnext: int) -> None:
        self.mailbox_id = mailbox_id
        self.name = name
        self.readonly = readonly
        self.uidvalidity = uidvalidity
        self.uids = uids
        self.modseq = modseq             # changes up to here are known to the client
        self.uidnext = uidnext
        self.pending_gone: set[int] = set()   # expunged, not yet announced
        self.own_modseqs: set[int] = set()    # changes this session already reported
        self.keywords: set[str] = set()       # announced in FLAGS
        self.saved: set[int] = set()          # SEARCHRES result, as UIDs
        self.recent: list[tuple[int, int]] = []  # UID ranges that are \Recent here

    def is_recent(self, uid: int) -> bool:
        return any(lo <= uid <= hi for lo, hi in self.recent)

    def recent_count(self) -> int:
        return sum(sum(1 for _ in self.uids.uids_in(lo, hi)) for lo, hi in self.recent)
