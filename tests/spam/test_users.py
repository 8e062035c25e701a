"""Per-user adjustment: shifts only that user's verdicts, and only so far."""

from __future__ import annotations

from keepmail.spam import model
from keepmail.spam.classifier import Classifier

from .conftest import make_mail

SPAM = make_mail("Cheap meds online, 80% off!!!", "Buy cheap viagra and cialis now. "
                 "Click http://pills-cheap.example.biz/order. Limited offer!",
                 sender="Deals <deals@offers.example.biz>")


def test_one_users_ham_does_not_whitelist_spam_for_others(trained: Classifier) -> None:
    org_before = trained.score(SPAM).logit
    for _ in range(200):
        trained.learn(SPAM, False, user="mallory")
    assert trained.score(SPAM, user="alice").logit == org_before
    assert trained.score(SPAM).logit == org_before
    assert trained.score(SPAM, user="alice").probability > 0.8


def test_user_shift_is_bounded(trained: Classifier) -> None:
    org = trained.score(SPAM).logit
    for _ in range(200):
        trained.learn(SPAM, False, user="mallory")
    mine = trained.score(SPAM, user="mallory").logit
    assert org - model.USER_MARGIN_CAP - 1e-6 <= mine < org


def test_users_spam_report_trains_org(trained: Classifier) -> None:
    new = make_mail("quarterly newsletter", "our newsletter about gardening and tomatoes",
                    sender="News <news@garden.example.com>")
    before = trained.score(new).logit
    trained.learn(new, True, user="alice")
    assert trained.score(new, user="bob").logit > before
