"""TREC online protocol runner and the accuracy figures of /work/shared/corpora.md.

The protocol (TREC spam track): messages come in a fixed order; each one is
classified first, then its true label is revealed and the filter learns from
it.  The scores collected this way measure a filter that is always being
trained, as on a live server.

Metrics (higher score = more spam):

* ``one_minus_roca_pct``: the chance, in percent, that a random ham scores at
  least as high as a random spam, ties counting half (1 - area under ROC).
* ``caught_at_fpr``: threshold at the score of the k-th highest ham with
  k = floor(fpr x number of ham); the share of spam scoring strictly above it.
  (When k = 0, fewer than 1/fpr ham, the threshold is the highest ham score.)

Corpora: a folder laid out like the SpamAssassin public corpus (sub-folders
whose names contain "spam" or "ham"), or a TREC index file with lines
``spam path`` / ``ham path`` relative to the index.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .classifier import Classifier


@dataclass(frozen=True)
class Item:
    path: Path
    is_spam: bool


@dataclass
class Result:
    name: str
    scores: list[float]
    labels: list[bool]
    seconds: float
    cpu_seconds: float = 0.0    # this process's CPU time: steadier than wall time under load

    @property
    def roca(self) -> float:
        return one_minus_roca_pct(self.scores, self.labels)

    @property
    def caught(self) -> float:
        return caught_at_fpr(self.scores, self.labels, 0.001)

    @property
    def rate(self) -> float:
        return len(self.scores) / self.seconds if self.seconds > 0 else math.inf

    def line(self) -> str:
        cpu = (f", {len(self.scores) / self.cpu_seconds:.1f} per CPU-second"
               if self.cpu_seconds > 0 else "")
        return (f"{self.name:<22} 1-ROCA {self.roca:7.4f} %   caught@0.1%FPR "
                f"{100 * self.caught:6.2f} %   {self.rate:8.1f} msgs/s   "
                f"(n={len(self.scores)}{cpu})")


# -- metrics ------------------------------------------------------------------

def one_minus_roca_pct(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """100 x P(ham score >= spam score), ties half, via average ranks (Mann-Whitney)."""
    n_spam = sum(1 for y in labels if y)
    n_ham = len(labels) - n_spam
    if n_spam == 0 or n_ham == 0:
        return math.nan
    order = sorted(range(len(scores)), key=scores.__getitem__)
    rank_sum_spam = 0.0
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        avg_rank = (i + j) / 2 + 1          # ranks are 1-based; ties share the mean rank
        rank_sum_spam += avg_rank * sum(1 for k in order[i:j + 1] if labels[k])
        i = j + 1
    auc = (rank_sum_spam - n_spam * (n_spam + 1) / 2) / (n_spam * n_ham)
    return 100.0 * (1.0 - auc)


def caught_at_fpr(scores: Sequence[float], labels: Sequence[bool], fpr: float = 0.001) -> float:
    """Share of spam scoring above the k-th highest ham score, k = floor(fpr x #ham)."""
    ham = sorted((s for s, y in zip(scores, labels, strict=True) if not y), reverse=True)
    spam = [s for s, y in zip(scores, labels, strict=True) if y]
    if not ham or not spam:
        return math.nan
    k = math.floor(fpr * len(ham))
    threshold = ham[max(k, 1) - 1]
    return sum(1 for s in spam if s > threshold) / len(spam)


# -- corpora ------------------------------------------------------------------

def load_corpus(source: Path) -> list[Item]:
    """Items of a SpamAssassin-style folder or a TREC index file, sorted by path."""
    source = Path(source)
    if source.is_file():
        items = []
        for line in source.read_text(errors="replace").splitlines():
            parts = line.split(None, 1)
            if len(parts) == 2 and parts[0].lower() in ("spam", "ham"):
                items.append(Item((source.parent / parts[1]).resolve(), parts[0].lower() == "spam"))
        return items
    items = []
    for sub in sorted(p for p in source.rglob("*") if p.is_dir()):
        name = sub.name.lower()
        if "spam" not in name and "ham" not in name:
            continue
        for f in sorted(sub.iterdir()):
            if f.is_file() and not f.name.startswith(("cmds", ".")) and f.suffix != ".md":
                items.append(Item(f, "spam" in name))
    return items


def seeded_order(items: Sequence[Item], seed: int) -> list[Item]:
    """A fixed pseudo-random order: same seed, same order, on every machine."""
    ordered = sorted(items, key=lambda it: str(it.path))
    random.Random(seed).shuffle(ordered)
    return ordered


# -- runners ------------------------------------------------------------------

Progress = Callable[[int, int], None]


def run_online(clf: Classifier, items: Sequence[Item], *, name: str = "keepmail",
               progress: Progress | None = None) -> Result:
    """Classify each message, then learn its true label (TREC online protocol)."""
    scores: list[float] = []
    labels: list[bool] = []
    start, cpu = time.perf_counter(), time.process_time()
    for n, item in enumerate(items):
        raw = item.path.read_bytes()
        f = clf.features(raw)
        margin = clf.model.margin(f.ids)
        scores.append(margin)
        labels.append(item.is_spam)
        clf.learn_features(f, item.is_spam, margin=margin)
        if progress is not None and n % 500 == 0:
            progress(n, len(items))
    return Result(name, scores, labels, time.perf_counter() - start, time.process_time() - cpu)


def run_two_fold(make: Callable[[], Classifier], items: Sequence[Item],
                 name: str = "keepmail 2-fold") -> Result:
    """Train on one half (one online pass), score the other; both ways; pooled scores."""
    half = len(items) // 2
    folds = [(items[:half], items[half:]), (items[half:], items[:half])]
    scores: list[float] = []
    labels: list[bool] = []
    start, cpu = time.perf_counter(), time.process_time()
    for train, test in folds:
        clf = make()
        for item in train:
            clf.learn(item.path.read_bytes(), item.is_spam)
        for item in test:
            scores.append(clf.score(item.path.read_bytes(), reasons=0).logit)
            labels.append(item.is_spam)
    return Result(name, scores, labels, time.perf_counter() - start, time.process_time() - cpu)
