"""`keepmail spam ...` commands: run the TREC protocol, train, score one message.

The group is wired into the main CLI by cli.py; it also runs on its own:
``python -m keepmail.spam.commands trec CORPUS``.
"""

from __future__ import annotations

import mailbox
import sys
from collections.abc import Iterator
from pathlib import Path

import click

from . import trec
from .classifier import Classifier


def iter_messages(path: Path) -> Iterator[bytes]:
    """Raw messages of a file, an mbox, a Maildir, or a folder of message files."""
    if path.is_dir():
        if (path / "cur").is_dir() and (path / "new").is_dir():
            maildir = mailbox.Maildir(path, factory=None, create=False)
            for key in maildir.iterkeys():
                yield maildir.get_bytes(key)
            return
        for child in sorted(path.rglob("*")):
            if child.is_file() and not child.name.startswith("."):
                yield child.read_bytes()
        return
    with path.open("rb") as fh:
        head = fh.read(5)
    if head == b"From ":
        box = mailbox.mbox(path, factory=None, create=False)
        for key in box.iterkeys():
            yield box.get_bytes(key)
        return
    yield path.read_bytes()


@click.group("spam")
def spam() -> None:
    """The learning spam classifier."""


@spam.command("trec")
@click.argument("corpus", type=click.Path(exists=True, path_type=Path))
@click.option("--seed", default=1, show_default=True, help="Seed of the fixed message order.")
@click.option("--model", type=click.Path(path_type=Path), default=None,
              help="Start from this model file instead of an empty model.")
@click.option("--limit", type=int, default=0, help="Only the first N messages of the order.")
def trec_cmd(corpus: Path, seed: int, model: Path | None, limit: int) -> None:
    """Run the TREC online protocol over CORPUS (folder or index) and print the metrics."""
    items = trec.seeded_order(trec.load_corpus(corpus), seed)
    if limit:
        items = items[:limit]
    clf = Classifier.open(model) if model else Classifier.empty()
    start = "model " + str(model) if model else "an EMPTY model (cold start)"
    click.echo(f"{len(items)} messages, seed {seed}, starting from {start}")
    result = trec.run_online(clf, items)
    click.echo(result.line())


@spam.command("train")
@click.option("--spam", "as_spam", is_flag=True, help="The messages are spam.")
@click.option("--ham", "as_ham", is_flag=True, help="The messages are ham (not spam).")
@click.option("--model", "model_path", type=click.Path(path_type=Path), default=None,
              help="Model file to update directly (created from the starter model if missing).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Teach the server of this keepmail.toml instead: the "
              "messages are queued in its store and its learner (running or next started) "
              "learns them org-wide.")
@click.option("--user", default=None, help="Train this user's adjustment, not the org model.")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
def train_cmd(as_spam: bool, as_ham: bool, model_path: Path | None, config_path: Path | None,
              user: str | None, paths: tuple[Path, ...]) -> None:
    """Learn PATHS (message files, mbox files or Maildirs) as spam or ham."""
    if as_spam == as_ham:
        raise click.UsageError("give exactly one of --spam or --ham")
    if (model_path is None) == (config_path is None):
        raise click.UsageError("give exactly one of --model FILE or --config FILE")
    if config_path is not None:
        n = _queue_for_server(config_path, paths, as_spam, user)
        click.echo(f"queued {n} message(s) as {'spam' if as_spam else 'ham'} for the "
                   "server's learner")
        return
    assert model_path is not None
    clf = Classifier.open(model_path)
    n = 0
    for path in paths:
        for raw in iter_messages(path):
            clf.learn(raw, as_spam, user=user)
            n += 1
    clf.save()
    click.echo(f"learned {n} message(s) as {'spam' if as_spam else 'ham'}; saved {model_path}")


def _queue_for_server(config_path: Path, paths: tuple[Path, ...], is_spam: bool,
                      user: str | None) -> int:
    """Store each message as a training event (account 0 = the organization)."""
    import asyncio

    from ..config import ConfigError, load
    from ..store import Store, accounts
    from ..store import mail as mailq

    try:
        cfg = load(config_path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    store = Store.open(cfg.data_dir, cfg.key_file)
    try:
        account_id = 0
        if user:
            account = store.read_now(lambda c: accounts.get_account(c, user))
            if account is None:
                raise click.ClickException(f"no account {user}")
            account_id = account.id

        async def queue_all() -> int:
            n = 0
            for path in paths:
                for raw in iter_messages(path):
                    await store.store_blob(raw, 0, lambda c, blob_id: mailq.record_training(
                        c, account_id, blob_id, is_spam, "admin"))
                    n += 1
            return n

        return asyncio.run(queue_all())
    finally:
        store.close()


@spam.command("score")
@click.argument("file", type=click.Path(exists=True, path_type=Path))
@click.option("--model", "model_path", type=click.Path(path_type=Path), default=None,
              help="Model file (default: the starter model).")
@click.option("--user", default=None, help="Add this user's adjustment.")
def score_cmd(file: Path, model_path: Path | None, user: str | None) -> None:
    """Print the spam probability of FILE and the features that decided it."""
    clf = Classifier.open(model_path) if model_path else Classifier.starter()
    result = clf.score(file.read_bytes(), user=user)
    click.echo(f"probability {result.probability:.4f}  (log-odds {result.logit:+.3f}, "
               f"model: {clf.source})")
    for name, contribution in result.reasons:
        click.echo(f"  {contribution:+.4f}  {name}")


def main() -> None:
    spam(prog_name=f"{Path(sys.executable).name} -m keepmail.spam.commands")


if __name__ == "__main__":
    main()
