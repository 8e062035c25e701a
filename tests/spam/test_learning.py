"""Learning changes verdicts: a few spam examples move the score of a similar message."""

from __future__ import annotations

from keepmail.spam.classifier import Classifier

from .conftest import HAMMY, SPAMMY, make_mail

NEW_SPAM = make_mail("Cheap pills, 90% off!!!", "Buy cheap viagra now, no prescription. "
                     "Click http://pills-cheap.example.biz/now. Limited offer!",
                     sender="Offers <promo@offers.example.biz>")
NEW_HAM = make_mail("Re: design review notes", "Hi Anna, thanks for the notes from the review; "
                    "the IMAP questions can wait until Tuesday. Bob",
                    sender="Bob <bob@colleagues.example.org>")


def test_empty_model_is_undecided(empty: Classifier) -> None:
    assert abs(empty.score(NEW_SPAM).probability - 0.5) < 1e-6


def test_learning_a_few_spam_changes_the_next_verdict(empty: Classifier) -> None:
    before = empty.score(NEW_SPAM).probability
    for subject, body in SPAMMY:
        empty.learn(make_mail(subject, body), True)
    for subject, body in HAMMY:
        empty.learn(make_mail(subject, body), False)
    after = empty.score(NEW_SPAM)
    assert after.probability > 0.8 > before
    assert empty.score(NEW_HAM).probability < 0.3


def test_reasons_name_the_features(trained: Classifier) -> None:
    result = trained.score(NEW_SPAM)
    assert result.reasons and len(result.reasons) <= 8
    names = [name for name, _ in result.reasons]
    assert all(isinstance(n, str) and n for n in names)
    # The strongest reasons push towards spam for a spam message.
    assert sum(c for _, c in result.reasons) > 0


def test_auth_results_are_features(empty: Classifier) -> None:
    passed = {"spf": "pass", "dkim": "pass", "dmarc": "pass"}
    failed = {"spf": "fail", "dkim": "none", "dmarc": "fail"}
    for _ in range(3):
        empty.learn(NEW_HAM, False, auth=passed)
        empty.learn(NEW_SPAM, True, auth=failed)
    neutral = make_mail("hello", "a message about nothing in particular")
    good = empty.score(neutral, auth=passed)
    bad = empty.score(neutral, auth=failed)
    assert bad.logit > good.logit
    assert any(name.startswith("auth:") for name, _ in bad.reasons)


def test_reputation_learned_from_history(empty: Classifier) -> None:
    spam = make_mail("hello", "some neutral words here", sender="x <a@spamhaus-bait.example>")
    for _ in range(20):
        empty.learn(spam, True, client_ip="203.0.113.9")
    tokens = empty.reputation.tokens(empty.features(spam, client_ip="203.0.113.9"))
    assert any(t.startswith("rep:net:r4") for t in tokens)
    assert any(t.startswith("rep:dom:r4") for t in tokens)
