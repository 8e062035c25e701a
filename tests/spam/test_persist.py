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
