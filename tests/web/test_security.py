"""Security of the console: escaping, CSRF on every form, isolation between users,
login throttling, second factor, cookies and headers."""

from __future__ import annotations

import re
import time

import httpx
from starlette.routing import Mount, Route

from keepmail.store import quarantine as qstore
from keepmail.web.throttle import LoginThrottle
from tests.support.server import PASSWORD, mailbox_messages
from tests.web.conftest import ADMIN, Console, csrf_of

EVIL = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def post_routes(console: Console) -> list[str]:
    """Every path accepting POST, with sample values for path parameters."""
    paths = []
    for route in console.server.app.web_asgi.routes:
        if isinstance(route, Route) and not isinstance(route, Mount) and \
                "POST" in (route.methods or ()):
            paths.append(route.path.replace("{address}", "bob@example.test")
                         .replace("{entry_id}", "1"))
    return paths


def test_every_form_needs_the_session_csrf_token(console: Console, admin: httpx.Client
                                                 ) -> None:
    paths = [p for p in post_routes(console) if "autodiscover" not in p.lower()]
    assert len(paths) >= 20
    for path in paths:
        missing = admin.post(path, data={"action": "delete", "address": "bob@example.test"})
        wrong = admin.post(path, data={"csrf_token": "x" * 43, "action": "delete"})
        assert missing.status_code == 403, path
        assert wrong.status_code == 403, path
    # Anonymous requests, and a token from another session, are refused too.
    anonymous = console.client()
    other = csrf_of(anonymous.get("/login").text)
    for path in paths:
        assert admin.post(path, data={"csrf_token": other}).status_code == 403, path
    assert anonymous.post("/login", data={"address": ADMIN, "password": PASSWORD}
                          ).status_code == 403
    # Cross-site Origin is refused even with the right token.
    token = csrf_of(admin.get("/admin/users").text)
    r = admin.post("/admin/domains", data={"csrf_token": token, "name": "evil.test"},
                   headers={"Origin": "https://evil.test"})
    assert r.status_code == 403
    # The account the forms targeted is intact.
    assert console.account("bob@example.test") is not None


def test_html_in_subject_and_addresses_is_escaped_everywhere(console: Console,
                                                             admin: httpx.Client) -> None:
    message_id = f"<{EVIL}@evil.test>"
    console.send("mallory@evil.test", "bob@example.test", EVIL, message_id=message_id)
    trace = console.wait_trace(admin, rcpt="bob@example.test", subject="alert")
    bob = console.login("bob@example.test")
    entry = _quarantine(console, "carol@example.test", EVIL, sender="x@evil.test")
    carol = console.login("carol@example.test")
    pages = [admin.get("/trace", params={"q": "alert"}), admin.get(f"/trace/{trace}"),
             bob.get("/trace"), bob.get(f"/trace/{trace}"),
             admin.get("/admin/quarantine"), admin.get(f"/admin/quarantine/{entry}"),
             carol.get("/me/quarantine"), carol.get(f"/me/quarantine/{entry}"),
             admin.get("/trace", params={"sender": EVIL})]
    for page in pages:
        assert page.status_code == 200, page.url
        assert "<script>alert" not in page.text and "<img src=x" not in page.text, page.url
    assert "&lt;script&gt;alert" in pages[1].text
    # An HTML-ish address in a sender list or an alias form is escaped too.
    token = csrf_of(bob.get("/me/senders").text)
    bob.post("/me/senders", data={"csrf_token": token, "action": "block",
                                  "pattern": "<b>x</b>@evil.test"})
    assert "<b>x</b>" not in bob.get("/me/senders").text


def _quarantine(console: Console, rcpt: str, subject: str, sender: str) -> int:
    account = console.account(rcpt)
    raw = (f"From: {sender}\r\nTo: {rcpt}\r\nSubject: {subject}\r\n\r\nbuy now\r\n").encode()
    return console.server.call(console.server.store.store_blob(
        raw, 1, lambda c, blob: qstore.add(c, blob, len(raw), account_ids=[account.id],
                                           sender=sender, subject=subject,
                                           verdict="quarantine score=12")))


def test_users_see_only_their_own_traces(console: Console, admin: httpx.Client) -> None:
    console.send("someone@elsewhere.test", "carol@example.test", "for carol only")
    carol_trace = console.wait_trace(admin, rcpt="carol@example.test", subject="carol")
    dave = console.login("dave@example.test")
    assert dave.get(f"/trace/{carol_trace}").status_code == 404
    assert carol_trace not in dave.get("/trace", params={"rcpt": "carol"}).text
    assert "for carol only" not in dave.get("/trace", params={"q": "carol"}).text
    # Admin pages are closed to users, whatever the method.
    for path in ("/admin", "/admin/users", "/admin/quarantine", "/admin/dns/example.test"):
        assert dave.get(path).status_code == 403, path
    carol = console.login("carol@example.test")
    assert carol.get(f"/trace/{carol_trace}").status_code == 200


def test_bcc_recipients_stay_hidden_from_other_recipients(console: Console,
                                                          admin: httpx.Client) -> None:
    import smtplib
    with smtplib.SMTP(*console.mx) as smtp:
        smtp.sendmail("news@elsewhere.test", ["dave@example.test", "uma@example.test"],
                      b"Subject: two of you\r\n\r\nhi\r\n")
    trace = console.wait_trace(admin, rcpt="uma@example.test", subject="two")
    dave = console.login("dave@example.test")
    page = dave.get(f"/trace/{trace}").text
    assert "dave@example.test" in page and "uma@example.test" not in page


def test_users_cannot_touch_other_users_quarantine(console: Console) -> None:
    entry = _quarantine(console, "carol@example.test", "carol's spam", "spam@evil.test")
    dave = console.login("dave@example.test")
    assert dave.get(f"/me/quarantine/{entry}").status_code == 404
    token = csrf_of(dave.get("/me/quarantine").text)
    assert f"/me/quarantine/{entry}" not in dave.get("/me/quarantine").text
    r = dave.post(f"/me/quarantine/{entry}/release", data={"csrf_token": token})
    assert r.status_code == 404
    assert dave.post(f"/admin/quarantine/{entry}/delete",
                     data={"csrf_token": token}).status_code == 403
    store = console.server.store
    assert store.read_now(lambda c: qstore.get(c, entry)).released is None
    carol = console.login("carol@example.test")
    token = csrf_of(carol.get("/me/quarantine").text)
    r = carol.post(f"/me/quarantine/{entry}/release", data={"csrf_token": token})
    assert r.status_code == 303
    assert store.read_now(lambda c: qstore.get(c, entry)).released is not None
    assert any(b"carol's spam" in m for m in mailbox_messages(store, "carol@example.test"))


def test_login_is_throttled_per_account_and_per_ip(console: Console) -> None:
    client = console.client(source="127.0.0.77")
    token = csrf_of(client.get("/login").text)
    codes = []
    for _ in range(6):
        r = client.post("/login", data={"address": "tess@example.test", "password": "nope",
                                         "csrf_token": token})
        codes.append(r.status_code)
    assert codes[:3] == [401, 401, 401] and 429 in codes
    r = client.post("/login", data={"address": "tess@example.test", "password": PASSWORD,
                                    "csrf_token": token})
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    assert "Too many failed attempts" in r.text
    # The refusals are in the audit log.
    admin_client = console.login(ADMIN)
    deadline = time.monotonic() + 5
    while "throttled" not in admin_client.get("/trace", params={"kind": "web"}).text:
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_throttle_delays_grow_and_fade() -> None:
    now = [1000.0]
    t = LoginThrottle(free_per_account=2, free_per_ip=100, base_delay=1, max_delay=8,
                      forget_after=60, clock=lambda: now[0])

    async def wait() -> float | None:
        return await t.before_attempt("198.51.100.1", "u@x.test")

    import asyncio
    waits = []
    for _ in range(6):
        t.failure("198.51.100.1", "U@x.test")
        waits.append(asyncio.run(wait()))
    assert waits == [None, None, 1, 2, 4, 8]
    now[0] += 61 + 8
    assert asyncio.run(wait()) is None
    t.failure("198.51.100.1", "u@x.test")
    assert asyncio.run(wait()) is None     # forgotten: the count restarted
    t.success("198.51.100.1", "u@x.test")
    assert t.blocked() == []


def test_admin_pages_need_the_second_factor(console: Console) -> None:
    client = console.client()
    token = csrf_of(client.get("/login").text)
    r = client.post("/login", data={"address": ADMIN, "password": PASSWORD,
                                    "csrf_token": token})
    assert r.headers["location"].startswith("/login/totp")
    assert client.get("/admin").status_code == 303      # not logged in yet
    token = csrf_of(client.get("/login/totp").text)
    r = client.post("/login/totp", data={"code": "000000", "csrf_token": token})
    assert r.status_code == 401
    code = console.next_totp()
    r = client.post("/login/totp", data={"code": code, "csrf_token": token})
    assert r.status_code == 303
    assert client.get("/admin").status_code == 200
    # The same code cannot be used twice.
    replay = console.client()
    token = csrf_of(replay.get("/login").text)
    replay.post("/login", data={"address": ADMIN, "password": PASSWORD, "csrf_token": token})
    token = csrf_of(replay.get("/login/totp").text)
    assert replay.post("/login/totp", data={"code": code, "csrf_token": token}
                       ).status_code == 401


def test_admin_without_totp_is_sent_to_enroll(console: Console) -> None:
    store = console.server.store
    from keepmail.store import accounts
    store.write_sync(lambda c: accounts.set_admin(c, "uma@example.test", True))
    try:
        uma = console.login("uma@example.test")
        r = uma.get("/admin")
        assert r.status_code == 303 and r.headers["location"] == "/account/totp"
        token = csrf_of(uma.get("/account/totp").text)
        uma.post("/account/totp/begin", data={"csrf_token": token})
        page = uma.get("/account/totp").text
        secret = re.search(r'id="totp-secret">([A-Z2-7]+)<', page).group(1)
        import pyotp
        console.web.totp.clock = time.time
        r = uma.post("/account/totp/confirm", data={"csrf_token": token,
                                                    "code": pyotp.TOTP(secret).now()})
        assert r.status_code == 303
        assert uma.get("/admin").status_code == 200
    finally:
        uma_id = console.account("uma@example.test").id
        console.server.call(console.web.totp.disable(uma_id))
        store.write_sync(lambda c: accounts.set_admin(c, "uma@example.test", False))


def test_cookie_flags_and_security_headers(console: Console) -> None:
    client = console.client()
    r = client.get("/login")
    cookie = r.headers["set-cookie"]
    assert cookie.startswith("__Host-keepmail=")
    for flag in ("Secure", "HttpOnly", "SameSite=Strict", "Path=/"):
        assert flag in cookie
    assert "script-src" not in r.headers["content-security-policy"]
    assert "default-src 'none'" in r.headers["content-security-policy"]
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["cache-control"] == "no-store"
    # Logging in gives a new session id (no fixation) and logging out ends it.
    bob = console.login("bob@example.test")
    old = client.cookies.get("__Host-keepmail")
    assert old not in (bob.cookies.get("__Host-keepmail"), None)
    token = csrf_of(bob.get("/me").text)
    stolen = dict(bob.cookies)
    bob.post("/logout", data={"csrf_token": token})
    thief = console.client()
    thief.cookies.update(stolen)
    assert thief.get("/me").status_code == 303


def test_open_redirect_is_refused(console: Console) -> None:
    client = console.client()
    token = csrf_of(client.get("/login").text)
    r = client.post("/login", data={"address": "bob@example.test", "password": PASSWORD,
                                    "csrf_token": token, "next": "//evil.test/x"})
    assert r.headers["location"] == "/"


def test_password_change_and_app_passwords(console: Console) -> None:
    uma = console.login("uma@example.test")
    token = csrf_of(uma.get("/me/app-passwords").text)
    page = uma.post("/me/app-passwords", data={"csrf_token": token, "label": "phone"}).text
    app_password = re.search(r'id="new-app-password">([a-z-]+)<', page).group(1)
    # An app password opens mail, not the console.
    client = console.client()
    token2 = csrf_of(client.get("/login").text)
    r = client.post("/login", data={"address": "uma@example.test", "password": app_password,
                                    "csrf_token": token2})
    assert r.status_code == 401
    new = "a brand new passphrase"
    r = uma.post("/me/password", data={"csrf_token": token, "current": PASSWORD, "new": new,
                                       "confirm": new})
    assert r.status_code == 303 and r.headers["location"] == "/me"
    console.login("uma@example.test", new)
    r = uma.post("/me/password", data={"csrf_token": token, "current": new,
                                       "new": PASSWORD, "confirm": PASSWORD})
    assert r.status_code == 303


def test_admin_manages_users_domains_aliases(console: Console, admin: httpx.Client) -> None:
    token = csrf_of(admin.get("/admin/users").text)
    r = admin.post("/admin/users", data={"csrf_token": token, "address": "zed@example.test",
                                         "password": "zed's long password"})
    assert r.status_code == 303
    assert "zed@example.test" in admin.get("/admin/users").text
    zed = console.login("zed@example.test", "zed's long password")
    admin.post("/admin/users/zed@example.test", data={"csrf_token": token, "action": "disable"})
    assert zed.get("/me").status_code == 303                 # session ended at once
    r = admin.post("/admin/aliases", data={"csrf_token": token, "address": "team@example.test",
                                           "targets": "bob@example.test, carol@example.test"})
    assert "team@example.test" in admin.get("/admin/aliases").text
    admin.post("/admin/users/zed@example.test", data={"csrf_token": token, "action": "delete",
                                                      "confirm": "zed@example.test"})
    assert console.account("zed@example.test") is None
    r = admin.post(f"/admin/users/{ADMIN}", data={"csrf_token": token, "action": "disable"})
    assert console.account(ADMIN).disabled is False
