"""SORT and THREAD (RFC 5256): base subjects, sort keys, ORDEREDSUBJECT, REFERENCES.

Also DISPLAYFROM/DISPLAYTO (RFC 5957). Messages are `search.Candidate`s;
results are lists of candidates (SORT) or nested thread trees (THREAD).
"""

from __future__ import annotations

import email.utils
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import mime
from .parser import ParseError, Reader
from .search import Candidate

SORT_KEYS = ("ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO", "DISPLAYFROM",
             "DISPLAYTO")
THREAD_ALGORITHMS = ("ORDEREDSUBJECT", "REFERENCES")

_WS = re.compile(r"\s+")
_TRAILER = re.compile(r"(\s*\(fwd\)\s*|\s+)$", re.IGNORECASE)
_BLOB = r"\[[^\[\]]*\]"
_LEADER = re.compile(rf"^(\s*({_BLOB}\s*)*(re|fwd?)\s*({_BLOB})?\s*:)", re.IGNORECASE)
_LEADING_BLOB = re.compile(rf"^\s*{_BLOB}\s*")
_FWD_WRAP = re.compile(r"^\[fwd:(.*)\]$", re.IGNORECASE | re.DOTALL)


def base_subject(raw: bytes | None) -> str:
    """RFC 5256 section 2.1, steps 1-6 (case folded for comparison)."""
    text = _WS.sub(" ", mime.decode_words(raw or b"")).strip()
    while True:
        while True:  # (2) trailing "(fwd)" and whitespace
            new = _TRAILER.sub("", text)
            if new == text:
                break
            text = new
        while True:  # (3)-(4) leaders and leading blobs
            m = _LEADER.match(text)
            if m:
                text = text[m.end():].lstrip()
                continue
            b = _LEADING_BLOB.match(text)
            if b and text[b.end():].strip():
                text = text[b.end():]
                continue
            break
        w = _FWD_WRAP.match(text)  # (6)
        if w:
            text = w.group(1).strip()
            continue
        return text.casefold()


def sent_time(m: Candidate) -> float:
    value = m.head.header(b"date")
    if value:
        parsed = email.utils.parsedate_tz(value.decode("latin-1", "replace"))
        if parsed:
            try:
                return float(email.utils.mktime_tz(parsed))
            except (OverflowError, ValueError):
                pass
    return m.internaldate


def _casemap(text: str) -> str:
    # i;ascii-casemap (RFC 4790 9.2, the RFC 5256 default): compare with a-z as A-Z, so
    # "[" and "_" sort after the letters, as in ASCII upper case.
    return text.casefold().upper()


def _first_address(m: Candidate, name: bytes, display: bool) -> str:
    """RFC 5256 FROM/TO/CC: the addr-mailbox of the first address as the ENVELOPE lists it
    (a group's start counts: its mailbox is the group name). RFC 5957 DISPLAY*: its
    display-name, else the address (for a group, its name)."""
    value = m.head.header(name)
    if not value:
        return ""
    first = next((a for a in mime.parse_addresses(value) if a[1] is not None), None)
    if first is None:
        return ""
    disp, local, domain = first
    local_text = (local or b"").decode("utf-8", "replace")
    if not display:
        return _casemap(local_text)
    if disp:
        return _casemap(mime.decode_words(disp))
    if domain is None or domain == b"MISSING_DOMAIN":
        return _casemap(local_text)
    return _casemap(f"{local_text}@{domain.decode('utf-8', 'replace')}")


def _key_fn(name: str) -> Callable[[Candidate], Any]:
    if name == "ARRIVAL":
        return lambda m: m.internaldate
    if name == "DATE":
        return sent_time
    if name == "SIZE":
        return lambda m: m.size
    if name == "SUBJECT":
        return lambda m: base_subject(m.head.header(b"subject")).upper()
    fields = {"CC": b"cc", "FROM": b"from", "TO": b"to", "DISPLAYFROM": b"from",
              "DISPLAYTO": b"to"}
    header = fields[name]
    display = name.startswith("DISPLAY")
    return lambda m: _first_address(m, header, display)


def parse_sort_criteria(r: Reader) -> list[tuple[str, bool]]:
    r.enter()
    criteria: list[tuple[str, bool]] = []
    reverse = False
    while True:
        name = r.atom().upper()
        if name == "REVERSE":
            if reverse:
                raise ParseError("REVERSE twice")
            reverse = True
            r.sp()
            continue
        if name not in SORT_KEYS:
            raise ParseError(f"unknown sort key {name}")
        criteria.append((name, reverse))
        reverse = False
        if r.take(b")"):
            break
        r.sp()
    if reverse:
        raise ParseError("REVERSE without a key")
    r.depth -= 1
    return criteria


def sort_messages(msgs: list[Candidate], criteria: list[tuple[str, bool]]) -> list[Candidate]:
    """Stable multi-key sort; ties fall back to sequence order (RFC 5256 section 3)."""
    result = sorted(msgs, key=lambda m: m.seq)
    for name, reverse in reversed(criteria):
        fn = _key_fn(name)
        result.sort(key=fn, reverse=reverse)
    return result


# -- THREAD ---------------------------------------------------------------------------------
Tree = list[Any]  # [message number, [child trees...]]


def ordered_subject(msgs: list[Candidate], number: Callable[[Candidate], int]) -> list[Tree]:
    groups: dict[str, list[Candidate]] = {}
    for m in sorted(msgs, key=lambda m: (base_subject(m.head.header(b"subject")),
                                         sent_time(m), m.seq)):
        groups.setdefault(base_subject(m.head.header(b"subject")), []).append(m)
    threads = sorted(groups.values(), key=lambda g: (sent_time(g[0]), g[0].seq))
    return [[number(g[0]), [[number(c), []] for c in g[1:]]] for g in threads]


_MSGID = re.compile(rb"<[^<>\s]+>")


@dataclass
class _Node:
    msg_id: str
    msg: Candidate | None = None
    parent: _Node | None = None
    children: list[_Node] = field(default_factory=list)


def _ids(value: bytes | None) -> list[str]:
    return [x.decode("latin-1") for x in _MSGID.findall(value or b"")]


def _is_ancestor(node: _Node, other: _Node) -> bool:
    seen = 0
    while other is not None and seen < 10_000:
        if other is node:
            return True
        other = other.parent  # type: ignore[assignment]
        seen += 1
    return False


def _link(parent: _Node, child: _Node) -> None:
    if child.parent is not None or parent is child or _is_ancestor(child, parent):
        return
    child.parent = parent
    parent.children.append(child)


def references(msgs: list[Candidate], number: Callable[[Candidate], int]) -> list[Tree]:
    """The REFERENCES algorithm (RFC 5256 section 4)."""
    table: dict[str, _Node] = {}
    for m in msgs:  # (1) build the id table
        own = _ids(m.head.header(b"message-id"))
        key = own[0] if own else f"<none-{m.uid}>"
        if key in table and table[key].msg is not None:
            key = f"<dup-{m.uid}>"
        node = table.setdefault(key, _Node(key))
        node.msg = m
        refs = _ids(m.head.header(b"references")) or _ids(m.head.header(b"in-reply-to"))[:1]
        prev: _Node | None = None
        for ref in refs:
            ref_node = table.setdefault(ref, _Node(ref))
            if prev is not None and ref_node.parent is None:
                _link(prev, ref_node)
            prev = ref_node
        if prev is not None and prev is not node:
            if node.parent is not None:
                node.parent.children.remove(node)
                node.parent = None
            _link(prev, node)
    roots = [n for n in table.values() if n.parent is None]  # (2)
    roots = _prune(roots)  # (3)
    roots.sort(key=lambda n: _sort_key(n))  # (4)
    roots = _group_by_subject(roots)  # (5)
    return [_tree(n, number) for n in roots]


def _prune(nodes: list[_Node]) -> list[_Node]:
    out: list[_Node] = []
    for n in nodes:
        n.children = _prune(n.children)
        for c in n.children:
            c.parent = n
        if n.msg is None:
            if not n.children:
                continue
            # Promote children of a dummy, except several children to the root level.
            if n.parent is not None or len(n.children) == 1:
                for c in n.children:
                    c.parent = n.parent
                out.extend(n.children)
                continue
        out.append(n)
    return out


def _sort_key(n: _Node) -> tuple[float, int]:
    m = n.msg
    if m is None:
        return min((_sort_key(c) for c in n.children), default=(0.0, 0))
    return sent_time(m), m.seq


def _group_by_subject(roots: list[_Node]) -> list[_Node]:
    by_subject: dict[str, _Node] = {}
    out: list[_Node] = []
    for n in roots:
        m = n.msg if n.msg is not None else (n.children[0].msg if n.children else None)
        subject = base_subject(m.head.header(b"subject")) if m else ""
        other = by_subject.get(subject) if subject else None
        if other is None:
            if subject:
                by_subject[subject] = n
            out.append(n)
            continue
        raw_subj = m.head.header(b"subject") if m else b""
        is_reply = bool(_LEADER.match(mime.decode_words(raw_subj or b"")))
        if other.msg is None and n.msg is None:
            other.children.extend(n.children)
        elif other.msg is None or (n.msg is not None and is_reply):
            other.children.append(n)
        else:
            dummy = _Node(f"<subject-{len(out)}>", children=[other, n])
            out[out.index(other)] = dummy
            by_subject[subject] = dummy
    for n in out:
        _sort_children(n)
    return out


def _sort_children(n: _Node) -> None:
    n.children.sort(key=_sort_key)
    for c in n.children:
        _sort_children(c)


def _tree(n: _Node, number: Callable[[Candidate], int]) -> Tree:
    return [number(n.msg) if n.msg is not None else None,
            [_tree(c, number) for c in n.children]]


def render_threads(trees: list[Tree]) -> bytes:
    """RFC 5256 section 4 thread-list syntax."""
    return b"".join(b"(" + _render(t) + b")" for t in trees)


def _render(tree: Tree) -> bytes:
    num, children = tree
    out = b"" if num is None else b"%d" % num
    if not children:
        return out
    if len(children) == 1:
        rest = _render(children[0])
        if num is None:
            return rest
        return out + b" " + rest
    sub = b"".join(b"(" + _render(c) + b")" for c in children)
    return (out + b" " + sub) if num is not None else sub
