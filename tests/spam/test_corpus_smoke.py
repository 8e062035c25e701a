"""Smoke test on a small sample of the SpamAssassin public corpus (../shared/corpora/).

A few hundred messages, TREC online protocol from an empty model: checks that
the pipeline learns real mail, not a benchmark (bench/spam_trec.py is that).
"""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

from keepmail.spam import trec
from keepmail.spam.classifier import Classifier

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpora" / \
    "spamassassin-public-corpus.tar.xz"


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> list[trec.Item]:
    if not CORPUS.exists():
        pytest.skip(f"corpus not found at {CORPUS}")
    root = tmp_path_factory.mktemp("corpus")
    items: list[trec.Item] = []
    with tarfile.open(CORPUS) as tar:
        for n, member in enumerate(m for m in tar if m.isfile() and m.name.endswith(".txt")):
            folder = Path(member.name).parent.name
            if n % 12 or not ("spam" in folder or "ham" in folder):
                continue
            data = tar.extractfile(member)
            assert data is not None
            target = root / folder / Path(member.name).name
            target.parent.mkdir(exist_ok=True)
            target.write_bytes(data.read())
            items.append(trec.Item(target, "spam" in folder))
    return trec.seeded_order(items, 1)


def test_online_protocol_learns_real_mail(sample: list[trec.Item]) -> None:
    assert len(sample) > 400
    result = trec.run_online(Classifier.empty(), sample)
    # Cold start on ~500 messages: loose bounds, far from chance (50 %).
    assert result.roca < 3.0
    late = trec.Result("late", result.scores[250:], result.labels[250:], 1.0)
    assert late.roca < 2.0
