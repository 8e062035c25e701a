"""Model files: round trip, atomic save with backup, corruption detected and recovered."""

from __future__ import annotations

from pathlib import Path

import pytest

from keepmail.spam import persist
from keepmail.spam.classifier import Classifier

from .conftest import make_mail

PROBE = make_mail("Cheap meds online, 80% off!!!", "Buy cheap viagra now. Limited offer!")


def test_round_trip(trained: Classifier, tmp_path: Path) -> None:
    trained.learn(PROBE, False, user="alice")
    path = tmp_path / "spam.model"
    trained.save(path)
    again = Classifier.open(path)
    assert again.source == "file"
    assert again.score(PROBE).logit == pytest.approx(trained.score(PROBE).logit, abs=1e-5)
    assert again.score(PROBE, user="alice").logit == pytest.approx(
        trained.score(PROBE, user="alice").logit, abs=1e-5)
    assert again.reputation.counts == trained.reputation.counts


def test_save_keeps_previous_as_backup(trained: Classifier, tmp_path: Path) -> None:
    path = tmp_path / "spam.model"
    trained.save(path)
    first = path.read_bytes()
    trained.learn(PROBE, True)
    trained.save()
    assert persist.backup_path(path).read_bytes() == first
    assert not path.with_name(path.name + ".tmp").exists()


@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage", "empty"])
def test_corruption_falls_back_to_backup(damage: str, trained: Classifier,
                                         tmp_path: Path) -> None:
    path = tmp_path / "spam.model"
    trained.save(path)
    good = trained.score(PROBE).logit
    trained.save()                       # the first file is now the backup
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x40
    elif damage == "truncate":
        data = data[: len(data) - 100]
    elif damage == "garbage":
        data = bytearray(b"\x00" * len(data))
    else:
        data = bytearray()
    path.write_bytes(bytes(data))
    with pytest.raises(persist.CorruptModel):
        persist.load_file(path)
    again = Classifier.open(path)
    assert again.source == "backup"
    assert again.load_errors and str(path) in again.load_errors[0]
    assert again.score(PROBE).logit == pytest.approx(good, abs=1e-5)


def test_both_corrupt_falls_back_to_starter(trained: Classifier, tmp_path: Path) -> None:
    path = tmp_path / "spam.model"
    trained.save(path)
    trained.save()
    for p in (path, persist.backup_path(path)):
        p.write_bytes(b"KMSPAM" + b"\x01" * 100)
    again = Classifier.open(path)
    assert again.source == ("starter" if persist.STARTER_PATH.exists() else "empty")
    assert len(again.load_errors) == 2
    again.save()                          # recovery leaves a writable, good model behind
    assert Classifier.open(path).source == "file"


def test_missing_file_opens_starter(tmp_path: Path) -> None:
    clf = Classifier.open(tmp_path / "none" / "spam.model")
    assert clf.source in ("starter", "empty")
    assert not clf.load_errors


def _rewrap(body: bytes) -> bytes:
    """A model file around `body` with a valid checksum (damage the checksum cannot see)."""
    import hashlib
    import zlib

    payload = zlib.compress(body)
    return persist._HEADER.pack(persist.MAGIC, persist.VERSION, len(payload),
                                hashlib.sha256(payload).digest()) + payload


@pytest.mark.parametrize("damage", ["index", "short", "long"])
def test_checksummed_but_inconsistent_body_is_corrupt(damage: str, trained: Classifier) -> None:
    import json
    import struct
    import zlib

    data = persist.dump(trained.state())
    body = zlib.decompress(data[persist._HEADER.size:])
    (hlen,) = struct.unpack_from("<I", body)
    meta = json.loads(body[4:4 + hlen])
    n = meta["org"]["n"]
    sections = bytearray(body[4 + hlen:])
    if damage == "index":     # first org index beyond the table
        sections[0:4] = struct.pack("<I", 1 << meta["bits"])
    elif damage == "short":
        meta["org"]["n"] = n + 10
    else:
        meta["org"]["n"] = n - 1
    head = json.dumps(meta).encode()
    with pytest.raises(persist.CorruptModel):
        persist.load(_rewrap(struct.pack("<I", len(head)) + head + bytes(sections)))


def test_half_precision_round_trip(trained: Classifier) -> None:
    state = persist.load(persist.dump(trained.state(), half=True))
    idx, vals, _ = trained.model.nonzero()
    again, vals16, _ = state.model.nonzero()
    assert again.tolist() == idx.tolist()
    assert vals16.tolist() == vals.astype("<f2").astype("<f4").tolist()
