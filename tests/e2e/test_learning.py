"""Users teach the filter: a move into Junk over IMAP changes the next verdict."""

from __future__ import annotations

import imaplib
import re
import smtplib
import ssl
from pathlib import Path

from keepmail.spam.learning import Learner
from tests.smtp.conftest import make_server
from tests.support.server import PASSWORD, mailbox_messages

TEMPLATE = ("From: deals@offers.test\r\nSubject: Quarterly supplier catalogue {n}\r\n"
            "Message-ID: <cat{n}@offers.test>\r\n\r\nDear partner, our new catalogue of "
            "industrial fasteners and widgets is attached. Order form number {n}.\r\n")


def probability(raw: bytes) -> float:
    match = re.search(rb"content=[-+0-9.]+ \[p=([0-9.]+)", raw)
    assert match, raw[:400]
    return float(match.group(1))


def test_junk_moves_teach_the_classifier(tmp_path: Path) -> None:
    srv = make_server(tmp_path)
    try:
        def send(n: int) -> None:
            with smtplib.SMTP(srv.host, srv.port("smtp"), local_hostname="mx.offers.test") as c:
                c.sendmail("deals@offers.test", ["bob@example.test"],
                           TEMPLATE.format(n=n).encode())

        def folder_of(n: int) -> tuple[str, bytes]:
            for box in ("INBOX", "Junk"):
                for m in mailbox_messages(srv.store, "bob@example.test", box):
                    if f"<cat{n}@offers.test>".encode() in m:
                        return box, m
            raise AssertionError(f"message {n} not delivered")

        for n in range(6):
            send(n)
        box, first = folder_of(0)
        before = probability(first)
        # The user disagrees with wherever the filter put this kind of mail.
        target = "INBOX" if box == "Junk" else "Junk"
        imap = imaplib.IMAP4_SSL(srv.host, srv.port("imaps"),
                                 ssl_context=ssl._create_unverified_context())
        imap.login("bob@example.test", PASSWORD)
        for source in ("INBOX", "Junk"):
            if source != target:
                imap.select(source)
                assert imap.uid("MOVE", "1:*", target)[0] == "OK"
        imap.logout()
        learner = next(s for name, _p, s in srv.app.services if name == "spam-learner")
        assert isinstance(learner, Learner)
        assert srv.call(learner.run_once()) == 6
        # Bob's moves also taught the sender's reputation, but only as much as one
        # user may: three spam votes or one ham vote, however many messages he moved.
        spam, ham = learner.classifier.reputation.counts["addr:deals@offers.test"]
        assert (spam, ham) == ((3, 0) if target == "Junk" else (0, 1))
        assert learner.classifier.reputation.counts["dom:offers.test"] == [spam, ham]
        send(6)
        after = probability(folder_of(6)[1])
        if target == "Junk":
            assert after > before + 0.2, (before, after)
        else:
            assert after < before - 0.2, (before, after)
        learner.save()
        assert (srv.config.data_dir / "spam" / "model.bin").exists()
    finally:
        srv.stop()


def test_admin_training_reaches_the_running_server(tmp_path: Path) -> None:
    import subprocess
    import sys

    srv = make_server(tmp_path)
    try:
        spam_dir = tmp_path / "spam"
        spam_dir.mkdir()
        for n in range(5):
            (spam_dir / f"{n}.eml").write_bytes(TEMPLATE.format(n=100 + n).encode())
        done = subprocess.run([sys.executable, "-m", "keepmail.cli", "spam", "train", "--spam",
                               "--config", str(srv.config.path), str(spam_dir)],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert "queued 5 message(s) as spam" in done.stdout
        learner = next(s for name, _p, s in srv.app.services if name == "spam-learner")
        before = srv.app.classifier.score(TEMPLATE.format(n=999).encode()).probability
        assert srv.call(learner.run_once()) == 5
        after = srv.app.classifier.score(TEMPLATE.format(n=999).encode()).probability
        assert after > before + 0.1, (before, after)
        left = srv.store.read_now(lambda c: c.execute(
            "SELECT COUNT(*) FROM training_events WHERE consumed = 0").fetchone()[0])
        assert left == 0
    finally:
        srv.stop()


def test_writing_to_someone_vouches_for_their_reputation(tmp_path: Path) -> None:
    """Mail a user submits to an outside address is a (bounded) ham vote for it."""
    srv = make_server(tmp_path, outbound={"mta_sts": False, "dane": False})
    try:
        learner = next(s for name, _p, s in srv.app.services if name == "spam-learner")
        assert isinstance(learner, Learner)
        counts = learner.classifier.reputation.counts
        assert "addr:orders@supplier.test" not in counts
        with smtplib.SMTP(srv.host, srv.port("submission")) as c:
            c.starttls(context=ssl._create_unverified_context())
            c.login("bob@example.test", PASSWORD)
            for n in range(3):   # writing again does not add more than one user's vote
                c.sendmail("bob@example.test", ["orders@supplier.test", "alice@example.test"],
                           f"From: bob@example.test\r\nSubject: order {n}\r\n\r\nHi\r\n".encode())
        assert counts["addr:orders@supplier.test"] == [0, 1]
        assert counts["dom:supplier.test"] == [0, 1]
        # Local recipients are not outside correspondents: no reputation entry.
        assert "addr:alice@example.test" not in counts
    finally:
        srv.stop()
