"""The core schema: domains, accounts, aliases, mailboxes, messages.

UIDs and MODSEQs are allocated inside the same transaction that stores a
message (RFC 9051 section 2.3.1.1, RFC 7162 section 3.1), so what a client
sees can never run ahead of what is durable.
"""

from __future__ import annotations

from . import blobs, migrations

CORE = [
    """
    CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
    CREATE TABLE domains (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        created REAL NOT NULL
    );
    CREATE TABLE accounts (
        id INTEGER PRIMARY KEY,
        address TEXT NOT NULL UNIQUE,
        domain_id INTEGER NOT NULL REFERENCES domains(id),
        password_hash TEXT NOT NULL,
        display_name TEXT NOT NULL DEFAULT '',
        disabled INTEGER NOT NULL DEFAULT 0,
        is_admin INTEGER NOT NULL DEFAULT 0,
        quota_bytes INTEGER NOT NULL DEFAULT 0,
        created REAL NOT NULL
    );
    CREATE TABLE app_passwords (
        id INTEGER PRIMARY KEY,
        account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
        label TEXT NOT NULL,
        password_hash TEXT NOT NULL,
        created REAL NOT NULL,
        last_used REAL,
        UNIQUE(account_id, label)
    );
    CREATE TABLE aliases (
        id INTEGER PRIMARY KEY,
        address TEXT NOT NULL,
        target TEXT NOT NULL,
        created REAL NOT NULL,
        UNIQUE(address, target)
    );
    CREATE INDEX aliases_address ON aliases(address);
    CREATE TABLE mailboxes (
        id INTEGER PRIMARY KEY,
        account_id INTEGER NOT NULL REFERENCES accounts(id),
        name TEXT NOT NULL,
        role TEXT,
        uidvalidity INTEGER NOT NULL,
        uidnext INTEGER NOT NULL DEFAULT 1,
        highestmodseq INTEGER NOT NULL DEFAULT 1,
        subscribed INTEGER NOT NULL DEFAULT 1,
        created REAL NOT NULL,
        UNIQUE(account_id, name)
    );
    CREATE TABLE messages (
        id INTEGER PRIMARY KEY,
        mailbox_id INTEGER NOT NULL REFERENCES mailboxes(id),
        uid INTEGER NOT NULL,
        modseq INTEGER NOT NULL,
        flags TEXT NOT NULL DEFAULT '',
        internaldate REAL NOT NULL,
        size INTEGER NOT NULL,
        blob_id INTEGER NOT NULL REFERENCES blobs(id),
        trace_id TEXT NOT NULL DEFAULT '',
        message_id TEXT NOT NULL DEFAULT '',
        created REAL NOT NULL,
        UNIQUE(mailbox_id, uid)
    );
    CREATE INDEX messages_modseq ON messages(mailbox_id, modseq);
    CREATE INDEX messages_message_id ON messages(message_id);
    CREATE TABLE expunged (
        mailbox_id INTEGER NOT NULL,
        uid INTEGER NOT NULL,
        modseq INTEGER NOT NULL,
        PRIMARY KEY (mailbox_id, uid)
    ) WITHOUT ROWID;
    CREATE TABLE training_events (
        id INTEGER PRIMARY KEY,
        account_id INTEGER NOT NULL,
        blob_id INTEGER,
        message_id TEXT NOT NULL DEFAULT '',
        is_spam INTEGER NOT NULL,
        source TEXT NOT NULL,
        created REAL NOT NULL,
        consumed INTEGER NOT NULL DEFAULT 0
    )
    """,
    # 2: subscriptions are names, not a property of a mailbox row (RFC 9051 6.3.7, RFC 3501
    # 6.3.6): a name stays subscribed when its mailbox is deleted, and a name can be
    # subscribed before (or without) a mailbox existing. Existing installs keep what they
    # had: every mailbox row flagged subscribed becomes a subscription. mailboxes.subscribed
    # stays behind unused (SQLite cannot drop it without rebuilding the table).
    """
    CREATE TABLE subscriptions (
        account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        PRIMARY KEY (account_id, name)
    ) WITHOUT ROWID;
    INSERT OR IGNORE INTO subscriptions(account_id, name)
        SELECT account_id, name FROM mailboxes WHERE subscribed != 0
    """,
    # 3: deleting a blob checks the foreign keys that point at it; without these
    # indexes that is a scan of every message (19 ms per delete at 300k messages).
    """
    CREATE INDEX IF NOT EXISTS messages_blob ON messages(blob_id);
    CREATE INDEX IF NOT EXISTS accounts_domain ON accounts(domain_id)
    """,
    # 4: nothing looks messages up by Message-ID, and as Message-IDs are random each
    # delivery wrote a page of this index of its own.
    """
    DROP INDEX IF EXISTS messages_message_id
    """,
]

migrations.register("blobs", blobs.SCHEMA)
migrations.register("core", CORE)
