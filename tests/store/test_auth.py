"""Password checks: argon2id, app passwords, disabled accounts, unknown users."""

from __future__ import annotations

import asyncio
from pathlib import Path

from keepmail.store import Store, accounts
from keepmail.store.auth import Authenticator
from tests.support.server import PASSWORD, password_hash


def test_authenticate(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    def setup(c: object) -> None:
        accounts.add_domain(c, "example.test")  # type: ignore[arg-type]
        accounts.add_account(c, "bob@example.test", password_hash())  # type: ignore[arg-type]
        accounts.add_app_password(c, "bob@example.test", "phone",  # type: ignore[arg-type]
                                  password_hash("app-secret-1"))
    store.write_sync(setup)
    auth = Authenticator(store)

    async def check() -> None:
        assert password_hash().startswith("$argon2id$")
        assert (await auth.authenticate("BOB@example.test", PASSWORD)) is not None
        assert (await auth.authenticate("bob@example.test", PASSWORD)) is not None  # cached
        assert (await auth.authenticate("bob@example.test", "app-secret-1")) is not None
        assert (await auth.authenticate("bob@example.test", "wrong")) is None
        assert (await auth.authenticate("nobody@example.test", PASSWORD)) is None
        store.write_sync(lambda c: accounts.set_disabled(c, "bob@example.test", True))
        assert (await auth.authenticate("bob@example.test", PASSWORD)) is None

    asyncio.run(check())
    store.close()
