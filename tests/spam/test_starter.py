"""The shipped starter model: loads, small, and knows obvious spam from obvious ham."""

from __future__ import annotations

import pytest

from keepmail.spam import persist
from keepmail.spam.classifier import Classifier

pytestmark = pytest.mark.skipif(not persist.STARTER_PATH.exists(),
                                reason="starter model not built (scripts/build_starter_model.py)")

OBVIOUS_SPAM = b"""From: "Best Deals" <deals4u@cheap-offers.biz>
To: undisclosed-recipients:;
Subject: MAKE MONEY FAST!!! Guaranteed $$$ from home
MIME-Version: 1.0
Content-Type: text/html; charset="iso-8859-1"

<html><body><font size=5 color=red><b>EARN $5000 A WEEK FROM HOME!!!</b></font><br>
This is NOT a scam. 100% GUARANTEED. No experience needed. Click below to get started
and make money fast. <a href="http://213.45.67.89/signup">CLICK HERE NOW</a><br>
To be removed from our mailing list, reply with REMOVE in the subject.
Act now, this limited time offer expires soon! Order today, free bonus, no risk!
</body></html>
"""

OBVIOUS_HAM = b"""From: Bob Smith <bob@example.org>
To: dev-list@example.org
Subject: Re: patch for the build scripts
Message-ID: <20020902.1234@example.org>
User-Agent: Mutt/1.4i
Content-Type: text/plain; charset=us-ascii

On Mon, Sep 02, 2002 at 10:00:00AM +0100, Anna wrote:
> The build fails on Debian when the locale is not set.

Thanks, I applied your patch to CVS and the build works now on my machine.
I also fixed the Makefile so the tests run with the right Python version.
Can you check whether the docs still build? I think we should release on Friday.

Cheers,
Bob
"""


def test_starter_is_small() -> None:
    assert persist.STARTER_PATH.stat().st_size < 5_000_000


def test_starter_scores_obvious_mail() -> None:
    clf = Classifier.starter()
    assert clf.source == "starter"
    spam = clf.score(OBVIOUS_SPAM)
    ham = clf.score(OBVIOUS_HAM)
    assert spam.probability > 0.9, spam
    assert ham.probability < 0.1, ham
