"""Build the starter spam model shipped in src/keepmail/spam/starter/model.bin.

A new install has seen no mail; the starter model gives it a warm start. It
is trained on the SpamAssassin public corpus (from ../shared/corpora/, never
committed), two online passes in a fixed seeded order, org weights only: no
reputation counts and no per-user models, since 2002-era senders say nothing
about a new organization's correspondents.  To stay small (< 5 MB) it keeps
the largest weights only and stores them as float16.

    python scripts/build_starter_model.py [--keep 400000] [--out PATH]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from keepmail.spam import trec  # noqa: E402
from keepmail.spam.classifier import Classifier  # noqa: E402
from keepmail.spam.persist import STARTER_PATH, ModelState, dump  # noqa: E402
from spam_trec import corpus_dir  # noqa: E402

PASSES = 2
SEED = 7


def prune(clf: Classifier, keep: int) -> None:
    """Zero all but the `keep` weights of largest magnitude (with their AdaGrad sums)."""
    w, acc = clf.model.weights, clf.model.accum
    learned = np.flatnonzero(acc)
    # Stable sort by decreasing |weight|: ties keep index order.
    ranked = learned[np.argsort(-np.abs(w[learned]), kind="stable")]
    w[ranked[keep:]] = 0.0
    acc[ranked[keep:]] = 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", type=int, default=400_000, help="weights kept")
    ap.add_argument("--out", type=Path, default=STARTER_PATH)
    args = ap.parse_args()
    items = trec.seeded_order(trec.load_corpus(corpus_dir()), SEED)
    clf = Classifier.empty()
    for n in range(PASSES):
        # Reputation counts restart each pass, so pass 2 sees history build up as live
        # mail would instead of knowing every sender already; the file stores none.
        for it in items:
            clf.learn_features(clf.features(it.path.read_bytes()), it.is_spam)
        clf.reputation.counts.clear()
        print(f"pass {n + 1}: {clf.model.learned} updates")
    prune(clf, args.keep)
    data = dump(ModelState(clf.model), half=True, level=9)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(data)
    kept = int(np.count_nonzero(clf.model.accum))
    print(f"wrote {args.out}: {len(data) / 1e6:.2f} MB, {kept} weights "
          f"(32-bit trained, stored as float16)")


if __name__ == "__main__":
    main()
