"""End to end in headless Chromium (Selenium + chromedriver): what an admin does.

Screenshots of each main page go to test-artifacts/screenshots/. Needs the
Debian packages chromium and chromium-driver and the PyPI package selenium;
skipped with a reason when they are missing.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from keepmail.store import quarantine as qstore
from tests.support.server import PASSWORD
from tests.web.conftest import ADMIN, Console

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
SHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"

if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
    pytest.skip("headless Chromium missing: apt-get install chromium chromium-driver",
                allow_module_level=True)
webdriver = pytest.importorskip("selenium.webdriver", reason="pip install selenium")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as ec  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    profile = tmp_path_factory.mktemp("chromium-profile")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
                 "--window-size=1280,900",
                 # The test server's certificate is self-signed.
                 "--ignore-certificate-errors"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=CHROMEDRIVER),
                              options=options)
    driver.set_page_load_timeout(30)
    SHOTS.mkdir(parents=True, exist_ok=True)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def shot(driver: object, name: str) -> None:
    # Full page: grow the window to the document's height first.
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, max(900, min(int(height) + 40, 6000)))
    driver.save_screenshot(str(SHOTS / f"{name}.png"))
    driver.set_window_size(1280, 900)


def wait_text(driver: object, text: str, timeout: float = 30) -> None:
    WebDriverWait(driver, timeout).until(ec.text_to_be_present_in_element(
        (By.TAG_NAME, "body"), text))


def test_login_with_second_factor(browser: object, console: Console) -> None:
    browser.get(console.base_url + "/login")
    shot(browser, "login")
    browser.find_element(By.ID, "address").send_keys(ADMIN)
    browser.find_element(By.ID, "password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    wait_text(browser, "Two-factor code")
    browser.find_element(By.ID, "code").send_keys(console.next_totp())
    browser.find_element(By.CSS_SELECTOR, "main form button[type=submit]").click()
    wait_text(browser, "Dashboard")
    assert browser.find_element(By.CSS_SELECTOR, "figure.chart svg")
    shot(browser, "dashboard")


def test_find_a_delivered_message_and_open_its_timeline(browser: object,
                                                        console: Console) -> None:
    console.send("friend@elsewhere.test", "bob@example.test", "Browser trace check")
    deadline = time.monotonic() + 10
    while True:
        browser.get(console.base_url + "/trace")
        field = browser.find_element(By.NAME, "subject")
        field.send_keys("Browser trace")
        field.submit()
        links = browser.find_elements(By.CSS_SELECTOR, "table.results tbody a")
        if links or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    shot(browser, "trace_search")
    links[0].click()
    wait_text(browser, "Timeline")
    body = browser.find_element(By.TAG_NAME, "body").text
    assert "Browser trace check" in body
    assert "Connect" in body and "Verdict" in body and "Delivered" in body
    assert "INBOX" in body
    shot(browser, "trace_timeline")


def test_add_a_user(browser: object, console: Console) -> None:
    browser.get(console.base_url + "/admin/users")
    form = browser.find_element(By.CSS_SELECTOR, "form[action='/admin/users']")
    form.find_element(By.NAME, "address").send_keys("newbie@example.test")
    form.find_element(By.NAME, "display_name").send_keys("New Person")
    form.find_element(By.NAME, "password").send_keys("a long enough password")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait_text(browser, "Account newbie@example.test created")
    assert console.account("newbie@example.test") is not None
    shot(browser, "users")


def test_dns_assistant_flags_the_wrong_spf_record(browser: object, console: Console) -> None:
    browser.get(console.base_url + "/admin/dns")
    browser.find_element(By.LINK_TEXT, "example.test").click()
    wait_text(browser, "DNS for example.test")
    spf = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "li.finding.error")
           if "SPF" in e.text]
    assert spf and "does not include this server's IP 127.0.0.1" in spf[0]
    assert "ip4:127.0.0.1" in spf[0]
    shot(browser, "dns_assistant")


def test_release_a_quarantined_message(browser: object, console: Console) -> None:
    alice = console.account(ADMIN)
    raw = b"From: promo@evil.test\r\nTo: alice@example.test\r\nSubject: Maybe not spam\r\n\r\nx\r\n"
    entry = console.server.call(console.server.store.store_blob(
        raw, 1, lambda c, blob: qstore.add(c, blob, len(raw), account_ids=[alice.id],
                                           sender="promo@evil.test", subject="Maybe not spam",
                                           verdict="quarantine score=11.0")))
    browser.get(console.base_url + "/admin/quarantine")
    wait_text(browser, "Maybe not spam")
    shot(browser, "quarantine")
    browser.find_element(By.CSS_SELECTOR, f"form[action$='/{entry}/release'] button").click()
    wait_text(browser, f"Message {entry} released to the Inbox")
    store = console.server.store
    assert store.read_now(lambda c: qstore.get(c, entry)).released is not None


@pytest.mark.parametrize("path,name", [
    ("/admin/queue", "queue"), ("/admin/health", "health"), ("/admin/dkim", "dkim"),
    ("/admin/domains", "domains"), ("/admin/aliases", "aliases"), ("/admin/held", "held"),
    ("/trace?kind=web", "audit_log"), ("/me", "me"), ("/me/senders", "senders"),
    ("/me/app-passwords", "app_passwords"), ("/account/totp", "totp")])
def test_other_pages_render(browser: object, console: Console, path: str, name: str) -> None:
    browser.get(console.base_url + path)
    assert browser.find_element(By.TAG_NAME, "h1").text
    shot(browser, name)
