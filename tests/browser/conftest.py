"""A headless Chromium for the page's tests, driven by selenium.

Rules (see the project's browser-test notes):

* The browser is Debian's ``chromium`` with its ``chromium-driver``; when either
  is missing the tests FAIL, naming the packages: CI installs them (``.ci/run``)
  and a page nobody tested must never pass as green.
* One browser for the session, owned by a *sync* fixture, so ``quit()`` runs in
  its teardown even when a trio test fails or is cancelled; each test gets it
  on a blank page and leaves it on a blank page (the page's WebSockets close).
* Every browser call runs in a worker thread (``trio.to_thread.run_sync``): a
  blocking call in a trio task would stop the very server the page talks to.
  Waits are selenium's ``WebDriverWait`` on the page's own ready signals (its
  ``data-*`` attributes), never sleeps.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
from pageflow import WAIT, Page
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.remote.webdriver import WebDriver

from gateway import Config, Fsync, Gateway, JournalSettings, WebSocketSettings, serve

StartGateway = Callable[..., Awaitable[Gateway]]

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
MISSING = ("the browser tests need Debian's Chromium and its driver: "
           "apt-get update && apt-get install -y chromium chromium-driver (missing: {})")


@pytest.fixture(scope="session")
def browser() -> Iterator[WebDriver]:
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if shutil.which(path) is None]
    if missing:
        pytest.fail(MISSING.format(", ".join(missing)), pytrace=False)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                 "--window-size=1400,860", "--disable-gpu", "--no-first-run"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # Both paths given: selenium would otherwise ask the network for a driver.
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(CHROMEDRIVER))
    try:
        driver.set_page_load_timeout(WAIT)
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def blank_browser(browser: WebDriver) -> Iterator[WebDriver]:
    """The browser on a blank page, left on a blank page (its WebSockets closed) after the test."""
    browser.get("about:blank")
    browser.get_log("browser")  # drained: a test reads only its own console
    try:
        yield browser
    finally:
        with contextlib.suppress(WebDriverException):
            browser.get("about:blank")


@pytest.fixture
async def start_gateway(tmp_path: Path) -> AsyncIterator[StartGateway]:
    """Start a gateway (as ``tests/conftest.py``'s) in this fixture's own nursery.

    Not in pytest-trio's ``nursery``, which is cancelled as soon as the test returns:
    these servers stop only after the ``page`` fixture closed the page, so they are never
    cancelled under a browser's open WebSockets (each would then wait out its close
    handshake, ``CLOSE_TIMEOUT`` in ``gateway/_closing.py``).
    """
    async with trio.open_nursery() as nursery:

        async def start(**overrides: Any) -> Gateway:
            config = Config(rest_port=0, ws_port=0, data_dir=tmp_path / "data",
                            journal=JournalSettings(fsync=Fsync.OFF))
            websocket = overrides.pop("websocket", None)
            if websocket is not None:
                overrides["websocket"] = attrs.evolve(WebSocketSettings(), **websocket)
            gateway: Gateway = await nursery.start(serve, attrs.evolve(config, **overrides))
            return gateway

        yield start
        nursery.cancel_scope.cancel()


@pytest.fixture
async def gateway(start_gateway: StartGateway) -> Gateway:
    return await start_gateway()


@pytest.fixture
async def page(
    blank_browser: WebDriver, tmp_path: Path, start_gateway: StartGateway,
) -> AsyncIterator[Page]:
    """The browser, wrapped for trio tests.

    Its teardown runs before the test's servers stop (``start_gateway``): a last
    screenshot (``last.png`` in ``tmp_path``), then a blank page, so the browser closes
    the page's WebSockets itself, and the server has seen them close.
    """
    page = Page(blank_browser, tmp_path)
    yield page
    if page.url is not None:
        await page.screenshot("last")
        await page.run(blank_browser.get, "about:blank")
        await page.until_disconnected()
