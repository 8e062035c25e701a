"""Shared message builders for the spam classifier tests."""

from __future__ import annotations

import pytest

from keepmail.spam.classifier import Classifier


def make_mail(subject: str, body: str, *, sender: str = "Someone <someone@example.org>",
              html: bool = False, extra: str = "") -> bytes:
    ctype = "text/html" if html else "text/plain"
    return (f"From: {sender}\r\nTo: user@keepmail.test\r\nSubject: {subject}\r\n"
            f"Date: Mon, 2 Sep 2002 10:00:00 +0000\r\nMessage-ID: <x1@example.org>\r\n"
            f"MIME-Version: 1.0\r\nContent-Type: {ctype}; charset=utf-8\r\n{extra}\r\n"
            f"{body}\r\n").encode()


SPAMMY = [
    ("Cheap meds online, 80% off!!!", "Buy cheap viagra and cialis now. No prescription needed. "
     "Click http://pills-cheap.example.biz/order to claim your discount today. Limited offer!"),
    ("Lose weight fast - guaranteed", "Amazing diet pills, lose 30 pounds in 30 days guaranteed. "
     "Order now at http://pills-cheap.example.biz/diet and save 80%. Limited offer!"),
    ("You have WON $1,000,000", "Congratulations winner! Claim your cash prize now, click "
     "http://pills-cheap.example.biz/prize. Limited offer, act now, no risk!"),
    ("Refinance your mortgage now", "Lowest rates guaranteed, no credit check. Click "
     "http://pills-cheap.example.biz/rates and save thousands. Limited offer!"),
]
HAMMY = [
    ("Re: meeting notes for Tuesday", "Hi Anna, attached are the notes from the design review. "
     "Let's go over the open questions about the IMAP server on Tuesday. Thanks, Bob"),
    ("build failure on the CI runner", "The test suite fails on the arm64 runner since "
     "yesterday's commit; the timeout in the SMTP tests looks too tight. Bob"),
    ("Re: lunch on Friday?", "Sounds good, see you at noon at the usual place. Anna"),
    ("patch for the queue retry logic", "Here is a patch that makes the retry backoff "
     "exponential and caps it at four hours. Review welcome. Bob"),
]


@pytest.fixture
def empty() -> Classifier:
    return Classifier.empty()


@pytest.fixture
def trained() -> Classifier:
    clf = Classifier.empty()
    for _ in range(3):
        for subject, body in SPAMMY:
            clf.learn(make_mail(subject, body, sender="Deals <deals@offers.example.biz>"), True)
        for subject, body in HAMMY:
            clf.learn(make_mail(subject, body, sender="Bob <bob@colleagues.example.org>"), False)
    return clf
