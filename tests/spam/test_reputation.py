"""Reputation learns from what users do (junk, release, reply), each user's share bounded."""

from __future__ import annotations

from keepmail.spam import classifier as cmod
from keepmail.spam.classifier import Classifier
from keepmail.spam.persist import dump, load

from .conftest import make_mail

IP = "203.0.113.9"


def mail(n: int, sender: str = "Promo <promo@bulk-sender.example>") -> bytes:
    return make_mail(f"offer number {n}", f"some neutral words here, item {n}", sender=sender)


def rep(clf: Classifier, raw: bytes, kind: str) -> str:
    tokens = clf.reputation.tokens(clf.features(raw, client_ip=IP))
    return next(t for t in tokens if t.startswith(f"rep:{kind}:"))


def counts(clf: Classifier, key: str) -> list[int]:
    return list(clf.reputation.counts.get(key, [0, 0]))


def test_users_junk_moves_build_sender_reputation(empty: Classifier) -> None:
    assert rep(empty, mail(0), "addr") == "rep:addr:new"
    for n, user in enumerate(("alice", "bob", "carol", "dave", "erin")):
        empty.learn(mail(n), True, user=user, client_ip=IP)
    for kind in ("addr", "dom", "net"):
        assert rep(empty, mail(99), kind).startswith(f"rep:{kind}:r4"), kind
    assert counts(empty, "addr:promo@bulk-sender.example") == [5, 0]


def test_users_ham_builds_good_reputation(empty: Classifier) -> None:
    sender = "Partner <orders@supplier.example>"
    for n, user in enumerate(("alice", "bob", "carol", "dave")):
        empty.learn(mail(n, sender), False, user=user, client_ip=IP)
    assert rep(empty, mail(99, sender), "addr").startswith("rep:addr:r0")
    assert rep(empty, mail(99, sender), "dom").startswith("rep:dom:r0")


def test_one_user_cannot_whitewash_a_known_spammer(empty: Classifier) -> None:
    for n in range(8):
        empty.learn(mail(n), True, client_ip=IP)          # org history: spam
    before = {k: rep(empty, mail(99), k) for k in ("addr", "dom", "net")}
    for n in range(200):
        empty.learn(mail(n), False, user="mallory", client_ip=IP)
    assert counts(empty, "addr:promo@bulk-sender.example") == [8, 1]
    for kind in ("addr", "dom", "net"):
        assert rep(empty, mail(99), kind).startswith(f"rep:{kind}:r4"), kind
    assert before["addr"].startswith("rep:addr:r4")


def test_one_user_cannot_make_a_new_sender_good(empty: Classifier) -> None:
    for n in range(50):
        empty.learn(mail(n), False, user="mallory", client_ip=IP)
    # One ham from one user: the middle-low bin with one message seen, not "good".
    assert rep(empty, mail(99), "addr") == "rep:addr:r1:n1"
    empty.learn(mail(0), False, user="accomplice", client_ip=IP)
    assert rep(empty, mail(99), "addr") == "rep:addr:r0:n2"


def test_one_users_spam_reports_are_capped(empty: Classifier) -> None:
    for n in range(100):
        empty.learn(mail(n), True, user="grumpy", client_ip=IP)
    assert counts(empty, "addr:promo@bulk-sender.example") == [cmod.USER_SPAM_VOTES, 0]
    assert counts(empty, f"net:{IP.rsplit('.', 1)[0]}") == [cmod.USER_SPAM_VOTES, 0]


def test_change_of_mind_withdraws_the_earlier_vote(empty: Classifier) -> None:
    empty.learn(mail(0), True, user="alice")      # into Junk by mistake
    empty.learn(mail(0), False, user="alice")     # and back out
    assert counts(empty, "addr:promo@bulk-sender.example") == [0, 1]


def test_distinct_users_are_bounded_per_key(empty: Classifier) -> None:
    for n in range(cmod.MAX_VOTERS + 20):
        empty.learn(mail(n), False, user=f"user{n}")
    assert counts(empty, "addr:promo@bulk-sender.example") == [0, cmod.MAX_VOTERS]
    assert len(empty.reputation.voters["addr:promo@bulk-sender.example"]) == cmod.MAX_VOTERS


def test_replies_vouch_for_the_correspondent(empty: Classifier) -> None:
    empty.learn_reply("alice@keepmail.test", "Partner <orders@supplier.example>")
    empty.learn_reply("alice@keepmail.test", "orders@supplier.example")   # again: capped
    empty.learn_reply("bob@keepmail.test", "ORDERS@supplier.example")
    assert counts(empty, "addr:orders@supplier.example") == [0, 2]
    assert counts(empty, "dom:supplier.example") == [0, 2]
    assert rep(empty, mail(1, "orders@supplier.example"), "addr").startswith("rep:addr:r0")


def test_user_votes_survive_save_and_load(empty: Classifier) -> None:
    for n in range(10):
        empty.learn(mail(n), False, user="mallory", client_ip=IP)
    again = Classifier(load(dump(empty.state())))
    assert again.reputation.voters == empty.reputation.voters
    for n in range(10):
        again.learn(mail(n), False, user="mallory", client_ip=IP)
    assert counts(again, "addr:promo@bulk-sender.example") == [0, 1]


def test_user_reputation_reaches_the_score(empty: Classifier) -> None:
    """Once the model has learned what bad reputation means, users' junk moves on a
    new sender raise that sender's next score for everybody."""
    for n in range(30):
        empty.learn(mail(n, f"x{n} <x{n}@bad{n}.example>"), True)        # org: spam, then ...
        empty.learn(mail(n, f"x{n} <x{n}@bad{n}.example>"), True)        # ... known spammers
        empty.learn(mail(n, f"y{n} <y{n}@good{n}.example>"), False)
        empty.learn(mail(n, f"y{n} <y{n}@good{n}.example>"), False)
    fresh = mail(1000, "New <new@fresh-sender.example>")
    before = empty.score(fresh, user="zed").logit
    for user in ("alice", "bob", "carol"):
        empty.learn(fresh, True, user=user)
    assert rep(empty, fresh, "addr").startswith("rep:addr:r4")
    assert empty.score(fresh, user="zed").logit > before


def test_learner_notes_replies(empty: Classifier, tmp_path) -> None:
    from keepmail.spam.learning import Learner

    learner = Learner(None, empty, tmp_path / "model.bin")   # type: ignore[arg-type]
    learner.note_reply("alice@keepmail.test", ["orders@supplier.example", "x@other.example"])
    assert counts(empty, "addr:orders@supplier.example") == [0, 1]
    learner.save()
    assert Classifier.open(tmp_path / "model.bin").reputation.counts["dom:other.example"] == [0, 1]
