"""The accuracy figures of corpora.md on hand-computed examples."""

from __future__ import annotations

import math

from keepmail.spam.trec import caught_at_fpr, one_minus_roca_pct


def test_perfect_separation() -> None:
    assert one_minus_roca_pct([0.1, 0.2, 0.8, 0.9], [False, False, True, True]) == 0.0


def test_fully_inverted() -> None:
    assert one_minus_roca_pct([0.9, 0.8, 0.1], [False, False, True]) == 100.0


def test_ties_count_half() -> None:
    # 2 spam x 2 ham = 4 pairs: (s=.5,h=.5) tie, (s=.5,h=.1) ok, (s=.9,*) ok twice -> 0.5/4.
    assert math.isclose(one_minus_roca_pct([0.5, 0.9, 0.5, 0.1], [True, True, False, False]),
                        12.5)


def test_one_misordered_pair() -> None:
    # spam .3 below ham .4: one bad pair of 3 x 2 = 6.
    scores = [0.3, 0.8, 0.9, 0.4, 0.1]
    labels = [True, True, True, False, False]
    assert math.isclose(one_minus_roca_pct(scores, labels), 100 / 6)


def test_caught_at_fpr_uses_kth_highest_ham() -> None:
    # 2000 ham -> k = 2: threshold is the 2nd highest ham score (0.7).
    ham = [0.9, 0.7] + [0.0] * 1998
    spam = [0.95, 0.8, 0.7, 0.5]        # strictly above 0.7: two of four
    scores = ham + spam
    labels = [False] * len(ham) + [True] * len(spam)
    assert caught_at_fpr(scores, labels, 0.001) == 0.5


def test_caught_with_fewer_ham_than_one_over_fpr() -> None:
    # 10 ham -> k = 0: threshold is the highest ham (no false positive allowed).
    scores = [0.2] * 9 + [0.6] + [0.7, 0.5]
    labels = [False] * 10 + [True, True]
    assert caught_at_fpr(scores, labels, 0.001) == 0.5
