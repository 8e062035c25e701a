"""The `spam` click group: train and score through the command line."""

from __future__ import annotations

import mailbox
from pathlib import Path

from click.testing import CliRunner

from keepmail.spam.commands import spam

from .conftest import HAMMY, SPAMMY, make_mail


def test_train_mbox_and_file_then_score(tmp_path: Path) -> None:
    box = mailbox.mbox(tmp_path / "spam.mbox")
    for subject, body in SPAMMY:
        box.add(make_mail(subject, body))
    box.flush()
    maildir = mailbox.Maildir(tmp_path / "ham", create=True)
    for subject, body in HAMMY:
        maildir.add(make_mail(subject, body))
    probe = tmp_path / "probe.eml"
    probe.write_bytes(make_mail(*SPAMMY[0]))
    model = tmp_path / "data" / "spam.model"
    runner = CliRunner()
    out = runner.invoke(spam, ["train", "--spam", "--model", str(model), str(tmp_path / "spam.mbox")])
    assert out.exit_code == 0, out.output
    assert "learned 4 message(s) as spam" in out.output
    out = runner.invoke(spam, ["train", "--ham", "--model", str(model), str(tmp_path / "ham")])
    assert out.exit_code == 0 and "learned 4" in out.output, out.output
    out = runner.invoke(spam, ["score", "--model", str(model), str(probe)])
    assert out.exit_code == 0, out.output
    assert out.output.startswith("probability ")
    assert float(out.output.split()[1]) > 0.5


def test_train_needs_one_label(tmp_path: Path) -> None:
    f = tmp_path / "m.eml"
    f.write_bytes(b"Subject: x\n\ny")
    out = CliRunner().invoke(spam, ["train", "--model", str(tmp_path / "m"), str(f)])
    assert out.exit_code != 0
