"""The analytics page in a real headless Chromium: it asks for the tenant's token (and refuses a
wrong one), then shows a new bounce live within two seconds of its event being published, and
gives each campaign its bounce rate; the token never appears in an address it asks for."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from sendrail.analytics_tokens import issue
from sendrail.bus.codec import encode
from sendrail.events import BounceDetected, ChannelKind, DeliveryEvent, DeliveryStatus
from sendrail.registry.store import publish_record
from sendrail.sandbox.ports import free_port
from sendrail.service import ServiceState
from sendrail.services.analytics.main import run
from sendrail.settings import AnalyticsSettings, Settings
from sendrail.topics import BOUNCES, DELIVERY
from support.waiting import wait_until

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
"""Debian's chromium and chromium-driver: nothing is downloaded."""
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1440,900")
SCREENSHOT = Path(__file__).resolve().parents[2] / "reports" / "analytics-page.png"
LIVE_WITHIN_S = 2.0


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not Path(path).is_file()]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing: `make setup` installs Debian's chromium and chromium-driver")
    options = Options()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@contextlib.asynccontextmanager
async def analytics_service(settings: Settings) -> AsyncIterator[str]:
    own = dataclasses.replace(settings, analytics=AnalyticsSettings(port=free_port()))
    stop, state = asyncio.Event(), ServiceState("analytics")
    task = asyncio.create_task(run(own, stop, state), name="analytics")
    await wait_until(lambda: state.ready or task.done(), timeout_s=30, what="analytics ready")
    if task.done():
        task.result()
    try:
        yield f"http://127.0.0.1:{own.analytics.port}"
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


def sent(tenant: str, campaign: str, recipient: str) -> DeliveryEvent:
    return DeliveryEvent(status=DeliveryStatus.SENT, send_id=uuid.uuid4(), tenant_id=tenant, user_id="alice",
                         identity=f"alice@{tenant}.example.com", campaign_id=campaign, template_id="intro",
                         channel=ChannelKind.GMAIL, connection_id="alice-gmail", recipients=[recipient],
                         occurred_at=datetime.now(UTC) - timedelta(minutes=5))


def bounced(send: DeliveryEvent) -> BounceDetected:
    assert send.tenant_id is not None
    return BounceDetected(
        bounce_id=uuid.uuid4(), tenant_id=send.tenant_id, connection_id="alice-gmail", channel=ChannelKind.GMAIL,
        recipient=send.recipients[0], status="5.1.1", reply_code="550",
        diagnostic="550 5.1.1 The email account that you tried to reach does not exist.",
        reason="userunknown", hard=True, correlated=True, send_id=send.send_id, user_id=send.user_id,
        identity=send.identity, campaign_id=send.campaign_id, template_id=send.template_id,
        detected_at=datetime.now(UTC))


async def publish(producer: AIOKafkaProducer, *events: DeliveryEvent | BounceDetected) -> None:
    for event in events:
        if isinstance(event, DeliveryEvent):
            await producer.send_and_wait(DELIVERY.name, encode(event), key=str(event.send_id).encode())
        else:
            await producer.send_and_wait(BOUNCES.name, encode(event), key=event.tenant_id.encode())


# The page re-renders its tables and feed as events arrive: an element found a moment ago
# can be replaced before it is read, so a stale element means "look again".
RERENDERED = (StaleElementReferenceException,)


def text_is(driver: WebDriver, css: str, expected: str, timeout_s: float) -> None:
    WebDriverWait(driver, timeout_s, poll_frequency=0.05, ignored_exceptions=RERENDERED).until(
        lambda d: any(e.text == expected for e in d.find_elements(By.CSS_SELECTOR, css)),
        f"{css} never read {expected!r}")


def present(driver: WebDriver, css: str, timeout_s: float) -> str:
    return str(WebDriverWait(driver, timeout_s, poll_frequency=0.02, ignored_exceptions=RERENDERED).until(
        lambda d: [e.text for e in d.find_elements(By.CSS_SELECTOR, css)][:1], f"{css} never appeared")[0])


def log_in(driver: WebDriver, token: str) -> None:
    """Type the token into the page's form, as a person pastes it."""
    field = WebDriverWait(driver, 10, poll_frequency=0.05).until(
        lambda d: next((e for e in d.find_elements(By.ID, "token") if e.is_displayed()), None),
        "the page never asked for a token")
    field.send_keys(token, Keys.ENTER)


def refused_requests(driver: WebDriver, count: int) -> None:
    """Wait until the browser has logged `count` refused requests (each a console error), and
    take them out of its log: the rest of the test wants none."""
    seen: list[dict[str, str]] = []

    def logged(d: WebDriver) -> bool:
        seen.extend(e for e in d.get_log("browser") if e["level"] == "SEVERE")
        return len(seen) >= count
    WebDriverWait(driver, 10, poll_frequency=0.05).until(logged, f"{count} refused requests never logged")
    assert all("403" in entry["message"] for entry in seen), seen


def requested_urls(driver: WebDriver) -> list[str]:
    """Every address the browser asked for since the last call (Chrome's network log)."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


async def test_the_page_shows_a_new_bounce_live_and_each_campaigns_bounce_rate(
    tenant: str, settings: Settings, producer: AIOKafkaProducer, browser: webdriver.Chrome,
) -> None:
    spring = [sent(tenant, "spring", f"lead{i}@example.org") for i in range(4)]
    autumn = [sent(tenant, "autumn", f"prospect{i}@example.org") for i in range(2)]
    await publish(producer, *spring, *autumn, bounced(spring[0]))
    token = issue(tenant, datetime.now(UTC))
    other_tenants = issue(f"{tenant}-other", datetime.now(UTC))
    for record in (token.record, other_tenants.record):
        await publish_record(producer, record)

    async with analytics_service(settings) as base:
        await asyncio.to_thread(browser.get, f"{base}/?tenant={tenant}")
        # Another tenant's token is refused, and the page asks again.
        await asyncio.to_thread(log_in, browser, other_tenants.token)
        await asyncio.to_thread(text_is, browser, "#message", "this token reads another tenant's analytics", 10)
        await asyncio.to_thread(refused_requests, browser, 3)  # the summaries; no stream was opened
        await asyncio.to_thread(log_in, browser, token.token)
        await asyncio.to_thread(text_is, browser, 'tr[data-key="spring"] td.rate', "25.0%", 10)
        await asyncio.to_thread(text_is, browser, 'tr[data-key="autumn"] td.rate', "0.0%", 10)
        await asyncio.to_thread(text_is, browser, "#status", "live", 10)
        assert await asyncio.to_thread(
            lambda: len(browser.find_elements(By.CSS_SELECTOR, "#chart svg rect.bounced"))) == 1

        bounce = bounced(spring[1])
        published_at = time.monotonic()
        await publish(producer, bounce)
        remaining_s = LIVE_WITHIN_S - (time.monotonic() - published_at)
        # Marked `new`: it came over the event stream, not from a reload of the feed.
        entry = await asyncio.to_thread(present, browser, f'#feed li.new[data-id="{bounce.bounce_id}"]',
                                        remaining_s)
        print(f"\nbounce on the page {time.monotonic() - published_at:.2f} s after it was published")
        assert "lead1@example.org" in entry and "hard: userunknown" in entry and "campaign spring" in entry
        first = await asyncio.to_thread(lambda: WebDriverWait(
            browser, 5, poll_frequency=0.05, ignored_exceptions=RERENDERED).until(
            lambda d: d.find_element(By.CSS_SELECTOR, "#feed li").get_attribute("data-id")))
        assert first == str(bounce.bounce_id)  # newest first
        await asyncio.to_thread(text_is, browser, 'tr[data-key="spring"] td.rate', "50.0%", 10)
        await asyncio.to_thread(text_is, browser, '[data-total="bounce_rate"] .value', "33.3%", 10)

        SCREENSHOT.parent.mkdir(exist_ok=True)
        await asyncio.to_thread(browser.save_screenshot, str(SCREENSHOT))
        print(f"screenshot: {SCREENSHOT}")

        # The feed's filters come from the address too: only this kind, only this campaign. The
        # token is still in the tab's sessionStorage: the page does not ask again.
        await asyncio.to_thread(browser.get, f"{base}/?tenant={tenant}&kind=bounce&campaign=spring")
        await asyncio.to_thread(text_is, browser, "#status", "live", 10)
        assert not await asyncio.to_thread(lambda: browser.find_element(By.ID, "token-form").is_displayed())

        def feed_kinds() -> list[str | None]:
            return [li.get_attribute("data-kind") for li in browser.find_elements(By.CSS_SELECTOR, "#feed li")]

        await asyncio.to_thread(lambda: WebDriverWait(browser, 10, poll_frequency=0.05, ignored_exceptions=RERENDERED).until(
            lambda _: len(feed_kinds()) == 2, "the two bounces in the filtered feed"))
        assert feed_kinds() == ["bounce", "bounce"]
        errors = [entry for entry in await asyncio.to_thread(browser.get_log, "browser")
                  if entry["level"] == "SEVERE"]
        assert errors == []  # no script error, no refused resource
        urls = await asyncio.to_thread(requested_urls, browser)
        assert any("/api/tenants/" in url for url in urls) and any("/events" in url for url in urls)
        for secret in (token.token, other_tenants.token):
            assert all(secret not in url for url in [*urls, browser.current_url])
