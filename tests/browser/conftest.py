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

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from pageflow import WAIT, Page
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.remote.webdriver import WebDriver

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
def page(browser: WebDriver, tmp_path: Path) -> Iterator[Page]:
    """The browser, wrapped for trio tests; a screenshot is kept in ``tmp_path``."""
    browser.get("about:blank")
    browser.get_log("browser")  # drained: a test reads only its own console
    page = Page(browser, tmp_path)
    try:
        yield page
    finally:
        try:
            if page.loaded:
                browser.save_screenshot(str(tmp_path / "last.png"))
            browser.get("about:blank")  # closes the page's WebSockets
        except WebDriverException:
            pass
