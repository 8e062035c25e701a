"""Feature ids are stable: saved models (and the starter) depend on them."""

from __future__ import annotations

import hashlib
import json
import struct
import zlib
from pathlib import Path

import pytest

from keepmail.spam import features, persist
from keepmail.spam.classifier import Classifier


def test_token_ids_are_pinned() -> None:
    # If these change, bump FEATURES_VERSION and rebuild the starter model.
    assert features.token_id("w:viagra") == 214684
    assert features.token_id("s:grüße") == 2636144
    assert features.table_prime(22) == 4194301


def test_ids_are_in_range_and_deterministic() -> None:
    raw = b"Subject: a b\n\nhello there world again, and again http://x.example.com/"
    first = features.extract(raw).ids
    assert sorted(first) == sorted(features.extract(raw).ids)
    assert all(0 <= i < 1 << features.DEFAULT_BITS for i in first)


def test_model_of_other_feature_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "m"
    Classifier.empty().save(path)
    data = path.read_bytes()
    body = zlib.decompress(data[persist._HEADER.size:])
    (hlen,) = struct.unpack_from("<I", body)
    meta = json.loads(body[4:4 + hlen])
    meta["features"] = features.FEATURES_VERSION + 1
    head = json.dumps(meta).encode()
    payload = zlib.compress(struct.pack("<I", len(head)) + head + body[4 + hlen:])
    path.write_bytes(persist._HEADER.pack(persist.MAGIC, persist.VERSION, len(payload),
                                          hashlib.sha256(payload).digest()) + payload)
    with pytest.raises(persist.CorruptModel, match="features"):
        persist.load_file(path)
